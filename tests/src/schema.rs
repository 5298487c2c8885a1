//! The report's JSON schema, `docs/report.schema.json`, as the tests hold reports against it.

use serde_json::Value;

/// Panics with every place a report departs from the schema.
pub fn validate(report: &Value) {
    let schema: Value = serde_json::from_str(include_str!("../../docs/report.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let msgs: Vec<String> =
        validator.iter_errors(report).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(msgs.is_empty(), "report does not match docs/report.schema.json:\n{}", msgs.join("\n"));
}
