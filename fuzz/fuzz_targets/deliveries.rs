//! Fuzz target: packed deliveries as guests read them; what is read packs
//! back to the same bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sandport_deliveries::fuzzing::batch(data));
