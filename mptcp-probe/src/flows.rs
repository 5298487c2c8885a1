//! Flow table: joins the kernel's per-flow state with the events of the flow and turns them into a
//! flow summary (MPTCP state, handshake options each way, option counts, fallback evidence).

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    time::{Duration, Instant},
};

use mptcp_probe_common::{
    event::{direction, tcp_flags},
    flow::{FlowKey, FlowState, HandshakeOpt, HS_SYN, HS_SYN_ACK, HS_THIRD_ACK, RX, SUBTYPE_SLOTS, TX},
    options::subtype,
    SUBTYPE_NAMES,
};
use serde::Serialize;

use crate::observer::decode::Event;

/// Connection-level MPTCP state of a flow, as in the report contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MptcpState {
    Established,
    Fallback,
    NotNegotiated,
}

pub fn addr(version: u8, bytes: &[u8; 16]) -> IpAddr {
    if version == 4 {
        IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        IpAddr::from(*bytes)
    }
}

pub fn dir_name(d: u8) -> &'static str {
    if d == direction::EGRESS {
        "tx"
    } else {
        "rx"
    }
}

pub fn subtype_name(st: u8) -> &'static str {
    SUBTYPE_NAMES[mptcp_probe_common::flow::subtype_slot(st)]
}

/// MP_TCPRST reason codes (RFC 8684 section 3.6).
pub fn tcprst_reason(code: u8) -> &'static str {
    match code {
        0 => "unspecified",
        1 => "mptcp_specific_error",
        2 => "lack_of_resources",
        3 => "administratively_prohibited",
        4 => "too_much_outstanding_data",
        5 => "unacceptable_performance",
        6 => "middlebox_interference",
        _ => "unknown",
    }
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct HandshakeView {
    /// "tx" or "rx".
    pub direction: &'static str,
    /// "mp_capable", "mp_join" or null.
    pub mptcp: Option<&'static str>,
    pub mptcp_len: Option<u8>,
    pub mss: Option<u16>,
}

fn hs_view(h: &HandshakeOpt) -> Option<HandshakeView> {
    (h.seen != 0).then(|| HandshakeView {
        direction: dir_name(h.direction),
        mptcp: (h.mptcp_subtype != 0xff).then(|| subtype_name(h.mptcp_subtype)),
        mptcp_len: (h.mptcp_subtype != 0xff).then_some(h.mptcp_len),
        mss: (h.mss != 0).then_some(h.mss),
    })
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct PerDirection<T> {
    pub tx: T,
    pub rx: T,
}

#[derive(Clone, Debug, Serialize)]
pub struct Handshake {
    pub syn: Option<HandshakeView>,
    pub syn_ack: Option<HandshakeView>,
    pub third_ack: Option<HandshakeView>,
}

/// What user space learnt about a flow besides the kernel's flow state.
#[derive(Clone, Debug, Default)]
pub struct FlowNotes {
    /// Kernel socket events: "SYN_SENT -> ESTABLISHED (mptcp)".
    pub socket_states: Vec<String>,
    /// Resets named by the TCP tracepoints (kernel reset reason where given).
    pub resets: Vec<String>,
    /// Exact fallback reason (MIB name) from fentry, where available.
    pub fallback_reason: Option<String>,
    /// An MPTCP-level socket was seen with this flow's addresses.
    pub mptcp_socket: bool,
    /// Summarised because it went quiet, not because it ended.
    pub idle: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct FlowSummary {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub netns: u32,
    pub iface: String,
    pub ip_version: u8,
    pub local_addr: IpAddr,
    pub local_port: u16,
    pub remote_addr: IpAddr,
    pub remote_port: u16,
    /// "client" (sent the SYN), "server" (received it) or "unknown" (started before observation).
    pub role: &'static str,
    /// "initial" (MP_CAPABLE), "join" (MP_JOIN) or "tcp".
    pub subflow: &'static str,
    pub mptcp: MptcpState,
    pub handshake: Handshake,
    pub options: PerDirection<BTreeMap<&'static str, u32>>,
    pub packets: PerDirection<u32>,
    pub payload_bytes: PerDirection<u64>,
    /// Data segments as on the wire (GSO/GRO packets count the segments they stand for).
    pub data_segments: PerDirection<u32>,
    pub max_segment: PerDirection<u32>,
    pub data_without_dss: PerDirection<u32>,
    pub infinite_mappings: PerDirection<u32>,
    pub malformed_options: PerDirection<u32>,
    pub fin: PerDirection<bool>,
    pub rst: PerDirection<bool>,
    pub mp_tcprst_reason: Option<&'static str>,
    pub fallback_evidence: Vec<String>,
    pub fallback_reason: Option<String>,
    pub socket_states: Vec<String>,
    pub resets: Vec<String>,
    pub duration_ms: u64,
    /// "fin", "rst", "idle" (quiet for the idle timeout) or "live" (open when watch stopped).
    pub ended: &'static str,
}

fn per_dir<T: Copy>(a: &[T; 2]) -> PerDirection<T> {
    PerDirection { tx: a[TX], rx: a[RX] }
}

fn opt_counts(row: &[u32; SUBTYPE_SLOTS]) -> BTreeMap<&'static str, u32> {
    row.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, n)| (SUBTYPE_NAMES[i], *n)).collect()
}

/// "sent"/"received" as seen from this host.
fn verb(d: u8) -> &'static str {
    if d == direction::EGRESS {
        "sent"
    } else {
        "received"
    }
}

/// Decides the MPTCP state and collects the evidence behind a fallback.
pub fn classify(st: &FlowState) -> (MptcpState, &'static str, Vec<String>) {
    let syn = st.handshake[HS_SYN];
    let synack = st.handshake[HS_SYN_ACK];
    let ack3 = st.handshake[HS_THIRD_ACK];
    let mut evidence = Vec::new();
    let total = |slot: usize| st.options[TX][slot] + st.options[RX][slot];

    if syn.seen == 0 {
        // Started before we looked: judge from what the data carries.
        let mptcp_seen = total(subtype::DSS as usize) + total(subtype::MP_CAPABLE as usize) > 0;
        let subflow = if mptcp_seen { "initial" } else { "tcp" };
        if st.infinite_mappings.iter().sum::<u32>() > 0 {
            evidence.push("infinite mapping seen: MPTCP fell back to TCP after establishment".into());
            return (MptcpState::Fallback, subflow, evidence);
        }
        return (
            if mptcp_seen { MptcpState::Established } else { MptcpState::NotNegotiated },
            subflow,
            evidence,
        );
    }

    let syn_dir = syn.direction as usize & 1;
    let mpc_syns = st.options[syn_dir][subtype::MP_CAPABLE as usize];
    if syn.mptcp_subtype == 0xff {
        // The last SYN had no MPTCP option: either never asked, or retried without it.
        let join_syns = st.options[syn_dir][subtype::MP_JOIN as usize];
        if syn.direction == direction::EGRESS
            && mpc_syns > 0
            && synack.seen != 0
            && synack.mptcp_subtype == 0xff
        {
            evidence.push(format!(
                "SYN sent with MP_CAPABLE {mpc_syns} time(s) without answer, then retried without MPTCP"
            ));
            return (MptcpState::Fallback, "initial", evidence);
        }
        if join_syns > 0 {
            evidence.push("MP_JOIN SYN retried without MP_JOIN".into());
        }
        if syn.direction == direction::INGRESS {
            evidence.push("SYN received without MP_CAPABLE".into());
        }
        return (MptcpState::NotNegotiated, "tcp", evidence);
    }

    let is_join = syn.mptcp_subtype == subtype::MP_JOIN;
    let name = if is_join { "MP_JOIN" } else { "MP_CAPABLE" };
    let subflow = if is_join { "join" } else { "initial" };
    if synack.seen == 0 {
        evidence.push(format!("SYN {} with {name}, no SYN/ACK seen", verb(syn.direction)));
        return (MptcpState::NotNegotiated, subflow, evidence);
    }
    if synack.mptcp_subtype != syn.mptcp_subtype {
        evidence.push(format!(
            "SYN {} with {name}, SYN/ACK {} without",
            verb(syn.direction),
            verb(synack.direction)
        ));
        let state = if is_join { MptcpState::NotNegotiated } else { MptcpState::Fallback };
        return (state, subflow, evidence);
    }
    let mut state = MptcpState::Established;
    if ack3.seen != 0 && ack3.mptcp_subtype != syn.mptcp_subtype {
        evidence.push(format!("SYN and SYN/ACK carried {name}, third ACK {} without", verb(ack3.direction)));
        state = MptcpState::Fallback;
    }
    for (d, label) in [(TX, "sent"), (RX, "received")] {
        if st.infinite_mappings[d] > 0 {
            evidence.push(format!("DSS with infinite mapping {label}: fallback after establishment"));
            state = MptcpState::Fallback;
        }
        if st.data_without_dss[d] > 0 {
            evidence.push(format!(
                "{} data segment(s) {label} without DSS on an MPTCP flow",
                st.data_without_dss[d]
            ));
            state = MptcpState::Fallback;
        }
        if st.options[d][subtype::MP_FAIL as usize] > 0 {
            evidence.push(format!("MP_FAIL {label}"));
        }
    }
    (state, subflow, evidence)
}

pub fn summarize(key: &FlowKey, st: &FlowState, notes: &FlowNotes, iface: &str, netns: u32) -> FlowSummary {
    let (mptcp, subflow, fallback_evidence) = classify(st);
    let role = match st.syn_direction {
        direction::EGRESS => "client",
        direction::INGRESS => "server",
        _ => "unknown",
    };
    let ended = if st.rst[TX] != 0 || st.rst[RX] != 0 {
        "rst"
    } else if st.fin[TX] != 0 && st.fin[RX] != 0 {
        "fin"
    } else if notes.idle {
        "idle"
    } else {
        "live"
    };
    FlowSummary {
        kind: "flow",
        netns,
        iface: iface.to_string(),
        ip_version: key.ip_version,
        local_addr: addr(key.ip_version, &key.local_addr),
        local_port: key.local_port,
        remote_addr: addr(key.ip_version, &key.remote_addr),
        remote_port: key.remote_port,
        role,
        subflow,
        mptcp,
        handshake: Handshake {
            syn: hs_view(&st.handshake[HS_SYN]),
            syn_ack: hs_view(&st.handshake[HS_SYN_ACK]),
            third_ack: hs_view(&st.handshake[HS_THIRD_ACK]),
        },
        options: PerDirection { tx: opt_counts(&st.options[TX]), rx: opt_counts(&st.options[RX]) },
        packets: per_dir(&st.packets),
        payload_bytes: per_dir(&st.payload_bytes),
        data_segments: per_dir(&st.data_segments),
        max_segment: per_dir(&st.max_segment),
        data_without_dss: per_dir(&st.data_without_dss),
        infinite_mappings: per_dir(&st.infinite_mappings),
        malformed_options: per_dir(&st.malformed),
        fin: PerDirection { tx: st.fin[TX] != 0, rx: st.fin[RX] != 0 },
        rst: PerDirection { tx: st.rst[TX] != 0, rx: st.rst[RX] != 0 },
        mp_tcprst_reason: (st.tcprst_reason != 0xff).then(|| tcprst_reason(st.tcprst_reason)),
        fallback_evidence,
        fallback_reason: notes.fallback_reason.clone(),
        socket_states: notes.socket_states.clone(),
        resets: notes.resets.clone(),
        duration_ms: st.last_ns.saturating_sub(st.first_ns) / 1_000_000,
        ended,
    }
}

/// Flows the watcher knows about, with the time their end was first seen.
#[derive(Default)]
pub struct FlowTable {
    pub notes: HashMap<FlowKey, FlowNotes>,
    ending: HashMap<FlowKey, Instant>,
}

/// How long after FIN/RST a flow is kept, so the last ACKs and resets are counted.
pub const END_GRACE: Duration = Duration::from_millis(750);

impl FlowTable {
    /// Records what an event says about its flow.
    pub fn observe(&mut self, ev: &Event) {
        if let Event::Packet(p) = ev {
            self.notes.entry(p.flow).or_default();
            if p.tcp_flags & (tcp_flags::RST | tcp_flags::FIN) != 0 {
                self.ending.entry(p.flow).or_insert_with(Instant::now);
            }
        }
    }

    /// Adds a socket-level note to every flow with these addresses (local/remote as on this host).
    pub fn note_socket(
        &mut self,
        local: (IpAddr, u16),
        remote: (IpAddr, u16),
        mut f: impl FnMut(&mut FlowNotes),
    ) {
        for (k, n) in self.notes.iter_mut() {
            if addr(k.ip_version, &k.local_addr) == local.0
                && k.local_port == local.1
                && addr(k.ip_version, &k.remote_addr) == remote.0
                && k.remote_port == remote.1
            {
                f(n);
            }
        }
    }

    /// Flows whose end was seen more than [`END_GRACE`] ago.
    pub fn due(&mut self, now: Instant) -> Vec<FlowKey> {
        let due: Vec<FlowKey> = self
            .ending
            .iter()
            .filter(|(_, t)| now.duration_since(**t) >= END_GRACE)
            .map(|(k, _)| *k)
            .collect();
        for k in &due {
            self.ending.remove(k);
        }
        due
    }

    pub fn take(&mut self, key: &FlowKey) -> FlowNotes {
        self.ending.remove(key);
        self.notes.remove(key).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(dir: u8, st: u8, len: u8) -> HandshakeOpt {
        HandshakeOpt { seen: 1, mptcp_subtype: st, mptcp_len: len, direction: dir, mss: 1460, _pad: 0 }
    }

    fn client_flow() -> FlowState {
        let mut st =
            FlowState { syn_direction: direction::EGRESS, tcprst_reason: 0xff, ..Default::default() };
        st.handshake[HS_SYN] = hs(direction::EGRESS, subtype::MP_CAPABLE, 4);
        st.options[TX][0] = 1;
        st
    }

    #[test]
    fn full_mp_capable_handshake_with_dss_is_established() {
        let mut st = client_flow();
        st.handshake[HS_SYN_ACK] = hs(direction::INGRESS, subtype::MP_CAPABLE, 12);
        st.handshake[HS_THIRD_ACK] = hs(direction::EGRESS, subtype::MP_CAPABLE, 20);
        st.options[TX][2] = 10;
        st.options[RX][2] = 8;
        let (state, subflow, ev) = classify(&st);
        assert_eq!(state, MptcpState::Established);
        assert_eq!(subflow, "initial");
        assert!(ev.is_empty(), "{ev:?}");
    }

    #[test]
    fn synack_without_mp_capable_is_fallback_with_evidence() {
        let mut st = client_flow();
        st.handshake[HS_SYN_ACK] = hs(direction::INGRESS, 0xff, 0);
        let (state, _, ev) = classify(&st);
        assert_eq!(state, MptcpState::Fallback);
        assert_eq!(ev, vec!["SYN sent with MP_CAPABLE, SYN/ACK received without".to_string()]);
    }

    #[test]
    fn server_side_of_a_stripped_syn_is_not_negotiated() {
        let mut st =
            FlowState { syn_direction: direction::INGRESS, tcprst_reason: 0xff, ..Default::default() };
        st.handshake[HS_SYN] = hs(direction::INGRESS, 0xff, 0);
        st.handshake[HS_SYN_ACK] = hs(direction::EGRESS, 0xff, 0);
        let (state, subflow, ev) = classify(&st);
        assert_eq!(state, MptcpState::NotNegotiated);
        assert_eq!(subflow, "tcp");
        assert_eq!(ev, vec!["SYN received without MP_CAPABLE".to_string()]);
    }

    #[test]
    fn syn_retried_without_mptcp_after_drops_is_fallback() {
        let mut st = client_flow();
        st.options[TX][0] = 3;
        st.handshake[HS_SYN] = hs(direction::EGRESS, 0xff, 0);
        st.handshake[HS_SYN_ACK] = hs(direction::INGRESS, 0xff, 0);
        let (state, _, ev) = classify(&st);
        assert_eq!(state, MptcpState::Fallback);
        assert!(ev[0].contains("3 time(s)"), "{ev:?}");
    }

    #[test]
    fn data_without_dss_after_negotiation_is_fallback() {
        let mut st = client_flow();
        st.handshake[HS_SYN_ACK] = hs(direction::INGRESS, subtype::MP_CAPABLE, 12);
        st.handshake[HS_THIRD_ACK] = hs(direction::EGRESS, subtype::MP_CAPABLE, 20);
        st.data_without_dss[RX] = 4;
        let (state, _, ev) = classify(&st);
        assert_eq!(state, MptcpState::Fallback);
        assert_eq!(ev, vec!["4 data segment(s) received without DSS on an MPTCP flow".to_string()]);
    }

    #[test]
    fn third_ack_stripped_seen_by_the_server_is_fallback() {
        let mut st =
            FlowState { syn_direction: direction::INGRESS, tcprst_reason: 0xff, ..Default::default() };
        st.handshake[HS_SYN] = hs(direction::INGRESS, subtype::MP_CAPABLE, 4);
        st.handshake[HS_SYN_ACK] = hs(direction::EGRESS, subtype::MP_CAPABLE, 12);
        st.handshake[HS_THIRD_ACK] = hs(direction::INGRESS, 0xff, 0);
        let (state, _, ev) = classify(&st);
        assert_eq!(state, MptcpState::Fallback);
        assert!(ev[0].contains("third ACK received without"), "{ev:?}");
    }

    #[test]
    fn join_answered_without_mp_join_is_not_a_fallback() {
        let mut st =
            FlowState { syn_direction: direction::EGRESS, tcprst_reason: 0xff, ..Default::default() };
        st.handshake[HS_SYN] = hs(direction::EGRESS, subtype::MP_JOIN, 12);
        st.handshake[HS_SYN_ACK] = hs(direction::INGRESS, 0xff, 0);
        let (state, subflow, _) = classify(&st);
        assert_eq!(state, MptcpState::NotNegotiated);
        assert_eq!(subflow, "join");
    }

    #[test]
    fn summary_json_carries_the_contract_fields() {
        let mut st = client_flow();
        st.handshake[HS_SYN_ACK] = hs(direction::INGRESS, subtype::MP_CAPABLE, 12);
        let key = FlowKey {
            ifindex: 2,
            ip_version: 4,
            local_port: 40001,
            remote_port: 8080,
            local_addr: [192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote_addr: [203, 0, 113, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ..Default::default()
        };
        let s = summarize(&key, &st, &FlowNotes::default(), "veth0", 1);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["type"], "flow");
        assert_eq!(v["mptcp"], "established");
        assert_eq!(v["local_addr"], "192.0.2.1");
        assert_eq!(v["remote_port"], 8080);
        assert_eq!(v["role"], "client");
        assert_eq!(v["handshake"]["syn"]["mptcp"], "mp_capable");
        assert_eq!(v["handshake"]["syn"]["mptcp_len"], 4);
        assert_eq!(v["options"]["tx"]["mp_capable"], 1);
    }
}
