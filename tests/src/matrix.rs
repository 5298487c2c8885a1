//! Runs scenarios end to end — a lab, the scenario's middlebox, `serve` in the server namespace,
//! `check --json` in the client's — and compares what `check` says with what the scenario expects.
//! Used by `cargo xtask measure` and by the end-to-end matrix test.
//!
//! A scenario either ran, and then agrees or disagrees with its expectation, or could not run (no
//! binary, no lab, no server): that is said as such and is never a disagreement of verdicts.

use std::{
    collections::BTreeMap,
    io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _};
use mptcp_probe_model::{Report, Subtype, TestName, TestResult, Transport, Verdict};
use serde::Serialize;
use serde_json::{json, Value};

use crate::{
    lab::{addr, ifname, Child, Lab, Netns},
    oracle::{Capture, Packet},
    probe::TempDir,
    scenario::{self, OraclePacket, Scenario},
    workspace::{Bin, MIDDLEBOX, PROBE},
};

/// The binaries a scenario runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabBins {
    pub probe: PathBuf,
    pub middlebox: PathBuf,
}

impl LabBins {
    /// Where the workspace has them (`MPTCP_PROBE_BIN` / `MPTCP_MIDDLEBOX_BIN`, else its builds);
    /// a binary that is not built is named by the path it would have.
    pub fn located() -> Self {
        Self { probe: PROBE.path(), middlebox: MIDDLEBOX.path() }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub bins: LabBins,
    /// `check --bulk-bytes`.
    pub bulk_bytes: u64,
    /// Runs of `check` per scenario (one lab and server for all of them).
    pub repeat: u32,
    /// Leave the lab (with its middlebox and server) up after the scenario.
    pub keep: bool,
    /// Set (by a signal handler) to stop between runs.
    pub stop: Option<Arc<AtomicBool>>,
}

impl Default for Options {
    fn default() -> Self {
        Self { bins: LabBins::located(), bulk_bytes: 300_000, repeat: 1, keep: false, stop: None }
    }
}

impl Options {
    fn stopped(&self) -> bool {
        self.stop.as_ref().map(|s| s.load(Ordering::Relaxed)).unwrap_or(false)
    }
}

/// One `check` run of a scenario, compared with what it expects.
#[derive(Clone, Debug, Default)]
pub struct Run {
    /// The report's summary verdicts, sorted.
    pub observed: Vec<Verdict>,
    /// Its path conditions, sorted.
    pub path: Vec<Verdict>,
    /// Fallback reason per MPTCP test that named one.
    pub fallback: BTreeMap<TestName, String>,
    pub seconds: f64,
    /// Why the run disagrees (empty: it agrees).
    pub problems: Vec<String>,
    /// What `check` reported for the MPTCP tests, in words (kept for disagreeing runs).
    pub evidence: Vec<String>,
    /// Where `check --locate` placed each verdict's change.
    pub located: BTreeMap<Verdict, String>,
}

/// All runs of one scenario.
#[derive(Debug)]
pub struct Outcome {
    pub scenario: &'static Scenario,
    pub runs: Vec<Run>,
    /// The independent oracle's account (None: the scenario has none); Err: it disagrees.
    pub oracle: Option<Result<String, String>>,
    /// Counters the router's middlebox processes printed.
    pub middlebox: Vec<Value>,
    /// Why the scenario could not run at all (a binary, the lab, the server): no verdict was
    /// compared.
    pub could_not_run: Option<String>,
    pub seconds: f64,
    /// The lab left up (`--keep`).
    pub kept: Option<String>,
}

/// Verdict names joined for people: `mptcp_ok,nat`.
fn names(verdicts: &[Verdict]) -> String {
    verdicts.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(",")
}

/// Path conditions after the verdicts: ` [path_broken]`, or nothing.
fn with_path(path: &[Verdict]) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" [{}]", names(path))
    }
}

/// The path conditions a scenario expects, those it allows marked `?`: ` [path_broken,
/// handshake_reordered?]`, or nothing.
fn expected_path(sc: &Scenario) -> String {
    let mut all: Vec<String> = sc.path.iter().map(|v| v.as_str().to_string()).collect();
    all.extend(sc.may.iter().map(|v| format!("{}?", v.as_str())));
    if all.is_empty() {
        String::new()
    } else {
        format!(" [{}]", all.join(","))
    }
}

/// A piece of the report as its JSON, for evidence in words.
fn json_of(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("<{e}>"))
}

impl Outcome {
    /// It ran, every run agrees with the expectation, and so does the oracle.
    pub fn ok(&self) -> bool {
        self.could_not_run.is_none()
            && !self.runs.is_empty()
            && self.runs.iter().all(|r| r.problems.is_empty())
            && !matches!(self.oracle, Some(Err(_)))
    }

    /// It ran and something disagrees with the expectation.
    pub fn disagrees(&self) -> bool {
        self.could_not_run.is_none() && !self.ok()
    }

    pub fn to_json(&self) -> Value {
        let sc = self.scenario;
        json!({
            "scenario": sc.name,
            "about": sc.about,
            "router": sc.commands(),
            "check_args": sc.check_args,
            "expected": {
                "verdicts": sc.expect,
                "path_conditions": sc.path,
                "path_conditions_allowed": sc.may,
                "fallback": sc.fallback.map(|f| json!({"test": f.test, "reasons": f.reasons})),
            },
            "agrees": self.ok(),
            "could_not_run": self.could_not_run,
            "oracle": self.oracle.as_ref().map(|o| match o {
                Ok(s) => json!({"agrees": true, "detail": s}),
                Err(s) => json!({"agrees": false, "detail": s}),
            }),
            "middlebox": self.middlebox,
            "seconds": self.seconds,
            "kept_lab": self.kept,
            "runs": self.runs.iter().map(|r| json!({
                "observed": r.observed,
                "path_conditions": r.path,
                "fallback": r.fallback,
                "seconds": r.seconds,
                "problems": r.problems,
                "located": r.located,
                "evidence": if r.problems.is_empty() { Value::Null } else { json!(r.evidence) },
            })).collect::<Vec<_>>(),
        })
    }
}

/// Starts `probe serve` in the server namespace and waits until it listens.
pub fn serve(ns: &Netns, probe: &Path) -> anyhow::Result<(Child, TempDir)> {
    let dir = TempDir::new("serve");
    let log = dir.0.join("serve.log");
    let mut child = Child::spawn(
        ns.cmd(probe)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?),
    );
    child.wait_ready(&log, "mptcp-probe serving on", Duration::from_secs(30), "serve")?;
    Ok((child, dir))
}

/// Leaves a lab up with its middlebox and server running (`lab down` removes them all); returns
/// its run name.
pub fn keep(lab: Lab, applied: scenario::Applied, server: (Child, TempDir)) -> String {
    applied.detach();
    std::mem::forget(server);
    lab.keep()
}

/// Compares a report with the scenario.
pub fn judge(sc: &Scenario, report: &Report) -> Run {
    let mut run = Run::default();
    let mut observed = report.summary.verdicts.clone();
    observed.sort();
    let mut expected = sc.expect.to_vec();
    expected.sort();
    if observed != expected {
        run.problems.push(format!("verdicts {} (expected {})", names(&observed), names(&expected)));
    }
    let mut path = report.summary.path_conditions.clone();
    path.sort();
    let required_missing = sc.path.iter().any(|v| !path.contains(v));
    let unexpected = path.iter().any(|v| !sc.path.contains(v) && !sc.may.contains(v));
    if required_missing || unexpected {
        let mut expected_path = sc.path.to_vec();
        expected_path.sort();
        let allowed = if sc.may.is_empty() { String::new() } else { format!(", allowed {}", names(sc.may)) };
        run.problems.push(format!(
            "path conditions {} (expected {}{allowed})",
            names(&path),
            names(&expected_path)
        ));
    }
    run.observed = observed;
    run.path = path;
    let mptcp_tests = || report.tests.iter().filter(|t| t.transport == Transport::Mptcp);
    // A test showing a path condition the scenario allows may fall back: the condition explains it.
    let excused = |t: &TestResult| t.verdicts.iter().any(|v| sc.may.contains(v));
    let mut excused_tests = Vec::new();
    for t in mptcp_tests() {
        if let Some(r) = &t.fallback_reason {
            run.fallback.insert(t.name, r.clone());
            if excused(t) {
                excused_tests.push(t.name);
            }
        }
    }
    match sc.fallback {
        Some(f) => {
            let got = run.fallback.get(&f.test);
            if !got.is_some_and(|r| f.reasons.contains(&r.as_str())) {
                run.problems.push(format!(
                    "{}: fallback reason {} (expected {})",
                    f.test,
                    got.map(String::as_str).unwrap_or("none"),
                    f.reasons_text()
                ));
            }
        }
        None => {
            for (test, r) in run.fallback.iter().filter(|(t, _)| !excused_tests.contains(t)) {
                run.problems.push(format!("{test}: fallback reason {r} (expected none)"));
            }
        }
    }
    if sc.located.is_some() && report.locate.is_none() {
        run.problems.push("no locate section in the report (check ran with --locate)".into());
    }
    if let Some(l) = &report.locate {
        for loc in &l.locations {
            run.located.insert(loc.verdict, loc.text.clone());
        }
        if let Some(v) = sc.located {
            let at_router = l
                .location(v)
                .is_some_and(|loc| loc.exact && loc.after.map(|h| h.ttl) == Some(1) && loc.before.is_none());
            if !at_router {
                let seen =
                    run.located.get(&v).cloned().unwrap_or_else(|| format!("not located ({:?})", l.notes));
                run.problems
                    .push(format!("{v} located {seen} (expected between hop 1, the router, and the server)"));
            }
        }
    }
    run.evidence = mptcp_tests().map(account).collect();
    run
}

/// What `check` reported of one MPTCP test, in words: for the evidence under a disagreeing matrix.
fn account(t: &TestResult) -> String {
    let mut line =
        format!("{} over mptcp: {}, {}, verdicts {}", t.name, t.outcome, t.mptcp, names(&t.verdicts));
    if let Some(r) = &t.fallback_reason {
        line.push_str(&format!(", fallback reason {r}"));
    }
    if let Some(e) = &t.error {
        line.push_str(&format!(", error: {e}"));
    }
    if let Some(r) = &t.reruns {
        line.push_str(&format!(", run again {} time(s): MPTCP in {}", r.runs, r.established));
    }
    let ev = &t.evidence;
    for f in &ev.findings {
        line.push_str(&format!(
            "\n    {} [{} at the {}]: expected {}; seen {}",
            f.verdict, f.packet, f.end, f.expected, f.seen
        ));
    }
    if !ev.mib_delta.is_empty() {
        line.push_str(&format!("\n    client MPTcpExt delta: {}", json_of(&ev.mib_delta)));
    }
    if !ev.server_mib_delta.is_empty() {
        line.push_str(&format!("\n    server MPTcpExt delta: {}", json_of(&ev.server_mib_delta)));
    }
    match &ev.server {
        None => line.push_str("\n    server: no record of this test"),
        Some(s) => line.push_str(&format!(
            "\n    server: is_mptcp {}, fallback {}, data without DSS {}, handshake {}, wire: {}",
            json_of(&s.is_mptcp),
            json_of(&s.fallback),
            json_of(&s.received_without_dss),
            json_of(&s.handshake),
            json_of(&s.fallback_evidence)
        )),
    }
    line
}

/// One `check --json` in the client. Err: `check` could not be started (the scenario could not
/// run); a `check` that ran and printed no report it should have is a disagreement.
fn check(lab: &Lab, sc: &Scenario, opts: &Options) -> anyhow::Result<Run> {
    let started = Instant::now();
    let bulk = opts.bulk_bytes.to_string();
    let mut cmd = lab.c.cmd(&opts.bins.probe);
    cmd.args(["check", "--server", sc.server(), "--json", "--bulk-bytes", &bulk]);
    if let Some(t) = sc.tests_arg() {
        cmd.args(["--tests", &t]);
    }
    cmd.args(sc.check_args);
    if sc.located.is_some() {
        cmd.arg("--locate");
    }
    let out = cmd.stdin(Stdio::null()).output().context("starting check in the client")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail = || {
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    };
    let problem = |p: String| Run { problems: vec![p], ..Default::default() };
    let mut run = if out.status.code() != Some(0) {
        problem(format!("check exited with {} and no report: {}", out.status, tail()))
    } else {
        match serde_json::from_slice::<Report>(&out.stdout) {
            Ok(report) => judge(sc, &report),
            Err(e) => problem(format!("check printed no report the data model reads ({e}): {}", tail())),
        }
    };
    run.seconds = started.elapsed().as_secs_f64();
    Ok(run)
}

/// A binary a scenario runs must be an executable file: otherwise the scenario cannot run, and
/// says which binary and where it was looked for.
fn preflight(sc: &Scenario, bins: &LabBins) -> anyhow::Result<()> {
    let mut needed: Vec<(Bin, &Path)> = vec![(PROBE, &bins.probe)];
    if sc.runs_middlebox() {
        needed.push((MIDDLEBOX, &bins.middlebox));
    }
    for (bin, path) in needed {
        executable(path).map_err(|e| {
            anyhow!(
                "{} at {}: {e}; build it with `{}` or point {} at it",
                bin.name,
                path.display(),
                bin.build,
                bin.env
            )
        })?;
    }
    Ok(())
}

fn executable(path: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, "not an executable file"));
    }
    Ok(())
}

/// What the router's captures show for the scenario's oracle packet: the MPTCP option present on
/// one side of the router and absent on the other.
pub fn oracle_verdict(
    packet: OraclePacket,
    port: u16,
    client_side: &[Packet],
    server_side: &[Packet],
) -> Result<String, String> {
    let to = |p: &&Packet| p.dst_port == port;
    let from = |p: &&Packet| p.src_port == port;
    fn mpc(p: &Packet) -> bool {
        p.mptcp.iter().any(|(s, _)| *s == Subtype::MpCapable)
    }
    fn any(p: &Packet) -> bool {
        !p.mptcp.is_empty()
    }
    type Has = fn(&Packet) -> bool;
    // (packets before the router, packets after it, option test)
    let (before, after, has, what): (Vec<&Packet>, Vec<&Packet>, Has, &str) = match packet {
        OraclePacket::Syn => (
            client_side.iter().filter(to).filter(|p| p.syn && !p.ack).collect(),
            server_side.iter().filter(to).filter(|p| p.syn && !p.ack).collect(),
            mpc,
            "SYN",
        ),
        OraclePacket::SynAck => (
            server_side.iter().filter(from).filter(|p| p.syn && p.ack).collect(),
            client_side.iter().filter(from).filter(|p| p.syn && p.ack).collect(),
            mpc,
            "SYN/ACK",
        ),
        OraclePacket::Ack => {
            // The client's first non-SYN packet of each connection that offered MP_CAPABLE.
            let firsts = |side: &[Packet]| -> Vec<Packet> {
                let mut seen = std::collections::HashSet::new();
                side.iter()
                    .filter(|p| p.dst_port == port && !p.syn)
                    .filter(|p| seen.insert(p.src_port))
                    .cloned()
                    .collect()
            };
            let (b, a) = (firsts(client_side), firsts(server_side));
            let before_mpc = b.iter().filter(|p| mpc(p)).count();
            let after_mpc = a.iter().filter(|p| mpc(p)).count();
            return if before_mpc > 0 && after_mpc == 0 && !a.is_empty() {
                Ok(format!(
                    "third ACK: MP_CAPABLE on {before_mpc} of {} before the router, on 0 of {} after",
                    b.len(),
                    a.len()
                ))
            } else {
                Err(format!(
                    "third ACK: MP_CAPABLE on {before_mpc} of {} before the router, on {after_mpc} of {} after",
                    b.len(),
                    a.len()
                ))
            };
        }
        OraclePacket::Data => (
            client_side.iter().filter(to).filter(|p| !p.syn && p.len > 0).collect(),
            server_side.iter().filter(to).filter(|p| !p.syn && p.len > 0).collect(),
            any,
            "data segment",
        ),
    };
    let b_with = before.iter().filter(|p| has(p)).count();
    let a_without = after.iter().filter(|p| !has(p)).count();
    let a_with = after.len() - a_without;
    let text = format!(
        "{what} to/from port {port}: MPTCP option on {b_with} of {} before the router, missing on {a_without} of {} after",
        before.len(),
        after.len()
    );
    let agrees = match packet {
        // More data segments lack it after the router than before (the strip starts after N
        // bytes; after a fallback the client itself sends some without).
        OraclePacket::Data => b_with > 0 && a_without > before.len() - b_with,
        _ => b_with > 0 && a_with == 0 && a_without > 0,
    };
    if agrees {
        Ok(text)
    } else {
        Err(text)
    }
}

/// Runs one scenario: lab up, middlebox, serve, `check` (`opts.repeat` times), lab down.
pub fn run(sc: &'static Scenario, opts: &Options, on_run: &mut dyn FnMut(u32, &Run)) -> Outcome {
    let started = Instant::now();
    let mut outcome = Outcome {
        scenario: sc,
        runs: Vec::new(),
        oracle: None,
        middlebox: Vec::new(),
        could_not_run: None,
        seconds: 0.0,
        kept: None,
    };
    // The lab's helpers panic on a broken host; that is this scenario's failure to run, not the
    // end of the process. Unwinding drops the lab, which removes it.
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        preflight(sc, &opts.bins)?;
        run_inner(sc, opts, &mut outcome, on_run)
    }));
    match res {
        Ok(Ok(())) => {}
        Ok(Err(e)) => outcome.could_not_run = Some(format!("{e:#}")),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            outcome.could_not_run = Some(msg);
        }
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome
}

fn run_inner(
    sc: &'static Scenario,
    opts: &Options,
    outcome: &mut Outcome,
    on_run: &mut dyn FnMut(u32, &Run),
) -> anyhow::Result<()> {
    let lab = Lab::up();
    lab.server_announces(addr::SERVER_EXTRA, addr::SERVER_EXTRA_V6);
    let applied = scenario::apply(&lab, sc, &opts.bins.middlebox)
        .with_context(|| format!("applying scenario {}", sc.name))?;
    let (server, server_dir) = serve(&lab.s, &opts.bins.probe)?;
    let captures =
        sc.oracle.map(|o| (o, Capture::start(&lab.m, ifname::M1), Capture::start(&lab.m, ifname::MS)));
    for i in 0..opts.repeat.max(1) {
        if opts.stopped() {
            bail!("interrupted after {i} run(s)");
        }
        let run = check(&lab, sc, opts)?;
        on_run(i + 1, &run);
        outcome.runs.push(run);
    }
    if let Some((o, c, s)) = captures {
        outcome.oracle = Some(oracle_verdict(o.packet, o.port, &c.finish(), &s.finish()));
    }
    if opts.keep {
        outcome.kept = Some(keep(lab, applied, (server, server_dir)));
    } else {
        outcome.middlebox = applied.stop();
    }
    Ok(())
}

/// The matrix as a table for people, with the evidence of every disagreeing scenario under it.
pub fn table(outcomes: &[Outcome]) -> String {
    let header = ["scenario", "expected", "observed", "fallback reason", "located", "oracle", "time", ""];
    let mut rows: Vec<Vec<String>> = Vec::new();
    for o in outcomes {
        let sc = o.scenario;
        let expected = format!(
            "{}{}{}",
            names(sc.expect),
            expected_path(sc),
            sc.fallback.map(|f| format!(" ({}: {})", f.test, f.reasons_text())).unwrap_or_default()
        );
        let observed = if o.could_not_run.is_some() {
            "could not run".to_string()
        } else {
            let mut counts: BTreeMap<String, u32> = BTreeMap::new();
            for r in &o.runs {
                let seen = if r.observed.is_empty() { "-".into() } else { names(&r.observed) };
                *counts.entry(seen + &with_path(&r.path)).or_default() += 1;
            }
            counts
                .iter()
                .map(|(k, n)| if o.runs.len() > 1 { format!("{k} ×{n}") } else { k.clone() })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let mut reasons: Vec<String> = o.runs.iter().flat_map(|r| r.fallback.values().cloned()).collect();
        reasons.sort();
        reasons.dedup();
        let oracle = match &o.oracle {
            None => "-".to_string(),
            Some(Ok(_)) => "✓".into(),
            Some(Err(_)) => "✗".into(),
        };
        let located = o
            .runs
            .first()
            .and_then(|r| sc.located.and_then(|v| r.located.get(&v)))
            .cloned()
            .unwrap_or_else(|| "-".into());
        rows.push(vec![
            sc.name.into(),
            expected,
            observed,
            if reasons.is_empty() { "-".into() } else { reasons.join(", ") },
            located,
            oracle,
            format!("{:.1}s", o.seconds),
            if o.ok() { "✓".into() } else { "✗".into() },
        ]);
    }
    let mut out = crate::text::table(&header, &rows);
    let agree = outcomes.iter().filter(|o| o.ok()).count();
    out.push_str(&format!("\n{agree} of {} scenarios agree with their expectation\n", outcomes.len()));
    for o in outcomes.iter().filter(|o| !o.ok()) {
        out.push_str(&format!("\n✗ {} — {}\n", o.scenario.name, o.scenario.about));
        for c in o.scenario.commands() {
            out.push_str(&format!("  router: {c}\n"));
        }
        if !o.scenario.check_args.is_empty() {
            out.push_str(&format!("  check: {}\n", o.scenario.check_args.join(" ")));
        }
        if let Some(e) = &o.could_not_run {
            out.push_str(&format!("  could not run: {e}\n"));
        }
        if let Some(Err(e)) = &o.oracle {
            out.push_str(&format!("  oracle (tshark on the router) disagrees: {e}\n"));
        }
        if !o.middlebox.is_empty() {
            out.push_str(&format!("  middlebox counters: {}\n", Value::from(o.middlebox.clone())));
        }
        for (i, r) in o.runs.iter().enumerate().filter(|(_, r)| !r.problems.is_empty()).take(3) {
            out.push_str(&format!("  run {}: {}\n", i + 1, r.problems.join("; ")));
            for e in &r.evidence {
                out.push_str(&format!("    {}\n", e.replace('\n', "\n    ")));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report as `check --json` prints one (the fields the data model requires), read through
    /// the model as the judge reads it.
    fn report(verdicts: &[Verdict], reason: Option<&str>) -> Report {
        let findings: Vec<Value> = verdicts
            .iter()
            .map(|v| {
                json!({"verdict": v, "packet": "SYN", "end": "server",
                       "expected": "MP_CAPABLE", "seen": "SYN without MP_CAPABLE"})
            })
            .collect();
        let test = |transport: Transport| {
            let mptcp = transport == Transport::Mptcp;
            json!({
                "name": "http", "transport": transport, "port": 80, "outcome": "ok",
                "mptcp": if mptcp { "fallback" } else { "not_applicable" },
                "subflows": 1, "fallback_reason": if mptcp { reason } else { None },
                "verdicts": if mptcp { verdicts } else { &[] },
                "evidence": {
                    "client": {}, "server": null,
                    "mib_delta": if mptcp { json!({"MPCapableFallbackSYNACK": 1}) } else { json!({}) },
                    "findings": if mptcp { findings.clone() } else { vec![] },
                },
                "duration_ms": 3,
            })
        };
        let v = json!({
            "schema": mptcp_probe_model::SCHEMA, "id": "r", "started_at": "2026-12-01T00:00:00Z",
            "duration_ms": 10,
            "client": {"kernel": "6.18", "mptcp_sysctls": {}, "observer": "tc+tracepoints"},
            "server": {"address": "203.0.113.2", "version": "0.1.0"},
            "tests": [test(Transport::Mptcp), test(Transport::Tcp)],
            "summary": {"verdicts": verdicts, "mptcp_usable": false},
            // check --locate's account: each verdict's change between the router and the server.
            "locate": {"traces": [], "locations": verdicts.iter().map(|v| json!({
                "verdict": v, "port": 80, "after": {"ttl": 1, "address": "192.0.2.2"}, "before": null,
                "exact": true, "text": "between hop 1 (192.0.2.2) and the server (203.0.113.2)"})).collect::<Vec<_>>()},
        });
        serde_json::from_value(v).unwrap_or_else(|e| panic!("the data model does not read the fixture: {e}"))
    }

    #[test]
    fn judge_agrees_only_with_the_exact_verdicts_and_reason() {
        let sc = scenario::named("syn-strip");
        let ok = judge(sc, &report(&[Verdict::SynOptionStripped], Some("MPCapableFallbackSYNACK")));
        assert!(ok.problems.is_empty(), "{:?}", ok.problems);
        assert_eq!(ok.fallback.get(&TestName::Http).map(String::as_str), Some("MPCapableFallbackSYNACK"));
        let extra =
            judge(sc, &report(&[Verdict::SynOptionStripped, Verdict::Nat], Some("MPCapableFallbackSYNACK")));
        assert_eq!(extra.problems.len(), 1, "{:?}", extra.problems);
        let reason = judge(sc, &report(&[Verdict::SynOptionStripped], Some("DssFallback")));
        assert!(reason.problems[0].contains("DssFallback"), "{:?}", reason.problems);
        // A scenario that expects no fallback refuses one.
        let clean = judge(scenario::named("clean"), &report(&[Verdict::MptcpOk], Some("DssFallback")));
        assert!(clean.problems.iter().any(|p| p.contains("expected none")), "{:?}", clean.problems);
        // The order of the verdicts is not a difference.
        let mss = scenario::named("mss-clamp");
        assert!(judge(mss, &report(&[Verdict::MssRewritten, Verdict::MptcpOk], None)).problems.is_empty());
        // The evidence names the finding, for the table under a disagreeing matrix.
        assert!(reason.evidence[0].contains("SYN without MP_CAPABLE"), "{:?}", reason.evidence);
        assert!(reason.evidence[0].contains("[SYN at the server]"), "{:?}", reason.evidence);
        assert!(reason.evidence[0].contains("server: no record"), "{:?}", reason.evidence);
    }

    #[test]
    fn a_located_scenario_needs_its_change_between_the_router_and_the_server() {
        let sc = scenario::named("mss-clamp");
        let mut r = report(&[Verdict::MptcpOk, Verdict::MssRewritten], None);
        r.locate = None;
        let missing = judge(sc, &r).problems;
        assert!(missing.iter().any(|p| p.contains("no locate section")), "{missing:?}");
        let hop = |ttl: u8| {
            Some(mptcp_probe_model::locate::HopRef { ttl, address: Some("192.0.2.2".parse().unwrap()) })
        };
        let at = |after, before, exact| mptcp_probe_model::locate::Location {
            verdict: Verdict::MssRewritten,
            port: Some(8001),
            after,
            before,
            exact,
            text: "between hop 1 (192.0.2.2) and the server (203.0.113.2)".into(),
        };
        r.locate = Some(mptcp_probe_model::locate::Locate {
            locations: vec![at(hop(1), None, true)],
            ..Default::default()
        });
        let ok = judge(sc, &r);
        assert!(ok.problems.is_empty(), "{:?}", ok.problems);
        assert_eq!(
            ok.located[&Verdict::MssRewritten],
            "between hop 1 (192.0.2.2) and the server (203.0.113.2)"
        );
        for wrong in [at(None, hop(1), true), at(hop(1), None, false)] {
            r.locate =
                Some(mptcp_probe_model::locate::Locate { locations: vec![wrong], ..Default::default() });
            let p = judge(sc, &r).problems;
            assert!(p.iter().any(|p| p.contains("expected between hop 1")), "{p:?}");
        }
        r.locate = Some(mptcp_probe_model::locate::Locate {
            notes: vec!["no CAP_NET_RAW".into()],
            ..Default::default()
        });
        let p = judge(sc, &r).problems;
        assert!(p.iter().any(|p| p.contains("not located") && p.contains("no CAP_NET_RAW")), "{p:?}");
    }

    /// A report with one MPTCP and one plain-TCP result per test: (test, the MPTCP run's
    /// verdicts, its fallback reason); the summary as given.
    fn report_of(
        tests: &[(TestName, &[Verdict], Option<&str>)],
        summary: &[Verdict],
        path: &[Verdict],
    ) -> Report {
        let results: Vec<Value> = tests
            .iter()
            .flat_map(|(name, verdicts, reason)| {
                [Transport::Mptcp, Transport::Tcp].map(|transport| {
                    let mptcp = transport == Transport::Mptcp;
                    json!({
                        "name": name, "transport": transport, "port": 80, "outcome": "ok",
                        "mptcp": if !mptcp { "not_applicable" } else if reason.is_some() { "fallback" } else { "established" },
                        "subflows": 1, "fallback_reason": if mptcp { *reason } else { None },
                        "verdicts": if mptcp { verdicts.to_vec() } else { vec![] },
                        "evidence": {"client": {}, "server": null, "mib_delta": {}, "findings": []},
                        "duration_ms": 3,
                    })
                })
            })
            .collect();
        let v = json!({
            "schema": mptcp_probe_model::SCHEMA, "id": "r", "started_at": "2026-12-01T00:00:00Z",
            "duration_ms": 10,
            "client": {"kernel": "6.18", "mptcp_sysctls": {}, "observer": "tc+tracepoints"},
            "server": {"address": "203.0.113.2", "version": "0.1.0"},
            "tests": results,
            "summary": {"verdicts": summary, "path_conditions": path, "mptcp_usable": true},
        });
        serde_json::from_value(v).unwrap_or_else(|e| panic!("the data model does not read the fixture: {e}"))
    }

    #[test]
    fn a_noisy_path_may_show_its_allowed_condition_and_fall_back_only_where_it_shows() {
        use TestName::{Bulk, Http};
        use Verdict::{HandshakeReordered, MptcpOk, PathBroken};
        let sc = scenario::named("lossy");
        assert_eq!(sc.may, &[HandshakeReordered]);
        let quiet = report_of(&[(Http, &[MptcpOk], None), (Bulk, &[MptcpOk], None)], &[MptcpOk], &[]);
        assert!(judge(sc, &quiet).problems.is_empty(), "{:?}", judge(sc, &quiet).problems);
        // Bulk's first flight reordered: it fell back, and that is what the condition explains.
        let reordered = report_of(
            &[(Http, &[MptcpOk], None), (Bulk, &[HandshakeReordered], Some("MPCapableDataFallback"))],
            &[MptcpOk],
            &[HandshakeReordered],
        );
        let run = judge(sc, &reordered);
        assert!(run.problems.is_empty(), "{:?}", run.problems);
        assert_eq!(run.path, vec![HandshakeReordered]);
        // A fallback the condition does not explain is one.
        let unexplained = report_of(
            &[
                (Http, &[MptcpOk], Some("MPCapableFallbackACK")),
                (Bulk, &[HandshakeReordered], Some("MPCapableDataFallback")),
            ],
            &[MptcpOk],
            &[HandshakeReordered],
        );
        let problems = judge(sc, &unexplained).problems;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("http: fallback reason MPCapableFallbackACK"), "{problems:?}");
        // A condition that is not allowed, or a middlebox verdict, disagrees.
        let broken = report_of(&[(Bulk, &[PathBroken], None)], &[MptcpOk], &[PathBroken]);
        let problems = judge(sc, &broken).problems;
        assert!(problems[0].contains("allowed handshake_reordered"), "{problems:?}");
        let stripped =
            report_of(&[(Http, &[Verdict::AckOptionStripped], None)], &[Verdict::AckOptionStripped], &[]);
        assert!(!judge(sc, &stripped).problems.is_empty());
        // Where the condition is required, a run without it disagrees.
        let ffr = scenario::named("first-flight-reordered");
        let without = report_of(&[(Bulk, &[MptcpOk], None)], &[MptcpOk], &[]);
        let problems = judge(ffr, &without).problems;
        assert!(problems.iter().any(|p| p.contains("expected handshake_reordered")), "{problems:?}");
        // The table shows what is allowed apart from what is required.
        let t = table(&[outcome("lossy", vec![run], None)]);
        assert!(t.contains("mptcp_ok [handshake_reordered?]"), "{t}");
    }

    fn pkt(src: u16, dst: u16, syn: bool, ack: bool, len: u32, mptcp: &[(Subtype, u8)]) -> Packet {
        Packet { src_port: src, dst_port: dst, syn, ack, len, mptcp: mptcp.to_vec() }
    }

    #[test]
    fn the_oracle_needs_the_option_before_the_router_and_not_after() {
        use Subtype::{Dss, MpCapable};
        let before = [pkt(40000, 80, true, false, 0, &[(MpCapable, 4)])];
        let stripped = [pkt(40000, 80, true, false, 0, &[])];
        assert!(oracle_verdict(OraclePacket::Syn, 80, &before, &stripped).is_ok());
        assert!(oracle_verdict(OraclePacket::Syn, 80, &before, &before).is_err(), "not stripped");
        assert!(oracle_verdict(OraclePacket::Syn, 80, &stripped, &stripped).is_err(), "never sent");
        assert!(oracle_verdict(OraclePacket::Syn, 80, &before, &[]).is_err(), "nothing seen after");
        // SYN/ACK: the server side is where it is sent.
        let sa = [pkt(80, 40000, true, true, 0, &[(MpCapable, 12)])];
        let sa_stripped = [pkt(80, 40000, true, true, 0, &[])];
        assert!(oracle_verdict(OraclePacket::SynAck, 80, &sa_stripped, &sa).is_ok());
        assert!(oracle_verdict(OraclePacket::SynAck, 80, &sa, &sa_stripped).is_err());
        // Third ACK: the first non-SYN packet of each connection.
        let c = [
            pkt(40000, 80, false, true, 0, &[(MpCapable, 20)]),
            pkt(40000, 80, false, true, 10, &[(Dss, 8)]),
        ];
        let s = [pkt(40000, 80, false, true, 0, &[]), pkt(40000, 80, false, true, 10, &[(Dss, 8)])];
        assert!(oracle_verdict(OraclePacket::Ack, 80, &c, &s).is_ok());
        assert!(oracle_verdict(OraclePacket::Ack, 80, &c, &c).is_err());
        // Data: more segments without the option after the router than before.
        let d = [
            pkt(40000, 8001, false, true, 1000, &[(Dss, 20)]),
            pkt(40000, 8001, false, true, 1000, &[(Dss, 20)]),
        ];
        let d_after =
            [pkt(40000, 8001, false, true, 1000, &[(Dss, 20)]), pkt(40000, 8001, false, true, 1000, &[])];
        assert!(oracle_verdict(OraclePacket::Data, 8001, &d, &d_after).is_ok());
        assert!(oracle_verdict(OraclePacket::Data, 8001, &d, &d).is_err());
    }

    fn outcome(name: &str, runs: Vec<Run>, oracle: Option<Result<String, String>>) -> Outcome {
        Outcome {
            scenario: scenario::named(name),
            runs,
            oracle,
            middlebox: vec![],
            could_not_run: None,
            seconds: 1.0,
            kept: None,
        }
    }

    #[test]
    fn the_table_marks_disagreement_and_shows_its_evidence() {
        let sc = scenario::named("syn-strip");
        let good = outcome(
            "syn-strip",
            vec![judge(sc, &report(&[Verdict::SynOptionStripped], Some("MPCapableFallbackSYNACK")))],
            Some(Ok("fine".into())),
        );
        let bad = outcome(
            "synack-strip",
            vec![judge(
                scenario::named("synack-strip"),
                &report(&[Verdict::SynOptionStripped], Some("MPCapableFallbackSYNACK")),
            )],
            Some(Err("SYN/ACK: MPTCP option on 0 of 1".into())),
        );
        assert!(good.ok() && !bad.ok() && bad.disagrees());
        let t = table(&[good, bad]);
        assert!(t.contains("1 of 2 scenarios agree"), "{t}");
        assert!(t.contains("✗ synack-strip"), "{t}");
        assert!(t.contains("oracle (tshark on the router) disagrees"), "{t}");
        assert!(t.contains("SYN without MP_CAPABLE"), "{t}");
        assert!(t.contains("syn_option_stripped (http: MPCapableFallbackSYNACK)"), "{t}");
    }

    #[test]
    fn a_scenario_without_its_binary_could_not_run_and_disagrees_with_nothing() {
        let missing = Path::new("/nonexistent/mptcp-probe");
        let opts = Options {
            bins: LabBins { probe: missing.into(), middlebox: missing.with_file_name("mptcp-middlebox") },
            ..Options::default()
        };
        // Refused before any lab is built: this needs no root.
        let o = run(scenario::named("clean"), &opts, &mut |_, _| panic!("no check may run"));
        let cause = o.could_not_run.as_deref().expect("could not run");
        assert!(cause.contains("mptcp-probe at /nonexistent/mptcp-probe"), "{cause}");
        assert!(cause.contains("No such file or directory"), "{cause}");
        assert!(cause.contains("MPTCP_PROBE_BIN"), "{cause}");
        assert!(o.runs.is_empty() && !o.ok() && !o.disagrees());
        let t = table(std::slice::from_ref(&o));
        assert!(t.contains("could not run: mptcp-probe at /nonexistent"), "{t}");
        assert!(!t.contains("verdicts"), "{t}");
        // A middlebox scenario names the middlebox too; a file that is not executable is refused.
        let split = run(scenario::named("split"), &opts, &mut |_, _| panic!("no check may run"));
        assert!(split.could_not_run.is_some());
        let not_exec = LabBins { probe: std::env::temp_dir(), middlebox: missing.into() };
        let e = preflight(scenario::named("clean"), &not_exec).unwrap_err().to_string();
        assert!(e.contains("not an executable file"), "{e}");
    }

    #[test]
    fn every_scenario_has_a_unique_name_and_states_what_it_expects() {
        let mut names: Vec<&str> = scenario::SCENARIOS.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), scenario::SCENARIOS.len());
        for s in scenario::SCENARIOS {
            assert!(!s.expect.is_empty(), "{}", s.name);
            assert!(!s.about.is_empty(), "{}", s.name);
            if s.name != "clean" && !s.name.starts_with("clean-") {
                assert!(!s.commands().is_empty(), "{} does nothing to the lab", s.name);
            }
            // A fallback the scenario expects is of a test it runs, over MPTCP.
            if let (Some(f), Some(tests)) = (s.fallback, s.tests) {
                assert!(tests.contains(&f.test), "{}: {} is not run", s.name, f.test);
            }
        }
        assert_eq!(scenario::named("syn-strip").tests_arg().as_deref(), Some("handshake,http,bulk"));
        for s in scenario::SCENARIOS {
            // Path conditions are listed apart from the summary's verdicts, each once.
            assert!(s.expect.iter().all(|v| !v.is_path_condition()), "{}", s.name);
            assert!(s.path.iter().chain(s.may).all(|v| v.is_path_condition()), "{}", s.name);
            assert!(s.may.iter().all(|v| !s.path.contains(v)), "{}", s.name);
        }
        for name in scenario::NOISY_PATHS {
            let s = scenario::named(name);
            // A path that only delays, loses and reorders shows no middlebox verdict and
            // requires no condition.
            assert_eq!(s.expect, &[Verdict::MptcpOk], "{name}");
            assert!(s.path.is_empty() && !s.may.is_empty() && s.fallback.is_none(), "{name}");
        }
        assert_eq!(scenario::named("clean").tests_arg(), None);
    }
}
