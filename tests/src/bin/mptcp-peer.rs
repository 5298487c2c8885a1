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
use mptcp_probe_tests::sys::{check, sockaddr};

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
    /// Bulk sender for benchmarks: writes as fast as it can for `seconds`, then waits for the
    /// sink's byte count; prints JSON.
    Blast {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long)]
        seconds: f64,
        #[arg(long)]
        tcp: bool,
    },
    /// Benchmark receiver: accepts connections (a thread each), reads each to EOF and answers
    /// with the byte count. Serves `count` connections (0: until `timeout`).
    Sink {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value_t = 0)]
        count: u32,
        #[arg(long)]
        tcp: bool,
        /// Exits after this many seconds in any case.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Many short connections to a sink: connect, send a little, close. `--concurrent N` opens N
    /// at a time and holds them `--hold-ms` before closing them. Prints JSON.
    Churn {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long)]
        count: u32,
        #[arg(long, default_value_t = 1)]
        concurrent: u32,
        #[arg(long, default_value_t = 0)]
        hold_ms: u64,
        /// Stops opening connections after this many seconds.
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        #[arg(long)]
        tcp: bool,
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

/// A connected stream over MPTCP (or TCP with `tcp`).
fn connect_stream(connect: &SocketAddr, tcp: bool) -> anyhow::Result<TcpStream> {
    let fd = socket(connect, tcp)?;
    // SAFETY: fd is a fresh socket we own; the stream closes it, also on error below.
    let s = unsafe { TcpStream::from_raw_fd(fd) };
    let (ss, len) = sockaddr(connect);
    // SAFETY: valid fd and sockaddr.
    check(unsafe { libc::connect(fd, (&ss as *const libc::sockaddr_storage).cast(), len) }, "connect")?;
    Ok(s)
}

/// 1 while the socket speaks MPTCP, 0 for TCP (or after fallback), -1 when the kernel cannot say.
fn is_mptcp(s: &TcpStream) -> i32 {
    use std::os::fd::AsRawFd;
    let mut v: i32 = -1;
    let mut olen = 4 as libc::socklen_t;
    // SAFETY: valid fd and option buffer.
    let ret = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_IS_MPTCP,
            (&mut v as *mut i32).cast(),
            &mut olen,
        )
    };
    if ret < 0 {
        -1
    } else {
        v
    }
}

fn blast(connect: SocketAddr, seconds: f64, tcp: bool) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    let mut s = connect_stream(&connect, tcp)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let chunk: Vec<u8> = (0..256 * 1024).map(|i: usize| (i * 7 + i / 251) as u8).collect();
    let limit = Duration::from_secs_f64(seconds.max(0.0));
    let mut sent: u64 = 0;
    while start.elapsed() < limit {
        s.write_all(&chunk)?;
        sent += chunk.len() as u64;
    }
    let mptcp = is_mptcp(&s);
    s.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).context("reading the sink's answer")?;
    let elapsed = start.elapsed().as_secs_f64();
    let received: u64 = answer.trim().parse().unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({"sent_bytes": sent, "received_bytes": received, "seconds": elapsed,
                           "is_mptcp": mptcp, "local_port": s.local_addr()?.port()})
    );
    if received != sent {
        bail!("the sink received {received} bytes of {sent}");
    }
    Ok(())
}

fn sink(listen: SocketAddr, count: u32, tcp: bool, timeout: u64) -> anyhow::Result<()> {
    let fd = socket(&listen, tcp)?;
    // SAFETY: fd is a fresh socket we own.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    let (ss, len) = sockaddr(&listen);
    // SAFETY: valid fd and sockaddr.
    check(unsafe { libc::bind(fd, (&ss as *const libc::sockaddr_storage).cast(), len) }, "bind")?;
    // SAFETY: valid fd; a deep backlog, for bursts of concurrent connections.
    check(unsafe { libc::listen(fd, 4096) }, "listen")?;
    // A blocking accept (no polling delay per connection); the time limit is a watchdog.
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(timeout));
        eprintln!("sink: time limit of {timeout} s reached");
        std::process::exit(if count == 0 { 0 } else { 1 });
    });
    let mut served = 0;
    let mut threads = Vec::new();
    while count == 0 || served < count {
        let (mut s, _) = match listener.accept() {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let t = std::thread::Builder::new().stack_size(128 * 1024).spawn(move || {
            let mut buf = vec![0u8; 128 * 1024];
            let mut total: u64 = 0;
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
            let _ = write!(s, "{total}");
        })?;
        threads.push(t);
        threads.retain(|t| !t.is_finished());
        served += 1;
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn churn(
    connect: SocketAddr,
    count: u32,
    concurrent: u32,
    hold_ms: u64,
    seconds: f64,
    tcp: bool,
) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    let limit = Duration::from_secs_f64(seconds.max(0.0));
    let (mut ok, mut failed, mut mptcp) = (0u32, 0u32, 0u32);
    let mut first_error = None;
    let mut opened = 0u32;
    while opened < count && start.elapsed() < limit {
        let batch = concurrent.max(1).min(count - opened);
        let mut open = Vec::with_capacity(batch as usize);
        for _ in 0..batch {
            opened += 1;
            match connect_stream(&connect, tcp).and_then(|mut s| {
                s.write_all(b"x")?;
                Ok(s)
            }) {
                Ok(s) => open.push(s),
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
        if hold_ms > 0 {
            std::thread::sleep(Duration::from_millis(hold_ms));
        }
        for mut s in open {
            let m = is_mptcp(&s);
            let res = s.set_read_timeout(Some(Duration::from_secs(30))).and_then(|()| {
                s.shutdown(std::net::Shutdown::Write)?;
                let mut answer = String::new();
                s.read_to_string(&mut answer)?;
                Ok(answer)
            });
            match res {
                Ok(a) if a.trim() == "1" => {
                    ok += 1;
                    mptcp += (m == 1) as u32;
                }
                Ok(a) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| format!("unexpected answer {a:?}"));
                }
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"connections": ok, "failed": failed, "mptcp": mptcp, "seconds": elapsed,
                           "per_second": ok as f64 / elapsed.max(1e-9), "first_error": first_error})
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Server { listen, count, tcp, timeout } => server(listen, count, tcp, timeout),
        Cmd::Client { connect, bytes, bind_port, tcp, hold } => client(connect, bytes, bind_port, tcp, hold),
        Cmd::Tcx { iface } => tcx(&iface),
        Cmd::Blast { connect, seconds, tcp } => blast(connect, seconds, tcp),
        Cmd::Sink { listen, count, tcp, timeout } => sink(listen, count, tcp, timeout),
        Cmd::Churn { connect, count, concurrent, hold_ms, seconds, tcp } => {
            churn(connect, count, concurrent, hold_ms, seconds, tcp)
        }
    }
}
