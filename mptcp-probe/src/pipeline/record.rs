//! Kernel events as the model's watch records: addresses as addresses, codes as names.

use std::net::IpAddr;

use mptcp_probe_common::{
    event::{
        mapping_flags, reset_dir, tcp_flags, FallbackEvent, MappingEvent, PacketEvent, ResetEvent,
        SockStateEvent,
    },
    flow::FlowKey,
    options::{dss, mptcp_status, opt_flags, subtype, MptcpOption},
    proto::{AF_INET6, IPPROTO_MPTCP, NONE_U8},
};
use mptcp_probe_model::{
    watch::{
        Event as Record, FallbackRecord, MappingFlag, MappingRecord, OptionRecord, PacketRecord, ResetRecord,
        Scope, SockStateRecord, SocketProtocol, Why,
    },
    Direction, MappingStatus, Subtype, TcpRstReason, TcpState,
};

use super::sink::Context;
use crate::kernel::decode::Event;

/// An address of a kernel record: IPv4 in the first four bytes when `version` is 4.
pub fn addr(version: u8, bytes: &[u8; 16]) -> IpAddr {
    if version == 4 {
        IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        IpAddr::from(*bytes)
    }
}

/// The IP version of a socket family.
pub fn family_version(family: u16) -> u8 {
    if family == AF_INET6 {
        6
    } else {
        4
    }
}

/// An address of a flow key (IPv4 ones are held mapped).
pub fn key_addr(bytes: &[u8; 16]) -> IpAddr {
    std::net::Ipv6Addr::from(*bytes).to_canonical()
}

/// A flow's (local, remote) endpoints.
pub fn endpoint_of(k: &FlowKey) -> ((IpAddr, u16), (IpAddr, u16)) {
    ((key_addr(&k.local_addr), k.local_port), (key_addr(&k.remote_addr), k.remote_port))
}

/// A flow's (local, remote) socket addresses.
pub fn socket_addrs_of(k: &FlowKey) -> (std::net::SocketAddr, std::net::SocketAddr) {
    let ((l, lp), (r, rp)) = endpoint_of(k);
    (std::net::SocketAddr::new(l, lp), std::net::SocketAddr::new(r, rp))
}

/// "ADDR:PORT", "[ADDR]:PORT" for IPv6, as `SocketAddr` writes them; an IPv4 one without the
/// formatting machinery (every socket event of every connection has two).
pub fn endpoint(ip: IpAddr, port: u16) -> String {
    let mut s = String::with_capacity(48);
    let mut n = itoa::Buffer::new();
    match ip {
        IpAddr::V4(a) => {
            for (i, o) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                s.push_str(n.format(o));
            }
        }
        IpAddr::V6(a) => {
            use std::fmt::Write;
            let _ = write!(s, "[{a}]");
        }
    }
    s.push(':');
    s.push_str(n.format(port));
    s
}

/// TCP flags as tcpdump writes them: S, ., F, R, P.
pub fn flags_str(f: u8) -> String {
    [
        (tcp_flags::SYN, 'S'),
        (tcp_flags::ACK, '.'),
        (tcp_flags::FIN, 'F'),
        (tcp_flags::RST, 'R'),
        (tcp_flags::PSH, 'P'),
    ]
    .iter()
    .filter(|(bit, _)| f & bit != 0)
    .map(|(_, c)| *c)
    .collect()
}

/// One MPTCP option of a packet, with the fields its subtype uses. `payload_len` tells an
/// infinite mapping from an empty one.
pub fn option_record(o: &MptcpOption, payload_len: u32) -> OptionRecord {
    let mut r = OptionRecord::new(Subtype::from_code(o.subtype), o.len);
    r.bad_length = o.status & mptcp_status::BAD_LENGTH != 0;
    let checksum = o.status & mptcp_status::CHECKSUM != 0;
    match o.subtype {
        subtype::MP_CAPABLE => {
            r.version = Some(o.version);
            r.flags = Some(o.flags);
            r.data_len = (o.len >= 22).then_some(o.data_len);
            r.checksum = checksum;
        }
        subtype::MP_JOIN => {
            r.backup = Some(o.flags & 1 != 0);
            r.addr_id = Some(o.addr_id);
        }
        subtype::DSS => {
            r.data_ack = (o.flags & dss::DATA_ACK != 0).then_some(o.data_ack);
            if o.flags & dss::MAPPING != 0 {
                r.dsn = Some(o.dsn);
                r.ssn = Some(o.ssn);
                r.data_len = Some(o.data_len);
            }
            r.data_fin = o.flags & dss::DATA_FIN != 0;
            r.infinite_mapping = o.is_infinite_mapping(payload_len);
            r.checksum = checksum;
        }
        subtype::ADD_ADDR => {
            r.echo = Some(o.flags & 1 != 0);
            r.addr_id = Some(o.addr_id);
            r.addr = Some(addr(if o.status & mptcp_status::IPV6 != 0 { 6 } else { 4 }, &o.addr));
            r.port = (o.status & mptcp_status::PORT != 0).then_some(o.port);
        }
        subtype::REMOVE_ADDR => r.addr_ids = Some(o.addr[..(o.count as usize).min(16)].to_vec()),
        subtype::MP_PRIO => r.backup = Some(o.flags & 1 != 0),
        subtype::MP_FAIL => r.dsn = Some(o.dsn),
        subtype::MP_TCPRST => {
            r.reason = Some(TcpRstReason::from_code(o.reason));
            r.transient = Some(o.flags & 1 != 0);
        }
        _ => {}
    }
    r
}

pub fn packet_record(p: &PacketEvent, c: &Context) -> PacketRecord {
    let k = &p.flow;
    let ((local_addr, local_port), (remote_addr, remote_port)) = endpoint_of(k);
    PacketRecord {
        ts_ns: p.header.ts_ns,
        netns: c.netns,
        iface: c.iface(k.ifindex),
        direction: Direction::from_code(p.direction),
        ip_version: k.ip_version(),
        local_addr,
        local_port,
        remote_addr,
        remote_port,
        tcp_flags: flags_str(p.tcp_flags),
        seq: p.seq,
        ack: p.ack,
        window: p.window,
        payload_len: p.payload_len,
        ttl: p.ttl,
        why: Why::from_bits(p.why),
        mptcp_options: p.opts.mptcp_options().iter().map(|o| option_record(o, p.payload_len)).collect(),
        mss: (p.opts.mss != 0).then_some(p.opts.mss),
        wscale: (p.opts.wscale != NONE_U8).then_some(p.opts.wscale),
        sack_permitted: p.opts.flags & opt_flags::SACK_PERM != 0,
        timestamps: p.opts.flags & opt_flags::TIMESTAMPS != 0,
        malformed_at: (p.opts.flags & (opt_flags::MALFORMED | opt_flags::TRUNCATED) != 0)
            .then_some(p.opts.malformed_at),
    }
}

fn sock_state_record(s: &SockStateEvent) -> SockStateRecord {
    let ver = family_version(s.family);
    SockStateRecord {
        ts_ns: s.header.ts_ns,
        netns: s.header.netns,
        protocol: if s.protocol == IPPROTO_MPTCP { SocketProtocol::Mptcp } else { SocketProtocol::Tcp },
        local: endpoint(addr(ver, &s.saddr), s.sport),
        remote: endpoint(addr(ver, &s.daddr), s.dport),
        old_state: TcpState::from_code(s.oldstate),
        new_state: TcpState::from_code(s.newstate),
    }
}

fn reset_record(r: &ResetEvent) -> ResetRecord {
    let ver = family_version(r.family);
    ResetRecord {
        ts_ns: r.header.ts_ns,
        netns: r.header.netns,
        local: endpoint(addr(ver, &r.saddr), r.sport),
        remote: endpoint(addr(ver, &r.daddr), r.dport),
        state: (r.state >= 0).then(|| TcpState::from_code(r.state)),
        reason: (r.reason != u32::MAX).then_some(r.reason),
    }
}

fn mapping_record(m: &MappingEvent) -> MappingRecord {
    MappingRecord {
        ts_ns: m.header.ts_ns,
        // Without the socket's namespace (no BTF offsets) these are host-wide.
        netns: m.header.netns,
        scope: if m.header.netns == 0 { Scope::Host } else { Scope::Netns },
        status: MappingStatus::from_code(m.status),
        has_mapping: m.flags & mapping_flags::HAS_MAPPING != 0,
        data_seq: m.data_seq,
        subflow_seq: m.subflow_seq,
        data_len: m.data_len,
        flags: MappingFlag::from_bits(m.flags),
        reset_reason: m.reset_reason,
    }
}

fn fallback_record(f: &FallbackEvent, c: &Context) -> FallbackRecord {
    FallbackRecord {
        ts_ns: f.header.ts_ns,
        msk: format!("{:#x}", f.msk),
        reason: mib_name(&c.mib_names, f.mib),
    }
}

/// A kernel event as the watch record it is printed as.
pub fn record(ev: &Event, c: &Context) -> Record {
    match ev {
        Event::Packet(p) => Record::Packet(Box::new(packet_record(p, c))),
        Event::SockState(s) => Record::SockState(sock_state_record(s)),
        Event::Reset(r) if r.dir == reset_dir::SENT => Record::ResetSent(reset_record(r)),
        Event::Reset(r) => Record::ResetReceived(reset_record(r)),
        Event::Mapping(m) => Record::Mapping(mapping_record(m)),
        Event::Fallback(f) => Record::Fallback(fallback_record(f, c)),
    }
}

/// Name of an MPTCP MIB counter by the kernel's enum index (the MPTcpExt column order, which
/// starts after the enum's reserved zero).
pub fn mib_name(names: &[String], index: u32) -> String {
    index
        .checked_sub(1)
        .and_then(|i| names.get(i as usize))
        .cloned()
        .unwrap_or_else(|| format!("mib#{index}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn an_endpoint_reads_as_its_socket_address(v4 in proptest::prelude::any::<[u8; 4]>(),
                v6 in proptest::prelude::any::<[u8; 16]>(), port in proptest::prelude::any::<u16>()) {
            for ip in [IpAddr::from(v4), IpAddr::from(v6), IpAddr::from(std::net::Ipv4Addr::from(v4).to_ipv6_mapped())] {
                proptest::prop_assert_eq!(endpoint(ip, port), std::net::SocketAddr::new(ip, port).to_string());
            }
        }
    }

    #[test]
    fn an_empty_mapping_is_infinite_only_on_a_segment_with_data() {
        let o = MptcpOption {
            subtype: subtype::DSS,
            len: 20,
            flags: dss::DATA_ACK | dss::MAPPING,
            status: mptcp_status::INFINITE_MAPPING,
            ..Default::default()
        };
        let v = serde_json::to_value(option_record(&o, 1200)).unwrap();
        assert_eq!(v["subtype"], "dss");
        assert_eq!(v["infinite_mapping"], true);
        assert_eq!(v["data_len"], 0);
        // A pure ACK with `dll = 0` maps nothing: the kernel ignores it.
        let v = serde_json::to_value(option_record(&o, 0)).unwrap();
        assert!(v.get("infinite_mapping").is_none(), "{v}");
    }

    #[test]
    fn mib_names_are_offset_by_the_reserved_zero() {
        let names = vec!["MPCapableSYNRX".to_string(), "MPCapableSYNTX".to_string()];
        assert_eq!(mib_name(&names, 2), "MPCapableSYNTX");
        assert_eq!(mib_name(&names, 0), "mib#0");
        assert_eq!(mib_name(&names, 9), "mib#9");
    }

    #[test]
    fn flags_read_as_tcpdump_writes_them() {
        assert_eq!(flags_str(tcp_flags::SYN | tcp_flags::ACK), "S.");
        assert_eq!(flags_str(tcp_flags::FIN | tcp_flags::ACK | tcp_flags::PSH), ".FP");
    }
}
