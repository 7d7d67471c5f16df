//! One guest instance and the calls into it.
//!
//! Every call gets the protocol's deadline in epoch ticks; past one tick the
//! guest yields to other tasks, past the budget it is interrupted. Any trap
//! poisons the instance: the connection ends and the store is dropped, which
//! frees its memory and nothing else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use crate::metrics::ProtocolMetrics;
use crate::wasm::bindings::types::{CloseReason, ConnectionInfo, ProbeResult, ProtocolInfo, StreamScan};
use crate::wasm::bindings::{Protocol as World, ProtocolPre as WorldPre};
use crate::wasm::cpu;
use crate::wasm::state::{GuestState, Violation};

/// Longest trap description kept for logs.
const MAX_FAULT_TEXT: usize = 512;

/// Why a guest instance was stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("guest call exceeded its deadline")]
    Deadline,
    #[error("guest ran out of memory (limit reached)")]
    OutOfMemory,
    #[error("guest broke a host rule: {0}")]
    Violation(String),
    #[error("guest trapped: {0}")]
    Trap(String),
    #[error("guest could not be instantiated: {0}")]
    Instantiate(String),
}

impl Fault {
    /// The counter this fault is recorded in.
    pub fn counter<'m>(&self, metrics: &'m ProtocolMetrics) -> &'m AtomicU64 {
        match self {
            Fault::Deadline => &metrics.faults_deadline,
            Fault::OutOfMemory => &metrics.faults_memory,
            Fault::Violation(_) => &metrics.faults_violation,
            Fault::Trap(_) | Fault::Instantiate(_) => &metrics.faults_trap,
        }
    }
}

/// A guest granted the clocks may wait on one inside a call, and the epoch
/// deadline counts only time spent running: such a call is also stopped
/// when it has taken this many times its deadline in wall time. (Running
/// calls yield at every tick and may wait that long for a worker on a busy
/// broker, so the bound is generous.)
const WAIT_BOUND_FACTOR: u32 = 10;

/// A live guest instance.
pub struct Guest {
    store: Store<GuestState>,
    world: World,
    deadline_ticks: u32,
    /// Longest a call may take in wall time, for guests that can wait
    /// inside a call (granted the clocks); `None` for the rest, which
    /// cannot.
    wait_bound: Option<Duration>,
    poisoned: bool,
}

/// Call one handler export with deadline and fault handling.
macro_rules! call_export {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {{
        let sampled = $self.begin_call()?;
        let wait_bound = $self.wait_bound;
        let handler = $self.world.sandport_protocol_handler();
        let call = cpu::guest_time(handler.$method(&mut $self.store, $($arg),*), sampled);
        // A call given up is abandoned; `end_call` poisons the instance.
        let (result, cpu) = bounded(wait_bound, call, || (Err(waited_too_long()), None)).await;
        $self.end_call(cpu, result)
    }};
}

/// Await `work`; past `bound`, when there is one, give it up and return
/// `given_up()` instead.
async fn bounded<T>(
    bound: Option<Duration>,
    work: impl Future<Output = T>,
    given_up: impl FnOnce() -> T,
) -> T {
    match bound {
        None => work.await,
        Some(bound) => tokio::time::timeout(bound, work).await.unwrap_or_else(|_| given_up()),
    }
}

/// A call past its wall-time bound counts as past its deadline.
fn waited_too_long() -> wasmtime::Error {
    wasmtime::Error::new(Trap::Interrupt)
}

impl Guest {
    /// Instantiate a guest with `state`.
    pub async fn instantiate(
        engine: &Engine,
        pre: &WorldPre<GuestState>,
        state: GuestState,
        deadline_ticks: u32,
    ) -> Result<Self, Fault> {
        let env = &state.env;
        let wait_bound =
            env.grants.clocks.then(|| env.limits.call_deadline().saturating_mul(WAIT_BOUND_FACTOR));
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(|mut store| {
            let state = store.data_mut();
            if state.ticks_left == 0 {
                return Ok(UpdateDeadline::Interrupt);
            }
            state.ticks_left -= 1;
            Ok(UpdateDeadline::Yield(1))
        });
        store.data_mut().ticks_left = deadline_ticks;
        store.set_epoch_deadline(1);
        let instantiated = bounded(wait_bound, pre.instantiate_async(&mut store), || Err(waited_too_long()));
        let world = match instantiated.await {
            Ok(found) => found,
            Err(e) => {
                let fault = classify(&store, e);
                return Err(match fault {
                    Fault::Trap(text) => Fault::Instantiate(text),
                    other => other,
                });
            }
        };
        Ok(Self { store, world, deadline_ticks, wait_bound, poisoned: false })
    }

    /// The store data: what the guest asked for, and its connection state.
    pub fn state(&self) -> &GuestState {
        self.store.data()
    }

    /// Mutable store data.
    pub fn state_mut(&mut self) -> &mut GuestState {
        self.store.data_mut()
    }

    /// Whether a call faulted; a poisoned guest cannot be called again.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Get ready for a call; returns whether its CPU time is measured.
    fn begin_call(&mut self) -> Result<bool, Fault> {
        if self.poisoned {
            return Err(Fault::Trap("called after an earlier fault".into()));
        }
        let ticks = self.deadline_ticks;
        let sampled = cpu::next_call_sampled();
        let state = self.store.data_mut();
        state.ticks_left = ticks;
        state.call_input = 0;
        self.store.set_epoch_deadline(1);
        Ok(sampled)
    }

    /// Account for a call (`cpu`: the guest CPU time of a measured call).
    fn end_call<T>(&mut self, cpu: Option<u64>, result: wasmtime::Result<T>) -> Result<T, Fault> {
        let state = self.store.data_mut();
        let publishes = std::mem::take(&mut state.publishes);
        let metrics = &state.env.metrics;
        ProtocolMetrics::bump(&metrics.guest_calls);
        if publishes > 0 {
            metrics.publishes.fetch_add(u64::from(publishes), Ordering::Relaxed);
        }
        if let Some(nanos) = cpu {
            metrics.guest_cpu_nanos.fetch_add(nanos * u64::from(cpu::SAMPLE_EVERY), Ordering::Relaxed);
        }
        result.map_err(|e| {
            self.poisoned = true;
            classify(&self.store, e)
        })
    }

    /// `describe`.
    pub async fn describe(&mut self) -> Result<ProtocolInfo, Fault> {
        call_export!(self.call_describe())
    }

    /// `probe`.
    pub async fn probe(&mut self, prefix: &[u8]) -> Result<ProbeResult, Fault> {
        call_export!(self.call_probe(prefix))
    }

    /// `on-stream`: the guest finds and handles the frames at the start of
    /// `data`; the inner error is the guest's reason to close.
    pub async fn on_stream(&mut self, data: &[u8]) -> Result<Result<StreamScan, String>, Fault> {
        call_export!(self.call_on_stream(data))
    }

    /// `on-open`.
    pub async fn on_open(&mut self, info: &ConnectionInfo) -> Result<(), Fault> {
        call_export!(self.call_on_open(info))
    }

    /// `on-frames`: the frames lie back to back in `data` and end at `ends`;
    /// the inner error is the guest's reason to close.
    pub async fn on_frames(&mut self, data: &[u8], ends: &[u32]) -> Result<Result<(), String>, Fault> {
        call_export!(self.call_on_frames(data, ends))
    }

    /// `on-deliver`: a batch of deliveries packed as `packed-deliveries`.
    pub async fn on_deliver(&mut self, batch: Vec<u8>) -> Result<(), Fault> {
        call_export!(self.call_on_deliver(&batch))
    }

    /// `on-timer`.
    pub async fn on_timer(&mut self) -> Result<(), Fault> {
        call_export!(self.call_on_timer())
    }

    /// `on-close`.
    pub async fn on_close(&mut self, reason: &CloseReason) -> Result<(), Fault> {
        call_export!(self.call_on_close(reason))
    }
}

/// Turn a call error into a fault, using what the store saw.
fn classify(store: &Store<GuestState>, error: wasmtime::Error) -> Fault {
    if let Some(violation) = error.downcast_ref::<Violation>() {
        return Fault::Violation(violation.0.clone());
    }
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        return Fault::Deadline;
    }
    if store.data().limiter.refused {
        return Fault::OutOfMemory;
    }
    // One log line: the trap and the guest function it hit, not the whole backtrace.
    let trap = error.downcast_ref::<Trap>().map(Trap::to_string);
    let function = error.downcast_ref::<wasmtime::WasmBacktrace>().and_then(|backtrace| {
        backtrace.frames().first().and_then(|frame| frame.func_name().map(str::to_string))
    });
    let mut text = match (trap, function) {
        (Some(trap), Some(function)) => format!("{trap} (in {function})"),
        (Some(trap), None) => trap,
        _ => format!("{error:#}")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" | "),
    };
    text.truncate(text.floor_char_boundary(MAX_FAULT_TEXT));
    Fault::Trap(text)
}
