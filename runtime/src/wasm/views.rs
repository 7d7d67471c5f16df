//! Borrowed views of deliveries for `on-deliver`.
//!
//! The generated bindings take owned `Delivery` records, which would clone
//! every message (topic, payload, headers) before it is copied once more
//! into the guest. These views have the same component type and borrow from
//! the routed message instead, so a delivery is copied once: into the guest.

use wasmtime::component::{ComponentType, Lower};

use crate::store::StoredMessage;
use crate::wasm::bindings::types::Qos;

/// `types.message`, borrowed.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct MessageView<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub headers: &'a [(String, String)],
    #[component(name = "reply-to")]
    pub reply_to: Option<&'a str>,
    pub correlation: Option<&'a [u8]>,
    #[component(name = "content-type")]
    pub content_type: Option<&'a str>,
    #[component(name = "utf8-payload")]
    pub utf8_payload: bool,
    #[component(name = "expiry-secs")]
    pub expiry_secs: Option<u32>,
    pub retain: bool,
    pub qos: Qos,
}

/// `types.delivery`, borrowed.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct DeliveryView<'a> {
    pub subscription: u32,
    pub id: Option<u64>,
    pub message: MessageView<'a>,
    #[component(name = "from-retained")]
    pub from_retained: bool,
    pub redelivered: bool,
}

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
    /// The view of `stored` this plan describes.
    pub fn view<'a>(&self, stored: &'a StoredMessage) -> DeliveryView<'a> {
        let message = &stored.message;
        DeliveryView {
            subscription: self.subscription,
            id: self.id,
            message: MessageView {
                topic: &message.topic,
                payload: &message.payload,
                headers: &message.headers,
                reply_to: message.reply_to.as_deref(),
                correlation: message.correlation.as_deref(),
                content_type: message.content_type.as_deref(),
                utf8_payload: message.utf8_payload,
                expiry_secs: self.expiry_secs,
                retain: message.retain,
                qos: self.qos,
            },
            from_retained: self.from_retained,
            redelivered: self.redelivered,
        }
    }
}
