//! Project tasks: `cargo xtask setup | test | measure | lab | bench | package | image`.

mod bench;
mod image;
mod image_test;
mod lab;
mod measure;
mod package;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use mptcp_probe_tests::{
    e2e,
    workspace::{Bin, LAB_BINS},
};

#[derive(Parser)]
#[command(name = "xtask", about = "mptcp-probe project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (Debian packages, rust-src, bpf-linker), idempotently.
    Setup {
        /// Also the tools only the tests need (cargo-fuzz).
        #[arg(long)]
        with_test_tools: bool,
    },
    /// Set up, build, and run every test: unit, property, fuzz (briefly) and the root end-to-end
    /// scenarios in network namespaces.
    Test {
        /// Seconds the fuzz target runs.
        #[arg(long, default_value_t = 20)]
        fuzz_seconds: u32,
        /// Leave out the VM image, built and booted against the lab after every other test
        /// (`cargo xtask image --test`, about 10 minutes).
        #[arg(long)]
        no_vm: bool,
    },
    /// Build the Debian package (cargo-deb) into target/deb and check it with lintian; with
    /// --test also install it into a throwaway Debian root, verify its units and purge it.
    Package {
        #[arg(long)]
        test: bool,
    },
    /// Build the VM image (Debian stable, its kernel, the package; `check` at boot against the
    /// server its mptcp-probe.conf names) into target/image as raw, qcow2 and VMDK; with --test
    /// also boot it with QEMU against the lab: clean path, SYN-option stripping, user-mode NAT.
    Image {
        #[arg(long)]
        test: bool,
    },
    /// Set up, build, and run `serve` + `check` through every middlebox scenario of the namespace
    /// lab; prints expected against observed verdicts and fails if any scenario disagrees.
    Measure {
        /// Only this scenario (repeatable); default: all of them.
        #[arg(long = "scenario", value_name = "NAME")]
        scenarios: Vec<String>,
        /// Print the matrix as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Leave the lab up (middlebox and server running) to explore; needs one --scenario.
        #[arg(long)]
        keep: bool,
        /// Runs of `check` per scenario.
        #[arg(long, default_value_t = 1)]
        repeat: u32,
        /// Bytes each way of the bulk test.
        #[arg(long, default_value_t = 300_000)]
        bulk_bytes: u64,
    },
    /// The namespace lab by hand: `up [--scenario NAME]`, `exec c|m|s -- CMD`, `down`, `list`.
    Lab {
        #[command(subcommand)]
        cmd: LabCmd,
    },
    /// Set up, build, and measure what observing costs in a namespace lab (a few minutes):
    /// throughput and CPU against tcpdump, per-packet cost, short connections, flow-table
    /// overflow, bytes kept, ring-buffer drops, the daemon, the collector.
    Bench {
        /// Tiny sizes (well under a minute), still every figure: the smoke mode.
        #[arg(long)]
        quick: bool,
        /// Print one JSON object with every figure instead of the tables.
        #[arg(long)]
        json: bool,
        /// Repetitions of each bulk configuration (default 5; 3 with --quick).
        #[arg(long)]
        repeat: Option<u32>,
        /// Measure the collector alone (uploads per second, latency, the aggregate page).
        #[arg(long)]
        collector: bool,
    },
}

#[derive(Subcommand)]
enum LabCmd {
    /// Create a lab (client, router, server) with a scenario's middlebox (default: clean) and
    /// `mptcp-probe serve` running; prints its run name.
    Up {
        #[arg(long)]
        scenario: Option<String>,
    },
    /// Remove a lab: its processes and namespaces.
    Down {
        #[arg(long)]
        run: Option<String>,
        /// Every lab on the host (also leftovers of killed runs).
        #[arg(long)]
        all: bool,
    },
    /// Run a command in a lab host: c (client), m (router/middlebox), s (server).
    Exec {
        role: String,
        #[arg(long)]
        run: Option<String>,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// The labs that are up.
    List,
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Runs a command from the workspace root, echoing it, failing with its exit status.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: $ {}", describe(cmd));
    let status =
        cmd.current_dir_if_unset().status().with_context(|| format!("starting {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", describe(cmd));
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().to_string();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

trait CurrentDir {
    fn current_dir_if_unset(&mut self) -> &mut Self;
}

impl CurrentDir for Command {
    fn current_dir_if_unset(&mut self) -> &mut Self {
        if self.get_current_dir().is_none() {
            self.current_dir(workspace_root());
        }
        self
    }
}

pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Builds the probe (with its kernel programs) and the test peer in release mode.
pub fn build_release() -> anyhow::Result<()> {
    run(cargo().args(["build", "--release", "-p", "mptcp-probe", "-p", "mptcp-probe-tests", "--bins"]))
}

/// A lab binary to run: its variable's path where it is set, else the release build in the
/// target directory Cargo builds into (the one definition the lab helpers use too, so what
/// [`build_release`] built is what runs).
pub fn bin_path(bin: Bin) -> PathBuf {
    std::env::var_os(bin.env).map(PathBuf::from).unwrap_or_else(|| bin.release())
}

/// Every lab binary to run, with its variable.
pub fn lab_bin_paths() -> Vec<(Bin, PathBuf)> {
    LAB_BINS.iter().map(|b| (*b, bin_path(*b))).collect()
}

fn require_root(what: &str) -> anyhow::Result<()> {
    if !mptcp_probe_tests::is_root() {
        bail!("{what} needs root (it creates network namespaces and loads eBPF programs): run it as root");
    }
    Ok(())
}

/// A check that must pass before the long tests run, with what to do when it does not.
#[derive(Debug, PartialEq, Eq)]
struct Gate {
    what: &'static str,
    args: &'static [&'static str],
    fix: &'static str,
}

/// rustfmt's check: needs nothing but the toolchain.
const FORMATTING: Gate = Gate {
    what: "formatting",
    args: &["fmt", "--all", "--", "--check"],
    fix: "the diff above is what rustfmt would change: run `cargo fmt --all`",
};

/// clippy over the user-space crates, warnings as errors (it builds the kernel programs, so it
/// runs after the set-up).
const LINTS: Gate = Gate {
    what: "lints",
    args: &[
        "clippy",
        "--workspace",
        "--exclude",
        "mptcp-probe-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ],
    fix: "fix what clippy reports above (warnings are errors here)",
};

impl Gate {
    fn check(&self) -> anyhow::Result<()> {
        let line = format!("cargo {}", self.args.join(" "));
        eprintln!("xtask: {} gate: $ {line}", self.what);
        let status = cargo()
            .args(self.args)
            .current_dir(workspace_root())
            .status()
            .with_context(|| format!("starting {line}"))?;
        if !status.success() {
            bail!("{} gate failed: `{line}` exited with {status}; {}", self.what, self.fix);
        }
        Ok(())
    }
}

/// One step of `cargo xtask test`.
#[derive(Debug, PartialEq, Eq)]
enum TestStep {
    Gate(&'static Gate),
    Setup,
    Build,
    Fuzz(u32),
    Tests,
    /// The Debian package built, installed into a throwaway root, purged.
    Package,
    /// The VM image built and booted against the lab (left out with `--no-vm`).
    Image,
}

/// The steps in order: the gates that fail in seconds before the build and the long tests; the
/// fuzz target before the tests, so that the test runner's summary closes the output.
fn test_plan(fuzz_seconds: u32, vm: bool) -> Vec<TestStep> {
    let mut plan =
        vec![TestStep::Gate(&FORMATTING), TestStep::Setup, TestStep::Gate(&LINTS), TestStep::Build];
    if fuzz_seconds > 0 {
        plan.push(TestStep::Fuzz(fuzz_seconds));
    }
    plan.push(TestStep::Tests);
    plan.push(TestStep::Package);
    if vm {
        plan.push(TestStep::Image);
    }
    plan
}

fn test(fuzz_seconds: u32, vm: bool) -> anyhow::Result<()> {
    require_root("cargo xtask test")?;
    for step in test_plan(fuzz_seconds, vm) {
        match step {
            TestStep::Gate(g) => g.check()?,
            TestStep::Setup => setup::run(&setup::SetupOpts { with_test_tools: true })?,
            TestStep::Build => build_release()?,
            TestStep::Fuzz(seconds) => {
                let max_time = format!("-max_total_time={seconds}");
                run(Command::new("cargo")
                    .args(["+nightly", "fuzz", "run", "parse_options", "--", &max_time])
                    .current_dir(workspace_root().join("fuzz")))?
            }
            TestStep::Tests => run_tests()?,
            TestStep::Package => package::run_package(&package::PackageOpts { test: true })?,
            TestStep::Image => image::run_image(&image::ImageOpts { test: true })?,
        }
    }
    Ok(())
}

/// Every test of the workspace, on the release binaries just built; an end-to-end test that
/// cannot run here fails rather than skips.
fn tests_command() -> Command {
    let mut cmd = cargo();
    cmd.args(["test", "--release", "--workspace", "--exclude", "mptcp-probe-ebpf"])
        .envs(lab_bin_paths().into_iter().map(|(b, p)| (b.env, p)))
        .env(e2e::REQUIRE_VAR, "1")
        .current_dir(workspace_root());
    cmd
}

fn run_tests() -> anyhow::Result<()> {
    let mut cmd = tests_command();
    cmd.stdout(std::process::Stdio::piped());
    eprintln!("xtask: $ {}", describe(&cmd));
    let mut child = cmd.spawn().context("starting cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    if let Some(out) = child.stdout.take() {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            if let Some((p, f)) = parse_test_result(&line) {
                passed += p;
                failed += f;
            }
        }
    }
    let status = child.wait()?;
    // One closing line for the whole suite: the last binary's summary may be an empty doc-test run.
    println!("tests: {passed} passed, {failed} failed");
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    Ok(())
}

/// Counts of a libtest summary line: `test result: ok. 12 passed; 0 failed; ...`.
fn parse_test_result(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("test result: ")?;
    let num = |word: &str| {
        rest.split(';')
            .find_map(|part| part.trim().trim_start_matches(|c: char| !c.is_ascii_digit()).strip_suffix(word))
            .and_then(|n| n.trim().parse().ok())
    };
    Some((num(" passed")?, num(" failed")?))
}

fn main() -> ExitCode {
    let res = match Cli::parse().cmd {
        Cmd::Setup { with_test_tools } => setup::run(&setup::SetupOpts { with_test_tools }),
        Cmd::Package { test } => package::run_package(&package::PackageOpts { test }),
        Cmd::Image { test } => image::run_image(&image::ImageOpts { test }),
        Cmd::Test { fuzz_seconds, no_vm } => test(fuzz_seconds, !no_vm),
        Cmd::Measure { scenarios, json, keep, repeat, bulk_bytes } => {
            measure::run(measure::MeasureOpts { scenarios, json, keep, repeat, bulk_bytes })
        }
        Cmd::Lab { cmd } => lab::lab(match cmd {
            LabCmd::Up { scenario } => lab::LabCmd::Up { scenario },
            LabCmd::Down { run, all } => lab::LabCmd::Down { run, all },
            LabCmd::Exec { role, run, cmd } => lab::LabCmd::Exec { role, run, cmd },
            LabCmd::List => lab::LabCmd::List,
        }),
        Cmd::Bench { quick, json, repeat, collector } => bench::run(quick, json, repeat, collector),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binaries_run_are_the_ones_built_where_cargo_builds() {
        let release = mptcp_probe_tests::target_dir().join("release");
        for (bin, path) in lab_bin_paths() {
            if std::env::var_os(bin.env).is_none() {
                assert_eq!(path, release.join(bin.name));
            }
        }
    }

    #[test]
    fn formatting_and_lints_gate_the_build_and_the_tests() {
        let plan = test_plan(20, false);
        let at = |s: &TestStep| plan.iter().position(|p| p == s).unwrap();
        assert_eq!(plan[0], TestStep::Gate(&FORMATTING), "{plan:?}");
        assert!(
            at(&TestStep::Setup) < at(&TestStep::Gate(&LINTS)),
            "clippy builds the kernel programs: {plan:?}"
        );
        for long in [TestStep::Build, TestStep::Fuzz(20), TestStep::Tests, TestStep::Package] {
            assert!(at(&TestStep::Gate(&LINTS)) < at(&long), "{plan:?}");
        }
        // The package is built and installed once every test has passed.
        assert_eq!(plan.last(), Some(&TestStep::Package));
        assert_eq!(plan[plan.len() - 2], TestStep::Tests);
        assert!(!test_plan(0, false).iter().any(|s| matches!(s, TestStep::Fuzz(_))));
        assert_eq!(test_plan(20, true).last(), Some(&TestStep::Image), "the image last unless --no-vm");
        assert_eq!(FORMATTING.args.join(" "), "fmt --all -- --check");
        assert_eq!(
            LINTS.args.join(" "),
            "clippy --workspace --exclude mptcp-probe-ebpf --all-targets -- -D warnings"
        );
    }

    #[test]
    fn the_tests_run_on_the_built_binaries_and_may_not_skip() {
        let cmd = tests_command();
        let envs: Vec<(String, String)> = cmd
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
            .collect();
        assert!(envs.contains(&(e2e::REQUIRE_VAR.to_string(), "1".to_string())), "{envs:?}");
        for (bin, path) in lab_bin_paths() {
            assert!(envs.contains(&(bin.env.to_string(), path.display().to_string())), "{envs:?}");
        }
    }

    #[test]
    fn libtest_summary_lines_are_counted() {
        let l =
            "test result: ok. 12 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out; finished in 8.40s";
        assert_eq!(super::parse_test_result(l), Some((12, 3)));
        assert_eq!(
            super::parse_test_result("test result: FAILED. 0 passed; 1 failed; 0 ignored"),
            Some((0, 1))
        );
        assert_eq!(super::parse_test_result("running 3 tests"), None);
    }
}
