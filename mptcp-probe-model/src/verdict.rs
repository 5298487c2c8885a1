//! Verdicts (the contract's stable names) and the findings that carry their evidence.

use core::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// The verdicts of the report contract (stable names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    MptcpOk,
    SynOptionStripped,
    SynackOptionStripped,
    AckOptionStripped,
    DssStripped,
    MptcpSynDropped,
    MptcpReset,
    PayloadModified,
    SeqRewritten,
    MssRewritten,
    SegmentsSplit,
    SegmentsCoalesced,
    Proxied,
    JoinBlocked,
    AddAddrDropped,
    Nat,
    UnknownFallback,
    HandshakeReordered,
    MptcpSynackDropped,
    PathBroken,
    MptcpAckDropped,
}

/// What a verdict says about the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// MPTCP works end to end.
    Ok,
    /// Something on the path interferes with MPTCP.
    Problem,
    /// A path property MPTCP is built to survive (NAT, MSS clamping, sequence rewriting,
    /// resegmentation): reported next to `mptcp_ok` when the connection stayed MPTCP.
    Informative,
    /// How the path behaves for any traffic (it reorders, it breaks plain TCP too): not a
    /// middlebox acting on MPTCP, reported apart from the middlebox verdicts.
    PathCondition,
}

impl Verdict {
    pub const ALL: [Verdict; 21] = [
        Verdict::MptcpOk,
        Verdict::SynOptionStripped,
        Verdict::SynackOptionStripped,
        Verdict::AckOptionStripped,
        Verdict::DssStripped,
        Verdict::MptcpSynDropped,
        Verdict::MptcpReset,
        Verdict::PayloadModified,
        Verdict::SeqRewritten,
        Verdict::MssRewritten,
        Verdict::SegmentsSplit,
        Verdict::SegmentsCoalesced,
        Verdict::Proxied,
        Verdict::JoinBlocked,
        Verdict::AddAddrDropped,
        Verdict::Nat,
        Verdict::UnknownFallback,
        Verdict::HandshakeReordered,
        Verdict::MptcpSynackDropped,
        Verdict::PathBroken,
        Verdict::MptcpAckDropped,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::MptcpOk => "mptcp_ok",
            Verdict::SynOptionStripped => "syn_option_stripped",
            Verdict::SynackOptionStripped => "synack_option_stripped",
            Verdict::AckOptionStripped => "ack_option_stripped",
            Verdict::DssStripped => "dss_stripped",
            Verdict::MptcpSynDropped => "mptcp_syn_dropped",
            Verdict::MptcpReset => "mptcp_reset",
            Verdict::PayloadModified => "payload_modified",
            Verdict::SeqRewritten => "seq_rewritten",
            Verdict::MssRewritten => "mss_rewritten",
            Verdict::SegmentsSplit => "segments_split",
            Verdict::SegmentsCoalesced => "segments_coalesced",
            Verdict::Proxied => "proxied",
            Verdict::JoinBlocked => "join_blocked",
            Verdict::AddAddrDropped => "add_addr_dropped",
            Verdict::Nat => "nat",
            Verdict::UnknownFallback => "unknown_fallback",
            Verdict::HandshakeReordered => "handshake_reordered",
            Verdict::MptcpSynackDropped => "mptcp_synack_dropped",
            Verdict::PathBroken => "path_broken",
            Verdict::MptcpAckDropped => "mptcp_ack_dropped",
        }
    }

    pub const fn kind(self) -> Kind {
        match self {
            Verdict::MptcpOk => Kind::Ok,
            Verdict::Nat
            | Verdict::MssRewritten
            | Verdict::SeqRewritten
            | Verdict::SegmentsSplit
            | Verdict::SegmentsCoalesced => Kind::Informative,
            Verdict::HandshakeReordered | Verdict::PathBroken => Kind::PathCondition,
            Verdict::SynOptionStripped
            | Verdict::SynackOptionStripped
            | Verdict::AckOptionStripped
            | Verdict::DssStripped
            | Verdict::MptcpSynDropped
            | Verdict::MptcpReset
            | Verdict::PayloadModified
            | Verdict::Proxied
            | Verdict::JoinBlocked
            | Verdict::AddAddrDropped
            | Verdict::UnknownFallback
            | Verdict::MptcpSynackDropped
            | Verdict::MptcpAckDropped => Kind::Problem,
        }
    }

    /// Verdicts that say something on the path interferes with MPTCP.
    pub const fn is_problem(self) -> bool {
        matches!(self.kind(), Kind::Problem)
    }

    /// Verdicts that say how the path treats any traffic.
    pub const fn is_path_condition(self) -> bool {
        matches!(self.kind(), Kind::PathCondition)
    }

    /// What a middlebox does to any TCP connection: the verdicts the plain-TCP baseline of a
    /// test can carry.
    pub const fn applies_to_plain_tcp(self) -> bool {
        matches!(
            self,
            Verdict::PayloadModified
                | Verdict::SeqRewritten
                | Verdict::MssRewritten
                | Verdict::SegmentsSplit
                | Verdict::SegmentsCoalesced
                | Verdict::Proxied
                | Verdict::Nat
                | Verdict::PathBroken
        )
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the contract's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownName {
    /// What kind of name was expected ("verdict", "test", ...).
    pub what: &'static str,
    /// The name given, cut to 64 bytes.
    pub name: String,
}

impl UnknownName {
    pub fn new(what: &'static str, name: &str) -> Self {
        let mut end = name.len().min(64);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        Self { what, name: name[..end].to_string() }
    }
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} {:?}", self.what, self.name)
    }
}

impl std::error::Error for UnknownName {}

impl FromStr for Verdict {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Verdict::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| UnknownName::new("verdict", s))
    }
}

/// The packet, or the data, a finding is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Packet {
    #[serde(rename = "SYN")]
    Syn,
    #[serde(rename = "SYN/ACK")]
    SynAck,
    #[serde(rename = "third ACK")]
    ThirdAck,
    #[serde(rename = "MP_JOIN SYN")]
    MpJoinSyn,
    #[serde(rename = "ADD_ADDR")]
    AddAddr,
    /// The connection as a whole.
    #[serde(rename = "connection")]
    Connection,
    /// Payload compared end to end, by the digest's part.
    #[serde(untagged)]
    Part(crate::connection::Part),
}

/// Where evidence was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    Client,
    Server,
    Both,
}

impl End {
    pub const fn as_str(self) -> &'static str {
        match self {
            End::Client => "client",
            End::Server => "server",
            End::Both => "both",
        }
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Packet {
    pub fn as_str(self) -> &'static str {
        match self {
            Packet::Syn => "SYN",
            Packet::SynAck => "SYN/ACK",
            Packet::ThirdAck => "third ACK",
            Packet::MpJoinSyn => "MP_JOIN SYN",
            Packet::AddAddr => "ADD_ADDR",
            Packet::Connection => "connection",
            Packet::Part(p) => p.as_str(),
        }
    }
}

impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a verdict was given: which packet, which end, what was expected, what was seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub verdict: Verdict,
    pub packet: Packet,
    pub end: End,
    pub expected: String,
    pub seen: String,
    /// Where on the path the change happens, in words (`check --locate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub located: Option<String>,
}

impl Finding {
    pub fn new(
        verdict: Verdict,
        packet: Packet,
        end: End,
        expected: impl Into<String>,
        seen: impl Into<String>,
    ) -> Self {
        Self { verdict, packet, end, expected: expected.into(), seen: seen.into(), located: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Part;

    #[test]
    fn verdict_names_are_the_contracts_and_parse_back() {
        for v in Verdict::ALL {
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
            assert_eq!(v.as_str().parse::<Verdict>(), Ok(v));
        }
        assert_eq!(Verdict::ALL.len(), 21);
        let e = "mptcp_fine".parse::<Verdict>().unwrap_err();
        assert_eq!(e.to_string(), "unknown verdict \"mptcp_fine\"");
    }

    #[test]
    fn packets_serialise_as_the_words_of_the_findings() {
        for (p, s) in [
            (Packet::Syn, "SYN"),
            (Packet::SynAck, "SYN/ACK"),
            (Packet::ThirdAck, "third ACK"),
            (Packet::MpJoinSyn, "MP_JOIN SYN"),
            (Packet::AddAddr, "ADD_ADDR"),
            (Packet::Connection, "connection"),
            (Packet::Part(Part::Data), "data"),
            (Packet::Part(Part::PortCommand), "port_command"),
        ] {
            assert_eq!(serde_json::to_value(p).unwrap(), s);
            assert_eq!(serde_json::from_value::<Packet>(s.into()).unwrap(), p);
            assert_eq!(p.as_str(), s);
        }
        assert!(serde_json::from_value::<Packet>("FIN".into()).is_err());
    }
}
