//! Runs scenarios end to end — a lab, the scenario's middlebox, `serve` in the server namespace,
//! `check --json` in the client's — and compares what `check` says with what the scenario expects.
//! Used by `cargo xtask measure` and by the end-to-end matrix test.

use std::{
    collections::BTreeMap,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::{
    lab::{addr, ifname, Child, Lab, Netns},
    oracle::{Capture, Packet},
    probe::TempDir,
    probe_bin,
    scenario::{self, OraclePacket, Scenario},
};

#[derive(Clone, Debug)]
pub struct Options {
    /// `check --bulk-bytes`.
    pub bulk_bytes: u64,
    /// Runs of `check` per scenario (one lab and server for all of them).
    pub repeat: u32,
    /// Leave the lab (with its middlebox and server) up after the scenario.
    pub keep: bool,
    /// Set (by a signal handler) to stop between runs.
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Default for Options {
    fn default() -> Self {
        Self { bulk_bytes: 300_000, repeat: 1, keep: false, stop: None }
    }
}

impl Options {
    fn stopped(&self) -> bool {
        self.stop.as_ref().map(|s| s.load(std::sync::atomic::Ordering::Relaxed)).unwrap_or(false)
    }
}

/// One `check` run of a scenario, compared with what it expects.
#[derive(Clone, Debug, Default)]
pub struct Run {
    pub observed: Vec<String>,
    /// Fallback reason per MPTCP test that named one.
    pub fallback: BTreeMap<String, String>,
    pub seconds: f64,
    /// Why the run disagrees (empty: it agrees).
    pub problems: Vec<String>,
    /// What `check` reported for the MPTCP tests, in words (kept for disagreeing runs).
    pub evidence: Vec<String>,
    pub report: Option<Value>,
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
    /// The scenario could not be run at all.
    pub error: Option<String>,
    pub seconds: f64,
    /// The lab left up (`--keep`).
    pub kept: Option<String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.error.is_none()
            && !self.runs.is_empty()
            && self.runs.iter().all(|r| r.problems.is_empty())
            && !matches!(self.oracle, Some(Err(_)))
    }

    pub fn to_json(&self) -> Value {
        let sc = self.scenario;
        json!({
            "scenario": sc.name,
            "about": sc.about,
            "router": sc.commands(),
            "expected": {"verdicts": sc.expect, "fallback": sc.fallback.map(|(t, r)| json!({"test": t, "reason": r}))},
            "agrees": self.ok(),
            "error": self.error,
            "oracle": self.oracle.as_ref().map(|o| match o {
                Ok(s) => json!({"agrees": true, "detail": s}),
                Err(s) => json!({"agrees": false, "detail": s}),
            }),
            "middlebox": self.middlebox,
            "seconds": self.seconds,
            "kept_lab": self.kept,
            "runs": self.runs.iter().map(|r| json!({
                "observed": r.observed,
                "fallback": r.fallback,
                "seconds": r.seconds,
                "problems": r.problems,
                "evidence": if r.problems.is_empty() { Value::Null } else { json!(r.evidence) },
            })).collect::<Vec<_>>(),
        })
    }
}

/// Starts `serve` in the server namespace and waits until it listens.
pub fn serve(ns: &Netns) -> anyhow::Result<(Child, TempDir)> {
    let dir = TempDir::new("serve");
    let log = dir.0.join("serve.log");
    let mut child = Child::spawn(
        ns.cmd(probe_bin())
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?),
    );
    child.wait_ready(&log, "mptcp-probe serving on", Duration::from_secs(30), "serve")?;
    Ok((child, dir))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Leaves a lab up with its middlebox and server running (`lab down` removes them all); returns
/// its run name.
pub fn keep(lab: Lab, applied: scenario::Applied, server: (Child, TempDir)) -> String {
    applied.detach();
    std::mem::forget(server);
    lab.keep()
}

/// Compares a report with the scenario.
pub fn judge(sc: &Scenario, report: &Value) -> Run {
    let mut run = Run { report: Some(report.clone()), ..Default::default() };
    let mut observed = strings(&report["summary"]["verdicts"]);
    observed.sort();
    run.observed = observed.clone();
    let mut expected: Vec<String> = sc.expect.iter().map(|s| s.to_string()).collect();
    expected.sort();
    if observed != expected {
        run.problems.push(format!("verdicts {} (expected {})", observed.join(","), expected.join(",")));
    }
    let tests = report["tests"].as_array().cloned().unwrap_or_default();
    for t in tests.iter().filter(|t| t["transport"] == "mptcp") {
        if let Some(r) = t["fallback_reason"].as_str() {
            run.fallback.insert(t["name"].as_str().unwrap_or("?").to_string(), r.to_string());
        }
    }
    match sc.fallback {
        Some((test, reason)) => {
            let got = run.fallback.get(test).cloned();
            if got.as_deref() != Some(reason) {
                run.problems.push(format!(
                    "{test}: fallback reason {} (expected {reason})",
                    got.as_deref().unwrap_or("none")
                ));
            }
        }
        None => {
            for (test, r) in &run.fallback {
                run.problems.push(format!("{test}: fallback reason {r} (expected none)"));
            }
        }
    }
    for t in tests.iter().filter(|t| t["transport"] == "mptcp") {
        let mut line = format!(
            "{} over mptcp: {}, {}, verdicts {}",
            t["name"].as_str().unwrap_or("?"),
            t["outcome"].as_str().unwrap_or("?"),
            t["mptcp"].as_str().unwrap_or("?"),
            strings(&t["verdicts"]).join(",")
        );
        if let Some(r) = t["fallback_reason"].as_str() {
            line.push_str(&format!(", fallback reason {r}"));
        }
        if let Some(e) = t["error"].as_str() {
            line.push_str(&format!(", error: {e}"));
        }
        for f in t["evidence"]["findings"].as_array().into_iter().flatten() {
            line.push_str(&format!(
                "\n    {} [{} at the {}]: expected {}; seen {}",
                f["verdict"].as_str().unwrap_or("?"),
                f["packet"].as_str().unwrap_or("?"),
                f["end"].as_str().unwrap_or("?"),
                f["expected"].as_str().unwrap_or("?"),
                f["seen"].as_str().unwrap_or("?")
            ));
        }
        let mib = &t["evidence"]["mib_delta"];
        if mib.as_object().map(|m| !m.is_empty()).unwrap_or(false) {
            line.push_str(&format!("\n    client MPTcpExt delta: {mib}"));
        }
        let smib = &t["evidence"]["server_mib_delta"];
        if smib.as_object().map(|m| !m.is_empty()).unwrap_or(false) {
            line.push_str(&format!("\n    server MPTcpExt delta: {smib}"));
        }
        let s = &t["evidence"]["server"];
        if s.is_null() {
            line.push_str("\n    server: no record of this test");
        } else {
            line.push_str(&format!(
                "\n    server: is_mptcp {}, fallback {}, data without DSS {}, handshake {}, wire: {}",
                s["is_mptcp"],
                s["fallback"],
                s["received_without_dss"],
                s["handshake"],
                s["fallback_evidence"]
            ));
        }
        run.evidence.push(line);
    }
    run
}

fn check(lab: &Lab, sc: &Scenario, opts: &Options) -> Run {
    let started = Instant::now();
    let bulk = opts.bulk_bytes.to_string();
    let mut cmd = lab.c.cmd(probe_bin());
    cmd.args(["check", "--server", sc.server(), "--json", "--bulk-bytes", &bulk]);
    if let Some(t) = sc.tests {
        cmd.args(["--tests", t]);
    }
    let out = match cmd.stdin(Stdio::null()).output() {
        Ok(o) => o,
        Err(e) => {
            return Run { problems: vec![format!("cannot run check: {e}")], ..Default::default() };
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut run = match serde_json::from_slice::<Value>(&out.stdout) {
        Ok(report) if out.status.code() == Some(0) => judge(sc, &report),
        _ => {
            let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
            Run {
                problems: vec![format!(
                    "check exited with {} and no report: {}",
                    out.status,
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                )],
                ..Default::default()
            }
        }
    };
    run.seconds = started.elapsed().as_secs_f64();
    run
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
        p.mptcp.iter().any(|(s, _)| *s == 0)
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
        error: None,
        seconds: 0.0,
        kept: None,
    };
    // The lab's helpers panic on a broken host; that is this scenario's error, not the end of
    // the matrix. Unwinding drops the lab, which removes it.
    let res =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_inner(sc, opts, &mut outcome, on_run)));
    match res {
        Ok(Ok(())) => {}
        Ok(Err(e)) => outcome.error = Some(format!("{e:#}")),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            outcome.error = Some(msg);
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
    let applied = scenario::apply(&lab, sc).with_context(|| format!("applying scenario {}", sc.name))?;
    let (server, server_dir) = serve(&lab.s)?;
    let captures =
        sc.oracle.map(|o| (o, Capture::start(&lab.m, ifname::M1), Capture::start(&lab.m, ifname::MS)));
    for i in 0..opts.repeat.max(1) {
        if opts.stopped() {
            bail!("interrupted after {i} run(s)");
        }
        let run = check(&lab, sc, opts);
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
    let header = ["scenario", "expected", "observed", "fallback reason", "oracle", "time", ""];
    let mut rows: Vec<[String; 7]> = Vec::new();
    for o in outcomes {
        let sc = o.scenario;
        let expected = format!(
            "{}{}",
            sc.expect.join(","),
            sc.fallback.map(|(t, r)| format!(" ({t}: {r})")).unwrap_or_default()
        );
        let observed = if let Some(e) = &o.error {
            format!("error: {}", e.lines().next().unwrap_or(""))
        } else {
            let mut counts: BTreeMap<String, u32> = BTreeMap::new();
            for r in &o.runs {
                *counts
                    .entry(if r.observed.is_empty() { "-".into() } else { r.observed.join(",") })
                    .or_default() += 1;
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
        rows.push([
            sc.name.into(),
            expected,
            observed,
            if reasons.is_empty() { "-".into() } else { reasons.join(", ") },
            oracle,
            format!("{:.1}s", o.seconds),
            if o.ok() { "✓".into() } else { "✗".into() },
        ]);
    }
    let rows: Vec<Vec<String>> = rows.into_iter().map(Vec::from).collect();
    let mut out = crate::text::table(&header, &rows);
    let agree = outcomes.iter().filter(|o| o.ok()).count();
    out.push_str(&format!("\n{agree} of {} scenarios agree with their expectation\n", outcomes.len()));
    for o in outcomes.iter().filter(|o| !o.ok()) {
        out.push_str(&format!("\n✗ {} — {}\n", o.scenario.name, o.scenario.about));
        for c in o.scenario.commands() {
            out.push_str(&format!("  router: {c}\n"));
        }
        if let Some(e) = &o.error {
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

    fn report(verdicts: &[&str], reason: Option<&str>) -> Value {
        json!({
            "summary": {"verdicts": verdicts, "mptcp_usable": false},
            "tests": [
                {"name": "http", "transport": "mptcp", "outcome": "ok", "mptcp": "fallback",
                 "verdicts": verdicts, "fallback_reason": reason,
                 "evidence": {"findings": [{"verdict": verdicts[0], "packet": "SYN", "end": "server",
                                            "expected": "MP_CAPABLE", "seen": "SYN without MP_CAPABLE"}],
                              "mib_delta": {"MPCapableFallbackSYNACK": 1}, "server": null}},
                {"name": "http", "transport": "tcp", "outcome": "ok", "mptcp": "not_applicable",
                 "verdicts": [], "fallback_reason": null, "evidence": {}}
            ]
        })
    }

    #[test]
    fn judge_agrees_only_with_the_exact_verdicts_and_reason() {
        let sc = scenario::named("syn-strip");
        let ok = judge(sc, &report(&["syn_option_stripped"], Some("MPCapableFallbackSYNACK")));
        assert!(ok.problems.is_empty(), "{:?}", ok.problems);
        let extra = judge(sc, &report(&["syn_option_stripped", "nat"], Some("MPCapableFallbackSYNACK")));
        assert_eq!(extra.problems.len(), 1, "{:?}", extra.problems);
        let reason = judge(sc, &report(&["syn_option_stripped"], Some("DssFallback")));
        assert!(reason.problems[0].contains("DssFallback"), "{:?}", reason.problems);
        // A scenario that expects no fallback refuses one.
        let clean = judge(scenario::named("clean"), &report(&["mptcp_ok"], Some("DssFallback")));
        assert!(clean.problems.iter().any(|p| p.contains("expected none")), "{:?}", clean.problems);
        // The evidence names the finding, for the table under a disagreeing matrix.
        assert!(reason.evidence[0].contains("SYN without MP_CAPABLE"), "{:?}", reason.evidence);
        assert!(reason.evidence[0].contains("server: no record"), "{:?}", reason.evidence);
    }

    fn pkt(src: u16, dst: u16, syn: bool, ack: bool, len: u32, mptcp: &[(u8, u8)]) -> Packet {
        Packet { src_port: src, dst_port: dst, syn, ack, len, mptcp: mptcp.to_vec() }
    }

    #[test]
    fn the_oracle_needs_the_option_before_the_router_and_not_after() {
        let before = [pkt(40000, 80, true, false, 0, &[(0, 4)])];
        let stripped = [pkt(40000, 80, true, false, 0, &[])];
        assert!(oracle_verdict(OraclePacket::Syn, 80, &before, &stripped).is_ok());
        assert!(oracle_verdict(OraclePacket::Syn, 80, &before, &before).is_err(), "not stripped");
        assert!(oracle_verdict(OraclePacket::Syn, 80, &stripped, &stripped).is_err(), "never sent");
        assert!(oracle_verdict(OraclePacket::Syn, 80, &before, &[]).is_err(), "nothing seen after");
        // SYN/ACK: the server side is where it is sent.
        let sa = [pkt(80, 40000, true, true, 0, &[(0, 12)])];
        let sa_stripped = [pkt(80, 40000, true, true, 0, &[])];
        assert!(oracle_verdict(OraclePacket::SynAck, 80, &sa_stripped, &sa).is_ok());
        assert!(oracle_verdict(OraclePacket::SynAck, 80, &sa, &sa_stripped).is_err());
        // Third ACK: the first non-SYN packet of each connection.
        let c = [pkt(40000, 80, false, true, 0, &[(0, 20)]), pkt(40000, 80, false, true, 10, &[(2, 8)])];
        let s = [pkt(40000, 80, false, true, 0, &[]), pkt(40000, 80, false, true, 10, &[(2, 8)])];
        assert!(oracle_verdict(OraclePacket::Ack, 80, &c, &s).is_ok());
        assert!(oracle_verdict(OraclePacket::Ack, 80, &c, &c).is_err());
        // Data: more segments without the option after the router than before.
        let d = [
            pkt(40000, 8001, false, true, 1000, &[(2, 20)]),
            pkt(40000, 8001, false, true, 1000, &[(2, 20)]),
        ];
        let d_after =
            [pkt(40000, 8001, false, true, 1000, &[(2, 20)]), pkt(40000, 8001, false, true, 1000, &[])];
        assert!(oracle_verdict(OraclePacket::Data, 8001, &d, &d_after).is_ok());
        assert!(oracle_verdict(OraclePacket::Data, 8001, &d, &d).is_err());
    }

    #[test]
    fn the_table_marks_disagreement_and_shows_its_evidence() {
        let sc = scenario::named("syn-strip");
        let good = Outcome {
            scenario: sc,
            runs: vec![judge(sc, &report(&["syn_option_stripped"], Some("MPCapableFallbackSYNACK")))],
            oracle: Some(Ok("fine".into())),
            middlebox: vec![],
            error: None,
            seconds: 1.0,
            kept: None,
        };
        let bad = Outcome {
            scenario: scenario::named("synack-strip"),
            runs: vec![judge(
                scenario::named("synack-strip"),
                &report(&["syn_option_stripped"], Some("MPCapableFallbackSYNACK")),
            )],
            oracle: Some(Err("SYN/ACK: MPTCP option on 0 of 1".into())),
            middlebox: vec![],
            error: None,
            seconds: 2.0,
            kept: None,
        };
        assert!(good.ok() && !bad.ok());
        let t = table(&[good, bad]);
        assert!(t.contains("1 of 2 scenarios agree"), "{t}");
        assert!(t.contains("✗ synack-strip"), "{t}");
        assert!(t.contains("oracle (tshark on the router) disagrees"), "{t}");
        assert!(t.contains("SYN without MP_CAPABLE"), "{t}");
        let errored = Outcome {
            scenario: sc,
            runs: vec![],
            oracle: None,
            middlebox: vec![],
            error: Some("iptables: no such target".into()),
            seconds: 0.1,
            kept: None,
        };
        assert!(!errored.ok());
        assert!(table(&[errored]).contains("could not run: iptables: no such target"));
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
        }
    }
}
