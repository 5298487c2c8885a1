//! What leaves the host: reports uploaded to a collector, metrics scraped by Prometheus.

pub mod exposition;
pub mod metrics;

use anyhow::{bail, Context as _};
use mptcp_probe_model::Report;

/// Posts a report to a collector; a refused upload is an error naming the collector's answer.
pub async fn upload(http: &reqwest::Client, url: &str, report: &Report) -> anyhow::Result<String> {
    let resp =
        http.post(url).json(report).send().await.with_context(|| format!("uploading the report to {url}"))?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("the collector at {url} refused the report ({status}): {body}");
    }
    Ok(body)
}
