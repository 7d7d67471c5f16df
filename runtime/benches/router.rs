//! Matching a publish against a router holding a million filters.
//!
//! `cargo bench -p sandport --bench router`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use sandport::mailbox::Mailbox;
use sandport::router::{Router, Subscription, Target};
use sandport::store::StoredMessage;
use sandport::wasm::bindings::types::{FilterKind, Message, Qos};

const FILTERS: u32 = 1_000_000;

fn message(topic: &str) -> Arc<StoredMessage> {
    Arc::new(StoredMessage { published_at: 0, message: Message::new(topic, vec![0; 64]) })
}

/// A router with a million filters: `site/S/device/D/+` for 1000 sites ×
/// 1000 devices, every hundredth one `site/S/device/D/#` instead.
fn populated() -> Router {
    // A zero-byte mailbox drops every delivery, so the benchmark measures
    // matching and hand-off, not memory growth.
    let (mailbox, _inbox) = Mailbox::new(1, 0);
    std::mem::forget(_inbox);
    let router = Router::default();
    let started = Instant::now();
    for i in 0..FILTERS {
        let last = if i % 100 == 0 { "#" } else { "+" };
        router.subscribe(Subscription {
            target: Target::Connection(mailbox.clone()),
            id: i,
            filter: format!("site/{}/device/{}/{last}", i % 1000, i / 1000),
            kind: FilterKind::Wildcard,
            max_qos: Qos::AtMostOnce,
            group: None,
            no_local: false,
        });
    }
    eprintln!("inserted {FILTERS} filters in {:?}", started.elapsed());
    router
}

fn bench(c: &mut Criterion) {
    let router = populated();
    let hit = message("site/7/device/42/temperature");
    let miss = message("elsewhere/7/device/42/temperature");
    c.bench_function("publish matching 1 of 1M filters", |b| {
        b.iter(|| black_box(router.publish(hit.clone(), 0)))
    });
    c.bench_function("publish matching none of 1M filters", |b| {
        b.iter(|| black_box(router.publish(miss.clone(), 0)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
