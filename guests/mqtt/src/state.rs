//! What one MQTT connection remembers between packets, and the parts of it
//! that belong to a persistent session and are kept in the host's
//! session-scoped key-value store so they survive reconnects and restarts:
//! subscription options the host does not know (subscription identifiers,
//! retain-as-published), QoS 2 packet ids received but not released, and
//! QoS 2 packet ids sent whose PUBCOMP is still due.

use std::collections::{HashMap, HashSet};

use rustc_hash::FxHashMap;

use sandport_guest::host;
use sandport_guest::types::{KvCondition, KvScope, KvSetOptions, LogLevel};

/// Settings from `[protocols.NAME.settings]`.
pub const SETTINGS: [&str; 4] =
    ["receive_maximum", "topic_alias_maximum", "max_keep_alive", "connect_timeout_ms"];

/// Server-side limits announced in CONNACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// QoS 2 publishes a client may leave unreleased at once.
    pub receive_maximum: u16,
    /// Highest topic alias a client may use towards the server.
    pub topic_alias_maximum: u16,
    /// Longest keep-alive granted to MQTT 5 clients (0 = what they ask).
    pub max_keep_alive: u16,
    /// Largest packet the host accepts.
    pub maximum_packet_size: u32,
    /// How long a client has to send CONNECT.
    pub connect_timeout_ms: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            receive_maximum: 65_535,
            topic_alias_maximum: 10,
            max_keep_alive: 0,
            maximum_packet_size: 1 << 20,
            connect_timeout_ms: 10_000,
        }
    }
}

impl Limits {
    /// Limits from the broker's settings; a bad value is logged and ignored.
    pub fn from_settings(settings: &[(String, String)], maximum_packet_size: u32) -> Self {
        let mut limits = Limits { maximum_packet_size, ..Limits::default() };
        for (name, value) in settings {
            if name == "connect_timeout_ms" {
                match value.parse::<u32>() {
                    Ok(ms) if ms > 0 => limits.connect_timeout_ms = ms,
                    _ => host::log(
                        LogLevel::Warn,
                        &format!("setting {name} = \"{value}\" is not a positive number; ignored"),
                    ),
                }
                continue;
            }
            let slot = match name.as_str() {
                "receive_maximum" => &mut limits.receive_maximum,
                "topic_alias_maximum" => &mut limits.topic_alias_maximum,
                "max_keep_alive" => &mut limits.max_keep_alive,
                _ => continue,
            };
            match value.parse::<u16>() {
                Ok(0) if name == "receive_maximum" => {
                    host::log(LogLevel::Warn, "setting receive_maximum must be at least 1; ignored")
                }
                Ok(parsed) => *slot = parsed,
                Err(_) => host::log(
                    LogLevel::Warn,
                    &format!("setting {name} = \"{value}\" is not a number from 0 to 65535; ignored"),
                ),
            }
        }
        limits
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Waiting for CONNECT.
    #[default]
    AwaitConnect,
    /// CONNACK sent.
    Connected,
    /// DISCONNECT sent or received; nothing more is processed.
    Closed,
}

/// Progress of a QoS 1 or 2 PUBLISH sent to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaiting {
    /// QoS 1, waiting for PUBACK.
    Puback,
    /// QoS 2, waiting for PUBREC.
    Pubrec,
    /// QoS 2, PUBREL sent, waiting for PUBCOMP (the host already has its ack).
    Pubcomp,
}

/// One outgoing exchange, by packet id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outbound {
    /// The host's delivery id, until it is acknowledged.
    pub delivery: Option<u64>,
    pub awaiting: Awaiting,
}

/// What the guest knows about one subscription beyond what the host keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionMeta {
    /// The host's subscription id.
    pub host_id: u32,
    /// MQTT 5 subscription identifier.
    pub identifier: Option<u32>,
    pub retain_as_published: bool,
}

/// The state of one connection.
#[derive(Debug, Default)]
pub struct Conn {
    pub phase: Phase,
    /// Protocol level from CONNECT (3, 4 or 5).
    pub level: u8,
    pub limits: Limits,
    /// The client's maximum packet size (5.0); larger PUBLISHes are dropped.
    pub client_maximum_packet: Option<u32>,
    /// The client's topic alias maximum (5.0).
    pub client_alias_maximum: u16,
    /// The session outlives the connection, so its state goes to the host.
    pub persistent: bool,
    /// The session expiry at CONNECT was 0 (it may not be raised at DISCONNECT).
    pub expiry_zero_at_connect: bool,
    /// Exchanges of QoS 1 and 2 messages sent to the client. Fx rather
    /// than SipHash here and in `subscriptions`: the keys are ids this side
    /// hands out (packet ids, host ids), so no client chooses them; maps
    /// keyed by what clients write (filters, topics) stay SipHash.
    pub outbound: FxHashMap<u16, Outbound>,
    /// QoS 2 packet ids received and answered with PUBREC, not yet released.
    pub inbound_qos2: HashSet<u16>,
    /// Topic aliases the client set (5.0).
    pub aliases_in: HashMap<u16, String>,
    /// Topic aliases the server set.
    pub aliases_out: HashMap<String, u16>,
    /// Subscriptions: host id by the filter as the client wrote it, and
    /// what the guest knows about each by host id (looked up per delivery).
    filters: HashMap<String, u32>,
    subscriptions: FxHashMap<u32, SubscriptionMeta>,
}

/// Session key-value keys.
const KEY_SUBSCRIPTIONS: &str = "mqtt.subscriptions";
const KEY_QOS2_IN: &str = "mqtt.qos2-in";
const KEY_PUBREL: &str = "mqtt.pubrel";

impl Conn {
    pub fn v5(&self) -> bool {
        self.level == crate::packets::LEVEL_5
    }

    /// The subscription `host_id` belongs to, if the connection knows it.
    pub fn subscription(&self, host_id: u32) -> Option<&SubscriptionMeta> {
        self.subscriptions.get(&host_id)
    }

    /// Record the subscription made for `filter`.
    pub fn add_subscription(&mut self, filter: String, meta: SubscriptionMeta) {
        self.filters.insert(filter, meta.host_id);
        self.subscriptions.insert(meta.host_id, meta);
    }

    /// Forget the subscription of `filter`, returning it.
    pub fn remove_subscription(&mut self, filter: &str) -> Option<SubscriptionMeta> {
        let host_id = self.filters.remove(filter)?;
        self.subscriptions.remove(&host_id)
    }

    /// A free packet id for delivery `delivery`: derived from the delivery id,
    /// so a redelivery after reconnect reuses its original packet id (4.4).
    pub fn packet_id_for(&self, delivery: u64) -> Option<u16> {
        let preferred = (delivery.wrapping_sub(1) % 65_535 + 1) as u16;
        let mut id = preferred;
        for _ in 0..65_535 {
            match self.outbound.get(&id) {
                None => return Some(id),
                Some(exchange) if exchange.delivery == Some(delivery) => return Some(id),
                Some(_) => id = id % 65_535 + 1,
            }
        }
        None
    }

    fn save(&self, key: &str, value: Vec<u8>) {
        if !self.persistent {
            return;
        }
        let options = KvSetOptions { condition: KvCondition::Always, ttl_ms: None, keep_ttl: false };
        let saved = if value.is_empty() {
            host::kv_delete(KvScope::Session, key).map(|_| true)
        } else {
            host::kv_set(KvScope::Session, key, &value, options)
        };
        if let Err(e) = saved {
            host::log(LogLevel::Warn, &format!("cannot keep session state {key}: {}", e.message));
        }
    }

    fn load(key: &str) -> Vec<u8> {
        host::kv_get(KvScope::Session, key).ok().flatten().unwrap_or_default()
    }

    /// Keep the subscription options the host does not know.
    pub fn save_subscriptions(&self) {
        let mut value = Vec::with_capacity(self.subscriptions.len() * 9);
        for meta in self.subscriptions.values() {
            value.extend_from_slice(&meta.host_id.to_be_bytes());
            value.extend_from_slice(&meta.identifier.unwrap_or(0).to_be_bytes());
            value.push(u8::from(meta.retain_as_published));
        }
        self.save(KEY_SUBSCRIPTIONS, value);
    }

    /// Saved options by host subscription id: (identifier, retain as published).
    pub fn load_subscriptions() -> HashMap<u32, (Option<u32>, bool)> {
        Self::load(KEY_SUBSCRIPTIONS)
            .chunks_exact(9)
            .map(|record| {
                let host_id = u32::from_be_bytes([record[0], record[1], record[2], record[3]]);
                let identifier = u32::from_be_bytes([record[4], record[5], record[6], record[7]]);
                (host_id, ((identifier != 0).then_some(identifier), record[8] != 0))
            })
            .collect()
    }

    pub fn save_inbound_qos2(&self) {
        self.save(KEY_QOS2_IN, encode_ids(self.inbound_qos2.iter().copied()));
    }

    pub fn save_pubrel(&self) {
        let ids = self.outbound.iter().filter(|(_, o)| o.awaiting == Awaiting::Pubcomp).map(|(id, _)| *id);
        self.save(KEY_PUBREL, encode_ids(ids));
    }

    /// Restore the QoS 2 state of a resumed session; returns the packet ids
    /// whose PUBREL must be sent again.
    pub fn restore_qos2(&mut self) -> Vec<u16> {
        self.inbound_qos2 = decode_ids(&Self::load(KEY_QOS2_IN)).collect();
        let pubrel: Vec<u16> = decode_ids(&Self::load(KEY_PUBREL)).collect();
        for id in &pubrel {
            self.outbound.insert(*id, Outbound { delivery: None, awaiting: Awaiting::Pubcomp });
        }
        pubrel
    }
}

fn encode_ids(ids: impl Iterator<Item = u16>) -> Vec<u8> {
    ids.flat_map(u16::to_be_bytes).collect()
}

fn decode_ids(bytes: &[u8]) -> impl Iterator<Item = u16> + '_ {
    bytes.chunks_exact(2).map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_follow_delivery_ids_and_avoid_collisions() {
        let mut conn = Conn::default();
        assert_eq!(conn.packet_id_for(1), Some(1));
        assert_eq!(conn.packet_id_for(65_535), Some(65_535));
        assert_eq!(conn.packet_id_for(65_536), Some(1), "ids wrap past 65535 and skip 0");
        conn.outbound.insert(1, Outbound { delivery: Some(1), awaiting: Awaiting::Puback });
        assert_eq!(conn.packet_id_for(1), Some(1), "a redelivery keeps its id");
        assert_eq!(conn.packet_id_for(65_536), Some(2), "a collision takes the next free id");
    }

    #[test]
    fn settings_become_limits() {
        let settings: Vec<(String, String)> = [
            ("receive_maximum", "20"),
            ("topic_alias_maximum", "0"),
            ("max_keep_alive", "30"),
            ("connect_timeout_ms", "2500"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let limits = Limits::from_settings(&settings, 4096);
        assert_eq!(
            limits,
            Limits {
                receive_maximum: 20,
                topic_alias_maximum: 0,
                max_keep_alive: 30,
                maximum_packet_size: 4096,
                connect_timeout_ms: 2500,
            }
        );
        assert_eq!(Limits::from_settings(&[], 1 << 20), Limits::default());
    }

    #[test]
    fn packet_id_lists_round_trip() {
        let ids = [1u16, 300, 65_535];
        assert_eq!(decode_ids(&encode_ids(ids.into_iter())).collect::<Vec<_>>(), ids);
    }
}
