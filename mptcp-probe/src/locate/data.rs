//! Copies of a data segment of a live MPTCP connection, with increasing TTL / hop limit: where
//! a box strips DSS from data (`dss_stripped`). A box that does so is often stateful (it acts
//! after so many bytes of a connection, or only on connections it tracks), so a segment of no
//! connection proves nothing: the copies belong to a connection of the bulk test's kind that
//! has carried as many bytes as that test, and repeat its latest segment (in its window, as a
//! retransmission would), with the DSS option its data carried while MPTCP was up. They expire
//! before the server; each router quotes the copy as it reached it.

use std::{
    io::{self, Write as _},
    mem::MaybeUninit,
    net::{IpAddr, Shutdown, SocketAddr, TcpStream},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use etherparse::{Ipv4HeaderSlice, Ipv6HeaderSlice, TcpHeader, TcpHeaderSlice};
use mptcp_probe_common::options::{
    opt_flags, option_area, parse_tcp_options, subtype, TCPOPT_NOP, TCPOPT_TIMESTAMP,
};
use mptcp_probe_model::{
    locate::{Answer, Hop, ProbeKind, Sent, Trace},
    Subtype, Transport,
};
use socket2::{Domain, Protocol, Socket, Type};

use super::{
    answered_ttl,
    probe::{raw, Prober, Reply},
    quote, record, silent, LocateOptions,
};
use crate::{
    host::sock,
    protocol::{fill_pattern, BulkMode, Preamble, MAX_BULK_BYTES},
};

/// Payload bytes a copy carries: enough for boxes that act on segments of some size only, small
/// enough for a router's quote (576 bytes for IPv4) to hold them with the headers.
const COPY_PAYLOAD: usize = 256;
/// Packets one drain of the capture takes at most (it sees every packet of the host).
const DRAIN_MAX: usize = 4096;
/// What the connection announces beyond what it sends, so that it stays open to be copied.
const HELD_OPEN: u64 = 1 << 20;
/// `ETH_P_ALL`, `PACKET_OUTGOING` (linux/if_packet.h, linux/if_ether.h).
const ETH_P_ALL: u16 = 0x0003;
const PACKET_OUTGOING: u8 = 4;

/// A data segment of the connection as it left this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    /// The timestamp option's (value, echo reply).
    pub ts: Option<(u32, u32)>,
    /// The DSS option, whole (kind, length, subtype ...).
    pub dss: Option<Vec<u8>>,
    /// The first [`COPY_PAYLOAD`] payload bytes.
    pub payload: Vec<u8>,
}

/// A TCP segment from `local` to `remote` with payload, from the network header of a packet
/// (what a packet socket of type SOCK_DGRAM gives).
pub fn parse_segment(packet: &[u8], local: SocketAddr, remote: SocketAddr) -> Option<Segment> {
    let (src, dst, tcp) = match packet.first()? >> 4 {
        4 => {
            let ip = Ipv4HeaderSlice::from_slice(packet).ok()?;
            if ip.protocol().0 != 6 {
                return None;
            }
            let end = (ip.total_len() as usize).min(packet.len());
            let hl = ip.slice().len();
            (IpAddr::V4(ip.source_addr()), IpAddr::V4(ip.destination_addr()), packet.get(hl..end)?)
        }
        6 => {
            let ip = Ipv6HeaderSlice::from_slice(packet).ok()?;
            // Extension headers are not followed: the test connection has none.
            if ip.next_header().0 != 6 {
                return None;
            }
            let end = (40 + ip.payload_length() as usize).min(packet.len());
            (IpAddr::V6(ip.source_addr()), IpAddr::V6(ip.destination_addr()), packet.get(40..end)?)
        }
        _ => return None,
    };
    let h = TcpHeaderSlice::from_slice(tcp).ok()?;
    if SocketAddr::new(src, h.source_port()) != local || SocketAddr::new(dst, h.destination_port()) != remote
    {
        return None;
    }
    let payload = &tcp[h.slice().len()..];
    if payload.is_empty() || h.syn() || h.fin() || h.rst() {
        return None;
    }
    let options = h.options();
    let ts = timestamps(options);
    Some(Segment {
        seq: h.sequence_number(),
        ack: h.acknowledgment_number(),
        window: h.window_size(),
        ts,
        dss: quote::mptcp_option(options, subtype::DSS).map(<[u8]>::to_vec),
        payload: payload[..payload.len().min(COPY_PAYLOAD)].to_vec(),
    })
}

/// The timestamp option's (value, echo reply), read by the project's option parser.
fn timestamps(area: &[u8]) -> Option<(u32, u32)> {
    let (buf, len) = option_area(area);
    let o = parse_tcp_options(&buf, len, false);
    (o.flags & opt_flags::TIMESTAMPS != 0).then_some((o.ts_val, o.ts_ecr))
}

/// The copy from `local` to `remote`: the latest segment's numbers, NOP NOP TS and the DSS its
/// connection carried, its first payload bytes, `seq` as given (each TTL its own), checksummed.
pub fn copy_bytes(latest: &Segment, dss: &[u8], seq: u32, local: SocketAddr, remote: SocketAddr) -> Vec<u8> {
    let mut h = TcpHeader::new(local.port(), remote.port(), seq, latest.window);
    h.ack = true;
    h.psh = true;
    h.acknowledgment_number = latest.ack;
    let mut opts = Vec::new();
    if let Some((val, ecr)) = latest.ts {
        opts.extend_from_slice(&[TCPOPT_NOP, TCPOPT_NOP, TCPOPT_TIMESTAMP, 10]);
        opts.extend_from_slice(&val.to_be_bytes());
        opts.extend_from_slice(&ecr.to_be_bytes());
    }
    opts.extend_from_slice(dss);
    while opts.len() % 4 != 0 {
        opts.push(TCPOPT_NOP);
    }
    h.set_options_raw(&opts).expect("TS and a DSS fit the option area");
    let payload = &latest.payload;
    h.checksum = match (local.ip(), remote.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => h.calc_checksum_ipv4_raw(s.octets(), d.octets(), payload),
        (IpAddr::V6(s), IpAddr::V6(d)) => h.calc_checksum_ipv6_raw(s.octets(), d.octets(), payload),
        _ => unreachable!("one family per connection"),
    }
    .expect("a small payload");
    let mut out = h.to_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// A packet socket that sees this host's outgoing packets (CAP_NET_RAW).
struct Capture(Socket);

impl Capture {
    fn open() -> io::Result<Self> {
        let s = raw(Domain::PACKET, Type::DGRAM, Protocol::from(i32::from(ETH_P_ALL.to_be())))?;
        // Room for the packets between two reads of a fast sender.
        let _ = s.set_recv_buffer_size(8 << 20);
        s.set_nonblocking(true)?;
        Ok(Self(s))
    }

    /// The outgoing packets queued now (at most [`DRAIN_MAX`]), as `f` takes them.
    fn drain(&self, mut f: impl FnMut(&[u8])) -> io::Result<()> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
        for _ in 0..DRAIN_MAX {
            // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: a buffer of its length, an address of its length.
            let n = unsafe {
                libc::recvfrom(
                    self.0.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(()),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            if from.sll_pkttype == PACKET_OUTGOING {
                // SAFETY: recvfrom initialised the first n bytes.
                f(unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), n as usize) });
            }
        }
        Ok(())
    }
}

/// The connection's segments seen so far: the DSS of its data, its latest data segment of
/// [`COPY_PAYLOAD`] bytes or more (a short tail would make a copy smaller than what a box may
/// act on).
#[derive(Default)]
struct Seen {
    dss: Option<Vec<u8>>,
    latest: Option<Segment>,
    segments: u64,
}

impl Seen {
    fn take(&mut self, s: Segment) {
        self.segments += 1;
        if self.dss.is_none() {
            self.dss.clone_from(&s.dss);
        }
        let full = |x: &Segment| x.payload.len() >= COPY_PAYLOAD;
        if self.latest.as_ref().is_none_or(|l| full(&s) || !full(l)) {
            self.latest = Some(s);
        }
    }
}

/// Opens the connection, sends `bytes` of the bulk test's upload on it while watching its
/// segments leave, and with it still open sends copies of its latest segment with TTL 1 up to
/// `below` - 1 (the server's hop, from the SYN trace). The trace, and why it stopped early.
pub fn trace(
    destination: SocketAddr,
    test_id: &str,
    bytes: u64,
    below: u8,
    opts: &LocateOptions,
    deadline: Instant,
) -> io::Result<(Trace, Option<String>)> {
    let capture = Capture::open()?;
    let socket = sock::socket(&destination, Transport::Mptcp)?;
    socket.connect_timeout(&destination.into(), opts.wait.max(Duration::from_secs(3)))?;
    // A send that stalls (the path broke the connection) ends the copying instead of hanging.
    socket.set_write_timeout(Some(Duration::from_secs(5)))?;
    let stream: TcpStream = socket.into();
    let local = sock::canonical(stream.local_addr()?);
    // More announced than sent: the server waits on, the connection stays open while probed.
    let bytes = bytes.min(MAX_BULK_BYTES - HELD_OPEN);
    let preamble = Preamble { test_id: test_id.into(), mode: BulkMode::Up, bytes: bytes + HELD_OPEN };
    let mut seen = Seen::default();
    let sent = std::thread::scope(|scope| -> io::Result<()> {
        let writer = scope.spawn(|| -> io::Result<()> {
            let mut w = &stream;
            w.write_all(preamble.line().as_bytes())?;
            let mut buf = vec![0u8; 64 * 1024];
            let mut off = 0u64;
            while off < bytes && Instant::now() < deadline {
                let k = (bytes - off).min(buf.len() as u64) as usize;
                fill_pattern(&mut buf[..k], off);
                match w.write_all(&buf[..k]) {
                    Ok(()) => off += k as u64,
                    // The path stalled the connection (as boxes that strip DSS can): what it
                    // took has passed the box, and the connection is still open to be copied.
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                        break
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
        while !writer.is_finished() {
            capture.drain(|p| seen_packet(&mut seen, p, local, destination))?;
            std::thread::sleep(Duration::from_millis(2));
        }
        writer.join().map_err(|_| io::Error::other("the sending thread panicked"))?
    });
    sent.map_err(|e| io::Error::new(e.kind(), format!("the connection to probe with failed: {e}")))?;
    // Let the last segments leave and be answered.
    std::thread::sleep(Duration::from_millis(300));
    capture.drain(|p| seen_packet(&mut seen, p, local, destination))?;
    drop(capture);
    let probe = Sent { mss: 0, mptcp: Some(Subtype::Dss), mptcp_len: None, seq: 0 };
    let mut empty = Trace {
        probe: ProbeKind::DataMptcp,
        destination,
        sent: probe,
        hops: Vec::new(),
        reached: false,
        destination_hop: Some(below),
    };
    let (Some(latest), Some(dss)) = (seen.latest.clone(), seen.dss.clone()) else {
        let why = if seen.segments == 0 {
            format!("no data segment of the connection to {destination} was seen leaving this host")
        } else {
            format!("the connection to {destination} sent no data segment with DSS: it was not MPTCP")
        };
        let _ = stream.shutdown(Shutdown::Both);
        return Ok((empty, Some(why)));
    };
    if !connection_open(&stream) {
        return Ok((empty, Some(format!("the connection to {destination} ended before it could be copied"))));
    }
    empty.sent =
        Sent { mss: 0, mptcp: Some(Subtype::Dss), mptcp_len: Some(dss.len() as u8), seq: latest.seq };
    let result = copies(&empty, &latest, &dss, local, opts, deadline);
    let _ = stream.shutdown(Shutdown::Both);
    let (hops, stopped) = result?;
    Ok((Trace { hops, ..empty }, stopped))
}

fn seen_packet(seen: &mut Seen, packet: &[u8], local: SocketAddr, remote: SocketAddr) {
    if let Some(s) = parse_segment(packet, local, remote) {
        seen.take(s);
    }
}

/// Whether the kernel still has the connection established.
fn connection_open(stream: &TcpStream) -> bool {
    sock::tcp_info(stream).is_some_and(|i| i.tcpi_state == crate::host::diag::TCP_ESTABLISHED)
}

/// The copies, TTL by TTL, and what each hop quoted of them.
fn copies(
    t: &Trace,
    latest: &Segment,
    dss: &[u8],
    local: SocketAddr,
    opts: &LocateOptions,
    deadline: Instant,
) -> io::Result<(Vec<Hop>, Option<String>)> {
    let destination = t.destination;
    let p = Prober::from(local, destination)?;
    let base = latest.seq;
    let below = t.destination_hop.unwrap_or(opts.max_hops + 1).min(opts.max_hops + 1);
    let mut hops: Vec<Hop> = Vec::new();
    for ttl in 1..below {
        if Instant::now() >= deadline {
            break;
        }
        let bytes = copy_bytes(latest, dss, base.wrapping_add(ttl as u32 - 1), local, destination);
        hops.push(silent(ttl));
        'tries: for _ in 0..=opts.retries {
            let sent_at = Instant::now();
            if let Err(e) = p.send_bytes(&bytes, ttl) {
                hops.pop();
                return Ok((
                    hops,
                    Some(format!("sending the data copy with TTL {ttl} to {destination} failed: {e}")),
                ));
            }
            while let Some(reply) = p.receive(sent_at, opts.wait)? {
                let (from, quote, after) = match reply {
                    Reply::Icmp { from, quote, after } => (from, quote, after),
                    // The box in the path may forget a connection that was reset: copies past
                    // that would prove nothing.
                    Reply::Destination { synack: false, .. } => {
                        let why =
                            format!("the server reset the connection to {destination} while it was copied");
                        return Ok((hops, Some(why)));
                    }
                    Reply::Destination { synack: true, .. } => continue,
                };
                let at = answered_ttl(quote.tcp.seq, base, ttl);
                let state = quote::option_state(&quote.tcp, subtype::DSS, dss);
                if record(&mut hops[at as usize - 1], from, &quote, state, (at == ttl).then_some(after))
                    && at == ttl
                {
                    break 'tries;
                }
            }
        }
        if hops.last().map(|h| h.answer) == Some(Answer::Unreachable) {
            break;
        }
        std::thread::sleep(opts.gap);
    }
    Ok((hops, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mptcp_probe_common::options::TCPOPT_MPTCP;

    const LOCAL: &str = "192.0.2.1:40000";
    const REMOTE: &str = "203.0.113.2:8001";

    /// An IPv4 data segment of the connection with NOP NOP TS and a DSS (data ACK 8 bytes,
    /// mapping with 8-byte DSN).
    fn packet(dss: bool) -> Vec<u8> {
        let latest = Segment {
            seq: 1000,
            ack: 2000,
            window: 502,
            ts: Some((7, 9)),
            dss: None,
            payload: vec![0xab; 300],
        };
        let d = [
            TCPOPT_MPTCP,
            20,
            subtype::DSS << 4,
            0x0f,
            1,
            2,
            3,
            4,
            5,
            6,
            7,
            8,
            9,
            10,
            11,
            12,
            13,
            14,
            15,
            16,
        ];
        let local: SocketAddr = LOCAL.parse().unwrap();
        let remote: SocketAddr = REMOTE.parse().unwrap();
        let tcp = copy_bytes(&latest, if dss { &d } else { &[] }, 1000, local, remote);
        let mut ip = etherparse::Ipv4Header::new(
            tcp.len() as u16,
            64,
            etherparse::IpNumber::TCP,
            [192, 0, 2, 1],
            [203, 0, 113, 2],
        )
        .unwrap();
        ip.header_checksum = ip.calc_header_checksum();
        let mut out = ip.to_bytes().to_vec();
        out.extend_from_slice(&tcp);
        out
    }

    #[test]
    fn a_data_segment_of_the_connection_is_read_with_its_dss_and_timestamps() {
        let local: SocketAddr = LOCAL.parse().unwrap();
        let remote: SocketAddr = REMOTE.parse().unwrap();
        let s = parse_segment(&packet(true), local, remote).expect("the connection's segment");
        assert_eq!((s.seq, s.ack, s.window, s.ts), (1000, 2000, 502, Some((7, 9))));
        assert_eq!(s.dss.as_deref().map(|d| (d[0], d[1], d[2] >> 4)), Some((TCPOPT_MPTCP, 20, subtype::DSS)));
        assert_eq!(s.payload.len(), COPY_PAYLOAD, "only the first bytes are kept");
        assert_eq!(parse_segment(&packet(false), local, remote).map(|s| s.dss), Some(None));
        // Another connection's, the other direction's, and garbage are not.
        assert_eq!(parse_segment(&packet(true), "192.0.2.1:40001".parse().unwrap(), remote), None);
        assert_eq!(parse_segment(&packet(true), remote, local), None);
        assert_eq!(parse_segment(&[0x45, 0, 0], local, remote), None);
        assert_eq!(parse_segment(&[], local, remote), None);
    }

    #[test]
    fn the_copy_has_a_valid_checksum_and_finds_its_dss_again() {
        let p = packet(true);
        let tcp = &p[20..];
        let h = TcpHeaderSlice::from_slice(tcp).unwrap();
        let sum = h
            .to_header()
            .calc_checksum_ipv4_raw([192, 0, 2, 1], [203, 0, 113, 2], &tcp[h.slice().len()..])
            .unwrap();
        assert_eq!(sum, h.checksum());
        assert_eq!(h.slice().len(), 20 + 12 + 20);
        assert!(h.ack() && h.psh() && !h.syn());
        assert_eq!(quote::mptcp_option(h.options(), subtype::DSS).map(<[u8]>::len), Some(20));
        assert_eq!(quote::mptcp_option(h.options(), subtype::MP_CAPABLE), None);
        // A malformed area ends the walk instead of reading past it.
        assert_eq!(quote::mptcp_option(&[TCPOPT_MPTCP, 40, 0x20], subtype::DSS), None);
        assert_eq!(quote::mptcp_option(&[TCPOPT_NOP, TCPOPT_MPTCP], subtype::DSS), None);
    }

    #[test]
    fn the_copy_is_made_of_the_latest_full_segment_with_the_first_dss() {
        let seg = |seq: u32, len: usize, dss: bool| Segment {
            seq,
            ack: 1,
            window: 1,
            ts: None,
            dss: dss.then(|| vec![TCPOPT_MPTCP, 4, subtype::DSS << 4, seq as u8]),
            payload: vec![0; len],
        };
        let mut seen = Seen::default();
        seen.take(seg(1, 10, false));
        assert_eq!(seen.latest.as_ref().map(|s| s.seq), Some(1), "a short one until a full one comes");
        seen.take(seg(2, COPY_PAYLOAD, true));
        seen.take(seg(3, COPY_PAYLOAD, true));
        seen.take(seg(4, 40, false));
        assert_eq!(seen.latest.as_ref().map(|s| s.seq), Some(3), "not the short tail");
        assert_eq!(seen.dss.as_deref().map(|d| d[3]), Some(2), "the first DSS seen");
        assert_eq!(seen.segments, 4);
    }
}
