//! The small key-value store each protocol gets, with a byte quota.
//!
//! Keys and values count against the protocol's `kv_quota_bytes`. Session
//! scoped entries live in the same map under a prefix holding the client id,
//! so the quota covers both scopes. Every change is written to the store.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::store::{Op, Store};

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// One protocol's store.
pub struct Kv {
    protocol: Arc<str>,
    quota: usize,
    store: Arc<Store>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Vec<u8>>,
    used: usize,
}

/// A write that would exceed the quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("key-value quota of {quota} bytes exceeded")]
pub struct QuotaExceeded {
    pub quota: usize,
}

impl Kv {
    /// An empty store for `protocol` holding at most `quota` bytes.
    pub fn new(protocol: Arc<str>, quota: usize, store: Arc<Store>) -> Self {
        Self { protocol, quota, store, inner: Mutex::default() }
    }

    /// Load entries kept from an earlier run (they may exceed a lowered
    /// quota; new writes are then refused until enough is deleted).
    pub fn restore(&self, entries: impl IntoIterator<Item = (String, Vec<u8>)>) {
        let mut inner = self.inner.lock();
        for (key, value) in entries {
            inner.used += key.len() + value.len();
            inner.entries.insert(key, value);
        }
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.inner.lock().entries.get(key).cloned()
    }

    /// Store `value` under `key`.
    pub fn set(&self, key: String, value: Vec<u8>) -> Result<(), QuotaExceeded> {
        let mut inner = self.inner.lock();
        let old = inner.entries.get(&key).map_or(0, |v| key.len() + v.len());
        let used = inner.used - old + key.len() + value.len();
        if used > self.quota {
            return Err(QuotaExceeded { quota: self.quota });
        }
        inner.used = used;
        self.store.submit(vec![Op::PutKv {
            protocol: self.protocol.to_string(),
            key: key.clone(),
            value: value.clone(),
        }]);
        inner.entries.insert(key, value);
        Ok(())
    }

    /// Delete `key`; returns whether it existed.
    pub fn delete(&self, key: &str) -> bool {
        let mut inner = self.inner.lock();
        match inner.entries.remove(key) {
            Some(value) => {
                inner.used -= key.len() + value.len();
                self.store
                    .submit(vec![Op::DeleteKv { protocol: self.protocol.to_string(), key: key.to_string() }]);
                true
            }
            None => false,
        }
    }

    /// Delete every key starting with `prefix`.
    pub fn delete_prefix(&self, prefix: &str) {
        let mut inner = self.inner.lock();
        let mut freed = 0;
        let mut ops = Vec::new();
        inner.entries.retain(|k, v| {
            let keep = !k.starts_with(prefix);
            if !keep {
                freed += k.len() + v.len();
                ops.push(Op::DeleteKv { protocol: self.protocol.to_string(), key: k.clone() });
            }
            keep
        });
        inner.used -= freed;
        self.store.submit(ops);
    }

    /// Bytes in use.
    pub fn used(&self) -> usize {
        self.inner.lock().used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_counts_keys_and_values() {
        let kv = Kv::new("p".into(), 10, Arc::new(Store::memory().0));
        kv.set("ab".into(), b"cdef".to_vec()).unwrap();
        assert_eq!(kv.used(), 6);
        assert!(kv.set("x".into(), b"yyyy".to_vec()).is_err());
        kv.set("ab".into(), b"c".to_vec()).unwrap();
        assert_eq!(kv.used(), 3);
        assert!(kv.delete("ab"));
        assert_eq!(kv.used(), 0);
        kv.set("s\0a".into(), b"1".to_vec()).unwrap();
        kv.delete_prefix("s\0");
        assert_eq!(kv.used(), 0);
    }
}
