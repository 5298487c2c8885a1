//! The TC programs' per-packet cost: `mptcp-probe prog-bench` (BPF_PROG_TEST_RUN on hand-built
//! frames) in the client namespace.

use std::process::Stdio;

use anyhow::{bail, Context as _};
use mptcp_probe_model::bench::ProgBench;
use mptcp_probe_tests::lab::Lab;

use super::{Bins, Config};

/// Seconds prog-bench may take before it is killed.
const TIMEOUT_S: &str = "300";

pub fn run(lab: &Lab, bins: &Bins, cfg: &Config) -> anyhow::Result<ProgBench> {
    let out = lab
        .c
        .cmd("timeout")
        .args(["-k", "5", TIMEOUT_S])
        .arg(&bins.probe)
        .args([
            "prog-bench",
            "--repeat",
            &cfg.prog_repeat.to_string(),
            "--rounds",
            &cfg.prog_rounds.to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .context("running mptcp-probe prog-bench")?;
    if !out.status.success() {
        bail!("mptcp-probe prog-bench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "mptcp-probe prog-bench printed what is not a ProgBench (is {} older than this xtask?): {}",
            bins.probe.display(),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
