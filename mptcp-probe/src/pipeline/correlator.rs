//! The correlator: joins the kernel's events with the flows the TC programs track. It keeps what
//! user space learns of each flow (socket states, resets, the exact fallback reason), decides when
//! a flow is due for its summary (ended, idle, or the pipeline stops) and counts, at once, the
//! flows the kernel's table evicted before that.

use std::{
    collections::hash_map::Entry,
    net::IpAddr,
    time::{Duration, Instant},
};

use mptcp_probe_common::{
    event::tcp_flags,
    flow::FlowKey,
    proto::{tcp_state, IPPROTO_MPTCP},
};
use mptcp_probe_model::{FlowSummary, TcpState};

use super::{
    record::{addr, endpoint_of, family_version},
    summary::{summarize, FlowNotes},
    FlowMap,
};
use crate::kernel::{decode::Event, Observer};

/// How long after FIN/RST a flow is kept, so the last ACKs and resets are counted.
pub const END_GRACE: Duration = Duration::from_millis(750);
/// MPTCP sockets remembered (by kernel address) to place fentry fallback reasons.
const MAX_MSK_ENTRIES: usize = 65536;

/// An address and port as the kernel's socket events give them, local first.
type Endpoint = (IpAddr, u16);

/// Counts of what the correlator could not place or keep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CorrelatorStats {
    /// Flows the kernel's LRU table dropped before they could be summarised.
    pub evicted_unsummarised: u64,
    /// Kernel events of other network namespaces, left out.
    pub foreign_events: u64,
}

/// Why a flow is summarised now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// FIN both ways or RST, after the grace period.
    Ended,
    /// Quiet for the idle timeout.
    Idle,
    /// Open when the pipeline stopped.
    Stopping,
}

pub struct Correlator {
    netns: u32,
    idle_timeout_ns: u64,
    /// Sweep the kernel's table too, not only the flows events told of: where the kernel reports
    /// only what went wrong and flow ends, a quiet flow has told of nothing.
    sweep_kernel: bool,
    notes: FlowMap<FlowKey, FlowNotes>,
    /// The noted flows by their addresses (the same addresses on several interfaces: several).
    by_endpoints: FlowMap<(Endpoint, Endpoint), Vec<FlowKey>>,
    /// Flows whose FIN or RST was seen, with when.
    ending: FlowMap<FlowKey, Instant>,
    /// MPTCP socket address → its addresses, from socket-state events.
    msk: FlowMap<u64, (Endpoint, Endpoint)>,
    pub stats: CorrelatorStats,
}

/// A summary made, or the flow the kernel no longer had.
pub enum Summarised {
    Flow(Box<FlowSummary>),
    Evicted(FlowKey),
    /// The kernel evicted the flow and tracked it anew since the events noted of it: the earlier
    /// part is lost (counted), this is the summary of the part since.
    Reborn(FlowKey, Box<FlowSummary>),
}

impl Correlator {
    pub fn new(netns: u32, idle_timeout: Duration, sweep_kernel: bool) -> Self {
        Self {
            netns,
            idle_timeout_ns: idle_timeout.as_nanos().min(u64::MAX as u128) as u64,
            sweep_kernel,
            notes: FlowMap::default(),
            by_endpoints: FlowMap::default(),
            ending: FlowMap::default(),
            msk: FlowMap::default(),
            stats: CorrelatorStats::default(),
        }
    }

    /// Takes one event; returns whether it belongs to the observed flows (and so goes to the
    /// sinks). `mib_name` names a fallback event's MIB counter.
    pub fn observe(&mut self, ev: &Event, mib_name: impl Fn(u32) -> String) -> bool {
        // Kernel events of other network namespaces (containers, the other end of a lab) are not
        // ours; 0 means the source could not tell.
        let ns = match ev {
            Event::SockState(s) => s.header.netns,
            Event::Reset(r) => r.header.netns,
            Event::Mapping(m) => m.header.netns,
            Event::Packet(_) | Event::Fallback(_) => 0,
        };
        if ns != 0 && ns != self.netns {
            self.stats.foreign_events += 1;
            return false;
        }
        match ev {
            Event::Packet(p) => {
                let flow_ends = p.tcp_flags & (tcp_flags::RST | tcp_flags::FIN) != 0;
                if p.tracked() {
                    if let Entry::Vacant(note) = self.notes.entry(p.flow) {
                        note.insert(FlowNotes { first_event_ns: p.header.ts_ns, ..Default::default() });
                        self.by_endpoints.entry(endpoint_of(&p.flow)).or_default().push(p.flow);
                    }
                } else if !self.notes.contains_key(&p.flow) {
                    // The end of a flow the kernel does not track, and neither do we.
                    return false;
                }
                if flow_ends {
                    self.ending.entry(p.flow).or_insert_with(Instant::now);
                }
                true
            }
            Event::SockState(s) => {
                let ver = family_version(s.family);
                let local = (addr(ver, &s.saddr), s.sport);
                let remote = (addr(ver, &s.daddr), s.dport);
                let mptcp = s.protocol == IPPROTO_MPTCP;
                if mptcp {
                    if s.newstate == tcp_state::CLOSE {
                        self.msk.remove(&s.skaddr);
                    } else if self.msk.len() < MAX_MSK_ENTRIES {
                        self.msk.insert(s.skaddr, (local, remote));
                    }
                }
                // The text is made only for a noted flow (every socket event of the namespace
                // comes here), in one allocation.
                let (old, new) = (TcpState::from_code(s.oldstate), TcpState::from_code(s.newstate));
                self.note_socket(local, remote, |n| {
                    let proto = if mptcp { "mptcp" } else { "tcp" };
                    n.socket_states.push([proto, " ", old.as_str(), " -> ", new.as_str()].concat());
                    n.mptcp_socket |= mptcp;
                })
            }
            Event::Reset(r) => {
                let ver = family_version(r.family);
                let text = match (r.dir, r.reason) {
                    (mptcp_probe_common::event::reset_dir::SENT, u32::MAX) => "reset sent".to_string(),
                    (mptcp_probe_common::event::reset_dir::SENT, reason) => {
                        format!("reset sent (sk_rst_reason {reason})")
                    }
                    _ => "reset received".to_string(),
                };
                self.note_socket((addr(ver, &r.saddr), r.sport), (addr(ver, &r.daddr), r.dport), |n| {
                    n.resets.push(text.clone())
                })
            }
            // No socket to place it by: host-wide (or namespace-wide) kernel view.
            Event::Mapping(_) => true,
            Event::Fallback(f) => {
                let reason = mib_name(f.mib);
                if let Some((local, remote)) = self.msk.get(&f.msk).copied() {
                    self.note_socket(local, remote, |n| n.fallback_reason = Some(reason.clone()));
                }
                true
            }
        }
    }

    /// Adds a socket-level note to every flow with these addresses (local/remote as on this
    /// host); true when there was one.
    fn note_socket(&mut self, local: Endpoint, remote: Endpoint, mut f: impl FnMut(&mut FlowNotes)) -> bool {
        let Some(keys) = self.by_endpoints.get(&(local, remote)) else { return false };
        for k in keys {
            if let Some(n) = self.notes.get_mut(k) {
                f(n);
            }
        }
        !keys.is_empty()
    }

    /// Forgets what was noted of a flow.
    fn forget(&mut self, key: &FlowKey) -> Option<FlowNotes> {
        let notes = self.notes.remove(key)?;
        let endpoints = endpoint_of(key);
        if let Some(keys) = self.by_endpoints.get_mut(&endpoints) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.by_endpoints.remove(&endpoints);
            }
        }
        Some(notes)
    }

    /// Flows whose end was seen more than [`END_GRACE`] ago.
    pub fn ended(&mut self, now: Instant) -> Vec<FlowKey> {
        let due: Vec<FlowKey> = self
            .ending
            .iter()
            .filter(|(_, t)| now.duration_since(**t) >= END_GRACE)
            .map(|(k, _)| *k)
            .collect();
        for k in &due {
            self.ending.remove(k);
        }
        due
    }

    /// Summarises a flow from the kernel's state and what was noted, and forgets it (the kernel
    /// entry too). A flow the kernel no longer has is counted as evicted.
    pub fn summarise(&mut self, obs: &mut Observer, key: &FlowKey, due: Due) -> Summarised {
        self.ending.remove(key);
        let mut notes = self.forget(key).unwrap_or_default();
        notes.idle = due == Due::Idle;
        match obs.take_flow_state(key) {
            // An entry younger than the first event noted: not the flow those events were of.
            Some(st) if notes.first_event_ns != 0 && st.first_ns > notes.first_event_ns => {
                self.stats.evicted_unsummarised += 1;
                let fresh = FlowNotes { idle: notes.idle, ..Default::default() };
                let iface = obs.interface_name(key.ifindex);
                Summarised::Reborn(*key, Box::new(summarize(key, &st, &fresh, &iface, self.netns)))
            }
            Some(st) => {
                let iface = obs.interface_name(key.ifindex);
                Summarised::Flow(Box::new(summarize(key, &st, &notes, &iface, self.netns)))
            }
            None => {
                self.stats.evicted_unsummarised += 1;
                Summarised::Evicted(*key)
            }
        }
    }

    /// Flows that went quiet for the idle timeout, and ones the kernel evicted meanwhile.
    pub fn sweep(&mut self, obs: &mut Observer, now_ns: u64) -> Vec<Summarised> {
        let mut keys: Vec<FlowKey> = self.notes.keys().copied().collect();
        if self.sweep_kernel {
            keys.extend(obs.flow_keys().into_iter().filter(|k| !self.notes.contains_key(k)));
        }
        // The CPUs' running totals once for all flows; a flow's own summary reads them again.
        let accs = obs.accumulators();
        let mut out = Vec::new();
        for k in keys {
            match obs.last_seen_ns(&k, &accs) {
                None => out.push(self.summarise(obs, &k, Due::Idle)),
                Some(last) if now_ns.saturating_sub(last) >= self.idle_timeout_ns => {
                    out.push(self.summarise(obs, &k, Due::Idle))
                }
                Some(_) => {}
            }
        }
        out
    }

    /// Every flow still known, here or in the kernel's table, for the end of the pipeline.
    pub fn remaining(&self, obs: &mut Observer) -> Vec<FlowKey> {
        let mut keys: Vec<FlowKey> = self.notes.keys().copied().collect();
        for k in obs.flow_keys() {
            if !self.notes.contains_key(&k) {
                keys.push(k);
            }
        }
        keys
    }

    /// Flows noted and not yet summarised.
    pub fn open_flows(&self) -> usize {
        self.notes.len()
    }
}

#[cfg(test)]
mod tests {
    use mptcp_probe_common::{
        event::{direction, EventHeader, PacketEvent, SockStateEvent},
        proto::AF_INET,
    };

    use super::*;

    fn key(lport: u16) -> FlowKey {
        FlowKey {
            ifindex: 2,
            local_port: lport,
            remote_port: 80,
            local_addr: mptcp_probe_common::flow::v4_mapped([192, 0, 2, 1]),
            remote_addr: mptcp_probe_common::flow::v4_mapped([203, 0, 113, 2]),
        }
    }

    fn packet(k: FlowKey, flags: u8, tracked: bool) -> Event {
        Event::Packet(PacketEvent {
            flow: k,
            why: if tracked { 0 } else { mptcp_probe_common::event::why::UNTRACKED },
            direction: direction::EGRESS,
            tcp_flags: flags,
            ..PacketEvent::zeroed()
        })
    }

    fn sock_state(netns: u32, lport: u16, old: i32, new: i32) -> Event {
        let mut saddr = [0u8; 16];
        saddr[..4].copy_from_slice(&[192, 0, 2, 1]);
        let mut daddr = [0u8; 16];
        daddr[..4].copy_from_slice(&[203, 0, 113, 2]);
        Event::SockState(SockStateEvent {
            header: EventHeader { netns, ..Default::default() },
            skaddr: 1,
            oldstate: old,
            newstate: new,
            protocol: mptcp_probe_common::proto::IPPROTO_TCP as u16,
            family: AF_INET,
            sport: lport,
            dport: 80,
            saddr,
            daddr,
        })
    }

    #[test]
    fn socket_events_are_noted_on_their_flow_and_other_namespaces_left_out() {
        let mut c = Correlator::new(7, Duration::from_secs(300), false);
        assert!(c.observe(&packet(key(40000), tcp_flags::SYN, true), |_| String::new()));
        let est = sock_state(7, 40000, tcp_state::SYN_SENT, tcp_state::ESTABLISHED);
        assert!(c.observe(&est, |_| String::new()));
        assert_eq!(c.notes[&key(40000)].socket_states, vec!["tcp SYN_SENT -> ESTABLISHED".to_string()]);
        // Another namespace's socket with the same addresses (the other end of a lab).
        assert!(
            !c.observe(&sock_state(8, 40000, tcp_state::SYN_SENT, tcp_state::ESTABLISHED), |_| String::new())
        );
        assert_eq!(c.stats.foreign_events, 1);
        // A socket of no observed flow is not shown.
        assert!(
            !c.observe(&sock_state(7, 40001, tcp_state::SYN_SENT, tcp_state::ESTABLISHED), |_| String::new())
        );
    }

    #[test]
    fn a_flow_is_due_a_grace_period_after_its_end() {
        let mut c = Correlator::new(7, Duration::from_secs(300), false);
        c.observe(&packet(key(40000), tcp_flags::SYN, true), |_| String::new());
        c.observe(&packet(key(40000), tcp_flags::FIN | tcp_flags::ACK, true), |_| String::new());
        let now = Instant::now();
        assert!(c.ended(now).is_empty(), "not before the grace period");
        assert_eq!(c.ended(now + END_GRACE), vec![key(40000)]);
        assert!(c.ended(now + END_GRACE * 2).is_empty(), "due once");
    }

    #[test]
    fn the_end_of_a_flow_the_kernel_no_longer_tracks_makes_it_due_at_once() {
        let mut c = Correlator::new(7, Duration::from_secs(300), false);
        c.observe(&packet(key(40000), tcp_flags::SYN, true), |_| String::new());
        // Its entry was evicted; the FIN comes as an untracked end.
        assert!(c.observe(&packet(key(40000), tcp_flags::FIN | tcp_flags::ACK, false), |_| String::new()));
        assert_eq!(c.ended(Instant::now() + END_GRACE), vec![key(40000)]);
        // An untracked end of a flow never seen is nobody's.
        assert!(!c.observe(&packet(key(40001), tcp_flags::RST, false), |_| String::new()));
        assert_eq!(c.open_flows(), 1);
    }
}
