//! Entry point for fuzzers (`fuzz/`) and the fuzz smoke test: run the
//! command scanner and argument decoder on arbitrary bytes and check their
//! invariants. Pure: no host calls.

use crate::wire;

/// Bulk limit used while fuzzing, small so limits are reached.
const MAX_BULK: usize = 4096;

/// Scan `data` into commands and split each into arguments.
pub fn stream(data: &[u8]) {
    let Ok((complete, needs)) = wire::scan(data, MAX_BULK) else { return };
    let mut at = 0usize;
    for len in complete {
        let len = len as usize;
        assert!(len > 0, "empty frame");
        assert!(at + len <= data.len(), "frame beyond the buffer");
        let _ = wire::arguments(&data[at..at + len]);
        at += len;
    }
    if let Some(needs) = needs {
        assert!(needs as usize > data.len() - at, "asks for bytes it already has");
    }
}
