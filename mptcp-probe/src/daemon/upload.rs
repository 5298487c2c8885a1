//! The periodic checks' reports on their way to the collector: each is spooled first
//! ([`crate::export::spool`]), then sent oldest first with its id as the idempotency key and
//! removed once the collector has it. While the collector is down or slow the uploader waits,
//! twice as long after each failure (1 s up to 5 minutes); a report it refuses for good is set
//! aside (see [`export::Answer`] for which answers are which). What is spooled when the daemon stops is sent after it starts again.

use std::{rc::Rc, time::Duration};

use anyhow::Context as _;
use mptcp_probe_model::Report;
use tokio::sync::Notify;

use super::config::UploadConfig;
use crate::export::{
    self,
    metrics::{UploadCounted, UploadResult},
    spool::Spool,
    Answer,
};

const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// With nothing to send, the spool is looked at again this often anyway (a report put there by
/// hand, or by a previous daemon).
const IDLE_RECHECK: Duration = Duration::from_secs(60);

pub struct Uploader {
    spool: Spool,
    url: String,
    key: Option<String>,
    http: reqwest::Client,
    counted: UploadCounted,
    wake: Notify,
}

/// The wait after `failures` failed rounds in a row.
pub fn backoff(failures: u32) -> Duration {
    MIN_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(MAX_BACKOFF)
}

impl Uploader {
    /// None when uploads are off; an error when the spool cannot be opened.
    pub fn new(cfg: &UploadConfig, counted: UploadCounted) -> anyhow::Result<Option<Self>> {
        if !cfg.enabled() {
            return Ok(None);
        }
        let spool = Spool::open(&cfg.spool_dir, cfg.spool_max_bytes).context("upload.spool_dir")?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).no_proxy().build()?;
        let key = (!cfg.key.is_empty()).then(|| cfg.key.clone());
        let u = Self { spool, url: cfg.url.clone(), key, http, counted, wake: Notify::new() };
        u.update_gauges();
        Ok(Some(u))
    }

    fn update_gauges(&self) {
        let entries = self.spool.entries();
        self.counted.spool(entries.len(), entries.iter().map(|e| e.bytes).sum());
    }

    /// Spools a report and wakes the uploader; a report that cannot be spooled is logged (the
    /// metrics still have its verdicts).
    pub fn keep(&self, report: &Report) {
        match self.spool.put(report) {
            Ok(put) if put.evicted > 0 => {
                self.counted.evicted(put.evicted);
                tracing::warn!("upload: the spool is full; {} older report(s) removed unsent", put.evicted);
            }
            Ok(_) => {}
            Err(e) => tracing::error!("upload: report {} not spooled: {e:#}", report.id),
        }
        self.update_gauges();
        self.wake.notify_one();
    }

    /// Sends what the spool holds, for as long as the daemon runs.
    pub async fn run(self: Rc<Self>) {
        let mut failures = 0u32;
        loop {
            if self.drain().await {
                failures = 0;
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(IDLE_RECHECK) => {}
                }
            } else {
                failures = failures.saturating_add(1);
                tokio::time::sleep(backoff(failures)).await;
            }
        }
    }

    /// Sends the spool oldest first; false when the collector did not take one now.
    async fn drain(&self) -> bool {
        for e in self.spool.entries() {
            // A full spool may have evicted it since the list was taken.
            if !e.path.exists() {
                continue;
            }
            let report = match self.spool.read(&e) {
                Ok(r) => r,
                Err(err) => {
                    self.set_aside(&e, &format!("{err:#}"));
                    continue;
                }
            };
            match export::send(&self.http, &self.url, self.key.as_deref(), &report).await {
                Answer::Stored(_) => {
                    if let Err(err) = self.spool.remove(&e).filter_not_found() {
                        tracing::error!("upload: {err:#}");
                    }
                    self.counted.attempt(UploadResult::Ok);
                    tracing::info!("upload: report {} stored by the collector", report.id);
                }
                Answer::Refused(why) => {
                    self.set_aside(&e, &format!("the collector refused report {} ({why})", report.id))
                }
                Answer::Unavailable(why) => {
                    self.counted.attempt(UploadResult::Failed);
                    self.update_gauges();
                    tracing::warn!(
                        "upload: the collector at {} did not take report {} ({why}); {} report(s) wait in the spool",
                        self.url,
                        report.id,
                        self.spool.entries().len()
                    );
                    return false;
                }
            }
            self.update_gauges();
        }
        true
    }

    fn set_aside(&self, e: &export::spool::Entry, why: &str) {
        self.counted.attempt(UploadResult::Rejected);
        match self.spool.reject(e) {
            Ok(to) => tracing::warn!("upload: {why}; kept in {}", to.display()),
            Err(err) => tracing::error!("upload: {why}; and it could not be set aside: {err:#}"),
        }
    }
}

/// A removal that found the file gone already (evicted meanwhile) is no error.
trait FilterNotFound {
    fn filter_not_found(self) -> anyhow::Result<()>;
}

impl FilterNotFound for anyhow::Result<()> {
    fn filter_not_found(self) -> anyhow::Result<()> {
        match self {
            Err(e)
                if e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) =>
            {
                Ok(())
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_from_a_second_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(9), Duration::from_secs(256));
        assert_eq!(backoff(10), MAX_BACKOFF);
        assert_eq!(backoff(1000), MAX_BACKOFF);
    }
}
