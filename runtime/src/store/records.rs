//! What the store keeps, in the shape it is serialised (postcard).

use serde::{Deserialize, Serialize};

use crate::wasm::bindings::types::{Message, SubscribeOptions};

/// A message with the time it was published (for expiry).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredMessage {
    pub message: Message,
    /// When it was published, in seconds since the Unix epoch; 0 for a
    /// message without an expiry, the only thing the time is used for.
    pub published_at: u64,
}

impl StoredMessage {
    /// A message published now. Only one that can expire reads the clock:
    /// publishing the others reads none (the clock was 2–3 % of the
    /// broker's CPU under a publish load).
    pub fn new(message: Message) -> Self {
        let published_at = if message.expiry_secs.is_some() { crate::sessions::unix_now() } else { 0 };
        Self { message, published_at }
    }

    /// Whether the message's expiry has passed at `now` (Unix seconds).
    pub fn expired(&self, now: u64) -> bool {
        self.message.expiry_secs.is_some_and(|secs| now >= self.published_at + u64::from(secs))
    }
}

/// A durable session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Seconds the session outlives its connection; `None` = never expires.
    pub expiry_secs: Option<u32>,
    /// When its last connection ended (Unix seconds), if it is offline.
    pub disconnected_at: Option<u64>,
    /// Its subscriptions: id, filter, options.
    pub subscriptions: Vec<(u32, String, SubscribeOptions)>,
    /// Next subscription id to hand out.
    pub next_subscription: u32,
}

/// An at-least-once delivery waiting for its session's acknowledgement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedRecord {
    /// Subscription of the session it matched.
    pub subscription: u32,
    /// The message, with its QoS already capped.
    pub message: StoredMessage,
    /// Delivered because of a new subscription, from the retained store.
    pub from_retained: bool,
}

/// A stored session: its key, record, and queued deliveries in order.
pub type StoredSession = (String, SessionRecord, Vec<(u64, QueuedRecord)>);

/// Everything the store held at start-up.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Retained messages by topic.
    pub retained: Vec<(String, StoredMessage)>,
    /// Sessions by key, with their queued deliveries in order.
    pub sessions: Vec<StoredSession>,
    /// Key-value entries: protocol, key, entry.
    pub kv: Vec<(String, String, crate::kv::KvEntry)>,
}

/// Encode a record.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising plain data into a Vec cannot fail.
    postcard::to_allocvec(value).unwrap_or_default()
}

/// Decode a record; an error means the file is corrupt.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::unix_now;

    #[test]
    fn only_a_message_that_can_expire_is_stamped() {
        let plain = StoredMessage::new(Message::new("t", b"x".to_vec()));
        assert_eq!(plain.published_at, 0, "no clock read");
        assert!(!plain.expired(u64::MAX), "and it never expires");
        let before = unix_now();
        let expiring =
            StoredMessage::new(Message { expiry_secs: Some(10), ..Message::new("t", b"x".to_vec()) });
        assert!(expiring.published_at >= before && expiring.published_at <= unix_now());
        assert!(!expiring.expired(expiring.published_at + 9));
        assert!(expiring.expired(expiring.published_at + 10));
    }
}
