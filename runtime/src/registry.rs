//! The open connections of one protocol, so a guest can list them and
//! close one on request (Redis `CLIENT LIST` / `CLIENT KILL`), and the
//! broker can ask them all to close when it shuts down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::mailbox::{Kick, Mailbox};

/// Most connections `list` reports.
pub const MAX_LISTED: usize = 10_000;

struct Entry {
    peer: String,
    name: Option<String>,
    opened: Instant,
    mailbox: Arc<Mailbox>,
}

/// One connection as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: u64,
    pub peer: String,
    pub name: Option<String>,
    pub age_ms: u64,
}

/// Open connections by id.
#[derive(Default)]
pub struct ConnectionRegistry {
    entries: Mutex<BTreeMap<u64, Entry>>,
}

impl ConnectionRegistry {
    /// Record an opened connection.
    pub fn insert(&self, mailbox: Arc<Mailbox>, peer: String) {
        let entry = Entry { peer, name: None, opened: Instant::now(), mailbox };
        self.entries.lock().insert(entry.mailbox.connection, entry);
    }

    /// Forget a closed connection.
    pub fn remove(&self, id: u64) {
        self.entries.lock().remove(&id);
    }

    /// Name connection `id`.
    pub fn set_name(&self, id: u64, name: Option<String>) {
        if let Some(entry) = self.entries.lock().get_mut(&id) {
            entry.name = name;
        }
    }

    /// The connections, oldest first, at most [`MAX_LISTED`].
    pub fn list(&self) -> Vec<Listed> {
        self.entries
            .lock()
            .iter()
            .take(MAX_LISTED)
            .map(|(id, e)| Listed {
                id: *id,
                peer: e.peer.clone(),
                name: e.name.clone(),
                age_ms: e.opened.elapsed().as_millis() as u64,
            })
            .collect()
    }

    /// Ask every connection to close, for `reason`.
    pub fn kick_all(&self, reason: Kick) {
        for entry in self.entries.lock().values() {
            entry.mailbox.kick(reason);
        }
    }

    /// Ask connection `id` to close; returns whether it exists.
    pub fn close(&self, id: u64) -> bool {
        match self.entries.lock().get(&id) {
            Some(entry) => {
                entry.mailbox.kick(Kick::ClosedByRequest);
                true
            }
            None => false,
        }
    }
}
