//! The lab's middlebox matrix end to end (root): every scenario, run through `serve` and `check`
//! in its own lab, gives the verdicts and fallback reason it expects; the strip scenarios'
//! independent oracle (tshark on the router's interfaces) agrees; the clean path, and the paths
//! that only delay, lose and reorder, repeated, give no false verdict. A scenario that cannot run
//! stops the matrix with its cause.

use std::sync::Mutex;

use mptcp_probe_tests::{
    matrix::{self, LabBins, Options, Outcome},
    scenario::{self, SCENARIOS},
    skip_unless_e2e,
};

/// The tests load the machine: one at a time, so none measures another.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs a scenario; one that could not run ends the test with its cause (it is no verdict).
fn run(sc: &'static scenario::Scenario, opts: &Options) -> Outcome {
    let o = matrix::run(sc, opts, &mut |_, _| {});
    if let Some(cause) = &o.could_not_run {
        panic!("{}: could not run: {cause}", sc.name);
    }
    o
}

#[test]
fn every_scenario_gives_the_verdicts_it_expects() {
    skip_unless_e2e!();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    assert!(SCENARIOS.len() >= 15, "the lab has {} scenarios", SCENARIOS.len());
    let opts = Options::default();
    let outcomes: Vec<Outcome> = SCENARIOS
        .iter()
        .map(|sc| {
            let o = run(sc, &opts);
            eprintln!("{}: {} ({:.1}s)", sc.name, if o.ok() { "agrees" } else { "DISAGREES" }, o.seconds);
            o
        })
        .collect();
    let table = matrix::table(&outcomes);
    println!("{table}");
    let bad: Vec<&str> = outcomes.iter().filter(|o| !o.ok()).map(|o| o.scenario.name).collect();
    assert!(bad.is_empty(), "scenarios disagreeing: {bad:?}\n{table}");
    // Every scenario with an oracle (the strip scenarios) had its agreement, not just check's.
    assert!(outcomes.iter().filter(|o| o.scenario.oracle.is_some()).count() >= 4);
    for o in outcomes.iter().filter(|o| o.scenario.oracle.is_some()) {
        assert!(matches!(o.oracle, Some(Ok(_))), "{}: oracle {:?}", o.scenario.name, o.oracle);
    }
    // The middlebox really acted where it runs.
    let outcome = |name: &str| outcomes.iter().find(|o| o.scenario.name == name).unwrap();
    for name in ["seq-rewrite", "split", "coalesce", "payload-rewrite"] {
        let o = outcome(name);
        let modified = o.middlebox.first().and_then(|c| c["modified"].as_u64()).unwrap_or(0);
        assert!(modified > 0, "{name}: middlebox counters {:?}", o.middlebox);
    }
    // The emulated paths delayed, lost and reordered what they say.
    for (name, counters) in [
        ("lossy", &["delayed", "dropped_loss", "overtaken"][..]),
        ("reordering", &["delayed", "not_delayed", "overtaken"]),
        ("first-flight-reordered", &["delayed"]),
    ] {
        let o = outcome(name);
        for c in counters {
            let n = o.middlebox.first().and_then(|m| m["netem"][c].as_u64()).unwrap_or(0);
            assert!(n > 0, "{name}: netem {c} is 0; middlebox counters {:?}", o.middlebox);
        }
    }
}

#[test]
fn the_clean_path_repeated_gives_no_false_verdict() {
    skip_unless_e2e!();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let repeat: u32 =
        std::env::var("MPTCP_PROBE_CLEAN_REPEATS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let opts = Options { repeat, ..Options::default() };
    let o = run(scenario::named("clean"), &opts);
    assert_eq!(o.runs.len(), repeat as usize);
    let table = matrix::table(std::slice::from_ref(&o));
    let false_verdicts: Vec<String> = o
        .runs
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.problems.is_empty())
        .map(|(i, r)| format!("run {}: {}", i + 1, r.problems.join("; ")))
        .collect();
    assert!(
        false_verdicts.is_empty(),
        "{} of {repeat} runs:\n{}\n{table}",
        false_verdicts.len(),
        false_verdicts.join("\n")
    );
}

/// Paths that only delay, lose and reorder, each repeated in one lab: never a middlebox verdict,
/// never a fallback the path's reordering does not explain. `MPTCP_PROBE_PATH_REPEATS` changes
/// the count.
#[test]
fn lossy_and_reordering_paths_repeated_give_no_middlebox_verdict() {
    skip_unless_e2e!();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let repeat: u32 =
        std::env::var("MPTCP_PROBE_PATH_REPEATS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let opts = Options { repeat, ..Options::default() };
    let outcomes: Vec<Outcome> = scenario::NOISY_PATHS
        .iter()
        .map(|name| {
            let o = run(scenario::named(name), &opts);
            assert_eq!(o.runs.len(), repeat as usize, "{name}");
            let reordered = o.runs.iter().filter(|r| !r.path.is_empty()).count();
            eprintln!(
                "{name}: {} of {repeat} runs agree, {reordered} showed a path condition ({:.1}s)",
                o.runs.iter().filter(|r| r.problems.is_empty()).count(),
                o.seconds
            );
            o
        })
        .collect();
    let table = matrix::table(&outcomes);
    println!("{table}");
    let false_verdicts: Vec<String> =
        outcomes
            .iter()
            .flat_map(|o| {
                o.runs.iter().enumerate().filter(|(_, r)| !r.problems.is_empty()).map(move |(i, r)| {
                    format!("{} run {}: {}", o.scenario.name, i + 1, r.problems.join("; "))
                })
            })
            .collect();
    assert!(
        false_verdicts.is_empty(),
        "{} run(s):\n{}\n{table}",
        false_verdicts.len(),
        false_verdicts.join("\n")
    );
}

#[test]
fn a_server_that_exits_at_start_is_a_scenario_that_could_not_run() {
    skip_unless_e2e!();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // An executable that exits at once: `serve` never gets ready.
    let bins = LabBins { probe: "/bin/false".into(), ..LabBins::located() };
    let o = matrix::run(scenario::named("clean"), &Options { bins, ..Options::default() }, &mut |_, _| {
        panic!("no check may run without a server")
    });
    let cause = o.could_not_run.as_deref().unwrap_or_else(|| panic!("it ran: {o:?}"));
    assert!(cause.contains("serve exited"), "{cause}");
    assert!(o.runs.is_empty() && !o.disagrees(), "{o:?}");
}
