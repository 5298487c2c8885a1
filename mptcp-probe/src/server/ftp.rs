//! The FTP test service: a minimal RFC 959 server (with RFC 2428 EPSV/EPRT and RFC 3659 SIZE),
//! enough for a real FTP exchange whose control channel middlebox ALGs read and rewrite.
//!
//! The user name names the test (`USER mpp-<test-id>`, any password). Files are virtual:
//! `RETR probe-<N>` sends N pattern bytes, `STOR <name>` takes any data and answers its digest.
//! Data always moves as bytes, whatever `TYPE` says: the digests must cover what travelled. The
//! `PORT`/`EPRT` argument is recorded exactly as it arrived, since ALGs rewrite it; active mode
//! connects back (from port 20 when it can) only to the control connection's peer address.
//! The control connection is recorded as "ftp-control", each data connection as "ftp-data",
//! both under the test id.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, RawFd},
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpSocket, TcpStream},
};

use super::{
    handshake,
    limit::Permit,
    read_line, sha256_hex,
    store::{self, Slot},
    Idle, LineError, Recorder, State, IDLE_TIMEOUT,
};
use mptcp_probe_model::{ConnectionKind, ConnectionView, Part, Transport};

use crate::{
    host::sock,
    protocol::{self as proto, fill_pattern, valid_test_id, FTP_USER_PREFIX, MAX_BULK_BYTES},
};

/// Longest command line, CRLF included.
const MAX_LINE: usize = 512;
/// How long an active-mode connection back to the client may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The port active-mode data connections come from, when the server may bind it.
const FTP_DATA_PORT: u16 = 20;
const CHUNK: usize = 64 * 1024;

/// A command line as verb (upper-cased) and argument (raw bytes, line ending removed); None for
/// a line that does not start with a verb.
pub(super) fn parse_command(line: &[u8]) -> Option<(String, &[u8])> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (verb, arg) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &line[line.len()..]),
    };
    if verb.is_empty() || verb.len() > 4 || !verb.iter().all(u8::is_ascii_alphabetic) {
        return None;
    }
    Some((String::from_utf8_lossy(verb).to_ascii_uppercase(), arg))
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum ArgError {
    #[error("expected h1,h2,h3,h4,p1,p2")]
    Port,
    #[error("expected <d>proto<d>address<d>port<d>")]
    Eprt,
    #[error("network protocol not supported, use (1,2)")]
    EprtProtocol,
}

/// `PORT h1,h2,h3,h4,p1,p2`.
pub(super) fn parse_port(arg: &str) -> Result<SocketAddr, ArgError> {
    let n: Vec<u8> = arg
        .split(',')
        .map(|f| f.trim().parse::<u8>())
        .collect::<Result<_, _>>()
        .map_err(|_| ArgError::Port)?;
    let [a, b, c, d, p1, p2] = n[..] else { return Err(ArgError::Port) };
    Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), u16::from(p1) << 8 | u16::from(p2)))
}

/// `EPRT <d><proto><d><address><d><port><d>` (RFC 2428), any delimiter in 33..=126.
pub(super) fn parse_eprt(arg: &str) -> Result<SocketAddr, ArgError> {
    let d = arg.chars().next().filter(|c| ('!'..='~').contains(c)).ok_or(ArgError::Eprt)?;
    let fields: Vec<&str> = arg.split(d).collect();
    let ["", proto, addr, port, ""] = fields[..] else { return Err(ArgError::Eprt) };
    let port: u16 = port.parse().map_err(|_| ArgError::Eprt)?;
    let ip = match proto {
        "1" => IpAddr::V4(addr.parse::<Ipv4Addr>().map_err(|_| ArgError::Eprt)?),
        "2" => IpAddr::V6(addr.parse::<Ipv6Addr>().map_err(|_| ArgError::Eprt)?),
        _ => return Err(ArgError::EprtProtocol),
    };
    Ok(SocketAddr::new(ip, port))
}

pub(super) fn pasv_reply(ip: Ipv4Addr, port: u16) -> String {
    let [a, b, c, d] = ip.octets();
    format!("227 Entering Passive Mode ({a},{b},{c},{d},{},{})", port >> 8, port & 0xff)
}

pub(super) fn epsv_reply(port: u16) -> String {
    format!("229 Entering Extended Passive Mode (|||{port}|)")
}

/// The size of a virtual file `probe-<N>`, N at most `MAX_BULK_BYTES`.
pub(super) fn probe_size(name: &str) -> Option<u64> {
    let n = name.strip_prefix("probe-")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok().filter(|&n| n <= MAX_BULK_BYTES)
}

/// The data connection the next transfer uses (at most one per session).
enum Pending {
    Passive { listener: TcpListener, saved_syn: bool },
    Active(SocketAddr),
}

/// An open data connection.
struct Data {
    stream: Idle<TcpStream>,
    fd: RawFd,
    rec: Arc<Recorder>,
    slot: Slot,
    _permit: Permit,
}

impl Data {
    fn settle(&self, f: impl FnOnce(&mut ConnectionView)) {
        store::with(&self.slot, f);
        self.rec.refresh(self.fd);
    }
}

enum Flow {
    Continue,
    Quit,
}

struct Session {
    ctl: BufReader<Idle<TcpStream>>,
    fd: RawFd,
    rec: Arc<Recorder>,
    local: SocketAddr,
    peer: SocketAddr,
    /// The control connection's transport: active-mode data connections use the same, so that a
    /// plain-TCP test stays plain TCP.
    transport: Transport,
    /// Test id from an accepted USER.
    user: Option<String>,
    /// The stored view, once logged in.
    slot: Option<Slot>,
    pending: Option<Pending>,
    epsv_all: bool,
    bytes_in: u64,
    bytes_out: u64,
}

pub(super) async fn serve(stream: TcpStream, rec: Arc<Recorder>) {
    let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else { return };
    let transport = if sock::is_mptcp(&stream) == Some(true) { Transport::Mptcp } else { Transport::Tcp };
    let mut s = Session {
        fd: stream.as_raw_fd(),
        ctl: BufReader::new(Idle::new(stream, IDLE_TIMEOUT)),
        rec,
        local: sock::canonical(local),
        peer: sock::canonical(peer),
        transport,
        user: None,
        slot: None,
        pending: None,
        epsv_all: false,
        bytes_in: 0,
        bytes_out: 0,
    };
    let end = match s.reply("220 mptcp-probe FTP test server ready").await {
        Ok(()) => s.run().await,
        Err(e) => Err(e),
    };
    if let Err(e) = &end {
        tracing::debug!("ftp session from {}: {e}", s.peer);
    }
    s.settle(end.err().map(|e| e.to_string()));
}

impl Session {
    async fn run(&mut self) -> io::Result<()> {
        loop {
            let line = match read_line(&mut self.ctl, MAX_LINE).await {
                Ok(Some(line)) => line,
                Ok(None) => return Ok(()),
                Err(LineError::TooLong(n)) => {
                    self.reply(&format!("500 Command line longer than {n} bytes")).await?;
                    return Ok(());
                }
                Err(LineError::Io(e)) => return Err(e),
            };
            self.bytes_in += line.len() as u64;
            if let Flow::Quit = self.command(&line).await? {
                return Ok(());
            }
            self.sync();
        }
    }

    /// Writes one reply (CRLF added).
    async fn reply(&mut self, text: &str) -> io::Result<()> {
        let line = format!("{text}\r\n");
        self.bytes_out += line.len() as u64;
        self.ctl.write_all(line.as_bytes()).await
    }

    /// Copies the control channel's byte counts into the stored view.
    fn sync(&self) {
        if let Some(slot) = &self.slot {
            store::with(slot, |v| {
                v.bytes_received = self.bytes_in;
                v.bytes_sent = self.bytes_out;
            });
        }
    }

    /// The final state of the control connection.
    fn settle(&self, error: Option<String>) {
        self.sync();
        if let (Some(slot), Some(e)) = (&self.slot, error) {
            store::with(slot, |v| v.error = Some(e));
        }
        self.rec.refresh(self.fd);
    }

    fn note(&self, f: impl FnOnce(&mut ConnectionView)) {
        if let Some(slot) = &self.slot {
            store::with(slot, f);
        }
    }

    async fn command(&mut self, line: &[u8]) -> io::Result<Flow> {
        let Some((verb, arg)) = parse_command(line) else {
            self.reply("500 Syntax error, command unrecognized").await?;
            return Ok(Flow::Continue);
        };
        let text = String::from_utf8_lossy(arg).into_owned();
        match verb.as_str() {
            "USER" => self.user(&text).await?,
            "PASS" => return self.pass().await,
            "QUIT" => {
                // The view is final before the client hears the last word.
                let bye = "221 Goodbye\r\n";
                self.bytes_out += bye.len() as u64;
                self.settle(None);
                self.ctl.write_all(bye.as_bytes()).await?;
                return Ok(Flow::Quit);
            }
            "NOOP" => self.reply("200 NOOP ok").await?,
            "SYST" => self.reply("215 UNIX Type: L8").await?,
            "FEAT" => self.reply("211-Features:\r\n EPSV\r\n EPRT\r\n SIZE\r\n211 End").await?,
            _ if self.slot.is_none() => self.reply("530 Please login with USER and PASS").await?,
            "PWD" | "XPWD" => self.reply("257 \"/\" is the current directory").await?,
            "TYPE" => match text.to_ascii_uppercase().as_str() {
                "I" | "L 8" => self.reply("200 Type set to I").await?,
                "A" | "A N" => self.reply("200 Type set to A (data is sent as is)").await?,
                _ => self.reply("504 Command not implemented for that parameter").await?,
            },
            "PASV" => self.pasv().await?,
            "EPSV" => self.epsv(&text).await?,
            "PORT" | "EPRT" => self.port(&verb, arg).await?,
            "RETR" => self.retr(&text).await?,
            "STOR" => self.stor(&text).await?,
            "SIZE" => match probe_size(&text) {
                Some(n) => self.reply(&format!("213 {n}")).await?,
                None => self.reply("550 No such file").await?,
            },
            _ => self.reply("502 Command not implemented").await?,
        }
        Ok(Flow::Continue)
    }

    async fn user(&mut self, arg: &str) -> io::Result<()> {
        self.slot = None;
        self.pending = None;
        match arg.strip_prefix(FTP_USER_PREFIX).filter(|id| valid_test_id(id)) {
            Some(id) => {
                self.user = Some(id.to_string());
                self.reply("331 User name okay, need password").await
            }
            None => {
                self.user = None;
                self.reply(&format!("530 Not logged in: the user name must be {FTP_USER_PREFIX}<test-id>"))
                    .await
            }
        }
    }

    async fn pass(&mut self) -> io::Result<Flow> {
        let Some(id) = self.user.clone() else {
            self.reply("503 Login with USER first").await?;
            return Ok(Flow::Continue);
        };
        match self.rec.attach(&id) {
            Some(slot) => {
                self.slot = Some(slot);
                self.reply("230 User logged in").await?;
                Ok(Flow::Continue)
            }
            None => {
                self.reply("421 Too many connections for this test").await?;
                Ok(Flow::Quit)
            }
        }
    }

    fn state(&self) -> &State {
        &self.rec.state
    }

    async fn pasv(&mut self) -> io::Result<()> {
        if self.epsv_all {
            return self.reply("503 EPSV ALL in effect").await;
        }
        let IpAddr::V4(ip) = self.local.ip() else {
            return self.reply("425 PASV works over IPv4 only; use EPSV").await;
        };
        match passive_listener(self.state(), self.local.ip()) {
            Ok((listener, saved_syn)) => {
                let port = listener.local_addr()?.port();
                self.pending = Some(Pending::Passive { listener, saved_syn });
                self.reply(&pasv_reply(ip, port)).await
            }
            Err(e) => self.reply(&format!("425 Can't open passive connection: {e}")).await,
        }
    }

    async fn epsv(&mut self, arg: &str) -> io::Result<()> {
        let family = if self.local.is_ipv4() { "1" } else { "2" };
        match arg {
            "" => {}
            a if a.eq_ignore_ascii_case("ALL") => {
                self.epsv_all = true;
                return self.reply("200 EPSV ALL ok").await;
            }
            a if a == family => {}
            _ => return self.reply(&format!("522 Network protocol not supported, use ({family})")).await,
        }
        match passive_listener(self.state(), self.local.ip()) {
            Ok((listener, saved_syn)) => {
                let port = listener.local_addr()?.port();
                self.pending = Some(Pending::Passive { listener, saved_syn });
                self.reply(&epsv_reply(port)).await
            }
            Err(e) => self.reply(&format!("425 Can't open passive connection: {e}")).await,
        }
    }

    /// PORT and EPRT: the argument is recorded as it arrived, then checked.
    async fn port(&mut self, verb: &str, arg: &[u8]) -> io::Result<()> {
        let text = String::from_utf8_lossy(arg).into_owned();
        let digest = sha256_hex(arg);
        self.note(|v| {
            v.notes.insert("port_command".into(), text.clone());
            v.digests.insert(Part::PortCommand, digest);
            v.notes.remove("port_refused");
        });
        self.pending = None;
        if self.epsv_all {
            return self.reply("503 EPSV ALL in effect").await;
        }
        let parsed = if verb == "PORT" { parse_port(&text) } else { parse_eprt(&text) };
        let target = match parsed {
            Ok(t) => t,
            Err(e @ ArgError::EprtProtocol) => return self.reply(&format!("522 {e}")).await,
            Err(e) => return self.reply(&format!("501 Syntax error in parameters: {e}")).await,
        };
        let refusal = if target.ip().to_canonical() != self.peer.ip() {
            Some(format!(
                "{target}: active mode connects only to the control connection's peer {}",
                self.peer.ip()
            ))
        } else if target.port() < 1024 {
            Some(format!("{target}: active mode does not connect to privileged ports"))
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.note(|v| {
                v.notes.insert("port_refused".into(), reason.clone());
            });
            return self.reply(&format!("504 Command not implemented for that parameter: {reason}")).await;
        }
        self.pending = Some(Pending::Active(target));
        self.reply(&format!("200 {verb} command successful")).await
    }

    /// Opens the pending data connection and records it as "ftp-data" under the test.
    async fn open_data(&mut self, command: &str) -> Result<Data, String> {
        let test_id = self.user.clone().ok_or("not logged in")?;
        let state = self.rec.state.clone();
        let (stream, mode, saved_syn) =
            match self.pending.take().ok_or("use PORT, EPRT, PASV or EPSV first")? {
                Pending::Passive { listener, saved_syn } => {
                    (accept_from(&listener, self.peer.ip()).await?, "passive", saved_syn)
                }
                Pending::Active(target) => (
                    connect_back(self.local.ip(), target, self.transport).await.map_err(|e| e.to_string())?,
                    "active",
                    false,
                ),
            };
        let peer = stream.peer_addr().map_err(|e| e.to_string())?;
        let permit =
            state.limiter.admit(peer.ip().to_canonical()).ok_or("too many connections from this address")?;
        let rec = Recorder::start(ConnectionKind::FtpData, &stream, saved_syn, &state);
        let slot = rec.attach(&test_id).ok_or("too many connections for this test")?;
        let local_port = stream.local_addr().map(|a| a.port()).unwrap_or_default();
        store::with(&slot, |v| {
            v.notes.insert("data_mode".into(), mode.into());
            v.notes.insert("command".into(), command.into());
            if mode == "active" {
                v.notes.insert("source_port".into(), local_port.to_string());
            }
        });
        Ok(Data {
            fd: stream.as_raw_fd(),
            stream: Idle::new(stream, IDLE_TIMEOUT),
            rec,
            slot,
            _permit: permit,
        })
    }

    async fn retr(&mut self, name: &str) -> io::Result<()> {
        let Some(n) = probe_size(name) else {
            return self
                .reply(&format!("550 No such file: ask for probe-<N>, N at most {MAX_BULK_BYTES}"))
                .await;
        };
        let mut data = match self.open_data(&format!("RETR {name}")).await {
            Ok(d) => d,
            Err(e) => return self.reply(&format!("425 Can't open data connection: {e}")).await,
        };
        self.reply(&format!("150 Opening BINARY mode data connection for {name} ({n} bytes)")).await?;
        let res = send_pattern(&mut data.stream, n).await;
        match res {
            Ok(digest) => {
                data.settle(|v| {
                    v.bytes_sent = n;
                    v.digests.insert(Part::Sent, digest);
                });
                // The FIN on the data connection is the end of the file; the reply follows it.
                let closed = data.stream.shutdown().await;
                drop(data);
                match closed {
                    Ok(()) => self.reply("226 Transfer complete").await,
                    Err(e) => self.reply(&format!("426 Connection closed; transfer aborted: {e}")).await,
                }
            }
            Err(e) => {
                data.settle(|v| v.error = Some(e.to_string()));
                drop(data);
                self.reply(&format!("426 Connection closed; transfer aborted: {e}")).await
            }
        }
    }

    async fn stor(&mut self, name: &str) -> io::Result<()> {
        if name.is_empty() {
            return self.reply("501 STOR needs a file name").await;
        }
        let mut data = match self.open_data(&format!("STOR {name}")).await {
            Ok(d) => d,
            Err(e) => return self.reply(&format!("425 Can't open data connection: {e}")).await,
        };
        self.reply("150 Ok to send data").await?;
        let mut buf = vec![0u8; CHUNK];
        let mut hash = Sha256::new();
        let mut got = 0u64;
        let end = loop {
            match data.stream.read(&mut buf).await {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    got += n as u64;
                    if got > MAX_BULK_BYTES {
                        break Err(format!("more than {MAX_BULK_BYTES} bytes"));
                    }
                    hash.update(&buf[..n]);
                }
                Err(e) => break Err(e.to_string()),
            }
        };
        let digest = hex::encode(hash.finalize());
        data.settle(|v| {
            v.bytes_received = got;
            v.digests.insert(Part::Data, digest.clone());
            v.error = end.as_ref().err().cloned();
        });
        drop(data);
        match end {
            Ok(()) => self.reply(&format!("226 Transfer complete: {got} bytes, sha256 {digest}")).await,
            Err(e) => self.reply(&format!("552 Transfer aborted: {e}")).await,
        }
    }
}

/// A passive listener on the control connection's local address, on the next free port of the
/// passive range.
fn passive_listener(state: &State, ip: IpAddr) -> io::Result<(TcpListener, bool)> {
    let first = proto::port::FTP_PASSIVE_FIRST;
    let span = proto::port::FTP_PASSIVE_LAST - first + 1;
    let mut last = None;
    for _ in 0..span {
        let port = first + state.passive_next.fetch_add(1, Ordering::Relaxed) % span;
        match sock::listener(&SocketAddr::new(ip, port), Transport::Mptcp, 1) {
            Ok(l) => {
                let saved_syn = handshake::enable_saved_syn(&l).is_ok();
                return Ok((TcpListener::from_std(l)?, saved_syn));
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
}

/// The first connection to a passive listener from the client's address; connections from
/// elsewhere (port stealing) are closed. Gives up after the idle timeout.
async fn accept_from(listener: &TcpListener, client: IpAddr) -> Result<TcpStream, String> {
    let wait = async {
        loop {
            match listener.accept().await {
                Ok((s, peer)) if peer.ip().to_canonical() == client => return Ok(s),
                Ok((_, peer)) => tracing::debug!("passive data connection from {peer}, not {client}: closed"),
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    tokio::time::timeout(IDLE_TIMEOUT, wait)
        .await
        .unwrap_or_else(|_| Err(format!("no data connection within {} s", IDLE_TIMEOUT.as_secs())))
}

/// Active mode: connects to `target` over `transport` from port 20 of the control connection's local address, or
/// from any port when that port cannot be had (no privilege, or the 4-tuple is in use).
async fn connect_back(local: IpAddr, target: SocketAddr, transport: Transport) -> io::Result<TcpStream> {
    match connect_from(Some(SocketAddr::new(local, FTP_DATA_PORT)), target, transport).await {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable | io::ErrorKind::PermissionDenied
            ) =>
        {
            connect_from(None, target, transport).await
        }
        r => r,
    }
}

async fn connect_from(
    from: Option<SocketAddr>,
    target: SocketAddr,
    transport: Transport,
) -> io::Result<TcpStream> {
    let s = sock::socket(&target, transport)?;
    if let Some(from) = from {
        s.set_reuse_address(true)?;
        s.bind(&from.into())?;
    }
    s.set_nonblocking(true)?;
    let s = TcpSocket::from_std_stream(s.into());
    tokio::time::timeout(CONNECT_TIMEOUT, s.connect(target)).await.unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no connection to {target} within {CONNECT_TIMEOUT:?}"),
        ))
    })
}

/// Sends `n` pattern bytes; their digest.
async fn send_pattern<S: AsyncWrite + Unpin>(s: &mut S, n: u64) -> io::Result<String> {
    let mut buf = vec![0u8; CHUNK];
    let mut hash = Sha256::new();
    let mut sent = 0u64;
    while sent < n {
        let k = (n - sent).min(CHUNK as u64) as usize;
        fill_pattern(&mut buf[..k], sent);
        s.write_all(&buf[..k]).await?;
        hash.update(&buf[..k]);
        sent += k as u64;
    }
    s.flush().await?;
    Ok(hex::encode(hash.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_into_verb_and_raw_argument() {
        assert_eq!(parse_command(b"user mpp-t1\r\n"), Some(("USER".into(), &b"mpp-t1"[..])));
        assert_eq!(parse_command(b"PASV\r\n"), Some(("PASV".into(), &b""[..])));
        assert_eq!(parse_command(b"NOOP\n"), Some(("NOOP".into(), &b""[..])));
        assert_eq!(parse_command(b"STOR a b\r\n"), Some(("STOR".into(), &b"a b"[..])));
        assert_eq!(parse_command(b"\r\n"), None);
        assert_eq!(parse_command(b"GET / HTTP/1.1\r\n"), Some(("GET".into(), &b"/ HTTP/1.1"[..])));
        assert_eq!(parse_command(b"TOOLONG x\r\n"), None);
        assert_eq!(parse_command(b"R3TR x\r\n"), None);
    }

    #[test]
    fn port_arguments_parse() {
        assert_eq!(parse_port("192,0,2,1,117,48"), Ok("192.0.2.1:30000".parse().unwrap()));
        assert_eq!(parse_port("127,0,0,1,0,21"), Ok("127.0.0.1:21".parse().unwrap()));
        assert_eq!(parse_port("192,0,2,1,117"), Err(ArgError::Port));
        assert_eq!(parse_port("192,0,2,1,117,48,1"), Err(ArgError::Port));
        assert_eq!(parse_port("192,0,2,256,117,48"), Err(ArgError::Port));
        assert_eq!(parse_port(""), Err(ArgError::Port));
    }

    #[test]
    fn eprt_arguments_parse() {
        assert_eq!(parse_eprt("|1|192.0.2.1|6275|"), Ok("192.0.2.1:6275".parse().unwrap()));
        assert_eq!(parse_eprt("|2|2001:db8::1|5282|"), Ok("[2001:db8::1]:5282".parse().unwrap()));
        assert_eq!(parse_eprt("!1!192.0.2.1!6275!"), Ok("192.0.2.1:6275".parse().unwrap()));
        assert_eq!(parse_eprt("|3|192.0.2.1|6275|"), Err(ArgError::EprtProtocol));
        assert_eq!(parse_eprt("|1|2001:db8::1|6275|"), Err(ArgError::Eprt));
        assert_eq!(parse_eprt("|1|192.0.2.1|70000|"), Err(ArgError::Eprt));
        assert_eq!(parse_eprt("|1|192.0.2.1|6275"), Err(ArgError::Eprt));
        assert_eq!(parse_eprt(" 1 192.0.2.1 6275 "), Err(ArgError::Eprt));
        assert_eq!(parse_eprt(""), Err(ArgError::Eprt));
    }

    #[test]
    fn passive_replies_are_formatted_for_clients_and_algs() {
        assert_eq!(
            pasv_reply(Ipv4Addr::new(203, 0, 113, 2), 30001),
            "227 Entering Passive Mode (203,0,113,2,117,49)"
        );
        assert_eq!(parse_port("203,0,113,2,117,49"), Ok("203.0.113.2:30001".parse().unwrap()));
        assert_eq!(epsv_reply(30099), "229 Entering Extended Passive Mode (|||30099|)");
    }

    #[test]
    fn probe_files_have_bounded_sizes() {
        assert_eq!(probe_size("probe-0"), Some(0));
        assert_eq!(probe_size("probe-1048576"), Some(1 << 20));
        assert_eq!(probe_size(&format!("probe-{MAX_BULK_BYTES}")), Some(MAX_BULK_BYTES));
        assert_eq!(probe_size(&format!("probe-{}", MAX_BULK_BYTES + 1)), None);
        assert_eq!(probe_size("probe-+5"), None);
        assert_eq!(probe_size("probe-"), None);
        assert_eq!(probe_size("/etc/passwd"), None);
    }
}
