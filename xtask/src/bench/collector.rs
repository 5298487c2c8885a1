//! `mptcp-probe collect` on loopback, for SQLite and for PostgreSQL: uploads per second from 64
//! concurrent clients (each with its own keep-alive connection), their latency, every upload
//! answered and stored once (a tenth sent again, as a retrying daemon would, must come back
//! with the same token and not be stored twice); then the aggregate page's render time with
//! 100,000 reports stored (the ones beyond the uploads inserted straight into the database).

use std::{
    io::Read as _,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use mptcp_probe_tests::collect::{report, stripped_report, Collector, Postgres};
use serde::Serialize;

use super::{progress, stats::Spread, Config};

/// Clients uploading at once.
const CONCURRENCY: u32 = 64;
/// Renders of the aggregate page timed.
const PAGE_RENDERS: usize = 5;
/// The whole upload phase of one backend at most this long.
const UPLOAD_DEADLINE: Duration = Duration::from_secs(300);
const KINDS: [&str; 6] = ["home", "campus", "enterprise", "hotspot", "mobile", "other"];

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CollectorFigures {
    pub config: String,
    pub backends: Vec<BackendFigures>,
}

impl CollectorFigures {
    pub fn backend(&self, name: &str) -> Option<&BackendFigures> {
        self.backends.iter().find(|b| b.backend == name)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BackendFigures {
    pub backend: &'static str,
    pub uploads: u32,
    pub concurrency: u32,
    pub seconds: f64,
    pub per_second: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    /// Answers other than 201 (or no answer) to a first upload.
    pub failed: u32,
    /// Uploads sent again, and those answered 201 with the first answer's token.
    pub retried: u32,
    pub retried_same_answer: u32,
    /// Reports the collector holds after the uploads, and how many uploads that is short of or
    /// beyond.
    pub stored: u64,
    pub lost: u64,
    pub doubled: u64,
    /// Reports stored when the aggregate page was timed.
    pub page_reports: u64,
    pub page_ms: Spread,
    pub page_bytes: u64,
}

fn id(i: u32) -> String {
    format!("6c5cb018-c092-4ddb-9ee4-{i:012}")
}

/// One upload: every fifth from a path that strips MP_CAPABLE, network kinds in turn.
fn body(i: u32) -> Vec<u8> {
    let kind = KINDS[i as usize % KINDS.len()];
    let r = if i.is_multiple_of(5) {
        stripped_report(&id(i), kind)
    } else {
        let mut r = report(&id(i));
        r["client"]["network_kind"] = kind.into();
        r
    };
    serde_json::to_vec(&r).expect("a report serialises")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// What one upload got: its latency, and the token of a 201.
struct Sent {
    ms: f64,
    token: Option<String>,
}

fn post(agent: &ureq::Agent, url: &str, body: &[u8]) -> Sent {
    let start = Instant::now();
    let token = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body)
        .ok()
        .filter(|r| r.status() == 201)
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["token"].as_str().map(str::to_string));
    Sent { ms: start.elapsed().as_secs_f64() * 1e3, token }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Inserts `count` reports straight into the database (`sqlite3` or `psql`), spread over a year
/// of days, network kinds and 250 networks.
fn seed(db: &str, count: u32) -> anyhow::Result<()> {
    if count == 0 {
        return Ok(());
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let kind = "CASE i % 6 WHEN 0 THEN 'home' WHEN 1 THEN 'campus' WHEN 2 THEN 'enterprise' \
                WHEN 3 THEN 'hotspot' WHEN 4 THEN 'mobile' ELSE NULL END";
    let verdict = "CASE WHEN i % 5 = 0 THEN 'syn_option_stripped' ELSE 'mptcp_ok' END";
    let columns = "id, token_sha256, report_sha256, received_at, report, mptcp_usable, verdicts, network_kind, client_prefix";
    let verdicts = "INSERT INTO report_verdicts (report_id, verdict, network_kind, received_day) \
                    SELECT id, verdicts, network_kind, received_at / 86400 FROM reports WHERE id LIKE 'seed-%';";
    let last = count - 1;
    let (program, args) = if let Some(path) = db.strip_prefix("sqlite://") {
        let sql = format!(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
             INSERT INTO reports ({columns}) SELECT printf('seed-%08d', i), zeroblob(32), zeroblob(32), \
             {now} - (i % 365) * 86400 - (i % 86400), '{{}}', (i % 5) <> 0, {verdict}, {kind}, \
             printf('198.51.%d.0/24', i % 250) FROM n; {verdicts}"
        );
        ("sqlite3", vec![path.to_string(), sql])
    } else {
        let sql = format!(
            "INSERT INTO reports ({columns}) SELECT 'seed-' || lpad(i::text, 8, '0'), '\\x00'::bytea, \
             '\\x00'::bytea, {now} - (i % 365) * 86400 - (i % 86400), '{{}}', (i % 5) <> 0, {verdict}, {kind}, \
             '198.51.' || (i % 250) || '.0/24' FROM generate_series(0, {last}) AS i; {verdicts}"
        );
        ("psql", vec!["-q".into(), "-v".into(), "ON_ERROR_STOP=1".into(), db.to_string(), "-c".into(), sql])
    };
    let o = std::process::Command::new(program)
        .args(&args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !o.status.success() {
        bail!("{program} could not seed the database: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(())
}

fn backend(name: &'static str, db: Option<&str>, port: u16, cfg: &Config) -> anyhow::Result<BackendFigures> {
    let uploads: u32 = if cfg.quick { 300 } else { 10_000 };
    let page_reports: u32 = if cfg.quick { 2_000 } else { 100_000 };
    progress(format!("collector, {name}: {uploads} uploads, {CONCURRENCY} at once"));
    let c = Collector::start(port, db, &["--uploads-per-minute", "0"]);
    let url = format!("{}/api/v1/reports", c.url);
    let bodies: Vec<Vec<u8>> = (0..uploads).map(body).collect();
    let deadline = Instant::now() + UPLOAD_DEADLINE;
    let started = Instant::now();
    let sent: Vec<(u32, Sent)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CONCURRENCY)
            .map(|t| {
                let (url, bodies) = (&url, &bodies);
                s.spawn(move || {
                    let agent = agent();
                    (t..uploads)
                        .step_by(CONCURRENCY as usize)
                        .take_while(|_| Instant::now() < deadline)
                        .map(|i| (i, post(&agent, url, &bodies[i as usize])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut ms: Vec<f64> = sent.iter().map(|(_, s)| s.ms).collect();
    ms.sort_by(f64::total_cmp);
    let failed = uploads - sent.iter().filter(|(_, s)| s.token.is_some()).count() as u32;

    // A tenth again, as retries: the same answer, nothing stored twice.
    let agent = agent();
    let again: Vec<&(u32, Sent)> = sent.iter().filter(|(i, _)| i.is_multiple_of(10)).collect();
    let retried_same_answer = again
        .iter()
        .filter(|(i, first)| {
            let second = post(&agent, &url, &bodies[*i as usize]);
            first.token.is_some() && second.token == first.token
        })
        .count() as u32;
    let stored = c.count();

    // The aggregate page with many reports stored.
    seed(&c.db, page_reports.saturating_sub(stored as u32))?;
    let total = c.count();
    let mut page_ms = Vec::new();
    let mut page_bytes = 0;
    let front = format!("{}/", c.url);
    for _ in 0..PAGE_RENDERS {
        let start = Instant::now();
        let mut resp = agent.get(&front).call().context("the aggregate page")?;
        let mut text = String::new();
        resp.body_mut().as_reader().read_to_string(&mut text)?;
        page_ms.push(start.elapsed().as_secs_f64() * 1e3);
        if !text.contains(&format!("<dd id=\"reports\">{total}</dd>")) {
            bail!("the aggregate page does not count the {total} reports:\n{text}");
        }
        page_bytes = text.len() as u64;
    }
    Ok(BackendFigures {
        backend: name,
        uploads,
        concurrency: CONCURRENCY,
        seconds,
        per_second: sent.len() as f64 / seconds,
        latency_ms_p50: percentile(&ms, 0.5),
        latency_ms_p99: percentile(&ms, 0.99),
        latency_ms_max: ms.last().copied().unwrap_or(f64::NAN),
        failed,
        retried: again.len() as u32,
        retried_same_answer,
        stored,
        lost: u64::from(uploads).saturating_sub(stored),
        doubled: stored.saturating_sub(u64::from(uploads)),
        page_reports: total,
        page_ms: Spread::of(&page_ms),
        page_bytes,
    })
}

pub fn run(cfg: &Config) -> anyhow::Result<CollectorFigures> {
    let sqlite = backend("sqlite", None, 9731, cfg)?;
    let pg = Postgres::start()?;
    let postgres = backend("postgres", Some(&pg.url), 9732, cfg)?;
    Ok(CollectorFigures {
        config: format!(
            "loopback, {CONCURRENCY} concurrent keep-alive clients, no rate limit; SQLite (WAL) in a \
             temporary directory; PostgreSQL a throwaway cluster (fsync off) on a Unix socket"
        ),
        backends: vec![sqlite, postgres],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_of_the_sorted_latencies() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
