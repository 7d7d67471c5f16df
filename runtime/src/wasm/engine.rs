//! The one wasmtime `Engine` of the broker and its epoch clock.
//!
//! Every guest instance comes from a pooling allocator sized from the config,
//! so instantiation is a few microseconds and memory per idle connection stays
//! small. Guest memories sit in guarded slots, so compiled guest code needs
//! no bounds checks, unless the address space for them cannot be reserved
//! ([`MemoryLayout`]). Per-call deadlines use epoch interruption: a thread
//! bumps the epoch every tick ([`epoch_tick`]), and each call gets a budget
//! of ticks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig, ProfilingStrategy,
};

/// Bounds of the epoch clock's period. Deadlines are counted in ticks, and
/// a guest that runs longer than one tick yields to other connections.
const MIN_EPOCH_TICK: Duration = Duration::from_millis(1);
const MAX_EPOCH_TICK: Duration = Duration::from_millis(10);

/// Ticks in the shortest call deadline: deadlines are kept to about a tenth.
const TICKS_PER_DEADLINE: u32 = 10;

/// Core instances one component may create (a Rust guest has the main module
/// plus a few adapter shims).
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 16;

/// Tables one component may create.
const MAX_TABLES_PER_COMPONENT: u32 = 8;

/// Largest table a guest may have, in elements.
pub const MAX_TABLE_ELEMENTS: usize = 20_000;

/// Fiber stacks in the pool, which bounds the connections served at once:
/// every store keeps the stack of its last call for the next one (wasmtime
/// 48 offers no way to hand it back early), so each connection holds one.
/// The pool protects a guard page per stack at start-up (two kernel mappings
/// each) and a live instance costs about four more (memory slot, its
/// copy-on-write image, table), so this many fit in the kernel's default
/// 65530 mappings per process (`vm.max_map_count`) with room to spare.
pub const MAX_FIBER_STACKS: u32 = 10_500;

/// Set (to anything) to write `/tmp/perf-PID.map`, so `perf report` names
/// the compiled guest functions.
pub const PERF_MAP_ENV: &str = "SANDPORT_PERF_MAP";

/// Sizing of the instance pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolSize {
    /// Guest instances alive at once, across all protocols.
    pub instances: u32,
    /// Largest linear memory any guest may have, in bytes.
    pub memory_bytes: usize,
}

/// How guest linear memories are laid out in the pool, which decides how
/// compiled guest code keeps its accesses inside its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLayout {
    /// Every memory slot reserves the whole 32-bit address range plus a
    /// guard region, so no guest load or store needs a bounds check: an
    /// access outside the memory lands on unmapped pages and traps. Costs
    /// 4 GiB plus a 32 MiB guard of address space per slot (not memory), so
    /// the slots are capped at [`MAX_FIBER_STACKS`], the bound on
    /// connections served at once anyway.
    Guarded,
    /// Slots sized to the largest guest memory: tens of thousands fit in
    /// any address space, and every guest access pays an explicit bounds
    /// check (a compare and a Spectre-safe select). Used when the guarded
    /// reservation is refused (a `ulimit -v`, several brokers in one
    /// process).
    Compact,
}

/// Guard region after each guarded slot: a guest access's static offset is
/// within it unless it is larger than this, so only such rare accesses keep
/// a bounds check (wasmtime's default guard).
const GUARD_BYTES: u64 = 32 << 20;

/// Address space a guarded slot reserves for the memory itself: every
/// address a 32-bit index can form, so none needs a check.
const GUARDED_RESERVATION: u64 = 1 << 32;

/// Build the engine all protocols share: with guarded memory slots when
/// the address space can be reserved, else with compact ones. The slots
/// hold no memory until a guest touches it.
pub fn build_engine(pool: PoolSize) -> wasmtime::Result<(Engine, MemoryLayout)> {
    match Engine::new(&engine_config(pool, MemoryLayout::Guarded)) {
        Ok(engine) => Ok((engine, MemoryLayout::Guarded)),
        Err(error) => {
            tracing::warn!(
                "guest memories are bounds-checked (slower): reserving guarded slots failed: {error:#}"
            );
            Ok((Engine::new(&engine_config(pool, MemoryLayout::Compact))?, MemoryLayout::Compact))
        }
    }
}

/// The engine's configuration for a pool laid out as `layout`.
fn engine_config(pool: PoolSize, layout: MemoryLayout) -> Config {
    let memory_slot = pool.memory_bytes.next_multiple_of(64 * 1024);
    let (total_memories, reservation, guard) = match layout {
        // Rust guests have one memory each; a guest with two halves the
        // connections served at once.
        MemoryLayout::Guarded => {
            (pool.instances.saturating_mul(2).min(MAX_FIBER_STACKS), GUARDED_RESERVATION, GUARD_BYTES)
        }
        MemoryLayout::Compact => (pool.instances.saturating_mul(2), memory_slot as u64, 64 * 1024),
    };
    let mut pooling = PoolingAllocationConfig::new();
    pooling
        .total_component_instances(pool.instances)
        .total_core_instances(pool.instances.saturating_mul(4))
        .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
        .total_memories(total_memories)
        .max_memories_per_component(2)
        .max_memory_size(memory_slot)
        .total_tables(pool.instances.saturating_mul(2))
        .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
        .table_elements(MAX_TABLE_ELEMENTS)
        .total_stacks(pool.instances.min(MAX_FIBER_STACKS))
        // Hand every page of a freed memory slot back. Keeping some resident
        // means zeroing the *lowest* addresses of the slot (wasmtime cannot
        // see which pages were used without PAGEMAP_SCAN), and for a Rust
        // guest that is the bottom of its stack, which nothing touches: each
        // reused slot then held 64 KiB of zeros, doubling the memory of a
        // connection that replaced one that closed (127 against 57 KiB).
        .linear_memory_keep_resident(0);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        // Guests use no component-model async; without it a call is ~3x cheaper.
        .concurrency_support(false)
        .epoch_interruption(true)
        .cranelift_opt_level(OptLevel::Speed)
        .memory_reservation(reservation)
        .memory_guard_size(guard)
        .memory_reservation_for_growth(0)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    if std::env::var_os(PERF_MAP_ENV).is_some() {
        // Names guest functions for `perf` (docs/benchmarks.md, "Profiling").
        config.profiler(ProfilingStrategy::PerfMap);
    }
    config
}

/// Period of the epoch clock when the shortest call deadline of any
/// protocol is `shortest`: a tenth of it, within 1 to 10 ms.
///
/// Every tick wakes the clock's thread, and on a busy machine that wake-up
/// preempts a worker: at 1 ms the clock cost about 2 % of a core. With the
/// default 100 ms deadline it ticks every 10 ms instead.
pub fn epoch_tick(shortest: Duration) -> Duration {
    (shortest / TICKS_PER_DEADLINE).clamp(MIN_EPOCH_TICK, MAX_EPOCH_TICK)
}

/// Advances the engine's epoch every tick until dropped.
pub struct EpochClock {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    tick: Duration,
}

impl EpochClock {
    /// Start the clock thread for `engine`, ticking every `tick`.
    pub fn start(engine: Engine, tick: Duration) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("sandport-epoch".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                engine.increment_epoch();
            }
        })?;
        Ok(Self { stop, thread: Some(thread), tick })
    }

    /// The call budget in ticks for `deadline`: at least one tick, so a
    /// deadline shorter than a tick is kept to within a tick.
    pub fn deadline_ticks(&self, deadline: Duration) -> u32 {
        let ticks = deadline.as_micros().div_ceil(self.tick.as_micros().max(1));
        ticks.clamp(1, u128::from(u32::MAX)) as u32
    }
}

impl Drop for EpochClock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL: PoolSize = PoolSize { instances: 8, memory_bytes: 1 << 20 };

    #[test]
    fn the_clock_ticks_a_tenth_of_the_shortest_deadline_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(epoch_tick(ms(100)), ms(10));
        assert_eq!(epoch_tick(ms(50)), ms(5));
        assert_eq!(epoch_tick(ms(1)), ms(1));
        assert_eq!(epoch_tick(ms(60_000)), ms(10));
    }

    #[test]
    fn deadlines_round_up_to_whole_ticks() {
        let (engine, _) = build_engine(POOL).expect("engine");
        let ms = Duration::from_millis;
        let clock = EpochClock::start(engine, ms(10)).expect("clock");
        assert_eq!(clock.deadline_ticks(ms(100)), 10);
        assert_eq!(clock.deadline_ticks(ms(105)), 11);
        assert_eq!(clock.deadline_ticks(ms(1)), 1);
    }

    #[test]
    fn memories_are_guarded_when_the_address_space_allows() {
        let (_engine, layout) = build_engine(POOL).expect("engine");
        assert_eq!(layout, MemoryLayout::Guarded);
    }
}
