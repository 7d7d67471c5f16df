//! Fuzz target: the host framers (delimiter, length prefix, varint).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sandport_framing::fuzzing::stream(data));
