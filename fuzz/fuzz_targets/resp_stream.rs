//! Fuzz target: the RESP guest's command scanner and argument decoder.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sandport_guest_resp::fuzzing::stream(data));
