//! Packed deliveries: how the host hands routed messages to a guest.
//!
//! `on-deliver` and `take-deliveries` carry a batch of deliveries as one
//! byte buffer (the WIT type `packed-deliveries`) rather than a list of
//! records. Lowering a record of strings and lists into a guest costs a call
//! into the guest's allocator per field and a lookup of its memory per
//! scalar, and the guest frees each field again afterwards; a buffer costs
//! one allocation and one copy per batch, and the guest reads the fields in
//! place. The host packs with [`pack`]; a guest reads with [`Deliveries`].
//!
//! The layout is the contract's: `packed-deliveries` in `wit/protocol.wit`
//! describes it field by field for guests in any language. This crate is its
//! one implementation in Rust, so host and SDK cannot disagree on it.

#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

#[doc(hidden)]
pub mod fuzzing;
mod pack;
mod read;

pub use pack::{PackHeaders, TooLarge, pack};
pub use read::{Deliveries, HeaderIter};

/// Bytes of the fixed part of a packed delivery: subscription, flags,
/// delivery id, expiry, then six lengths and counts.
pub const FIXED_BYTES: usize = 44;

// The flag bits.

pub(crate) const HAS_ID: u32 = 1 << 0;
pub(crate) const FROM_RETAINED: u32 = 1 << 1;
pub(crate) const REDELIVERED: u32 = 1 << 2;
pub(crate) const RETAIN: u32 = 1 << 3;
pub(crate) const UTF8_PAYLOAD: u32 = 1 << 4;
pub(crate) const HAS_EXPIRY: u32 = 1 << 5;
pub(crate) const HAS_REPLY_TO: u32 = 1 << 6;
pub(crate) const HAS_CORRELATION: u32 = 1 << 7;
pub(crate) const HAS_CONTENT_TYPE: u32 = 1 << 8;
pub(crate) const QOS_SHIFT: u32 = 16;
pub(crate) const QOS_MASK: u32 = 0b11 << QOS_SHIFT;
pub(crate) const KNOWN_FLAGS: u32 = HAS_ID
    | FROM_RETAINED
    | REDELIVERED
    | RETAIN
    | UTF8_PAYLOAD
    | HAS_EXPIRY
    | HAS_REPLY_TO
    | HAS_CORRELATION
    | HAS_CONTENT_TYPE
    | QOS_MASK;

/// Delivery guarantee, as the WIT `qos` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
    ExactlyOnce,
}

/// One delivery: a message for one of the connection's subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery<'a, H = Headers<'a>> {
    /// The id `host.subscribe` returned for the matching subscription.
    pub subscription: u32,
    /// Present for at-least-once deliveries: pass it to `host.ack`.
    pub id: Option<u64>,
    /// The message; its `qos` is already capped by the subscription's.
    pub message: Message<'a, H>,
    /// From the retained store because of a new subscription.
    pub from_retained: bool,
    /// Handed out before without an ack.
    pub redelivered: bool,
}

/// The message of a delivery, borrowed from the packed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a, H = Headers<'a>> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    /// Name/value pairs in order; names may repeat.
    pub headers: H,
    pub reply_to: Option<&'a str>,
    pub correlation: Option<&'a [u8]>,
    pub content_type: Option<&'a str>,
    pub utf8_payload: bool,
    /// Seconds left before it expires.
    pub expiry_secs: Option<u32>,
    pub retain: bool,
    pub qos: Qos,
}

/// The headers of a packed message, read as they are iterated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers<'a> {
    pub(crate) count: u32,
    pub(crate) packed: &'a [u8],
}

impl<'a> Headers<'a> {
    /// No headers.
    pub const EMPTY: Headers<'static> = Headers { count: 0, packed: &[] };

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The `(name, value)` pairs, in order.
    pub fn iter(&self) -> HeaderIter<'a> {
        HeaderIter { left: self.count, rest: self.packed }
    }
}

impl<'a> IntoIterator for Headers<'a> {
    type Item = (&'a str, &'a str);
    type IntoIter = HeaderIter<'a>;

    fn into_iter(self) -> HeaderIter<'a> {
        self.iter()
    }
}

#[cfg(test)]
mod tests;
