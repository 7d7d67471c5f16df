//! Entry point for fuzzers (`fuzz/`) and the fuzz smoke test: read any
//! bytes as a packed batch and check that what was read packs back to the
//! bytes it came from.

use alloc::vec::Vec;

use crate::{Deliveries, pack};

/// Read `data` as a batch of deliveries and pack them again.
pub fn batch(data: &[u8]) {
    let mut deliveries = Deliveries::new(data);
    let mut repacked = Vec::new();
    for delivery in deliveries.by_ref() {
        assert!(delivery.message.headers.iter().count() == delivery.message.headers.len());
        pack(&mut repacked, &delivery).expect("a delivery that was read packs again");
    }
    let read = data.len() - deliveries.unread().len();
    assert_eq!(repacked, data[..read], "deliveries packed again differ from the bytes read");
    assert_eq!(deliveries.malformed(), read < data.len(), "stopped early without saying so");
}
