//! `mptcp-probe serve`: the test server `check` talks to.
//!
//! It listens with MPTCP sockets (which accept plain TCP too) on the ports middleboxes act on (FTP
//! 21, HTTP 80, TLS 443) and on its own bulk and echo ports, records per test id what each
//! connection looked like from here (MPTCP or fallback, addresses as seen, digests of what arrived)
//! and answers questions about a test on a plain-TCP control port. It is meant to be run by anyone
//! on the Internet, so everything it does is bounded: stored observations, connections per client,
//! line and request sizes, idle time, transfer sizes, and FTP active mode connects back only to
//! the client that asked.

mod bulk;
mod control;
mod ftp;
mod handshake;
mod http;
mod limit;
mod store;
mod tls;

#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    future::Future,
    io,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, RawFd},
    pin::Pin,
    sync::{atomic::AtomicU16, Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    signal::unix::{signal, SignalKind},
    task::JoinSet,
    time::{Instant, Sleep},
};

use mptcp_probe_model::{ConnectionKind, ConnectionView, Transport};

use crate::{
    host::sock,
    pipeline::service::ObserverService,
    protocol::{self as proto, HandshakeSource},
};
use limit::{Limiter, Permit};
use store::{Slot, Store};

/// A connection that moves nothing either way for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent connections per client address, across all services.
const MAX_CONNECTIONS_PER_IP: usize = 64;
/// Concurrent connections in all, so that many clients together cannot exhaust descriptors.
const MAX_CONNECTIONS: usize = 4096;
/// Listen backlog of every listener.
const BACKLOG: i32 = 128;

/// What `serve` is asked to do. A port of 0 is any free port.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Addresses to listen on. Empty: `::`, which is dual-stack and covers IPv4.
    pub listen: Vec<IpAddr>,
    pub control_port: u16,
    pub ftp_port: u16,
    pub http_port: u16,
    pub tls_port: u16,
    pub bulk_port: u16,
    pub echo_port: u16,
    /// DNS names or IP addresses for the self-signed TLS certificate. Empty: "mptcp-probe.test"
    /// plus the listen addresses.
    pub tls_name: Vec<String>,
    /// No eBPF observer: handshake views come from the kernel's saved SYN, where it keeps one.
    pub no_observer: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            control_port: proto::port::CONTROL,
            ftp_port: proto::port::FTP,
            http_port: proto::port::HTTP,
            tls_port: proto::port::TLS,
            bulk_port: proto::port::BULK,
            echo_port: proto::port::ECHO,
            tls_name: Vec::new(),
            no_observer: false,
        }
    }
}

/// The services, by the names the control API reports their ports under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    Ftp,
    Http,
    Tls,
    Bulk,
    Echo,
    Control,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Ftp => "ftp",
            Service::Http => "http",
            Service::Tls => "tls",
            Service::Bulk => "bulk",
            Service::Echo => "echo",
            Service::Control => "control",
        }
    }

    /// `ConnectionView::kind` of the connections this service accepts.
    fn kind(self) -> ConnectionKind {
        match self {
            Service::Ftp => ConnectionKind::FtpControl,
            Service::Http => ConnectionKind::Http,
            Service::Tls => ConnectionKind::Tls,
            Service::Bulk => ConnectionKind::Bulk,
            // The control port's connections are not recorded.
            Service::Echo | Service::Control => ConnectionKind::Echo,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("port {port}: {reason} ({service} on {addr})")]
    Bind { port: u16, service: &'static str, addr: SocketAddr, reason: String },
    #[error("port {port} is given for both {first} and {second}")]
    PortTwice { port: u16, first: &'static str, second: &'static str },
    #[error("TLS certificate: {0}")]
    Tls(String),
}

/// Names the usual reasons a port cannot be bound.
fn bind_reason(e: &io::Error, addr: &SocketAddr) -> String {
    match e.raw_os_error() {
        Some(libc::EACCES) if addr.port() < 1024 => {
            "permission denied: binding ports below 1024 needs root or CAP_NET_BIND_SERVICE".into()
        }
        Some(libc::EADDRINUSE) => "address already in use (is another server running on it?)".into(),
        Some(libc::EADDRNOTAVAIL) => {
            format!("address not available: {} is not an address of this host", addr.ip())
        }
        _ => e.to_string(),
    }
}

/// What every connection handler shares.
struct State {
    store: Store,
    limiter: Arc<Limiter>,
    /// The observer's view of handshakes, when one runs.
    source: Option<Arc<dyn HandshakeSource>>,
    tls: tls::Tls,
    /// Bound ports by service name.
    ports: BTreeMap<String, u16>,
    /// Turns through the FTP passive port range: the next one to try is this modulo its size.
    passive_next: AtomicU16,
}

impl State {
    fn info(&self) -> proto::ServerInfo {
        proto::ServerInfo {
            protocol: proto::PROTOCOL_VERSION,
            server_version: env!("CARGO_PKG_VERSION").into(),
            observer: self.source.is_some(),
            ports: self.ports.clone(),
            announced: announced(),
        }
    }
}

struct Bound {
    service: Service,
    listener: TcpListener,
    /// The kernel keeps the SYN of connections to this listener (`TCP_SAVE_SYN` accepted).
    saved_syn: bool,
}

/// A bound server, not yet serving: tests start it on ephemeral ports and read them here.
pub(crate) struct Server {
    state: Arc<State>,
    bound: Vec<Bound>,
    addrs: Vec<IpAddr>,
}

impl Server {
    /// Binds every service on every address (a port given as 0 is picked by the kernel on the
    /// first address and reused on the others), and makes the TLS certificate.
    pub(crate) fn bind(
        args: &ServeOptions,
        source: Option<Arc<dyn HandshakeSource>>,
    ) -> Result<Self, ServeError> {
        let addrs = if args.listen.is_empty() {
            vec![IpAddr::V6(Ipv6Addr::UNSPECIFIED)]
        } else {
            args.listen.clone()
        };
        let wanted = [
            (Service::Ftp, args.ftp_port),
            (Service::Http, args.http_port),
            (Service::Tls, args.tls_port),
            (Service::Bulk, args.bulk_port),
            (Service::Echo, args.echo_port),
            (Service::Control, args.control_port),
        ];
        for (i, (a, pa)) in wanted.iter().enumerate() {
            if let Some((b, _)) = wanted[i + 1..].iter().find(|(_, pb)| *pa != 0 && pb == pa) {
                return Err(ServeError::PortTwice { port: *pa, first: a.name(), second: b.name() });
            }
        }
        let mut bound = Vec::new();
        let mut ports = BTreeMap::new();
        let mut saved_syn_refused = None;
        for (service, port) in wanted {
            let mut port = port;
            for ip in &addrs {
                let addr = SocketAddr::new(*ip, port);
                let b = bind_one(service, &addr, &mut saved_syn_refused).map_err(|e| ServeError::Bind {
                    port,
                    service: service.name(),
                    addr,
                    reason: bind_reason(&e, &addr),
                })?;
                if let Ok(a) = b.listener.local_addr() {
                    port = a.port();
                }
                bound.push(b);
            }
            ports.insert(service.name().to_string(), port);
        }

        let names = if args.tls_name.is_empty() {
            std::iter::once(tls::DEFAULT_NAME.to_string())
                .chain(addrs.iter().filter(|a| !a.is_unspecified()).map(IpAddr::to_string))
                .collect()
        } else {
            args.tls_name.clone()
        };
        let tls = tls::Tls::new(names).map_err(|e| ServeError::Tls(e.to_string()))?;
        // --no-observer wins over an observer handed in.
        let source = if args.no_observer { None } else { source };
        if let (None, Some(e)) = (&source, saved_syn_refused) {
            tracing::info!(
                "the kernel keeps no saved SYN on MPTCP listeners (TCP_SAVE_SYN: {e}); \
                 handshake views need the observer"
            );
        }
        let state = Arc::new(State {
            store: Store::default(),
            limiter: Arc::new(Limiter::new(MAX_CONNECTIONS_PER_IP, MAX_CONNECTIONS)),
            source,
            tls,
            ports,
            passive_next: AtomicU16::new(0),
        });
        Ok(Self { state, bound, addrs })
    }

    fn ports(&self) -> &BTreeMap<String, u16> {
        &self.state.ports
    }

    /// The line printed when the server is ready.
    fn ready_line(&self) -> String {
        let addrs: Vec<String> = self
            .addrs
            .iter()
            .map(|a| match a {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            })
            .collect();
        let p = |s: Service| self.ports().get(s.name()).copied().unwrap_or_default();
        format!(
            "mptcp-probe serving on {}: ftp {}, http {}, tls {}, bulk {}, echo {}, control {} \
             (observer: {}; tls certificate sha256 {})",
            addrs.join(", "),
            p(Service::Ftp),
            p(Service::Http),
            p(Service::Tls),
            p(Service::Bulk),
            p(Service::Echo),
            p(Service::Control),
            if self.state.source.is_some() { "on" } else { "off" },
            self.state.tls.fingerprint(),
        )
    }

    /// Serves until `shutdown` completes; then every listener and connection is dropped.
    async fn serve(self, shutdown: impl Future<Output = ()>) {
        let mut loops = JoinSet::new();
        for b in self.bound {
            loops.spawn(accept_loop(b, self.state.clone()));
        }
        shutdown.await;
        loops.shutdown().await;
    }
}

/// One listener: MPTCP for the test services (with the saved SYN where the kernel keeps it; the
/// error if it refuses goes to `saved_syn_refused`), plain TCP for the control port.
fn bind_one(
    service: Service,
    addr: &SocketAddr,
    saved_syn_refused: &mut Option<io::Error>,
) -> io::Result<Bound> {
    let (listener, saved_syn) = if service == Service::Control {
        (sock::listener(addr, Transport::Tcp, BACKLOG)?, false)
    } else {
        let l = sock::listener(addr, Transport::Mptcp, BACKLOG)?;
        match handshake::enable_saved_syn(&l) {
            Ok(()) => (l, true),
            Err(e) => {
                *saved_syn_refused = Some(e);
                (l, false)
            }
        }
    };
    Ok(Bound { service, listener: TcpListener::from_std(listener)?, saved_syn })
}

/// Starts the server with the observer's handshake view when `source` is given (the hook for the
/// observer service), serves until SIGINT or SIGTERM.
pub async fn run_with(args: ServeOptions, source: Option<Arc<dyn HandshakeSource>>) -> anyhow::Result<()> {
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let server = Server::bind(&args, source)?;
    eprintln!("{}", server.ready_line());
    server
        .serve(async {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        })
        .await;
    tracing::info!("stopped");
    Ok(())
}

/// `mptcp-probe serve`: with the observer where the host allows it (SYN options, ISN and MSS as
/// they arrived), else with the saved SYN where the kernel keeps one.
pub async fn run(args: ServeOptions) -> anyhow::Result<()> {
    let source: Option<Arc<dyn HandshakeSource>> = if args.no_observer {
        None
    } else {
        match ObserverService::start().await {
            Ok(o) => Some(o),
            Err(e) => {
                tracing::warn!("serving without the eBPF observer ({e:#}): handshake views only where the kernel saves SYNs");
                None
            }
        }
    };
    run_with(args, source).await
}

/// The addresses this host's path manager announces (its `signal` endpoints), read at most every
/// ten seconds: `/v1/info` is public, and each reading runs `ip`.
fn announced() -> Vec<String> {
    static CACHE: std::sync::Mutex<Option<(std::time::Instant, Vec<String>)>> = std::sync::Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, list)) = cache.as_ref() {
        if at.elapsed() < Duration::from_secs(10) {
            return list.clone();
        }
    }
    let list: Vec<String> = crate::host::pm::endpoints()
        .map(|e| {
            e.into_iter()
                .filter(|(_, _, f)| f.iter().any(|x| x == "signal"))
                .map(|(_, a, _)| a.to_string())
                .collect()
        })
        .unwrap_or_default();
    *cache = Some((std::time::Instant::now(), list.clone()));
    list
}

/// Accepts connections on one listener; its connection tasks end with it.
async fn accept_loop(b: Bound, state: Arc<State>) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            r = b.listener.accept() => match r {
                Ok((stream, peer)) => {
                    // Excess connections are closed at once; the limiter counts them.
                    let Some(permit) = state.limiter.admit(peer.ip().to_canonical()) else { continue };
                    tasks.spawn(handle(b.service, b.saved_syn, stream, permit, state.clone()));
                }
                // Out of descriptors or memory: accept would fail again at once, so wait a little.
                Err(e) if out_of_resources(&e) => {
                    tracing::warn!("{} port: accept: {e}", b.service.name());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // A connection that went away before it was accepted, and the like.
                Err(e) => tracing::debug!("{} port: accept: {e}", b.service.name()),
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

fn out_of_resources(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

async fn handle(service: Service, saved_syn: bool, stream: TcpStream, permit: Permit, state: Arc<State>) {
    let _permit = permit;
    let rec = || Recorder::start(service.kind(), &stream, saved_syn, &state);
    match service {
        Service::Control => control::serve(stream, state).await,
        Service::Http => {
            let rec = rec();
            http::serve(stream, rec).await
        }
        Service::Ftp => {
            let rec = rec();
            ftp::serve(stream, rec).await
        }
        Service::Tls => {
            let rec = rec();
            tls::serve(stream, rec).await
        }
        Service::Bulk | Service::Echo => {
            let rec = rec();
            let fd = stream.as_raw_fd();
            bulk::serve(Idle::new(stream, IDLE_TIMEOUT), &rec, fd).await
        }
    }
}

/// `addr` with an IPv4-mapped IPv6 address (from a dual-stack socket) shown as IPv4, as the
/// client and the observer see it.
/// One accepted connection's observations. The view starts at accept time; it is stored once the
/// connection names its test (an HTTP connection may name several: one stored view each), and
/// updated in place until the connection ends, so the control port always shows the latest.
struct Recorder {
    state: Arc<State>,
    inner: Mutex<RecorderInner>,
}

struct RecorderInner {
    base: ConnectionView,
    slots: Vec<(String, Slot)>,
}

impl Recorder {
    /// Takes the socket's view right after accept (or connect), the saved SYN if the listener
    /// keeps one, and starts the observer lookup of the handshake.
    fn start(kind: ConnectionKind, stream: &TcpStream, saved_syn: bool, state: &Arc<State>) -> Arc<Self> {
        let mut base = ConnectionView {
            kind,
            local: stream.local_addr().ok().map(sock::canonical),
            peer: stream.peer_addr().ok().map(sock::canonical),
            ..Default::default()
        };
        sock::fill_view(stream, &mut base);
        if saved_syn {
            base.handshake = handshake::saved_syn(stream);
        }
        let (local, peer) = (base.local, base.peer);
        let rec = Arc::new(Self {
            state: state.clone(),
            inner: Mutex::new(RecorderInner { base, slots: Vec::new() }),
        });
        if let (Some(source), Some(local), Some(peer)) = (state.source.clone(), local, peer) {
            let rec = rec.clone();
            tokio::spawn(async move {
                if let Some(h) = handshake::from_observer(source.as_ref(), local, peer).await {
                    rec.set_handshake(h);
                }
            });
        }
        rec
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecorderInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stored view of this connection under `test_id`, created on first use; None when the
    /// test already has as many connections as the store keeps.
    fn attach(&self, test_id: &str) -> Option<Slot> {
        let mut inner = self.lock();
        if let Some((_, slot)) = inner.slots.iter().find(|(id, _)| id == test_id) {
            return Some(slot.clone());
        }
        let slot = self.state.store.attach(test_id, inner.base.clone())?;
        inner.slots.push((test_id.to_string(), slot.clone()));
        Some(slot)
    }

    fn set_handshake(&self, h: mptcp_probe_model::HandshakeView) {
        let mut inner = self.lock();
        inner.base.handshake = Some(h.clone());
        for (_, slot) in &inner.slots {
            store::with(slot, |v| v.handshake = Some(h.clone()));
        }
    }

    fn note(&self, key: &str, value: &str) {
        let mut inner = self.lock();
        inner.base.notes.insert(key.into(), value.into());
        for (_, slot) in &inner.slots {
            store::with(slot, |v| v.notes.insert(key.into(), value.into()));
        }
    }

    /// The connection's view as it is now (no test named).
    fn view(&self) -> ConnectionView {
        self.lock().base.clone()
    }

    /// Whether this server has an observer of its own.
    fn observed(&self) -> bool {
        self.state.source.is_some()
    }

    /// Takes the socket's view again (fallback can happen mid-connection); the latest wins.
    /// Also the data segments received so far, as the observer counted them on the wire.
    fn refresh(&self, fd: RawFd) {
        let mut inner = self.lock();
        // The handshake too: segments of the first flight may arrive after the connection was
        // accepted (an MP_CAPABLE third ACK overtaken by later data).
        let (wire, handshake) = match (&self.state.source, inner.base.local, inner.base.peer) {
            (Some(source), Some(local), Some(peer)) => {
                (source.wire(local, peer), source.handshake(local, peer))
            }
            _ => (None, None),
        };
        let apply = |v: &mut ConnectionView| {
            sock::fill_view(&fd, v);
            if let Some(w) = &wire {
                v.set_wire(w);
            }
            if let Some(h) = &handshake {
                v.handshake = Some(h.clone());
            }
        };
        apply(&mut inner.base);
        for (_, slot) in &inner.slots {
            store::with(slot, |v| apply(v));
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum LineError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("line longer than {0} bytes")]
    TooLong(usize),
}

/// Reads one line, `\n` included, of at most `max` bytes; None at a clean end of stream. What
/// follows the line stays buffered in `r` for the caller.
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, max: usize) -> Result<Option<Vec<u8>>, LineError> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            if line.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended inside a line").into());
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > max || (!done && line.len() + take == max) {
            return Err(LineError::TooLong(max));
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            return Ok(Some(line));
        }
    }
}

/// A stream that fails with `TimedOut` when it makes no progress either way for `limit`.
///
/// One timer serves both directions, so a long download that never reads is not idle. The timer
/// is re-armed only when it fires early, not on every read, to keep bulk transfers cheap. Both
/// directions must be polled from one task (every service here does), since the timer wakes the
/// last one that waited.
struct Idle<S> {
    inner: S,
    limit: Duration,
    deadline: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<S> Idle<S> {
    fn new(inner: S, limit: Duration) -> Self {
        let deadline = Instant::now() + limit;
        Self { inner, limit, deadline, timer: Box::pin(tokio::time::sleep_until(deadline)) }
    }

    fn progress(&mut self) {
        self.deadline = Instant::now() + self.limit;
    }

    /// Pending while within the limit; the error once idle past it.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() >= self.deadline {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("idle for {} s", self.limit.as_secs_f32()),
                ));
            }
            let deadline = self.deadline;
            self.timer.as_mut().reset(deadline);
        }
    }

    /// Passes a ready result through (as progress) or turns a long wait into an error.
    fn settle<T>(&mut self, cx: &mut Context<'_>, p: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match p {
            Poll::Ready(r) => {
                self.progress();
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.settle(cx, p)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.settle(cx, p)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_flush(cx);
        this.settle(cx, p)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.settle(cx, p)
    }
}

/// SHA-256 as lower-case hex, the form every digest in a `ConnectionView` takes.
fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
