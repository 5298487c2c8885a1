//! The daemon's periodic checks: one task a target, all of them (and the uploader) on one thread
//! of their own, apart from the daemon's pipeline (a check loads its own observer and may block
//! a moment, e.g. resolving a server's name; the pipeline must not wait for it, though the other
//! targets do). A target's checks run one after the other, so never two at once against it;
//! after a check that could not measure, the next waits twice as long, up to 16 times the
//! interval.

use std::{rc::Rc, thread::JoinHandle, time::Duration};

use tokio::sync::oneshot;

use super::{config::CheckConfig, upload::Uploader};
use crate::{
    active::{self, CheckOptions},
    export::metrics::CheckCounted,
};

/// The failures in a row after which the wait stops growing (2^4 = 16 intervals).
const MAX_BACKOFF_DOUBLINGS: u32 = 4;

/// The wait before the next check: the interval, doubled for each failure in a row (up to
/// [`MAX_BACKOFF_DOUBLINGS`] times), shifted by `offset_s` (the jitter drawn for this wait).
pub fn next_wait(interval_s: u64, failures: u32, offset_s: i64) -> Duration {
    let base = interval_s.saturating_mul(1 << failures.min(MAX_BACKOFF_DOUBLINGS));
    Duration::from_secs(base.saturating_add_signed(offset_s))
}

fn jitter(jitter_s: u64) -> i64 {
    let j = i64::try_from(jitter_s).unwrap_or(i64::MAX);
    if j == 0 {
        0
    } else {
        rand::random_range(-j..=j)
    }
}

fn options(c: &CheckConfig) -> CheckOptions {
    CheckOptions {
        server: c.server.clone(),
        tests: c.tests.clone(),
        pcap: None,
        no_observer: !c.observer,
        control_port: c.control_port,
        timeout: Duration::from_secs(c.timeout_seconds),
        bulk_bytes: c.bulk_bytes,
        budget: Duration::from_secs(c.budget_seconds),
        locate: None,
        network_kind: c.network_kind,
        note: None,
    }
}

async fn run_target(c: CheckConfig, counted: CheckCounted, uploader: Option<Rc<Uploader>>) {
    let target = c.target().to_string();
    let mut failures = 0u32;
    // The first check of each target waits up to the jitter, so that daemons started together
    // do not check together.
    let mut wait = Duration::from_secs(jitter(c.jitter_seconds).unsigned_abs());
    loop {
        tokio::time::sleep(wait).await;
        match active::run(options(&c)).await {
            Ok(report) => {
                failures = 0;
                counted.done(&target, &report);
                let verdicts: Vec<&str> = report.summary.verdicts.iter().map(|v| v.as_str()).collect();
                tracing::info!(
                    "check {target}: {} (MPTCP usable: {}); report {}",
                    verdicts.join(", "),
                    report.summary.mptcp_usable,
                    report.id
                );
                if let Some(u) = &uploader {
                    u.keep(&report);
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                counted.failed(&target);
                tracing::warn!("check {target}: could not measure ({failures} in a row): {e:#}");
            }
        }
        wait = next_wait(c.interval_seconds, failures, jitter(c.jitter_seconds));
        tracing::debug!("check {target}: next in {} s", wait.as_secs());
    }
}

/// The running checks; [`Checks::stop`] ends them (a check under way is abandoned: its
/// programs detach as its observer drops).
pub struct Checks {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checks {
    /// Starts the checks, and the uploader of their reports when there is one (also without
    /// checks: it sends what an earlier daemon spooled).
    pub fn start(
        targets: Vec<CheckConfig>,
        counted: CheckCounted,
        uploader: Option<Uploader>,
    ) -> anyhow::Result<Self> {
        if targets.is_empty() && uploader.is_none() {
            return Ok(Self { stop: None, thread: None });
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("checks".into()).spawn(move || {
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                let uploader = uploader.map(Rc::new);
                if let Some(u) = &uploader {
                    tokio::task::spawn_local(u.clone().run());
                }
                for t in targets {
                    tokio::task::spawn_local(run_target(t, counted.clone(), uploader.clone()));
                }
                let _ = rx.await;
            });
        })?;
        Ok(Self { stop: Some(tx), thread: Some(thread) })
    }

    pub fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_target_is_tried_less_often_up_to_sixteen_intervals() {
        assert_eq!(next_wait(60, 0, 0), Duration::from_secs(60));
        assert_eq!(next_wait(60, 1, 0), Duration::from_secs(120));
        assert_eq!(next_wait(60, 3, 0), Duration::from_secs(480));
        assert_eq!(next_wait(60, 4, 0), Duration::from_secs(960));
        assert_eq!(next_wait(60, 40, 0), Duration::from_secs(960));
        assert_eq!(next_wait(60, 0, -30), Duration::from_secs(30));
        assert_eq!(next_wait(60, 0, 30), Duration::from_secs(90));
        assert_eq!(next_wait(u64::MAX, 4, 0), Duration::from_secs(u64::MAX));
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        assert_eq!(jitter(0), 0);
        for _ in 0..1000 {
            assert!(jitter(5).abs() <= 5);
        }
        let drawn: std::collections::BTreeSet<i64> = (0..1000).map(|_| jitter(2)).collect();
        assert_eq!(drawn.len(), 5, "{drawn:?}");
    }
}
