//! The crash-loop breaker of one protocol: a guest that keeps faulting
//! (traps, deadlines, memory, rule breaks) is a broken or hostile guest, and
//! instantiating it again for every client only burns the broker. After
//! `max_faults` faults within `fault_window_ms` the breaker trips: new
//! connections of the protocol are refused (each with a log line) for
//! `fault_backoff_ms`, then it closes again by itself.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::Limits;

struct State {
    /// Times of the recent faults, oldest first (at most `max_faults`).
    faults: VecDeque<Instant>,
    open_until: Option<Instant>,
}

/// One protocol's breaker.
pub struct Breaker {
    max_faults: usize,
    window: Duration,
    backoff: Duration,
    state: Mutex<State>,
}

/// What recording a fault did.
#[derive(Debug, PartialEq, Eq)]
pub enum Tripped {
    No,
    /// The breaker opened now, for this long.
    Open(Duration),
}

impl Breaker {
    pub fn new(limits: &Limits) -> Self {
        Self {
            max_faults: limits.max_faults as usize,
            window: Duration::from_millis(limits.fault_window_ms),
            backoff: Duration::from_millis(limits.fault_backoff_ms),
            state: Mutex::new(State { faults: VecDeque::new(), open_until: None }),
        }
    }

    /// Record a guest fault at `now`.
    pub fn fault(&self, now: Instant) -> Tripped {
        let mut state = self.state.lock();
        if state.open_until.is_some_and(|until| now < until) {
            return Tripped::No;
        }
        state.faults.push_back(now);
        while state.faults.len() > self.max_faults {
            state.faults.pop_front();
        }
        let in_window = state.faults.front().is_some_and(|first| now.duration_since(*first) <= self.window);
        if state.faults.len() >= self.max_faults && in_window {
            state.faults.clear();
            state.open_until = Some(now + self.backoff);
            return Tripped::Open(self.backoff);
        }
        Tripped::No
    }

    /// How much longer new connections are refused, if the breaker is open.
    pub fn open_for(&self, now: Instant) -> Option<Duration> {
        let mut state = self.state.lock();
        match state.open_until {
            Some(until) if now < until => Some(until - now),
            Some(_) => {
                state.open_until = None;
                None
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(&Limits {
            max_faults: 3,
            fault_window_ms: 1000,
            fault_backoff_ms: 5000,
            ..Limits::default()
        })
    }

    #[test]
    fn trips_on_a_burst_and_closes_after_the_backoff() {
        let breaker = breaker();
        let t0 = Instant::now();
        assert_eq!(breaker.fault(t0), Tripped::No);
        assert_eq!(breaker.fault(t0 + Duration::from_millis(100)), Tripped::No);
        assert_eq!(breaker.fault(t0 + Duration::from_millis(200)), Tripped::Open(Duration::from_secs(5)));
        assert!(breaker.open_for(t0 + Duration::from_secs(1)).is_some());
        assert_eq!(breaker.open_for(t0 + Duration::from_secs(6)), None, "recovers by itself");
    }

    #[test]
    fn spread_out_faults_do_not_trip() {
        let breaker = breaker();
        let t0 = Instant::now();
        for i in 0..10 {
            assert_eq!(breaker.fault(t0 + Duration::from_millis(600 * i)), Tripped::No);
        }
    }
}
