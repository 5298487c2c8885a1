//! A flow's summary from the kernel's per-flow state and what user space noted: its MPTCP state
//! (established, fallback, not negotiated) with the evidence in words, its handshake options
//! each way, and its option counts.

use std::collections::BTreeMap;

use mptcp_probe_common::{
    event::direction::{EGRESS, INGRESS},
    flow::{mark, FlowKey, FlowState, HandshakeOpt, HS_SYN, HS_SYN_ACK, HS_THIRD_ACK, SUBTYPE_SLOTS},
    options::{subtype, MpCapablePacket, MpCapableRejection, MptcpOption},
};
use mptcp_probe_model::{
    flow::Nothing, Direction, Ended, FallbackCause, FlowSummary, Handshake, HandshakePacket, MptcpState,
    PerDirection, Role, Subflow, Subtype, TcpRstReason,
};

use super::record::key_addr;

/// What user space learnt about a flow besides the kernel's flow state.
#[derive(Clone, Debug, Default)]
pub struct FlowNotes {
    /// Kernel socket events: "tcp SYN_SENT -> ESTABLISHED".
    pub socket_states: Vec<String>,
    /// Resets named by the TCP tracepoints (kernel reset reason where given).
    pub resets: Vec<String>,
    /// Exact fallback reason (MIB name) from fentry, where available.
    pub fallback_reason: Option<String>,
    /// An MPTCP-level socket was seen with this flow's addresses.
    pub mptcp_socket: bool,
    /// Summarised because it went quiet, not because it ended.
    pub idle: bool,
    /// When the first event noted of the flow was reported (kernel clock): an entry created
    /// later is another incarnation of the flow.
    pub first_event_ns: u64,
}

fn per_dir<T: Copy + Into<U>, U: Nothing + Default>(a: &[T; 2]) -> PerDirection<U> {
    PerDirection { tx: a[EGRESS as usize].into(), rx: a[INGRESS as usize].into() }
}

fn opt_counts(st: &FlowState, dir: u8) -> BTreeMap<Subtype, u32> {
    (0..SUBTYPE_SLOTS)
        .map(|slot| (Subtype::from_slot(slot), st.option_count(dir as usize, slot)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn packet_view(h: &HandshakeOpt) -> Option<HandshakePacket> {
    let mpc = h.carries(subtype::MP_CAPABLE);
    (h.seen != 0).then(|| HandshakePacket {
        direction: Direction::from_code(h.direction()),
        mptcp: h.has_mptcp().then(|| Subtype::from_code(h.mptcp_subtype)),
        mptcp_len: h.has_mptcp().then_some(h.mptcp_len),
        mptcp_version: mpc.then_some(h.mptcp_version),
        mptcp_flags: mpc.then_some(h.mptcp_flags),
        mss: (h.mss() != 0).then_some(h.mss()),
    })
}

/// Why Linux ignores this handshake packet's MP_CAPABLE, in words, or None (accepted, or
/// another option).
fn mpc_ignored(h: &HandshakeOpt, on: MpCapablePacket) -> Option<String> {
    if !h.carries(subtype::MP_CAPABLE) {
        return None;
    }
    let o = MptcpOption {
        len: h.mptcp_len,
        version: h.mptcp_version,
        flags: h.mptcp_flags,
        ..Default::default()
    };
    Some(match o.mp_capable_rejection(on)? {
        MpCapableRejection::Version(v) => format!("MP_CAPABLE version {v}"),
        MpCapableRejection::Flags(f) => format!("MP_CAPABLE flags {f:#04x}"),
        MpCapableRejection::Length(l) => format!("MP_CAPABLE of {l} bytes"),
    })
}

/// A flow's MPTCP state as its packets show it.
#[derive(Clone, Debug, PartialEq)]
pub struct MptcpView {
    pub state: MptcpState,
    pub subflow: Subflow,
    /// Why it is not (or no longer) MPTCP, in words; also what a join retried without.
    pub evidence: Vec<String>,
    /// The first of the evidence that made it fall back, as a name.
    pub cause: Option<FallbackCause>,
}

/// The MPTCP state of a flow, its kind of subflow, and the evidence behind a fallback.
pub fn mptcp_state(st: &FlowState) -> MptcpView {
    use FallbackCause as Cause;
    let syn = st.handshake[HS_SYN];
    let synack = st.handshake[HS_SYN_ACK];
    let ack3 = st.handshake[HS_THIRD_ACK];
    let mut evidence = Vec::new();
    let view = |state, subflow, evidence, cause| MptcpView { state, subflow, evidence, cause };
    let total = |code: u8| {
        st.option_count(EGRESS as usize, code as usize) + st.option_count(INGRESS as usize, code as usize)
    };

    if syn.seen == 0 {
        // Started before we looked: judge from what the data carries.
        let mptcp_seen = total(subtype::DSS) + total(subtype::MP_CAPABLE) > 0;
        let subflow = if mptcp_seen { Subflow::Initial } else { Subflow::Tcp };
        if st.infinite_mappings(EGRESS as usize) > 0 || st.infinite_mappings(INGRESS as usize) > 0 {
            evidence.push("infinite mapping seen: MPTCP fell back to TCP after establishment".into());
            return view(MptcpState::Fallback, subflow, evidence, Some(Cause::InfiniteMapping));
        }
        let state = if mptcp_seen { MptcpState::Established } else { MptcpState::NotNegotiated };
        return view(state, subflow, evidence, None);
    }

    let syn_dir = Direction::from_code(syn.direction());
    let mpc_syns = st.option_count(syn.direction() as usize, subtype::MP_CAPABLE as usize);
    if !syn.has_mptcp() {
        // The last SYN had no MPTCP option: either never asked, or retried without it.
        let join_syns = st.option_count(syn.direction() as usize, subtype::MP_JOIN as usize);
        if syn_dir == Direction::Tx && mpc_syns > 0 && synack.seen != 0 && !synack.has_mptcp() {
            evidence.push(format!(
                "SYN sent with MP_CAPABLE {mpc_syns} time(s) without answer, then retried without MPTCP"
            ));
            return view(
                MptcpState::Fallback,
                Subflow::Initial,
                evidence,
                Some(Cause::SynRetriedWithoutMptcp),
            );
        }
        if join_syns > 0 {
            evidence.push("MP_JOIN SYN retried without MP_JOIN".into());
        }
        if syn_dir == Direction::Rx {
            evidence.push("SYN received without MP_CAPABLE".into());
        }
        return view(MptcpState::NotNegotiated, Subflow::Tcp, evidence, None);
    }

    let is_join = syn.mptcp_subtype == subtype::MP_JOIN;
    let name = if is_join { "MP_JOIN" } else { "MP_CAPABLE" };
    let subflow = if is_join { Subflow::Join } else { Subflow::Initial };
    // An option the kernel ignores is no option: the connection goes on as TCP.
    if let Some(why) = mpc_ignored(&syn, MpCapablePacket::Syn) {
        evidence.push(format!("SYN {} with {why}, which Linux ignores", syn_dir.verb()));
        return view(MptcpState::NotNegotiated, subflow, evidence, None);
    }
    if synack.seen == 0 {
        evidence.push(format!("SYN {} with {name}, no SYN/ACK seen", syn_dir.verb()));
        return view(MptcpState::NotNegotiated, subflow, evidence, None);
    }
    let synack_dir = Direction::from_code(synack.direction()).verb();
    if synack.mptcp_subtype != syn.mptcp_subtype {
        evidence.push(format!("SYN {} with {name}, SYN/ACK {synack_dir} without", syn_dir.verb()));
        if is_join {
            return view(MptcpState::NotNegotiated, subflow, evidence, None);
        }
        return view(MptcpState::Fallback, subflow, evidence, Some(Cause::SynackWithoutMptcp));
    }
    if let Some(why) = mpc_ignored(&synack, MpCapablePacket::SynAck) {
        evidence.push(format!("SYN/ACK {synack_dir} with {why}, which Linux ignores"));
        return view(MptcpState::Fallback, subflow, evidence, Some(Cause::SynackOptionIgnored));
    }
    let mut cause = None;
    let ack_dir = Direction::from_code(ack3.direction()).verb();
    if ack3.seen != 0 && ack3.mptcp_subtype != syn.mptcp_subtype {
        evidence.push(format!("SYN and SYN/ACK carried {name}, third ACK {ack_dir} without"));
        cause = Some(Cause::ThirdAckWithoutMptcp);
    } else if let Some(why) = mpc_ignored(&ack3, MpCapablePacket::Ack { data: ack3.with_data() }) {
        evidence.push(format!("third ACK {ack_dir} with {why}, which Linux ignores"));
        cause = Some(Cause::ThirdAckOptionIgnored);
    }
    for d in [Direction::Tx, Direction::Rx] {
        let i = if d == Direction::Tx { EGRESS } else { INGRESS } as usize;
        let label = d.verb();
        if st.infinite_mappings(i) > 0 {
            evidence.push(format!("DSS with infinite mapping {label}: fallback after establishment"));
            cause = cause.or(Some(Cause::InfiniteMapping));
        }
        if st.data_without_dss[i] > 0 {
            evidence.push(format!(
                "{} data segment(s) {label} without DSS on an MPTCP flow",
                st.data_without_dss[i]
            ));
            cause = cause.or(Some(Cause::DataWithoutDss));
        }
        if st.option_count(i, subtype::MP_FAIL as usize) > 0 {
            evidence.push(format!("MP_FAIL {label}"));
        }
    }
    let state = if cause.is_some() { MptcpState::Fallback } else { MptcpState::Established };
    view(state, subflow, evidence, cause)
}

pub fn summarize(key: &FlowKey, st: &FlowState, notes: &FlowNotes, iface: &str, netns: u32) -> FlowSummary {
    let MptcpView { state: mptcp, subflow, evidence: fallback_evidence, cause: fallback_cause } =
        mptcp_state(st);
    let role = match st.syn_direction() {
        EGRESS => Role::Client,
        INGRESS => Role::Server,
        _ => Role::Unknown,
    };
    let flag = |m| PerDirection { tx: st.marked(EGRESS as usize, m), rx: st.marked(INGRESS as usize, m) };
    let (fin, rst) = (flag(mark::FIN), flag(mark::RST));
    let ended = if rst.tx || rst.rx {
        Ended::Rst
    } else if fin.tx && fin.rx {
        Ended::Fin
    } else if notes.idle {
        Ended::Idle
    } else {
        Ended::Live
    };
    FlowSummary {
        netns,
        iface: iface.to_string(),
        ip_version: key.ip_version(),
        local_addr: key_addr(&key.local_addr),
        local_port: key.local_port,
        remote_addr: key_addr(&key.remote_addr),
        remote_port: key.remote_port,
        role,
        subflow,
        mptcp,
        handshake: Handshake {
            syn: packet_view(&st.handshake[HS_SYN]),
            syn_ack: packet_view(&st.handshake[HS_SYN_ACK]),
            third_ack: packet_view(&st.handshake[HS_THIRD_ACK]),
        },
        options: PerDirection { tx: opt_counts(st, EGRESS), rx: opt_counts(st, INGRESS) },
        packets: per_dir(&st.packets),
        payload_bytes: per_dir(&st.payload_bytes),
        data_segments: per_dir(&st.data_segments),
        max_segment: per_dir(&st.max_segment),
        data_without_dss: per_dir(&st.data_without_dss),
        infinite_mappings: per_dir(&[st.infinite_mappings(0), st.infinite_mappings(1)]),
        mptcp_retransmissions: per_dir(&st.mptcp_retransmissions),
        malformed_options: per_dir(&st.malformed),
        fin,
        rst,
        mp_tcprst_reason: TcpRstReason::from_flow(st.tcprst_reason),
        fallback_evidence,
        fallback_cause,
        fallback_reason: notes.fallback_reason.clone(),
        socket_states: notes.socket_states.clone(),
        resets: notes.resets.clone(),
        duration_ms: st.last_ns.saturating_sub(st.first_ns) / 1_000_000,
        ended,
    }
}

#[cfg(test)]
mod tests {
    use mptcp_probe_common::{
        flow::hs_seen,
        options::mp_capable::{FLAG_EXTENSIBILITY, FLAG_HMAC_SHA256},
        proto::NONE_U8,
    };

    use super::*;

    const TX: usize = EGRESS as usize;
    const RX: usize = INGRESS as usize;

    fn hs(dir: u8, st: u8, len: u8) -> HandshakeOpt {
        HandshakeOpt {
            seen: hs_seen::SEEN | if dir == EGRESS { hs_seen::EGRESS } else { 0 },
            mptcp_subtype: st,
            mptcp_len: len,
            mss: 1460u16.to_ne_bytes(),
            mptcp_version: 1,
            mptcp_flags: FLAG_HMAC_SHA256,
        }
    }

    fn none(dir: u8) -> HandshakeOpt {
        hs(dir, NONE_U8, 0)
    }

    /// A flow entry as a new one is; its SYN record says which way the SYN went.
    fn flow() -> FlowState {
        FlowState { tcprst_reason: NONE_U8, ..Default::default() }
    }

    fn client_flow() -> FlowState {
        let mut st = flow();
        st.handshake[HS_SYN] = hs(EGRESS, subtype::MP_CAPABLE, 4);
        st.options[TX][0] = 1;
        st
    }

    fn established() -> FlowState {
        let mut st = client_flow();
        st.handshake[HS_SYN_ACK] = hs(INGRESS, subtype::MP_CAPABLE, 12);
        st.handshake[HS_THIRD_ACK] = hs(EGRESS, subtype::MP_CAPABLE, 20);
        st
    }

    #[test]
    fn full_mp_capable_handshake_with_dss_is_established() {
        let mut st = established();
        st.dss[TX] = 10;
        st.dss[RX] = 8;
        let MptcpView { state, subflow, evidence: ev, .. } = mptcp_state(&st);
        assert_eq!(state, MptcpState::Established);
        assert_eq!(subflow, Subflow::Initial);
        assert!(ev.is_empty(), "{ev:?}");
    }

    #[test]
    fn synack_without_mp_capable_is_fallback_with_evidence() {
        let mut st = client_flow();
        st.handshake[HS_SYN_ACK] = none(INGRESS);
        let MptcpView { state, evidence: ev, cause, .. } = mptcp_state(&st);
        assert_eq!(state, MptcpState::Fallback);
        assert_eq!(ev, vec!["SYN sent with MP_CAPABLE, SYN/ACK received without".to_string()]);
        assert_eq!(cause, Some(FallbackCause::SynackWithoutMptcp));
    }

    #[test]
    fn server_side_of_a_stripped_syn_is_not_negotiated() {
        let mut st = flow();
        st.handshake[HS_SYN] = none(INGRESS);
        st.handshake[HS_SYN_ACK] = none(EGRESS);
        let MptcpView { state, subflow, evidence: ev, cause } = mptcp_state(&st);
        assert_eq!(state, MptcpState::NotNegotiated);
        assert_eq!(cause, None, "not negotiated is no fallback");
        assert_eq!(subflow, Subflow::Tcp);
        assert_eq!(ev, vec!["SYN received without MP_CAPABLE".to_string()]);
    }

    #[test]
    fn syn_retried_without_mptcp_after_drops_is_fallback() {
        let mut st = client_flow();
        st.options[TX][0] = 3;
        st.handshake[HS_SYN] = none(EGRESS);
        st.handshake[HS_SYN_ACK] = none(INGRESS);
        let MptcpView { state, evidence: ev, cause, .. } = mptcp_state(&st);
        assert_eq!(state, MptcpState::Fallback);
        assert!(ev[0].contains("3 time(s)"), "{ev:?}");
        assert_eq!(cause, Some(FallbackCause::SynRetriedWithoutMptcp));
    }

    #[test]
    fn data_without_dss_after_negotiation_is_fallback() {
        let mut st = established();
        st.data_without_dss[RX] = 4;
        st.options[TX][subtype::DSS as usize] = 1;
        let MptcpView { evidence: ev, cause, .. } = mptcp_state(&st);
        // The cause is the first of the evidence.
        assert_eq!(cause, Some(FallbackCause::InfiniteMapping));
        st.options[TX][subtype::DSS as usize] = 0;
        assert_eq!(ev.len(), 2, "{ev:?}");
        let MptcpView { state, evidence: ev, cause, .. } = mptcp_state(&st);
        assert_eq!(cause, Some(FallbackCause::DataWithoutDss));
        assert_eq!(state, MptcpState::Fallback);
        assert_eq!(ev, vec!["4 data segment(s) received without DSS on an MPTCP flow".to_string()]);
    }

    #[test]
    fn third_ack_stripped_seen_by_the_server_is_fallback() {
        let mut st = flow();
        st.handshake[HS_SYN] = hs(INGRESS, subtype::MP_CAPABLE, 4);
        st.handshake[HS_SYN_ACK] = hs(EGRESS, subtype::MP_CAPABLE, 12);
        st.handshake[HS_THIRD_ACK] = none(INGRESS);
        let MptcpView { state, evidence: ev, cause, .. } = mptcp_state(&st);
        assert_eq!(state, MptcpState::Fallback);
        assert!(ev[0].contains("third ACK received without"), "{ev:?}");
        assert_eq!(cause, Some(FallbackCause::ThirdAckWithoutMptcp));
    }

    #[test]
    fn a_third_ack_mp_capable_the_kernel_rejects_counts_as_absent() {
        // Version 0 after a version-1 SYN and SYN/ACK: Linux ignores the option and falls back.
        let mut st = established();
        st.handshake[HS_THIRD_ACK].mptcp_version = 0;
        let MptcpView { state, evidence: ev, cause, .. } = mptcp_state(&st);
        assert_eq!(state, MptcpState::Fallback);
        assert_eq!(ev, vec!["third ACK sent with MP_CAPABLE version 0, which Linux ignores".to_string()]);
        assert_eq!(cause, Some(FallbackCause::ThirdAckOptionIgnored));
        // The extensibility bit, or no HMAC-SHA256.
        for flags in [FLAG_HMAC_SHA256 | FLAG_EXTENSIBILITY, 0x00, 0x03] {
            let mut st = established();
            st.handshake[HS_THIRD_ACK].mptcp_flags = flags;
            let MptcpView { state, evidence: ev, .. } = mptcp_state(&st);
            assert_eq!(state, MptcpState::Fallback, "flags {flags:#x}");
            assert!(ev[0].contains(&format!("MP_CAPABLE flags {flags:#04x}")), "{ev:?}");
        }
        // A 20-byte option on the first data segment (it must carry the data length: 22).
        let mut st = established();
        st.handshake[HS_THIRD_ACK].seen |= hs_seen::DATA;
        assert_eq!(mptcp_state(&st).state, MptcpState::Fallback);
        st.handshake[HS_THIRD_ACK].mptcp_len = 22;
        assert_eq!(mptcp_state(&st).state, MptcpState::Established);
        // The checksum bit is fine.
        let mut st = established();
        st.handshake[HS_THIRD_ACK].mptcp_flags |= mptcp_probe_common::options::mp_capable::FLAG_CHECKSUM;
        assert_eq!(mptcp_state(&st).state, MptcpState::Established);
    }

    #[test]
    fn a_syn_of_a_future_version_is_accepted_a_synack_one_is_not() {
        let mut st = established();
        st.handshake[HS_SYN].mptcp_version = 2;
        assert_eq!(mptcp_state(&st).state, MptcpState::Established);
        st.handshake[HS_SYN_ACK].mptcp_version = 2;
        let MptcpView { state, evidence: ev, cause, .. } = mptcp_state(&st);
        assert_eq!(state, MptcpState::Fallback);
        assert!(ev[0].starts_with("SYN/ACK received with MP_CAPABLE version 2"), "{ev:?}");
        assert_eq!(cause, Some(FallbackCause::SynackOptionIgnored));
    }

    #[test]
    fn join_answered_without_mp_join_is_not_a_fallback() {
        let mut st = flow();
        st.handshake[HS_SYN] = hs(EGRESS, subtype::MP_JOIN, 12);
        st.handshake[HS_SYN_ACK] = none(INGRESS);
        let MptcpView { state, subflow, .. } = mptcp_state(&st);
        assert_eq!(state, MptcpState::NotNegotiated);
        assert_eq!(subflow, Subflow::Join);
    }

    #[test]
    fn summary_json_carries_the_contract_fields() {
        let mut st = client_flow();
        st.handshake[HS_SYN_ACK] = hs(INGRESS, subtype::MP_CAPABLE, 12);
        let key = FlowKey {
            ifindex: 2,
            local_port: 40001,
            remote_port: 8080,
            local_addr: mptcp_probe_common::flow::v4_mapped([192, 0, 2, 1]),
            remote_addr: mptcp_probe_common::flow::v4_mapped([203, 0, 113, 2]),
        };
        let s = summarize(&key, &st, &FlowNotes::default(), "veth0", 1);
        let v = serde_json::to_value(mptcp_probe_model::WatchLine::Flow(Box::new(s))).unwrap();
        assert_eq!(v["type"], "flow");
        assert_eq!(v["mptcp"], "established");
        assert_eq!(v["local_addr"], "192.0.2.1");
        assert_eq!(v["remote_port"], 8080);
        assert_eq!(v["role"], "client");
        assert_eq!(v["handshake"]["syn"]["mptcp"], "mp_capable");
        assert_eq!(v["handshake"]["syn"]["mptcp_len"], 4);
        assert_eq!(v["handshake"]["syn"]["mptcp_version"], 1);
        assert_eq!(v["options"]["tx"]["mp_capable"], 1);
        assert_eq!(v["ended"], "live");
        assert!(v.get("mptcp_retransmissions").is_none(), "{v}");
    }

    #[test]
    fn marks_and_counts_of_the_entry_read_as_the_summary_says() {
        let mut st = established();
        st.marks[TX] = mark::FIN | mark::FIRST_DSS;
        st.marks[RX] = mark::FIN | mark::NEGOTIATED;
        st.mptcp_retransmissions[TX] = 3;
        st.options[RX][subtype::DSS as usize] = 2;
        st.dss[RX] = 9;
        let s = summarize(&FlowKey::default(), &st, &FlowNotes::default(), "veth0", 1);
        assert_eq!(s.role, Role::Client);
        assert_eq!((s.fin.tx, s.fin.rx, s.rst.tx, s.rst.rx), (true, true, false, false));
        assert_eq!(s.ended, Ended::Fin);
        assert_eq!((s.mptcp_retransmissions.tx, s.mptcp_retransmissions.rx), (3, 0));
        assert_eq!((s.infinite_mappings.tx, s.infinite_mappings.rx), (0, 2));
        assert_eq!(
            s.options.rx.get(&Subtype::Dss),
            Some(&9),
            "the DSS slot's infinite mappings are no DSS count"
        );
        assert_eq!(
            s.handshake.syn_ack.as_ref().map(|h| (h.direction, h.mss)),
            Some((Direction::Rx, Some(1460)))
        );
        assert_eq!(s.mptcp, MptcpState::Fallback, "an infinite mapping");
        st.marks[RX] |= mark::RST;
        assert_eq!(summarize(&FlowKey::default(), &st, &FlowNotes::default(), "veth0", 1).ended, Ended::Rst);
    }
}
