//! Packing deliveries: the host's side of the layout.

use alloc::vec::Vec;

use crate::{
    Delivery, FIXED_BYTES, FROM_RETAINED, HAS_CONTENT_TYPE, HAS_CORRELATION, HAS_EXPIRY, HAS_ID,
    HAS_REPLY_TO, Headers, QOS_SHIFT, Qos, REDELIVERED, RETAIN, UTF8_PAYLOAD,
};

/// Headers the host can pack: anything that lists name/value pairs.
pub trait PackHeaders {
    /// How many pairs.
    fn count(&self) -> usize;
    /// The pairs, in order; exactly [`count`](Self::count) of them.
    fn pairs(&self) -> impl Iterator<Item = (&str, &str)>;
}

impl<N: AsRef<str>, V: AsRef<str>> PackHeaders for &[(N, V)] {
    fn count(&self) -> usize {
        self.len()
    }

    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.iter().map(|(name, value)| (name.as_ref(), value.as_ref()))
    }
}

impl PackHeaders for Headers<'_> {
    fn count(&self) -> usize {
        self.len()
    }

    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.iter()
    }
}

/// A field longer than a packed length can say (4 GiB); the delivery was
/// not packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

impl core::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("a delivery field is longer than 4 GiB")
    }
}

impl core::error::Error for TooLarge {}

/// Append `delivery` to `out` in the packed layout. On error `out` is as it was.
pub fn pack<H: PackHeaders>(out: &mut Vec<u8>, delivery: &Delivery<'_, H>) -> Result<(), TooLarge> {
    let message = &delivery.message;
    let len = |bytes: usize| u32::try_from(bytes).map_err(|_| TooLarge);
    let reply_to = message.reply_to.unwrap_or_default();
    let correlation = message.correlation.unwrap_or_default();
    let content_type = message.content_type.unwrap_or_default();
    let lengths = [
        len(message.topic.len())?,
        len(message.payload.len())?,
        len(reply_to.len())?,
        len(correlation.len())?,
        len(content_type.len())?,
        len(message.headers.count())?,
    ];
    let mut header_bytes = 0usize;
    for (name, value) in message.headers.pairs() {
        len(name.len())?;
        len(value.len())?;
        header_bytes += 8 + name.len() + value.len();
    }

    let mut flags = match message.qos {
        Qos::AtMostOnce => 0,
        Qos::AtLeastOnce => 1,
        Qos::ExactlyOnce => 2,
    } << QOS_SHIFT;
    for (set, flag) in [
        (delivery.id.is_some(), HAS_ID),
        (delivery.from_retained, FROM_RETAINED),
        (delivery.redelivered, REDELIVERED),
        (message.retain, RETAIN),
        (message.utf8_payload, UTF8_PAYLOAD),
        (message.expiry_secs.is_some(), HAS_EXPIRY),
        (message.reply_to.is_some(), HAS_REPLY_TO),
        (message.correlation.is_some(), HAS_CORRELATION),
        (message.content_type.is_some(), HAS_CONTENT_TYPE),
    ] {
        if set {
            flags |= flag;
        }
    }

    let variable = message.topic.len()
        + message.payload.len()
        + reply_to.len()
        + correlation.len()
        + content_type.len()
        + header_bytes;
    out.reserve(FIXED_BYTES + variable);
    out.extend_from_slice(&delivery.subscription.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&delivery.id.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&message.expiry_secs.unwrap_or(0).to_le_bytes());
    for length in lengths {
        out.extend_from_slice(&length.to_le_bytes());
    }
    out.extend_from_slice(message.topic.as_bytes());
    out.extend_from_slice(message.payload);
    out.extend_from_slice(reply_to.as_bytes());
    out.extend_from_slice(correlation);
    out.extend_from_slice(content_type.as_bytes());
    for (name, value) in message.headers.pairs() {
        // Lengths were checked above.
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    Ok(())
}
