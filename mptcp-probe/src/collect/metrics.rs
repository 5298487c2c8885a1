//! The collector's own metrics, at `/metrics` (same prefix and exposition as the daemon's):
//! uploads and fetches by result, and the reports stored.

use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::export::{exposition, metrics::PREFIX};

pub mod name {
    pub const UPLOADS: &str = "collector_uploads";
    pub const FETCHES: &str = "collector_fetches";
    pub const REPORTS: &str = "collector_reports";
    pub const TRACES: &str = "collector_trace_uploads";
    pub const REMOVED: &str = "collector_reports_removed";
}

/// How an upload ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadResult {
    Stored,
    /// The same report again: answered as before, not stored twice.
    Again,
    /// Another report under a taken id.
    Conflict,
    /// Not a valid report, too large, or without a good upload key.
    Refused,
    /// The source uploaded too often (429).
    Limited,
    /// The database did not take it.
    Failed,
}

impl UploadResult {
    pub const ALL: [UploadResult; 6] = [
        UploadResult::Stored,
        UploadResult::Again,
        UploadResult::Conflict,
        UploadResult::Refused,
        UploadResult::Limited,
        UploadResult::Failed,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            UploadResult::Stored => "stored",
            UploadResult::Again => "again",
            UploadResult::Conflict => "conflict",
            UploadResult::Refused => "refused",
            UploadResult::Limited => "limited",
            UploadResult::Failed => "failed",
        }
    }
}

/// A bounded label for an HTTP status.
fn status_result(status: u16) -> &'static str {
    match status {
        200 => "ok",
        201 => "stored",
        400 => "refused",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        413 => "too_large",
        429 => "limited",
        _ => "failed",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

pub struct CollectorMetrics {
    registry: Registry,
    uploads: Family<ResultLabels, Counter>,
    fetches: Family<ResultLabels, Counter>,
    traces: Family<ResultLabels, Counter>,
    reports: Gauge,
    removed: Counter,
}

impl CollectorMetrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix(PREFIX);
        let uploads = Family::<ResultLabels, Counter>::default();
        for r in UploadResult::ALL {
            let _ = uploads.get_or_create(&ResultLabels { result: r.as_str() });
        }
        let fetches = Family::<ResultLabels, Counter>::default();
        let traces = Family::<ResultLabels, Counter>::default();
        let reports = Gauge::default();
        let removed = Counter::default();
        registry.register(
            name::UPLOADS,
            "Uploads by result: stored, again (stored before), conflict, refused, limited (429), failed",
            uploads.clone(),
        );
        registry.register(name::FETCHES, "Reports asked for (API and page), by HTTP status", fetches.clone());
        registry.register(name::TRACES, "Trace uploads, by HTTP status", traces.clone());
        registry.register(name::REPORTS, "Reports stored (counted at scrape)", reports.clone());
        registry.register(name::REMOVED, "Reports removed for their age (--retention)", removed.clone());
        Arc::new(Self { registry, uploads, fetches, traces, reports, removed })
    }

    pub fn upload(&self, r: UploadResult) {
        self.uploads.get_or_create(&ResultLabels { result: r.as_str() }).inc();
    }

    pub fn fetch(&self, status: u16) {
        self.fetches.get_or_create(&ResultLabels { result: status_result(status) }).inc();
    }

    pub fn trace(&self, status: u16) {
        self.traces.get_or_create(&ResultLabels { result: status_result(status) }).inc();
    }

    pub fn removed(&self, n: u64) {
        self.removed.inc_by(n);
    }

    pub fn reports(&self, n: i64) {
        self.reports.set(n);
    }

    /// The exposition, OpenMetrics or the Prometheus text format as `accept` asks.
    pub fn render(&self, accept: Option<&str>) -> (&'static str, String) {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("encoding the metrics: {e}");
        }
        if exposition::wants_openmetrics(accept) {
            (exposition::OPENMETRICS, out)
        } else {
            (exposition::PROMETHEUS_TEXT, exposition::to_prometheus_text(&out))
        }
    }
}
