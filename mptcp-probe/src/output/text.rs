//! Events and flow summaries for people: one line each.

use std::{collections::BTreeMap, fmt::Write as _, net::SocketAddr};

use mptcp_probe_model::{
    watch::{Counters, Event as Record, OptionRecord, PacketRecord},
    Direction, FlowSummary, HandshakePacket, Subtype,
};

fn option_short(o: &OptionRecord) -> String {
    let mut s = format!("{}/{}", o.subtype.rfc_name(), o.len);
    if o.subtype == Subtype::Dss {
        if o.infinite_mapping {
            s.push_str("(infinite)");
        } else if o.data_fin {
            s.push_str("(DATA_FIN)");
        }
    }
    if let Some(r) = o.reason {
        let _ = write!(s, "({})", r.as_str());
    }
    s
}

fn packet_line(p: &PacketRecord) -> String {
    let arrow = if p.direction == Direction::Tx { "->" } else { "<-" };
    let opts: Vec<String> = p.mptcp_options.iter().map(option_short).collect();
    let why: Vec<&str> = p.why.iter().map(|w| w.as_str()).collect();
    format!(
        "{:<8} {} {arrow} {} [{}] len={} {} ({})",
        p.iface,
        SocketAddr::new(p.local_addr, p.local_port),
        SocketAddr::new(p.remote_addr, p.remote_port),
        p.tcp_flags,
        p.payload_len,
        if opts.is_empty() { "no MPTCP option".to_string() } else { opts.join(" ") },
        why.join(","),
    )
}

/// One line for an event: a packet's addresses, flags and options; a kernel event's fields.
pub fn event_line(r: &Record) -> String {
    if let Record::Packet(p) = r {
        return packet_line(p);
    }
    let v = serde_json::to_value(r).unwrap_or_default();
    let kind = v["kind"].as_str().unwrap_or("?").to_string();
    let mut rest = v.as_object().cloned().unwrap_or_default();
    for k in ["kind", "ts_ns"] {
        rest.remove(k);
    }
    let fields: Vec<String> = rest.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("kernel   {kind} {}", fields.join(" "))
}

fn handshake_cell(h: &Option<HandshakePacket>) -> String {
    match h {
        None => "-".to_string(),
        Some(h) => match (h.mptcp, h.mptcp_len) {
            (Some(m), Some(l)) => format!("{}/{l}", m.rfc_name()),
            _ => "no MPTCP".to_string(),
        },
    }
}

fn counts(m: &BTreeMap<Subtype, u32>) -> String {
    if m.is_empty() {
        "-".to_string()
    } else {
        m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
    }
}

/// One `FLOW` line per summary.
pub fn flow_line(s: &FlowSummary) -> String {
    let mut line = format!(
        "FLOW {} {} -> {} {} role={} subflow={} mptcp={} | SYN {} | SYN/ACK {} | ACK {} | tx {} | rx {} | {} ms",
        s.iface,
        SocketAddr::new(s.local_addr, s.local_port),
        SocketAddr::new(s.remote_addr, s.remote_port),
        s.ended.as_str(),
        s.role.as_str(),
        s.subflow.as_str(),
        s.mptcp,
        handshake_cell(&s.handshake.syn),
        handshake_cell(&s.handshake.syn_ack),
        handshake_cell(&s.handshake.third_ack),
        counts(&s.options.tx),
        counts(&s.options.rx),
        s.duration_ms,
    );
    if !s.fallback_evidence.is_empty() {
        let _ = write!(line, " | evidence: {}", s.fallback_evidence.join("; "));
    }
    if let Some(r) = &s.fallback_reason {
        let _ = write!(line, " | reason: {r}");
    }
    if let Some(r) = s.mp_tcprst_reason {
        let _ = write!(line, " | MP_TCPRST: {}", r.as_str());
    }
    line
}

/// The closing counters, and the kernel's MPTCP counters that moved.
pub fn counters_line(c: &Counters) -> String {
    let k = |name: &str| c.kernel.get(name).copied().unwrap_or(0);
    let mut out = format!(
        "counters: packets inspected {}, events {}, ring-buffer drops {}, flow-table evictions {}, \
         malformed options {}, decode errors {}",
        k("packets_inspected"),
        k("events_emitted"),
        k("ringbuf_dropped_events"),
        c.flow_table_evictions,
        k("malformed_options"),
        c.decode_errors
    );
    if c.flows_evicted_unsummarised > 0 {
        let _ = write!(out, ", flows evicted before their summary {}", c.flows_evicted_unsummarised);
    }
    if !c.mib_delta.is_empty() {
        let moved: Vec<String> = c.mib_delta.iter().map(|(k, v)| format!("{k} +{v}")).collect();
        let _ = write!(out, "\nkernel MPTCP counters (this namespace, while watching): {}", moved.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use mptcp_probe_model::{watch::FallbackRecord, TcpRstReason};

    use super::*;

    #[test]
    fn options_are_shown_in_the_rfcs_words() {
        let o = OptionRecord { infinite_mapping: true, ..OptionRecord::new(Subtype::Dss, 20) };
        assert_eq!(option_short(&o), "DSS/20(infinite)");
        let r = OptionRecord {
            reason: Some(TcpRstReason::MiddleboxInterference),
            ..OptionRecord::new(Subtype::MpTcprst, 4)
        };
        assert_eq!(option_short(&r), "MP_TCPRST/4(middlebox_interference)");
    }

    #[test]
    fn a_kernel_event_line_names_its_kind_and_fields() {
        let l = event_line(&Record::Fallback(FallbackRecord {
            ts_ns: 5,
            msk: "0x10".into(),
            reason: "DssFallback".into(),
        }));
        assert_eq!(l, "kernel   fallback msk=\"0x10\" reason=\"DssFallback\"");
    }
}
