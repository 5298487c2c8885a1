//! The HTTP test service: HTTP/1.1 (hyper) over connections accepted from the MPTCP listener, so
//! that each request can be tied to its socket's MPTCP state.
//!
//! `GET /probe?bytes=N` answers N pattern bytes; `POST /probe` answers digests of the request's
//! headers and body as they arrived, which is how `check` sees a proxy or an ALG that rewrites
//! either. Every such request names its test in the `x-mptcp-probe-test` header. `GET /` answers
//! a visitor (`curl --mptcp`, a browser) whether their connection is MPTCP and, if not, what
//! this server saw of it ([`visitor`]).
//!
//! A connection gets one view per test its requests name, holding for the last of them the
//! digest "headers", "body" (POST) or "sent" (GET), and body bytes both ways: POST bodies in,
//! pattern bytes and JSON answers out. Notes: method, target, HTTP version, requests.

use std::{
    convert::Infallible,
    os::fd::{AsRawFd, RawFd},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{
    body::{Body, Bytes, Frame, Incoming, SizeHint},
    header::{HeaderMap, HeaderValue, ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

use super::{
    sha256_hex,
    store::{self, Slot},
    Idle, Recorder, IDLE_TIMEOUT,
};
use mptcp_probe_model::{ConnectionView, Part};

use crate::protocol::{fill_pattern, valid_test_id, HTTP_TEST_HEADER, MAX_BULK_BYTES};

/// Largest request head hyper buffers (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// Size of the chunks a download is sent in.
const CHUNK: usize = 64 * 1024;

type ResBody = BoxBody<Bytes, Infallible>;

/// What `POST /probe` answers.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct PostEcho {
    pub test_id: String,
    pub headers_sha256: String,
    pub body_sha256: String,
    pub body_bytes: u64,
}

/// The request headers as the digest covers them: `name: value\n` per header, names lower-case,
/// nothing left out. The order is hyper's: names in the order they first arrived, and the values
/// of a repeated name together at its first place (in their own received order), which is the
/// received order whenever no name repeats apart from itself.
pub(super) fn canonical_headers(h: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in h {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out
}

struct Conn {
    rec: Arc<Recorder>,
    /// The connection's socket, alive while hyper serves it (and so while any request is handled).
    fd: RawFd,
}

pub(super) async fn serve(stream: TcpStream, rec: Arc<Recorder>) {
    let conn = Arc::new(Conn { rec: rec.clone(), fd: stream.as_raw_fd() });
    let svc = service_fn(move |req| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(handle(req, &conn).await) }
    });
    let fd = stream.as_raw_fd();
    let io = TokioIo::new(Idle::new(stream, IDLE_TIMEOUT));
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(IDLE_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(io, svc)
        .without_shutdown()
        .await;
    match served {
        // The socket is still open in `parts`: its final state.
        Ok(_parts) => rec.refresh(fd),
        Err(e) => tracing::debug!("http connection: {e}"),
    }
}

fn error(status: StatusCode, msg: &str) -> Response<ResBody> {
    json(status, &serde_json::json!({ "error": msg }).to_string())
}

fn json(status: StatusCode, text: &str) -> Response<ResBody> {
    let mut r = Response::new(Full::new(Bytes::from(text.to_string())).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// What a visitor's connection is, in words: MPTCP or not, and why not as far as this end can
/// tell.
pub(super) fn visitor(v: &ConnectionView, observed: bool) -> String {
    if v.is_mptcp == Some(true) && v.fallback != Some(true) {
        let n = v.subflows.unwrap_or(1);
        return format!("You are using MPTCP: this connection has {n} subflow(s).");
    }
    let mut out = match v.is_mptcp {
        Some(true) => {
            "You are not using MPTCP: your connection started as MPTCP and fell back to TCP.".to_string()
        }
        Some(false) => "You are not using MPTCP.".to_string(),
        None => {
            return "This server cannot tell whether your connection is MPTCP (its socket did not say)."
                .into()
        }
    };
    for e in &v.fallback_evidence {
        out.push_str(&format!(" {e}."));
    }
    match (&v.handshake, observed) {
        (Some(h), _) if h.syn_mptcp.is_none() && v.is_mptcp != Some(true) => out.push_str(
            " Your SYN arrived without MP_CAPABLE: either your system did not ask for MPTCP (try \
             `curl --mptcp` or `mptcpize run curl`), or something on the path removed it.",
        ),
        (Some(h), _) if h.ack_mptcp_len == Some(0) => {
            out.push_str(" Your third ACK arrived without MP_CAPABLE: something on the path removed it.")
        }
        (None, false) => out.push_str(" This server has no observer of its own, so it cannot say more."),
        _ => {}
    }
    out
}

fn visitor_page(req: &Request<Incoming>, conn: &Conn) -> Response<ResBody> {
    conn.rec.refresh(conn.fd);
    let text = visitor(&conn.rec.view(), conn.rec.observed());
    let html = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    let (body, kind) = if html {
        let escaped = text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        (
            format!(
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>mptcp-probe \
                 serve</title></head><body><h1>MPTCP?</h1><p>{escaped}</p></body></html>\n"
            ),
            "text/html; charset=utf-8",
        )
    } else {
        (format!("{text}\n"), "text/plain; charset=utf-8")
    };
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    r
}

async fn handle(req: Request<Incoming>, conn: &Conn) -> Response<ResBody> {
    if req.uri().path() == "/" && req.method() == Method::GET && !req.headers().contains_key(HTTP_TEST_HEADER)
    {
        return visitor_page(&req, conn);
    }
    if req.uri().path() != "/probe" {
        return error(StatusCode::NOT_FOUND, "not found: this server answers GET /, and GET and POST /probe");
    }
    let test_id = match req.headers().get(HTTP_TEST_HEADER).map(|v| v.to_str()) {
        Some(Ok(id)) if valid_test_id(id) => id.to_string(),
        Some(_) => return error(StatusCode::BAD_REQUEST, "invalid test id: 1 to 64 of [A-Za-z0-9_-]"),
        None => return error(StatusCode::BAD_REQUEST, "missing x-mptcp-probe-test header"),
    };
    let Some(slot) = conn.rec.attach(&test_id) else {
        return error(StatusCode::TOO_MANY_REQUESTS, "too many connections for this test");
    };
    let headers = sha256_hex(&canonical_headers(req.headers()));
    store::with(&slot, |v| {
        v.digests.insert(Part::Headers, headers.clone());
        v.notes.insert("method".into(), req.method().to_string());
        v.notes.insert("target".into(), req.uri().to_string());
        v.notes.insert("http_version".into(), format!("{:?}", req.version()));
        let n = v.notes.get("requests").and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        v.notes.insert("requests".into(), (n + 1).to_string());
    });
    conn.rec.refresh(conn.fd);
    match *req.method() {
        Method::GET => get(&req, slot),
        Method::POST => post(req, test_id, headers, slot).await,
        _ => {
            let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST");
            r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, POST"));
            r
        }
    }
}

/// The `bytes=N` query parameter.
fn bytes_param(query: Option<&str>) -> Option<u64> {
    query?.split('&').find_map(|kv| kv.strip_prefix("bytes=")).and_then(|n| n.parse().ok())
}

fn get(req: &Request<Incoming>, slot: Slot) -> Response<ResBody> {
    let Some(n) = bytes_param(req.uri().query()) else {
        return error(StatusCode::BAD_REQUEST, "give the size as /probe?bytes=N");
    };
    if n > MAX_BULK_BYTES {
        return error(StatusCode::BAD_REQUEST, &format!("at most {MAX_BULK_BYTES} bytes per request"));
    }
    let body = if n == 0 {
        store::with(&slot, |v| {
            v.digests.insert(Part::Sent, sha256_hex(&[]));
        });
        Full::new(Bytes::new()).boxed()
    } else {
        PatternBody { slot, total: n, sent: 0, hash: Sha256::new() }.boxed()
    };
    let mut r = Response::new(body);
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    r
}

async fn post(
    req: Request<Incoming>,
    test_id: String,
    headers_sha256: String,
    slot: Slot,
) -> Response<ResBody> {
    let mut body = req.into_body();
    let mut hash = Sha256::new();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                store::with(&slot, |v| v.error = Some(format!("request body: {e}")));
                return error(StatusCode::BAD_REQUEST, "the request body did not arrive whole");
            }
        };
        if let Ok(data) = frame.into_data() {
            n += data.len() as u64;
            if n > MAX_BULK_BYTES {
                store::with(&slot, |v| v.error = Some(format!("request body over {MAX_BULK_BYTES} bytes")));
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("at most {MAX_BULK_BYTES} bytes per request"),
                );
            }
            hash.update(&data);
        }
    }
    let echo = PostEcho { test_id, headers_sha256, body_sha256: hex::encode(hash.finalize()), body_bytes: n };
    let text = serde_json::to_string(&echo).unwrap_or_default();
    store::with(&slot, |v| {
        v.digests.insert(Part::Body, echo.body_sha256.clone());
        v.bytes_received += n;
        v.bytes_sent += text.len() as u64;
    });
    json(StatusCode::OK, &text)
}

/// `total` pattern bytes, generated as they are sent. The connection's view gets the bytes and
/// their digest when the last chunk is handed to hyper, so before the client can have it all.
struct PatternBody {
    slot: Slot,
    total: u64,
    sent: u64,
    hash: Sha256,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.sent >= this.total {
            return Poll::Ready(None);
        }
        let k = (this.total - this.sent).min(CHUNK as u64) as usize;
        let mut chunk = vec![0u8; k];
        fill_pattern(&mut chunk, this.sent);
        this.hash.update(&chunk);
        this.sent += k as u64;
        if this.sent == this.total {
            let digest = hex::encode(std::mem::take(&mut this.hash).finalize());
            let total = this.total;
            store::with(&this.slot, |v| {
                v.bytes_sent += total;
                v.digests.insert(Part::Sent, digest);
            });
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.total
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.total - self.sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_visitor_is_told_whether_the_connection_is_mptcp_and_why_not() {
        let mptcp = ConnectionView {
            is_mptcp: Some(true),
            fallback: Some(false),
            subflows: Some(2),
            ..Default::default()
        };
        assert_eq!(visitor(&mptcp, true), "You are using MPTCP: this connection has 2 subflow(s).");
        let stripped_syn = ConnectionView {
            is_mptcp: Some(false),
            handshake: Some(mptcp_probe_model::HandshakeView::default()),
            ..Default::default()
        };
        let t = visitor(&stripped_syn, true);
        assert!(
            t.starts_with("You are not using MPTCP.") && t.contains("Your SYN arrived without MP_CAPABLE"),
            "{t}"
        );
        let fell_back = ConnectionView {
            is_mptcp: Some(true),
            fallback: Some(true),
            fallback_evidence: vec!["SYN and SYN/ACK carried MP_CAPABLE, third ACK received without".into()],
            handshake: Some(mptcp_probe_model::HandshakeView {
                syn_mptcp: Some(mptcp_probe_model::Subtype::MpCapable),
                ack_mptcp_len: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = visitor(&fell_back, true);
        assert!(t.contains("fell back to TCP") && t.contains("third ACK received without."), "{t}");
        assert!(t.contains("Your third ACK arrived without MP_CAPABLE"), "{t}");
        let unobserved = ConnectionView { is_mptcp: Some(false), ..Default::default() };
        assert!(visitor(&unobserved, false).contains("no observer of its own"));
        assert!(visitor(&ConnectionView::default(), true).starts_with("This server cannot tell"));
    }

    #[test]
    fn headers_are_canonical_lines_in_received_order() {
        let mut h = HeaderMap::new();
        h.append("Host", HeaderValue::from_static("203.0.113.2"));
        h.append("X-Mptcp-Probe-Test", HeaderValue::from_static("t1"));
        h.append("accept", HeaderValue::from_static("*/*"));
        h.append("accept", HeaderValue::from_static("text/plain"));
        assert_eq!(
            String::from_utf8(canonical_headers(&h)).unwrap(),
            "host: 203.0.113.2\nx-mptcp-probe-test: t1\naccept: */*\naccept: text/plain\n"
        );
        assert!(canonical_headers(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn the_size_comes_from_the_query() {
        assert_eq!(bytes_param(Some("bytes=42")), Some(42));
        assert_eq!(bytes_param(Some("x=1&bytes=7")), Some(7));
        assert_eq!(bytes_param(Some("bytes=-1")), None);
        assert_eq!(bytes_param(None), None);
    }
}
