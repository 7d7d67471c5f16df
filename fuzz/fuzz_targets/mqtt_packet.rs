//! Fuzz target: the MQTT guest's packet and property decoders.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sandport_guest_mqtt::fuzzing::packet(data));
