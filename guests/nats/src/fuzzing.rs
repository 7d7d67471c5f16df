//! Entry point for fuzzers (`fuzz/`) and the fuzz smoke test: run the
//! operation reader and the subject mapping on arbitrary bytes and
//! check their invariants. Pure: no host calls.

use crate::{subject, wire};

/// Payload limit used while fuzzing, small so limits are reached.
const MAX_PAYLOAD: usize = 4096;

/// Scan `data` into frames, parse each, and map any subject both ways.
pub fn stream(data: &[u8]) {
    let mut frames = wire::Frames::new(data, MAX_PAYLOAD);
    let mut at = 0usize;
    while frames.next().is_some() {
        assert!(frames.handled() > at, "an operation of no bytes");
        at = frames.handled();
        assert!(at <= data.len(), "an operation beyond the buffer");
    }
    if let Some(needs) = frames.needs() {
        assert!(needs as usize > data.len() - at, "asks for bytes it already has");
    }
    let _ = wire::parse_headers(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(topic) = subject::to_topic(text, subject::Wildcards::Literal) {
            assert_eq!(subject::from_topic(&topic), text, "subject -> topic -> subject");
        }
        let _ = subject::to_topic(text, subject::Wildcards::Match);
        let _ = subject::matches(text, "a.b.c");
    }
}
