//! The control port: a small HTTP JSON API over plain TCP (it must work when MPTCP does not).
//!
//! - `GET /v1/info` → `proto::ServerInfo`
//! - `GET /v1/tests/{id}` → `proto::ServerReport` (400 for an invalid id, 404 for one not held)
//! - `GET /v1/stats` → counters of what the limits refused or dropped
//! - `GET /v1/mib` → the server's MPTcpExt counters now (`check` reads them before and after a
//!   test: the server's own account of fallbacks and checksum errors, even for a connection whose
//!   test id never arrived)
//!
//! Errors are JSON too: `{"error": "..."}`.

use std::sync::Arc;

use axum::{
    extract::{Path, State as Extract},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::net::TcpStream;

use super::{Idle, State, IDLE_TIMEOUT};
use crate::protocol::{self as proto, ServerReport};

/// Largest request head (request line and headers).
const MAX_HEAD: usize = 16 * 1024;

pub(super) async fn serve(stream: TcpStream, state: Arc<State>) {
    let io = TokioIo::new(Idle::new(stream, IDLE_TIMEOUT));
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(IDLE_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(io, TowerToHyperService::new(router(state)))
        .await;
    if let Err(e) = served {
        tracing::debug!("control connection: {e}");
    }
}

fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/v1/info", get(info))
        .route("/v1/tests/{id}", get(test))
        .route("/v1/stats", get(stats))
        .route("/v1/mib", get(mib))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not found: try /v1/info or /v1/tests/{id}") })
        .with_state(state)
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(serde_json::json!({ "error": msg }))).into_response()
}

async fn info(Extract(state): Extract<Arc<State>>) -> Json<proto::ServerInfo> {
    Json(state.info())
}

async fn test(Extract(state): Extract<Arc<State>>, Path(id): Path<String>) -> Response {
    if !proto::valid_test_id(&id) {
        return error(StatusCode::BAD_REQUEST, "invalid test id: 1 to 64 of [A-Za-z0-9_-]");
    }
    let Some(mut connections) = state.store.report(&id) else {
        return error(StatusCode::NOT_FOUND, "unknown test id (never seen here, or expired)");
    };
    // What the wire shows now: a connection still running (stalled, say) has not settled its view.
    if let Some(source) = &state.source {
        for v in &mut connections {
            if let (Some(local), Some(peer)) = (v.local, v.peer) {
                if let Some(w) = source.wire(local, peer) {
                    v.set_wire(&w);
                }
            }
        }
    }
    let info = state.info();
    Json(ServerReport {
        protocol: info.protocol,
        server_version: info.server_version,
        test_id: id,
        observer: info.observer,
        connections,
    })
    .into_response()
}

async fn mib() -> Json<std::collections::BTreeMap<String, u64>> {
    Json(crate::host::mib::read())
}

async fn stats(Extract(state): Extract<Arc<State>>) -> Json<serde_json::Value> {
    let s = state.store.stats();
    Json(serde_json::json!({
        "tests": s.tests,
        "tests_evicted": s.tests_evicted,
        "tests_expired": s.tests_expired,
        "connections_over_test_limit": s.connections_over_test_limit,
        "connections_refused": state.limiter.refused(),
    }))
}
