//! A small middlebox for the lab: takes the TCP packets an iptables `NFQUEUE` rule hands it in the
//! router namespace and does to them what the kernel's own tools cannot:
//!
//! - `seq`: rewrites sequence numbers like a firewall's ISN randomiser (a per-connection offset
//!   added to the initiator's sequence numbers and taken off the acknowledgements coming back;
//!   SACK blocks are left alone, as such firewalls often did);
//! - `split`: cuts the initiator's data segments into pieces of at most `--max` bytes (the first
//!   piece goes on as the queued packet, the others are sent from a raw socket);
//! - `coalesce`: holds the initiator's data segments briefly and merges contiguous ones that carry
//!   the same options into one segment of at most `--max` bytes;
//! - `rewrite`: replaces a byte string with another of the same length in the initiator's payload
//!   to one destination port (a header-rewriting box);
//! - `netem`: the path emulation the kernel's netem qdisc would give (this kernel has none):
//!   delay with jitter, loss and reordering, each decision drawn from a seeded generator and made
//!   as `sch_netem` makes it (see [`netem`]); packets are held and given their verdicts late;
//! - `cut-quotes`: cuts the quote of each ICMP / ICMPv6 error it forwards (time exceeded,
//!   unreachable) to the quoted IP header and 8 bytes, as RFC 792 routers quote;
//! - `proxy`: not a queue user but a transparent TCP proxy for an iptables `REDIRECT` rule: it
//!   terminates each connection and opens its own to the original destination, relaying bytes.
//!
//! Packets are parsed and rebuilt with etherparse, checksums recomputed; MPTCP options are read
//! with the project's own option parser. Packets it does not understand pass unchanged. It prints
//! `ready` on stderr once bound and, on SIGTERM/SIGINT, one JSON line of counters.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use etherparse::{IpNumber, Ipv4Header, Ipv6Header, TcpHeader};
use mptcp_probe_common::options::{parse_tcp_options, subtype, MAX_OPTION_BYTES};
use nfq::{Queue, Verdict};

#[derive(Parser)]
#[command(name = "mptcp-middlebox", about = "NFQUEUE middlebox for the mptcp-probe lab")]
struct Cli {
    /// The NFQUEUE number to bind.
    #[arg(long, default_value_t = 0)]
    queue: u16,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Clone)]
enum Mode {
    /// Offset the initiator's sequence numbers (and the acknowledgements back) per connection.
    Seq,
    /// Split the initiator's data segments into pieces of at most MAX bytes.
    Split {
        #[arg(long, default_value_t = 500)]
        max: usize,
    },
    /// Merge the initiator's contiguous data segments into segments of at most MAX bytes.
    Coalesce {
        #[arg(long, default_value_t = 8000)]
        max: usize,
        /// How long a segment waits for the next one.
        #[arg(long, default_value_t = 2)]
        hold_ms: u64,
    },
    /// Replace FIND by REPLACE (same length) in the initiator's payload to PORT.
    Rewrite {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        find: String,
        #[arg(long)]
        replace: String,
    },
    /// Delay, jitter, loss and reordering of every queued packet, as the netem qdisc does them.
    Netem(NetemArgs),
    /// Cut the quotes of forwarded ICMP errors to the quoted IP header and 8 bytes (RFC 792).
    CutQuotes,
    /// Transparent TCP proxy (IPv4) on PORT for connections an iptables REDIRECT sends there.
    Proxy {
        #[arg(long)]
        port: u16,
    },
}

/// `netem`'s options, named as `tc qdisc ... netem` names them (times in milliseconds, shares
/// in percent).
#[derive(clap::Args, Clone, Debug)]
struct NetemArgs {
    /// Mean delay added to every packet that is not reordered.
    #[arg(long, default_value_t = 0.0, value_parser = milliseconds)]
    delay: f64,
    /// Each delayed packet's delay is drawn uniformly from DELAY ± JITTER: a later packet can
    /// overtake an earlier one, as with netem.
    #[arg(long, default_value_t = 0.0, value_parser = milliseconds)]
    jitter: f64,
    /// Share of packets dropped.
    #[arg(long, default_value_t = 0.0, value_parser = percent)]
    loss: f64,
    /// Share of packets sent at once, ahead of the delayed ones (needs a delay).
    #[arg(long, default_value_t = 0.0, value_parser = percent)]
    reorder: f64,
    /// Chance that each random draw (delay, loss, reordering, each its own) repeats the previous
    /// one: losses come in bursts and reordered packets in runs, their shares unchanged.
    #[arg(long, default_value_t = 0.0, value_parser = percent)]
    correlation: f64,
    /// Seed of the generator: the same seed gives the same decisions for the same packets.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Packets held at most (netem's `limit`); one more is dropped.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=4000))]
    limit: u64,
}

fn milliseconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=60_000.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a time in milliseconds between 0 and 60000")),
    }
}

fn percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a percentage between 0 and 100")),
    }
}

impl NetemArgs {
    fn params(&self) -> netem::Params {
        let us = |ms: f64| Duration::from_micros((ms * 1000.0).round() as u64);
        netem::Params {
            delay: us(self.delay),
            jitter: us(self.jitter),
            loss: netem::probability(self.loss),
            reorder: netem::probability(self.reorder),
            correlation: netem::probability(self.correlation),
        }
    }
}

#[derive(Default, Debug)]
struct Counters {
    packets: u64,
    unparsed: u64,
    modified: u64,
    dropped_merged: u64,
    injected: u64,
    inject_errors: u64,
    /// netem: packets held and sent late.
    delayed: u64,
    /// netem: packets sent at once, ahead of the held ones (`--reorder`).
    not_delayed: u64,
    /// netem: packets dropped by `--loss`.
    dropped_loss: u64,
    /// netem: packets dropped because `--limit` packets were held.
    dropped_limit: u64,
}

enum Ip {
    V4(Ipv4Header),
    V6(Ipv6Header),
}

/// A TCP packet taken apart.
struct Pkt {
    ip: Ip,
    tcp: TcpHeader,
    payload: Vec<u8>,
}

impl Pkt {
    fn parse(data: &[u8]) -> Option<Pkt> {
        let (ip, rest) = match data.first()? >> 4 {
            4 => {
                let (h, rest) = Ipv4Header::from_slice(data).ok()?;
                if h.protocol != IpNumber::TCP || h.is_fragmenting_payload() {
                    return None;
                }
                let len = usize::from(h.payload_len().ok()?);
                (Ip::V4(h), rest.get(..len)?)
            }
            6 => {
                let (h, rest) = Ipv6Header::from_slice(data).ok()?;
                // Extension headers are not handled: such packets pass unchanged.
                if h.next_header != IpNumber::TCP {
                    return None;
                }
                let len = usize::from(h.payload_length);
                (Ip::V6(h), rest.get(..len)?)
            }
            _ => return None,
        };
        let (tcp, payload) = TcpHeader::from_slice(rest).ok()?;
        Some(Pkt { ip, tcp, payload: payload.to_vec() })
    }

    fn addrs(&self) -> (IpAddr, IpAddr) {
        match &self.ip {
            Ip::V4(h) => (IpAddr::from(h.source), IpAddr::from(h.destination)),
            Ip::V6(h) => (IpAddr::from(h.source), IpAddr::from(h.destination)),
        }
    }

    fn key(&self) -> Key {
        let (s, d) = self.addrs();
        Key { src: s, dst: d, sport: self.tcp.source_port, dport: self.tcp.destination_port }
    }

    /// MPTCP subtypes among the options.
    fn has_mptcp(&self, sub: u8) -> bool {
        let raw = self.tcp.options.as_slice();
        let mut buf = [0u8; MAX_OPTION_BYTES];
        let n = raw.len().min(MAX_OPTION_BYTES);
        buf[..n].copy_from_slice(&raw[..n]);
        parse_tcp_options(&buf, n, false).find(sub).is_some()
    }

    /// Serialises with lengths and checksums recomputed.
    fn build(&mut self) -> anyhow::Result<Vec<u8>> {
        let tcp_len = self.tcp.header_len() + self.payload.len();
        let mut out = Vec::with_capacity(60 + tcp_len);
        match &mut self.ip {
            Ip::V4(h) => {
                h.set_payload_len(tcp_len)?;
                h.header_checksum = h.calc_header_checksum();
                self.tcp.checksum = self.tcp.calc_checksum_ipv4(h, &self.payload)?;
                h.write(&mut out)?;
            }
            Ip::V6(h) => {
                h.set_payload_length(tcp_len)?;
                self.tcp.checksum = self.tcp.calc_checksum_ipv6(h, &self.payload)?;
                h.write(&mut out)?;
            }
        }
        self.tcp.write(&mut out)?;
        out.extend_from_slice(&self.payload);
        Ok(out)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
}

impl Key {
    fn reversed(self) -> Key {
        Key { src: self.dst, dst: self.src, sport: self.dport, dport: self.sport }
    }

    /// A per-connection offset, as a randomiser would pick (never 0).
    fn offset(&self) -> u32 {
        use std::hash::BuildHasher;
        (std::collections::hash_map::RandomState::new().hash_one(self) as u32) | 0x1000_0001
    }
}

/// Which way a packet goes relative to the connection's SYN.
#[derive(PartialEq, Eq)]
enum Dir {
    Initiator,
    Responder,
    Unknown,
}

/// Segments held for merging, per connection.
struct Held {
    msgs: Vec<nfq::Message>,
    pkt: Pkt,
    since: Instant,
}

struct Middlebox {
    /// Connections seen from their SYN, keyed initiator → responder, with their offset.
    conns: HashMap<Key, u32>,
    held: HashMap<Key, Held>,
    /// `netem` mode: its decisions and the packets it holds.
    netem: Option<(netem::Netem, netem::Schedule<nfq::Message>)>,
    raw4: Option<RawSocket>,
    raw6: Option<RawSocket>,
    n: Counters,
}

impl Middlebox {
    fn direction(&mut self, p: &Pkt) -> (Dir, u32) {
        let k = p.key();
        if p.tcp.syn && !p.tcp.ack {
            let off = k.offset();
            self.conns.insert(k, off);
            // Bounded: the lab's connections are few; forget the oldest generation wholesale.
            if self.conns.len() > 65536 {
                self.conns.clear();
                self.conns.insert(k, off);
            }
        }
        if let Some(off) = self.conns.get(&k) {
            (Dir::Initiator, *off)
        } else if let Some(off) = self.conns.get(&k.reversed()) {
            (Dir::Responder, *off)
        } else {
            (Dir::Unknown, 0)
        }
    }

    /// Decides on one queued packet (verdicts may be deferred while segments are held).
    fn handle(&mut self, mode: &Mode, q: &mut Queue, mut msg: nfq::Message) -> anyhow::Result<()> {
        self.n.packets += 1;
        if let Some((netem, held)) = self.netem.as_mut() {
            // netem looks at no header: only at when the packet came.
            let n = held.arrival();
            match netem.fate() {
                netem::Fate::Drop => {
                    self.n.dropped_loss += 1;
                    msg.set_verdict(Verdict::Drop);
                }
                netem::Fate::Now => {
                    self.n.not_delayed += 1;
                    held.sent(n);
                    msg.set_verdict(Verdict::Accept);
                }
                netem::Fate::Later(after) => match held.hold(n, Instant::now() + after, msg) {
                    Ok(()) => {
                        self.n.delayed += 1;
                        return Ok(());
                    }
                    Err(mut full) => {
                        self.n.dropped_limit += 1;
                        full.set_verdict(Verdict::Drop);
                        return Ok(q.verdict(full)?);
                    }
                },
            }
            return Ok(q.verdict(msg)?);
        }
        if let Mode::CutQuotes = mode {
            if let Some(cut) = quotes::cut(msg.get_payload()) {
                msg.set_payload(cut);
                self.n.modified += 1;
            }
            msg.set_verdict(Verdict::Accept);
            return Ok(q.verdict(msg)?);
        }
        let Some(mut p) = Pkt::parse(msg.get_payload()) else {
            self.n.unparsed += 1;
            msg.set_verdict(Verdict::Accept);
            return Ok(q.verdict(msg)?);
        };
        let (dir, off) = self.direction(&p);
        match *mode {
            Mode::Seq => {
                let changed = match dir {
                    Dir::Initiator => {
                        p.tcp.sequence_number = p.tcp.sequence_number.wrapping_add(off);
                        true
                    }
                    Dir::Responder if p.tcp.ack => {
                        p.tcp.acknowledgment_number = p.tcp.acknowledgment_number.wrapping_sub(off);
                        true
                    }
                    _ => false,
                };
                if changed {
                    msg.set_payload(p.build()?);
                    self.n.modified += 1;
                }
            }
            Mode::Split { max } => {
                if dir == Dir::Initiator
                    && p.payload.len() > max
                    && !p.tcp.syn
                    && !p.has_mptcp(subtype::MP_CAPABLE)
                {
                    let pieces = split(p, max)?;
                    let mut it = pieces.into_iter();
                    msg.set_payload(it.next().expect("at least one piece"));
                    msg.set_verdict(Verdict::Accept);
                    q.verdict(msg)?;
                    self.n.modified += 1;
                    for piece in it {
                        self.inject(&piece);
                    }
                    return Ok(());
                }
            }
            Mode::Coalesce { max, .. } => {
                let key = p.key();
                let mergeable = dir == Dir::Initiator
                    && !p.payload.is_empty()
                    && !p.tcp.syn
                    && !p.tcp.fin
                    && !p.tcp.rst
                    && !p.tcp.urg
                    && !p.has_mptcp(subtype::MP_CAPABLE);
                if let Some(h) = self.held.get_mut(&key) {
                    let next = h.pkt.tcp.sequence_number.wrapping_add(h.pkt.payload.len() as u32);
                    if mergeable
                        && next == p.tcp.sequence_number
                        && h.pkt.tcp.options.as_slice() == p.tcp.options.as_slice()
                        && h.pkt.payload.len() + p.payload.len() <= max
                    {
                        h.pkt.payload.extend_from_slice(&p.payload);
                        h.pkt.tcp.acknowledgment_number = p.tcp.acknowledgment_number;
                        h.pkt.tcp.window_size = p.tcp.window_size;
                        h.pkt.tcp.psh |= p.tcp.psh;
                        h.msgs.push(msg);
                        return Ok(());
                    }
                    // Anything else of the connection goes out after what is held, in order.
                    self.flush(q, key)?;
                }
                if mergeable && p.payload.len() < max {
                    self.held.insert(key, Held { msgs: vec![msg], pkt: p, since: Instant::now() });
                    return Ok(());
                }
            }
            Mode::Proxy { .. } | Mode::Netem(_) | Mode::CutQuotes => {}
            Mode::Rewrite { port, ref find, ref replace } => {
                if dir == Dir::Initiator
                    && p.tcp.destination_port == port
                    && replace_all(&mut p.payload, find.as_bytes(), replace.as_bytes()) > 0
                {
                    msg.set_payload(p.build()?);
                    self.n.modified += 1;
                }
            }
        }
        msg.set_verdict(Verdict::Accept);
        Ok(q.verdict(msg)?)
    }

    /// Sends a held connection's segments on: the first carries the merged payload, the others
    /// are dropped.
    fn flush(&mut self, q: &mut Queue, key: Key) -> anyhow::Result<()> {
        let Some(mut h) = self.held.remove(&key) else { return Ok(()) };
        let merged = h.msgs.len() > 1;
        let bytes = if merged { Some(h.pkt.build()?) } else { None };
        for (i, mut m) in h.msgs.into_iter().enumerate() {
            if i == 0 {
                if let Some(b) = &bytes {
                    m.set_payload(b.clone());
                    self.n.modified += 1;
                }
                m.set_verdict(Verdict::Accept);
            } else {
                m.set_verdict(Verdict::Drop);
                self.n.dropped_merged += 1;
            }
            q.verdict(m)?;
        }
        Ok(())
    }

    fn flush_expired(&mut self, q: &mut Queue, hold: Duration) -> anyhow::Result<()> {
        let due: Vec<Key> =
            self.held.iter().filter(|(_, h)| h.since.elapsed() >= hold).map(|(k, _)| *k).collect();
        for k in due {
            self.flush(q, k)?;
        }
        Ok(())
    }

    /// Sends on the held packets that are due (all of them with `all`), earliest first.
    fn release_due(&mut self, q: &mut Queue, all: bool) -> anyhow::Result<()> {
        let Some((_, held)) = self.netem.as_mut() else { return Ok(()) };
        let now = Instant::now();
        while let Some(mut msg) = if all { held.pop_any() } else { held.pop_due(now) } {
            msg.set_verdict(Verdict::Accept);
            q.verdict(msg)?;
        }
        Ok(())
    }

    /// Sleeps while the queue is empty: until the next held packet is due, and never long, so
    /// that new packets wait little.
    fn idle(&self) {
        const NAP: Duration = Duration::from_micros(200);
        match self.netem.as_ref().and_then(|(_, held)| held.next_due(Instant::now())) {
            Some(due) if due.is_zero() => {}
            Some(due) => std::thread::sleep(due.min(NAP)),
            None if self.held.is_empty() => std::thread::sleep(NAP),
            None => std::thread::yield_now(),
        }
    }

    fn inject(&mut self, packet: &[u8]) {
        let sock = if packet[0] >> 4 == 4 { self.raw4.as_ref() } else { self.raw6.as_ref() };
        match sock.map(|s| s.send(packet)) {
            Some(Ok(())) => self.n.injected += 1,
            Some(Err(e)) => {
                self.n.inject_errors += 1;
                eprintln!("mptcp-middlebox: cannot send a piece: {e}");
            }
            None => self.n.inject_errors += 1,
        }
    }
}

/// Cuts a data segment into pieces of at most `max` bytes; FIN and PSH stay on the last piece.
fn split(p: Pkt, max: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let Pkt { ip, tcp, payload } = p;
    let chunks: Vec<&[u8]> = payload.chunks(max).collect();
    let mut out = Vec::with_capacity(chunks.len());
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let mut t = tcp.clone();
        t.sequence_number = tcp.sequence_number.wrapping_add((i * max) as u32);
        t.fin = tcp.fin && last;
        t.psh = tcp.psh && last;
        let ip = match &ip {
            Ip::V4(h) => Ip::V4(h.clone()),
            Ip::V6(h) => Ip::V6(h.clone()),
        };
        out.push(Pkt { ip, tcp: t, payload: chunk.to_vec() }.build()?);
    }
    Ok(out)
}

/// Replaces every occurrence of `find` (same length as `with`); returns how many.
fn replace_all(buf: &mut [u8], find: &[u8], with: &[u8]) -> usize {
    if find.is_empty() || find.len() != with.len() || buf.len() < find.len() {
        return 0;
    }
    let mut n = 0;
    let mut i = 0;
    while i + find.len() <= buf.len() {
        if &buf[i..i + find.len()] == find {
            buf[i..i + find.len()].copy_from_slice(with);
            n += 1;
            i += find.len();
        } else {
            i += 1;
        }
    }
    n
}

/// A raw IP socket that sends whole packets (header included).
struct RawSocket(std::os::fd::OwnedFd, bool);

impl RawSocket {
    fn open(v6: bool) -> std::io::Result<Self> {
        use std::os::fd::FromRawFd;
        let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
        // SAFETY: plain socket(2); the descriptor is owned from here on.
        let fd = unsafe { libc::socket(family, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        if v6 {
            let one: libc::c_int = 1;
            // SAFETY: valid option pointer and length. IPV6_HDRINCL = 36.
            let r = unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    libc::IPPROTO_IPV6,
                    36,
                    &one as *const _ as *const libc::c_void,
                    std::mem::size_of_val(&one) as u32,
                )
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(Self(fd, v6))
    }

    fn send(&self, packet: &[u8]) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let (addr, len): (libc::sockaddr_storage, u32) = if self.1 {
            let mut dst = [0u8; 16];
            dst.copy_from_slice(packet.get(24..40).ok_or(std::io::ErrorKind::InvalidInput)?);
            // SAFETY: sockaddr_in6 fits in sockaddr_storage; zeroed is a valid value.
            let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let sin6 = &mut ss as *mut _ as *mut libc::sockaddr_in6;
            // SAFETY: writing fields of a zeroed sockaddr_in6 inside storage we own.
            unsafe {
                (*sin6).sin6_family = libc::AF_INET6 as u16;
                (*sin6).sin6_addr.s6_addr = dst;
            }
            (ss, std::mem::size_of::<libc::sockaddr_in6>() as u32)
        } else {
            let mut dst = [0u8; 4];
            dst.copy_from_slice(packet.get(16..20).ok_or(std::io::ErrorKind::InvalidInput)?);
            // SAFETY: as above, for sockaddr_in.
            let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let sin = &mut ss as *mut _ as *mut libc::sockaddr_in;
            // SAFETY: as above.
            unsafe {
                (*sin).sin_family = libc::AF_INET as u16;
                (*sin).sin_addr.s_addr = u32::from_ne_bytes(dst);
            }
            (ss, std::mem::size_of::<libc::sockaddr_in>() as u32)
        };
        // SAFETY: buffer and address are valid for the lengths given.
        let r = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                packet.as_ptr() as *const libc::c_void,
                packet.len(),
                0,
                &addr as *const _ as *const libc::sockaddr,
                len,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Mode::Rewrite { find, replace, .. } = &cli.mode {
        if find.len() != replace.len() || find.is_empty() {
            bail!("rewrite: --find and --replace must be non-empty and of the same length");
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    if let Mode::Proxy { port } = cli.mode {
        return proxy::run(port, &stop);
    }
    let mut q = Queue::open().context("opening the NFQUEUE netlink socket (root needed)")?;
    q.bind(cli.queue).with_context(|| format!("binding NFQUEUE {}", cli.queue))?;
    q.set_queue_max_len(cli.queue, 4096)?;
    if matches!(cli.mode, Mode::Netem(_)) {
        // netem reads no payload: copying headers only keeps each held packet small.
        q.set_copy_range(cli.queue, 128)?;
    }
    q.set_nonblocking(true);
    let needs_raw = matches!(cli.mode, Mode::Split { .. });
    let mut mb = Middlebox {
        conns: HashMap::new(),
        held: HashMap::new(),
        netem: match &cli.mode {
            Mode::Netem(args) => {
                Some((netem::Netem::new(args.params(), args.seed), netem::Schedule::new(args.limit as usize)))
            }
            _ => None,
        },
        raw4: needs_raw.then(|| RawSocket::open(false)).transpose().context("raw IPv4 socket")?,
        raw6: needs_raw.then(|| RawSocket::open(true)).transpose().context("raw IPv6 socket")?,
        n: Counters::default(),
    };
    let hold = match cli.mode {
        Mode::Coalesce { hold_ms, .. } => Some(Duration::from_millis(hold_ms)),
        _ => None,
    };
    eprintln!("mptcp-middlebox: ready on queue {}", cli.queue);
    while !stop.load(Ordering::Relaxed) {
        match q.recv() {
            Ok(msg) => mb.handle(&cli.mode, &mut q, msg)?,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => mb.idle(),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e).context("reading from NFQUEUE"),
        }
        if let Some(hold) = hold {
            mb.flush_expired(&mut q, hold)?;
        }
        mb.release_due(&mut q, false)?;
    }
    let keys: Vec<Key> = mb.held.keys().copied().collect();
    for k in keys {
        mb.flush(&mut q, k)?;
    }
    mb.release_due(&mut q, true)?;
    let n = &mb.n;
    let mut counters = serde_json::json!({"packets": n.packets, "unparsed": n.unparsed,
        "modified": n.modified, "dropped_merged": n.dropped_merged, "injected": n.injected,
        "inject_errors": n.inject_errors});
    if let Some((netem, held)) = &mb.netem {
        counters["netem"] = serde_json::json!({"delayed": n.delayed, "not_delayed": n.not_delayed,
            "dropped_loss": n.dropped_loss, "dropped_limit": n.dropped_limit,
            "overtaken": held.overtaken(), "held_max": held.held_max(), "seed": netem.seed()});
    }
    eprintln!("{counters}");
    Ok(())
}

/// ICMP errors as an RFC 792 router sends them: the quote holds the original IP header and the
/// first 8 bytes of its payload (for TCP: the ports and the sequence number), no more.
mod quotes {
    use etherparse::{
        Icmpv4Header, Icmpv4Slice, Icmpv4Type, Icmpv6Header, Icmpv6Slice, Icmpv6Type, Ipv4Header, Ipv6Header,
    };

    /// Bytes of the quoted packet's payload an RFC 792 quote keeps.
    const KEPT: usize = 8;
    const ICMP: u8 = 1;
    const ICMPV6: u8 = 58;

    /// The packet with its quote cut, or None when it is not an ICMP error with a longer quote.
    pub fn cut(packet: &[u8]) -> Option<Vec<u8>> {
        match packet.first()? >> 4 {
            4 => cut_v4(packet),
            6 => cut_v6(packet),
            _ => None,
        }
    }

    fn cut_v4(packet: &[u8]) -> Option<Vec<u8>> {
        let (mut ip, rest) = Ipv4Header::from_slice(packet).ok()?;
        if ip.protocol.0 != ICMP {
            return None;
        }
        let icmp = Icmpv4Slice::from_slice(rest).ok()?;
        let t = icmp.icmp_type();
        if !matches!(t, Icmpv4Type::TimeExceeded(_) | Icmpv4Type::DestinationUnreachable(_)) {
            return None;
        }
        let quote = icmp.payload();
        let ihl = (*quote.first()? & 0x0f) as usize * 4;
        let keep = (ihl + KEPT).min(quote.len());
        if keep == quote.len() {
            return None;
        }
        let quote = &quote[..keep];
        // Rebuilt from its type alone: RFC 4884's length (extensions) goes with the cut.
        let h = Icmpv4Header::with_checksum(t, quote);
        ip.set_payload_len(h.header_len() + quote.len()).ok()?;
        ip.header_checksum = ip.calc_header_checksum();
        let mut out = ip.to_bytes().to_vec();
        out.extend_from_slice(&h.to_bytes());
        out.extend_from_slice(quote);
        Some(out)
    }

    fn cut_v6(packet: &[u8]) -> Option<Vec<u8>> {
        let (mut ip, rest) = Ipv6Header::from_slice(packet).ok()?;
        if ip.next_header.0 != ICMPV6 {
            return None;
        }
        let icmp = Icmpv6Slice::from_slice(rest).ok()?;
        let t = icmp.icmp_type();
        if !matches!(t, Icmpv6Type::TimeExceeded(_) | Icmpv6Type::DestinationUnreachable(_)) {
            return None;
        }
        let quote = icmp.payload();
        let keep = (40 + KEPT).min(quote.len());
        if keep == quote.len() {
            return None;
        }
        let quote = &quote[..keep];
        let h = Icmpv6Header::with_checksum(t, ip.source, ip.destination, quote).ok()?;
        ip.set_payload_length(h.header_len() + quote.len()).ok()?;
        let mut out = ip.to_bytes().to_vec();
        out.extend_from_slice(&h.to_bytes());
        out.extend_from_slice(quote);
        Some(out)
    }
}

/// The decisions of Linux's netem qdisc (net/sched/sch_netem.c), made from a seeded generator so
/// that a run can be repeated: for each packet, in this order,
///
/// - loss: dropped when a draw falls at or below the loss share;
/// - reordering (with a delay): sent at once, ahead of every held packet, when a draw falls at
///   or below the reorder share (netem's `reorder` with its default gap of 1);
/// - otherwise delayed by DELAY ± JITTER, uniform, drawn per packet: packets leave in the order
///   of their own due times (netem's time-sorted queue), so with jitter a later packet overtakes
///   an earlier one whose draw was longer.
///
/// Correlation ρ: each kind of draw (loss, reordering, delay) repeats its previous value with
/// probability ρ, so losses come in bursts and reordered packets in runs while their shares stay
/// as asked (see [`Correlated`] for how this differs from netem's).
mod netem {
    use std::{
        cmp::{Ordering, Reverse},
        collections::BinaryHeap,
        time::{Duration, Instant},
    };

    /// A share in [0, 1] as netem stores it: a fraction of `u32::MAX`.
    pub fn probability(percent: f64) -> u32 {
        ((percent / 100.0).clamp(0.0, 1.0) * f64::from(u32::MAX)).round() as u32
    }

    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Params {
        pub delay: Duration,
        pub jitter: Duration,
        pub loss: u32,
        pub reorder: u32,
        pub correlation: u32,
    }

    /// What happens to one packet.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Fate {
        Drop,
        /// Sent at once, ahead of the held packets.
        Now,
        /// Held this long, then sent.
        Later(Duration),
    }

    /// SplitMix64 (Steele, Lea, Flood 2014): small, fast, and every seed gives a full-period
    /// sequence.
    #[derive(Clone, Debug)]
    pub struct Prng(u64);

    impl Prng {
        pub fn new(seed: u64) -> Self {
            Self(seed)
        }

        pub fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        pub fn next_u32(&mut self) -> u32 {
            (self.next_u64() >> 32) as u32
        }
    }

    /// A correlated draw: with probability ρ the previous draw again, else a fresh one. Its
    /// values stay uniform whatever ρ, so a decision made from it keeps its share and comes in
    /// runs (netem's own `get_crandom` averages with the previous draw instead, which narrows
    /// the values towards the middle: 30 % loss with 75 % correlation drops about 3 %).
    #[derive(Clone, Debug, Default)]
    struct Correlated {
        rho: u32,
        last: Option<u32>,
    }

    impl Correlated {
        fn next(&mut self, prng: &mut Prng) -> u32 {
            let fresh = prng.next_u32();
            if self.rho == 0 {
                return fresh;
            }
            let again = prng.next_u32() < self.rho;
            let value = match self.last {
                Some(last) if again => last,
                _ => fresh,
            };
            self.last = Some(value);
            value
        }
    }

    #[derive(Clone, Debug)]
    pub struct Netem {
        p: Params,
        seed: u64,
        prng: Prng,
        loss: Correlated,
        reorder: Correlated,
        delay: Correlated,
    }

    impl Netem {
        pub fn new(p: Params, seed: u64) -> Self {
            let c = || Correlated { rho: p.correlation, last: None };
            Self { p, seed, prng: Prng::new(seed), loss: c(), reorder: c(), delay: c() }
        }

        pub fn seed(&self) -> u64 {
            self.seed
        }

        /// The next packet's fate.
        pub fn fate(&mut self) -> Fate {
            let p = self.p;
            if p.loss > 0 && p.loss >= self.loss.next(&mut self.prng) {
                return Fate::Drop;
            }
            let delays = !p.delay.is_zero() || !p.jitter.is_zero();
            if delays && p.reorder > 0 && p.reorder >= self.reorder.next(&mut self.prng) {
                return Fate::Now;
            }
            Fate::Later(self.delay())
        }

        /// DELAY ± JITTER, uniform over [DELAY − JITTER, DELAY + JITTER) (netem's `tabledist`
        /// without a distribution table; the draw is scaled rather than taken modulo, which
        /// keeps it uniform for any jitter), never below zero.
        fn delay(&mut self) -> Duration {
            let (mu, sigma) = (self.p.delay.as_nanos() as i128, self.p.jitter.as_nanos() as i128);
            if sigma == 0 {
                return self.p.delay;
            }
            let rnd = i128::from(self.delay.next(&mut self.prng));
            let d = mu - sigma + ((rnd * 2 * sigma) >> 32);
            Duration::from_nanos(d.max(0) as u64)
        }
    }

    /// A packet held until `due`; `n` is its arrival number, which orders packets due at the
    /// same time.
    struct Held<M> {
        due: Instant,
        n: u64,
        msg: M,
    }

    impl<M> PartialEq for Held<M> {
        fn eq(&self, other: &Self) -> bool {
            (self.due, self.n) == (other.due, other.n)
        }
    }

    impl<M> Eq for Held<M> {}

    impl<M> PartialOrd for Held<M> {
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }

    impl<M> Ord for Held<M> {
        fn cmp(&self, other: &Self) -> Ordering {
            (self.due, self.n).cmp(&(other.due, other.n))
        }
    }

    /// The held packets, earliest due first (netem's time-sorted queue), at most `limit` of
    /// them; counts the packets that left after one that arrived later.
    pub struct Schedule<M> {
        held: BinaryHeap<Reverse<Held<M>>>,
        limit: usize,
        arrived: u64,
        latest_sent: Option<u64>,
        overtaken: u64,
        held_max: usize,
    }

    impl<M> Schedule<M> {
        pub fn new(limit: usize) -> Self {
            Self { held: BinaryHeap::new(), limit, arrived: 0, latest_sent: None, overtaken: 0, held_max: 0 }
        }

        /// Numbers a packet as it arrives.
        pub fn arrival(&mut self) -> u64 {
            self.arrived += 1;
            self.arrived - 1
        }

        /// Holds packet `n` until `due`; gives it back when `limit` packets are held.
        pub fn hold(&mut self, n: u64, due: Instant, msg: M) -> Result<(), M> {
            if self.held.len() >= self.limit {
                return Err(msg);
            }
            self.held.push(Reverse(Held { due, n, msg }));
            self.held_max = self.held_max.max(self.held.len());
            Ok(())
        }

        /// Packet `n` leaves now.
        pub fn sent(&mut self, n: u64) {
            match self.latest_sent {
                Some(latest) if latest > n => self.overtaken += 1,
                _ => self.latest_sent = Some(n),
            }
        }

        /// The earliest held packet, if it is due at `now`.
        pub fn pop_due(&mut self, now: Instant) -> Option<M> {
            if self.held.peek()?.0.due > now {
                return None;
            }
            self.pop_any()
        }

        /// The earliest held packet, due or not.
        pub fn pop_any(&mut self) -> Option<M> {
            let Reverse(h) = self.held.pop()?;
            self.sent(h.n);
            Some(h.msg)
        }

        /// How long until the earliest held packet is due (None: none is held).
        pub fn next_due(&self, now: Instant) -> Option<Duration> {
            self.held.peek().map(|Reverse(h)| h.due.saturating_duration_since(now))
        }

        pub fn overtaken(&self) -> u64 {
            self.overtaken
        }

        pub fn held_max(&self) -> usize {
            self.held_max
        }
    }
}

mod proxy {
    use std::{
        io,
        net::{Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
        os::fd::AsRawFd,
        sync::{
            atomic::{AtomicBool, AtomicU64, Ordering},
            Arc,
        },
        time::Duration,
    };

    /// The destination a connection had before `REDIRECT` (conntrack's SO_ORIGINAL_DST).
    fn original_dst(s: &TcpStream) -> io::Result<SocketAddr> {
        const SO_ORIGINAL_DST: libc::c_int = 80;
        // SAFETY: zeroed sockaddr_in is valid; getsockopt writes at most `len` bytes.
        let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let r = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::SOL_IP,
                SO_ORIGINAL_DST,
                &mut sin as *mut _ as *mut libc::c_void,
                &mut len,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        Ok(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
    }

    fn pipe(mut from: TcpStream, mut to: TcpStream) {
        let _ = io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    }

    fn relay(client: TcpStream) -> io::Result<()> {
        let dst = original_dst(&client)?;
        let server = TcpStream::connect_timeout(&dst, Duration::from_secs(5))?;
        let (c2, s2) = (client.try_clone()?, server.try_clone()?);
        let up = std::thread::spawn(move || pipe(c2, s2));
        pipe(server, client);
        let _ = up.join();
        Ok(())
    }

    pub fn run(port: u16, stop: &AtomicBool) -> anyhow::Result<()> {
        let l = TcpListener::bind(("0.0.0.0", port))?;
        l.set_nonblocking(true)?;
        let relayed = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        eprintln!("mptcp-middlebox: ready, proxying port {port}");
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((c, _)) => {
                    c.set_nonblocking(false)?;
                    let (relayed, failed) = (Arc::clone(&relayed), Arc::clone(&failed));
                    std::thread::spawn(move || match relay(c) {
                        Ok(()) => relayed.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("mptcp-middlebox: proxy: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => return Err(e.into()),
            }
        }
        eprintln!(
            "{}",
            serde_json::json!({"proxied": relayed.load(Ordering::Relaxed),
                               "proxy_errors": failed.load(Ordering::Relaxed)})
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_segment(payload: &[u8], seq: u32) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ipv4([192, 0, 2, 1], [203, 0, 113, 2], 64)
            .tcp(40000, 80, seq, 65000)
            .ack(77);
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn split_keeps_bytes_and_sequence_and_valid_checksums() {
        let data: Vec<u8> = (0..1200u32).map(|i| i as u8).collect();
        let p = Pkt::parse(&v4_segment(&data, 1000)).unwrap();
        let pieces = split(p, 500).unwrap();
        assert_eq!(pieces.len(), 3);
        let mut joined = Vec::new();
        let mut seq = 1000;
        for piece in &pieces {
            let s = etherparse::SlicedPacket::from_ip(piece).unwrap();
            let Some(etherparse::TransportSlice::Tcp(t)) = s.transport else { panic!("tcp") };
            assert_eq!(t.sequence_number(), seq);
            let Some(etherparse::NetSlice::Ipv4(ip)) = s.net else { panic!("ipv4") };
            let h = t.to_header();
            assert_eq!(h.calc_checksum_ipv4(&ip.header().to_header(), t.payload()).unwrap(), t.checksum());
            assert_eq!(ip.header().to_header().calc_header_checksum(), ip.header().header_checksum());
            seq += t.payload().len() as u32;
            joined.extend_from_slice(t.payload());
        }
        assert_eq!(joined, data);
    }

    #[test]
    fn replace_all_keeps_length_and_counts() {
        let mut b = b"user-agent: mptcp-probe/0.1 and mptcp-probe/".to_vec();
        assert_eq!(replace_all(&mut b, b"mptcp-probe/", b"MPTCP-PROBE/"), 2);
        assert_eq!(&b, b"user-agent: MPTCP-PROBE/0.1 and MPTCP-PROBE/");
        assert_eq!(replace_all(&mut b, b"abc", b"ab"), 0);
        assert_eq!(replace_all(&mut b, b"", b""), 0);
    }

    #[test]
    fn garbage_is_not_parsed() {
        assert!(Pkt::parse(&[]).is_none());
        assert!(Pkt::parse(&[0x45, 0, 0]).is_none());
        let mut seg = v4_segment(b"x", 1);
        seg.truncate(30);
        assert!(Pkt::parse(&seg).is_none());
    }

    mod netem_decisions {
        use std::time::{Duration, Instant};

        use crate::netem::{probability, Fate, Netem, Params, Prng, Schedule};

        fn params(delay_ms: u64, jitter_ms: u64, loss: f64, reorder: f64, correlation: f64) -> Params {
            Params {
                delay: Duration::from_millis(delay_ms),
                jitter: Duration::from_millis(jitter_ms),
                loss: probability(loss),
                reorder: probability(reorder),
                correlation: probability(correlation),
            }
        }

        fn fates(p: Params, seed: u64, n: usize) -> Vec<Fate> {
            let mut netem = Netem::new(p, seed);
            (0..n).map(|_| netem.fate()).collect()
        }

        fn share(f: &[Fate], which: fn(&Fate) -> bool) -> f64 {
            f.iter().filter(|x| which(x)).count() as f64 / f.len() as f64
        }

        #[test]
        fn a_seed_gives_the_same_decisions_again_and_another_seed_others() {
            let p = params(20, 5, 1.0, 25.0, 25.0);
            assert_eq!(fates(p, 7, 5000), fates(p, 7, 5000));
            assert_ne!(fates(p, 7, 5000), fates(p, 8, 5000));
            let mut a = Prng::new(0);
            assert_ne!(a.next_u64(), a.next_u64(), "seed 0 is a seed like any other");
        }

        #[test]
        fn percentages_are_netem_fractions_of_u32_max() {
            assert_eq!(probability(0.0), 0);
            assert_eq!(probability(100.0), u32::MAX);
            assert_eq!(probability(50.0), u32::MAX / 2 + 1);
            assert_eq!(probability(250.0), u32::MAX, "clamped");
        }

        #[test]
        fn loss_drops_its_share_and_nothing_without_it() {
            let f = fates(params(0, 0, 10.0, 0.0, 0.0), 1, 100_000);
            let lost = share(&f, |x| *x == Fate::Drop);
            assert!((0.095..0.105).contains(&lost), "{lost}");
            assert!(fates(params(20, 5, 0.0, 0.0, 0.0), 1, 10_000).iter().all(|x| *x != Fate::Drop));
            assert!(fates(params(0, 0, 100.0, 0.0, 0.0), 1, 1000).iter().all(|x| *x == Fate::Drop));
        }

        #[test]
        fn delay_with_jitter_stays_in_its_interval_and_averages_the_delay() {
            let f = fates(params(20, 5, 0.0, 0.0, 0.0), 3, 50_000);
            let ms: Vec<f64> = f
                .iter()
                .map(|x| match x {
                    Fate::Later(d) => d.as_secs_f64() * 1000.0,
                    other => panic!("{other:?} without loss or reordering"),
                })
                .collect();
            assert!(ms.iter().all(|d| (15.0..25.0).contains(d)), "outside 20 ± 5 ms");
            let mean = ms.iter().sum::<f64>() / ms.len() as f64;
            assert!((19.9..20.1).contains(&mean), "{mean}");
            // Both halves of the interval are used.
            assert!(ms.iter().any(|d| *d < 16.0) && ms.iter().any(|d| *d > 24.0));
            // No jitter: exactly the delay.
            let fixed = fates(params(10, 0, 0.0, 0.0, 0.0), 3, 100);
            assert!(fixed.iter().all(|x| *x == Fate::Later(Duration::from_millis(10))));
            // Jitter larger than the delay never gives a negative delay.
            assert!(fates(params(1, 5, 0.0, 0.0, 0.0), 3, 1000).iter().all(|x| matches!(x, Fate::Later(_))));
        }

        #[test]
        fn reordering_sends_its_share_at_once_and_needs_a_delay() {
            let f = fates(params(10, 0, 0.0, 25.0, 0.0), 5, 100_000);
            let now = share(&f, |x| *x == Fate::Now);
            assert!((0.24..0.26).contains(&now), "{now}");
            assert!(f.iter().all(|x| matches!(x, Fate::Now | Fate::Later(_))));
            // Without a delay there is nothing to overtake: every packet goes in order.
            let none = fates(params(0, 0, 0.0, 25.0, 0.0), 5, 1000);
            assert!(none.iter().all(|x| *x == Fate::Later(Duration::ZERO)));
        }

        /// Runs of the same decision, on average.
        fn mean_run(f: &[Fate], which: fn(&Fate) -> bool) -> f64 {
            let (mut runs, mut inside, mut len) = (0u32, false, 0u32);
            for x in f {
                if which(x) {
                    len += 1;
                    if !inside {
                        runs += 1;
                    }
                }
                inside = which(x);
            }
            f64::from(len) / f64::from(runs.max(1))
        }

        #[test]
        fn correlation_makes_losses_and_reorderings_come_in_runs() {
            let lost = |x: &Fate| *x == Fate::Drop;
            let at_once = |x: &Fate| *x == Fate::Now;
            let plain = fates(params(10, 0, 30.0, 0.0, 0.0), 9, 100_000);
            let bursty = fates(params(10, 0, 30.0, 0.0, 75.0), 9, 100_000);
            assert!(mean_run(&bursty, lost) > 1.5 * mean_run(&plain, lost));
            // The share stays what was asked.
            let lost_share = share(&bursty, lost);
            assert!((0.28..0.32).contains(&lost_share), "{lost_share}");
            let plain = fates(params(10, 0, 0.0, 30.0, 0.0), 9, 100_000);
            let runs = fates(params(10, 0, 0.0, 30.0, 75.0), 9, 100_000);
            assert!(mean_run(&runs, at_once) > 1.5 * mean_run(&plain, at_once));
            let at_once_share = share(&runs, at_once);
            assert!((0.28..0.32).contains(&at_once_share), "{at_once_share}");
        }

        /// Packets arriving 1 ms apart through a netem: the order they leave in.
        fn departures(p: Params, seed: u64, n: u64, limit: usize) -> (Vec<u64>, Schedule<u64>) {
            let mut netem = Netem::new(p, seed);
            let mut held = Schedule::new(limit);
            let t0 = Instant::now();
            let mut out = Vec::new();
            for i in 0..n {
                let now = t0 + Duration::from_millis(i);
                while let Some(m) = held.pop_due(now) {
                    out.push(m);
                }
                let k = held.arrival();
                assert_eq!(k, i);
                match netem.fate() {
                    Fate::Drop => {}
                    Fate::Now => {
                        held.sent(k);
                        out.push(k);
                    }
                    Fate::Later(d) => {
                        let _ = held.hold(k, now + d, k);
                    }
                }
            }
            while let Some(m) = held.pop_any() {
                out.push(m);
            }
            (out, held)
        }

        #[test]
        fn jitter_lets_later_packets_overtake_and_a_fixed_delay_keeps_the_order() {
            let (order, held) = departures(params(20, 5, 0.0, 0.0, 0.0), 11, 1000, 1000);
            assert_eq!(order.len(), 1000);
            assert!(held.overtaken() > 100, "{} overtaken", held.overtaken());
            assert!(order.windows(2).any(|w| w[0] > w[1]));
            let (fixed, held) = departures(params(20, 0, 0.0, 0.0, 0.0), 11, 1000, 1000);
            assert!(fixed.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(held.overtaken(), 0);
            assert!(held.held_max() >= 20, "about 20 packets in flight: {}", held.held_max());
        }

        #[test]
        fn reordered_packets_overtake_the_delayed_ones() {
            let (order, held) = departures(params(10, 0, 0.0, 25.0, 0.0), 13, 1000, 1000);
            assert_eq!(order.len(), 1000);
            // A delayed packet leaves after the packets sent at once during its delay.
            assert!(held.overtaken() > 100, "{}", held.overtaken());
        }

        #[test]
        fn the_limit_bounds_what_is_held() {
            let mut held = Schedule::new(3);
            let t = Instant::now() + Duration::from_secs(1);
            for i in 0..3 {
                let n = held.arrival();
                assert!(held.hold(n, t, i).is_ok());
            }
            let n = held.arrival();
            assert_eq!(held.hold(n, t, 99), Err(99), "the fourth is refused");
            assert_eq!(held.held_max(), 3);
            assert!(held.pop_due(Instant::now()).is_none(), "nothing is due yet");
            assert!(held.next_due(Instant::now()).is_some_and(|d| d > Duration::from_millis(900)));
            // Due at the same time: in arrival order.
            assert_eq!((held.pop_due(t), held.pop_due(t), held.pop_due(t)), (Some(0), Some(1), Some(2)));
            assert_eq!(held.next_due(t), None);
        }
    }
}
