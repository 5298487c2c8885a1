//! The probes: the test's SYN built by hand and sent on a raw socket with a chosen TTL / hop
//! limit (the kernel refuses `IP_TTL` on MPTCP sockets), and the answers: ICMP errors quoting
//! it, or the destination's SYN/ACK or RST.

use std::{
    io,
    mem::MaybeUninit,
    net::{IpAddr, SocketAddr, TcpListener, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use etherparse::{Ipv4HeaderSlice, TcpHeader, TcpHeaderSlice};
use mptcp_probe_common::options::{
    subtype, TCPOPT_MPTCP, TCPOPT_MSS, TCPOPT_NOP, TCPOPT_SACK_PERM, TCPOPT_TIMESTAMP, TCPOPT_WSCALE,
};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::quote::{self, IcmpQuote};

/// MP_CAPABLE version 1 in a SYN, HMAC-SHA256 (flag H), as Linux sends it without DSS
/// checksums.
const MP_CAPABLE_SYN: [u8; 4] = [TCPOPT_MPTCP, 4, subtype::MP_CAPABLE << 4 | 1, 0x01];
/// The same as (length, version, flags), as the option parser gives them back.
pub const MP_CAPABLE_SYN_OPTION: (u8, u8, u8) =
    (MP_CAPABLE_SYN[1], MP_CAPABLE_SYN[2] & 0x0f, MP_CAPABLE_SYN[3]);
/// The window and window scale Linux puts in a SYN.
const WINDOW: u16 = 64240;
const WSCALE: u8 = 7;

/// One probe SYN's header fields.
#[derive(Clone, Copy, Debug)]
pub struct Syn {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub seq: u32,
    pub mss: u16,
    pub mptcp: bool,
}

impl Syn {
    /// The TCP header with its options (MSS, SACK permitted, timestamps, window scale and
    /// MP_CAPABLE, in Linux's order) and its checksum.
    pub fn bytes(&self) -> Vec<u8> {
        let mut h = TcpHeader::new(self.source.port(), self.destination.port(), self.seq, WINDOW);
        h.syn = true;
        let mut opts = vec![TCPOPT_MSS, 4];
        opts.extend_from_slice(&self.mss.to_be_bytes());
        opts.extend_from_slice(&[TCPOPT_SACK_PERM, 2, TCPOPT_TIMESTAMP, 10]);
        opts.extend_from_slice(&1u32.to_be_bytes());
        opts.extend_from_slice(&0u32.to_be_bytes());
        opts.extend_from_slice(&[TCPOPT_NOP, TCPOPT_WSCALE, 3, WSCALE]);
        if self.mptcp {
            opts.extend_from_slice(&MP_CAPABLE_SYN);
        }
        h.set_options_raw(&opts).expect("24 option bytes fit");
        h.checksum = match (self.source.ip(), self.destination.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => h.calc_checksum_ipv4_raw(s.octets(), d.octets(), &[]),
            (IpAddr::V6(s), IpAddr::V6(d)) => h.calc_checksum_ipv6_raw(s.octets(), d.octets(), &[]),
            _ => unreachable!("one family per probe"),
        }
        .expect("no payload");
        h.to_bytes().to_vec()
    }
}

/// What came back for a probe.
#[derive(Clone, Debug)]
pub enum Reply {
    Icmp {
        from: IpAddr,
        quote: Box<IcmpQuote>,
        after: Duration,
    },
    /// The destination answered the SYN itself: SYN/ACK (true) or RST (false).
    Destination {
        synack: bool,
        after: Duration,
    },
}

/// The raw sockets of one trace, and the source port it holds for its probes.
pub struct Prober {
    tcp: Socket,
    icmp: Socket,
    /// Holds the probes' source port, so that no connection of this host uses it meanwhile
    /// (None: the port is a live connection's, whose segments are copied).
    _port: Option<TcpListener>,
    pub source: SocketAddr,
    destination: SocketAddr,
}

/// Raw (and packet) sockets need CAP_NET_RAW: that, said plainly.
pub(super) fn raw(domain: Domain, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    Socket::new(domain, ty, Some(protocol)).map_err(|e| {
        if e.raw_os_error() == Some(libc::EPERM) {
            io::Error::new(e.kind(), "raw sockets need CAP_NET_RAW, which this process does not have")
        } else {
            e
        }
    })
}

impl Prober {
    pub fn new(destination: SocketAddr) -> io::Result<Self> {
        // The source address the kernel's route gives for the destination.
        let any: SocketAddr = match destination {
            SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("address"),
            SocketAddr::V6(_) => "[::]:0".parse().expect("address"),
        };
        let udp = UdpSocket::bind(any)?;
        udp.connect(destination)?;
        let port = TcpListener::bind(SocketAddr::new(udp.local_addr()?.ip(), 0))?;
        let source = port.local_addr()?;
        Self::sockets(source, destination, Some(port))
    }

    /// Probes in the name of a live connection from `source` (its copies).
    pub fn from(source: SocketAddr, destination: SocketAddr) -> io::Result<Self> {
        Self::sockets(source, destination, None)
    }

    fn sockets(source: SocketAddr, destination: SocketAddr, port: Option<TcpListener>) -> io::Result<Self> {
        let (domain, icmp) = match destination {
            SocketAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
            SocketAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
        };
        let tcp = raw(domain, Type::RAW, Protocol::TCP)?;
        // The copies leave from the connection's own address.
        tcp.bind(&SockAddr::from(SocketAddr::new(source.ip(), 0)))?;
        let icmp = raw(domain, Type::RAW, icmp)?;
        Ok(Self { tcp, icmp, _port: port, source, destination })
    }

    /// Sends one probe SYN with this TTL / hop limit.
    pub fn send(&self, syn: &Syn, ttl: u8) -> io::Result<()> {
        self.send_bytes(&syn.bytes(), ttl)
    }

    /// Sends a TCP segment (header and payload, checksummed) with this TTL / hop limit.
    pub fn send_bytes(&self, tcp: &[u8], ttl: u8) -> io::Result<()> {
        match self.destination {
            SocketAddr::V4(_) => self.tcp.set_ttl_v4(ttl as u32)?,
            SocketAddr::V6(_) => self.tcp.set_unicast_hops_v6(ttl as u32)?,
        }
        // Raw sockets take no port: the TCP header carries it.
        let to = SockAddr::from(SocketAddr::new(self.destination.ip(), 0));
        self.tcp.send_to(tcp, &to)?;
        Ok(())
    }

    /// Waits up to `wait` after `sent_at` for an answer to one of this trace's probes (a late
    /// answer to an earlier TTL is told apart by the caller).
    pub fn receive(&self, sent_at: Instant, wait: Duration) -> io::Result<Option<Reply>> {
        let deadline = sent_at + wait;
        let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let mut fds = [
                libc::pollfd { fd: self.icmp.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.tcp.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            ];
            // SAFETY: two valid pollfds.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, left.as_millis().max(1) as libc::c_int) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for (i, sock) in [&self.icmp, &self.tcp].into_iter().enumerate() {
                if fds[i].revents & libc::POLLIN == 0 {
                    continue;
                }
                let (len, from) = sock.recv_from(&mut buf)?;
                // SAFETY: recv_from initialised the first `len` bytes.
                let bytes: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), len) };
                let Some(from) = from.as_socket().map(|a| a.ip()) else { continue };
                let after = sent_at.elapsed();
                let reply = if i == 0 {
                    self.icmp_reply(bytes, from, after)
                } else {
                    self.tcp_reply(bytes, from, after)
                };
                if let Some(r) = reply {
                    return Ok(Some(r));
                }
            }
        }
    }

    /// An ICMP error quoting one of this trace's probes.
    fn icmp_reply(&self, bytes: &[u8], from: IpAddr, after: Duration) -> Option<Reply> {
        let q = match self.destination {
            SocketAddr::V4(_) => quote::parse_v4(bytes),
            SocketAddr::V6(_) => quote::parse_v6(bytes),
        }
        .ok()?;
        let ours = q.destination == self.destination.ip()
            && q.tcp.source_port == self.source.port()
            && q.tcp.destination_port == self.destination.port();
        ours.then(|| Reply::Icmp { from, quote: Box::new(q), after })
    }

    /// The destination's SYN/ACK or RST to this trace's source port.
    fn tcp_reply(&self, bytes: &[u8], from: IpAddr, after: Duration) -> Option<Reply> {
        if from != self.destination.ip() {
            return None;
        }
        // A raw IPv4 socket gives the IP header too; IPv6 gives the TCP segment only.
        let tcp = match self.destination {
            SocketAddr::V4(_) => &bytes[Ipv4HeaderSlice::from_slice(bytes).ok()?.slice().len()..],
            SocketAddr::V6(_) => bytes,
        };
        let h = TcpHeaderSlice::from_slice(tcp).ok()?;
        if h.source_port() != self.destination.port() || h.destination_port() != self.source.port() {
            return None;
        }
        if h.syn() && h.ack() {
            Some(Reply::Destination { synack: true, after })
        } else if h.rst() {
            Some(Reply::Destination { synack: false, after })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 16-bit ones' complement sum of the pseudo-header and the segment (RFC 1071): 0xffff
    /// when the checksum in it is right.
    fn ones_complement(parts: &[&[u8]]) -> u16 {
        let bytes: Vec<u8> = parts.concat();
        let mut sum: u32 =
            bytes.chunks(2).map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0))).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn the_probe_syn_carries_linuxs_options_and_a_valid_checksum() {
        let syn = Syn {
            source: "192.0.2.1:50000".parse().unwrap(),
            destination: "203.0.113.2:80".parse().unwrap(),
            seq: 123456,
            mss: 1460,
            mptcp: true,
        };
        let b = syn.bytes();
        assert_eq!(b.len(), 44);
        let h = TcpHeaderSlice::from_slice(&b).unwrap();
        assert!(h.syn() && !h.ack());
        assert_eq!((h.source_port(), h.destination_port(), h.sequence_number()), (50000, 80, 123456));
        assert_eq!(&b[40..], &MP_CAPABLE_SYN);
        assert_eq!(
            ones_complement(&[&[192, 0, 2, 1, 203, 0, 113, 2, 0, 6, 0, 44], &b]),
            0xffff,
            "IPv4 checksum"
        );
        let plain = Syn { mptcp: false, ..syn }.bytes();
        assert_eq!(plain.len(), 40);
        let (buf, len) = mptcp_probe_common::options::option_area(&plain[20..]);
        let opts = mptcp_probe_common::options::parse_tcp_options(&buf, len, false);
        assert_eq!((opts.mss, opts.mptcp_count), (1460, 0));
        let v6 = Syn {
            source: "[2001:db8:1::1]:50000".parse().unwrap(),
            destination: "[2001:db8:3::2]:80".parse().unwrap(),
            ..syn
        };
        let b = v6.bytes();
        let (s, d) = (
            "2001:db8:1::1".parse::<std::net::Ipv6Addr>().unwrap(),
            "2001:db8:3::2".parse::<std::net::Ipv6Addr>().unwrap(),
        );
        let pseudo: Vec<u8> = [&s.octets()[..], &d.octets(), &[0, 0, 0, 44, 0, 0, 0, 6]].concat();
        assert_eq!(ones_complement(&[&pseudo, &b]), 0xffff, "IPv6 checksum");
    }
}
