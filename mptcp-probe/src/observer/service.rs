//! The observer as a background service for `check` and `serve`: it attaches to every interface
//! that is up (and ones that come up later), keeps the recent packet events of each connection,
//! and answers "what did the wire show for this connection" by its addresses.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use mptcp_probe_common::{
    event::{tcp_flags, PacketEvent},
    flow::FlowKey,
    options::subtype,
};
use tokio::{io::unix::AsyncFd, task::JoinHandle};

use super::{
    decode::{decode, Event},
    iface, Observer, ObserverOptions,
};
use crate::{
    flows::{self, FlowNotes, FlowSummary},
    proto::{HandshakeSource, HandshakeView, SegmentStats, WireSummary},
};

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
            local: SocketAddr::new(flows::addr(k.ip_version, &k.local_addr), k.local_port),
            remote: SocketAddr::new(flows::addr(k.ip_version, &k.remote_addr), k.remote_port),
        }
    }

    /// IPv4-mapped IPv6 addresses (from dual-stack sockets) compare as IPv4.
    pub fn new(local: SocketAddr, remote: SocketAddr) -> Self {
        Self { local: crate::sock::canonical(local), remote: crate::sock::canonical(remote) }
    }
}

#[derive(Default)]
struct Recent {
    flows: HashMap<Tuple, (FlowKey, Vec<PacketEvent>)>,
    order: VecDeque<Tuple>,
    dropped_packets: u64,
}

impl Recent {
    fn push(&mut self, p: PacketEvent) {
        let t = Tuple::of(&p.flow);
        if !self.flows.contains_key(&t) {
            if self.order.len() >= MAX_FLOWS {
                if let Some(old) = self.order.pop_front() {
                    self.flows.remove(&old);
                }
            }
            self.order.push_back(t);
        }
        let entry = self.flows.entry(t).or_insert_with(|| (p.flow, Vec::new()));
        if entry.1.len() < MAX_PACKETS_PER_FLOW {
            entry.1.push(p);
        } else {
            self.dropped_packets += 1;
        }
    }
}

pub struct ObserverService {
    obs: Arc<Mutex<Observer>>,
    recent: Arc<Mutex<Recent>>,
    netns: u32,
    task: JoinHandle<()>,
    scan: JoinHandle<()>,
}

fn subtype_name(st: u8) -> String {
    flows::subtype_name(st).to_string()
}

/// The handshake as the recorded packets show it, from this host's point of view.
pub fn handshake_of(packets: &[PacketEvent]) -> Option<HandshakeView> {
    let mut v = HandshakeView { source: "observer".into(), ..Default::default() };
    let mpc = |p: &PacketEvent| {
        p.opts
            .mptcp_options()
            .iter()
            .find(|o| o.subtype == subtype::MP_CAPABLE || o.subtype == subtype::MP_JOIN)
            .map(|o| (subtype_name(o.subtype), o.len))
    };
    let mut seen = false;
    let mut syn_dir = None;
    for p in packets {
        let f = p.tcp_flags;
        let syn = f & tcp_flags::SYN != 0;
        let ack = f & tcp_flags::ACK != 0;
        if syn && !ack {
            seen = true;
            syn_dir = Some(p.direction);
            let m = mpc(p);
            v.syn_mptcp = m.as_ref().map(|m| m.0.clone());
            v.syn_mptcp_len = m.map(|m| m.1);
            v.syn_mss = (p.opts.mss != 0).then_some(p.opts.mss);
            v.syn_isn = Some(p.seq);
            v.syn_ttl = Some(p.ttl);
        } else if syn && ack {
            let m = mpc(p);
            v.synack_mptcp = m.as_ref().map(|m| m.0.clone());
            v.synack_mptcp_len = m.map(|m| m.1);
            v.synack_isn = Some(p.seq);
        } else if ack && Some(p.direction) == syn_dir && v.ack_mptcp.is_none() {
            // The third ACK, or the first data that repeats its MP_CAPABLE. Packets of one
            // connection can overtake each other on the way in (veth hands them to the CPU that
            // sent them), so a later packet with the option counts too; 0 marks "seen, none of
            // them carried it".
            let m = mpc(p);
            v.ack_mptcp = m.as_ref().map(|m| m.0.clone());
            v.ack_mptcp_len = Some(m.map(|m| m.1).unwrap_or(0));
        }
    }
    seen.then_some(v)
}

impl ObserverService {
    /// Loads the observer and attaches it to every interface that is up.
    pub async fn start() -> anyhow::Result<Arc<Self>> {
        crate::preflight::check_all()?;
        let mut obs = Observer::load(&ObserverOptions::default())?;
        for i in iface::list()?.into_iter().filter(|i| i.up) {
            if let Err(e) = obs.attach(&i) {
                tracing::warn!("{e:#}");
            }
        }
        let ring = obs.take_ring()?;
        // SAFETY: the ring buffer owns its fd and lives inside the AsyncFd until dropped.
        let mut ring = unsafe { AsyncFd::register(ring) }
            .map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;
        let obs = Arc::new(Mutex::new(obs));
        let recent = Arc::new(Mutex::new(Recent::default()));
        let r = recent.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok(mut guard) = ring.readable_mut().await else { break };
                let rb = guard.get_inner_mut();
                while let Some(item) = rb.next() {
                    if let Ok(Event::Packet(p)) = decode(&item) {
                        r.lock().expect("lock").push(p);
                    }
                }
                guard.clear_ready();
            }
        });
        let o = obs.clone();
        let scan = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Ok(all) = iface::list() else { continue };
                let mut obs = o.lock().expect("lock");
                obs.forget_missing(&all);
                for i in all.iter().filter(|i| i.up) {
                    if let Err(e) = obs.attach(i) {
                        tracing::debug!("{e:#}");
                    }
                }
            }
        });
        Ok(Arc::new(Self { obs, recent, netns: iface::current_netns(), task, scan }))
    }

    /// The packet events recorded for a connection.
    pub fn packets(&self, local: SocketAddr, remote: SocketAddr) -> Vec<PacketEvent> {
        let t = Tuple::new(local, remote);
        self.recent.lock().expect("lock").flows.get(&t).map(|(_, p)| p.clone()).unwrap_or_default()
    }

    /// The flow summary of a connection from the kernel's flow state and the recorded events.
    pub fn summary(&self, local: SocketAddr, remote: SocketAddr) -> Option<FlowSummary> {
        let t = Tuple::new(local, remote);
        let key = self.recent.lock().expect("lock").flows.get(&t).map(|(k, _)| *k)?;
        let mut obs = self.obs.lock().expect("lock");
        let st = obs.flow_state(&key)?;
        let names = obs.interface_names();
        let iface = names.get(&key.ifindex).cloned().unwrap_or_default();
        Some(flows::summarize(&key, &st, &FlowNotes::default(), &iface, self.netns))
    }

    pub fn interface_name(&self, ifindex: u32) -> String {
        self.obs.lock().expect("lock").interface_names().get(&ifindex).cloned().unwrap_or_default()
    }

    pub fn fallback_source(&self) -> super::FallbackSource {
        self.obs.lock().expect("lock").fallback_source
    }

    /// Detaches every program.
    pub fn stop(&self) {
        self.task.abort();
        self.scan.abort();
        self.obs.lock().expect("lock").detach_all();
    }
}

impl Drop for ObserverService {
    fn drop(&mut self) {
        self.stop();
    }
}

impl HandshakeSource for ObserverService {
    fn handshake(&self, local: SocketAddr, peer: SocketAddr) -> Option<HandshakeView> {
        handshake_of(&self.packets(local, peer))
    }

    fn wire(&self, local: SocketAddr, peer: SocketAddr) -> Option<WireSummary> {
        let s = self.summary(local, peer)?;
        Some(WireSummary {
            received_segments: SegmentStats {
                count: s.data_segments.rx as u64,
                bytes: s.payload_bytes.rx,
                max: s.max_segment.rx,
            },
            received_without_dss: s.data_without_dss.rx,
            fallback_evidence: s.fallback_evidence,
        })
    }
}

#[cfg(test)]
mod tests {
    use mptcp_probe_common::{
        event::{direction, EventHeader, HEADER_BYTES},
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
            header: EventHeader::default(),
            flow: FlowKey::default(),
            seq,
            ack: 0,
            payload_len: 0,
            why: 0,
            window: 0,
            direction: dir,
            tcp_flags: flags,
            ttl: 64,
            _pad: 0,
            headers_len: 0,
            ip_len: 0,
            wire_segments: 1,
            segment_size: 0,
            _pad3: 0,
            opts,
            headers: [0; HEADER_BYTES],
        }
    }

    #[test]
    fn client_side_handshake_with_a_stripped_synack() {
        let s = tcp_flags::SYN;
        let sa = tcp_flags::SYN | tcp_flags::ACK;
        let a = tcp_flags::ACK;
        let v = handshake_of(&[
            pkt(direction::EGRESS, s, 1000, Some(4), 1460),
            pkt(direction::INGRESS, sa, 5000, None, 1400),
            pkt(direction::EGRESS, a, 1001, None, 0),
        ])
        .expect("handshake");
        assert_eq!(v.syn_mptcp.as_deref(), Some("mp_capable"));
        assert_eq!(v.syn_mptcp_len, Some(4));
        assert_eq!(v.syn_isn, Some(1000));
        assert_eq!(v.syn_mss, Some(1460));
        assert_eq!(v.synack_mptcp, None);
        assert_eq!(v.synack_isn, Some(5000));
        assert_eq!(v.ack_mptcp_len, Some(0), "third ACK seen, without MPTCP");
    }

    #[test]
    fn a_third_ack_overtaken_by_a_later_packet_still_counts() {
        let (s, sa, a) = (tcp_flags::SYN, tcp_flags::SYN | tcp_flags::ACK, tcp_flags::ACK);
        let v = handshake_of(&[
            pkt(direction::INGRESS, s, 1000, Some(4), 1460),
            pkt(direction::EGRESS, sa, 5000, Some(12), 1460),
            pkt(direction::INGRESS, a, 1001, None, 0),
            pkt(direction::INGRESS, a, 1001, Some(20), 0),
        ])
        .expect("handshake");
        assert_eq!(v.ack_mptcp.as_deref(), Some("mp_capable"));
        assert_eq!(v.ack_mptcp_len, Some(20));
    }

    #[test]
    fn no_syn_no_handshake() {
        assert!(handshake_of(&[pkt(direction::EGRESS, tcp_flags::ACK, 1, None, 0)]).is_none());
    }

    #[test]
    fn mapped_addresses_compare_as_ipv4() {
        let a: SocketAddr = "[::ffff:192.0.2.1]:80".parse().unwrap();
        let b: SocketAddr = "192.0.2.1:80".parse().unwrap();
        let c: SocketAddr = "203.0.113.2:1".parse().unwrap();
        assert_eq!(Tuple::new(a, c), Tuple::new(b, c));
    }
}
