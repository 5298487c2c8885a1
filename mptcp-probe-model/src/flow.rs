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

/// A value per direction as seen from this host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerDirection<T> {
    pub tx: T,
    pub rx: T,
}

impl<T> PerDirection<T> {
    pub fn get(&self, d: Direction) -> &T {
        match d {
            Direction::Tx => &self.tx,
            Direction::Rx => &self.rx,
        }
    }
}

/// What one handshake packet carried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakePacket {
    pub direction: Direction,
    /// MP_CAPABLE, MP_JOIN or null.
    pub mptcp: Option<Subtype>,
    pub mptcp_len: Option<u8>,
    /// MP_CAPABLE's version and flag byte, as on the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mptcp_version: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mptcp_flags: Option<u8>,
    pub mss: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshake {
    pub syn: Option<HandshakePacket>,
    pub syn_ack: Option<HandshakePacket>,
    pub third_ack: Option<HandshakePacket>,
}

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
    pub handshake: Handshake,
    /// MPTCP options per subtype, each way.
    pub options: PerDirection<BTreeMap<Subtype, u32>>,
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
    pub mp_tcprst_reason: Option<TcpRstReason>,
    /// Why the flow is not (or no longer) MPTCP, in words.
    pub fallback_evidence: Vec<String>,
    /// The kernel's exact fallback reason (MIB name), where the host permits knowing it.
    pub fallback_reason: Option<String>,
    /// Kernel socket state changes of the flow: "tcp SYN_SENT -> ESTABLISHED".
    pub socket_states: Vec<String>,
    /// Resets named by the TCP tracepoints.
    pub resets: Vec<String>,
    pub duration_ms: u64,
    pub ended: Ended,
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
