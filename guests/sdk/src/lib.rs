//! The guest SDK: Rust bindings for the `sandport:protocol` world.
//!
//! A protocol guest depends on this crate, implements [`Handler`] for a unit
//! struct and registers it with [`export!`]:
//!
//! ```ignore
//! use sandport_guest::{Handler, types::*};
//! struct MyProtocol;
//! impl Handler for MyProtocol { /* ... */ }
//! sandport_guest::export!(MyProtocol);
//! ```
//!
//! The bindings are generated once here from `wit/` so every guest of the
//! workspace shares one copy of the contract.

wit_bindgen::generate!({
    path: "../../wit",
    world: "protocol",
    pub_export_macro: true,
    export_macro_name: "export",
    default_bindings_module: "sandport_guest",
    additional_derives: [PartialEq, Eq],
    ownership: Borrowing { duplicate_if_necessary: true },
});

/// The trait a protocol implements: the `handler` interface of the world.
pub use exports::sandport::protocol::handler::Guest as Handler;
/// Functions the host offers (`send`, `publish`, `subscribe`, ...).
pub use sandport::protocol::host;
/// Types shared with the host.
pub use sandport::protocol::types;

/// The deliveries of `on-deliver` and `take-deliveries`, read in place from
/// their packed batch (`packed-deliveries` in the WIT).
pub mod delivery {
    pub use sandport_deliveries::{Deliveries, Delivery, HeaderIter, Headers, Message, Qos};
}

/// Read the deliveries of a packed batch: what `on-deliver` is given and
/// `host::take_deliveries` returns. Each borrows its topic, payload and
/// headers from `batch`.
///
/// A delivery's packed record has 44 bytes of fixed fields before its
/// topic and payload, more than most protocols' own framing of the same
/// message, so an output buffer of `batch.len()` bytes usually holds the
/// encoded batch: one allocation, where growing from empty copies it
/// several times over.
pub fn deliveries(batch: &[u8]) -> delivery::Deliveries<'_> {
    delivery::Deliveries::new(batch)
}

/// Hand every delivery already waiting for this connection to `each`, in
/// order, through `host::take_deliveries`: for a protocol whose server
/// writes a client's own messages before its answer to the publish (NATS
/// before `+OK` and `PONG`, Redis before the reply to `PUBLISH`).
pub fn take_waiting(mut each: impl FnMut(delivery::Delivery<'_>)) {
    /// Deliveries per host call; more are taken by the next.
    const PER_CALL: u32 = 256;
    loop {
        let batch = host::take_deliveries(PER_CALL);
        if batch.is_empty() {
            return;
        }
        for delivery in deliveries(&batch) {
            each(delivery);
        }
    }
}

impl From<delivery::Qos> for types::Qos {
    fn from(qos: delivery::Qos) -> Self {
        match qos {
            delivery::Qos::AtMostOnce => types::Qos::AtMostOnce,
            delivery::Qos::AtLeastOnce => types::Qos::AtLeastOnce,
            delivery::Qos::ExactlyOnce => types::Qos::ExactlyOnce,
        }
    }
}

/// The frames of an `on-frames` call: `data` split at `ends`. A guest that
/// gets bad ends (the host never sends them) sees the frames up to the first
/// bad one.
pub fn frames<'a>(data: &'a [u8], ends: &'a [u32]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut start = 0usize;
    ends.iter().map_while(move |&end| {
        let frame = data.get(start..end as usize)?;
        start = end as usize;
        Some(frame)
    })
}

/// `on-stream` for a protocol that declares a host framing: the host never
/// calls it, and if it did, the connection would close with this reason.
pub fn framed_by_host() -> Result<types::StreamScan, String> {
    Err("on-stream called, but this protocol's frames are split by the host".into())
}

/// `on-frames` for a protocol that frames its input itself (`on-stream`):
/// the host never calls it, and if it did, the connection would close.
pub fn framed_by_guest() -> Result<(), String> {
    Err("on-frames called, but this protocol finds its frames itself".into())
}

/// Read up to 18 decimal digits (nothing else: no sign, no spaces), the
/// lengths and counts of text protocols. 18 digits cannot overflow a `u64`,
/// so there is no checked arithmetic, which on wasm32 is a call to a 128-bit
/// multiply for every digit.
pub fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut value: u64 = 0;
    for &byte in digits {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value * 10 + u64::from(digit);
    }
    Some(value)
}

/// Append `n` in decimal: for the length fields of text protocols, written
/// on every message, where `format!` would cost an allocation each time.
pub fn put_decimal(out: &mut Vec<u8>, mut n: u64) {
    // One or two digits (most sizes and counts) are written directly: the
    // copy below has a length the compiler cannot see, so in wasm it is a
    // call out to the engine's `memory.copy`.
    if n < 10 {
        out.push(b'0' + n as u8);
        return;
    }
    if n < 100 {
        out.extend_from_slice(&[b'0' + (n / 10) as u8, b'0' + (n % 10) as u8]);
        return;
    }
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Most messages `host::publish_batch` takes in one call (the WIT says
/// so); a longer list stops the guest.
pub const MAX_PUBLISH_BATCH: usize = 1024;

/// A message with only the fields most protocols set, borrowing its topic
/// and payload (the host copies them when it takes the message); fill in the
/// rest with struct update syntax.
pub fn message<'a>(topic: &'a str, payload: &'a [u8]) -> types::Message<'a> {
    types::Message {
        topic,
        payload,
        headers: &[],
        reply_to: None,
        correlation: None,
        content_type: None,
        utf8_payload: false,
        expiry_secs: None,
        retain: false,
        qos: types::Qos::AtMostOnce,
    }
}

/// Subscription options for a plain `+`/`#` wildcard subscription at most once.
pub fn wildcard_subscription() -> types::SubscribeOptionsParam<'static> {
    types::SubscribeOptionsParam {
        kind: types::FilterKind::Wildcard,
        max_qos: types::Qos::AtMostOnce,
        group: None,
        no_local: false,
        retained: types::RetainedHandling::Send,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn decimals() {
        let mut out = Vec::new();
        for n in [0, 7, 9, 10, 42, 99, 100, 12_345, u64::MAX] {
            super::put_decimal(&mut out, n);
            out.push(b' ');
        }
        assert_eq!(out, b"0 7 9 10 42 99 100 12345 18446744073709551615 ");
    }

    #[test]
    fn decimals_are_parsed_from_digits_only() {
        assert_eq!(super::parse_decimal(b"0"), Some(0));
        assert_eq!(super::parse_decimal(b"999999999999999999"), Some(999_999_999_999_999_999));
        for text in [&b""[..], b"+1", b"-1", b" 1", b"1a", b"1000000000000000000"] {
            assert_eq!(super::parse_decimal(text), None, "{text:?}");
        }
    }

    #[test]
    fn frames_split_the_buffer_at_the_ends() {
        let frames: Vec<&[u8]> = super::frames(b"abcdef", &[1, 3, 6]).collect();
        assert_eq!(frames, [&b"a"[..], b"bc", b"def"]);
        assert_eq!(super::frames(b"abc", &[2, 1, 3]).count(), 1, "ends going backwards stop the frames");
        assert_eq!(super::frames(b"abc", &[4]).count(), 0, "an end past the data stops the frames");
    }
}
