//! What a hop's ICMP message quotes of a probe, and how that compares with what was sent.
//!
//! A router that drops a packet for its TTL answers with ICMP time exceeded (ICMPv6 for IPv6)
//! and quotes the packet as it arrived there: Linux quotes up to 576 bytes (IPv4) or the minimum
//! MTU (IPv6), so the whole TCP header with its options; RFC 792 asks only for the IP header and
//! 8 bytes of TCP (ports and sequence number). RFC 4884 routers put a length of the quote in the
//! ICMP header when extensions (MPLS labels) follow it.

use std::net::IpAddr;

use etherparse::{Icmpv4Slice, Icmpv4Type, Icmpv6Slice, Icmpv6Type, Ipv4HeaderSlice, Ipv6HeaderSlice};
use mptcp_probe_common::options::{
    option_area, parse_tcp_options, subtype, OptionWalk, Step, TcpOptions, TCPOPT_MPTCP,
};
use mptcp_probe_model::locate::{Answer, Quoted};

/// IP protocol number of TCP.
const IPPROTO_TCP: u8 = 6;
/// A TCP header without options.
const TCP_HEADER: usize = 20;

/// The probe's TCP header as a hop quoted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotedTcp {
    pub source_port: u16,
    pub destination_port: u16,
    pub seq: Option<u32>,
    /// TCP bytes the quote holds.
    pub tcp_bytes: usize,
    /// The option area, when the quote holds all of it.
    pub options: Option<TcpOptions>,
    /// The same area's bytes.
    pub option_bytes: Option<Vec<u8>>,
}

/// An ICMP error about one of our probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcmpQuote {
    pub answer: Answer,
    /// The destination the quoted packet was sent to.
    pub destination: IpAddr,
    pub tcp: QuotedTcp,
}

/// Why an ICMP message is not a quote of a TCP probe.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotAQuote {
    #[error("not an ICMP error message (type {0})")]
    NotAnError(u8),
    #[error("the ICMP message is too short: {0}")]
    Short(String),
    #[error("the quoted packet is not TCP (protocol {0})")]
    NotTcp(u8),
}

/// An ICMPv4 message as a raw IPv4 socket receives it (the IP header first).
pub fn parse_v4(packet: &[u8]) -> Result<IcmpQuote, NotAQuote> {
    let outer = Ipv4HeaderSlice::from_slice(packet).map_err(|e| NotAQuote::Short(e.to_string()))?;
    let icmp = Icmpv4Slice::from_slice(&packet[outer.slice().len()..])
        .map_err(|e| NotAQuote::Short(e.to_string()))?;
    let answer = match icmp.icmp_type() {
        Icmpv4Type::TimeExceeded(_) => Answer::TimeExceeded,
        Icmpv4Type::DestinationUnreachable(_) => Answer::Unreachable,
        _ => return Err(NotAQuote::NotAnError(icmp.type_u8())),
    };
    // RFC 4884: the length of the original datagram in 32-bit words, in the sixth byte.
    let words = icmp.bytes5to8()[1] as usize;
    let quote = rfc4884_quote(icmp.payload(), words * 4);
    let inner = Ipv4HeaderSlice::from_slice(quote)
        .map_err(|e| NotAQuote::Short(format!("quoted IPv4 header: {e}")))?;
    if inner.protocol().0 != IPPROTO_TCP {
        return Err(NotAQuote::NotTcp(inner.protocol().0));
    }
    let end = (inner.total_len() as usize).clamp(inner.slice().len(), quote.len());
    let tcp = quoted_tcp(&quote[inner.slice().len()..end])?;
    Ok(IcmpQuote { answer, destination: IpAddr::V4(inner.destination_addr()), tcp })
}

/// An ICMPv6 message as a raw ICMPv6 socket receives it (no IPv6 header).
pub fn parse_v6(message: &[u8]) -> Result<IcmpQuote, NotAQuote> {
    let icmp = Icmpv6Slice::from_slice(message).map_err(|e| NotAQuote::Short(e.to_string()))?;
    let answer = match icmp.icmp_type() {
        Icmpv6Type::TimeExceeded(_) => Answer::TimeExceeded,
        Icmpv6Type::DestinationUnreachable(_) => Answer::Unreachable,
        _ => return Err(NotAQuote::NotAnError(icmp.type_u8())),
    };
    // RFC 4884: the length in 64-bit words, in the fifth byte.
    let words = icmp.bytes5to8()[0] as usize;
    let quote = rfc4884_quote(icmp.payload(), words * 8);
    let inner = Ipv6HeaderSlice::from_slice(quote)
        .map_err(|e| NotAQuote::Short(format!("quoted IPv6 header: {e}")))?;
    if inner.next_header().0 != IPPROTO_TCP {
        return Err(NotAQuote::NotTcp(inner.next_header().0));
    }
    let end = (inner.slice().len() + inner.payload_length() as usize).min(quote.len());
    let tcp = quoted_tcp(&quote[inner.slice().len()..end])?;
    Ok(IcmpQuote { answer, destination: IpAddr::V6(inner.destination_addr()), tcp })
}

/// RFC 4884: with extensions, the original datagram is padded to at least 128 bytes; a smaller
/// length is no RFC 4884 length (a stray byte of an older router) and is not trusted.
const RFC4884_MIN: usize = 128;

/// The original datagram of an ICMP error: all of it, or its first `len` bytes when an RFC 4884
/// length says extensions follow.
fn rfc4884_quote(payload: &[u8], len: usize) -> &[u8] {
    if len >= RFC4884_MIN && len <= payload.len() {
        &payload[..len]
    } else {
        payload
    }
}

/// The fields of a (possibly cut) TCP header.
fn quoted_tcp(b: &[u8]) -> Result<QuotedTcp, NotAQuote> {
    if b.len() < 4 {
        return Err(NotAQuote::Short(format!("{} bytes of TCP quoted, not even the ports", b.len())));
    }
    let seq = b.get(4..8).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]));
    let header_len = b.get(12).map(|d| (d >> 4) as usize * 4);
    let (options, option_bytes) = match header_len {
        Some(h) if h >= TCP_HEADER && b.len() >= h => {
            let (buf, len) = option_area(&b[TCP_HEADER..h]);
            (Some(parse_tcp_options(&buf, len, false)), Some(b[TCP_HEADER..h].to_vec()))
        }
        _ => (None, None),
    };
    Ok(QuotedTcp {
        source_port: u16::from_be_bytes([b[0], b[1]]),
        destination_port: u16::from_be_bytes([b[2], b[3]]),
        seq,
        tcp_bytes: b.len(),
        options,
        option_bytes,
    })
}

/// MP_CAPABLE as a probe carries it: length, version, flags (None: a probe without it).
pub type SentMpc = Option<(u8, u8, u8)>;

/// The probe's MP_CAPABLE as quoted, compared byte for byte with what was sent.
pub fn mptcp_state(q: &QuotedTcp, sent: SentMpc) -> Quoted {
    let Some(opts) = &q.options else { return Quoted::NotQuoted };
    match (opts.find(subtype::MP_CAPABLE), sent) {
        (Some(o), Some(s)) if (o.len, o.version, o.flags) == s => Quoted::Intact,
        (Some(_), _) => Quoted::Changed,
        (None, Some(_)) => Quoted::Absent,
        (None, None) => Quoted::Intact,
    }
}

/// The MPTCP option of `subtype` in a TCP option area, whole (the walk ends at EOL or at a
/// malformed option).
pub fn mptcp_option(area: &[u8], want: u8) -> Option<&[u8]> {
    OptionWalk::new(area).find_map(|step| match step {
        Step::Option { kind: TCPOPT_MPTCP, start, len } if len >= 3 && area[start + 2] >> 4 == want => {
            Some(&area[start..start + len])
        }
        _ => None,
    })
}

/// The probe's MPTCP option of `subtype` as quoted, compared byte for byte with `sent` (the
/// whole option).
pub fn option_state(q: &QuotedTcp, subtype: u8, sent: &[u8]) -> Quoted {
    let Some(area) = &q.option_bytes else { return Quoted::NotQuoted };
    match mptcp_option(area, subtype) {
        Some(o) if o == sent => Quoted::Intact,
        Some(_) => Quoted::Changed,
        None => Quoted::Absent,
    }
}

/// The MSS the quote shows (None: not quoted, or no MSS option).
pub fn mss(q: &QuotedTcp) -> Option<u16> {
    q.options.as_ref().map(|o| o.mss).filter(|m| *m != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MP_CAPABLE version 1, flag H, as the probes send it.
    const SENT: SentMpc = Some((4, 1, 0x01));

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        hex::decode(s).unwrap()
    }

    // Recorded in the lab (tcpdump at the client): hop 1 answers a probe SYN with MP_CAPABLE to
    // 203.0.113.2:8001 with time exceeded, the outer IPv4 header first as a raw socket gives it;
    // Linux quotes the whole SYN.
    const V4_FULL: &str = "45c0 005c f5e2 0000 4001 fffa c000 0202 c000 0201
        0b00 f336 0000 0000
        4500 0040 f1b6 4000 0106 89fd c000 0201 cb00 7102
        869d 1f41 fac1 2795 0000 0000 b002 faf0 57cb 0000
        0204 05b4 0402 080a 0000 0001 0000 0000 0103 0307 1e04 0101";

    #[test]
    fn a_full_ipv4_quote_shows_the_options_as_they_reached_the_hop() {
        let q = parse_v4(&hex(V4_FULL)).unwrap();
        assert_eq!(q.answer, Answer::TimeExceeded);
        assert_eq!(q.destination, "203.0.113.2".parse::<IpAddr>().unwrap());
        assert_eq!((q.tcp.source_port, q.tcp.destination_port, q.tcp.seq), (34461, 8001, Some(0xfac1_2795)));
        assert_eq!(q.tcp.tcp_bytes, 44);
        assert_eq!(mptcp_state(&q.tcp, SENT), Quoted::Intact);
        assert_eq!(mptcp_state(&q.tcp, Some((12, 1, 0x01))), Quoted::Changed);
        assert_eq!(mptcp_state(&q.tcp, Some((4, 1, 0x81))), Quoted::Changed, "the checksum flag differs");
        assert_eq!(mptcp_state(&q.tcp, None), Quoted::Changed);
        assert_eq!(mss(&q.tcp), Some(1460));
    }

    #[test]
    fn a_stripped_option_is_absent_and_an_rfc792_quote_shows_nothing_of_the_options() {
        // TCPOPTSTRIP writes NOPs over the option.
        let stripped = V4_FULL.replace("1e04 0101", "0101 0101");
        let q = parse_v4(&hex(&stripped)).unwrap();
        assert_eq!(mptcp_state(&q.tcp, SENT), Quoted::Absent);
        // The IP header and 8 bytes of TCP only.
        let short: String = hex(V4_FULL)[..20 + 8 + 20 + 8].iter().map(|b| format!("{b:02x}")).collect();
        let q = parse_v4(&hex(&short)).unwrap();
        assert_eq!((q.tcp.tcp_bytes, q.tcp.seq), (8, Some(0xfac1_2795)));
        assert_eq!(mptcp_state(&q.tcp, SENT), Quoted::NotQuoted);
        assert_eq!(mss(&q.tcp), None);
    }

    /// Extensions after a quote padded to 128 bytes (RFC 4884), the length in the ICMP header.
    fn with_extensions(mut b: Vec<u8>, at: usize, quote_start: usize, word: usize) -> Vec<u8> {
        b.resize(quote_start + 128, 0);
        b[at] = (128 / word) as u8;
        b.extend_from_slice(&hex("2000 0000 0008 0101 0001 41ff"));
        b
    }

    #[test]
    fn an_rfc4884_length_cuts_the_quote_before_the_extensions() {
        let b = with_extensions(hex(V4_FULL), 20 + 5, 28, 4);
        let q = parse_v4(&b).unwrap();
        assert_eq!(q.tcp.tcp_bytes, 44, "the padding is not the SYN's");
        assert_eq!(mptcp_state(&q.tcp, SENT), Quoted::Intact);
        // A length under 128 bytes is no RFC 4884 length: the quote is taken whole.
        let mut b = hex(V4_FULL);
        b[20 + 5] = 2;
        assert_eq!(parse_v4(&b).unwrap().tcp.tcp_bytes, 44);
    }

    // Recorded likewise over IPv6: the ICMPv6 message (a raw ICMPv6 socket gives no IPv6 header)
    // quoting a probe SYN to [2001:db8:3::2]:8001 with MSS 1440 and MP_CAPABLE.
    const V6_FULL: &str = "0300 27e2 0000 0000
        6008 130d 002c 0601 2001 0db8 0001 0000 0000 0000 0000 0001
        2001 0db8 0003 0000 0000 0000 0000 0002
        af19 1f41 d54e b7e7 0000 0000 b002 faf0 670f 0000
        0204 05a0 0402 080a 0000 0001 0000 0000 0103 0307 1e04 0101";

    #[test]
    fn ipv6_quotes_and_their_rfc4884_length() {
        let q = parse_v6(&hex(V6_FULL)).unwrap();
        assert_eq!(q.answer, Answer::TimeExceeded);
        assert_eq!(q.destination, "2001:db8:3::2".parse::<IpAddr>().unwrap());
        assert_eq!(mss(&q.tcp), Some(1440));
        assert_eq!(mptcp_state(&q.tcp, SENT), Quoted::Intact);
        let q = parse_v6(&with_extensions(hex(V6_FULL), 4, 8, 8)).unwrap();
        assert_eq!(q.tcp.tcp_bytes, 44);
        assert_eq!(mptcp_state(&q.tcp, SENT), Quoted::Intact);
    }

    #[test]
    fn messages_that_are_not_quotes_of_tcp_are_errors_not_panics() {
        // An echo request.
        let mut echo = hex(V6_FULL);
        echo[0] = 128;
        assert_eq!(parse_v6(&echo), Err(NotAQuote::NotAnError(128)));
        // Cut anywhere: an error, never a panic.
        let full = hex(V4_FULL);
        for n in 0..full.len() {
            let _ = parse_v4(&full[..n]);
        }
        let full = hex(V6_FULL);
        for n in 0..full.len() {
            let _ = parse_v6(&full[..n]);
        }
        // A quote of UDP.
        let mut udp = hex(V4_FULL);
        udp[20 + 8 + 9] = 17;
        assert_eq!(parse_v4(&udp), Err(NotAQuote::NotTcp(17)));
    }
}
