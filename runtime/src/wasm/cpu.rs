//! How much CPU guest code itself takes, estimated cheaply.
//!
//! One guest call in [`SAMPLE_EVERY`] is measured: the thread CPU time of
//! each of its polls (so waits and epoch yields between polls do not count),
//! minus the time it spent in host functions (publish, routing, send), which
//! a wasmtime call hook clocks on the way out of the guest and back in. What
//! remains is the guest's own code and the boundary: lowering arguments into
//! it and lifting what it passes out.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::time::Instant;

use wasmtime::CallHook;

/// One guest call in this many is measured: reading a thread's CPU clock is
/// a system call (~0.5 µs here), too dear for every call.
pub const SAMPLE_EVERY: u32 = 32;

thread_local! {
    static CALLS_ON_THREAD: Cell<u32> = const { Cell::new(0) };
}

/// Whether the next guest call on this thread is measured.
pub fn next_call_sampled() -> bool {
    CALLS_ON_THREAD.with(|calls| {
        let n = calls.get().wrapping_add(1);
        calls.set(n);
        n % SAMPLE_EVERY == 0
    })
}

/// Await `call`, summing the thread CPU time of its polls. Each poll runs on
/// one thread, so this counts the call and not the waits between polls.
pub async fn cpu_of_polls<F: Future>(call: F) -> (F::Output, u64) {
    let mut call = pin!(call);
    let mut spent = 0;
    let output = std::future::poll_fn(|cx| {
        let started = thread_cpu_nanos();
        let poll = call.as_mut().poll(cx);
        spent += thread_cpu_nanos().saturating_sub(started);
        poll
    })
    .await;
    (output, spent)
}

/// CPU time of the calling thread.
fn thread_cpu_nanos() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec for the call to write.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if status != 0 {
        return 0;
    }
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Time a measured call spends in host functions; idle (two comparisons per
/// host call) when the call is not measured.
#[derive(Debug, Default)]
pub struct HostClock {
    running: bool,
    entered: Option<Instant>,
    spent_nanos: u64,
}

impl HostClock {
    /// Start timing host functions for the call about to be made.
    pub fn start(&mut self) {
        *self = HostClock { running: true, ..HostClock::default() };
    }

    /// Stop, returning the nanoseconds spent in host functions.
    pub fn stop(&mut self) -> u64 {
        let spent = self.spent_nanos;
        *self = HostClock::default();
        spent
    }

    /// The store's call hook: the guest calls a host function, or it returns.
    /// (A monotonic clock, not the thread's CPU clock: a host function runs
    /// within one poll on one thread, and this clock costs no system call.)
    pub fn on_transition(&mut self, hook: CallHook) {
        if !self.running {
            return;
        }
        match hook {
            CallHook::CallingHost => self.entered = Some(Instant::now()),
            CallHook::ReturningFromHost => {
                if let Some(entered) = self.entered.take() {
                    self.spent_nanos += entered.elapsed().as_nanos() as u64;
                }
            }
            CallHook::CallingWasm | CallHook::ReturningFromWasm => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_time_between_calling_and_returning_from_the_host_counts() {
        let mut clock = HostClock::default();
        clock.on_transition(CallHook::CallingHost);
        std::thread::sleep(std::time::Duration::from_millis(5));
        clock.on_transition(CallHook::ReturningFromHost);
        assert_eq!(clock.stop(), 0, "not started: nothing is timed");

        clock.start();
        clock.on_transition(CallHook::CallingWasm);
        clock.on_transition(CallHook::CallingHost);
        std::thread::sleep(std::time::Duration::from_millis(5));
        clock.on_transition(CallHook::ReturningFromHost);
        std::thread::sleep(std::time::Duration::from_millis(5));
        clock.on_transition(CallHook::ReturningFromWasm);
        let spent = clock.stop();
        assert!((5_000_000..50_000_000).contains(&spent), "{spent} ns");
        assert_eq!(clock.stop(), 0, "stopping resets");
    }

    #[test]
    fn one_call_in_the_sampling_period_is_measured() {
        let sampled = (0..SAMPLE_EVERY * 4).filter(|_| next_call_sampled()).count();
        assert_eq!(sampled, 4);
    }

    #[tokio::test]
    async fn polls_are_timed_and_waits_between_them_are_not() {
        let (_, spent) = cpu_of_polls(tokio::time::sleep(std::time::Duration::from_millis(50))).await;
        assert!(spent < 20_000_000, "{spent} ns of CPU for a 50 ms sleep");
    }
}
