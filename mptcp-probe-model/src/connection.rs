//! One connection as an end saw it: what the server reports on its control port and what the
//! client records of its own sockets, both carried in the report's evidence.

use std::{collections::BTreeMap, net::SocketAddr};

use serde::{Deserialize, Serialize};

use crate::wire::Subtype;

/// The test's application protocol on a connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectionKind {
    Handshake,
    Http,
    FtpControl,
    FtpData,
    Tls,
    #[default]
    Bulk,
    Echo,
    Join,
    #[serde(rename = "add_addr")]
    AddAddr,
}

impl ConnectionKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            ConnectionKind::Handshake => "handshake",
            ConnectionKind::Http => "http",
            ConnectionKind::FtpControl => "ftp-control",
            ConnectionKind::FtpData => "ftp-data",
            ConnectionKind::Tls => "tls",
            ConnectionKind::Bulk => "bulk",
            ConnectionKind::Echo => "echo",
            ConnectionKind::Join => "join",
            ConnectionKind::AddAddr => "add_addr",
        }
    }
}

impl core::fmt::Display for ConnectionKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A named part of what a test sent, compared end to end by its SHA-256.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// HTTP request headers.
    Headers,
    /// HTTP POST body.
    Body,
    /// What the server sent back (HTTP GET, FTP RETR, bulk down).
    Sent,
    /// Bulk and FTP data as received.
    Data,
    /// The echo test's bytes as echoed.
    Echo,
    /// The FTP PORT / EPRT argument.
    PortCommand,
    /// The FTP PASV / EPSV reply.
    PasvReply,
    /// The FTP RETR data as received.
    Retr,
    /// The HTTP server's account of the headers / body it received.
    #[serde(rename = "headers echo")]
    HeadersEcho,
    #[serde(rename = "body echo")]
    BodyEcho,
}

impl Part {
    pub const fn as_str(self) -> &'static str {
        match self {
            Part::Headers => "headers",
            Part::Body => "body",
            Part::Sent => "sent",
            Part::Data => "data",
            Part::Echo => "echo",
            Part::PortCommand => "port_command",
            Part::PasvReply => "pasv_reply",
            Part::Retr => "retr",
            Part::HeadersEcho => "headers echo",
            Part::BodyEcho => "body echo",
        }
    }
}

/// Where a handshake view came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewSource {
    /// The eBPF observer on the wire.
    #[default]
    Observer,
    /// The kernel's saved SYN (`TCP_SAVE_SYN`).
    SavedSyn,
}

/// What one end saw of a TCP handshake, from its observer or its kernel's saved SYN.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeView {
    pub source: ViewSource,
    /// MPTCP subtype on the SYN (MP_CAPABLE or MP_JOIN) and its length, or null.
    pub syn_mptcp: Option<Subtype>,
    pub syn_mptcp_len: Option<u8>,
    pub syn_mss: Option<u16>,
    /// The SYN's sequence number (ISN) as seen here.
    pub syn_isn: Option<u32>,
    pub syn_ttl: Option<u8>,
    /// The SYN's timestamp echo: 0 on a SYN that opens a connection; a box that re-originates
    /// the SYN after answering the client itself (a SYN proxy) echoes the client's timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_ts_ecr: Option<u32>,
    /// The SYN/ACK's MPTCP option as seen here (sent by the server, received by the client).
    pub synack_mptcp: Option<Subtype>,
    pub synack_mptcp_len: Option<u8>,
    pub synack_isn: Option<u32>,
    /// The third ACK's MPTCP option as seen here.
    pub ack_mptcp: Option<Subtype>,
    /// 0: the third ACK was seen and none of the candidates carried the option.
    pub ack_mptcp_len: Option<u8>,
    /// How far beyond ISN + 1 the first segment after the SYN/ACK in the SYN's direction began:
    /// 0 for the third ACK or the first data; more when a later segment overtook them (the path
    /// reordered the first flight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_seq_offset: Option<u32>,
}

/// Data segments as on the wire (a GSO/GRO packet counts the segments it stands for).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentStats {
    pub count: u64,
    pub bytes: u64,
    /// Largest segment.
    pub max: u32,
}

/// One connection as an end saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionView {
    pub kind: ConnectionKind,
    pub local: Option<SocketAddr>,
    /// The peer as this end sees it (differs from the other end's own address behind NAT).
    pub peer: Option<SocketAddr>,
    /// `TCP_IS_MPTCP` when the connection was set up (None: unknown).
    pub is_mptcp: Option<bool>,
    /// `MPTCP_INFO` flags said fallback.
    pub fallback: Option<bool>,
    /// Subflows of the MPTCP connection, the first included (the most seen).
    pub subflows: Option<u8>,
    /// (local, remote) of each subflow (`MPTCP_SUBFLOW_ADDRS`; the fullest list seen).
    #[serde(default)]
    pub subflow_addrs: Vec<(SocketAddr, SocketAddr)>,
    /// Why the observer says this connection fell back, in words (empty: it did not, or unknown).
    #[serde(default)]
    pub fallback_evidence: Vec<String>,
    /// ADD_ADDR this end announced (`mptcpi_add_addr_signal`) and accepted.
    pub add_addr_signal: Option<u8>,
    pub add_addr_accepted: Option<u8>,
    /// Negotiated MSS (`TCP_INFO`), per direction where known.
    pub snd_mss: Option<u32>,
    pub rcv_mss: Option<u32>,
    pub handshake: Option<HandshakeView>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// SHA-256 (hex) of what was received / sent, per part.
    pub digests: BTreeMap<Part, String>,
    /// Raw application values worth comparing end to end (e.g. the FTP PORT argument received).
    pub notes: BTreeMap<String, String>,
    /// Data segments received, as on the wire (from the observer, offloads accounted for).
    pub segment_sizes: Option<SegmentStats>,
    /// Data segments received without DSS although the connection negotiated MPTCP (observer).
    #[serde(default)]
    pub received_without_dss: Option<u32>,
    pub error: Option<String>,
}

impl ConnectionView {
    /// Takes what the observer saw of the connection on the wire.
    pub fn set_wire(&mut self, w: &WireSummary) {
        self.segment_sizes = Some(w.received_segments.clone());
        self.received_without_dss = Some(w.received_without_dss);
        self.fallback_evidence = w.fallback_evidence.clone();
    }

    /// MPTCP is up on this connection (and did not fall back).
    pub fn mptcp_up(&self) -> bool {
        self.is_mptcp == Some(true) && self.fallback != Some(true)
    }

    /// The socket says it is plain TCP now: never MPTCP, or fallen back.
    pub fn fell_back(&self) -> bool {
        self.is_mptcp == Some(false) || self.fallback == Some(true)
    }
}

/// The observer's summary of a connection at one end.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireSummary {
    pub received_segments: SegmentStats,
    /// Data segments received without DSS on a connection that negotiated MPTCP.
    #[serde(default)]
    pub received_without_dss: u32,
    pub fallback_evidence: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_parts_keep_their_wire_names() {
        for (k, s) in [
            (ConnectionKind::FtpControl, "ftp-control"),
            (ConnectionKind::FtpData, "ftp-data"),
            (ConnectionKind::AddAddr, "add_addr"),
            (ConnectionKind::Http, "http"),
        ] {
            assert_eq!(serde_json::to_value(k).unwrap(), s);
            assert_eq!(k.as_str(), s);
        }
        for p in [
            Part::Headers,
            Part::Body,
            Part::Sent,
            Part::Data,
            Part::Echo,
            Part::PortCommand,
            Part::PasvReply,
            Part::Retr,
            Part::HeadersEcho,
            Part::BodyEcho,
        ] {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        assert_eq!(serde_json::to_value(ViewSource::SavedSyn).unwrap(), "saved_syn");
        let mut v = ConnectionView::default();
        v.digests.insert(Part::Headers, "ab".into());
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j["digests"]["headers"], "ab");
        assert_eq!(serde_json::from_value::<ConnectionView>(j).unwrap(), v);
    }
}
