//! Durable append + ack throughput of the embedded store (redb, fsync on),
//! through the group-committing writer.
//!
//! `cargo bench -p sandport --bench store`

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sandport::config::{Storage, StorageEngine};
use sandport::store::{Op, QueuedRecord, Store, StoredMessage};
use sandport::wasm::bindings::types::{Message, Qos};

fn record(seq: u64) -> QueuedRecord {
    QueuedRecord {
        subscription: 1,
        from_retained: false,
        message: StoredMessage {
            published_at: 0,
            message: Message { qos: Qos::AtLeastOnce, ..Message::new(format!("bench/{seq}"), vec![0; 64]) },
        },
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage { engine: StorageEngine::Embedded, ..Storage::default() };
    let (store, _) = Store::open(&storage, dir.path()).expect("store");
    let mut seq = 0u64;
    let mut group = c.benchmark_group("store");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    // Each iteration: 1000 messages appended and acknowledged by concurrent
    // submitters (as connections do), the caller waiting only at the end.
    group.bench_function("1000 x (append + ack), 64 B, fsync", |b| {
        b.iter_custom(|iterations| {
            let started = Instant::now();
            for _ in 0..iterations {
                let first = seq;
                for _ in 0..1000 {
                    seq += 1;
                    store.submit(vec![Op::Enqueue { key: "bench".into(), seq, record: record(seq) }]);
                }
                for s in first + 1..=seq {
                    store.submit(vec![Op::Dequeue { key: "bench".into(), seq: s }]);
                }
                runtime.block_on(store.wait(store.barrier())).expect("durable");
            }
            started.elapsed()
        })
    });
    // The latency-bound case: one message at a time, each waiting for its
    // own commit before the next (a single publisher with a window of one).
    group.bench_function("append + wait + ack, one at a time, fsync", |b| {
        b.iter(|| {
            seq += 1;
            let ticket = store.submit(vec![Op::Enqueue { key: "bench".into(), seq, record: record(seq) }]);
            runtime.block_on(store.wait(ticket)).expect("durable");
            store.submit(vec![Op::Dequeue { key: "bench".into(), seq }]);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
