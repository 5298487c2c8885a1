//! The join of flow summaries with the kernel's own view of their connections: what sock_diag
//! (`ss -M`) said of each MPTCP socket while it was open, kept by its addresses until the
//! summary of its initial subflow takes it.
//!
//! sock_diag lists live sockets only, and an MPTCP socket leaves the dump within milliseconds of
//! its close, before its flow's end has reached user space: the book is filled from the dumps
//! taken while connections are open (the daemon takes one at each scrape), so a connection that
//! was open across one is joined with the last state the kernel gave, and one that opened and
//! closed between two is summarised from the wire alone.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use super::FlowMap;
use crate::host::diag::MptcpSocket;

/// Sockets kept at most; past that the longest unseen go first.
pub const MAX_SOCKETS: usize = 65_536;
/// A socket no dump has shown for this long, and no summary took, is forgotten (a flow of an
/// interface that is not observed, or one whose summary went elsewhere).
pub const KEEP_UNSEEN: Duration = Duration::from_secs(600);

/// What the kernel last said of one MPTCP connection.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SocketSeen {
    /// The connection's token: another token under the same addresses is another connection.
    pub token: u32,
    /// The connection fell back to TCP, in any dump that showed it.
    pub fallback: bool,
    /// Its subflows, the initial one included: the most any dump showed.
    pub subflows: u8,
    /// When a dump last showed it.
    pub seen: Instant,
}

impl SocketSeen {
    fn of(s: &MptcpSocket, now: Instant) -> Self {
        Self { token: s.info.token, fallback: s.fallback(), subflows: s.info.all_subflows(), seen: now }
    }

    /// The later view, keeping what only grows: a fallback stays, the subflows are the most seen.
    /// A later connection between the same addresses replaces the earlier one's.
    fn merge(self, later: Self) -> Self {
        if later.token != self.token {
            return later;
        }
        Self {
            fallback: self.fallback || later.fallback,
            subflows: self.subflows.max(later.subflows),
            ..later
        }
    }
}

/// The connections of one network namespace, by (local, remote) address as on this host.
#[derive(Debug, Default)]
pub struct SocketBook {
    by_endpoints: FlowMap<(SocketAddr, SocketAddr), SocketSeen>,
}

/// A book shared by the dumps that fill it and the summaries that take from it.
pub type SharedBook = Arc<Mutex<SocketBook>>;

/// A new, empty shared book.
pub fn shared_book() -> SharedBook {
    Arc::default()
}

/// The book's lock; a panic elsewhere does not make it unusable.
pub fn lock_book(b: &SharedBook) -> MutexGuard<'_, SocketBook> {
    b.lock().unwrap_or_else(|p| p.into_inner())
}

impl SocketBook {
    /// Takes in a dump; forgets what has gone unseen for [`KEEP_UNSEEN`], and the longest
    /// unseen beyond [`MAX_SOCKETS`].
    pub fn note(&mut self, sockets: &[MptcpSocket], now: Instant) {
        for s in sockets {
            let seen = SocketSeen::of(s, now);
            self.by_endpoints.entry((s.local, s.remote)).and_modify(|e| *e = e.merge(seen)).or_insert(seen);
        }
        self.by_endpoints.retain(|_, s| now.saturating_duration_since(s.seen) < KEEP_UNSEEN);
        if self.by_endpoints.len() > MAX_SOCKETS {
            let mut by_age: Vec<_> = self.by_endpoints.iter().map(|(k, s)| (*k, s.seen)).collect();
            let cut = by_age.len() - MAX_SOCKETS;
            by_age.select_nth_unstable_by_key(cut, |(_, seen)| *seen);
            for (k, _) in &by_age[..cut] {
                self.by_endpoints.remove(k);
            }
        }
    }

    /// What the kernel said of the connection with these addresses, taken out of the book; not
    /// when no dump showed it since `not_before` (the earliest its flow can have begun): then it
    /// was an earlier connection between the same addresses, whose summary never came.
    pub fn take(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        not_before: Option<Instant>,
    ) -> Option<SocketSeen> {
        let key = (canonical(local), canonical(remote));
        self.by_endpoints.remove(&key).filter(|s| not_before.is_none_or(|t| s.seen >= t))
    }

    /// Forgets the connection with these addresses (its flow's summary will not come).
    pub fn forget(&mut self, local: SocketAddr, remote: SocketAddr) {
        self.take(local, remote, None);
    }

    pub fn len(&self) -> usize {
        self.by_endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_endpoints.is_empty()
    }
}

/// IPv4 in its own form, as the dump gives it, also when written v4-mapped.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{diag::TCP_ESTABLISHED, sock::MptcpInfo};

    fn socket(port: u16, fallback: bool, subflows_total: u8) -> MptcpSocket {
        let info = MptcpInfo {
            flags: if fallback { crate::host::sock::MPTCP_INFO_FLAG_FALLBACK } else { 0 },
            subflows_total,
            ..Default::default()
        };
        MptcpSocket {
            local: format!("192.0.2.1:{port}").parse().unwrap(),
            remote: "203.0.113.2:80".parse().unwrap(),
            state: TCP_ESTABLISHED,
            info,
            info_len: size_of::<MptcpInfo>(),
        }
    }

    fn addrs(port: u16) -> (SocketAddr, SocketAddr) {
        (format!("192.0.2.1:{port}").parse().unwrap(), "203.0.113.2:80".parse().unwrap())
    }

    #[test]
    fn a_connection_is_taken_once_with_what_the_dumps_said_of_it() {
        let mut b = SocketBook::default();
        let t = Instant::now();
        b.note(&[socket(40000, false, 1)], t);
        // A later dump: a second subflow joined, then one closed; the fallback flag of a third
        // dump stays once seen.
        b.note(&[socket(40000, false, 2)], t + Duration::from_secs(15));
        b.note(&[socket(40000, true, 1)], t + Duration::from_secs(30));
        let (l, r) = addrs(40000);
        let s = b.take(l, r, Some(t)).expect("joined");
        assert!(s.fallback);
        assert_eq!(s.subflows, 2, "the most subflows any dump showed");
        assert_eq!(s.seen, t + Duration::from_secs(30));
        assert_eq!(b.take(l, r, None), None, "taken once");
    }

    #[test]
    fn a_v4_mapped_address_finds_its_socket_and_an_unknown_one_nothing() {
        let mut b = SocketBook::default();
        b.note(&[socket(40001, false, 0)], Instant::now());
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:40001".parse().unwrap();
        let (_, r) = addrs(40001);
        assert_eq!(b.take(addrs(40002).0, r, None), None);
        let s = b.take(mapped, r, None).expect("the same connection");
        assert_eq!(s.subflows, 1, "no mptcpi_subflows_total: the additional ones and the initial");
    }

    #[test]
    fn what_goes_unseen_is_forgotten_and_the_book_stays_bounded() {
        let mut b = SocketBook::default();
        let t = Instant::now();
        b.note(&[socket(40000, false, 1)], t);
        b.note(&[socket(40001, false, 1)], t + KEEP_UNSEEN);
        assert_eq!(b.len(), 1, "the first went unseen for the whole keep time");
        assert!(b.take(addrs(40001).0, addrs(40001).1, None).is_some());

        let many: Vec<MptcpSocket> = (0..=MAX_SOCKETS as u32)
            .map(|i| {
                let mut s = socket(0, false, 1);
                s.local = SocketAddr::new([10, (i >> 16) as u8, (i >> 8) as u8, i as u8].into(), 1);
                s
            })
            .collect();
        b.note(&many[..10], t);
        b.note(&many[10..], t + Duration::from_secs(1));
        assert_eq!(b.len(), MAX_SOCKETS);
        let first_left = many[..10].iter().filter(|s| b.take(s.local, s.remote, None).is_some()).count();
        assert_eq!(first_left, 9, "one of the longest unseen went");
        assert!(b.take(many[MAX_SOCKETS].local, many[MAX_SOCKETS].remote, None).is_some());
    }

    #[test]
    fn an_earlier_connection_between_the_same_addresses_is_not_joined() {
        let mut b = SocketBook::default();
        let t = Instant::now();
        b.note(&[socket(40000, true, 1)], t);
        let (l, r) = addrs(40000);
        // Its summary never came (its interface is not observed); a new connection reuses the
        // addresses, and what the earlier one showed (its fallback) is not the new one's.
        let mut again = socket(40000, false, 1);
        again.info.token = 7;
        b.note(&[again], t + Duration::from_secs(30));
        assert!(b.take(l, r, None).is_some_and(|s| !s.fallback && s.token == 7));
        b.note(&[socket(40000, true, 1)], t);
        // Its summary never came (evicted); a new connection reuses the addresses later.
        assert_eq!(b.take(l, r, Some(t + Duration::from_secs(60))), None);
        assert!(b.is_empty(), "and it is forgotten");
        b.note(&[socket(40000, false, 1)], t + Duration::from_secs(90));
        assert!(b.take(l, r, Some(t + Duration::from_secs(60))).is_some_and(|s| !s.fallback));
    }

    #[test]
    fn an_evicted_flow_s_connection_is_forgotten() {
        let mut b = SocketBook::default();
        b.note(&[socket(40000, false, 1)], Instant::now());
        let (l, r) = addrs(40000);
        b.forget(l, r);
        assert!(b.is_empty());
    }
}
