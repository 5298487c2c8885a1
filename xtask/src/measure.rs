//! `cargo xtask measure`: builds everything, then for every middlebox scenario of the lab creates
//! the namespaces, applies the middlebox in the router, runs `mptcp-probe serve` and
//! `mptcp-probe check`, and prints a matrix of expected against observed verdicts. A scenario
//! that cannot run stops the matrix with its cause: it is not a disagreement.

use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use anyhow::{bail, Context as _};
use mptcp_probe_tests::{
    lab::addr,
    matrix::{self, LabBins, Options, Outcome},
    scenario::{self, Scenario, SCENARIOS},
    workspace::{MIDDLEBOX, PROBE},
};

pub struct MeasureOpts {
    pub scenarios: Vec<String>,
    pub json: bool,
    pub keep: bool,
    pub repeat: u32,
    pub bulk_bytes: u64,
}

/// Sets up, builds, and names the binaries the lab runs: `MPTCP_PROBE_BIN` /
/// `MPTCP_MIDDLEBOX_BIN` where set, else the release builds just made.
pub(crate) fn prepare(what: &str) -> anyhow::Result<LabBins> {
    crate::require_root(what)?;
    crate::setup::run(&crate::setup::SetupOpts { with_test_tools: false })?;
    crate::build_release()?;
    Ok(LabBins { probe: crate::bin_path(PROBE), middlebox: crate::bin_path(MIDDLEBOX) })
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

/// Why the matrix stopped before its last scenario.
#[derive(Debug)]
enum Cut {
    Interrupted,
    CouldNotRun { scenario: &'static str, cause: String },
}

/// The scenarios that ran, and why the rest did not.
struct Measured {
    outcomes: Vec<Outcome>,
    total: usize,
    cut: Option<Cut>,
}

/// Runs the scenarios in turn, telling `progress` of each; stops at an interruption or at the
/// first scenario that could not run (the others would not either, or not for their own reasons).
fn measure(list: &[&'static Scenario], opts: &Options, progress: &mut dyn Write) -> Measured {
    let stopped = || opts.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed));
    let mut m = Measured { outcomes: Vec::new(), total: list.len(), cut: None };
    for (i, sc) in list.iter().enumerate() {
        if stopped() {
            m.cut = Some(Cut::Interrupted);
            break;
        }
        let _ = write!(progress, "[{}/{}] {:<22} {} ... ", i + 1, list.len(), sc.name, sc.about);
        let _ = progress.flush();
        let repeat = opts.repeat;
        let outcome = matrix::run(sc, opts, &mut |n, r| {
            if repeat > 1 {
                eprint!("{}", if r.problems.is_empty() { "." } else { "x" });
                if n % 50 == 0 {
                    eprint!(" {n}\n    ");
                }
                let _ = std::io::stderr().flush();
            }
        });
        if stopped() {
            let _ = writeln!(progress, "interrupted");
            m.cut = Some(Cut::Interrupted);
            break;
        }
        if let Some(cause) = &outcome.could_not_run {
            let _ = writeln!(progress, "could not run ({:.1}s)", outcome.seconds);
            m.cut = Some(Cut::CouldNotRun { scenario: sc.name, cause: cause.clone() });
            break;
        }
        let _ = writeln!(
            progress,
            "{}{} ({:.1}s)",
            if repeat > 1 { " " } else { "" },
            if outcome.ok() { "agrees" } else { "DISAGREES" },
            outcome.seconds
        );
        if let Some(run) = &outcome.kept {
            print_kept(run, sc);
        }
        m.outcomes.push(outcome);
    }
    m
}

/// Prints the matrix of the scenarios that ran to `out`; fails when one disagrees, when the
/// matrix was interrupted, or when a scenario could not run (with its cause).
fn finish(m: &Measured, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    if let Some(Cut::Interrupted) = m.cut {
        bail!("interrupted: labs removed, {} of {} scenarios done", m.outcomes.len(), m.total);
    }
    if !m.outcomes.is_empty() {
        if json {
            let v: Vec<serde_json::Value> = m.outcomes.iter().map(|x| x.to_json()).collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&serde_json::json!({"scenarios": v}))?)?;
        } else {
            writeln!(out)?;
            write!(out, "{}", matrix::table(&m.outcomes))?;
        }
    }
    if let Some(Cut::CouldNotRun { scenario, cause }) = &m.cut {
        bail!(
            "could not run: scenario {scenario}: {cause}\n(the matrix stops here: {} of {} scenarios done)",
            m.outcomes.len(),
            m.total
        );
    }
    let bad = m.outcomes.iter().filter(|x| x.disagrees()).count();
    if bad > 0 {
        bail!("{bad} scenario(s) disagree with what they expect");
    }
    Ok(())
}

pub fn run(o: MeasureOpts) -> anyhow::Result<()> {
    let list = selected(&o.scenarios)?;
    if o.keep && list.len() != 1 {
        bail!("--keep leaves one lab up to explore: name its scenario with --scenario");
    }
    if o.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let bins = prepare("cargo xtask measure")?;
    let stop = interrupt_flag()?;
    let opts = Options { bins, bulk_bytes: o.bulk_bytes, repeat: o.repeat, keep: o.keep, stop: Some(stop) };
    eprintln!(
        "measure: {} scenario(s){}, each in its own lab: client {} / {} -- router -- server {}",
        list.len(),
        if o.repeat > 1 { format!(" × {} runs", o.repeat) } else { String::new() },
        addr::CLIENT1,
        addr::CLIENT2,
        addr::SERVER
    );
    let measured = measure(&list, &opts, &mut std::io::stderr());
    finish(&measured, o.json, &mut std::io::stdout())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_probe_is_a_scenario_that_could_not_run_not_a_disagreement() {
        // As `MPTCP_PROBE_BIN=/nonexistent/mptcp-probe cargo xtask measure --scenario clean`.
        let bins = LabBins {
            probe: "/nonexistent/mptcp-probe".into(),
            middlebox: "/nonexistent/mptcp-middlebox".into(),
        };
        let opts = Options { bins, ..Options::default() };
        let list = selected(&["clean".into(), "syn-strip".into()]).unwrap();
        let mut progress = Vec::new();
        let m = measure(&list, &opts, &mut progress);
        let progress = String::from_utf8(progress).unwrap();
        assert!(progress.contains("[1/2] clean") && progress.contains("could not run"), "{progress}");
        assert!(
            !progress.contains("[2/2]"),
            "the matrix goes on after a scenario that could not run:\n{progress}"
        );
        let mut out = Vec::new();
        let err = format!("{:#}", finish(&m, false, &mut out).unwrap_err());
        let out = String::from_utf8(out).unwrap();
        assert!(
            err.starts_with("could not run: scenario clean: mptcp-probe at /nonexistent/mptcp-probe"),
            "{err}"
        );
        assert!(err.contains("No such file or directory"), "{err}");
        for text in [&progress, &out, &err] {
            assert!(!text.contains("DISAGREES") && !text.contains("disagree"), "{text}");
        }
    }
}
