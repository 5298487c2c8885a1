//! What leaves the host: reports uploaded to a collector (at once, or through the [`spool`]),
//! metrics scraped by Prometheus.

pub mod exposition;
pub mod metrics;
pub mod spool;

use anyhow::bail;
use mptcp_probe_model::Report;
use reqwest::StatusCode;

/// The header that makes an upload idempotent: the report's id.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// What the collector made of an upload.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Stored (or stored before, the same report), with the collector's answer.
    Stored(String),
    /// Refused for good: not a report it takes (400, 413, 422) or another report under this id
    /// (409). Sending it again will not help.
    Refused(String),
    /// Not now (no answer, 5xx, 408, 429), or an answer that a fix on the collector's or the
    /// sender's side may change (401, 403, 404, 405: a key or a URL wrong for now): try again
    /// later.
    Unavailable(String),
}

/// How an HTTP status answers an upload.
pub fn classify(status: StatusCode, body: String) -> Answer {
    let permanent = [
        StatusCode::BAD_REQUEST,
        StatusCode::CONFLICT,
        StatusCode::PAYLOAD_TOO_LARGE,
        StatusCode::UNPROCESSABLE_ENTITY,
    ];
    if status.is_success() {
        Answer::Stored(body)
    } else if permanent.contains(&status) {
        Answer::Refused(format!("{status}: {body}"))
    } else {
        Answer::Unavailable(format!("{status}: {body}"))
    }
}

/// The collector's reports endpoint for a URL a user gives: a collector's address alone
/// (`https://collector.example.org`) means its `/api/v1/reports`; any other path is taken as is.
pub fn reports_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) if u.path() == "/" && u.query().is_none() => format!("{}api/v1/reports", u.as_str()),
        _ => url.to_string(),
    }
}

/// Posts a report to a collector, keyed by its id, with the upload key when there is one.
pub async fn send(http: &reqwest::Client, url: &str, key: Option<&str>, report: &Report) -> Answer {
    let url = reports_url(url);
    let mut req = http.post(&url).header(IDEMPOTENCY_KEY, &report.id).json(report);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            classify(status, resp.text().await.unwrap_or_default())
        }
        Err(e) => Answer::Unavailable(format!("{e}")),
    }
}

/// Posts a report once; a refused or failed upload is an error naming the collector's answer.
pub async fn upload(
    http: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    report: &Report,
) -> anyhow::Result<Uploaded> {
    match send(http, url, key, report).await {
        Answer::Stored(body) => serde_json::from_str(&body).map_err(|e| {
            anyhow::anyhow!("the collector at {url} stored the report but answered {body:?}: {e}")
        }),
        Answer::Refused(why) => bail!("the collector at {url} refused the report ({why})"),
        Answer::Unavailable(why) => bail!("uploading the report to {url}: {why}"),
    }
}

/// A collector's answer to a stored upload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Uploaded {
    pub id: String,
    pub token: String,
    /// The report's page.
    pub url: String,
}

/// Attaches a header-only trace to a report uploaded to `reports_url` (its
/// `/api/v1/reports/{id}/trace`), with the report's token.
pub async fn upload_trace(
    http: &reqwest::Client,
    reports_url: &str,
    uploaded: &Uploaded,
    trace: Vec<u8>,
) -> anyhow::Result<()> {
    let url = format!("{}/{}/trace", self::reports_url(reports_url).trim_end_matches('/'), uploaded.id);
    let resp = http
        .put(&url)
        .bearer_auth(&uploaded.token)
        .header(reqwest::header::CONTENT_TYPE, "application/x-pcapng")
        .body(trace)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("uploading the trace to {url}: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        bail!("the collector refused the trace ({status}: {})", resp.text().await.unwrap_or_default());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_collectors_address_alone_means_its_reports_endpoint() {
        assert_eq!(reports_url("http://203.0.113.2:8088"), "http://203.0.113.2:8088/api/v1/reports");
        assert_eq!(reports_url("https://c.example.org/"), "https://c.example.org/api/v1/reports");
        assert_eq!(
            reports_url("https://c.example.org/api/v1/reports"),
            "https://c.example.org/api/v1/reports"
        );
        assert_eq!(
            reports_url("https://c.example.org/mpp/api/v1/reports"),
            "https://c.example.org/mpp/api/v1/reports"
        );
        assert_eq!(reports_url("not a url"), "not a url", "left for the request to refuse");
    }

    /// A report with this id and nothing in it.
    pub fn report(id: &str) -> Report {
        serde_json::from_value(serde_json::json!({
            "schema": mptcp_probe_model::SCHEMA, "id": id, "started_at": "2026-12-01T00:00:00Z",
            "duration_ms": 1,
            "client": {"kernel": "6.18", "mptcp_sysctls": {}, "observer": "tc+tracepoints"},
            "server": {"address": "203.0.113.2", "version": "0.1.0"},
            "tests": [],
            "summary": {"verdicts": ["mptcp_ok"], "mptcp_usable": true},
        }))
        .unwrap()
    }

    #[test]
    fn answers_say_whether_to_try_again() {
        let c = |code: u16| classify(StatusCode::from_u16(code).unwrap(), "b".into());
        assert_eq!(c(201), Answer::Stored("b".into()));
        for code in [400, 409, 413, 422] {
            assert!(matches!(c(code), Answer::Refused(_)), "{code}");
        }
        // A wrong key or URL may be fixed on either side: the report waits.
        for code in [401, 403, 404, 405, 408, 429, 500, 502, 503] {
            assert!(matches!(c(code), Answer::Unavailable(_)), "{code}");
        }
    }
}
