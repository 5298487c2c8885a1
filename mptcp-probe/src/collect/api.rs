//! The collector's HTTP API: `POST /api/v1/reports` (a report, validated, stored once per id),
//! `GET /api/v1/reports/{id}` with its token, `PUT`/`GET /api/v1/reports/{id}/trace` (its
//! header-only pcapng), `GET /api/v1/summary`, `/metrics`; the pages are in [`super::pages`].
//! Errors are JSON `{"error": "..."}` with the reason; a refused upload stores nothing.

// A refusal is the answer itself: handlers return it as it is, once per request.
#![allow(clippy::result_large_err)]

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::{ConnectInfo, Path, Query, Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use governor::{clock::Clock as _, DefaultKeyedRateLimiter, Quota, RateLimiter};
use mptcp_probe_common::event::HEADER_BYTES;
use mptcp_probe_model::{Report, MAX_NOTE_CHARS, SCHEMA};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{
    client::{self, PrefixPolicy},
    metrics::{CollectorMetrics, UploadResult},
    pages,
    store::{Aggregate, Inserted, NewReport, Store, Stored, TracePut},
    token::{self, Secret},
};

/// At most this many tests in a report (the contract has 8 tests, each over 2 transports, each
/// run again a few times at most).
pub const MAX_TESTS: usize = 64;
/// At most this many verdicts or findings in one list.
pub const MAX_LIST: usize = 256;

/// How large an upload may be, how long a request may take, how often a source may upload.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_report_bytes: usize,
    pub max_trace_bytes: usize,
    pub request_timeout: Duration,
    /// Uploads (reports and traces) a minute from one source (an IPv4 address, an IPv6 /64);
    /// none: no limit.
    pub uploads_per_minute: Option<NonZeroU32>,
}

pub struct Api {
    pub store: Store,
    pub secret: Secret,
    /// Keys an upload must carry (`Authorization: Bearer KEY`); none: anyone may upload.
    pub upload_keys: Vec<String>,
    /// Where the collector is reached from outside, for the URLs it answers with.
    pub public_url: String,
    pub metrics: Arc<CollectorMetrics>,
    pub limits: Limits,
    /// What is kept of a client's address.
    pub prefixes: PrefixPolicy,
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// The aggregate as last counted, kept a few seconds (or until this collector stores a
    /// report): the public pages do not count the whole database for every visitor.
    aggregate: tokio::sync::Mutex<Option<(std::time::Instant, Arc<Aggregate>)>>,
}

/// How long the aggregate is kept.
const AGGREGATE_FOR: Duration = Duration::from_secs(10);

impl Api {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        secret: Secret,
        upload_keys: Vec<String>,
        public_url: String,
        metrics: Arc<CollectorMetrics>,
        limits: Limits,
        prefixes: PrefixPolicy,
    ) -> Arc<Self> {
        let limiter = limits.uploads_per_minute.map(|n| RateLimiter::keyed(Quota::per_minute(n)));
        Arc::new(Self {
            store,
            secret,
            upload_keys,
            public_url,
            metrics,
            limits,
            prefixes,
            limiter,
            aggregate: tokio::sync::Mutex::new(None),
        })
    }

    /// The counts of the public pages: counted at most every few seconds, one count at a time.
    pub async fn aggregate(&self) -> anyhow::Result<Arc<Aggregate>> {
        let mut cached = self.aggregate.lock().await;
        if let Some((at, a)) = cached.as_ref() {
            if at.elapsed() < AGGREGATE_FOR {
                return Ok(a.clone());
            }
        }
        let a = Arc::new(self.store.aggregate().await?);
        *cached = Some((std::time::Instant::now(), a.clone()));
        Ok(a)
    }

    /// Counts anew at the next ask (after reports were stored or removed here).
    pub async fn forget_aggregate(&self) {
        *self.aggregate.lock().await = None;
    }

    /// Forgets the sources that have not uploaded lately (bounds the limiter's memory).
    pub fn forget_quiet_sources(&self) {
        if let Some(l) = &self.limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// The page of a report, with its token.
    pub fn report_url(&self, id: &str, token: &str) -> String {
        format!("{}/reports/{id}?token={token}", self.public_url)
    }

    /// Whether a source may upload now; else the 429 answer, with when to try again.
    fn admit(&self, peer: IpAddr) -> Result<(), Response> {
        let Some(l) = &self.limiter else { return Ok(()) };
        l.check_key(&client::rate_key(peer)).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            let secs = wait.as_secs() + 1;
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many uploads from this network; try again in {secs} s"),
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r
        })
    }

    /// Whether the upload carries one of the keys, when this collector asks for one.
    fn key_ok(&self, headers: &HeaderMap) -> Result<(), Response> {
        if self.upload_keys.is_empty() {
            return Ok(());
        }
        let Some(key) = bearer(headers) else {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "this collector takes uploads with a key: Authorization: Bearer KEY",
            ));
        };
        // Digests compared, so that neither a key's bytes nor its length show in the time taken.
        let presented = token::sha256(key.as_bytes());
        let known = self
            .upload_keys
            .iter()
            .fold(false, |found, k| found | bool::from(token::sha256(k.as_bytes()).ct_eq(&presented)));
        if known {
            Ok(())
        } else {
            Err(error(StatusCode::FORBIDDEN, "the upload key is not one of this collector's"))
        }
    }

    /// The stored report `id` if `presented` is its token; else the answer saying why not.
    pub async fn authorized(&self, id: &str, presented: Option<&str>) -> Result<Stored, Response> {
        let Some(presented) = presented else {
            return Err(error(StatusCode::UNAUTHORIZED, "a report is shown with its token: ?token=TOKEN"));
        };
        match self.store.get(id).await {
            Ok(Some(stored)) if token::matches(presented, &stored.token_sha256) => Ok(stored),
            Ok(Some(_)) => Err(error(StatusCode::FORBIDDEN, "that is not this report's token")),
            Ok(None) => Err(error(StatusCode::NOT_FOUND, "no such report")),
            Err(e) => {
                tracing::error!("collect: {e:#}");
                Err(error(StatusCode::SERVICE_UNAVAILABLE, "the report could not be read; try again"))
            }
        }
    }
}

pub fn error(status: StatusCode, why: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": why.to_string() }))).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

/// What a report must be besides well-formed: this schema, a UUID for an id, bounded lists, a
/// short note.
pub fn validate(r: &Report) -> Result<(), String> {
    if r.schema != SCHEMA {
        return Err(format!("schema is {:?}, not {SCHEMA:?}", r.schema));
    }
    // One spelling of a UUID only (lower-case, hyphenated), so that one id is one report.
    match uuid::Uuid::parse_str(&r.id) {
        Ok(u) if u.hyphenated().to_string() == r.id => {}
        Ok(_) => {
            return Err(format!("id {:?} is not a UUID as check writes one (lower-case, hyphenated)", r.id))
        }
        Err(_) => return Err(format!("id {:?} is not a UUID", r.id)),
    }
    if r.tests.len() > MAX_TESTS {
        return Err(format!("{} tests, more than {MAX_TESTS}", r.tests.len()));
    }
    let too_long = r.summary.verdicts.len() > MAX_LIST
        || r.summary.path_conditions.len() > MAX_LIST
        || r.tests.iter().any(|t| t.verdicts.len() > MAX_LIST || t.evidence.findings.len() > MAX_LIST);
    if too_long {
        return Err(format!("a list of verdicts or findings longer than {MAX_LIST}"));
    }
    if let Some(n) = &r.client.note {
        let chars = n.chars().count();
        if chars > MAX_NOTE_CHARS {
            return Err(format!("a note of {chars} characters, more than {MAX_NOTE_CHARS}"));
        }
    }
    Ok(())
}

/// Reads a request's body, at most `max` bytes: 413 beyond (said before reading when the
/// request announces its length), 400 when it cannot be read.
async fn read_body(headers: &HeaderMap, body: Body, max: usize, what: &str) -> Result<Bytes, Response> {
    let too_large = || error(StatusCode::PAYLOAD_TOO_LARGE, format!("{what} larger than {max} bytes"));
    let announced = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, max).await.map_err(|e| {
        let limit = std::error::Error::source(&e)
            .is_some_and(|s| s.downcast_ref::<http_body_util::LengthLimitError>().is_some());
        if limit {
            too_large()
        } else {
            error(StatusCode::BAD_REQUEST, format!("{what} could not be read: {e}"))
        }
    })
}

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

async fn upload(
    State(api): State<Arc<Api>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (response, result) = match store_upload(&api, peer.ip(), &headers, body).await {
        Ok(answer) => answer,
        Err((response, result)) => (response, result),
    };
    api.metrics.upload(result);
    // No address and no token: what the upload came to, for the operator.
    tracing::info!(result = result.as_str(), status = response.status().as_u16(), "collect: upload");
    response
}

type Answer = (Response, UploadResult);

async fn store_upload(api: &Api, peer: IpAddr, headers: &HeaderMap, body: Body) -> Result<Answer, Answer> {
    let refused = |r: Response| (r, UploadResult::Refused);
    // The cheap checks first: a source over its rate or without a key is answered before its
    // body is read.
    api.admit(peer).map_err(|r| (r, UploadResult::Limited))?;
    api.key_ok(headers).map_err(refused)?;
    let body = read_body(headers, body, api.limits.max_report_bytes, "a report").await.map_err(refused)?;
    let report: Report = serde_json::from_slice(&body)
        .map_err(|e| refused(error(StatusCode::BAD_REQUEST, format!("not a report: {e}"))))?;
    validate(&report)
        .map_err(|why| refused(error(StatusCode::BAD_REQUEST, format!("not a valid report: {why}"))))?;
    let text = serde_json::to_string(&report).map_err(|_| {
        (error(StatusCode::INTERNAL_SERVER_ERROR, "the report could not be stored"), UploadResult::Failed)
    })?;
    let token = api.secret.token(&report.id);
    let verdicts: Vec<&str> = report.summary.verdicts.iter().map(|v| v.as_str()).collect();
    let counted: Vec<&str> =
        report.summary.verdicts.iter().chain(&report.summary.path_conditions).map(|v| v.as_str()).collect();
    let prefix = api.prefixes.keep(peer);
    let new = NewReport {
        id: &report.id,
        token_sha256: &token::sha256(token.as_bytes()),
        report_sha256: &token::sha256(text.as_bytes()),
        received_at: now_s(),
        report: &text,
        mptcp_usable: report.summary.mptcp_usable,
        verdicts: &verdicts,
        counted: &counted,
        network_kind: report.client.network_kind.map(|k| k.as_str()),
        client_prefix: prefix.as_deref(),
    };
    let created = || {
        let body = json!({ "id": report.id, "token": token, "url": api.report_url(&report.id, &token) });
        (StatusCode::CREATED, Json(body)).into_response()
    };
    let unavailable = |e: anyhow::Error, why: &str| {
        tracing::error!("collect: {e:#}");
        (error(StatusCode::SERVICE_UNAVAILABLE, why), UploadResult::Failed)
    };
    match api.store.insert(&new).await {
        Ok(Inserted::New) => {
            api.forget_aggregate().await;
            Ok((created(), UploadResult::Stored))
        }
        // Stored before, maybe by another collector of the same database: its token is this one
        // only if the two share their secret.
        Ok(Inserted::Again) => match api.store.get(&report.id).await {
            Ok(Some(stored)) if token::matches(&token, &stored.token_sha256) => {
                Ok((created(), UploadResult::Again))
            }
            Ok(_) => {
                tracing::error!(
                    "collect: report {} was stored with another secret: give every collector of this database the same --secret-file",
                    report.id
                );
                let why = "this report was stored by a collector with another secret";
                Err((error(StatusCode::INTERNAL_SERVER_ERROR, why), UploadResult::Failed))
            }
            Err(e) => Err(unavailable(e, "the report could not be read; try again")),
        },
        Ok(Inserted::Conflict) => Err((
            error(StatusCode::CONFLICT, "another report is stored under this id"),
            UploadResult::Conflict,
        )),
        Err(e) => Err(unavailable(e, "the report could not be stored; try again")),
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// A request for one report: its id (the path's `{id}`) and the token presented with it, in
/// the query (`?token=`) or as `Authorization: Bearer TOKEN`.
pub struct ReportRequest {
    pub id: String,
    pub token: Option<String>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ReportRequest {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Response> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))?;
        let Query(q) = Query::<TokenQuery>::from_request_parts(parts, state)
            .await
            .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))?;
        let token = q.token.or_else(|| bearer(&parts.headers).map(str::to_string));
        Ok(Self { id, token })
    }
}

impl ReportRequest {
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

async fn fetch(State(api): State<Arc<Api>>, r: ReportRequest) -> Response {
    let id = &r.id;
    let response = match api.authorized(id, r.token()).await {
        Ok(stored) => ([(header::CONTENT_TYPE, "application/json")], stored.report).into_response(),
        Err(r) => r,
    };
    api.metrics.fetch(response.status().as_u16());
    response
}

/// Why `bytes` is not a header-only pcapng trace, if it is not one: every block must parse, the
/// first is a section header, and no packet holds more than the headers a trace keeps.
pub fn check_trace(bytes: &[u8]) -> Result<u64, String> {
    use pcap_file::pcapng::{Block, PcapNgReader};
    let mut reader = PcapNgReader::new(bytes).map_err(|e| format!("not a pcapng trace: {e}"))?;
    let mut packets = 0u64;
    while let Some(block) = reader.next_block() {
        // The blocks a header-only trace is made of, nothing else (no comments, names or
        // blocks of unknown kinds that could carry anything).
        let captured = match block.map_err(|e| format!("not a pcapng trace: {e}"))? {
            Block::EnhancedPacket(p) if p.options.len() <= 4 => p.data.len(),
            Block::SimplePacket(p) => p.data.len(),
            Block::SectionHeader(_) | Block::InterfaceDescription(_) => continue,
            other => {
                return Err(format!(
                    "a block the collector does not keep ({:?}): a trace keeps packet headers only",
                    std::mem::discriminant(&other)
                ))
            }
        };
        if captured > HEADER_BYTES {
            return Err(format!(
                "a packet of {captured} bytes: a trace keeps headers only, at most {HEADER_BYTES} bytes a packet"
            ));
        }
        packets += 1;
    }
    Ok(packets)
}

async fn put_trace(
    State(api): State<Arc<Api>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    r: ReportRequest,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let response = store_trace(&api, peer.ip(), &r, &headers, body).await.unwrap_or_else(|r| r);
    api.metrics.trace(response.status().as_u16());
    response
}

async fn store_trace(
    api: &Api,
    peer: IpAddr,
    r: &ReportRequest,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Response> {
    let id = r.id.as_str();
    api.admit(peer)?;
    api.authorized(id, r.token()).await?;
    let body = read_body(headers, body, api.limits.max_trace_bytes, "a trace").await?;
    let packets = check_trace(&body).map_err(|why| error(StatusCode::BAD_REQUEST, why))?;
    let answer = |status| (status, Json(json!({ "id": id, "packets": packets, "bytes": body.len() })));
    match api.store.put_trace(id, now_s(), &body).await {
        Ok(TracePut::New) => Ok(answer(StatusCode::CREATED).into_response()),
        Ok(TracePut::Again) => Ok(answer(StatusCode::OK).into_response()),
        Ok(TracePut::Conflict) => Err(error(StatusCode::CONFLICT, "this report has another trace")),
        Ok(TracePut::NoReport) => Err(error(StatusCode::NOT_FOUND, "no such report")),
        Err(e) => {
            tracing::error!("collect: {e:#}");
            Err(error(StatusCode::SERVICE_UNAVAILABLE, "the trace could not be stored; try again"))
        }
    }
}

async fn get_trace(State(api): State<Arc<Api>>, r: ReportRequest) -> Response {
    let id = &r.id;
    if let Err(r) = api.authorized(id, r.token()).await {
        return r;
    }
    match api.store.trace(id).await {
        Ok(Some(bytes)) => {
            let disposition = format!("attachment; filename=\"mptcp-probe-{id}.pcapng\"");
            (
                [
                    (header::CONTENT_TYPE, "application/x-pcapng".to_string()),
                    (header::CONTENT_DISPOSITION, disposition),
                ],
                bytes,
            )
                .into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "this report has no trace"),
        Err(e) => {
            tracing::error!("collect: {e:#}");
            error(StatusCode::SERVICE_UNAVAILABLE, "the trace could not be read; try again")
        }
    }
}

async fn summary(State(api): State<Arc<Api>>) -> Response {
    match api.aggregate().await {
        Ok(a) => {
            let verdicts: serde_json::Map<String, serde_json::Value> =
                a.by_verdict.iter().map(|(v, n)| (v.clone(), json!(n))).collect();
            Json(json!({ "reports": a.reports, "networks": a.networks, "mptcp_usable": a.usable, "verdicts": verdicts }))
                .into_response()
        }
        Err(e) => {
            tracing::error!("collect: {e:#}");
            error(StatusCode::SERVICE_UNAVAILABLE, "the summary could not be read")
        }
    }
}

async fn metrics(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    // The stored reports are counted when asked for, not on every upload.
    match api.store.count().await {
        Ok(n) => api.metrics.reports(n),
        Err(e) => tracing::warn!("collect: counting the reports: {e:#}"),
    }
    let (content_type, body) = api.metrics.render(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Every request is answered within the time limit: 408 past it (a client too slow to send its
/// upload, or a database too slow to take it: nothing half-stored, the transaction is dropped).
async fn time_limit(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => error(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request took longer than {} s", limit.as_secs_f64()),
        ),
    }
}

/// The routes. Bodies are read by the handlers, each with its own size limit.
pub fn router(api: Arc<Api>) -> Router {
    let limit = api.limits.request_timeout;
    Router::new()
        .route("/", get(pages::aggregate))
        .route("/reports/{id}", get(pages::report))
        .route("/data/paths.csv", get(pages::paths_csv))
        .route("/data/paths.json", get(pages::paths_json))
        .route("/api/v1/reports", post(upload))
        .route("/api/v1/reports/{id}", get(fetch))
        .route("/api/v1/reports/{id}/trace", get(get_trace).put(put_trace))
        .route("/api/v1/summary", get(summary))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .layer(middleware::from_fn_with_state(limit, time_limit))
        .with_state(api)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(packet_bytes: usize) -> Vec<u8> {
        use std::borrow::Cow;

        use pcap_file::{
            pcapng::{
                blocks::{
                    enhanced_packet::EnhancedPacketBlock, interface_description::InterfaceDescriptionBlock,
                },
                PcapNgWriter,
            },
            DataLink,
        };
        let mut w = PcapNgWriter::new(Vec::new()).unwrap();
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::RAW,
            snaplen: 128,
            options: vec![],
        })
        .unwrap();
        let data = vec![0x45u8; packet_bytes];
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_secs(1),
            original_len: 1500,
            data: Cow::Borrowed(&data),
            options: vec![],
        })
        .unwrap();
        w.into_inner()
    }

    #[test]
    fn a_trace_is_taken_only_as_a_header_only_pcapng() {
        assert_eq!(check_trace(&trace(60)), Ok(1));
        assert_eq!(check_trace(&trace(HEADER_BYTES)), Ok(1));
        let e = check_trace(&trace(1400)).unwrap_err();
        assert!(e.contains("headers only"), "{e}");
        let e = check_trace(b"GET / HTTP/1.1\r\n\r\n").unwrap_err();
        assert!(e.starts_with("not a pcapng trace"), "{e}");
        let mut cut = trace(60);
        cut.truncate(cut.len() - 7);
        assert!(check_trace(&cut).unwrap_err().starts_with("not a pcapng trace"));
        assert!(check_trace(&[]).is_err());
    }
}
