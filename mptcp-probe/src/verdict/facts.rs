//! Facts about a test connection, computed once from the evidence, that the verdict rules read.

use std::{collections::BTreeMap, net::SocketAddr};

use mptcp_probe_model::{ConnectionView, HandshakeView, Outcome};

use super::evidence::Evidence;
use crate::host::{mib::fallback_reason, sock::canonical};

pub struct Facts<'a> {
    pub e: &'a Evidence,
    /// The handshake as this host's observer saw it.
    pub client_wire: Option<&'a HandshakeView>,
    /// The server's view of the connection, and its observer's view of the handshake.
    pub server: Option<&'a ConnectionView>,
    pub server_wire: Option<&'a HandshakeView>,
    /// MPTCP is up on the client's socket.
    pub mptcp_up: bool,
    /// The client's socket is plain TCP: never MPTCP, or fallen back.
    pub fell_back: bool,
    /// The server's counters include its other clients: they speak for this connection only
    /// when it is in trouble itself (did not complete, or fell back at either end). Empty
    /// otherwise.
    pub server_counters: BTreeMap<String, u64>,
    /// The server answered the MP_CAPABLE SYN: whatever went wrong later, the SYN got through.
    pub synack_mpc: bool,
    /// The connection came up far enough for the two ends' views to be compared.
    pub came_up: bool,
    /// SYNs with MP_CAPABLE went unanswered until the kernel retried without MPTCP.
    pub syn_retried: bool,
    /// The client's SYN left with MP_CAPABLE (and was not a retry without it).
    pub client_sent_mpc: bool,
    /// The client's own MIB reason first; where only the server fell back, the server's.
    pub fallback_reason: Option<String>,
    /// MP_CAPABLE SYNs the server's kernel received (MPCapableSYNRX), when its counters speak
    /// for this connection.
    pub mpc_syns_at_server: u64,
    /// MP_CAPABLE third ACKs it received (MPCapableACKRX), likewise.
    pub mpc_acks_at_server: u64,
    /// The server's first segment after the SYN/ACK began this far beyond ISN + 1, an intact
    /// MP_CAPABLE arrived after it, and the connection fell back: the path reordered the first
    /// flight.
    pub first_flight_reordered: Option<u32>,
    /// The SYN at the server echoes a timestamp: a box re-originated it after answering the
    /// client itself (a connection's first SYN echoes none).
    pub syn_reoriginated: bool,
}

impl<'a> Facts<'a> {
    pub fn new(e: &'a Evidence) -> Self {
        let client_wire = e.client_wire.as_ref();
        let server = e.server.as_ref();
        let fell_back = e.client.fell_back();
        let troubled = e.outcome != Some(Outcome::Ok)
            || fell_back
            || server.map(|s| s.fallback == Some(true)).unwrap_or(false);
        let server_counters = if troubled { e.server_mib_delta.clone() } else { BTreeMap::new() };
        let mib = |k: &str| e.mib_delta.get(k).copied().unwrap_or(0);
        let synack_mpc =
            client_wire.map(|w| w.synack_mptcp.is_some()).unwrap_or(false) || mib("MPCapableSYNACKRX") > 0;
        let syn_retried = e.client_mpc_syns.unwrap_or(0) > 0
            && client_wire.map(|w| w.syn_mptcp.is_none()).unwrap_or(false)
            || mib("MPCapableSYNTXDrop") > 0;
        let client_sent_mpc = client_wire.map(|w| w.syn_mptcp.is_some()).unwrap_or(false) && !syn_retried;
        let fallback_reason = fallback_reason(&e.mib_delta).or_else(|| fallback_reason(&server_counters));
        let server_wire = server.and_then(|s| s.handshake.as_ref());
        let reordered = |c: &ConnectionView| {
            c.handshake
                .as_ref()
                .filter(|w| w.ack_mptcp.is_some())
                .and_then(|w| w.ack_seq_offset)
                .filter(|o| *o > 0)
        };
        // The main connection, when either end fell back; else another connection of the test
        // (the second bulk direction) that fell back after its first flight was reordered.
        let first_flight_reordered = server
            .and_then(reordered)
            .filter(|_| fell_back || server.is_some_and(ConnectionView::fell_back))
            .or_else(|| e.server_others.iter().filter(|c| c.fell_back()).find_map(reordered));
        let syn_reoriginated = server_wire.and_then(|w| w.syn_ts_ecr).is_some_and(|ecr| ecr != 0);
        Self {
            mpc_syns_at_server: server_counters.get("MPCapableSYNRX").copied().unwrap_or(0),
            mpc_acks_at_server: server_counters.get("MPCapableACKRX").copied().unwrap_or(0),
            first_flight_reordered,
            syn_reoriginated,
            e,
            client_wire,
            server,
            server_wire,
            mptcp_up: e.client.mptcp_up(),
            fell_back,
            server_counters,
            synack_mpc,
            came_up: e.outcome == Some(Outcome::Ok) || synack_mpc,
            syn_retried,
            client_sent_mpc,
            fallback_reason,
        }
    }

    /// A client MIB counter's movement during the test.
    pub fn mib(&self, k: &str) -> u64 {
        self.e.mib_delta.get(k).copied().unwrap_or(0)
    }

    /// A server MIB counter's movement, when the server's counters speak for this connection.
    pub fn server_mib(&self, k: &str) -> u64 {
        self.server_counters.get(k).copied().unwrap_or(0)
    }

    /// Both ends' views of the handshake.
    pub fn wires(&self) -> Option<(&'a HandshakeView, &'a HandshakeView)> {
        Some((self.client_wire?, self.server_wire?))
    }

    /// The SYN's ISN as sent and as it arrived, when they differ.
    pub fn isn_rewritten(&self) -> Option<(u32, u32)> {
        let (c, s) = self.wires()?;
        let (a, b) = (c.syn_isn?, s.syn_isn?);
        (a != b).then_some((a, b))
    }

    /// The SYN/ACK's ISN differs between the ends too: both directions were re-originated.
    pub fn synack_isn_rewritten(&self) -> bool {
        let isn = |w: Option<&HandshakeView>| w.and_then(|w| w.synack_isn);
        matches!((isn(self.client_wire), isn(self.server_wire)), (Some(a), Some(b)) if a != b)
    }

    /// The SYN's MSS as sent and as it arrived, when they differ.
    pub fn mss_rewritten(&self) -> Option<(u16, u16)> {
        let (c, s) = self.wires()?;
        let (a, b) = (c.syn_mss?, s.syn_mss?);
        (a != b).then_some((a, b))
    }

    /// The client's own source and the one the server sees, when they differ.
    pub fn source_rewritten(&self) -> Option<(SocketAddr, SocketAddr)> {
        let (local, peer) = (canonical(self.e.client.local?), canonical(self.server?.peer?));
        (local != peer).then_some((local, peer))
    }

    /// The SYN left with MP_CAPABLE and arrived without.
    pub fn syn_stripped(&self) -> bool {
        self.wires().is_some_and(|(_, s)| self.client_sent_mpc && s.syn_mptcp.is_none())
    }

    /// The SYN arrived with MP_CAPABLE, the server answered with it, the client got a SYN/ACK
    /// without.
    pub fn synack_stripped(&self) -> bool {
        !self.syn_stripped()
            && self.wires().is_some_and(|(c, s)| {
                s.syn_mptcp.is_some() && s.synack_mptcp.is_some() && c.synack_mptcp.is_none()
            })
    }

    /// The third ACK left with MP_CAPABLE and arrived without, and the server's socket agrees
    /// that MPTCP did not come up there (a third ACK overtaken on the way in is no strip).
    pub fn ack_stripped(&self) -> bool {
        let server_not_mptcp = self.server.map(ConnectionView::fell_back).unwrap_or(true);
        !self.syn_stripped()
            && !self.synack_stripped()
            && server_not_mptcp
            && self.wires().is_some_and(|(c, s)| {
                c.synack_mptcp.is_some() && c.ack_mptcp.is_some() && s.ack_mptcp_len == Some(0)
            })
    }
}
