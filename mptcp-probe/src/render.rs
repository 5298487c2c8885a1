//! Events and flow summaries for people (one line each) and for machines (JSON lines).

use std::{collections::BTreeMap, fmt::Write as _, net::IpAddr};

use mptcp_probe_common::{
    event::{mapping_flags, reset_dir, tcp_flags, why, MappingEvent, PacketEvent},
    options::{dss, mptcp_status, opt_flags, subtype, MptcpOption},
};
use serde_json::{json, Value};

use crate::{
    flows::{addr, dir_name, subtype_name, tcprst_reason, FlowSummary},
    observer::decode::Event,
};

const WHY_NAMES: [(u16, &str); 11] = [
    (why::SYN, "syn"),
    (why::SYN_ACK, "syn_ack"),
    (why::THIRD_ACK, "third_ack"),
    (why::MPTCP_OPTION, "mptcp_option"),
    (why::FIRST_DSS, "first_dss"),
    (why::INFINITE_MAPPING, "infinite_mapping"),
    (why::DATA_WITHOUT_DSS, "data_without_dss"),
    (why::RST, "rst"),
    (why::FIN, "fin"),
    (why::DATA_FIN, "data_fin"),
    (why::MALFORMED, "malformed_options"),
];

pub fn why_names(w: u16) -> Vec<&'static str> {
    WHY_NAMES.iter().filter(|(b, _)| w & b != 0).map(|(_, n)| *n).collect()
}

pub fn flags_str(f: u8) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (tcp_flags::SYN, 'S'),
        (tcp_flags::ACK, '.'),
        (tcp_flags::FIN, 'F'),
        (tcp_flags::RST, 'R'),
        (tcp_flags::PSH, 'P'),
    ] {
        if f & bit != 0 {
            s.push(c);
        }
    }
    s
}

/// JSON of one MPTCP option, with the fields its subtype uses.
pub fn option_json(o: &MptcpOption) -> Value {
    let mut v = json!({"subtype": subtype_name(o.subtype), "len": o.len});
    let m = v.as_object_mut().expect("object");
    if o.status & mptcp_status::BAD_LENGTH != 0 {
        m.insert("bad_length".into(), json!(true));
    }
    match o.subtype {
        subtype::MP_CAPABLE => {
            m.insert("version".into(), json!(o.version));
            m.insert("flags".into(), json!(o.flags));
            if o.len >= 22 {
                m.insert("data_len".into(), json!(o.data_len));
            }
            if o.status & mptcp_status::CHECKSUM != 0 {
                m.insert("checksum".into(), json!(true));
            }
        }
        subtype::MP_JOIN => {
            m.insert("backup".into(), json!(o.flags & 1 != 0));
            m.insert("addr_id".into(), json!(o.addr_id));
        }
        subtype::DSS => {
            if o.flags & dss::DATA_ACK != 0 {
                m.insert("data_ack".into(), json!(o.data_ack));
            }
            if o.flags & dss::MAPPING != 0 {
                m.insert("dsn".into(), json!(o.dsn));
                m.insert("ssn".into(), json!(o.ssn));
                m.insert("data_len".into(), json!(o.data_len));
            }
            if o.flags & dss::DATA_FIN != 0 {
                m.insert("data_fin".into(), json!(true));
            }
            if o.status & mptcp_status::INFINITE_MAPPING != 0 {
                m.insert("infinite_mapping".into(), json!(true));
            }
            if o.status & mptcp_status::CHECKSUM != 0 {
                m.insert("checksum".into(), json!(true));
            }
        }
        subtype::ADD_ADDR => {
            m.insert("echo".into(), json!(o.flags & 1 != 0));
            m.insert("addr_id".into(), json!(o.addr_id));
            let ip: IpAddr =
                if o.status & mptcp_status::IPV6 != 0 { addr(6, &o.addr) } else { addr(4, &o.addr) };
            m.insert("addr".into(), json!(ip));
            if o.status & mptcp_status::PORT != 0 {
                m.insert("port".into(), json!(o.port));
            }
        }
        subtype::REMOVE_ADDR => {
            let n = (o.count as usize).min(16);
            m.insert("addr_ids".into(), json!(o.addr[..n]));
        }
        subtype::MP_PRIO => {
            m.insert("backup".into(), json!(o.flags & 1 != 0));
        }
        subtype::MP_FAIL => {
            m.insert("dsn".into(), json!(o.dsn));
        }
        subtype::MP_TCPRST => {
            m.insert("reason".into(), json!(tcprst_reason(o.reason)));
            m.insert("transient".into(), json!(o.flags & 1 != 0));
        }
        _ => {}
    }
    v
}

fn option_short(o: &MptcpOption) -> String {
    let mut s = format!("{}/{}", subtype_name(o.subtype).to_uppercase(), o.len);
    if o.subtype == subtype::DSS {
        if o.status & mptcp_status::INFINITE_MAPPING != 0 {
            s.push_str("(infinite)");
        } else if o.flags & dss::DATA_FIN != 0 {
            s.push_str("(DATA_FIN)");
        }
    }
    if o.subtype == subtype::MP_TCPRST {
        let _ = write!(s, "({})", tcprst_reason(o.reason));
    }
    s
}

const STATES: [&str; 13] = [
    "?",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
];

pub fn tcp_state(s: i32) -> &'static str {
    STATES.get(s as usize).copied().unwrap_or("?")
}

pub fn mapping_status(s: u8) -> &'static str {
    match s {
        0 => "MAPPING_OK",
        1 => "MAPPING_INVALID",
        2 => "MAPPING_EMPTY",
        3 => "MAPPING_DATA_FIN",
        4 => "MAPPING_DUMMY",
        _ => "none",
    }
}

fn mapping_json(m: &MappingEvent) -> Value {
    let mut flags = Vec::new();
    for (bit, n) in [
        (mapping_flags::USE_MAP, "use_map"),
        (mapping_flags::DATA_FIN, "data_fin"),
        (mapping_flags::MPC_MAP, "mpc_map"),
        (mapping_flags::FROZEN, "frozen"),
        (mapping_flags::RESET_TRANSIENT, "reset_transient"),
        (mapping_flags::CSUM_REQD, "csum_reqd"),
        (mapping_flags::INFINITE_MAP, "infinite_map"),
    ] {
        if m.flags & bit != 0 {
            flags.push(n);
        }
    }
    json!({
        "status": mapping_status(m.status),
        "has_mapping": m.flags & mapping_flags::HAS_MAPPING != 0,
        "data_seq": m.data_seq, "subflow_seq": m.subflow_seq, "data_len": m.data_len,
        "flags": flags, "reset_reason": m.reset_reason,
    })
}

fn endpoint(version: u8, a: &[u8; 16], port: u16) -> String {
    match addr(version, a) {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

fn family_version(family: u16) -> u8 {
    if family == 10 {
        6
    } else {
        4
    }
}

/// Context the kernel events lack: interface names, netns, MIB names for fallback ids.
pub struct Ctx<'a> {
    pub ifaces: &'a BTreeMap<u32, String>,
    pub netns: u32,
    pub mib_names: &'a [String],
}

fn packet_json(p: &PacketEvent, c: &Ctx) -> Value {
    let k = &p.flow;
    let opts: Vec<Value> = p.opts.mptcp_options().iter().map(option_json).collect();
    let mut v = json!({
        "type": "event", "kind": "packet", "ts_ns": p.header.ts_ns, "netns": c.netns,
        "iface": c.ifaces.get(&k.ifindex).cloned().unwrap_or_else(|| k.ifindex.to_string()),
        "direction": dir_name(p.direction), "ip_version": k.ip_version,
        "local_addr": addr(k.ip_version, &k.local_addr), "local_port": k.local_port,
        "remote_addr": addr(k.ip_version, &k.remote_addr), "remote_port": k.remote_port,
        "tcp_flags": flags_str(p.tcp_flags), "seq": p.seq, "ack": p.ack, "window": p.window,
        "payload_len": p.payload_len, "ttl": p.ttl, "why": why_names(p.why), "mptcp_options": opts,
    });
    let m = v.as_object_mut().expect("object");
    if p.opts.mss != 0 {
        m.insert("mss".into(), json!(p.opts.mss));
    }
    if p.opts.wscale != 0xff {
        m.insert("wscale".into(), json!(p.opts.wscale));
    }
    m.insert("sack_permitted".into(), json!(p.opts.flags & opt_flags::SACK_PERM != 0));
    m.insert("timestamps".into(), json!(p.opts.flags & opt_flags::TIMESTAMPS != 0));
    if p.opts.flags & (opt_flags::MALFORMED | opt_flags::TRUNCATED) != 0 {
        m.insert("malformed_at".into(), json!(p.opts.malformed_at));
    }
    v
}

pub fn event_json(ev: &Event, c: &Ctx) -> Value {
    match ev {
        Event::Packet(p) => packet_json(p, c),
        Event::SockState(s) => {
            let ver = family_version(s.family);
            json!({
                "type": "event", "kind": "sock_state", "ts_ns": s.header.ts_ns, "netns": s.header.netns,
                "protocol": if s.protocol == 262 { "mptcp" } else { "tcp" },
                "local": endpoint(ver, &s.saddr, s.sport), "remote": endpoint(ver, &s.daddr, s.dport),
                "old_state": tcp_state(s.oldstate), "new_state": tcp_state(s.newstate),
            })
        }
        Event::Reset(r) => {
            let ver = family_version(r.family);
            json!({
                "type": "event", "kind": if r.dir == reset_dir::SENT { "reset_sent" } else { "reset_received" },
                "ts_ns": r.header.ts_ns, "netns": r.header.netns,
                "local": endpoint(ver, &r.saddr, r.sport), "remote": endpoint(ver, &r.daddr, r.dport),
                "state": (r.state >= 0).then(|| tcp_state(r.state)),
                "reason": (r.reason != u32::MAX).then_some(r.reason),
            })
        }
        Event::Mapping(m) => {
            let mut v = mapping_json(m);
            let o = v.as_object_mut().expect("object");
            o.insert("type".into(), json!("event"));
            o.insert("kind".into(), json!("mapping"));
            o.insert("ts_ns".into(), json!(m.header.ts_ns));
            // Without the socket's namespace (no BTF offsets) these are host-wide.
            o.insert("netns".into(), json!(m.header.netns));
            o.insert("scope".into(), json!(if m.header.netns == 0 { "host" } else { "netns" }));
            v
        }
        Event::Fallback(f) => json!({
            "type": "event", "kind": "fallback", "ts_ns": f.header.ts_ns, "msk": format!("{:#x}", f.msk),
            "reason": mib_name(c.mib_names, f.mib),
        }),
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

pub fn event_line(ev: &Event, c: &Ctx) -> String {
    match ev {
        Event::Packet(p) => {
            let k = &p.flow;
            let arrow = if p.direction == mptcp_probe_common::event::direction::EGRESS { "->" } else { "<-" };
            let opts: Vec<String> = p.opts.mptcp_options().iter().map(option_short).collect();
            let iface = c.ifaces.get(&k.ifindex).cloned().unwrap_or_else(|| k.ifindex.to_string());
            format!(
                "{iface:<8} {} {arrow} {} [{}] len={} {} ({})",
                endpoint(k.ip_version, &k.local_addr, k.local_port),
                endpoint(k.ip_version, &k.remote_addr, k.remote_port),
                flags_str(p.tcp_flags),
                p.payload_len,
                if opts.is_empty() { "no MPTCP option".to_string() } else { opts.join(" ") },
                why_names(p.why).join(","),
            )
        }
        other => {
            let v = event_json(other, c);
            let kind = v["kind"].as_str().unwrap_or("?").to_string();
            let mut rest = v.as_object().cloned().unwrap_or_default();
            for k in ["type", "kind", "ts_ns"] {
                rest.remove(k);
            }
            let fields: Vec<String> = rest.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("kernel   {kind} {}", fields.join(" "))
        }
    }
}

pub fn flow_line(s: &FlowSummary) -> String {
    let ep = |a: IpAddr, p: u16| match a {
        IpAddr::V4(v) => format!("{v}:{p}"),
        IpAddr::V6(v) => format!("[{v}]:{p}"),
    };
    let hs = |h: &Option<crate::flows::HandshakeView>| match h {
        None => "-".to_string(),
        Some(h) => match (h.mptcp, h.mptcp_len) {
            (Some(m), Some(l)) => format!("{}/{l}", m.to_uppercase()),
            _ => "no MPTCP".to_string(),
        },
    };
    let counts = |m: &BTreeMap<&'static str, u32>| {
        if m.is_empty() {
            "-".to_string()
        } else {
            m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
        }
    };
    let mut line = format!(
        "FLOW {} {} -> {} {:?} role={} subflow={} mptcp={} | SYN {} | SYN/ACK {} | ACK {} | tx {} | rx {} | {}",
        s.iface,
        ep(s.local_addr, s.local_port),
        ep(s.remote_addr, s.remote_port),
        s.ended,
        s.role,
        s.subflow,
        serde_json::to_value(s.mptcp).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        hs(&s.handshake.syn),
        hs(&s.handshake.syn_ack),
        hs(&s.handshake.third_ack),
        counts(&s.options.tx),
        counts(&s.options.rx),
        format_args!("{} ms", s.duration_ms),
    );
    if !s.fallback_evidence.is_empty() {
        let _ = write!(line, " | evidence: {}", s.fallback_evidence.join("; "));
    }
    if let Some(r) = &s.fallback_reason {
        let _ = write!(line, " | reason: {r}");
    }
    if let Some(r) = s.mp_tcprst_reason {
        let _ = write!(line, " | MP_TCPRST: {r}");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn why_bits_are_named_in_order() {
        assert_eq!(why_names(why::SYN | why::MPTCP_OPTION), vec!["syn", "mptcp_option"]);
        assert!(why_names(0).is_empty());
    }

    #[test]
    fn dss_infinite_mapping_is_flagged_in_json() {
        let o = MptcpOption {
            subtype: subtype::DSS,
            len: 20,
            flags: dss::DATA_ACK | dss::MAPPING,
            status: mptcp_status::INFINITE_MAPPING,
            ..Default::default()
        };
        let v = option_json(&o);
        assert_eq!(v["subtype"], "dss");
        assert_eq!(v["infinite_mapping"], true);
        assert_eq!(v["data_len"], 0);
    }

    #[test]
    fn mib_names_are_offset_by_the_reserved_zero() {
        let names = vec!["MPCapableSYNRX".to_string(), "MPCapableSYNTX".to_string()];
        assert_eq!(mib_name(&names, 2), "MPCapableSYNTX");
        assert_eq!(mib_name(&names, 0), "mib#0");
        assert_eq!(mib_name(&names, 9), "mib#9");
    }
}
