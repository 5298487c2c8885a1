//! Project tasks: `cargo xtask setup | test | measure | lab | bench`.

mod bench;
mod lab;
mod measure;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

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
    /// overflow, bytes kept, ring-buffer drops.
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

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Builds the probe (with its kernel programs) and the test peer in release mode.
pub fn build_release() -> anyhow::Result<()> {
    run(cargo().args(["build", "--release", "-p", "mptcp-probe", "-p", "mptcp-probe-tests", "--bins"]))
}

pub fn release_bin(name: &str) -> PathBuf {
    workspace_root().join("target").join("release").join(name)
}

fn require_root(what: &str) -> anyhow::Result<()> {
    if !mptcp_probe_tests::is_root() {
        bail!("{what} needs root (it creates network namespaces and loads eBPF programs): run it as root");
    }
    Ok(())
}

fn test(fuzz_seconds: u32) -> anyhow::Result<()> {
    require_root("cargo xtask test")?;
    setup::run(&setup::SetupOpts { with_test_tools: true })?;
    build_release()?;
    // The fuzz target first, so that the test runner's summary closes the output.
    if fuzz_seconds > 0 {
        let max_time = format!("-max_total_time={fuzz_seconds}");
        run(Command::new("cargo")
            .args(["+nightly", "fuzz", "run", "parse_options", "--", &max_time])
            .current_dir(workspace_root().join("fuzz")))?;
    }
    let mut cmd = cargo();
    cmd.args(["test", "--release", "--workspace", "--exclude", "mptcp-probe-ebpf"])
        .env("MPTCP_PROBE_BIN", release_bin("mptcp-probe"))
        .env("MPTCP_PEER_BIN", release_bin("mptcp-peer"))
        .env("MPTCP_MIDDLEBOX_BIN", release_bin("mptcp-middlebox"))
        .current_dir(workspace_root())
        .stdout(std::process::Stdio::piped());
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
        Cmd::Test { fuzz_seconds } => test(fuzz_seconds),
        Cmd::Measure { scenarios, json, keep, repeat, bulk_bytes } => {
            measure::run(measure::MeasureOpts { scenarios, json, keep, repeat, bulk_bytes })
        }
        Cmd::Lab { cmd } => lab::lab(match cmd {
            LabCmd::Up { scenario } => lab::LabCmd::Up { scenario },
            LabCmd::Down { run, all } => lab::LabCmd::Down { run, all },
            LabCmd::Exec { role, run, cmd } => lab::LabCmd::Exec { role, run, cmd },
            LabCmd::List => lab::LabCmd::List,
        }),
        Cmd::Bench { quick, json, repeat } => bench::run(quick, json, repeat),
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
