//! Entry point for fuzzers (`fuzz/`) and the fuzz smoke test: run the
//! command scanner and argument decoder on arbitrary bytes and check their
//! invariants. Pure: no host calls.

use crate::wire;

/// Bulk limit used while fuzzing, small so limits are reached.
const MAX_BULK: usize = 4096;

/// Scan `data` into commands and split each into arguments.
pub fn stream(data: &[u8]) {
    let mut frames = wire::Frames::new(data, MAX_BULK);
    let mut args = wire::Args::default();
    let mut at = 0usize;
    while frames.next_command(&mut args) {
        let frame = &data[at..frames.handled()];
        assert!(!frame.is_empty(), "empty frame");
        let quoted = args.is_quoted();
        args.with(|args| {
            if quoted {
                // Unescaping only shortens: every word is at most its line.
                assert!(
                    args.iter().all(|arg| arg.len() < frame.len()),
                    "an unquoted word longer than its line"
                );
            } else {
                let inside = |arg: &&[u8]| frame.as_ptr_range().contains(&arg.as_ptr()) || arg.is_empty();
                assert!(args.iter().all(inside), "arguments lie within their command");
            }
        });
        at = frames.handled();
    }
    assert!(at <= data.len(), "commands beyond the buffer");
    if let Some(needs) = frames.needs() {
        assert!(needs as usize > data.len() - at, "asks for bytes it already has");
    }
}
