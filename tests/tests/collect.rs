//! The collector's API against a real running `mptcp-probe collect` on loopback (no root
//! needed): uploads and fetches with the token, idempotent uploads, upload keys, and bad input
//! refused with its reason and nothing stored.

use mptcp_probe_model::Report;
use mptcp_probe_tests::{
    collect::{report, Collector, Postgres},
    daemon::sample,
    lab::{addr, Lab},
    matrix, probe_bin, skip_unless_e2e,
};

const ID: &str = "0b9b5a52-6a3c-4d55-9d8e-4f1e2a3b4c5d";
const OTHER_ID: &str = "1c0c6b63-7b4d-4e66-8e9f-5a2f3b4c5d6e";

fn body(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// Runs `test` against a collector on SQLite and on a throwaway PostgreSQL.
fn on_each_backend(test: impl Fn(Option<&str>)) {
    test(None);
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e:#}"));
    test(Some(&pg.url));
}

#[test]
fn an_upload_comes_back_with_its_token_and_only_with_it_and_is_stored_once() {
    skip_unless_e2e!();
    on_each_backend(upload_and_fetch);
}

fn upload_and_fetch(db: Option<&str>) {
    let mut c = Collector::start(9811, db, &[]);
    assert!(c.log().contains(&format!("reports in {}", c.db)), "{}", c.log());
    let up = c.post("/api/v1/reports", &body(&report(ID)), &[]);
    assert_eq!(up.status, 201, "{}", String::from_utf8_lossy(&up.body));
    let answer = up.json();
    assert_eq!(answer["id"], ID);
    let token = answer["token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 32, "128 bits as hex: {token}");
    let url = answer["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&c.url) && url.contains(ID) && url.contains(&token), "{url}");

    // The URL shows the report, read back through the data model.
    let got = c.get(&url, &[]);
    assert_eq!(got.status, 200);
    let back: Report = serde_json::from_slice(&got.body).unwrap();
    let sent: Report = serde_json::from_value(report(ID)).unwrap();
    assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&sent).unwrap());
    let by_header = c.get(&format!("/api/v1/reports/{ID}"), &[&format!("Authorization: Bearer {token}")]);
    assert_eq!(by_header.status, 200);

    // Without the token, with another, for another id.
    let none = c.get(&format!("/api/v1/reports/{ID}"), &[]);
    assert_eq!(none.status, 401, "{}", none.error());
    let wrong = c.get(&format!("/api/v1/reports/{ID}?token=00000000000000000000000000000000"), &[]);
    assert_eq!(wrong.status, 403, "{}", wrong.error());
    let unknown = c.get(&format!("/api/v1/reports/{OTHER_ID}?token={token}"), &[]);
    assert_eq!(unknown.status, 404, "{}", unknown.error());

    // The same report again (a retry): the same answer, stored once.
    let again = c.post("/api/v1/reports", &body(&report(ID)), &[]);
    assert_eq!(again.status, 201);
    assert_eq!(again.json(), answer);
    assert_eq!(c.count(), 1);
    // Another report under the same id: refused.
    let mut other = report(ID);
    other["duration_ms"] = 5.into();
    let conflict = c.post("/api/v1/reports", &body(&other), &[]);
    assert_eq!(conflict.status, 409, "{}", conflict.error());
    assert_eq!(c.count(), 1);

    // Its own metrics count all of that.
    let m = String::from_utf8(c.get("/metrics", &[]).body).unwrap();
    let v = |series: &str| sample(&m, &format!("mptcp_probe_collector_{series}"));
    assert_eq!(v("uploads_total{result=\"stored\"}"), Some(1.0), "{m}");
    assert_eq!(v("uploads_total{result=\"again\"}"), Some(1.0), "{m}");
    assert_eq!(v("uploads_total{result=\"conflict\"}"), Some(1.0), "{m}");
    assert_eq!(v("reports"), Some(1.0), "{m}");
    assert_eq!(v("fetches_total{result=\"ok\"}"), Some(2.0), "{m}");
    for r in ["unauthorized", "forbidden", "not_found"] {
        assert_eq!(v(&format!("fetches_total{{result=\"{r}\"}}")), Some(1.0), "{r}: {m}");
    }

    // A restart keeps the reports and the tokens.
    assert_eq!(c.stop(), Some(0), "{}", c.log());
    c.restart();
    assert_eq!(c.get(&url, &[]).status, 200);
    assert_eq!(c.count(), 1);
    assert!(!c.log().contains(&token), "a token in the log:\n{}", c.log());
}

#[test]
fn bad_uploads_are_refused_with_their_reason_and_nothing_is_stored() {
    skip_unless_e2e!();
    on_each_backend(bad_uploads);
}

fn bad_uploads(db: Option<&str>) {
    let c = Collector::start(9812, db, &["--max-report-bytes", "65536"]);
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut r = report(ID);
        f(&mut r);
        body(&r)
    };
    let deep = format!(
        "{{\"schema\": \"mptcp-probe/report/v1\", \"client\": {{\"mptcp_sysctls\": {{\"a\": {}{}}}}}}}",
        "[".repeat(300),
        "]".repeat(300)
    );
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("malformed JSON", b"{\"schema\": ".to_vec(), 400, "not a report"),
        ("bad UTF-8", b"{\"schema\": \"\xff\xfe\"}".to_vec(), 400, "not a report"),
        ("deep nesting", deep.into_bytes(), 400, "not a report"),
        ("wrong schema", with(&|r| r["schema"] = "mptcp-probe/report/v0".into()), 400, "schema is"),
        (
            "unknown verdict",
            with(&|r| r["summary"]["verdicts"] = serde_json::json!(["mptcp_great"])),
            400,
            "mptcp_great",
        ),
        ("an id that is not a UUID", with(&|r| r["id"] = "../x".into()), 400, "is not a UUID"),
        ("a field out of range", with(&|r| r["tests"][0]["port"] = 70000.into()), 400, "not a report"),
        (
            "too many tests",
            with(&|r| {
                let t = r["tests"][0].clone();
                r["tests"] = serde_json::Value::Array(vec![t; 65]);
            }),
            400,
            "65 tests, more than 64",
        ),
        ("too large", with(&|r| r["client"]["kernel"] = "x".repeat(70_000).into()), 413, ""),
    ];
    let refused = cases.len();
    for (what, bytes, status, says) in cases {
        let a = c.post("/api/v1/reports", &bytes, &[]);
        assert_eq!(a.status, status, "{what}: {}", String::from_utf8_lossy(&a.body));
        if !says.is_empty() {
            assert!(a.error().contains(says), "{what}: {:?}", a.error());
        }
        assert_eq!(c.count(), 0, "{what}: stored");
    }
    let m = String::from_utf8(c.get("/metrics", &[]).body).unwrap();
    // The body too large is refused before the collector reads it: not counted as an upload.
    let counted = sample(&m, "mptcp_probe_collector_uploads_total{result=\"refused\"}");
    assert_eq!(counted, Some((refused - 1) as f64), "{m}");
}

#[test]
fn a_collector_with_upload_keys_takes_only_uploads_that_carry_one() {
    skip_unless_e2e!(binaries);
    let c = Collector::start(9813, None, &["--upload-key", "k1", "--upload-key", "k2"]);
    let r = body(&report(ID));
    let none = c.post("/api/v1/reports", &r, &[]);
    assert_eq!(none.status, 401, "{}", none.error());
    let wrong = c.post("/api/v1/reports", &r, &["Authorization: Bearer k3"]);
    assert_eq!(wrong.status, 403, "{}", wrong.error());
    assert_eq!(c.count(), 0);
    let right = c.post("/api/v1/reports", &r, &["Authorization: Bearer k2"]);
    assert_eq!(right.status, 201, "{}", String::from_utf8_lossy(&right.body));
    assert_eq!(c.count(), 1);
}

#[test]
fn a_database_it_cannot_use_is_named() {
    skip_unless_e2e!(binaries);
    let dir = mptcp_probe_tests::probe::TempDir::new("collect-bad-db");
    let secret = dir.0.join("secret").display().to_string();
    for (db, extra, says) in [
        (
            "mysql://me:pw@localhost/x",
            &["--secret-file", secret.as_str()][..],
            "give sqlite://PATH or postgres://",
        ),
        ("postgres:///nowhere?host=/nonexistent-dir", &[][..], "--secret-file is needed"),
        (
            "postgres://me:pw@/nowhere?host=/nonexistent-dir",
            &["--secret-file", secret.as_str()][..],
            "connecting to the PostgreSQL database postgres://me:***@",
        ),
        ("sqlite:///nonexistent-dir/reports.db", &[][..], "/nonexistent-dir/reports.db"),
    ] {
        let o = std::process::Command::new(mptcp_probe_tests::probe_bin())
            .args(["collect", "--listen", "127.0.0.1:9814", "--db", db])
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{db}: {err}");
        assert!(err.contains(says), "{db}: {err}");
        assert!(!err.contains(":pw@"), "a password shown: {err}");
    }
}

#[test]
fn check_uploads_to_a_collector_in_the_lab_and_the_url_it_prints_shows_the_report() {
    skip_unless_e2e!();
    let lab = Lab::up();
    let (_serve, _dir) = matrix::serve(&lab.s, &probe_bin()).unwrap_or_else(|e| panic!("{e:#}"));
    let listen = format!("{}:9815", addr::SERVER);
    let c = Collector::start_in(Some(&lab.s), &listen, None, &[]);
    let o = lab
        .c
        .cmd(probe_bin())
        .args(["check", "--server", addr::SERVER, "--tests", "handshake", "--json", "--upload"])
        .arg(format!("http://{listen}/api/v1/reports"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let printed: Report = serde_json::from_slice(&o.stdout).unwrap();
    let answer = stderr
        .lines()
        .find_map(|l| l.strip_prefix("uploaded: "))
        .unwrap_or_else(|| panic!("no upload answer:\n{stderr}"));
    let answer: serde_json::Value = serde_json::from_str(answer).unwrap();
    assert_eq!(answer["id"], printed.id.as_str());
    let url = answer["url"].as_str().unwrap();
    let got = c.get(url, &[]);
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    let stored: Report = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(serde_json::to_value(&stored).unwrap(), serde_json::to_value(&printed).unwrap());
    assert_eq!(c.count(), 1);
}

#[test]
fn two_collectors_on_one_postgresql_under_concurrent_uploads_lose_and_double_nothing() {
    skip_unless_e2e!();
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e:#}"));
    let dir = mptcp_probe_tests::probe::TempDir::new("collect-shared");
    let secret = dir.0.join("secret").display().to_string();
    let shared = ["--secret-file", secret.as_str()];
    let a = Collector::start(9816, Some(&pg.url), &shared);
    let b = Collector::start(9817, Some(&pg.url), &shared);
    const REPORTS: u32 = 40;
    let id = |i: u32| format!("2d1d7c74-8c5e-4f77-9fa0-{i:012}");
    // Every report sent to both collectors at once, from 8 threads.
    let tokens: Vec<(String, String, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8u32)
            .map(|t| {
                let (a, b) = (&a, &b);
                s.spawn(move || {
                    let mut got = Vec::new();
                    for i in (t..REPORTS).step_by(8) {
                        let r = body(&report(&id(i)));
                        let (x, y) = (a.post("/api/v1/reports", &r, &[]), b.post("/api/v1/reports", &r, &[]));
                        assert_eq!((x.status, y.status), (201, 201), "{} / {}", x.error(), y.error());
                        let token = |v: serde_json::Value| v["token"].as_str().unwrap().to_string();
                        got.push((id(i), token(x.json()), token(y.json())));
                    }
                    got
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(tokens.len(), REPORTS as usize);
    assert_eq!(a.count(), u64::from(REPORTS), "nothing lost or doubled");
    assert_eq!(b.count(), u64::from(REPORTS));
    for (id, ta, tb) in &tokens {
        assert_eq!(ta, tb, "both collectors answer {id} alike");
        assert_eq!(b.get(&format!("/api/v1/reports/{id}?token={ta}"), &[]).status, 200);
    }
}
