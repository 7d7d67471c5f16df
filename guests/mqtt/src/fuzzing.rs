//! Entry point for fuzzers (`fuzz/`) and the fuzz smoke test: run the
//! decoders on arbitrary bytes, for every protocol level, and check the
//! invariants that must hold whatever the input. Pure: no host calls.

use crate::codec::{Reader, kind, split};
use crate::packets::{self, OutgoingPublish};
use crate::properties::{Context, Properties};

/// Decode `data` as one MQTT packet (and as bare properties), then check
/// that an encoded PUBLISH decodes back to what was written.
pub fn packet(data: &[u8]) {
    let _ = crate::probe(data);
    if let Ok((packet, flags, body)) = split(data) {
        for v5 in [false, true] {
            match packet {
                kind::CONNECT => {
                    let mut r = Reader::new(body);
                    if let Ok((_, level)) = packets::connect_header(&mut r) {
                        let _ = packets::connect(&mut r, level);
                    }
                }
                kind::PUBLISH => {
                    if let Ok(publish) = packets::publish(flags, body, v5) {
                        assert!(publish.qos < 3);
                        assert_eq!(publish.packet_id.is_some(), publish.qos > 0);
                    }
                }
                kind::SUBSCRIBE => {
                    if let Ok(subscribe) = packets::subscribe(flags, body, v5) {
                        assert!(!subscribe.filters.is_empty());
                        assert!(subscribe.filters.iter().all(|f| f.qos < 3 && f.retain_handling < 3));
                    }
                }
                kind::UNSUBSCRIBE => {
                    let _ = packets::unsubscribe(flags, body, v5);
                }
                kind::PUBACK..=kind::PUBCOMP => {
                    let _ = packets::ack(flags, flags, body, v5, "ack");
                }
                kind::DISCONNECT => {
                    let _ = packets::disconnect(flags, body, v5);
                }
                _ => {}
            }
        }
    }
    for context in
        [Context::Connect, Context::Will, Context::Publish, Context::Subscribe, Context::Disconnect]
    {
        let _ = Properties::decode(&mut Reader::new(data), context);
    }
    round_trip(data);
}

/// Encode a PUBLISH from pieces of `data` and decode it again.
fn round_trip(data: &[u8]) {
    let split_at = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let (topic, payload) = data.split_at(split_at);
    let Ok(topic) = std::str::from_utf8(topic) else { return };
    if topic.is_empty() || topic.contains(['+', '#', '\0']) {
        return;
    }
    let qos = data.len() as u8 % 3;
    let packet_id = (qos > 0).then_some(7);
    let publish =
        OutgoingPublish { dup: false, qos, retain: true, topic, packet_id, properties: None, payload };
    let mut out = Vec::new();
    publish.write(&mut out);
    assert_eq!(out.len(), publish.size());
    let (packet, flags, body) = split(&out).expect("own packet splits");
    assert_eq!(packet, kind::PUBLISH);
    let decoded = packets::publish(flags, body, false).expect("own packet decodes");
    assert_eq!(
        (decoded.topic, decoded.payload, decoded.qos, decoded.packet_id),
        (topic, payload, qos, packet_id)
    );
}
