//! The traffic: `mptcp-peer` sinks in the server namespace, bulk transfers (`blast`) and short
//! connections (`churn`) from the client, each bounded by `timeout`, with the CPU they took.
//!
//! The peer's JSON is read here and nowhere else, into [`Transfer`] and [`Churn`].

use std::{process::Stdio, time::Duration};

use anyhow::{anyhow, bail, Context as _};
use mptcp_probe_tests::lab::{addr, Child, Lab};
use serde_json::Value;

use super::{
    host::{self, CpuStat},
    observer::pinned_cmd,
    stats::ratio,
    Bins, GB, PINNED_SINK_PORT, PIN_CPU, SHORT_CLIENT_CPU, SHORT_SINK_PORT, SINK_PORT,
};

pub fn sink_addr(port: u16) -> String {
    format!("{}:{port}", addr::SERVER)
}

/// Starts a sink in the server namespace on `port`, on `cpu` only when given.
pub fn start_sink(lab: &Lab, bins: &Bins, port: u16, cpu: Option<&str>) -> anyhow::Result<Child> {
    let mut cmd = pinned_cmd(&lab.s, bins.peer.as_os_str(), cpu);
    cmd.args(["sink", "--listen", &format!("0.0.0.0:{port}"), "--timeout", "1800"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let child = Child::spawn(&mut cmd);
    for _ in 0..200 {
        let out = lab.s.cmd("ss").args(["-Hltn", &format!("sport = :{port}")]).output()?;
        if !out.stdout.is_empty() {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    bail!("the benchmark sink did not come up on port {port}")
}

/// Runs a peer command in the client namespace, bounded by `timeout` (on `cpu` only when
/// given), and parses its JSON.
fn peer_json(
    lab: &Lab,
    bins: &Bins,
    args: &[String],
    timeout: f64,
    cpu: Option<&str>,
) -> anyhow::Result<Value> {
    let mut cmd = lab.c.cmd("timeout");
    cmd.args(["-k", "5", &format!("{timeout:.0}")]);
    if let Some(cpu) = cpu {
        cmd.args(["taskset", "-c", cpu]);
    }
    let out = cmd.arg(&bins.peer).args(args).stdin(Stdio::null()).output().context("running mptcp-peer")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.trim()).map_err(|e| {
        anyhow!(
            "mptcp-peer {} printed {text:?} ({e}); stderr: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if !out.status.success() {
        bail!(
            "mptcp-peer {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(v)
}

fn f64_at(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

/// One bulk transfer and the CPU it took.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Transfer {
    pub bytes: f64,
    pub seconds: f64,
    pub mbytes_per_s: f64,
    pub is_mptcp: bool,
    /// Busy CPU seconds over the transfer (all CPUs, or the pinned one), and the softirq part.
    pub cpu_s: f64,
    pub softirq_s: f64,
    /// CPU seconds of the observer process over the transfer.
    pub observer_cpu_s: f64,
    /// Pinned runs: busy seconds of the other CPUs (work that escaped the pinning, and the rest
    /// of the machine).
    pub other_cpus_s: f64,
}

impl Transfer {
    pub fn gb(&self) -> f64 {
        self.bytes / GB
    }

    pub fn cpu_s_per_gb(&self) -> f64 {
        ratio(self.cpu_s, self.gb())
    }

    pub fn observer_cpu_s_per_gb(&self) -> f64 {
        ratio(self.observer_cpu_s, self.gb())
    }
}

/// A bulk transfer of `seconds`; `pinned`: to the pinned sink, from [`PIN_CPU`], counting that
/// CPU's time only; `observer`: the pid whose CPU time to count as the observer's.
pub fn blast(
    lab: &Lab,
    bins: &Bins,
    seconds: f64,
    pinned: bool,
    observer: Option<u32>,
) -> anyhow::Result<Transfer> {
    let port = if pinned { PINNED_SINK_PORT } else { SINK_PORT };
    let args: Vec<String> = ["blast", "--connect", &sink_addr(port), "--seconds", &seconds.to_string()]
        .into_iter()
        .map(String::from)
        .collect();
    let which = if pinned { format!("cpu{PIN_CPU}") } else { "cpu".to_string() };
    let obs0 = observer.map(host::process_ticks).unwrap_or(0);
    let (all0, c0) = (CpuStat::read("cpu"), CpuStat::read(&which));
    let v = peer_json(lab, bins, &args, seconds + 60.0, pinned.then_some(PIN_CPU))?;
    let (all1, c1) = (CpuStat::read("cpu"), CpuStat::read(&which));
    let obs1 = observer.map(host::process_ticks).unwrap_or(0);
    let bytes = f64_at(&v, "received_bytes");
    let secs = f64_at(&v, "seconds");
    let busy = c1.busy.saturating_sub(c0.busy);
    Ok(Transfer {
        bytes,
        seconds: secs,
        mbytes_per_s: ratio(bytes / 1e6, secs),
        is_mptcp: v["is_mptcp"] == 1,
        cpu_s: host::ticks_to_s(0, busy),
        softirq_s: host::ticks_to_s(c0.softirq, c1.softirq),
        observer_cpu_s: host::ticks_to_s(obs0, obs1),
        other_cpus_s: if pinned { host::ticks_to_s(busy, all1.busy.saturating_sub(all0.busy)) } else { 0.0 },
    })
}

/// What `mptcp-peer churn` reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Churn {
    /// Connections that completed; None when the peer did not say.
    pub connections: Option<u64>,
    pub failed: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    pub per_second: f64,
}

/// How `churn` opens its connections: `count` in all, `concurrent` open at once, each held
/// `hold_ms` before it is closed.
pub struct ChurnShape {
    pub count: u32,
    pub concurrent: Option<u32>,
    pub hold_ms: Option<u32>,
}

/// Seconds `churn` may run, and the watchdog around it.
const CHURN_SECONDS: &str = "60";
const CHURN_TIMEOUT_S: f64 = 90.0;

/// Short connections (1 byte each way, then close) from [`SHORT_CLIENT_CPU`] to the sink on the
/// other CPU.
pub fn churn(lab: &Lab, bins: &Bins, shape: &ChurnShape) -> anyhow::Result<Churn> {
    let mut args: Vec<String> = vec![
        "churn".into(),
        "--connect".into(),
        sink_addr(SHORT_SINK_PORT),
        "--count".into(),
        shape.count.to_string(),
    ];
    if let Some(n) = shape.concurrent {
        args.extend(["--concurrent".into(), n.to_string()]);
    }
    if let Some(ms) = shape.hold_ms {
        args.extend(["--hold-ms".into(), ms.to_string()]);
    }
    args.extend(["--seconds".into(), CHURN_SECONDS.into()]);
    let v = peer_json(lab, bins, &args, CHURN_TIMEOUT_S, Some(SHORT_CLIENT_CPU))?;
    Ok(Churn {
        connections: v["connections"].as_u64(),
        failed: v["failed"].as_u64().unwrap_or(0),
        first_error: v["first_error"].as_str().map(String::from),
        seconds: f64_at(&v, "seconds"),
        per_second: f64_at(&v, "per_second"),
    })
}
