//! Whether an end-to-end test can run here. A plain `cargo test` by a user without root, or
//! before the probe is built, skips the end-to-end tests with a line saying why; under
//! `cargo xtask test` ([`REQUIRE_VAR`] set) a skip is a failure, so the suite cannot vanish
//! unnoticed.

use std::{collections::BTreeSet, io::Write as _, path::Path, sync::Mutex};

use crate::workspace::LAB_BINS;

/// Set to 1 by `cargo xtask test`: an end-to-end test that cannot run fails instead of skipping.
pub const REQUIRE_VAR: &str = "MPTCP_PROBE_REQUIRE_E2E";

/// What a test needs of the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Root (network namespaces, eBPF) and the lab's binaries.
    Root,
    /// The lab's binaries only.
    Binaries,
}

/// What becomes of a test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Run,
    Skip(String),
    Fail(String),
}

/// Decides from the facts: whether this is root, which binaries are missing (their account), and
/// whether skipping is forbidden.
pub fn decide(needs: Needs, root: bool, missing: &[String], required: bool) -> Decision {
    let why = if needs == Needs::Root && !root {
        Some("needs root (network namespaces, eBPF); run `cargo xtask test` as root".to_string())
    } else if !missing.is_empty() {
        Some(missing.join("; "))
    } else {
        None
    };
    match why {
        None => Decision::Run,
        Some(why) if required => Decision::Fail(format!(
            "this end-to-end test cannot run: {why} ({REQUIRE_VAR}=1 forbids skipping it)"
        )),
        Some(why) => Decision::Skip(why),
    }
}

/// True when skipping is forbidden ([`REQUIRE_VAR`]=1).
pub fn required() -> bool {
    std::env::var_os(REQUIRE_VAR).is_some_and(|v| v == "1")
}

/// Decides for this host and process and panics when skipping is forbidden. A skipped test says
/// why in its own output; each reason is also said once per test binary past the harness's
/// capture, so that a plain `cargo test` shows it. Use it through
/// [`skip_unless_e2e!`](crate::skip_unless_e2e).
pub fn ready(needs: Needs) -> bool {
    let missing: Vec<String> =
        LAB_BINS.iter().filter_map(|b| b.locate().err()).map(|e| e.to_string()).collect();
    match decide(needs, crate::is_root(), &missing, required()) {
        Decision::Run => true,
        Decision::Skip(why) => {
            eprintln!("skipped: {why}");
            static SAID: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
            if SAID.lock().unwrap_or_else(|p| p.into_inner()).insert(why.clone()) {
                let exe = std::env::args().next().unwrap_or_default();
                let exe = Path::new(&exe).file_name().unwrap_or_default().to_string_lossy().into_owned();
                // One write of the whole line, so that it does not tear among the harness's.
                let _ = std::io::stderr()
                    .write_all(format!("{exe}: end-to-end tests skipped: {why}\n").as_bytes());
            }
            false
        }
        Decision::Fail(why) => panic!("{why}"),
    }
}

/// Returns from the calling test, saying why, unless the host can run it: root and the lab's
/// binaries (`skip_unless_e2e!()`), or the binaries only (`skip_unless_e2e!(binaries)`).
#[macro_export]
macro_rules! skip_unless_e2e {
    () => {
        if !$crate::e2e::ready($crate::e2e::Needs::Root) {
            return;
        }
    };
    (binaries) => {
        if !$crate::e2e::ready($crate::e2e::Needs::Binaries) {
            return;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_without_root_skips_and_is_told_how_to_run_it() {
        match decide(Needs::Root, false, &[], false) {
            Decision::Skip(why) => {
                assert!(why.contains("needs root") && why.contains("cargo xtask test"), "{why}")
            }
            d => panic!("{d:?}"),
        }
        // A test that needs only the binaries runs without root.
        assert_eq!(decide(Needs::Binaries, false, &[], false), Decision::Run);
        assert_eq!(decide(Needs::Root, true, &[], false), Decision::Run);
    }

    #[test]
    fn a_missing_binary_skips_with_its_account() {
        let missing = vec!["mptcp-probe is not built (looked at /t/release/mptcp-probe)".to_string()];
        for needs in [Needs::Root, Needs::Binaries] {
            match decide(needs, true, &missing, false) {
                Decision::Skip(why) => assert!(why.contains("mptcp-probe is not built"), "{why}"),
                d => panic!("{d:?}"),
            }
        }
    }

    #[test]
    fn under_cargo_xtask_test_a_skip_is_a_failure() {
        match decide(Needs::Root, false, &[], true) {
            Decision::Fail(why) => assert!(why.contains("needs root") && why.contains(REQUIRE_VAR), "{why}"),
            d => panic!("{d:?}"),
        }
        let missing = vec!["mptcp-peer is not built".to_string()];
        assert!(matches!(decide(Needs::Binaries, true, &missing, true), Decision::Fail(_)));
        assert_eq!(decide(Needs::Root, true, &[], true), Decision::Run);
    }
}
