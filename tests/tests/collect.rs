//! The collector's API against a real running `mptcp-probe collect` on loopback (no root
//! needed): uploads and fetches with the token, idempotent uploads, upload keys, and bad input
//! refused with its reason and nothing stored.

use std::{
    io::{Read as _, Write as _},
    time::{Duration, Instant},
};

use mptcp_probe_model::Report;
use mptcp_probe_tests::{
    browser,
    collect::{report, stripped_report, Collector, Postgres},
    daemon::sample,
    lab::{addr, Lab},
    matrix, probe_bin, skip_unless_e2e, target_dir,
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
    assert_eq!(url, format!("{}/reports/{ID}?token={token}", c.url));

    // The URL is the report's page; the API gives it back as JSON, read through the data model.
    let page = c.get(&url, &[]);
    assert_eq!(page.status, 200);
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains(ID) && html.contains("data-verdict=\"mptcp_ok\""), "{html}");
    let got = c.get(&format!("/api/v1/reports/{ID}?token={token}"), &[]);
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
    assert_eq!(v("fetches_total{result=\"ok\"}"), Some(3.0), "{m}");
    for r in ["unauthorized", "forbidden", "not_found"] {
        assert_eq!(v(&format!("fetches_total{{result=\"{r}\"}}")), Some(1.0), "{r}: {m}");
    }

    // A restart keeps the reports and the tokens.
    assert_eq!(c.stop(), Some(0), "{}", c.log());
    c.restart();
    assert_eq!(c.get(&url, &[]).status, 200);
    assert_eq!(c.get(&format!("/api/v1/reports/{ID}?token={token}"), &[]).status, 200);
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
        (
            "a UUID spelled otherwise",
            with(&|r| r["id"] = ID.to_uppercase().into()),
            400,
            "lower-case, hyphenated",
        ),
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
        (
            "an unknown network kind",
            with(&|r| r["client"]["network_kind"] = "office".into()),
            400,
            "unknown variant `office`",
        ),
        (
            "a note too long",
            with(&|r| r["client"]["note"] = "n".repeat(501).into()),
            400,
            "a note of 501 characters, more than 500",
        ),
        (
            "too large",
            with(&|r| r["client"]["kernel"] = "x".repeat(70_000).into()),
            413,
            "larger than 65536 bytes",
        ),
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
    // A body longer than announced is cut at the limit too, without a length announced.
    let chunked = c.curl(
        "/api/v1/reports",
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &"x".repeat(70_000),
        ],
    );
    assert_eq!(chunked.status, 413, "{}", String::from_utf8_lossy(&chunked.body));
    assert_eq!(c.count(), 0);
    let m = String::from_utf8(c.get("/metrics", &[]).body).unwrap();
    let counted = sample(&m, "mptcp_probe_collector_uploads_total{result=\"refused\"}");
    assert_eq!(counted, Some((refused + 1) as f64), "{m}");
}

/// A header-only pcapng of one packet with `bytes` captured (as `check --pcap` writes them).
fn pcapng(bytes: usize, stamp: u64) -> Vec<u8> {
    let mut b = Vec::new();
    let block = |b: &mut Vec<u8>, kind: u32, body: &[u8]| {
        let len = (12 + body.len().div_ceil(4) * 4) as u32;
        b.extend(kind.to_le_bytes());
        b.extend(len.to_le_bytes());
        b.extend(body);
        b.resize(b.len() + (4 - body.len() % 4) % 4, 0);
        b.extend(len.to_le_bytes());
    };
    // Section header: byte-order magic, version 1.0, section length unknown.
    let mut shb = 0x1a2b_3c4du32.to_le_bytes().to_vec();
    shb.extend([1, 0, 0, 0]);
    shb.extend((-1i64).to_le_bytes());
    block(&mut b, 0x0a0d_0d0a, &shb);
    // Interface: raw IP, snaplen 128.
    let mut idb = 101u16.to_le_bytes().to_vec();
    idb.extend([0, 0]);
    idb.extend(128u32.to_le_bytes());
    block(&mut b, 1, &idb);
    let mut epb = 0u32.to_le_bytes().to_vec();
    epb.extend(((stamp >> 32) as u32).to_le_bytes());
    epb.extend((stamp as u32).to_le_bytes());
    epb.extend((bytes as u32).to_le_bytes());
    epb.extend(1500u32.to_le_bytes());
    epb.extend(vec![0x45; bytes]);
    block(&mut b, 6, &epb);
    b
}

#[test]
fn a_trace_is_attached_once_with_the_report_token_and_counted_paths_name_no_client() {
    skip_unless_e2e!();
    on_each_backend(traces_and_counts);
}

fn traces_and_counts(db: Option<&str>) {
    let c = Collector::start(9818, db, &["--max-trace-bytes", "4096"]);
    let up = c.post("/api/v1/reports", &body(&report(ID)), &[]).json();
    let token = up["token"].as_str().unwrap().to_string();
    let trace_path = format!("/api/v1/reports/{ID}/trace");
    let with_token = format!("{trace_path}?token={token}");
    let trace = pcapng(60, 1);

    // The report's token is needed; the trace must be a header-only pcapng, and not too large.
    assert_eq!(c.put(&trace_path, &trace, &[]).status, 401);
    assert_eq!(c.put(&format!("{trace_path}?token={}", "0".repeat(32)), &trace, &[]).status, 403);
    assert_eq!(c.put(&format!("/api/v1/reports/{OTHER_ID}/trace?token={token}"), &trace, &[]).status, 404);
    let payload = c.put(&with_token, &pcapng(1400, 1), &[]);
    assert_eq!(payload.status, 400, "{}", payload.error());
    assert!(payload.error().contains("headers only"), "{}", payload.error());
    let text = c.put(&with_token, b"not a trace at all", &[]);
    assert_eq!(text.status, 400);
    assert!(text.error().starts_with("not a pcapng trace"), "{}", text.error());
    let big: Vec<u8> = (0..100).flat_map(|i| pcapng(100, i)).collect();
    assert_eq!(c.put(&with_token, &big, &[]).status, 413);
    assert_eq!(c.get(&with_token, &[]).status, 404, "no trace stored yet");

    // Stored once: the same trace again is fine, another is refused.
    let stored = c.put(&with_token, &trace, &[&format!("Authorization: Bearer {token}")]);
    assert_eq!(stored.status, 201, "{}", String::from_utf8_lossy(&stored.body));
    assert_eq!(stored.json()["packets"], 1);
    assert_eq!(c.put(&with_token, &trace, &[]).status, 200);
    assert_eq!(c.put(&with_token, &pcapng(60, 2), &[]).status, 409);
    let got = c.get(&with_token, &[]);
    assert_eq!((got.status, got.body.as_slice()), (200, trace.as_slice()));
    assert_eq!(c.get(&trace_path, &[]).status, 401);
    let page = String::from_utf8(c.get(&format!("/reports/{ID}?token={token}"), &[]).body).unwrap();
    assert!(page.contains(&format!("href=\"{with_token}\"")), "the page links the trace: {page}");

    // Counted by network kind and verdict; what is shown and exported names no client.
    for (i, kind) in ["home", "campus"].into_iter().enumerate() {
        let id = format!("3e2e8d85-9d6f-4a88-8ab1-{i:012}");
        assert_eq!(c.post("/api/v1/reports", &body(&stripped_report(&id, kind)), &[]).status, 201);
    }
    let s = c.get("/api/v1/summary", &[]).json();
    assert_eq!(s["reports"], 3, "{s}");
    assert_eq!(s["networks"], 1, "all from 127.0.0.0/24: {s}");
    assert_eq!(s["mptcp_usable"], 1, "{s}");
    assert_eq!(s["verdicts"]["syn_option_stripped"], 2, "{s}");
    assert_eq!(s["verdicts"]["mptcp_ok"], 1, "{s}");
    let csv = String::from_utf8(c.get("/data/paths.csv", &[]).body).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "day,network_kind,mptcp_usable,verdicts");
    assert_eq!(lines.len(), 4, "{csv}");
    assert_eq!(lines.iter().filter(|l| l.ends_with(",false,syn_option_stripped")).count(), 2, "{csv}");
    let json = c.get("/data/paths.json", &[]).json();
    assert_eq!(json["paths"].as_array().unwrap().len(), 3);
    let front = String::from_utf8(c.get("/", &[]).body).unwrap();
    assert!(front.contains("<dd id=\"reports\">3</dd>"), "{front}");
    for shown in [&front, &csv, &json.to_string(), &s.to_string()] {
        assert!(!shown.contains("127.0.0"), "a client address shown: {shown}");
        assert!(!shown.contains(ID) && !shown.contains(&token), "a report id or token shown: {shown}");
    }
}

#[test]
fn a_collector_keeping_no_prefix_counts_no_network() {
    skip_unless_e2e!(binaries);
    let c = Collector::start(9819, None, &["--client-prefix-v4", "0"]);
    assert_eq!(c.post("/api/v1/reports", &body(&report(ID)), &[]).status, 201);
    assert_eq!(c.get("/api/v1/summary", &[]).json()["networks"], 0);
}

#[test]
fn uploads_over_the_rate_wait_slow_requests_time_out_and_old_reports_go() {
    skip_unless_e2e!(binaries);
    // Three uploads a minute from one source: the fourth is told when to come back.
    let c = Collector::start(9820, None, &["--uploads-per-minute", "3"]);
    for i in 0..3 {
        let id = format!("4f3f9e96-ae70-4b99-9bc2-{i:012}");
        assert_eq!(c.post("/api/v1/reports", &body(&report(&id)), &[]).status, 201);
    }
    let limited = c.post("/api/v1/reports", &body(&report(ID)), &[]);
    assert_eq!(limited.status, 429, "{}", String::from_utf8_lossy(&limited.body));
    assert!(limited.error().contains("try again in"), "{}", limited.error());
    assert_eq!(c.count(), 3);
    let m = String::from_utf8(c.get("/metrics", &[]).body).unwrap();
    assert_eq!(sample(&m, "mptcp_probe_collector_uploads_total{result=\"limited\"}"), Some(1.0), "{m}");
    drop(c);

    // A client that sends half its upload and stops is answered 408 when the time is up.
    let c = Collector::start(9821, None, &["--request-timeout", "1s"]);
    let mut s = std::net::TcpStream::connect("127.0.0.1:9821").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let started = Instant::now();
    s.write_all(b"POST /api/v1/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"schema\"").unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert_eq!(c.count(), 0);
    drop(c);

    // Reports older than the retention are removed, with their verdicts.
    let c = Collector::start(9822, None, &["--retention", "2s"]);
    let token =
        c.post("/api/v1/reports", &body(&report(ID)), &[]).json()["token"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.count() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(c.count(), 0, "{}", c.log());
    assert_eq!(c.get(&format!("/api/v1/reports/{ID}?token={token}"), &[]).status, 404);
    assert_eq!(c.get("/api/v1/summary", &[]).json()["verdicts"], serde_json::json!({}));
    let m = String::from_utf8(c.get("/metrics", &[]).body).unwrap();
    assert_eq!(sample(&m, "mptcp_probe_collector_reports_removed_total"), Some(1.0), "{m}");
    assert!(c.log().contains("removed 1 reports older than 2s"), "{}", c.log());
}

#[test]
fn a_collector_told_to_stop_finishes_the_upload_under_way_and_logs_json_without_tokens() {
    skip_unless_e2e!(binaries);
    let mut c = Collector::start(9824, None, &["--log-format", "json"]);
    let body = body(&report(ID));
    let (head, tail) = body.split_at(body.len() / 2);
    let mut s = std::net::TcpStream::connect("127.0.0.1:9824").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        s,
        "POST /api/v1/reports HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(head).unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Told to stop while half the report is in: it takes the rest, answers, then exits.
    c.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(tail).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer:?}\n{}", c.log());
    assert_eq!(c.stop(), Some(0), "{}", c.log());
    let token = answer.split("\"token\":\"").nth(1).and_then(|t| t.split('"').next()).unwrap().to_string();
    let log = c.log();
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert!(lines.iter().any(|l| l["fields"]["result"] == "stored" && l["fields"]["status"] == 201), "{log}");
    let client = format!(":{}", s.local_addr().unwrap().port());
    assert!(!log.contains(&token) && !log.contains(&client), "a token or the client's address logged: {log}");
    c.restart();
    assert_eq!(c.count(), 1, "the upload under way at the stop was kept");
}

#[test]
fn the_pages_render_in_a_browser_with_the_report_and_every_path_counted() {
    skip_unless_e2e!(binaries);
    let c = Collector::start(9823, None, &[]);
    let mut r = stripped_report(ID, "hotspot");
    r["client"]["note"] = "café on the corner".into();
    let token = c.post("/api/v1/reports", &body(&r), &[]).json()["token"].as_str().unwrap().to_string();
    assert_eq!(c.put(&format!("/api/v1/reports/{ID}/trace?token={token}"), &pcapng(60, 1), &[]).status, 201);
    for (i, kind) in ["home", "home", "mobile"].into_iter().enumerate() {
        let mut ok = report(&format!("5a4aaf07-bf81-4caa-8cd3-{i:012}"));
        ok["client"]["network_kind"] = kind.into();
        assert_eq!(c.post("/api/v1/reports", &body(&ok), &[]).status, 201);
    }
    let shots = target_dir().join("collect-pages");

    let report_url = format!("{}/reports/{ID}?token={token}", c.url);
    let dom = browser::dom(&report_url);
    assert!(dom.contains("MPTCP on the path to 203.0.113.2"), "{dom}");
    assert!(dom.contains("data-usable=\"false\""), "{dom}");
    assert!(dom.contains("<dd id=\"network-kind\">hotspot</dd>"), "{dom}");
    assert!(dom.contains("<dd id=\"note\">café on the corner</dd>"), "{dom}");
    assert!(dom.contains("the SYN arrived without MP_CAPABLE"), "the evidence: {dom}");
    assert!(dom.contains("data-test=\"http\""), "{dom}");
    assert!(dom.contains("the header-only trace"), "{dom}");
    let bytes = browser::screenshot(&report_url, &shots.join("report.png"), 1200, 1600);
    assert!(bytes > 10_000, "a blank report page? {bytes} bytes");

    let front = format!("{}/", c.url);
    let dom = browser::dom(&front);
    assert!(dom.contains("<dd id=\"reports\">4</dd>"), "{dom}");
    assert!(dom.contains("<dd id=\"networks\">1</dd>"), "{dom}");
    assert!(dom.contains("75.0 % of the paths (3)"), "{dom}");
    assert!(dom.contains("data-label=\"syn_option_stripped\" data-count=\"1\""), "{dom}");
    assert!(dom.contains("<tr data-kind=\"home\"><td>home</td><td>2</td><td>100.0 %</td>"), "{dom}");
    assert!(dom.contains("data-name=\"MPTCP usable\""), "the chart over time: {dom}");
    assert!(!dom.contains("café") && !dom.contains(ID), "a note or id on the public page: {dom}");
    let bytes = browser::screenshot(&front, &shots.join("aggregate.png"), 1200, 1400);
    assert!(bytes > 10_000, "a blank aggregate page? {bytes} bytes");

    // Without the token the page says how to get it, in the browser too.
    let dom = browser::dom(&format!("{}/reports/{ID}", c.url));
    assert!(dom.contains("A report is shown with its token"), "{dom}");
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
    // check names a key file it cannot read before it runs a test.
    let o = std::process::Command::new(probe_bin())
        .args(["check", "--server", "192.0.2.1", "--upload", &format!("{}/api/v1/reports", c.url)])
        .args(["--upload-key-file", "/nonexistent/upload.key"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("reading the upload key /nonexistent/upload.key"), "{err}");
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
    let c = Collector::start_in(Some(&lab.s), &listen, None, &["--upload-key", "k-lab"]);
    let trace = c.dir().join("check.pcapng");
    let key = c.dir().join("upload.key");
    std::fs::write(&key, "k-lab\n").unwrap();
    let o = lab
        .c
        .cmd(probe_bin())
        .args([
            "check",
            "--server",
            addr::SERVER,
            "--tests",
            "handshake",
            "--json",
            "--network-kind",
            "campus",
        ])
        .args(["--note", "lab run", "--pcap"])
        .arg(&trace)
        .arg("--upload")
        .arg(format!("http://{listen}/api/v1/reports"))
        .arg("--upload-key-file")
        .arg(&key)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("its trace is not"), "{stderr}");
    let printed: Report = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(printed.client.network_kind.map(|k| k.as_str()), Some("campus"));
    assert_eq!(printed.client.note.as_deref(), Some("lab run"));
    let url = stderr
        .lines()
        .find_map(|l| l.strip_prefix("uploaded: "))
        .unwrap_or_else(|| panic!("no upload answer:\n{stderr}"));
    let token = url.rsplit_once("token=").map(|(_, t)| t.to_string()).unwrap_or_else(|| panic!("{url}"));
    assert_eq!(url, format!("http://{listen}/reports/{}?token={token}", printed.id));
    // The URL it prints is the report's page; the API has the report as printed, and its trace.
    let page = c.get(url, &[]);
    assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
    let html = String::from_utf8_lossy(&page.body);
    assert!(
        html.contains(&printed.id) && html.contains("campus") && html.contains("the header-only trace"),
        "{html}"
    );
    let got = c.get(&format!("/api/v1/reports/{}?token={token}", printed.id), &[]);
    let stored: Report = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(serde_json::to_value(&stored).unwrap(), serde_json::to_value(&printed).unwrap());
    let stored_trace = c.get(&format!("/api/v1/reports/{}/trace?token={token}", printed.id), &[]);
    assert_eq!(stored_trace.status, 200);
    assert_eq!(stored_trace.body, std::fs::read(&trace).unwrap(), "the trace as written");
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
                        // Both at once: the two collectors race on one id in the database.
                        let (x, y) = std::thread::scope(|both| {
                            let y = both.spawn(|| b.post("/api/v1/reports", &r, &[]));
                            (a.post("/api/v1/reports", &r, &[]), y.join().unwrap())
                        });
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
