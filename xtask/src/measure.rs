//! `cargo xtask measure`: builds everything, then for every middlebox scenario of the lab creates
//! the namespaces, applies the middlebox in the router, runs `mptcp-probe serve` and
//! `mptcp-probe check`, and prints a matrix of expected against observed verdicts.

use std::{
    io::Write as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use anyhow::{bail, Context as _};
use mptcp_probe_tests::{
    lab::addr,
    matrix::{self, Options},
    scenario::{self, Scenario, SCENARIOS},
};

pub struct MeasureOpts {
    pub scenarios: Vec<String>,
    pub json: bool,
    pub keep: bool,
    pub repeat: u32,
    pub bulk_bytes: u64,
}

/// Builds and points the lab helpers at the release binaries.
pub(crate) fn prepare(what: &str) -> anyhow::Result<()> {
    crate::require_root(what)?;
    crate::setup::run(&crate::setup::SetupOpts { with_test_tools: false })?;
    crate::build_release()?;
    // Read by the lab helpers; set before any thread starts.
    std::env::set_var("MPTCP_PROBE_BIN", crate::release_bin("mptcp-probe"));
    std::env::set_var("MPTCP_PEER_BIN", crate::release_bin("mptcp-peer"));
    std::env::set_var("MPTCP_MIDDLEBOX_BIN", crate::release_bin("mptcp-middlebox"));
    Ok(())
}

pub(crate) fn selected(names: &[String]) -> anyhow::Result<Vec<&'static Scenario>> {
    if names.is_empty() {
        return Ok(SCENARIOS.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            scenario::find(n).with_context(|| {
                format!(
                    "no scenario named {n:?}; there are: {}",
                    SCENARIOS.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                )
            })
        })
        .collect()
}

/// Ctrl-C or SIGTERM: the running `check` gets the signal too (same process group); the matrix
/// stops after it and every lab is removed on the way out.
fn interrupt_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    Ok(stop)
}

pub fn run(o: MeasureOpts) -> anyhow::Result<()> {
    let list = selected(&o.scenarios)?;
    if o.keep && list.len() != 1 {
        bail!("--keep leaves one lab up to explore: name its scenario with --scenario");
    }
    if o.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    prepare("cargo xtask measure")?;
    let stop = interrupt_flag()?;
    let opts =
        Options { bulk_bytes: o.bulk_bytes, repeat: o.repeat, keep: o.keep, stop: Some(Arc::clone(&stop)) };
    eprintln!(
        "measure: {} scenario(s){}, each in its own lab: client {} / {} -- router -- server {}",
        list.len(),
        if o.repeat > 1 { format!(" × {} runs", o.repeat) } else { String::new() },
        addr::CLIENT1,
        addr::CLIENT2,
        addr::SERVER
    );
    let mut outcomes = Vec::new();
    for (i, sc) in list.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted: labs removed, {} of {} scenarios done", outcomes.len(), list.len());
        }
        eprint!("[{}/{}] {:<22} {} ... ", i + 1, list.len(), sc.name, sc.about);
        let _ = std::io::stderr().flush();
        let repeat = o.repeat;
        let outcome = matrix::run(sc, &opts, &mut |n, r| {
            if repeat > 1 {
                eprint!("{}", if r.problems.is_empty() { "." } else { "x" });
                if n % 50 == 0 {
                    eprint!(" {n}\n    ");
                }
                let _ = std::io::stderr().flush();
            }
        });
        if stop.load(Ordering::Relaxed) {
            eprintln!("interrupted");
            bail!("interrupted: labs removed, {} of {} scenarios done", outcomes.len(), list.len());
        }
        eprintln!(
            "{}{} ({:.1}s)",
            if repeat > 1 { " " } else { "" },
            if outcome.ok() { "agrees" } else { "DISAGREES" },
            outcome.seconds
        );
        if let Some(run) = &outcome.kept {
            print_kept(run, sc);
        }
        outcomes.push(outcome);
    }
    if stop.load(Ordering::Relaxed) {
        bail!("interrupted: labs removed");
    }
    if o.json {
        let v: Vec<serde_json::Value> = outcomes.iter().map(|x| x.to_json()).collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"scenarios": v}))?);
    } else {
        println!();
        print!("{}", matrix::table(&outcomes));
    }
    let bad = outcomes.iter().filter(|x| !x.ok()).count();
    if bad > 0 {
        bail!("{bad} scenario(s) disagree with what they expect");
    }
    Ok(())
}

pub(crate) fn print_kept(run: &str, sc: &Scenario) {
    eprintln!("\nlab {run} is up with scenario {} and `mptcp-probe serve` running in the server:", sc.name);
    for c in sc.commands() {
        eprintln!("  router: {c}");
    }
    eprintln!("  cargo xtask lab exec c --run {run} -- mptcp-probe check --server {}", sc.server());
    eprintln!("  cargo xtask lab exec m --run {run} -- tcpdump -ni any tcp");
    eprintln!("  cargo xtask lab down --run {run}");
}
