//! Deliveries packed for `on-deliver` and `take-deliveries`, straight from
//! the routed messages.
//!
//! The layout is `packed-deliveries` in the WIT, written by the
//! `sandport-deliveries` crate that the guest SDK reads it with. Fields are
//! copied from the stored message into the batch, and the batch once into
//! the guest; nothing is cloned per delivery.

use sandport_deliveries::{Delivery, Message, Qos as PackedQos, TooLarge, pack};

use crate::store::StoredMessage;
use crate::wasm::bindings::types::Qos;

/// What the host decides per delivery; the rest comes from the message.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryPlan {
    pub subscription: u32,
    pub id: Option<u64>,
    /// After the subscription's ceiling.
    pub qos: Qos,
    /// What is left of the message's expiry.
    pub expiry_secs: Option<u32>,
    pub from_retained: bool,
    pub redelivered: bool,
}

impl DeliveryPlan {
    /// Append the delivery of `stored` this plan describes to `batch`.
    ///
    /// Fails only for a field of 4 GiB or more, which no message has: each
    /// came out of a guest's 32-bit memory.
    pub fn pack(&self, stored: &StoredMessage, batch: &mut Vec<u8>) -> Result<(), TooLarge> {
        let message = &stored.message;
        let delivery = Delivery {
            subscription: self.subscription,
            id: self.id,
            message: Message {
                topic: &message.topic,
                payload: &message.payload,
                headers: message.headers.as_slice(),
                reply_to: message.reply_to.as_deref(),
                correlation: message.correlation.as_deref(),
                content_type: message.content_type.as_deref(),
                utf8_payload: message.utf8_payload,
                expiry_secs: self.expiry_secs,
                retain: message.retain,
                qos: match self.qos {
                    Qos::AtMostOnce => PackedQos::AtMostOnce,
                    Qos::AtLeastOnce => PackedQos::AtLeastOnce,
                    Qos::ExactlyOnce => PackedQos::ExactlyOnce,
                },
            },
            from_retained: self.from_retained,
            redelivered: self.redelivered,
        };
        pack(batch, &delivery)
    }
}
