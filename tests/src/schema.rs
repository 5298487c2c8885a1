//! The report's JSON schema, `docs/report.schema.json`, as the tests hold reports against it.

use mptcp_probe_model::Report;
use serde_json::Value;

/// Panics with every place a report departs from the schema.
pub fn validate(report: &Value) {
    let schema: Value = serde_json::from_str(include_str!("../../docs/report.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let msgs: Vec<String> =
        validator.iter_errors(report).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(msgs.is_empty(), "report does not match docs/report.schema.json:\n{}", msgs.join("\n"));
}

/// Reads a report `check --json` printed: it must match the schema and the data model.
pub fn read_report(stdout: &[u8], stderr: &str) -> (Report, Value) {
    let json: Value = serde_json::from_slice(stdout).unwrap_or_else(|e| {
        panic!("check printed no JSON report ({e}):\n{}\n{stderr}", String::from_utf8_lossy(stdout))
    });
    validate(&json);
    let report = serde_json::from_value(json.clone())
        .unwrap_or_else(|e| panic!("the data model does not read the report ({e}):\n{json:#}"));
    (report, json)
}
