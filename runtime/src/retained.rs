//! Retained messages: the last retained message of each topic.
//!
//! A retained publish replaces the topic's message; one with an empty
//! payload removes it. New subscriptions get the matching messages (unless
//! their options say otherwise). The map is in memory; every change is also
//! written to the store so it survives restarts.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::store::{Op, StoredMessage};
use crate::topic;
use crate::wasm::bindings::types::FilterKind;

/// The retained messages.
#[derive(Default)]
pub struct Retained {
    by_topic: RwLock<HashMap<String, Arc<StoredMessage>>>,
}

impl Retained {
    /// Apply a retained publish; returns the op that persists it.
    pub fn update(&self, message: &Arc<StoredMessage>) -> Op {
        let topic = message.message.topic.clone();
        let mut by_topic = self.by_topic.write();
        if message.message.payload.is_empty() {
            by_topic.remove(&topic);
            Op::DeleteRetained { topic }
        } else {
            by_topic.insert(topic.clone(), message.clone());
            Op::PutRetained { topic, message: message.clone() }
        }
    }

    /// Load stored messages at start-up.
    pub fn restore(&self, stored: Vec<(String, StoredMessage)>) {
        let mut by_topic = self.by_topic.write();
        for (topic, message) in stored {
            by_topic.insert(topic, Arc::new(message));
        }
    }

    /// The unexpired messages matching `filter`, in topic order. A linear
    /// scan: retained sets are far smaller than subscription sets.
    pub fn matching(&self, filter: &str, kind: FilterKind, now: u64) -> Vec<Arc<StoredMessage>> {
        let by_topic = self.by_topic.read();
        let mut found: Vec<Arc<StoredMessage>> = match kind {
            FilterKind::Exact => by_topic.get(filter).cloned().into_iter().collect(),
            FilterKind::Wildcard => {
                by_topic.iter().filter(|(t, _)| topic::matches(filter, t)).map(|(_, m)| m.clone()).collect()
            }
            FilterKind::Glob => by_topic
                .iter()
                .filter(|(t, _)| topic::glob_matches(filter, t))
                .map(|(_, m)| m.clone())
                .collect(),
        };
        found.retain(|m| !m.expired(now));
        found.sort_by(|a, b| a.message.topic.cmp(&b.message.topic));
        found
    }
}
