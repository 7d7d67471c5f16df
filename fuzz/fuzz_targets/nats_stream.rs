//! Fuzz target: the NATS guest's frame scanner, parser and subject mapping.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sandport_guest_nats::fuzzing::stream(data));
