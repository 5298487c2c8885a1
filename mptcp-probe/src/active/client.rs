//! The client side of each test: opens the connections over MPTCP or plain TCP, speaks the test's
//! application protocol with the server, and records what it sent, received and saw of its sockets.

use std::{net::SocketAddr, time::Duration};

use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpSocket, TcpStream},
};

use mptcp_probe_model::{ConnectionKind, ConnectionView, Outcome, Part, Transport};

use crate::{
    host::sock,
    protocol::{self as proto, BulkMode, Preamble},
};

/// What one run of a test gave on the client side.
#[derive(Debug, Default)]
pub struct Run {
    /// The test could not run here (its error says why).
    pub skipped: bool,
    /// ... because the check's time budget ran out.
    pub budget: bool,
    pub outcome: Option<Outcome>,
    pub error: Option<String>,
    /// The test's connections as the client saw them; the first is the main one.
    pub connections: Vec<ConnectionView>,
    /// (part, SHA-256 of what the client sent).
    pub sent: Vec<(Part, String)>,
    /// (part, SHA-256 of what the client received, SHA-256 of what the server says it sent).
    pub received: Vec<(Part, String, String)>,
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// SHA-256 of `n` pattern bytes, computed in chunks.
pub fn pattern_digest(n: u64) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0u64;
    while off < n {
        let k = (n - off).min(buf.len() as u64) as usize;
        proto::fill_pattern(&mut buf[..k], off);
        h.update(&buf[..k]);
        off += k as u64;
    }
    hex::encode(h.finalize())
}

/// Maps an I/O error of a test connection to its outcome.
pub fn outcome_of(e: &std::io::Error) -> Outcome {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted => Outcome::Reset,
        std::io::ErrorKind::TimedOut => Outcome::Timeout,
        _ => Outcome::Error,
    }
}

/// Connects over `transport`, with a timeout.
pub async fn connect(
    addr: SocketAddr,
    transport: Transport,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let s = sock::socket(&addr, transport)?;
    s.set_nonblocking(true)?;
    let std_stream: std::net::TcpStream = s.into();
    let ts = TcpSocket::from_std_stream(std_stream);
    match tokio::time::timeout(timeout, ts.connect(addr)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no connection to {addr} within {timeout:?}"),
        )),
    }
}

/// Connects a test's main connection and records it, with a second descriptor to read the
/// socket's final state; on failure the returned run holds the outcome.
pub async fn open(
    addr: SocketAddr,
    transport: Transport,
    timeout: Duration,
    kind: ConnectionKind,
) -> Result<(Run, TcpStream, Option<std::os::fd::OwnedFd>), Run> {
    let mut run = Run::default();
    match connect(addr, transport, timeout).await {
        Ok(s) => {
            run.connections.push(view(kind, &s));
            let fd = sock::dup(&s);
            Ok((run, s, fd))
        }
        Err(e) => {
            run.outcome = Some(outcome_of(&e));
            run.error = Some(e.to_string());
            Err(run)
        }
    }
}

/// Writes `bytes` pattern bytes.
pub async fn send_pattern<W: AsyncWrite + Unpin>(w: &mut W, bytes: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0u64;
    while off < bytes {
        let k = (bytes - off).min(buf.len() as u64) as usize;
        proto::fill_pattern(&mut buf[..k], off);
        w.write_all(&buf[..k]).await?;
        off += k as u64;
    }
    w.flush().await
}

/// Reads to the end; returns the SHA-256 of what arrived and its length.
pub async fn read_digest<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        got += n as u64;
    }
    Ok((hex::encode(h.finalize()), got))
}

/// The client's view of a connected socket.
pub fn view(kind: ConnectionKind, s: &TcpStream) -> ConnectionView {
    let mut v =
        ConnectionView { kind, local: s.local_addr().ok(), peer: s.peer_addr().ok(), ..Default::default() };
    sock::fill_view(s, &mut v);
    v
}

async fn read_line<R: AsyncRead + Unpin>(r: &mut BufReader<R>, limit: usize) -> std::io::Result<String> {
    let mut line = String::new();
    let mut limited = r.take(limit as u64);
    limited.read_line(&mut line).await?;
    Ok(line)
}

/// Sends a preamble and, for `up`, `bytes` pattern bytes; for `down`, reads what the server sends.
/// Works over any stream (plain or TLS).
pub async fn bulk_over<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    test_id: &str,
    mode: BulkMode,
    bytes: u64,
    run: &mut Run,
) -> std::io::Result<()> {
    let (rd, mut wr) = tokio::io::split(stream);
    let mut rd = BufReader::new(rd);
    wr.write_all(Preamble { test_id: test_id.into(), mode, bytes }.line().as_bytes()).await?;
    match mode {
        BulkMode::Up => {
            send_pattern(&mut wr, bytes).await?;
            let line = read_line(&mut rd, 256).await?;
            run.sent.push((Part::Data, pattern_digest(bytes)));
            let mut parts = line.split_whitespace();
            if parts.next() != Some("OK") {
                return Err(std::io::Error::other(format!("server answered {line:?}")));
            }
        }
        BulkMode::Down => {
            let (digest, got) = read_digest(&mut rd).await?;
            run.received.push((Part::Data, digest, pattern_digest(bytes)));
            if got != bytes {
                return Err(std::io::Error::other(format!("received {got} of {bytes} bytes")));
            }
        }
        BulkMode::Echo => {
            let mut sent = Vec::new();
            let mut echoed = Vec::new();
            for i in 0..20u32 {
                let msg = format!("echo {i} {}\n", "x".repeat((i as usize * 37) % 200));
                wr.write_all(msg.as_bytes()).await?;
                wr.flush().await?;
                let mut back = vec![0u8; msg.len()];
                rd.read_exact(&mut back).await?;
                sent.extend_from_slice(msg.as_bytes());
                echoed.extend_from_slice(&back);
            }
            run.sent.push((Part::Data, sha256_hex(&sent)));
            run.received.push((Part::Echo, sha256_hex(&echoed), sha256_hex(&sent)));
        }
    }
    wr.shutdown().await.ok();
    Ok(())
}

/// handshake: a connection to the bulk port that moves no data.
pub async fn handshake(addr: SocketAddr, transport: Transport, test_id: &str, timeout: Duration) -> Run {
    bulk(addr, transport, test_id, BulkMode::Up, 0, timeout, ConnectionKind::Handshake).await
}

/// bulk / echo: one connection with a preamble.
pub async fn bulk(
    addr: SocketAddr,
    transport: Transport,
    test_id: &str,
    mode: BulkMode,
    bytes: u64,
    timeout: Duration,
    kind: ConnectionKind,
) -> Run {
    let (mut run, stream, fd) = match open(addr, transport, timeout, kind).await {
        Ok(opened) => opened,
        Err(failed) => return failed,
    };
    let res = tokio::time::timeout(timeout * 3, bulk_over(stream, test_id, mode, bytes, &mut run)).await;
    finish(&mut run, res, fd.as_ref());
    run
}

/// Records the end state of the main connection and the outcome.
pub fn finish(
    run: &mut Run,
    res: Result<std::io::Result<()>, tokio::time::error::Elapsed>,
    fd: Option<&std::os::fd::OwnedFd>,
) {
    if let (Some(fd), Some(v)) = (fd, run.connections.first_mut()) {
        sock::fill_view(fd, v);
    }
    match res {
        Ok(Ok(())) => run.outcome = Some(Outcome::Ok),
        Ok(Err(e)) => {
            run.outcome = Some(outcome_of(&e));
            run.error = Some(e.to_string());
        }
        Err(_) => {
            run.outcome = Some(Outcome::Timeout);
            run.error = Some("the transfer did not finish in time".into());
        }
    }
}

/// join / add_addr: one MPTCP connection kept busy with echoes while the path manager works,
/// until `done` says so (on the connection's MPTCP_INFO) or `wait` runs out.
pub async fn multipath(
    addr: SocketAddr,
    transport: Transport,
    test_id: &str,
    timeout: Duration,
    wait: Duration,
    kind: ConnectionKind,
    done: impl Fn(&ConnectionView) -> bool,
) -> Run {
    let (mut run, stream, fd) = match open(addr, transport, timeout, kind).await {
        Ok(opened) => opened,
        Err(failed) => return failed,
    };
    let res = tokio::time::timeout(timeout + wait * 2, async {
        let (rd, mut wr) = stream.into_split();
        let mut rd = BufReader::new(rd);
        wr.write_all(Preamble { test_id: test_id.into(), mode: BulkMode::Echo, bytes: 0 }.line().as_bytes())
            .await?;
        let start = tokio::time::Instant::now();
        let mut sent = Vec::new();
        let mut echoed = Vec::new();
        let mut i = 0u32;
        while start.elapsed() < wait {
            let msg = format!("{} {i}\n", kind.as_str());
            wr.write_all(msg.as_bytes()).await?;
            let mut back = vec![0u8; msg.len()];
            rd.read_exact(&mut back).await?;
            sent.extend_from_slice(msg.as_bytes());
            echoed.extend_from_slice(&back);
            i += 1;
            if let (Some(fd), Some(v)) = (fd.as_ref(), run.connections.first_mut()) {
                sock::fill_view(fd, v);
                if done(v) {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        run.sent.push((Part::Data, sha256_hex(&sent)));
        run.received.push((Part::Echo, sha256_hex(&echoed), sha256_hex(&sent)));
        wr.shutdown().await
    })
    .await;
    finish(&mut run, res, fd.as_ref());
    run
}

/// The request headers of the http test, in the order sent (lower-case names).
pub fn http_headers(host: &str, test_id: &str, body_len: usize) -> Vec<(String, String)> {
    vec![
        ("host".into(), host.into()),
        ("user-agent".into(), concat!("mptcp-probe/", env!("CARGO_PKG_VERSION")).into()),
        ("accept".into(), "*/*".into()),
        (proto::HTTP_TEST_HEADER.into(), test_id.into()),
        ("content-type".into(), "application/octet-stream".into()),
        ("content-length".into(), body_len.to_string()),
        ("connection".into(), "close".into()),
    ]
}

/// The canonical form both ends hash: `name: value\n` per header, in order.
pub fn canonical_headers(h: &[(String, String)]) -> String {
    h.iter().map(|(k, v)| format!("{k}: {v}\n")).collect()
}

/// http: a POST with a body on one connection; the server answers with digests of the headers
/// and body as it received them.
pub async fn http(
    addr: SocketAddr,
    transport: Transport,
    test_id: &str,
    body_len: usize,
    timeout: Duration,
) -> Run {
    let (mut run, mut stream, fd) = match open(addr, transport, timeout, ConnectionKind::Http).await {
        Ok(opened) => opened,
        Err(failed) => return failed,
    };
    let host = match addr {
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        SocketAddr::V4(a) => a.to_string(),
    };
    let res = tokio::time::timeout(timeout * 3, async {
        let mut body = vec![0u8; body_len];
        proto::fill_pattern(&mut body, 0);
        let headers = http_headers(&host, test_id, body_len);
        let mut req = String::from("POST /probe HTTP/1.1\r\n");
        for (k, v) in &headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.flush().await?;
        let mut resp = Vec::new();
        stream.read_to_end(&mut resp).await?;
        let text = String::from_utf8_lossy(&resp);
        let (head, json) =
            text.split_once("\r\n\r\n").ok_or_else(|| std::io::Error::other("malformed HTTP response"))?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(std::io::Error::other(format!(
                "server answered {}",
                head.lines().next().unwrap_or("")
            )));
        }
        let v: serde_json::Value = serde_json::from_str(json.trim()).map_err(|e| {
            std::io::Error::other(format!("the server's answer is not the expected JSON: {e}"))
        })?;
        let headers_sent = sha256_hex(canonical_headers(&headers).as_bytes());
        run.sent.push((Part::Headers, headers_sent.clone()));
        run.sent.push((Part::Body, sha256_hex(&body)));
        // The server's answer says what it received; compare here too, so that a change is seen
        // even when the control query fails.
        let got_headers = v["headers_sha256"].as_str().unwrap_or_default().to_string();
        let got_body = v["body_sha256"].as_str().unwrap_or_default().to_string();
        run.received.push((Part::HeadersEcho, got_headers, headers_sent));
        run.received.push((Part::BodyEcho, got_body, sha256_hex(&body)));
        Ok(())
    })
    .await;
    finish(&mut run, res, fd.as_ref());
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_digest_matches_a_one_shot_digest() {
        let mut buf = vec![0u8; 200_000];
        proto::fill_pattern(&mut buf, 0);
        assert_eq!(pattern_digest(200_000), sha256_hex(&buf));
        assert_eq!(pattern_digest(0), sha256_hex(&[]));
    }

    #[test]
    fn canonical_headers_are_ordered_lines() {
        let h = http_headers("203.0.113.2:80", "t1", 3);
        let c = canonical_headers(&h);
        assert!(c.starts_with("host: 203.0.113.2:80\n"));
        assert!(c.contains("x-mptcp-probe-test: t1\n"));
        assert!(c.ends_with("connection: close\n"));
    }

    #[test]
    fn io_errors_map_to_outcomes() {
        use std::io::{Error, ErrorKind};
        assert_eq!(outcome_of(&Error::from(ErrorKind::ConnectionRefused)), Outcome::Refused);
        assert_eq!(outcome_of(&Error::from(ErrorKind::ConnectionReset)), Outcome::Reset);
        assert_eq!(outcome_of(&Error::from(ErrorKind::TimedOut)), Outcome::Timeout);
        assert_eq!(outcome_of(&Error::other("x")), Outcome::Error);
    }
}
