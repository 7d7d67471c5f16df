//! Per-address backoff after repeated failed authentications, so guessing
//! passwords gets slow: after `max_failures` failures an address must wait
//! `initial`, doubling with each further failure up to `max`. A success
//! clears the address; so does a quiet period of `max`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Most addresses tracked; older entries are forgotten first.
const MAX_TRACKED: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

/// Failed authentications by client address.
pub struct Backoff {
    max_failures: u32,
    initial: Duration,
    max: Duration,
    peers: Mutex<HashMap<IpAddr, Failures>>,
}

impl Backoff {
    pub fn new(max_failures: u32, initial: Duration, max: Duration) -> Self {
        Self { max_failures, initial, max, peers: Mutex::default() }
    }

    /// How much longer `peer` must wait, if it is blocked.
    pub fn blocked(&self, peer: IpAddr, now: Instant) -> Option<Duration> {
        let until = self.peers.lock().get(&peer)?.blocked_until?;
        until.checked_duration_since(now).filter(|left| !left.is_zero())
    }

    /// Record a failure of `peer`; returns the wait it now has, if any.
    pub fn failed(&self, peer: IpAddr, now: Instant) -> Option<Duration> {
        let mut peers = self.peers.lock();
        if peers.len() >= MAX_TRACKED && !peers.contains_key(&peer) {
            let max = self.max;
            peers.retain(|_, f| now.duration_since(f.last) < max);
            if peers.len() >= MAX_TRACKED {
                peers.clear();
            }
        }
        let entry = peers.entry(peer).or_insert(Failures { count: 0, last: now, blocked_until: None });
        if now.duration_since(entry.last) >= self.max {
            entry.count = 0; // a long quiet period forgives
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        if entry.count < self.max_failures {
            return None;
        }
        let doublings = (entry.count - self.max_failures).min(20);
        let wait = self.initial.saturating_mul(1 << doublings).min(self.max);
        entry.blocked_until = Some(now + wait);
        Some(wait)
    }

    /// `peer` authenticated: forget its failures.
    pub fn succeeded(&self, peer: IpAddr) {
        self.peers.lock().remove(&peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_start_after_max_failures_and_double() {
        let backoff = Backoff::new(3, Duration::from_secs(1), Duration::from_secs(5));
        let peer: IpAddr = [127, 0, 0, 1].into();
        let t0 = Instant::now();
        assert_eq!(backoff.failed(peer, t0), None);
        assert_eq!(backoff.failed(peer, t0), None);
        assert_eq!(backoff.failed(peer, t0), Some(Duration::from_secs(1)));
        assert!(backoff.blocked(peer, t0).is_some());
        assert_eq!(backoff.blocked(peer, t0 + Duration::from_secs(2)), None, "the wait ends");
        assert_eq!(backoff.failed(peer, t0 + Duration::from_secs(2)), Some(Duration::from_secs(2)));
        assert_eq!(backoff.failed(peer, t0 + Duration::from_secs(2)), Some(Duration::from_secs(4)));
        assert_eq!(backoff.failed(peer, t0 + Duration::from_secs(2)), Some(Duration::from_secs(5)), "capped");
        let other: IpAddr = [127, 0, 0, 2].into();
        assert_eq!(backoff.blocked(other, t0), None, "per address");
        backoff.succeeded(peer);
        assert_eq!(backoff.blocked(peer, t0 + Duration::from_secs(2)), None);
    }
}
