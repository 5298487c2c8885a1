//! Names of what the wire and the kernel carry: MPTCP option subtypes, directions, MP_TCPRST
//! reasons, socket states, mapping statuses. Each maps from the kernel's or the RFC's number in
//! one place, and serialises as the name the JSON outputs use.

use core::fmt;

use mptcp_probe_common::{event::direction, flow, options::subtype, proto};
use serde::{Deserialize, Serialize};

/// An MPTCP option subtype (RFC 8684), as counted per flow; unknown and experimental subtypes
/// are `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subtype {
    MpCapable,
    MpJoin,
    Dss,
    AddAddr,
    RemoveAddr,
    MpPrio,
    MpFail,
    MpFastclose,
    MpTcprst,
    Other,
}

impl Subtype {
    /// Indexed by [`flow::subtype_slot`].
    pub const BY_SLOT: [Subtype; flow::SUBTYPE_SLOTS] = [
        Subtype::MpCapable,
        Subtype::MpJoin,
        Subtype::Dss,
        Subtype::AddAddr,
        Subtype::RemoveAddr,
        Subtype::MpPrio,
        Subtype::MpFail,
        Subtype::MpFastclose,
        Subtype::MpTcprst,
        Subtype::Other,
    ];

    /// The subtype of an option's wire code.
    pub fn from_code(code: u8) -> Self {
        Self::from_slot(flow::subtype_slot(code))
    }

    /// The subtype counted in a flow's per-subtype slot.
    pub fn from_slot(slot: usize) -> Self {
        Self::BY_SLOT.get(slot).copied().unwrap_or(Subtype::Other)
    }

    /// The wire code (`Other` has none of its own: the experimental one is given).
    pub const fn code(self) -> u8 {
        match self {
            Subtype::MpCapable => subtype::MP_CAPABLE,
            Subtype::MpJoin => subtype::MP_JOIN,
            Subtype::Dss => subtype::DSS,
            Subtype::AddAddr => subtype::ADD_ADDR,
            Subtype::RemoveAddr => subtype::REMOVE_ADDR,
            Subtype::MpPrio => subtype::MP_PRIO,
            Subtype::MpFail => subtype::MP_FAIL,
            Subtype::MpFastclose => subtype::MP_FASTCLOSE,
            Subtype::MpTcprst => subtype::MP_TCPRST,
            Subtype::Other => subtype::MP_EXPERIMENTAL,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Subtype::MpCapable => "mp_capable",
            Subtype::MpJoin => "mp_join",
            Subtype::Dss => "dss",
            Subtype::AddAddr => "add_addr",
            Subtype::RemoveAddr => "remove_addr",
            Subtype::MpPrio => "mp_prio",
            Subtype::MpFail => "mp_fail",
            Subtype::MpFastclose => "mp_fastclose",
            Subtype::MpTcprst => "mp_tcprst",
            Subtype::Other => "other",
        }
    }

    /// The RFC's spelling: `MP_CAPABLE`, `DSS`, ...
    pub fn rfc_name(self) -> String {
        self.as_str().to_uppercase()
    }
}

impl fmt::Display for Subtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A packet's direction as seen from this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Tx,
    Rx,
}

impl Direction {
    /// From the TC programs' [`direction`] code.
    pub const fn from_code(d: u8) -> Self {
        if d == direction::EGRESS {
            Direction::Tx
        } else {
            Direction::Rx
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Tx => "tx",
            Direction::Rx => "rx",
        }
    }

    /// "sent" / "received", for evidence in words.
    pub const fn verb(self) -> &'static str {
        match self {
            Direction::Tx => "sent",
            Direction::Rx => "received",
        }
    }
}

/// MP_TCPRST reason codes (RFC 8684 section 3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpRstReason {
    Unspecified,
    MptcpSpecificError,
    LackOfResources,
    AdministrativelyProhibited,
    TooMuchOutstandingData,
    UnacceptablePerformance,
    MiddleboxInterference,
    Unknown,
}

impl TcpRstReason {
    pub const fn from_code(code: u8) -> Self {
        match code {
            0 => Self::Unspecified,
            1 => Self::MptcpSpecificError,
            2 => Self::LackOfResources,
            3 => Self::AdministrativelyProhibited,
            4 => Self::TooMuchOutstandingData,
            5 => Self::UnacceptablePerformance,
            6 => Self::MiddleboxInterference,
            _ => Self::Unknown,
        }
    }

    /// None for the flow state's "no MP_TCPRST seen".
    pub const fn from_flow(code: u8) -> Option<Self> {
        if code == proto::NONE_U8 {
            None
        } else {
            Some(Self::from_code(code))
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::MptcpSpecificError => "mptcp_specific_error",
            Self::LackOfResources => "lack_of_resources",
            Self::AdministrativelyProhibited => "administratively_prohibited",
            Self::TooMuchOutstandingData => "too_much_outstanding_data",
            Self::UnacceptablePerformance => "unacceptable_performance",
            Self::MiddleboxInterference => "middlebox_interference",
            Self::Unknown => "unknown",
        }
    }
}

/// The kernel's TCP socket states (`include/net/tcp_states.h`), as the socket tracepoint gives
/// them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
    #[serde(rename = "?")]
    Unknown,
}

impl TcpState {
    pub const fn from_code(code: i32) -> Self {
        use mptcp_probe_common::proto::tcp_state as s;
        match code {
            s::ESTABLISHED => Self::Established,
            s::SYN_SENT => Self::SynSent,
            s::SYN_RECV => Self::SynRecv,
            s::FIN_WAIT1 => Self::FinWait1,
            s::FIN_WAIT2 => Self::FinWait2,
            s::TIME_WAIT => Self::TimeWait,
            s::CLOSE => Self::Close,
            s::CLOSE_WAIT => Self::CloseWait,
            s::LAST_ACK => Self::LastAck,
            s::LISTEN => Self::Listen,
            s::CLOSING => Self::Closing,
            s::NEW_SYN_RECV => Self::NewSynRecv,
            _ => Self::Unknown,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Established => "ESTABLISHED",
            Self::SynSent => "SYN_SENT",
            Self::SynRecv => "SYN_RECV",
            Self::FinWait1 => "FIN_WAIT1",
            Self::FinWait2 => "FIN_WAIT2",
            Self::TimeWait => "TIME_WAIT",
            Self::Close => "CLOSE",
            Self::CloseWait => "CLOSE_WAIT",
            Self::LastAck => "LAST_ACK",
            Self::Listen => "LISTEN",
            Self::Closing => "CLOSING",
            Self::NewSynRecv => "NEW_SYN_RECV",
            Self::Unknown => "?",
        }
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `mptcp:subflow_check_data_avail`'s `mapping_status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MappingStatus {
    #[serde(rename = "MAPPING_OK")]
    Ok,
    #[serde(rename = "MAPPING_INVALID")]
    Invalid,
    #[serde(rename = "MAPPING_EMPTY")]
    Empty,
    #[serde(rename = "MAPPING_DATA_FIN")]
    DataFin,
    #[serde(rename = "MAPPING_DUMMY")]
    Dummy,
    /// Only the mapping was seen, no status.
    #[serde(rename = "none")]
    None,
}

impl MappingStatus {
    pub const fn from_code(code: u8) -> Self {
        use mptcp_probe_common::proto::mapping_status as m;
        match code {
            m::OK => Self::Ok,
            m::INVALID => Self::Invalid,
            m::EMPTY => Self::Empty,
            m::DATA_FIN => Self::DataFin,
            m::DUMMY => Self::Dummy,
            _ => Self::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtypes_round_trip_through_their_codes_and_slots() {
        for (slot, st) in Subtype::BY_SLOT.iter().enumerate() {
            assert_eq!(Subtype::from_slot(slot), *st);
            assert_eq!(Subtype::from_code(st.code()), *st);
            assert_eq!(serde_json::to_value(st).unwrap(), st.as_str());
        }
        assert_eq!(Subtype::from_code(12), Subtype::Other);
        assert_eq!(Subtype::MpTcprst.rfc_name(), "MP_TCPRST");
    }

    #[test]
    fn kernel_codes_map_to_names() {
        assert_eq!(TcpState::from_code(7), TcpState::Close);
        assert_eq!(serde_json::to_value(TcpState::SynSent).unwrap(), "SYN_SENT");
        assert_eq!(serde_json::to_value(TcpState::from_code(99)).unwrap(), "?");
        assert_eq!(TcpRstReason::from_code(6).as_str(), "middlebox_interference");
        assert_eq!(TcpRstReason::from_flow(proto::NONE_U8), None);
        assert_eq!(serde_json::to_value(MappingStatus::from_code(1)).unwrap(), "MAPPING_INVALID");
        assert_eq!(serde_json::to_value(MappingStatus::from_code(proto::NONE_U8)).unwrap(), "none");
        assert_eq!(Direction::from_code(direction::EGRESS), Direction::Tx);
    }
}
