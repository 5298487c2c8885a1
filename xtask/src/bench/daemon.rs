//! `mptcp-probe daemon` as a host runs it: its CPU and memory at idle and while the host makes
//! short MPTCP connections, the connection rate with it against without (same repetition),
//! whether it counted every connection, and how long a scrape takes once it has seen them all.

use std::time::Duration;

use anyhow::{bail, Context as _};
use mptcp_probe_tests::{
    daemon::{sample, Daemon},
    lab::{ifname, Lab},
};
use serde::Serialize;

use super::{
    host, progress,
    stats::{ratio, Spread},
    traffic::{self, ChurnShape},
    Bins, Config,
};

const LISTEN: &str = "127.0.0.1:9725";
/// How long the idle daemon is watched.
const IDLE: Duration = Duration::from_secs(2);
/// Time for the last flows to end and be summarised before the counts are read.
const SETTLE: Duration = Duration::from_millis(1500);
/// Scrapes timed after the last run.
const SCRAPES: usize = 20;
/// At most this many repetitions (each leaves its client ports in TIME_WAIT; see
/// [`super::CLIENT_PORTS`]).
const MAX_REPETITIONS: u32 = 5;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DaemonFigures {
    pub config: &'static str,
    /// CPU of the daemon process while nothing happens, ms per second.
    pub idle_cpu_ms_per_s: f64,
    pub idle_rss_kib: u64,
    /// Short connections per second without the daemon, and with it (same repetition).
    pub off_per_second: Spread,
    pub per_second: Spread,
    pub over_off: Spread,
    /// The daemon process's CPU per connection, until its last summary.
    pub process_cpu_ms_per_connection: Spread,
    pub peak_rss_kib: u64,
    /// Connections the daemon counted over those made, the worst repetition.
    pub counted_share_min: f64,
    /// After the runs of one daemon: the connections it had counted, and its scrapes.
    pub scrape: Scrape,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Scrape {
    pub connections_seen: u64,
    pub ms: Spread,
    pub bytes: u64,
}

fn config() -> String {
    format!("interfaces = [\"{}\"]\n[metrics]\nlisten = \"{LISTEN}\"\n", ifname::C1)
}

/// All the connections the daemon counted, whatever their outcome.
fn counted(text: &str) -> f64 {
    ["mptcp", "fallback", "plain"]
        .iter()
        .filter_map(|o| {
            sample(text, &format!("mptcp_probe_connections_total{{outcome=\"{o}\",namespace=\"host\"}}"))
        })
        .sum()
}

/// One timed scrape: seconds and bytes, as curl measured them.
fn timed_scrape(d: &Daemon) -> anyhow::Result<(f64, u64)> {
    let out = d.get("/metrics", &["-o", "/dev/null", "-w", "%{time_total} %{size_download}"]);
    let (t, b) = out.trim().split_once(' ').with_context(|| format!("curl said {out:?}"))?;
    Ok((t.parse()?, b.parse()?))
}

/// Connections the daemon has seen when its scrapes are timed (the full bench).
const SCRAPE_AFTER_CONNECTIONS: u32 = 10_000;

pub fn run(lab: &Lab, bins: &Bins, cfg: &Config) -> anyhow::Result<DaemonFigures> {
    let shape = ChurnShape { count: cfg.short_connections, concurrent: None, hold_ms: None };
    let mut f = DaemonFigures { config: "interfaces = [c-m1], defaults otherwise", ..Default::default() };
    let (mut off, mut on, mut over, mut cpu, mut shares) = (vec![], vec![], vec![], vec![], vec![]);
    let reps = cfg.repeat.min(MAX_REPETITIONS);
    for rep in 0..reps {
        // Without the daemon first in even repetitions, second in odd ones.
        let mut order = [false, true];
        if rep % 2 == 1 {
            order.reverse();
        }
        let (mut rep_off, mut rep_on) = (f64::NAN, f64::NAN);
        for with in order {
            if !with {
                rep_off = churn(lab, bins, &shape)?.per_second;
                continue;
            }
            let d = Daemon::start(&lab.c, LISTEN, &config());
            if rep == 0 {
                let t0 = host::process_ticks(d.pid());
                std::thread::sleep(IDLE);
                f.idle_cpu_ms_per_s =
                    host::ticks_to_s(t0, host::process_ticks(d.pid())) * 1e3 / IDLE.as_secs_f64();
                f.idle_rss_kib = host::status_kib(d.pid(), "VmRSS");
            }
            let t0 = host::process_ticks(d.pid());
            let c = churn(lab, bins, &shape)?;
            let made = c.connections.unwrap_or(u64::from(shape.count)) as f64;
            let seen = settled(&d, made);
            cpu.push(host::ticks_to_s(t0, host::process_ticks(d.pid())) * 1e3 / made);
            shares.push(ratio(seen, made));
            f.peak_rss_kib = f.peak_rss_kib.max(host::status_kib(d.pid(), "VmHWM"));
            stop(d)?;
            rep_on = c.per_second;
        }
        off.push(rep_off);
        on.push(rep_on);
        over.push(ratio(rep_on, rep_off));
        progress(format!(
            "daemon {}/{reps}: {rep_on:.0} connections/s with it, {rep_off:.0} without; it counted {:.3} of them",
            rep + 1,
            shares.last().copied().unwrap_or(f64::NAN)
        ));
    }
    f.off_per_second = Spread::of(&off);
    f.per_second = Spread::of(&on);
    f.over_off = Spread::of(&over);
    f.process_cpu_ms_per_connection = Spread::of(&cpu);
    f.counted_share_min = shares.iter().copied().fold(f64::INFINITY, f64::min);

    let count = if cfg.quick { cfg.short_connections } else { SCRAPE_AFTER_CONNECTIONS };
    progress(format!("daemon: scrape time after {count} connections"));
    let d = Daemon::start(&lab.c, LISTEN, &config());
    let c = churn(lab, bins, &ChurnShape { count, concurrent: None, hold_ms: None })?;
    f.scrape.connections_seen = settled(&d, c.connections.unwrap_or(u64::from(count)) as f64) as u64;
    let mut ms = Vec::with_capacity(SCRAPES);
    for _ in 0..SCRAPES {
        let (t, bytes) = timed_scrape(&d)?;
        ms.push(t * 1e3);
        f.scrape.bytes = bytes;
    }
    f.scrape.ms = Spread::of(&ms);
    f.peak_rss_kib = f.peak_rss_kib.max(host::status_kib(d.pid(), "VmHWM"));
    stop(d)?;
    Ok(f)
}

/// The connections the daemon counted, once it has counted `made` or the last flows' summaries
/// are overdue.
fn settled(d: &Daemon, made: f64) -> f64 {
    std::thread::sleep(SETTLE);
    counted(&d.scrape_until(Duration::from_secs(10), |t| counted(t) >= made))
}

fn churn(lab: &Lab, bins: &Bins, shape: &ChurnShape) -> anyhow::Result<traffic::Churn> {
    let c = traffic::churn(lab, bins, shape)?;
    if c.failed > 0 {
        bail!("{} short connections failed: {}", c.failed, c.first_error.unwrap_or_default());
    }
    Ok(c)
}

fn stop(d: Daemon) -> anyhow::Result<()> {
    let s = d.stop();
    if s.exit_code != Some(0) {
        bail!("the daemon exited with {:?}:\n{}", s.exit_code, s.log);
    }
    Ok(())
}
