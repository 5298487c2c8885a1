//! A sink that keeps the recent packet events and the final summary of each connection, so that
//! `check` and `serve` can ask what the wire showed of one of their connections by its addresses.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
};

use mptcp_probe_common::{
    event::{tcp_flags, PacketEvent},
    flow::FlowKey,
    options::{opt_flags, subtype},
};
use mptcp_probe_model::{FlowSummary, HandshakeView, Subtype, ViewSource};

use super::{
    record::key_addr,
    sink::{Context, Sink},
    FlowMap,
};
use crate::kernel::decode::Event;

/// Packet events kept per connection, and connections kept.
const MAX_PACKETS_PER_FLOW: usize = 256;
const MAX_FLOWS: usize = 4096;

/// A connection by its addresses as this host sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl Tuple {
    fn of(k: &FlowKey) -> Self {
        Self {
            local: SocketAddr::new(key_addr(&k.local_addr), k.local_port),
            remote: SocketAddr::new(key_addr(&k.remote_addr), k.remote_port),
        }
    }

    /// IPv4-mapped IPv6 addresses (from dual-stack sockets) compare as IPv4.
    pub fn new(local: SocketAddr, remote: SocketAddr) -> Self {
        Self { local: crate::host::sock::canonical(local), remote: crate::host::sock::canonical(remote) }
    }
}

/// What was recorded of one connection.
#[derive(Clone, Debug)]
pub struct Connection {
    pub key: FlowKey,
    pub packets: Vec<PacketEvent>,
    /// Its summary, once the pipeline made it (the connection ended or went idle).
    pub summary: Option<FlowSummary>,
}

#[derive(Default)]
pub struct Recorded {
    flows: FlowMap<Tuple, Connection>,
    order: VecDeque<Tuple>,
    /// Packets not kept because their connection had [`MAX_PACKETS_PER_FLOW`] already.
    pub dropped_packets: u64,
}

impl Recorded {
    fn entry(&mut self, t: Tuple, key: FlowKey) -> &mut Connection {
        if !self.flows.contains_key(&t) {
            if self.order.len() >= MAX_FLOWS {
                if let Some(old) = self.order.pop_front() {
                    self.flows.remove(&old);
                }
            }
            self.order.push_back(t);
        }
        self.flows.entry(t).or_insert_with(|| Connection { key, packets: Vec::new(), summary: None })
    }

    fn push(&mut self, p: PacketEvent) {
        let c = self.entry(Tuple::of(&p.flow), p.flow);
        // A SYN is a new connection that reuses the ports of a recorded one unless it is the
        // recorded SYN again (same direction, same ISN) or the one a recorded SYN/ACK answers:
        // the old one's packets and summary are not this one's.
        if is_syn(&p) && !c.packets.is_empty() && !c.packets.iter().any(|q| same_connection(q, &p)) {
            *c = Connection { key: p.flow, packets: Vec::new(), summary: None };
        }
        if c.packets.len() < MAX_PACKETS_PER_FLOW {
            c.packets.push(p);
        } else {
            self.dropped_packets += 1;
        }
    }

    pub fn get(&self, t: &Tuple) -> Option<&Connection> {
        self.flows.get(t)
    }
}

/// The recorder sink; clones share one record.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Recorded>>);

impl Recorder {
    pub fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The packet events recorded for a connection.
    pub fn packets(&self, local: SocketAddr, remote: SocketAddr) -> Vec<PacketEvent> {
        self.lock().get(&Tuple::new(local, remote)).map(|c| c.packets.clone()).unwrap_or_default()
    }
}

impl Sink for Recorder {
    fn event(&mut self, ev: &Event, _ctx: &Context) {
        if let Event::Packet(p) = ev {
            if p.tracked() {
                self.lock().push(*p);
            }
        }
    }

    fn flow(&mut self, s: &FlowSummary) {
        let t = Tuple {
            local: SocketAddr::new(s.local_addr, s.local_port),
            remote: SocketAddr::new(s.remote_addr, s.remote_port),
        };
        if let Some(c) = self.lock().flows.get_mut(&t) {
            c.summary = Some(s.clone());
        }
    }
}

/// A SYN without ACK: the start of a connection.
fn is_syn(p: &PacketEvent) -> bool {
    p.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
}

/// `q`, a recorded packet, says that the SYN `syn` belongs to its connection: it is that SYN
/// (again), or the SYN/ACK that answers it. A SYN the other way (a simultaneous open) is the
/// same connection too.
fn same_connection(q: &PacketEvent, syn: &PacketEvent) -> bool {
    let synack = q.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN | tcp_flags::ACK;
    (is_syn(q) && (q.direction != syn.direction || q.seq == syn.seq))
        || (synack && q.direction != syn.direction && q.ack == syn.seq.wrapping_add(1))
}

/// The handshake as the recorded packets show it, from this host's point of view.
pub fn handshake_of(packets: &[PacketEvent]) -> Option<HandshakeView> {
    let mut v = HandshakeView { source: ViewSource::Observer, ..Default::default() };
    let mpc = |p: &PacketEvent| {
        p.opts
            .mptcp_options()
            .iter()
            .find(|o| o.subtype == subtype::MP_CAPABLE || o.subtype == subtype::MP_JOIN)
            .map(|o| (Subtype::from_code(o.subtype), o.len))
    };
    let mut seen = false;
    let mut syn_dir = None;
    for p in packets {
        let f = p.tcp_flags;
        let syn = f & tcp_flags::SYN != 0;
        let ack = f & tcp_flags::ACK != 0;
        if syn && !ack {
            if syn_dir == Some(p.direction) && v.syn_isn.is_some_and(|isn| isn != p.seq) {
                // Another connection on the same ports: only the latest one counts.
                v = HandshakeView { source: ViewSource::Observer, ..Default::default() };
            }
            seen = true;
            syn_dir = Some(p.direction);
            let m = mpc(p);
            v.syn_mptcp = m.map(|m| m.0);
            v.syn_mptcp_len = m.map(|m| m.1);
            v.syn_mss = (p.opts.mss != 0).then_some(p.opts.mss);
            v.syn_isn = Some(p.seq);
            v.syn_ttl = Some(p.ttl);
            v.syn_ts_ecr = (p.opts.flags & opt_flags::TIMESTAMPS != 0).then_some(p.opts.ts_ecr);
        } else if syn && ack {
            let m = mpc(p);
            v.synack_mptcp = m.map(|m| m.0);
            v.synack_mptcp_len = m.map(|m| m.1);
            v.synack_isn = Some(p.seq);
        } else if ack && Some(p.direction) == syn_dir && v.ack_mptcp.is_none() {
            // The third ACK, or the first data that repeats its MP_CAPABLE. Packets of one
            // connection can overtake each other on the way in (veth hands them to the CPU that
            // sent them), so a later packet with the option counts too; 0 marks "seen, none of
            // them carried it".
            let m = mpc(p);
            if v.ack_mptcp_len.is_none() {
                v.ack_seq_offset = v.syn_isn.map(|isn| p.seq.wrapping_sub(isn).wrapping_sub(1));
            }
            v.ack_mptcp = m.map(|m| m.0);
            v.ack_mptcp_len = Some(m.map(|m| m.1).unwrap_or(0));
        }
    }
    seen.then_some(v)
}

#[cfg(test)]
mod tests {
    use mptcp_probe_common::{
        event::direction,
        options::{MptcpOption, TcpOptions},
    };

    use super::*;

    fn pkt(dir: u8, flags: u8, seq: u32, mpc_len: Option<u8>, mss: u16) -> PacketEvent {
        let mut opts = TcpOptions::empty();
        opts.mss = mss;
        if let Some(len) = mpc_len {
            opts.mptcp_count = 1;
            opts.mptcp[0] = MptcpOption { subtype: subtype::MP_CAPABLE, len, ..Default::default() };
        }
        PacketEvent {
            seq,
            direction: dir,
            tcp_flags: flags,
            ttl: 64,
            wire_segments: 1,
            opts,
            ..PacketEvent::zeroed()
        }
    }

    const S: u8 = tcp_flags::SYN;
    const SA: u8 = tcp_flags::SYN | tcp_flags::ACK;
    const A: u8 = tcp_flags::ACK;

    #[test]
    fn client_side_handshake_with_a_stripped_synack() {
        let v = handshake_of(&[
            pkt(direction::EGRESS, S, 1000, Some(4), 1460),
            pkt(direction::INGRESS, SA, 5000, None, 1400),
            pkt(direction::EGRESS, A, 1001, None, 0),
        ])
        .expect("handshake");
        assert_eq!(v.syn_mptcp, Some(Subtype::MpCapable));
        assert_eq!(v.syn_mptcp_len, Some(4));
        assert_eq!(v.syn_isn, Some(1000));
        assert_eq!(v.syn_mss, Some(1460));
        assert_eq!(v.synack_mptcp, None);
        assert_eq!(v.synack_isn, Some(5000));
        assert_eq!(v.ack_mptcp_len, Some(0), "third ACK seen, without MPTCP");
    }

    #[test]
    fn a_third_ack_overtaken_by_a_later_packet_still_counts() {
        let v = handshake_of(&[
            pkt(direction::INGRESS, S, 1000, Some(4), 1460),
            pkt(direction::EGRESS, SA, 5000, Some(12), 1460),
            pkt(direction::INGRESS, A, 1001, None, 0),
            pkt(direction::INGRESS, A, 1001, Some(20), 0),
        ])
        .expect("handshake");
        assert_eq!(v.ack_mptcp, Some(Subtype::MpCapable));
        assert_eq!(v.ack_mptcp_len, Some(20));
    }

    #[test]
    fn a_later_segment_that_overtook_the_third_ack_is_measured_from_the_isn() {
        let mut dss_only = pkt(direction::INGRESS, A, 1001 + 1448, None, 0);
        dss_only.payload_len = 1448;
        let v = handshake_of(&[
            pkt(direction::INGRESS, S, 1000, Some(4), 1460),
            pkt(direction::EGRESS, SA, 5000, Some(12), 1460),
            dss_only,
            pkt(direction::INGRESS, A, 1001, Some(20), 0),
        ])
        .expect("handshake");
        assert_eq!(v.ack_seq_offset, Some(1448), "the first segment in was not the third ACK");
        assert_eq!(v.ack_mptcp_len, Some(20), "the intact MP_CAPABLE came after it");
        let in_order = handshake_of(&[
            pkt(direction::INGRESS, S, 1000, Some(4), 1460),
            pkt(direction::EGRESS, SA, 5000, Some(12), 1460),
            pkt(direction::INGRESS, A, 1001, Some(20), 0),
        ])
        .unwrap();
        assert_eq!(in_order.ack_seq_offset, Some(0));
    }

    /// A new connection from the same port (the plain TCP run's, then the MPTCP run's): the
    /// first flight of the new one is measured on its own, and the old one's summary is gone.
    #[test]
    fn a_connection_reusing_the_ports_of_an_earlier_one_is_recorded_afresh() {
        let mut dss_only = pkt(direction::INGRESS, A, 9001 + 4485, None, 0);
        dss_only.payload_len = 1424;
        let old = [
            pkt(direction::INGRESS, S, 1000, None, 1460),
            pkt(direction::EGRESS, SA, 5000, None, 1460),
            pkt(direction::INGRESS, A, 1001, None, 0),
        ];
        let new = [
            pkt(direction::INGRESS, S, 9000, Some(4), 1460),
            pkt(direction::EGRESS, SA, 7000, Some(12), 1460),
            dss_only,
            pkt(direction::INGRESS, A, 9001, Some(20), 0),
        ];
        let both: Vec<PacketEvent> = old.iter().chain(new.iter()).copied().collect();
        let v = handshake_of(&both).unwrap();
        assert_eq!((v.syn_isn, v.syn_mptcp), (Some(9000), Some(Subtype::MpCapable)));
        assert_eq!(v.ack_seq_offset, Some(4485), "{v:?}");
        assert_eq!(v.ack_mptcp_len, Some(20));
        // The record keeps the new connection only.
        let mut r = Recorded::default();
        for p in old {
            r.push(p);
        }
        let t = Tuple::of(&old[0].flow);
        r.flows.get_mut(&t).unwrap().summary = Some(crate::pipeline::summary::summarize(
            &old[0].flow,
            &Default::default(),
            &Default::default(),
            "s-m",
            1,
        ));
        // A retransmitted SYN is the same connection: its record and summary stay.
        r.push(old[0]);
        assert_eq!(r.get(&t).unwrap().packets.len(), 4);
        assert!(r.get(&t).unwrap().summary.is_some());
        // So is a SYN again where only its SYN/ACK was recorded (the SYN came before the
        // observer), and a SYN the other way (a simultaneous open).
        let mut half = Recorded::default();
        half.push(PacketEvent { ack: 1001, ..old[1] });
        half.push(old[0]);
        half.push(pkt(direction::EGRESS, S, 5000, None, 1460));
        assert_eq!(half.get(&t).unwrap().packets.len(), 3);
        for p in new {
            r.push(p);
        }
        let c = r.get(&t).unwrap();
        assert_eq!(c.packets.len(), 4);
        assert_eq!(c.packets[0].seq, 9000);
        assert!(c.summary.is_none(), "the old connection's summary is not the new one's");
    }

    #[test]
    fn a_syn_echoing_a_timestamp_is_recorded_as_such() {
        let mut syn = pkt(direction::INGRESS, S, 1000, None, 1460);
        syn.opts.flags |= opt_flags::TIMESTAMPS;
        syn.opts.ts_ecr = 77;
        assert_eq!(handshake_of(&[syn]).unwrap().syn_ts_ecr, Some(77));
        assert_eq!(handshake_of(&[pkt(direction::INGRESS, S, 1000, None, 1460)]).unwrap().syn_ts_ecr, None);
    }

    #[test]
    fn no_syn_no_handshake() {
        assert!(handshake_of(&[pkt(direction::EGRESS, A, 1, None, 0)]).is_none());
    }

    #[test]
    fn mapped_addresses_compare_as_ipv4() {
        let a: SocketAddr = "[::ffff:192.0.2.1]:80".parse().unwrap();
        let b: SocketAddr = "192.0.2.1:80".parse().unwrap();
        let c: SocketAddr = "203.0.113.2:1".parse().unwrap();
        assert_eq!(Tuple::new(a, c), Tuple::new(b, c));
    }

    #[test]
    fn the_recorder_keeps_packets_and_then_the_summary_of_a_connection() {
        let mut r = Recorder::default();
        let mut p = pkt(direction::EGRESS, S, 1, Some(4), 1460);
        p.flow.local_addr = mptcp_probe_common::flow::v4_mapped([192, 0, 2, 1]);
        p.flow.remote_addr = mptcp_probe_common::flow::v4_mapped([0, 0, 0, 0]);
        p.flow.local_port = 4000;
        r.event(&Event::Packet(p), &Context::default());
        let (l, rem): (SocketAddr, SocketAddr) =
            ("192.0.2.1:4000".parse().unwrap(), "0.0.0.0:0".parse().unwrap());
        assert_eq!(r.packets(l, rem).len(), 1);
        assert!(r.lock().get(&Tuple::new(l, rem)).unwrap().summary.is_none());
        for _ in 0..MAX_PACKETS_PER_FLOW {
            r.event(&Event::Packet(p), &Context::default());
        }
        assert_eq!(r.packets(l, rem).len(), MAX_PACKETS_PER_FLOW);
        assert_eq!(r.lock().dropped_packets, 1);
    }
}
