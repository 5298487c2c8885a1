//! The daemon's HTTP endpoint: `/metrics` in OpenMetrics or in the Prometheus text format, as
//! the scraper's `Accept` header asks, and a small landing page at `/`.
//!
//! `prometheus-client` encodes OpenMetrics only. The Prometheus text format (0.0.4) differs from
//! it in three things for the metrics here: a counter's `# TYPE`/`# HELP` carry the sample's name
//! (`x_total`, not `x`), there is no `# UNIT` and no `# EOF`. [`to_prometheus_text`] makes that
//! change, so older scrapers and `promtool check metrics` read the same values.

use std::{collections::HashSet, sync::Arc};

use axum::{
    http::{header, HeaderMap, StatusCode},
    response::{Html, IntoResponse, Response},
    routing::get,
    Router,
};

use super::metrics::Metrics;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Which format an `Accept` header prefers: OpenMetrics when it is offered with a quality at
/// least that of the text format, else the text format (also for no header or `*/*`).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let quality = |wanted: &str| {
        accept
            .split(',')
            .filter_map(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next()?;
                let q = parts
                    .filter_map(|p| p.strip_prefix("q="))
                    .find_map(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                media.eq_ignore_ascii_case(wanted).then_some(q)
            })
            .fold(None, |best: Option<f32>, q| Some(best.map_or(q, |b| b.max(q))))
    };
    match (quality("application/openmetrics-text"), quality("text/plain")) {
        (Some(om), Some(text)) => om > 0.0 && om >= text,
        (Some(om), None) => om > 0.0,
        _ => false,
    }
}

/// The same metrics in the Prometheus text format (see the module's comment).
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# TYPE ", "# HELP "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{tag}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

async fn metrics(metrics: Arc<Metrics>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let body = metrics.encode();
    if wants_openmetrics(accept) {
        ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response()
    } else {
        ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], to_prometheus_text(&body)).into_response()
    }
}

const LANDING: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mptcp-probe daemon</title></head>
<body><h1>mptcp-probe daemon</h1>
<p>Every MPTCP connection of this host, counted by outcome and fallback reason, and the kernel's
MPTCP counters: <a href="/metrics">/metrics</a> (Prometheus text or OpenMetrics).</p>
</body></html>
"#;

/// `/metrics` and `/`; anything else is 404.
pub fn router(m: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(move |headers: HeaderMap| metrics(m.clone(), headers)))
        .route("/", get(|| async { Html(LANDING) }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found: try /metrics\n") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scrapers_accept_header_picks_the_format() {
        // Prometheus 2.x and 3.x.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                          version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0")));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0.2, text/plain;q=0.9")));
        assert!(wants_openmetrics(Some("Application/OpenMetrics-Text")));
    }

    #[test]
    fn counters_are_named_by_their_samples_in_the_text_format() {
        let om = "# HELP mptcp_probe_connections Connections.\n\
                  # TYPE mptcp_probe_connections counter\n\
                  mptcp_probe_connections_total{outcome=\"mptcp\"} 2\n\
                  # HELP mptcp_probe_scrape_duration_seconds How long.\n\
                  # TYPE mptcp_probe_scrape_duration_seconds gauge\n\
                  # UNIT mptcp_probe_scrape_duration_seconds seconds\n\
                  mptcp_probe_scrape_duration_seconds 0.001\n\
                  # EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP mptcp_probe_connections_total Connections.\n\
             # TYPE mptcp_probe_connections_total counter\n\
             mptcp_probe_connections_total{outcome=\"mptcp\"} 2\n\
             # HELP mptcp_probe_scrape_duration_seconds How long.\n\
             # TYPE mptcp_probe_scrape_duration_seconds gauge\n\
             mptcp_probe_scrape_duration_seconds 0.001\n"
        );
    }
}
