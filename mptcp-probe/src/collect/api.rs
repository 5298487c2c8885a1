//! The collector's HTTP API: `POST /api/v1/reports` (a report, validated, stored once per id),
//! `GET /api/v1/reports/{id}` with its token, `GET /api/v1/summary`. Errors are JSON
//! `{"error": "..."}` with the reason; a refused upload stores nothing.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use mptcp_probe_model::{Report, SCHEMA};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{
    metrics::{CollectorMetrics, UploadResult},
    store::{Inserted, NewReport, Store},
    token::{self, Secret},
};

/// At most this many tests in a report (the contract has 8 tests, each over 2 transports, each
/// run again a few times at most).
pub const MAX_TESTS: usize = 64;
/// At most this many verdicts or findings in one list.
pub const MAX_LIST: usize = 256;

pub struct Api {
    pub store: Store,
    pub secret: Secret,
    /// Keys an upload must carry (`Authorization: Bearer KEY`); none: anyone may upload.
    pub upload_keys: Vec<String>,
    /// Where the collector is reached from outside, for the URLs it answers with.
    pub public_url: String,
    pub metrics: Arc<CollectorMetrics>,
}

fn error(status: StatusCode, why: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": why.to_string() }))).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

/// What a report must be besides well-formed: this schema, a UUID for an id, bounded lists.
pub fn validate(r: &Report) -> Result<(), String> {
    if r.schema != SCHEMA {
        return Err(format!("schema is {:?}, not {SCHEMA:?}", r.schema));
    }
    if uuid::Uuid::parse_str(&r.id).is_err() {
        return Err(format!("id {:?} is not a UUID", r.id));
    }
    if r.tests.len() > MAX_TESTS {
        return Err(format!("{} tests, more than {MAX_TESTS}", r.tests.len()));
    }
    let too_long = r.summary.verdicts.len() > MAX_LIST
        || r.tests.iter().any(|t| t.verdicts.len() > MAX_LIST || t.evidence.findings.len() > MAX_LIST);
    if too_long {
        return Err(format!("a list of verdicts or findings longer than {MAX_LIST}"));
    }
    Ok(())
}

async fn upload(State(api): State<Arc<Api>>, headers: HeaderMap, body: Bytes) -> Response {
    let (response, result) = store_upload(&api, &headers, &body).await;
    api.metrics.upload(result);
    if result == UploadResult::Stored {
        match api.store.count().await {
            Ok(n) => api.metrics.reports(n),
            Err(e) => tracing::warn!("collect: counting the reports: {e:#}"),
        }
    }
    response
}

async fn store_upload(api: &Api, headers: &HeaderMap, body: &[u8]) -> (Response, UploadResult) {
    let refused = |status, why: &str| (error(status, why), UploadResult::Refused);
    if !api.upload_keys.is_empty() {
        let Some(key) = bearer(headers) else {
            return refused(
                StatusCode::UNAUTHORIZED,
                "this collector takes uploads with a key: Authorization: Bearer KEY",
            );
        };
        // Digests compared, so that neither a key's bytes nor its length show in the time taken.
        let presented = token::sha256(key.as_bytes());
        let known = api
            .upload_keys
            .iter()
            .fold(false, |found, k| found | bool::from(token::sha256(k.as_bytes()).ct_eq(&presented)));
        if !known {
            return refused(StatusCode::FORBIDDEN, "the upload key is not one of this collector's");
        }
    }
    let report: Report = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return refused(StatusCode::BAD_REQUEST, &format!("not a report: {e}")),
    };
    if let Err(why) = validate(&report) {
        return refused(StatusCode::BAD_REQUEST, &format!("not a valid report: {why}"));
    }
    let Ok(text) = serde_json::to_string(&report) else {
        return (
            error(StatusCode::INTERNAL_SERVER_ERROR, "the report could not be stored"),
            UploadResult::Failed,
        );
    };
    let token = api.secret.token(&report.id);
    let verdicts: Vec<&str> = report.summary.verdicts.iter().map(|v| v.as_str()).collect();
    let received_at =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let new = NewReport {
        id: &report.id,
        token_sha256: &token::sha256(token.as_bytes()),
        report_sha256: &token::sha256(text.as_bytes()),
        received_at,
        report: &text,
        mptcp_usable: report.summary.mptcp_usable,
        verdicts: &verdicts.join(","),
    };
    let created = || {
        let url = format!("{}/api/v1/reports/{}?token={token}", api.public_url, report.id);
        (StatusCode::CREATED, Json(json!({ "id": report.id, "token": token, "url": url }))).into_response()
    };
    match api.store.insert(&new).await {
        Ok(Inserted::New) => (created(), UploadResult::Stored),
        // Stored before, maybe by another collector of the same database: its token is this one
        // only if the two share their secret.
        Ok(Inserted::Again) => match api.store.get(&report.id).await {
            Ok(Some(stored)) if token::matches(&token, &stored.token_sha256) => {
                (created(), UploadResult::Again)
            }
            Ok(_) => {
                tracing::error!(
                    "collect: report {} was stored with another secret: give every collector of this database the same --secret-file",
                    report.id
                );
                let why = "this report was stored by a collector with another secret";
                (error(StatusCode::INTERNAL_SERVER_ERROR, why), UploadResult::Failed)
            }
            Err(e) => {
                tracing::error!("collect: {e:#}");
                (
                    error(StatusCode::SERVICE_UNAVAILABLE, "the report could not be read; try again"),
                    UploadResult::Failed,
                )
            }
        },
        Ok(Inserted::Conflict) => {
            (error(StatusCode::CONFLICT, "another report is stored under this id"), UploadResult::Conflict)
        }
        Err(e) => {
            tracing::error!("collect: {e:#}");
            let why = "the report could not be stored; try again";
            (error(StatusCode::SERVICE_UNAVAILABLE, why), UploadResult::Failed)
        }
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn fetch(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    let response = fetch_report(&api, &id, &q, &headers).await;
    api.metrics.fetch(response.status().as_u16());
    response
}

async fn fetch_report(api: &Api, id: &str, q: &TokenQuery, headers: &HeaderMap) -> Response {
    let Some(presented) = q.token.as_deref().or_else(|| bearer(headers)) else {
        return error(StatusCode::UNAUTHORIZED, "a report is shown with its token: ?token=TOKEN");
    };
    match api.store.get(id).await {
        Ok(Some(stored)) if token::matches(presented, &stored.token_sha256) => {
            ([(header::CONTENT_TYPE, "application/json")], stored.report).into_response()
        }
        Ok(Some(_)) => error(StatusCode::FORBIDDEN, "that is not this report's token"),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such report"),
        Err(e) => {
            tracing::error!("collect: {e:#}");
            error(StatusCode::SERVICE_UNAVAILABLE, "the report could not be read; try again")
        }
    }
}

async fn summary(State(api): State<Arc<Api>>) -> Response {
    match api.store.count().await {
        Ok(n) => Json(json!({ "reports": n })).into_response(),
        Err(e) => {
            tracing::error!("collect: {e:#}");
            error(StatusCode::SERVICE_UNAVAILABLE, "the summary could not be read")
        }
    }
}

async fn metrics(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    let (content_type, body) = api.metrics.render(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The routes, with uploads limited to `max_bytes` (413 beyond).
pub fn router(api: Arc<Api>, max_bytes: usize) -> Router {
    Router::new()
        .route("/api/v1/reports", post(upload))
        .route("/api/v1/reports/{id}", get(fetch))
        .route("/api/v1/summary", get(summary))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(max_bytes))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .with_state(api)
}
