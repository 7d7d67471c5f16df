//! Host-side bindings of the `sandport:protocol` world, generated once here.
//!
//! Guest exports are called asynchronously so a long-running guest yields to
//! the tokio scheduler at every epoch tick instead of pinning a worker
//! thread. Host imports are synchronous (nothing in them waits) and
//! trappable, so a guest that breaks the rules is stopped on the spot.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "protocol",
    imports: { default: trappable },
    exports: { default: async },
    // Messages, sessions and options are stored with serde (see `store`).
    additional_derives: [serde::Serialize, serde::Deserialize],
});

pub use self::sandport::protocol::types;

impl types::Message {
    /// A message with a topic and payload and every other field at its
    /// default (at most once, not retained, no headers).
    pub fn new(topic: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            topic: topic.into(),
            payload: payload.into(),
            headers: Vec::new(),
            reply_to: None,
            correlation: None,
            content_type: None,
            utf8_payload: false,
            expiry_secs: None,
            retain: false,
            qos: types::Qos::AtMostOnce,
        }
    }
}
