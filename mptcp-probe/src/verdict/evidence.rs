//! What the verdict rules are given: everything known about one MPTCP test connection, from both
//! ends.

use std::collections::BTreeMap;

use mptcp_probe_model::{ConnectionView, HandshakeView, Outcome, Part, SegmentStats};
use serde::{Deserialize, Serialize};

/// Everything known about one test connection (the first connection of the test).
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    /// This is the plain-TCP run of the test (the baseline), not the MPTCP one.
    pub plain_tcp: bool,
    /// The test could not run here (e.g. no second address for `join`): nothing to judge.
    pub skipped: bool,
    pub outcome: Option<Outcome>,
    /// The same test over plain TCP worked (None: not known, or not run).
    pub tcp_ok: Option<bool>,
    pub client: ConnectionView,
    /// The client's observer: the handshake as sent and received here.
    pub client_wire: Option<HandshakeView>,
    /// SYNs this client sent with MP_CAPABLE for the connection (retries included).
    pub client_mpc_syns: Option<u32>,
    /// Data segments with no DSS on the negotiated connection, received by the client.
    pub client_rx_without_dss: Option<u32>,
    /// Data segments the client sent on the connection, as on the wire (observer).
    pub client_sent_segments: Option<SegmentStats>,
    /// The server's view of the same connection (None: the server did not see it).
    pub server: Option<ConnectionView>,
    /// The server's view of the test's other connections (FTP data, the second bulk direction).
    pub server_others: Vec<ConnectionView>,
    /// Digests the client computed of what it sent, by part (compared with the server's).
    pub sent_digests: Vec<(Part, String)>,
    /// Digests the client computed of what it received, with what the server says it sent.
    pub received_digests: Vec<(Part, String, String)>,
    /// Kernel MPTcpExt counters that moved on the client during the test.
    pub mib_delta: BTreeMap<String, u64>,
    /// The same on the server, as it reports them (empty: not known).
    pub server_mib_delta: BTreeMap<String, u64>,
    /// The join test: a second subflow through another local address.
    pub join: Option<JoinEvidence>,
    /// The add_addr test: the server announces another address.
    pub add_addr: Option<AddAddrEvidence>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinEvidence {
    /// The local address the extra subflow was to come from.
    pub from: String,
    /// The most subflows the connection had.
    pub subflows: u8,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddAddrEvidence {
    /// Addresses the server says it announces.
    pub announced: Vec<String>,
    /// ADD_ADDR the server's socket says it sent (`mptcpi_add_addr_signal`).
    pub server_signalled: Option<u8>,
    /// ADD_ADDR the client's socket accepted.
    pub accepted: u8,
}
