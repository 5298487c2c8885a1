//! A small MPTCP test peer (IPPROTO_MPTCP sockets), independent of the probe: `server` accepts
//! connections and answers each with the byte count and a digest of what it read; `client` sends
//! a payload and checks the answer. Plain TCP with `--tcp`.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::FromRawFd,
    time::Duration,
};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

const IPPROTO_MPTCP: i32 = 262;
const TCP_IS_MPTCP: i32 = 43;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Accept connections, read each to EOF, answer "<bytes> <digest>".
    Server {
        #[arg(long)]
        listen: SocketAddr,
        /// Connections to serve before exiting.
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[arg(long)]
        tcp: bool,
        /// Give up after this many seconds without a connection.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Connect, send `bytes` bytes, read the answer; prints JSON.
    Client {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 100_000)]
        bytes: usize,
        /// Local port to bind (0: any).
        #[arg(long, default_value_t = 0)]
        bind_port: u16,
        #[arg(long)]
        tcp: bool,
        /// Seconds to stay quiet after sending, before closing.
        #[arg(long, default_value_t = 0)]
        hold: u64,
    },
    /// Lists the programs attached with TCX to an interface: `{"ingress":[..],"egress":[..]}`.
    Tcx {
        #[arg(long)]
        iface: String,
    },
}

/// FNV-1a, enough to tell whether the bytes arrived unchanged.
fn digest(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3))
}

fn socket(addr: &SocketAddr, tcp: bool) -> anyhow::Result<i32> {
    let family = if addr.is_ipv6() { libc::AF_INET6 } else { libc::AF_INET };
    let proto = if tcp { libc::IPPROTO_TCP } else { IPPROTO_MPTCP };
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        bail!(
            "socket(IPPROTO_{}) failed: {}",
            if tcp { "TCP" } else { "MPTCP" },
            std::io::Error::last_os_error()
        );
    }
    let one: i32 = 1;
    // SAFETY: valid fd and option pointer/length.
    unsafe {
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, (&one as *const i32).cast(), 4);
    }
    Ok(fd)
}

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: zeroed sockaddr_storage is valid; we fill the family-specific part.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn check(ret: i32, what: &str) -> anyhow::Result<()> {
    if ret < 0 {
        bail!("{what}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn server(listen: SocketAddr, count: u32, tcp: bool, timeout: u64) -> anyhow::Result<()> {
    let fd = socket(&listen, tcp)?;
    let (ss, len) = sockaddr(&listen);
    // SAFETY: valid fd and sockaddr.
    check(unsafe { libc::bind(fd, (&ss as *const libc::sockaddr_storage).cast(), len) }, "bind")?;
    // SAFETY: valid fd.
    check(unsafe { libc::listen(fd, 64) }, "listen")?;
    // SAFETY: fd is a listening socket we own.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    listener.set_nonblocking(true)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(timeout);
    let mut served = 0;
    while served < count {
        match listener.accept() {
            Ok((mut s, _)) => {
                s.set_nonblocking(false)?;
                s.set_read_timeout(Some(Duration::from_secs(30)))?;
                let mut data = Vec::new();
                s.read_to_end(&mut data).context("reading")?;
                write!(s, "{} {:016x}", data.len(), digest(&data))?;
                served += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() > deadline {
                    bail!("no connection within {timeout} s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn client(connect: SocketAddr, bytes: usize, bind_port: u16, tcp: bool, hold: u64) -> anyhow::Result<()> {
    let fd = socket(&connect, tcp)?;
    if bind_port != 0 {
        let local: SocketAddr = if connect.is_ipv6() {
            SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), bind_port)
        } else {
            SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), bind_port)
        };
        let (ss, len) = sockaddr(&local);
        // SAFETY: valid fd and sockaddr.
        check(unsafe { libc::bind(fd, (&ss as *const libc::sockaddr_storage).cast(), len) }, "bind")?;
    }
    let (ss, len) = sockaddr(&connect);
    // SAFETY: valid fd and sockaddr.
    check(unsafe { libc::connect(fd, (&ss as *const libc::sockaddr_storage).cast(), len) }, "connect")?;
    // SAFETY: connected socket we own.
    let mut s = unsafe { TcpStream::from_raw_fd(fd) };
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let data: Vec<u8> = (0..bytes).map(|i| (i * 7 + i / 251) as u8).collect();
    s.write_all(&data)?;
    std::thread::sleep(Duration::from_secs(hold));
    s.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let mut is_mptcp: i32 = -1;
    let mut olen = 4 as libc::socklen_t;
    // SAFETY: valid fd and option buffer.
    let ret = unsafe {
        libc::getsockopt(fd, libc::IPPROTO_TCP, TCP_IS_MPTCP, (&mut is_mptcp as *mut i32).cast(), &mut olen)
    };
    if ret < 0 {
        is_mptcp = -1;
    }
    let expected = format!("{} {:016x}", data.len(), digest(&data));
    println!(
        "{}",
        serde_json::json!({"is_mptcp": is_mptcp, "sent": bytes, "intact": answer == expected,
                           "local_port": s.local_addr()?.port()})
    );
    Ok(())
}

/// The kernel's own list of TCX programs (bpftool in Debian 12 cannot show TCX links).
fn tcx(iface: &str) -> anyhow::Result<()> {
    use aya::programs::{tc::TcAttachType, SchedClassifier};
    let mut out = serde_json::Map::new();
    for (name, at) in [("ingress", TcAttachType::Ingress), ("egress", TcAttachType::Egress)] {
        let (_, progs) =
            SchedClassifier::query_tcx(iface, at).with_context(|| format!("querying TCX on {iface}"))?;
        let names: Vec<String> = progs.iter().map(|p| p.name_as_str().unwrap_or("?").to_string()).collect();
        out.insert(name.into(), names.into());
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Server { listen, count, tcp, timeout } => server(listen, count, tcp, timeout),
        Cmd::Client { connect, bytes, bind_port, tcp, hold } => client(connect, bytes, bind_port, tcp, hold),
        Cmd::Tcx { iface } => tcx(&iface),
    }
}
