//! Observations per test id, bounded: anyone can open connections to the server, so what it keeps
//! must not grow with them. At most `max_tests` test ids (the least recently used is evicted), at
//! most `max_conns` connections per test, and a test is forgotten `ttl` after its last connection
//! began.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mptcp_probe_model::ConnectionView;

/// One stored connection view, updated in place by its connection while it runs.
pub(super) type Slot = Arc<Mutex<ConnectionView>>;

/// Runs `f` on a slot's view (a poisoned lock still holds a usable view).
pub(super) fn with<T>(slot: &Slot, f: impl FnOnce(&mut ConnectionView) -> T) -> T {
    f(&mut slot.lock().unwrap_or_else(|p| p.into_inner()))
}

pub(super) const MAX_TESTS: usize = 10_000;
pub(super) const MAX_CONNECTIONS_PER_TEST: usize = 32;
pub(super) const TTL: Duration = Duration::from_secs(600);

pub(super) struct Store {
    max_tests: usize,
    max_conns: usize,
    ttl: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    tests: HashMap<String, Entry>,
    /// Test ids by the sequence number of their last attach: the first is the least recent.
    order: BTreeMap<u64, String>,
    seq: u64,
    stats: StoreStats,
}

struct Entry {
    seq: u64,
    touched: Instant,
    conns: Vec<Slot>,
}

/// Counters for the control port's `/v1/stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub(super) struct StoreStats {
    /// Test ids held now.
    pub tests: usize,
    /// Test ids dropped to make room for newer ones.
    pub tests_evicted: u64,
    /// Test ids forgotten after `ttl`.
    pub tests_expired: u64,
    /// Connections not recorded (and refused) because their test had `max_conns` already.
    pub connections_over_test_limit: u64,
}

impl Default for Store {
    fn default() -> Self {
        Self::new(MAX_TESTS, MAX_CONNECTIONS_PER_TEST, TTL)
    }
}

impl Store {
    pub(super) fn new(max_tests: usize, max_conns: usize, ttl: Duration) -> Self {
        Self { max_tests, max_conns, ttl, inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `view` as a new connection of `test_id`; None when that test is full.
    pub(super) fn attach(&self, test_id: &str, view: ConnectionView) -> Option<Slot> {
        self.attach_at(Instant::now(), test_id, view)
    }

    pub(super) fn attach_at(&self, now: Instant, test_id: &str, view: ConnectionView) -> Option<Slot> {
        let mut inner = self.lock();
        inner.expire(now, self.ttl);
        inner.seq += 1;
        let seq = inner.seq;
        if let Some(e) = inner.tests.get(test_id) {
            if e.conns.len() >= self.max_conns {
                inner.stats.connections_over_test_limit += 1;
                return None;
            }
        } else {
            while inner.tests.len() >= self.max_tests {
                let Some((_, oldest)) = inner.order.pop_first() else { break };
                inner.tests.remove(&oldest);
                inner.stats.tests_evicted += 1;
            }
            inner.tests.insert(test_id.to_string(), Entry { seq, touched: now, conns: Vec::new() });
        }
        let slot: Slot = Arc::new(Mutex::new(view));
        let Inner { tests, order, .. } = &mut *inner;
        if let Some(e) = tests.get_mut(test_id) {
            order.remove(&e.seq);
            e.seq = seq;
            e.touched = now;
            e.conns.push(slot.clone());
            order.insert(seq, test_id.to_string());
        }
        Some(slot)
    }

    /// The views of a test's connections as they are now, in the order they were attached.
    pub(super) fn report(&self, test_id: &str) -> Option<Vec<ConnectionView>> {
        self.report_at(Instant::now(), test_id)
    }

    pub(super) fn report_at(&self, now: Instant, test_id: &str) -> Option<Vec<ConnectionView>> {
        let mut inner = self.lock();
        inner.expire(now, self.ttl);
        let e = inner.tests.get(test_id)?;
        Some(e.conns.iter().map(|s| with(s, |v| v.clone())).collect())
    }

    pub(super) fn stats(&self) -> StoreStats {
        let inner = self.lock();
        StoreStats { tests: inner.tests.len(), ..inner.stats }
    }
}

impl Inner {
    /// Drops the tests whose last attach is `ttl` old: they are at the front of `order`.
    fn expire(&mut self, now: Instant, ttl: Duration) {
        while let Some((_, id)) = self.order.first_key_value() {
            let stale = self.tests.get(id).is_none_or(|e| now.saturating_duration_since(e.touched) >= ttl);
            if !stale {
                break;
            }
            if let Some((_, id)) = self.order.pop_first() {
                self.tests.remove(&id);
                self.stats.tests_expired += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(n: u64) -> ConnectionView {
        ConnectionView { bytes_sent: n, ..Default::default() }
    }

    #[test]
    fn views_are_updated_in_place() {
        let s = Store::default();
        let slot = s.attach("t1", view(7)).expect("room");
        with(&slot, |v| v.bytes_received = 42);
        let r = s.report("t1").expect("stored");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].bytes_sent, 7);
        assert_eq!(r[0].bytes_received, 42);
        assert_eq!(s.report("t2"), None);
    }

    #[test]
    fn connections_per_test_are_bounded() {
        let s = Store::new(10, 3, TTL);
        for i in 0..3 {
            assert!(s.attach("t", view(i)).is_some());
        }
        assert!(s.attach("t", view(3)).is_none());
        let kept: Vec<u64> = s.report("t").unwrap().into_iter().map(|v| v.bytes_sent).collect();
        assert_eq!(kept, [0, 1, 2]);
        assert_eq!(s.stats().connections_over_test_limit, 1);
    }

    #[test]
    fn the_least_recently_used_test_is_evicted() {
        let s = Store::new(3, 32, TTL);
        for id in ["a", "b", "c"] {
            s.attach(id, view(0));
        }
        // "a" is used again, so "b" is now the least recent.
        s.attach("a", view(2));
        s.attach("d", view(4));
        assert!(s.report("b").is_none());
        assert_eq!(s.report("a").unwrap().len(), 2);
        assert!(s.report("c").is_some() && s.report("d").is_some());
        let st = s.stats();
        assert_eq!((st.tests, st.tests_evicted), (3, 1));
    }

    #[test]
    fn tests_expire_after_the_ttl() {
        let s = Store::new(100, 32, Duration::from_secs(600));
        let t0 = Instant::now();
        s.attach_at(t0, "old", view(8));
        s.attach_at(t0 + Duration::from_secs(300), "young", view(9));
        assert!(s.report_at(t0 + Duration::from_secs(599), "old").is_some());
        assert!(s.report_at(t0 + Duration::from_secs(600), "old").is_none());
        assert!(s.report_at(t0 + Duration::from_secs(600), "young").is_some());
        assert!(s.report_at(t0 + Duration::from_secs(900), "young").is_none());
        assert_eq!(s.stats().tests_expired, 2);
        assert_eq!(s.stats().tests, 0);
    }

    #[test]
    fn a_full_store_holds_exactly_its_limit() {
        let s = Store::new(MAX_TESTS, MAX_CONNECTIONS_PER_TEST, TTL);
        for i in 0..MAX_TESTS + 5 {
            s.attach(&format!("t{i}"), view(1));
        }
        let st = s.stats();
        assert_eq!((st.tests, st.tests_evicted), (MAX_TESTS, 5));
        assert!(s.report("t4").is_none());
        assert!(s.report("t5").is_some());
    }
}
