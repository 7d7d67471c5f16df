//! Session registry: which connection holds which client id.
//!
//! Sessions are keyed by (protocol, client id). Attaching a client id that
//! another connection holds closes that connection (takeover). In this
//! in-memory registry a session ends with its connection; its session-scoped
//! key-value entries go with it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::mailbox::{Kick, Mailbox};

/// Result of attaching a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The client id in force (assigned when the guest passed "").
    pub client_id: String,
    /// Whether a stored session was resumed.
    pub present: bool,
}

/// A session's identity: (protocol, client id).
type SessionKey = (Arc<str>, String);

/// The registry.
pub struct Sessions {
    holders: Mutex<HashMap<SessionKey, Arc<Mailbox>>>,
    assigned: AtomicU64,
    prefix: String,
}

impl Sessions {
    /// A registry whose assigned client ids start with `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { holders: Mutex::default(), assigned: AtomicU64::new(1), prefix: prefix.into() }
    }

    /// Attach `mailbox`'s connection to `client_id` of `protocol`, closing
    /// any other connection holding it.
    pub fn attach(&self, protocol: &Arc<str>, client_id: &str, mailbox: &Arc<Mailbox>) -> Attached {
        let client_id = if client_id.is_empty() {
            format!("{}-{}", self.prefix, self.assigned.fetch_add(1, Ordering::Relaxed))
        } else {
            client_id.to_string()
        };
        let previous = self.holders.lock().insert((protocol.clone(), client_id.clone()), mailbox.clone());
        if let Some(previous) = previous
            && previous.connection != mailbox.connection
        {
            tracing::info!(%protocol, client_id, old = previous.connection, new = mailbox.connection, "session taken over");
            previous.kick(Kick::SessionTakenOver);
        }
        Attached { client_id, present: false }
    }

    /// Release `client_id` if `connection` still holds it; returns whether it did.
    pub fn release(&self, protocol: &Arc<str>, client_id: &str, connection: u64) -> bool {
        let mut holders = self.holders.lock();
        let key = (protocol.clone(), client_id.to_string());
        if holders.get(&key).is_some_and(|m| m.connection == connection) {
            holders.remove(&key);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takeover_kicks_the_older_connection() {
        let sessions = Sessions::new("test");
        let protocol: Arc<str> = "mqtt".into();
        let (old, _old_inbox) = Mailbox::new(1, 1024);
        let (new, _new_inbox) = Mailbox::new(2, 1024);
        sessions.attach(&protocol, "c1", &old);
        sessions.attach(&protocol, "c1", &new);
        assert!(!sessions.release(&protocol, "c1", 1), "the old holder no longer owns it");
        assert!(sessions.release(&protocol, "c1", 2));
    }

    #[test]
    fn empty_client_id_is_assigned() {
        let sessions = Sessions::new("sp");
        let (m, _inbox) = Mailbox::new(1, 1024);
        let a = sessions.attach(&"mqtt".into(), "", &m);
        let b = sessions.attach(&"mqtt".into(), "", &m);
        assert!(a.client_id.starts_with("sp-"));
        assert_ne!(a.client_id, b.client_id);
    }
}
