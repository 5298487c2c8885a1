//! What `watch --json` prints, one object a line: events, flow summaries and the closing
//! counters.

use std::{collections::BTreeMap, net::IpAddr};

use mptcp_probe_common::event::{mapping_flags, why};
use serde::{Deserialize, Serialize};

use crate::{
    flow::FlowSummary,
    wire::{Direction, MappingStatus, Subtype, TcpRstReason, TcpState},
};

/// One line of `watch --json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WatchLine {
    Event(Event),
    Flow(Box<FlowSummary>),
    Counters(Counters),
}

/// A packet the observer reported or a kernel event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Packet(Box<PacketRecord>),
    SockState(SockStateRecord),
    ResetSent(ResetRecord),
    ResetReceived(ResetRecord),
    Mapping(MappingRecord),
    Fallback(FallbackRecord),
}

/// Why a packet was reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    Syn,
    SynAck,
    ThirdAck,
    MptcpOption,
    FirstDss,
    InfiniteMapping,
    DataWithoutDss,
    Rst,
    Fin,
    DataFin,
    MalformedOptions,
    /// A FIN or RST of a flow the kernel's table no longer holds.
    Untracked,
    /// New subflow data whose data sequence went back: data sent again at the MPTCP level.
    MptcpRetransmission,
}

impl Why {
    /// Each reason with its bit in the kernel's `why` field, in order.
    pub const BITS: [(u16, Why); 13] = [
        (why::SYN, Why::Syn),
        (why::SYN_ACK, Why::SynAck),
        (why::THIRD_ACK, Why::ThirdAck),
        (why::MPTCP_OPTION, Why::MptcpOption),
        (why::FIRST_DSS, Why::FirstDss),
        (why::INFINITE_MAPPING, Why::InfiniteMapping),
        (why::DATA_WITHOUT_DSS, Why::DataWithoutDss),
        (why::RST, Why::Rst),
        (why::FIN, Why::Fin),
        (why::DATA_FIN, Why::DataFin),
        (why::MALFORMED, Why::MalformedOptions),
        (why::UNTRACKED, Why::Untracked),
        (why::MPTCP_RETRANSMISSION, Why::MptcpRetransmission),
    ];

    pub fn from_bits(bits: u16) -> Vec<Why> {
        Self::BITS.iter().filter(|(b, _)| bits & b != 0).map(|(_, w)| *w).collect()
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Why::Syn => "syn",
            Why::SynAck => "syn_ack",
            Why::ThirdAck => "third_ack",
            Why::MptcpOption => "mptcp_option",
            Why::FirstDss => "first_dss",
            Why::InfiniteMapping => "infinite_mapping",
            Why::DataWithoutDss => "data_without_dss",
            Why::Rst => "rst",
            Why::Fin => "fin",
            Why::DataFin => "data_fin",
            Why::MalformedOptions => "malformed_options",
            Why::Untracked => "untracked",
            Why::MptcpRetransmission => "mptcp_retransmission",
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One MPTCP option of a reported packet, with the fields its subtype uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptionRecord {
    pub subtype: Subtype,
    pub len: u8,
    #[serde(default, skip_serializing_if = "is_false")]
    pub bad_length: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr_id: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_ack: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsn: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssn: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_len: Option<u16>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub data_fin: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub infinite_mapping: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub checksum: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr_ids: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<TcpRstReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transient: Option<bool>,
}

impl OptionRecord {
    /// An option of `subtype` and `len` bytes with no subtype fields yet.
    pub fn new(subtype: Subtype, len: u8) -> Self {
        Self {
            subtype,
            len,
            bad_length: false,
            version: None,
            flags: None,
            backup: None,
            addr_id: None,
            data_ack: None,
            dsn: None,
            ssn: None,
            data_len: None,
            data_fin: false,
            infinite_mapping: false,
            checksum: false,
            echo: None,
            addr: None,
            port: None,
            addr_ids: None,
            reason: None,
            transient: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketRecord {
    pub ts_ns: u64,
    pub netns: u32,
    pub iface: String,
    pub direction: Direction,
    pub ip_version: u8,
    pub local_addr: IpAddr,
    pub local_port: u16,
    pub remote_addr: IpAddr,
    pub remote_port: u16,
    /// "S", "S.", ".", "F.", "R", with "P" for PSH.
    pub tcp_flags: String,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    pub payload_len: u32,
    pub ttl: u8,
    pub why: Vec<Why>,
    pub mptcp_options: Vec<OptionRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mss: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wscale: Option<u8>,
    pub sack_permitted: bool,
    pub timestamps: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub malformed_at: Option<u8>,
}

/// The socket's protocol: an MPTCP socket or a TCP one (a subflow or plain TCP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketProtocol {
    Mptcp,
    Tcp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SockStateRecord {
    pub ts_ns: u64,
    pub netns: u32,
    pub protocol: SocketProtocol,
    /// "ADDR:PORT" ("[ADDR]:PORT" for IPv6).
    pub local: String,
    pub remote: String,
    pub old_state: TcpState,
    pub new_state: TcpState,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetRecord {
    pub ts_ns: u64,
    pub netns: u32,
    pub local: String,
    pub remote: String,
    pub state: Option<TcpState>,
    /// `enum sk_rst_reason` of a sent reset, where the kernel gives it.
    pub reason: Option<u32>,
}

/// Whether a kernel event could be placed in a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Host,
    Netns,
}

/// The flags of a mapping event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MappingFlag {
    UseMap,
    DataFin,
    MpcMap,
    Frozen,
    ResetTransient,
    CsumReqd,
    InfiniteMap,
}

impl MappingFlag {
    pub const BITS: [(u16, MappingFlag); 7] = [
        (mapping_flags::USE_MAP, MappingFlag::UseMap),
        (mapping_flags::DATA_FIN, MappingFlag::DataFin),
        (mapping_flags::MPC_MAP, MappingFlag::MpcMap),
        (mapping_flags::FROZEN, MappingFlag::Frozen),
        (mapping_flags::RESET_TRANSIENT, MappingFlag::ResetTransient),
        (mapping_flags::CSUM_REQD, MappingFlag::CsumReqd),
        (mapping_flags::INFINITE_MAP, MappingFlag::InfiniteMap),
    ];

    pub fn from_bits(bits: u16) -> Vec<MappingFlag> {
        Self::BITS.iter().filter(|(b, _)| bits & b != 0).map(|(_, f)| *f).collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingRecord {
    pub ts_ns: u64,
    pub netns: u32,
    pub scope: Scope,
    pub status: MappingStatus,
    pub has_mapping: bool,
    pub data_seq: u64,
    pub subflow_seq: u32,
    pub data_len: u16,
    pub flags: Vec<MappingFlag>,
    pub reset_reason: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackRecord {
    pub ts_ns: u64,
    /// The MPTCP socket's kernel address, in hex.
    pub msk: String,
    /// The MIB counter the kernel bumped.
    pub reason: String,
}

/// Where the exact fallback reason per connection comes from on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FallbackSource {
    /// fentry on `__mptcp_try_fallback` is attached.
    Fentry,
    /// fentry was refused: reasons come from wire evidence, tracepoints and MIB counters.
    WireAndCounters,
}

/// The closing line: the kernel programs' counters and what the kernel's MPTCP counters did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// The kernel programs' counters, summed over CPUs.
    pub kernel: BTreeMap<String, u64>,
    pub flow_table_evictions: u64,
    pub decode_errors: u64,
    /// Flows the kernel's flow table dropped before they could be summarised.
    pub flows_evicted_unsummarised: u64,
    pub fallback_source: FallbackSource,
    /// The MPTcpExt counters of this namespace that moved while watching.
    pub mib_delta: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_their_type_and_events_their_kind() {
        let ev = WatchLine::Event(Event::Fallback(FallbackRecord {
            ts_ns: 1,
            msk: "0x1".into(),
            reason: "DssFallback".into(),
        }));
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["type"], "event");
        assert_eq!(v["kind"], "fallback");
        assert_eq!(serde_json::from_value::<WatchLine>(v).unwrap(), ev);
        let r = Event::ResetSent(ResetRecord {
            ts_ns: 2,
            netns: 3,
            local: "192.0.2.1:1".into(),
            remote: "203.0.113.2:80".into(),
            state: Some(TcpState::Established),
            reason: None,
        });
        let v = serde_json::to_value(WatchLine::Event(r)).unwrap();
        assert_eq!(v["kind"], "reset_sent");
        assert_eq!(v["state"], "ESTABLISHED");
    }

    #[test]
    fn why_bits_are_named_in_order() {
        assert_eq!(Why::from_bits(why::SYN | why::MPTCP_OPTION), vec![Why::Syn, Why::MptcpOption]);
        assert!(Why::from_bits(0).is_empty());
        for (_, w) in Why::BITS {
            assert_eq!(serde_json::to_value(w).unwrap(), w.as_str());
        }
    }

    #[test]
    fn an_option_record_shows_only_the_fields_its_subtype_uses() {
        let o = OptionRecord { infinite_mapping: true, ..OptionRecord::new(Subtype::Dss, 20) };
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(v, serde_json::json!({"subtype": "dss", "len": 20, "infinite_mapping": true}));
    }
}
