//! How much CPU guest code itself takes, estimated cheaply.
//!
//! One guest call in [`SAMPLE_EVERY`] is measured: the thread CPU time of
//! each of its polls (so waits and epoch yields between polls do not count),
//! minus the time the poll spent in host functions (publish, routing, send),
//! which each host function clocks with a [`HostTime`] while a measured poll
//! runs on its thread. What remains is the guest's own code and the
//! boundary: lowering arguments into it and lifting what it passes out.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::time::Instant;

/// One guest call in this many is measured: reading a thread's CPU clock is
/// a system call (~0.5 µs here), too dear for every call.
pub const SAMPLE_EVERY: u32 = 32;

thread_local! {
    static CALLS_ON_THREAD: Cell<u32> = const { Cell::new(0) };
    /// Nanoseconds spent in host functions by the measured poll running on
    /// this thread; `None` when none is.
    static HOST_NANOS: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Whether the next guest call on this thread is measured.
pub fn next_call_sampled() -> bool {
    CALLS_ON_THREAD.with(|calls| {
        let n = calls.get().wrapping_add(1);
        calls.set(n);
        n % SAMPLE_EVERY == 0
    })
}

/// Await a guest call; when it is `measured`, also return its guest CPU
/// time: the thread CPU time of its polls less the time they spent in host
/// functions. Each poll runs on one thread, so this counts the call and not
/// the waits between polls.
pub async fn guest_time<F: Future>(call: F, measured: bool) -> (F::Output, Option<u64>) {
    if !measured {
        return (call.await, None);
    }
    let mut call = pin!(call);
    let mut spent = 0;
    let output = std::future::poll_fn(|cx| {
        HOST_NANOS.set(Some(0));
        let started = thread_cpu_nanos();
        let poll = call.as_mut().poll(cx);
        let total = thread_cpu_nanos().saturating_sub(started);
        let host = HOST_NANOS.take().unwrap_or(0);
        spent += total.saturating_sub(host);
        poll
    })
    .await;
    (output, Some(spent))
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

/// Clocks one host function while a measured poll runs on this thread (a
/// monotonic clock: a host function runs within one poll on one thread, and
/// this clock costs no system call). Create it first thing; it counts until
/// dropped.
pub struct HostTime(Option<Instant>);

impl HostTime {
    #[inline]
    pub fn enter() -> Self {
        HostTime(HOST_NANOS.get().map(|_| Instant::now()))
    }
}

impl Drop for HostTime {
    fn drop(&mut self) {
        if let Some(entered) = self.0
            && let Some(spent) = HOST_NANOS.get()
        {
            HOST_NANOS.set(Some(spent + entered.elapsed().as_nanos() as u64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_functions_are_clocked_only_inside_a_measured_poll() {
        {
            let _outside = HostTime::enter();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(HOST_NANOS.get(), None, "nothing is clocked outside a measured poll");

        HOST_NANOS.set(Some(0));
        {
            let _host = HostTime::enter();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        let spent = HOST_NANOS.take().unwrap();
        assert!((5_000_000..1_000_000_000).contains(&spent), "{spent} ns");
    }

    /// Spin for this much of the thread's own CPU time.
    fn spin(ms: u64) {
        let until = thread_cpu_nanos() + ms * 1_000_000;
        while thread_cpu_nanos() < until {
            std::hint::spin_loop();
        }
    }

    #[tokio::test]
    async fn time_in_host_functions_is_not_the_guest_s() {
        let (_, spent) = guest_time(
            async {
                spin(5);
                let _host = HostTime::enter();
                spin(30);
            },
            true,
        )
        .await;
        let spent = spent.expect("measured");
        // 35 ms of CPU in the poll, at least 30 of them (wall clock) in the host.
        assert!(spent < 10_000_000, "{spent} ns counted as the guest's");
    }

    #[test]
    fn one_call_in_the_sampling_period_is_measured() {
        let sampled = (0..SAMPLE_EVERY * 4).filter(|_| next_call_sampled()).count();
        assert_eq!(sampled, 4);
    }

    #[tokio::test]
    async fn polls_are_timed_and_waits_between_them_are_not() {
        let work = async {
            spin(5);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        let (_, spent) = guest_time(work, true).await;
        let spent = spent.expect("measured");
        assert!(
            (5_000_000..20_000_000).contains(&spent),
            "{spent} ns of CPU for 5 ms of work and a 50 ms sleep"
        );
        assert_eq!(guest_time(async {}, false).await.1, None, "an unmeasured call is not timed");
    }
}
