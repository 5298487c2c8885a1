//! Concurrent connections per client address and in all, so that no client (or crowd of them)
//! can hold the server's descriptors. A connection over the limit is closed at once and counted.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

pub(super) struct Limiter {
    per_ip: usize,
    total: usize,
    inner: Mutex<Counts>,
    refused: AtomicU64,
}

#[derive(Default)]
struct Counts {
    by_ip: HashMap<IpAddr, usize>,
    total: usize,
}

/// One admitted connection; dropping it frees its place.
pub(super) struct Permit {
    limiter: Arc<Limiter>,
    ip: IpAddr,
}

impl Limiter {
    pub(super) fn new(per_ip: usize, total: usize) -> Self {
        Self { per_ip, total, inner: Mutex::new(Counts::default()), refused: AtomicU64::new(0) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for one more connection from `ip` (give it in canonical form: IPv4-mapped
    /// addresses as IPv4), or None, counted, when `ip` or the server is at its limit.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        let mut c = self.lock();
        let n = c.by_ip.get(&ip).copied().unwrap_or(0);
        if n >= self.per_ip || c.total >= self.total {
            drop(c);
            let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            // One line for the first refusal and then every thousandth: a flood must not flood
            // the log too.
            if refused % 1000 == 1 {
                tracing::warn!(
                    "connection from {ip} refused: too many connections ({refused} refused so far)"
                );
            }
            return None;
        }
        c.by_ip.insert(ip, n + 1);
        c.total += 1;
        Some(Permit { limiter: self.clone(), ip })
    }

    /// Connections refused since start.
    pub(super) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.limiter.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.by_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_share_and_places_come_back() {
        let l = Arc::new(Limiter::new(2, 10));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let p1 = l.admit(a).expect("first");
        let _p2 = l.admit(a).expect("second");
        assert!(l.admit(a).is_none(), "third from the same address");
        assert!(l.admit(b).is_some(), "another address is not affected");
        drop(p1);
        assert!(l.admit(a).is_some(), "a place freed is reusable");
        assert_eq!(l.refused(), 1);
    }

    #[test]
    fn the_total_is_bounded_too() {
        let l = Arc::new(Limiter::new(5, 3));
        let held: Vec<Permit> = (1..=3).filter_map(|i| l.admit(IpAddr::from([192, 0, 2, i]))).collect();
        assert_eq!(held.len(), 3);
        assert!(l.admit(IpAddr::from([192, 0, 2, 9])).is_none());
        drop(held);
        assert!(l.lock().by_ip.is_empty());
        assert!(l.admit(IpAddr::from([192, 0, 2, 9])).is_some());
        assert_eq!(l.refused(), 1);
    }
}
