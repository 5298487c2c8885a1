//! The server end to end on loopback: started in-process on ephemeral ports, every service
//! exercised by real clients over MPTCP sockets, and what the control API recorded compared with
//! what the clients sent and saw.

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use http_body_util::{BodyExt, Empty, Full};
use hyper::{body::Bytes, client::conn::http1, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::{pki_types::ServerName, ClientConfig, RootCertStore};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpSocket, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};
use tokio_rustls::TlsConnector;

use super::*;
use mptcp_probe_model::{ConnectionKind, Part, Subtype, ViewSource};

use crate::protocol::{fill_pattern, BulkMode, Preamble, ServerReport, HTTP_TEST_HEADER};

/// Every test finishes well within this, or fails.
const TEST_LIMIT: Duration = Duration::from_secs(10);

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_LIMIT, f).await.expect("test took too long")
}

fn args() -> ServeOptions {
    ServeOptions {
        listen: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        control_port: 0,
        ftp_port: 0,
        http_port: 0,
        tls_port: 0,
        bulk_port: 0,
        echo_port: 0,
        tls_name: Vec::new(),
        no_observer: true,
    }
}

struct Running {
    ports: BTreeMap<String, u16>,
    cert: rustls::pki_types::CertificateDer<'static>,
    fingerprint: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    fn addr(&self, service: Service) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.ports[service.name()])
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.expect("server task");
    }
}

fn start() -> Running {
    start_with(&args(), None)
}

fn start_with(args: &ServeOptions, source: Option<Arc<dyn HandshakeSource>>) -> Running {
    let server = Server::bind(args, source).expect("bind on loopback");
    let ports = server.ports().clone();
    let cert = server.state.tls.certificate().clone();
    let fingerprint = server.state.tls.fingerprint().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    Running { ports, cert, fingerprint, stop: Some(stop), task }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    let s = sock::socket(&addr, Transport::Mptcp).expect("MPTCP socket");
    s.set_nonblocking(true).unwrap();
    let stream = TcpSocket::from_std_stream(s.into()).connect(addr).await.expect("connect");
    assert_eq!(sock::is_mptcp(&stream), Some(true), "loopback MPTCP connection to {addr}");
    stream
}

fn pattern(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    fill_pattern(&mut v, 0);
    v
}

/// Data that is not the pattern, so that an echo of the pattern would not pass for it.
fn noise(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i.wrapping_mul(31) % 251) as u8).collect()
}

/// Control queries come from 127.0.0.2, so that they are never counted against (or refused by)
/// the per-address limit the test connections from 127.0.0.1 are under.
async fn control_get(r: &Running, path: &str) -> (StatusCode, serde_json::Value) {
    let s = TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = s.connect(r.addr(Service::Control)).await.unwrap();
    let (mut tx, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::get(path).header("host", "127.0.0.1").body(Empty::<Bytes>::new()).unwrap();
    let resp = tx.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).expect("JSON answer"))
}

async fn report(r: &Running, id: &str) -> ServerReport {
    let (status, v) = control_get(r, &format!("/v1/tests/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    serde_json::from_value(v).unwrap()
}

/// Checks what every recorded view must show for a loopback MPTCP connection.
fn assert_mptcp(v: &ConnectionView, kind: ConnectionKind) {
    assert_eq!(v.kind, kind);
    assert_eq!(v.is_mptcp, Some(true), "{kind}: {v:?}");
    assert_eq!(v.fallback, Some(false), "{kind}");
    assert!(v.subflows.is_some(), "{kind}: MPTCP_INFO read");
    assert!(v.snd_mss.is_some_and(|m| m > 0), "{kind}: TCP_INFO read");
    assert_eq!(v.error, None, "{kind}");
    // No observer here; MPTCP listeners keep no saved SYN on the kernels this runs on, but where
    // one does, it must show the MP_CAPABLE SYN.
    if let Some(h) = &v.handshake {
        assert_eq!((h.source, h.syn_mptcp), (ViewSource::SavedSyn, Some(Subtype::MpCapable)));
    }
}

#[tokio::test]
async fn http_get_and_post_are_answered_and_recorded() {
    let srv = start();
    bounded(async {
        let stream = connect(srv.addr(Service::Http)).await;
        let client = stream.local_addr().unwrap();
        let (mut tx, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);

        let get = Request::get("/probe?bytes=100000")
            .header("host", "127.0.0.1")
            .header(HTTP_TEST_HEADER, "http-1")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = tx.send_request(get).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-length"], "100000");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.as_ref(), pattern(100_000).as_slice());

        let sent = noise(300_000);
        let post = Request::post("/probe")
            .header("Host", "127.0.0.1")
            .header(HTTP_TEST_HEADER, "http-1")
            .header("content-type", "application/octet-stream")
            .header("content-length", "300000")
            .body(Full::new(Bytes::from(sent.clone())))
            .unwrap();
        let resp = tx.send_request(post).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let json = resp.into_body().collect().await.unwrap().to_bytes();
        let echo: http::PostEcho = serde_json::from_slice(&json).unwrap();
        let headers = concat!(
            "host: 127.0.0.1\n",
            "x-mptcp-probe-test: http-1\n",
            "content-type: application/octet-stream\n",
            "content-length: 300000\n"
        );
        assert_eq!(echo.test_id, "http-1");
        assert_eq!(echo.headers_sha256, sha256_hex(headers.as_bytes()));
        assert_eq!(echo.body_sha256, sha256_hex(&sent));
        assert_eq!(echo.body_bytes, 300_000);

        // Requests the server refuses, on the same connection. The ones that name a valid test
        // are recorded under it: one connection, one view per test it named.
        for (req, status) in [
            (Request::get("/probe?bytes=1").header("host", "h"), StatusCode::BAD_REQUEST),
            (Request::get("/probe?bytes=1").header(HTTP_TEST_HEADER, "a/b"), StatusCode::BAD_REQUEST),
            (Request::get("/other").header(HTTP_TEST_HEADER, "http-2"), StatusCode::NOT_FOUND),
            (Request::get("/probe").header(HTTP_TEST_HEADER, "http-2"), StatusCode::BAD_REQUEST),
            (Request::delete("/probe").header(HTTP_TEST_HEADER, "http-2"), StatusCode::METHOD_NOT_ALLOWED),
            (
                Request::get(format!("/probe?bytes={}", proto::MAX_BULK_BYTES + 1))
                    .header(HTTP_TEST_HEADER, "http-2"),
                StatusCode::BAD_REQUEST,
            ),
        ] {
            let resp = tx.send_request(req.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
            assert_eq!(resp.status(), status);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(err["error"].is_string());
        }
        let r2 = report(&srv, "http-2").await;
        assert_eq!(r2.connections.len(), 1);
        assert_eq!(
            (r2.connections[0].peer, r2.connections[0].notes["requests"].as_str()),
            (Some(client), "3")
        );
        assert_eq!((r2.connections[0].bytes_sent, r2.connections[0].bytes_received), (0, 0));

        let r = report(&srv, "http-1").await;
        assert_eq!(r.test_id, "http-1");
        assert!(!r.observer);
        assert_eq!(r.connections.len(), 1, "one connection, however many requests");
        let v = &r.connections[0];
        assert_mptcp(v, ConnectionKind::Http);
        assert_eq!(v.peer, Some(client));
        assert_eq!(v.local, Some(srv.addr(Service::Http)));
        assert_eq!(v.digests[&Part::Headers], echo.headers_sha256);
        assert_eq!(v.digests[&Part::Body], sha256_hex(&sent));
        assert_eq!(v.digests[&Part::Sent], sha256_hex(&pattern(100_000)));
        assert_eq!(v.bytes_received, 300_000);
        assert_eq!(v.bytes_sent, 100_000 + json.len() as u64);
        assert_eq!(v.notes["requests"], "2");
        assert_eq!(v.notes["method"], "POST");
        assert_eq!(v.notes["http_version"], "HTTP/1.1");
    })
    .await;
    srv.stop().await;
}

/// A line-oriented FTP client that counts what crosses the control connection.
struct Ftp {
    ctl: BufReader<TcpStream>,
    sent: u64,
    received: u64,
}

impl Ftp {
    async fn open(srv: &Running) -> Self {
        Self::over(connect(srv.addr(Service::Ftp)).await).await
    }

    async fn over(stream: TcpStream) -> Self {
        let mut f = Self { ctl: BufReader::new(stream), sent: 0, received: 0 };
        assert!(f.reply().await.starts_with("220 "));
        f
    }

    /// One reply, all lines of a multi-line one.
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            self.ctl.read_line(&mut line).await.unwrap();
            assert!(line.ends_with("\r\n"), "reply line {line:?}");
            self.received += line.len() as u64;
            all.push_str(&line);
            let b = line.as_bytes();
            if b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b' ' {
                return all;
            }
        }
    }

    async fn send(&mut self, cmd: &str) {
        let line = format!("{cmd}\r\n");
        self.sent += line.len() as u64;
        self.ctl.get_mut().write_all(line.as_bytes()).await.unwrap();
    }

    async fn cmd(&mut self, cmd: &str) -> String {
        self.send(cmd).await;
        self.reply().await
    }

    async fn login(&mut self, id: &str) {
        assert!(self.cmd(&format!("USER mpp-{id}")).await.starts_with("331 "));
        assert!(self.cmd("PASS anything").await.starts_with("230 "));
    }
}

/// The address in a 227 reply.
fn pasv_addr(reply: &str) -> SocketAddr {
    let inner =
        reply.split_once('(').and_then(|(_, r)| r.split_once(')')).map(|(a, _)| a).expect("227 (...)");
    ftp::parse_port(inner).expect("h1,h2,h3,h4,p1,p2")
}

#[tokio::test]
async fn ftp_passive_retr_and_stor_are_recorded_per_connection() {
    let srv = start();
    bounded(async {
        let mut f = Ftp::open(&srv).await;
        assert!(f.cmd("PWD").await.starts_with("530 "), "nothing before login");
        assert!(f.cmd("USER anonymous").await.starts_with("530 "));
        assert!(f.cmd("PASS x").await.starts_with("503 "));
        f.login("ftp-1").await;
        assert_eq!(f.cmd("SYST").await, "215 UNIX Type: L8\r\n");
        assert_eq!(f.cmd("FEAT").await, "211-Features:\r\n EPSV\r\n EPRT\r\n SIZE\r\n211 End\r\n");
        assert!(f.cmd("TYPE I").await.starts_with("200 "));
        assert!(f.cmd("TYPE X").await.starts_with("504 "));
        assert_eq!(f.cmd("PWD").await, "257 \"/\" is the current directory\r\n");
        assert_eq!(f.cmd("SIZE probe-123").await, "213 123\r\n");
        assert!(f.cmd("SIZE /etc/passwd").await.starts_with("550 "));
        assert!(f.cmd("RETR probe-10").await.starts_with("425 "), "no data connection set up");
        assert!(f.cmd("MKD x").await.starts_with("502 "));

        // RETR over PASV.
        let reply = f.cmd("PASV").await;
        assert!(reply.starts_with("227 "), "{reply}");
        let data_addr = pasv_addr(&reply);
        assert_eq!(data_addr.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST), "the address the client reached");
        assert!((proto::port::FTP_PASSIVE_FIRST..=proto::port::FTP_PASSIVE_LAST).contains(&data_addr.port()));
        let mut data = connect(data_addr).await;
        let retr_client = data.local_addr().unwrap();
        f.send("RETR probe-50000").await;
        assert!(f.reply().await.starts_with("150 "));
        let mut got = Vec::new();
        data.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, pattern(50_000));
        assert_eq!(f.reply().await, "226 Transfer complete\r\n");

        // STOR over EPSV.
        let reply = f.cmd("EPSV").await;
        let port: u16 = reply
            .strip_prefix("229 Entering Extended Passive Mode (|||")
            .and_then(|r| r.strip_suffix("|)\r\n"))
            .and_then(|p| p.parse().ok())
            .expect("229 (|||port|)");
        let mut data = connect(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)).await;
        f.send("STOR upload.bin").await;
        assert!(f.reply().await.starts_with("150 "));
        let up = noise(70_000);
        data.write_all(&up).await.unwrap();
        data.shutdown().await.unwrap();
        assert_eq!(
            f.reply().await,
            format!("226 Transfer complete: 70000 bytes, sha256 {}\r\n", sha256_hex(&up))
        );
        drop(data);
        assert_eq!(f.cmd("QUIT").await, "221 Goodbye\r\n");

        let r = report(&srv, "ftp-1").await;
        let kinds: Vec<&str> = r.connections.iter().map(|v| v.kind.as_str()).collect();
        assert_eq!(kinds, ["ftp-control", "ftp-data", "ftp-data"]);
        let (ctl, retr, stor) = (&r.connections[0], &r.connections[1], &r.connections[2]);
        assert_mptcp(ctl, ConnectionKind::FtpControl);
        assert_eq!(ctl.bytes_received, f.sent, "every command byte");
        assert_eq!(ctl.bytes_sent, f.received, "every reply byte, the goodbye included");
        assert_mptcp(retr, ConnectionKind::FtpData);
        assert_eq!(retr.peer, Some(retr_client));
        assert_eq!(retr.local, Some(data_addr));
        assert_eq!(retr.notes["data_mode"], "passive");
        assert_eq!(retr.notes["command"], "RETR probe-50000");
        assert_eq!((retr.bytes_sent, retr.bytes_received), (50_000, 0));
        assert_eq!(retr.digests[&Part::Sent], sha256_hex(&pattern(50_000)));
        assert_mptcp(stor, ConnectionKind::FtpData);
        assert_eq!(stor.notes["command"], "STOR upload.bin");
        assert_eq!((stor.bytes_sent, stor.bytes_received), (0, 70_000));
        assert_eq!(stor.digests[&Part::Data], sha256_hex(&up));
    })
    .await;
    srv.stop().await;
}

#[tokio::test]
async fn ftp_active_mode_over_plain_tcp_connects_back_over_plain_tcp() {
    let srv = start();
    bounded(async {
        let addr = srv.addr(Service::Ftp);
        let ctl = TcpStream::connect(addr).await.expect("plain TCP control connection");
        assert_eq!(sock::is_mptcp(&ctl), Some(false));
        let mut f = Ftp::over(ctl).await;
        f.login("ftp-tcp").await;
        // An MPTCP listener accepts plain TCP too: what the server opens is what is checked.
        let l = TcpListener::from_std(
            sock::listener(&"127.0.0.1:0".parse().unwrap(), Transport::Mptcp, 4).unwrap(),
        )
        .unwrap();
        let here = l.local_addr().unwrap();
        let port_arg = format!("127,0,0,1,{},{}", here.port() >> 8, here.port() & 0xff);
        assert_eq!(f.cmd(&format!("PORT {port_arg}")).await, "200 PORT command successful\r\n");
        f.send("RETR probe-100").await;
        let (mut data, _) = l.accept().await.unwrap();
        assert_eq!(sock::is_mptcp(&data), Some(false), "a plain-TCP test's data connection is plain TCP");
        let mut got = Vec::new();
        data.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, pattern(100));
        assert!(f.reply().await.starts_with("150 "));
        assert_eq!(f.reply().await, "226 Transfer complete\r\n");
        let r = report(&srv, "ftp-tcp").await;
        assert!(r.connections.iter().all(|c| c.is_mptcp == Some(false)), "{:?}", r.connections);
    })
    .await;
    srv.stop().await;
}

#[tokio::test]
async fn ftp_active_mode_connects_back_only_to_the_client() {
    let srv = start();
    bounded(async {
        let mut f = Ftp::open(&srv).await;
        f.login("ftp-2").await;
        let l = TcpListener::from_std(
            sock::listener(&"127.0.0.1:0".parse().unwrap(), Transport::Mptcp, 4).unwrap(),
        )
        .unwrap();
        let here = l.local_addr().unwrap();

        // PORT, then RETR: the server connects to us.
        let port_arg = format!("127,0,0,1,{},{}", here.port() >> 8, here.port() & 0xff);
        assert_eq!(f.cmd(&format!("PORT {port_arg}")).await, "200 PORT command successful\r\n");
        f.send("RETR probe-1000").await;
        let (mut data, from) = l.accept().await.unwrap();
        assert_eq!(sock::is_mptcp(&data), Some(true));
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(from.port(), 20, "root may bind the FTP data port");
        }
        assert!(f.reply().await.starts_with("150 "));
        let mut got = Vec::new();
        data.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, pattern(1000));
        assert_eq!(f.reply().await, "226 Transfer complete\r\n");
        let v = &report(&srv, "ftp-2").await.connections[0];
        assert_eq!(v.notes["port_command"], port_arg);
        assert_eq!(v.digests[&Part::PortCommand], sha256_hex(port_arg.as_bytes()));
        assert!(!v.notes.contains_key("port_refused"));

        // Another address: refused without any connection attempt, and recorded.
        assert!(f.cmd("PORT 192,0,2,9,4,1").await.starts_with("504 "));
        let v = &report(&srv, "ftp-2").await.connections[0];
        assert_eq!(v.notes["port_command"], "192,0,2,9,4,1");
        assert_eq!(
            v.notes["port_refused"],
            "192.0.2.9:1025: active mode connects only to the control connection's peer 127.0.0.1"
        );
        assert!(f.cmd("RETR probe-1").await.starts_with("425 "), "the refused PORT left nothing pending");
        assert!(f.cmd("EPRT |2|::1|5000|").await.starts_with("504 "), "IPv6 is not the peer either");
        assert!(f.cmd("PORT 127,0,0,1,0,22").await.starts_with("504 "), "privileged port");
        assert!(f.cmd("PORT 127,0,0,1").await.starts_with("501 "));
        assert!(f.cmd("EPRT |7|x|1|").await.starts_with("522 "));

        // EPRT, then STOR.
        let eprt_arg = format!("|1|127.0.0.1|{}|", here.port());
        assert_eq!(f.cmd(&format!("EPRT {eprt_arg}")).await, "200 EPRT command successful\r\n");
        f.send("STOR up").await;
        let (mut data, _) = l.accept().await.unwrap();
        assert!(f.reply().await.starts_with("150 "));
        let up = noise(5000);
        data.write_all(&up).await.unwrap();
        data.shutdown().await.unwrap();
        assert_eq!(
            f.reply().await,
            format!("226 Transfer complete: 5000 bytes, sha256 {}\r\n", sha256_hex(&up))
        );
        assert!(f.cmd("QUIT").await.starts_with("221 "));

        let r = report(&srv, "ftp-2").await;
        let kinds: Vec<&str> = r.connections.iter().map(|v| v.kind.as_str()).collect();
        assert_eq!(kinds, ["ftp-control", "ftp-data", "ftp-data"]);
        let ctl = &r.connections[0];
        assert_eq!(ctl.notes["port_command"], eprt_arg);
        assert_eq!(ctl.digests[&Part::PortCommand], sha256_hex(eprt_arg.as_bytes()));
        for d in &r.connections[1..] {
            assert_mptcp(d, ConnectionKind::FtpData);
            assert_eq!(d.notes["data_mode"], "active");
            assert_eq!(d.peer, Some(here));
        }
        assert_eq!(r.connections[1].digests[&Part::Sent], sha256_hex(&pattern(1000)));
        assert_eq!(r.connections[2].digests[&Part::Data], sha256_hex(&up));
        assert_eq!(r.connections[1].notes["source_port"], r.connections[1].local.unwrap().port().to_string());
    })
    .await;
    srv.stop().await;
}

/// Runs one preamble exchange over any stream; what came back.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: S, p: &Preamble, data: &[u8]) -> Vec<u8> {
    let (mut rd, mut wr) = tokio::io::split(s);
    let write = async {
        wr.write_all(p.line().as_bytes()).await?;
        wr.write_all(data).await?;
        wr.shutdown().await
    };
    let read = async {
        let mut back = Vec::new();
        rd.read_to_end(&mut back).await.map(|_| back)
    };
    let (w, r) = tokio::join!(write, read);
    w.expect("send");
    r.expect("receive")
}

fn preamble(id: &str, mode: BulkMode, bytes: u64) -> Preamble {
    Preamble { test_id: id.into(), mode, bytes }
}

#[tokio::test]
async fn bulk_and_echo_move_the_bytes_asked_for() {
    let srv = start();
    bounded(async {
        let up = noise(1 << 20);
        let back =
            exchange(connect(srv.addr(Service::Bulk)).await, &preamble("bulk-1", BulkMode::Up, 1 << 20), &up)
                .await;
        assert_eq!(String::from_utf8(back).unwrap(), format!("OK {} {}\n", 1 << 20, sha256_hex(&up)));
        let back = exchange(
            connect(srv.addr(Service::Bulk)).await,
            &preamble("bulk-1", BulkMode::Down, 777_777),
            &[],
        )
        .await;
        assert_eq!(back, pattern(777_777));
        let short =
            exchange(connect(srv.addr(Service::Bulk)).await, &preamble("bulk-1", BulkMode::Up, 100), b"abc")
                .await;
        assert_eq!(String::from_utf8(short).unwrap(), "ERR short transfer: 3 of 100 bytes\n");
        let msg = noise(10_000);
        let back =
            exchange(connect(srv.addr(Service::Echo)).await, &preamble("echo-1", BulkMode::Echo, 0), &msg)
                .await;
        assert_eq!(back, msg);

        let r = report(&srv, "bulk-1").await;
        assert_eq!(r.connections.len(), 3);
        let (u, d, s) = (&r.connections[0], &r.connections[1], &r.connections[2]);
        assert_mptcp(u, ConnectionKind::Bulk);
        assert_eq!((u.bytes_received, u.notes["mode"].as_str()), (1 << 20, "up"));
        assert_eq!(u.digests[&Part::Data], sha256_hex(&up));
        assert_mptcp(d, ConnectionKind::Bulk);
        assert_eq!((d.bytes_sent, d.notes["mode"].as_str()), (777_777, "down"));
        assert_eq!(d.digests[&Part::Sent], sha256_hex(&pattern(777_777)));
        assert_eq!(s.error.as_deref(), Some("short transfer: 3 of 100 bytes"));
        assert_eq!(s.digests[&Part::Data], sha256_hex(b"abc"));
        let e = &report(&srv, "echo-1").await.connections[0];
        assert_mptcp(e, ConnectionKind::Echo);
        assert_eq!((e.bytes_received, e.bytes_sent), (10_000, 10_000));
        assert_eq!(e.digests[&Part::Data], sha256_hex(&msg));
        assert_eq!(e.digests[&Part::Sent], sha256_hex(&msg));
    })
    .await;
    srv.stop().await;
}

#[tokio::test]
async fn bad_preambles_get_an_error_line_and_nothing_is_recorded() {
    let srv = start();
    bounded(async {
        for (input, answer) in [
            (b"HELLO\n".to_vec(), "ERR not an MPP1 preamble\n".to_string()),
            (vec![b'a'; 300], format!("ERR preamble longer than {MAX} bytes\n", MAX = proto::MAX_PREAMBLE)),
            (
                b"MPP1 bad-1 up 999999999999\n".to_vec(),
                format!("ERR at most {} bytes per test\n", proto::MAX_BULK_BYTES),
            ),
        ] {
            let mut s = connect(srv.addr(Service::Bulk)).await;
            s.write_all(&input).await.unwrap();
            // The server closes with input unread, which may end in a reset after the answer.
            let mut back = Vec::new();
            let mut buf = [0u8; 256];
            while let Ok(n @ 1..) = s.read(&mut buf).await {
                back.extend_from_slice(&buf[..n]);
            }
            assert_eq!(String::from_utf8(back).unwrap(), answer);
        }
        let (status, v) = control_get(&srv, "/v1/tests/bad-1").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(v["error"], "unknown test id (never seen here, or expired)");
    })
    .await;
    srv.stop().await;
}

#[tokio::test]
async fn tls_handshakes_and_carries_bulk_and_echo() {
    let srv = start();
    bounded(async {
        let mut roots = RootCertStore::empty();
        roots.add(srv.cert.clone()).unwrap();
        let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tls = TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from(tls::DEFAULT_NAME).unwrap();
        let open = |name: ServerName<'static>| {
            let tls = tls.clone();
            let addr = srv.addr(Service::Tls);
            async move { tls.connect(name, connect(addr).await).await.expect("TLS handshake") }
        };

        let up = noise(200_000);
        let back = exchange(open(name.clone()).await, &preamble("tls-1", BulkMode::Up, 200_000), &up).await;
        assert_eq!(String::from_utf8(back).unwrap(), format!("OK 200000 {}\n", sha256_hex(&up)));
        let back = exchange(open(name.clone()).await, &preamble("tls-1", BulkMode::Down, 150_000), &[]).await;
        assert_eq!(back, pattern(150_000));
        // The listen address is in the certificate too.
        let by_ip = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        let msg = b"hello over TLS\n".repeat(50);
        let back = exchange(open(by_ip).await, &preamble("tls-1", BulkMode::Echo, 0), &msg).await;
        assert_eq!(back, msg);

        let r = report(&srv, "tls-1").await;
        assert_eq!(r.connections.len(), 3);
        for v in &r.connections {
            assert_mptcp(v, ConnectionKind::Tls);
            assert_eq!(v.notes["tls_version"], "TLSv1_3");
            assert_eq!(v.notes["tls_certificate_sha256"], srv.fingerprint);
            assert!(v.notes["tls_cipher_suite"].starts_with("TLS13_"));
        }
        assert_eq!(r.connections[0].notes["tls_sni"], tls::DEFAULT_NAME);
        assert!(!r.connections[2].notes.contains_key("tls_sni"), "no SNI for an IP address");
        assert_eq!(r.connections[0].digests[&Part::Data], sha256_hex(&up));
        assert_eq!(r.connections[0].bytes_received, 200_000);
        assert_eq!(r.connections[1].digests[&Part::Sent], sha256_hex(&pattern(150_000)));
        assert_eq!(r.connections[2].digests[&Part::Data], sha256_hex(&msg));
    })
    .await;
    srv.stop().await;
}

#[tokio::test]
async fn the_control_api_describes_the_server() {
    let srv = start();
    bounded(async {
        let (status, v) = control_get(&srv, "/v1/info").await;
        assert_eq!(status, StatusCode::OK);
        let info: proto::ServerInfo = serde_json::from_value(v).unwrap();
        assert_eq!(info.protocol, proto::PROTOCOL_VERSION);
        assert_eq!(info.server_version, env!("CARGO_PKG_VERSION"));
        assert!(!info.observer);
        assert_eq!(info.ports, srv.ports);
        assert_eq!(info.ports.len(), 6);
        assert!(info.ports.values().all(|&p| p != 0), "bound ports, not the 0 asked for");
        assert!(info.announced.is_empty());

        let (status, v) = control_get(&srv, "/v1/tests/never-seen").await;
        assert_eq!(
            (status, v["error"].as_str()),
            (StatusCode::NOT_FOUND, Some("unknown test id (never seen here, or expired)"))
        );
        let (status, v) = control_get(&srv, "/v1/tests/a%20b").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(v["error"].as_str().unwrap().starts_with("invalid test id"));
        let (status, _) = control_get(&srv, "/v2/anything").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, v) = control_get(&srv, "/v1/stats").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["connections_refused"], 0);
        assert_eq!(v["tests"], 0);
    })
    .await;
    srv.stop().await;
}

/// An observer that has seen every connection: the SYN's ISN is the peer's port, to show which
/// connection it was asked about.
struct SeesAll;

impl HandshakeSource for SeesAll {
    fn handshake(&self, local: SocketAddr, peer: SocketAddr) -> Option<mptcp_probe_model::HandshakeView> {
        assert!(local.is_ipv4() && peer.is_ipv4(), "addresses in canonical form");
        Some(mptcp_probe_model::HandshakeView {
            source: ViewSource::Observer,
            syn_mptcp: Some(Subtype::MpCapable),
            syn_isn: Some(u32::from(peer.port())),
            ..Default::default()
        })
    }
}

#[tokio::test]
async fn an_observer_supplies_the_handshake_views() {
    let srv = start_with(&ServeOptions { no_observer: false, ..args() }, Some(Arc::new(SeesAll)));
    bounded(async {
        let (_, info) = control_get(&srv, "/v1/info").await;
        assert_eq!(info["observer"], true);
        let stream = connect(srv.addr(Service::Bulk)).await;
        let client = stream.local_addr().unwrap();
        let back = exchange(stream, &preamble("obs-1", BulkMode::Up, 0), &[]).await;
        assert_eq!(String::from_utf8(back).unwrap(), format!("OK 0 {}\n", sha256_hex(&[])));
        // The lookup runs beside the connection; it answers at its first poll here.
        let mut seen = None;
        for _ in 0..50 {
            let r = report(&srv, "obs-1").await;
            assert!(r.observer);
            seen = r.connections[0].handshake.clone();
            if seen.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let h = seen.expect("handshake from the observer");
        assert_eq!((h.source, h.syn_mptcp), (ViewSource::Observer, Some(Subtype::MpCapable)));
        assert_eq!(h.syn_isn, Some(u32::from(client.port())));
    })
    .await;
    srv.stop().await;
    // --no-observer wins over an observer handed in.
    let srv = start_with(&args(), Some(Arc::new(SeesAll)));
    let (_, info) = bounded(control_get(&srv, "/v1/info")).await;
    assert_eq!(info["observer"], false);
    srv.stop().await;
}

#[tokio::test]
async fn one_address_gets_at_most_64_connections() {
    let srv = start();
    bounded(async {
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS_PER_IP {
            held.push(connect(srv.addr(Service::Echo)).await);
        }
        // Each held connection is served: it echoes.
        held[0].write_all(b"MPP1 limit-0 echo 0\nx").await.unwrap();
        let mut one = [0u8; 1];
        held[0].read_exact(&mut one).await.unwrap();
        // The next one is accepted by the kernel and closed by the server at once.
        let mut extra = connect(srv.addr(Service::Echo)).await;
        let mut buf = [0u8; 1];
        assert_eq!(extra.read(&mut buf).await.unwrap(), 0);
        // Another address is not affected (the control query comes from 127.0.0.2).
        let (_, stats) = control_get(&srv, "/v1/stats").await;
        assert_eq!(stats["connections_refused"], 1);
        // Places come back as the server sees the connections end.
        drop(held);
        let mut admitted = None;
        for _ in 0..100 {
            let mut s = connect(srv.addr(Service::Echo)).await;
            s.write_all(b"MPP1 limit-1 echo 0\n+").await.unwrap();
            if s.read(&mut buf).await.unwrap_or(0) == 1 {
                admitted = Some(buf[0]);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(admitted, Some(b'+'), "a new connection is served once the old ones are gone");
    })
    .await;
    srv.stop().await;
}

#[tokio::test]
async fn ports_that_cannot_be_bound_are_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut a = args();
    a.bulk_port = port;
    let e = Server::bind(&a, None).err().expect("port in use").to_string();
    assert_eq!(
        e,
        format!(
            "port {port}: address already in use (is another server running on it?) \
             (bulk on 127.0.0.1:{port})"
        )
    );
    let mut a = args();
    a.http_port = 8080;
    a.control_port = 8080;
    let e = Server::bind(&a, None).err().expect("same port twice").to_string();
    assert_eq!(e, "port 8080 is given for both http and control");
    let mut a = args();
    a.listen = vec!["192.0.2.200".parse().unwrap()];
    let e = Server::bind(&a, None).err().expect("not our address").to_string();
    assert!(
        e.starts_with("port 0: address not available: 192.0.2.200 is not an address of this host"),
        "{e}"
    );
}

#[tokio::test]
async fn stopping_closes_every_listener_and_connection() {
    let srv = start();
    let bulk = srv.addr(Service::Bulk);
    let mut open = connect(bulk).await;
    open.write_all(b"MPP1 stop-1 echo 0\n").await.unwrap();
    bounded(srv.stop()).await;
    let mut buf = [0u8; 1];
    assert!(matches!(open.read(&mut buf).await, Ok(0) | Err(_)), "the connection is closed");
    let refused = TcpStream::connect(bulk).await.expect_err("nothing listens any more");
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
}

#[test]
fn the_ready_line_names_the_ports() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = rt.enter();
    let server = Server::bind(&args(), None).unwrap();
    let line = server.ready_line();
    let p = server.ports().clone();
    assert!(line.starts_with("mptcp-probe serving on 127.0.0.1: "), "{line}");
    for s in ["ftp", "http", "tls", "bulk", "echo", "control"] {
        assert!(
            line.contains(&format!("{s} {},", p[s])) || line.contains(&format!("{s} {} (", p[s])),
            "{line}"
        );
    }
    assert!(line.contains("observer: off"));
}

#[tokio::test]
async fn idle_connections_time_out_but_busy_ones_do_not() {
    let limit = Duration::from_millis(400);
    let (a, mut b) = tokio::io::duplex(64);
    let mut idle = Idle::new(a, limit);
    let started = Instant::now();
    // A byte every 50 ms for 600 ms, longer than the limit, keeps it alive ...
    let feeder = tokio::spawn(async move {
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            b.write_all(b"x").await.unwrap();
        }
        b
    });
    let mut got = 0;
    let mut buf = [0u8; 8];
    while got < 12 {
        got += idle.read(&mut buf).await.expect("not idle while fed");
    }
    let _b = feeder.await.unwrap();
    assert!(started.elapsed() > limit);
    // ... then silence for the limit ends it.
    let quiet = Instant::now();
    let e = idle.read(&mut buf).await.expect_err("idle");
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert!(quiet.elapsed() >= limit - Duration::from_millis(60), "{:?}", quiet.elapsed());
    assert!(quiet.elapsed() < limit * 3);
}

#[tokio::test]
async fn lines_are_bounded() {
    let mut r = BufReader::new(&b"USER x\r\nPASS y\nrest"[..]);
    assert_eq!(read_line(&mut r, 16).await.unwrap(), Some(b"USER x\r\n".to_vec()));
    assert_eq!(read_line(&mut r, 7).await.unwrap(), Some(b"PASS y\n".to_vec()), "exactly the limit");
    assert!(matches!(read_line(&mut r, 4).await, Err(LineError::TooLong(4))));
    let mut r = BufReader::new(&b"abc"[..]);
    assert!(matches!(read_line(&mut r, 3).await, Err(LineError::TooLong(3))), "no room for the newline");
    let mut r = BufReader::new(&b""[..]);
    assert_eq!(read_line(&mut r, 3).await.unwrap(), None);
}
