//! Counters per protocol: connections, guest faults, traffic.
//!
//! Plain atomics, read by tests and logged at shutdown; an exporter can be
//! put on top without touching the call sites.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident: $doc:literal,)*) => {
        /// Counters of one protocol.
        #[derive(Debug, Default)]
        pub struct ProtocolMetrics {
            $(#[doc = $doc] pub $name: AtomicU64,)*
        }

        impl ProtocolMetrics {
            /// Current values, by name.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    connections_opened: "Connections handed to this protocol.",
    connections_refused: "Connections refused at the connection cap.",
    connections_active: "Connections open now.",
    frames_in: "Frames passed to the guest.",
    deliveries_out: "Deliveries passed to the guest.",
    deliveries_dropped: "Deliveries dropped because a client's buffer was full.",
    slow_consumers: "Connections closed because the client did not keep up with at-least-once deliveries.",
    publishes: "Messages the guest published; added when the call that published them ends.",
    faults_deadline: "Guest calls stopped at the deadline.",
    faults_memory: "Guests that ran out of memory.",
    faults_trap: "Guest traps (panics, unreachable, stack overflow).",
    faults_violation: "Guests stopped for breaking host rules (floods, bad calls).",
    framing_errors: "Connections closed for malformed or oversized frames, or frames that took too long.",
    breaker_trips: "Times the crash-loop breaker opened after repeated guest faults.",
    auth_failures: "Authentications refused for bad or missing credentials.",
    auth_blocked: "Authentications refused unchecked because the address is backing off.",
    deliveries_denied: "Deliveries withheld because the subscriber's access rules do not allow the topic.",
    protocol_errors: "Connections the guest closed because a frame broke its protocol (`on-frames` error).",
    guest_calls: "Calls into guest instances.",
    guest_cpu_nanos: "CPU time in guest code (guest calls less the host functions they call), in nanoseconds; estimated from every 32nd call.",
}

impl ProtocolMetrics {
    /// Add one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The value of one counter by name.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.snapshot().into_iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}
