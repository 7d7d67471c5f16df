//! Deliveries packed for `on-deliver` and `take-deliveries`, straight from
//! the routed messages.
//!
//! The layout is `packed-deliveries` in the WIT, written by the
//! `sandport-deliveries` crate that the guest SDK reads it with. Fields are
//! copied from the stored message into the batch, and the batch once into
//! the guest; nothing is cloned per delivery.

use sandport_deliveries::{Delivery, Message, Qos as PackedQos, TooLarge, pack};

use crate::mailbox::Routed;
use crate::wasm::bindings::types::Qos;

/// Append the delivery of `routed` to `batch`, with what the connection
/// decided for it: its delivery `id` and the `expiry_secs` left.
///
/// Fails only for a field of 4 GiB or more, which no message has: each
/// came out of a guest's 32-bit memory.
pub fn pack_routed(
    routed: &Routed,
    id: Option<u64>,
    expiry_secs: Option<u32>,
    batch: &mut Vec<u8>,
) -> Result<(), TooLarge> {
    let message = &routed.message.message;
    let delivery = Delivery {
        subscription: routed.subscription,
        id,
        message: Message {
            topic: &message.topic,
            payload: &message.payload,
            headers: message.headers.as_slice(),
            reply_to: message.reply_to.as_deref(),
            correlation: message.correlation.as_deref(),
            content_type: message.content_type.as_deref(),
            utf8_payload: message.utf8_payload,
            expiry_secs,
            retain: message.retain,
            // After the subscription's ceiling.
            qos: match routed.qos {
                Qos::AtMostOnce => PackedQos::AtMostOnce,
                Qos::AtLeastOnce => PackedQos::AtLeastOnce,
                Qos::ExactlyOnce => PackedQos::ExactlyOnce,
            },
        },
        from_retained: routed.from_retained,
        redelivered: routed.redelivered,
    };
    pack(batch, &delivery)
}
