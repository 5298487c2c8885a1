//! A flow summary: one TCP flow (an MPTCP subflow or a plain TCP connection) as the observer saw
//! it on one interface, from its SYN to its end.

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::{
    report::MptcpState,
    wire::{Direction, Subtype, TcpRstReason},
};

/// Which end of the flow this host is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sent the SYN.
    Client,
    /// Received the SYN.
    Server,
    /// The flow started before observation.
    Unknown,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
            Role::Unknown => "unknown",
        }
    }
}

/// What kind of subflow a flow is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subflow {
    /// The first subflow of an MPTCP connection (MP_CAPABLE).
    Initial,
    /// An additional subflow (MP_JOIN).
    Join,
    /// Plain TCP.
    Tcp,
}

impl Subflow {
    pub const fn as_str(self) -> &'static str {
        match self {
            Subflow::Initial => "initial",
            Subflow::Join => "join",
            Subflow::Tcp => "tcp",
        }
    }
}

/// What the wire showed when a flow is not (or no longer) MPTCP: a small, fixed set (for
/// metric labels); `fallback_evidence` says it in words, with the counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackCause {
    /// SYNs with MP_CAPABLE went unanswered; a SYN without it was answered.
    SynRetriedWithoutMptcp,
    /// The SYN carried the option, the SYN/ACK did not.
    SynackWithoutMptcp,
    /// The SYN/ACK's MP_CAPABLE was one Linux ignores (version, flags, length).
    SynackOptionIgnored,
    /// SYN and SYN/ACK carried MP_CAPABLE, the third ACK did not.
    ThirdAckWithoutMptcp,
    /// The third ACK's MP_CAPABLE was one Linux ignores.
    ThirdAckOptionIgnored,
    /// A DSS with an infinite mapping: fallback after establishment.
    InfiniteMapping,
    /// Data segments without DSS on an MPTCP flow.
    DataWithoutDss,
}

impl FallbackCause {
    pub const ALL: [FallbackCause; 7] = [
        FallbackCause::SynRetriedWithoutMptcp,
        FallbackCause::SynackWithoutMptcp,
        FallbackCause::SynackOptionIgnored,
        FallbackCause::ThirdAckWithoutMptcp,
        FallbackCause::ThirdAckOptionIgnored,
        FallbackCause::InfiniteMapping,
        FallbackCause::DataWithoutDss,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            FallbackCause::SynRetriedWithoutMptcp => "syn_retried_without_mptcp",
            FallbackCause::SynackWithoutMptcp => "synack_without_mptcp",
            FallbackCause::SynackOptionIgnored => "synack_option_ignored",
            FallbackCause::ThirdAckWithoutMptcp => "third_ack_without_mptcp",
            FallbackCause::ThirdAckOptionIgnored => "third_ack_option_ignored",
            FallbackCause::InfiniteMapping => "infinite_mapping",
            FallbackCause::DataWithoutDss => "data_without_dss",
        }
    }
}

/// What became of a connection of any program, as the daemon counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionOutcome {
    /// MPTCP negotiated and kept.
    Mptcp,
    /// MPTCP asked for and lost: not negotiated after all, or fallen back to TCP later.
    Fallback,
    /// Plain TCP: MPTCP never asked for.
    Plain,
}

impl ConnectionOutcome {
    pub const ALL: [ConnectionOutcome; 3] =
        [ConnectionOutcome::Mptcp, ConnectionOutcome::Fallback, ConnectionOutcome::Plain];

    /// The outcome of a flow in this MPTCP state (a plain-TCP test's is plain).
    pub const fn of(state: crate::MptcpState) -> Self {
        match state {
            crate::MptcpState::Established => ConnectionOutcome::Mptcp,
            crate::MptcpState::Fallback => ConnectionOutcome::Fallback,
            crate::MptcpState::NotNegotiated | crate::MptcpState::NotApplicable => ConnectionOutcome::Plain,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            ConnectionOutcome::Mptcp => "mptcp",
            ConnectionOutcome::Fallback => "fallback",
            ConnectionOutcome::Plain => "plain",
        }
    }
}

/// Why a flow was summarised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    /// FIN both ways.
    Fin,
    Rst,
    /// Quiet for the idle timeout.
    Idle,
    /// Still open when the observer stopped.
    Live,
}

impl Ended {
    pub const fn as_str(self) -> &'static str {
        match self {
            Ended::Fin => "fin",
            Ended::Rst => "rst",
            Ended::Idle => "idle",
            Ended::Live => "live",
        }
    }
}

/// A value that a compact summary leaves out when it is nothing: zero, false, empty.
pub trait Nothing {
    fn is_nothing(&self) -> bool;
}

impl Nothing for u32 {
    fn is_nothing(&self) -> bool {
        *self == 0
    }
}

impl Nothing for u64 {
    fn is_nothing(&self) -> bool {
        *self == 0
    }
}

impl Nothing for bool {
    fn is_nothing(&self) -> bool {
        !*self
    }
}

impl<K, V> Nothing for BTreeMap<K, V> {
    fn is_nothing(&self) -> bool {
        self.is_empty()
    }
}

/// A value per direction as seen from this host. Left out of the JSON where it is nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerDirection<T: Nothing + Default> {
    #[serde(default, skip_serializing_if = "Nothing::is_nothing")]
    pub tx: T,
    #[serde(default, skip_serializing_if = "Nothing::is_nothing")]
    pub rx: T,
}

impl<T: Nothing + Default> PerDirection<T> {
    pub fn get(&self, d: Direction) -> &T {
        match d {
            Direction::Tx => &self.tx,
            Direction::Rx => &self.rx,
        }
    }
}

impl<T: Nothing + Default> Nothing for PerDirection<T> {
    fn is_nothing(&self) -> bool {
        self.tx.is_nothing() && self.rx.is_nothing()
    }
}

/// What one handshake packet carried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakePacket {
    pub direction: Direction,
    /// MP_CAPABLE or MP_JOIN; absent: no MPTCP option.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mptcp: Option<Subtype>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mptcp_len: Option<u8>,
    /// MP_CAPABLE's version and flag byte, as on the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mptcp_version: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mptcp_flags: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mss: Option<u16>,
}

/// The handshake packets seen (absent: not seen).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshake {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn: Option<HandshakePacket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_ack: Option<HandshakePacket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub third_ack: Option<HandshakePacket>,
}

impl Handshake {
    fn is_empty(&self) -> bool {
        self.syn.is_none() && self.syn_ack.is_none() && self.third_ack.is_none()
    }
}

/// A flow's summary. The JSON is compact: a field that is nothing (zero, false, empty, not seen)
/// is left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowSummary {
    /// Network namespace inode of the observer.
    pub netns: u32,
    pub iface: String,
    pub ip_version: u8,
    pub local_addr: IpAddr,
    pub local_port: u16,
    pub remote_addr: IpAddr,
    pub remote_port: u16,
    pub role: Role,
    pub subflow: Subflow,
    /// Established, fallback or not negotiated (never not_applicable).
    pub mptcp: MptcpState,
    #[serde(default, skip_serializing_if = "Handshake::is_empty")]
    pub handshake: Handshake,
    /// MPTCP options per subtype, each way.
    #[serde(default, skip_serializing_if = "Nothing::is_nothing")]
    pub options: PerDirection<BTreeMap<Subtype, u32>>,
    #[serde(default, skip_serializing_if = "Nothing::is_nothing")]
    pub packets: PerDirection<u32>,
    #[serde(default, skip_serializing_if = "Nothing::is_nothing")]
    pub payload_bytes: PerDirection<u64>,
    /// Data segments as on the wire (GSO/GRO packets count the segments they stand for).
    #[serde(default, skip_serializing_if = "Nothing::is_nothing")]
    pub data_segments: PerDirection<u32>,
    #[serde(default, skip_serializing_if = "Nothing::is_nothing")]
    pub max_segment: PerDirection<u32>,
    #[serde(default, skip_serializing_if = "Nothing::is_nothing")]
    pub data_without_dss: PerDirection<u32>,
    #[serde(default, skip_serializing_if = "Nothing::is_nothing")]
    pub infinite_mappings: PerDirection<u32>,
    #[serde(default, skip_serializing_if = "Nothing::is_nothing")]
    pub malformed_options: PerDirection<u32>,
    /// MPTCP-level retransmissions seen on this subflow: times new subflow data carried a data
    /// sequence behind the data before it (tx: this host sent data again; rx: the peer did,
    /// duplicate data here when the first copy had arrived). Not seen: data sent again on
    /// another subflow than the first copy, when it is ahead of what that subflow sent last.
    #[serde(default, skip_serializing_if = "Nothing::is_nothing")]
    pub mptcp_retransmissions: PerDirection<u32>,
    #[serde(default, skip_serializing_if = "Nothing::is_nothing")]
    pub fin: PerDirection<bool>,
    #[serde(default, skip_serializing_if = "Nothing::is_nothing")]
    pub rst: PerDirection<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mp_tcprst_reason: Option<TcpRstReason>,
    /// Why the flow is not (or no longer) MPTCP, in words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_evidence: Vec<String>,
    /// The first thing on the wire that made it so (the evidence's first line), as a name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_cause: Option<FallbackCause>,
    /// The kernel's exact fallback reason (MIB name), where the host permits knowing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// Kernel socket state changes of the flow: "tcp SYN_SENT -> ESTABLISHED".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub socket_states: Vec<String>,
    /// Resets named by the TCP tracepoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resets: Vec<String>,
    pub duration_ms: u64,
    pub ended: Ended,
}

impl FlowSummary {
    /// Something went wrong on the flow: MPTCP fell back, or was asked for and not had, data came
    /// without DSS, an infinite mapping, a reset, MP_FAIL / MP_FASTCLOSE / MP_TCPRST, a malformed
    /// option area, data sent again at the MPTCP level.
    pub fn troubled(&self) -> bool {
        let problem_options = [Subtype::MpFail, Subtype::MpFastclose, Subtype::MpTcprst]
            .iter()
            .any(|st| self.options.tx.contains_key(st) || self.options.rx.contains_key(st));
        self.mptcp == MptcpState::Fallback
            || !self.fallback_evidence.is_empty()
            || self.fallback_reason.is_some()
            || !self.data_without_dss.is_nothing()
            || !self.infinite_mappings.is_nothing()
            || !self.malformed_options.is_nothing()
            || !self.mptcp_retransmissions.is_nothing()
            || !self.rst.is_nothing()
            || self.mp_tcprst_reason.is_some()
            || problem_options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean() -> FlowSummary {
        FlowSummary {
            netns: 1,
            iface: "veth0".into(),
            ip_version: 4,
            local_addr: "192.0.2.1".parse().unwrap(),
            local_port: 40000,
            remote_addr: "203.0.113.2".parse().unwrap(),
            remote_port: 80,
            role: Role::Client,
            subflow: Subflow::Initial,
            mptcp: MptcpState::Established,
            handshake: Handshake::default(),
            options: PerDirection::default(),
            packets: PerDirection { tx: 3, rx: 0 },
            payload_bytes: PerDirection::default(),
            data_segments: PerDirection::default(),
            max_segment: PerDirection::default(),
            data_without_dss: PerDirection::default(),
            infinite_mappings: PerDirection::default(),
            malformed_options: PerDirection::default(),
            mptcp_retransmissions: PerDirection::default(),
            fin: PerDirection { tx: true, rx: true },
            rst: PerDirection::default(),
            mp_tcprst_reason: None,
            fallback_evidence: vec![],
            fallback_cause: None,
            fallback_reason: None,
            socket_states: vec![],
            resets: vec![],
            duration_ms: 2,
            ended: Ended::Fin,
        }
    }

    #[test]
    fn a_clean_summary_is_compact_and_reads_back_whole() {
        let s = clean();
        let v = serde_json::to_value(&s).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        for absent in
            ["handshake", "options", "payload_bytes", "rst", "mp_tcprst_reason", "fallback_evidence"]
        {
            assert!(!keys.contains(&absent), "{absent} in {v}");
        }
        assert_eq!(v["packets"], serde_json::json!({"tx": 3}));
        assert_eq!(v["fin"], serde_json::json!({"tx": true, "rx": true}));
        assert_eq!(serde_json::from_value::<FlowSummary>(v).unwrap(), s);
        assert!(!s.troubled());
    }

    #[test]
    fn trouble_is_a_fallback_missing_dss_a_reset_or_a_problem_option() {
        let mut s = clean();
        s.mptcp = MptcpState::Fallback;
        assert!(s.troubled());
        let mut s = clean();
        s.data_without_dss.rx = 1;
        assert!(s.troubled());
        let mut s = clean();
        s.rst.rx = true;
        assert!(s.troubled());
        let mut s = clean();
        s.options.rx.insert(Subtype::MpFastclose, 1);
        assert!(s.troubled());
        let mut s = clean();
        s.mptcp_retransmissions.tx = 1;
        assert!(s.troubled());
        let mut s = clean();
        s.options.rx.insert(Subtype::AddAddr, 1);
        assert!(!s.troubled(), "an ADD_ADDR is no trouble");
    }

    #[test]
    fn names_are_their_serialised_form() {
        for r in [Role::Client, Role::Server, Role::Unknown] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        for s in [Subflow::Initial, Subflow::Join, Subflow::Tcp] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for e in [Ended::Fin, Ended::Rst, Ended::Idle, Ended::Live] {
            assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
        }
        for o in ConnectionOutcome::ALL {
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
        for c in FallbackCause::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }
}
