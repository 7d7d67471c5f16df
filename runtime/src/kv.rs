//! The small key-value store each protocol gets, with a byte quota and
//! per-key time to live.
//!
//! Keys and values count against the protocol's `kv_quota_bytes`. Session
//! scoped entries live in the same map under a prefix holding the client id,
//! so the quota covers both scopes. Expired keys are removed when touched and
//! by the broker's periodic sweep. Every change is written to the store.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::store::{Op, Store};

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Current time in Unix milliseconds.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A stored value and when it expires (Unix milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KvEntry {
    pub value: Vec<u8>,
    pub expires_at: Option<u64>,
}

impl KvEntry {
    fn live(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// When a write happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Always,
    IfAbsent,
    IfPresent,
}

/// Time to live of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// No expiry.
    None,
    /// Expire after this many milliseconds.
    After(u64),
    /// Keep the key's current expiry.
    Keep,
}

/// Why a key-value operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("key-value quota of {0} bytes exceeded")]
    Quota(usize),
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    #[error("increment or decrement would overflow")]
    Overflow,
}

/// One protocol's store.
pub struct Kv {
    protocol: Arc<str>,
    quota: usize,
    store: Arc<Store>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, KvEntry>,
    used: usize,
}

impl Inner {
    /// The live entry under `key`, dropping it if expired.
    fn live(&mut self, key: &str, now: u64) -> Option<&KvEntry> {
        if self.entries.get(key).is_some_and(|e| !e.live(now)) {
            self.remove(key);
        }
        self.entries.get(key)
    }

    fn remove(&mut self, key: &str) -> Option<KvEntry> {
        let entry = self.entries.remove(key)?;
        self.used -= key.len() + entry.value.len();
        Some(entry)
    }
}

impl Kv {
    /// An empty store for `protocol` holding at most `quota` bytes.
    pub fn new(protocol: Arc<str>, quota: usize, store: Arc<Store>) -> Self {
        Self { protocol, quota, store, inner: Mutex::default() }
    }

    /// Load entries kept from an earlier run (they may exceed a lowered
    /// quota; new writes are then refused until enough is deleted).
    pub fn restore(&self, entries: impl IntoIterator<Item = (String, KvEntry)>) {
        let mut inner = self.inner.lock();
        for (key, entry) in entries {
            inner.used += key.len() + entry.value.len();
            inner.entries.insert(key, entry);
        }
    }

    fn put_op(&self, key: &str, entry: &KvEntry) -> Op {
        Op::PutKv { protocol: self.protocol.to_string(), key: key.to_string(), entry: entry.clone() }
    }

    fn delete_op(&self, key: &str) -> Op {
        Op::DeleteKv { protocol: self.protocol.to_string(), key: key.to_string() }
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.inner.lock().live(key, unix_millis()).map(|e| e.value.clone())
    }

    /// Write `value` under `key` if `condition` holds; returns whether it was written.
    pub fn set(&self, key: String, value: Vec<u8>, condition: Condition, ttl: Ttl) -> Result<bool, KvError> {
        let now = unix_millis();
        let mut inner = self.inner.lock();
        let existing = inner.live(&key, now).cloned();
        match (condition, &existing) {
            (Condition::IfAbsent, Some(_)) | (Condition::IfPresent, None) => return Ok(false),
            _ => {}
        }
        let old = existing.as_ref().map_or(0, |e| key.len() + e.value.len());
        let used = inner.used - old + key.len() + value.len();
        if used > self.quota {
            return Err(KvError::Quota(self.quota));
        }
        let expires_at = match ttl {
            Ttl::None => None,
            Ttl::After(ms) => Some(now.saturating_add(ms)),
            Ttl::Keep => existing.and_then(|e| e.expires_at),
        };
        let entry = KvEntry { value, expires_at };
        self.store.submit(vec![self.put_op(&key, &entry)]);
        inner.used = used;
        inner.entries.insert(key, entry);
        Ok(true)
    }

    /// Delete `key`; returns whether it existed.
    pub fn delete(&self, key: &str) -> bool {
        let mut inner = self.inner.lock();
        let existed = inner.live(key, unix_millis()).is_some();
        if existed {
            inner.remove(key);
            self.store.submit(vec![self.delete_op(key)]);
        }
        existed
    }

    /// Add `delta` to the decimal integer under `key` (missing = 0).
    pub fn increment(&self, key: String, delta: i64) -> Result<i64, KvError> {
        let now = unix_millis();
        let mut inner = self.inner.lock();
        let existing = inner.live(&key, now).cloned();
        let current = match &existing {
            Some(entry) => canonical_integer(&entry.value).ok_or(KvError::NotAnInteger)?,
            None => 0,
        };
        let next = current.checked_add(delta).ok_or(KvError::Overflow)?;
        let value = next.to_string().into_bytes();
        let old = existing.as_ref().map_or(0, |e| key.len() + e.value.len());
        let used = inner.used - old + key.len() + value.len();
        if used > self.quota {
            return Err(KvError::Quota(self.quota));
        }
        let entry = KvEntry { value, expires_at: existing.and_then(|e| e.expires_at) };
        self.store.submit(vec![self.put_op(&key, &entry)]);
        inner.used = used;
        inner.entries.insert(key, entry);
        Ok(next)
    }

    /// Set or clear the time to live of `key`; returns whether it exists.
    pub fn expire(&self, key: &str, ttl_ms: Option<u64>) -> bool {
        let now = unix_millis();
        let mut inner = self.inner.lock();
        let Some(entry) = inner.live(key, now).cloned() else { return false };
        let entry = KvEntry { expires_at: ttl_ms.map(|ms| now.saturating_add(ms)), ..entry };
        self.store.submit(vec![self.put_op(key, &entry)]);
        inner.entries.insert(key.to_string(), entry);
        true
    }

    /// Remaining time to live: `None` without the key, `Some(None)` without expiry.
    pub fn ttl(&self, key: &str) -> Option<Option<u64>> {
        let now = unix_millis();
        let mut inner = self.inner.lock();
        inner.live(key, now).map(|e| e.expires_at.map(|at| at.saturating_sub(now)))
    }

    /// Delete every key starting with `prefix`; returns how many.
    pub fn delete_prefix(&self, prefix: &str) -> u64 {
        let mut inner = self.inner.lock();
        let doomed: Vec<String> = inner.entries.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        let ops = doomed.iter().map(|k| self.delete_op(k)).collect();
        let now = unix_millis();
        let mut live = 0;
        for key in &doomed {
            if inner.remove(key).is_some_and(|e| e.live(now)) {
                live += 1;
            }
        }
        self.store.submit(ops);
        live
    }

    /// Count the live keys starting with `prefix`.
    pub fn count_prefix(&self, prefix: &str) -> u64 {
        let now = unix_millis();
        let inner = self.inner.lock();
        inner.entries.iter().filter(|(k, e)| k.starts_with(prefix) && e.live(now)).count() as u64
    }

    /// Remove expired keys; returns how many.
    pub fn sweep(&self) -> usize {
        let now = unix_millis();
        let mut inner = self.inner.lock();
        let expired: Vec<String> =
            inner.entries.iter().filter(|(_, e)| !e.live(now)).map(|(k, _)| k.clone()).collect();
        for key in &expired {
            inner.remove(key);
        }
        self.store.submit(expired.iter().map(|k| self.delete_op(k)).collect());
        expired.len()
    }

    /// Bytes in use.
    pub fn used(&self) -> usize {
        self.inner.lock().used
    }
}

/// The integer `bytes` spell in the one form `increment` writes: decimal,
/// an optional `-`, no `+`, no leading zero and no `-0` (Redis reads stored
/// integers the same way: `05` and `+5` are text to it).
fn canonical_integer(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let canonical = match digits {
        [] => false,
        [b'0'] => digits.len() == bytes.len(),
        [first, ..] => first.is_ascii_digit() && *first != b'0',
    };
    if !canonical {
        return None;
    }
    // Leaves the digits' check and the range to the standard parser.
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(quota: usize) -> Kv {
        Kv::new("p".into(), quota, Arc::new(Store::memory().0))
    }

    #[test]
    fn quota_counts_keys_and_values() {
        let kv = kv(10);
        kv.set("ab".into(), b"cdef".to_vec(), Condition::Always, Ttl::None).unwrap();
        assert_eq!(kv.used(), 6);
        assert_eq!(
            kv.set("x".into(), b"yyyy".to_vec(), Condition::Always, Ttl::None),
            Err(KvError::Quota(10))
        );
        kv.set("ab".into(), b"c".to_vec(), Condition::Always, Ttl::None).unwrap();
        assert_eq!(kv.used(), 3);
        assert!(kv.delete("ab"));
        assert_eq!(kv.used(), 0);
        kv.set("s\0a".into(), b"1".to_vec(), Condition::Always, Ttl::None).unwrap();
        assert_eq!(kv.count_prefix("s\0"), 1);
        assert_eq!(kv.delete_prefix("s\0"), 1);
        assert_eq!(kv.used(), 0);
    }

    #[test]
    fn stored_integers_are_read_only_in_their_canonical_form() {
        for (text, value) in [("0", 0), ("7", 7), ("-12", -12), ("9223372036854775807", i64::MAX)] {
            assert_eq!(canonical_integer(text.as_bytes()), Some(value), "{text:?}");
        }
        let refused =
            ["", "-", "+5", "05", "00", "-0", "-05", " 5", "5 ", "5x", "1e3", "9223372036854775808", "٣"];
        for text in refused {
            assert_eq!(canonical_integer(text.as_bytes()), None, "{text:?}");
        }
    }

    #[test]
    fn conditions_increments_and_ttl() {
        let kv = kv(1024);
        assert!(kv.set("k".into(), b"1".to_vec(), Condition::IfAbsent, Ttl::None).unwrap());
        assert!(!kv.set("k".into(), b"2".to_vec(), Condition::IfAbsent, Ttl::None).unwrap());
        assert!(!kv.set("other".into(), b"2".to_vec(), Condition::IfPresent, Ttl::None).unwrap());
        assert_eq!(kv.increment("k".into(), 41), Ok(42));
        assert_eq!(kv.increment("fresh".into(), -1), Ok(-1));
        kv.set("text".into(), b"abc".to_vec(), Condition::Always, Ttl::None).unwrap();
        assert_eq!(kv.increment("text".into(), 1), Err(KvError::NotAnInteger));
        kv.set("max".into(), i64::MAX.to_string().into_bytes(), Condition::Always, Ttl::None).unwrap();
        assert_eq!(kv.increment("max".into(), 1), Err(KvError::Overflow));
        for (stored, expected) in [("0", Ok(1)), ("-7", Ok(-6)), ("+5", Err(KvError::NotAnInteger))] {
            kv.set("n".into(), stored.into(), Condition::Always, Ttl::None).unwrap();
            assert_eq!(kv.increment("n".into(), 1), expected, "{stored:?}");
        }

        assert_eq!(kv.ttl("k"), Some(None));
        assert_eq!(kv.ttl("missing"), None);
        assert!(kv.expire("k", Some(60_000)));
        assert!(kv.ttl("k").unwrap().unwrap() > 59_000);
        kv.set("k".into(), b"7".to_vec(), Condition::Always, Ttl::Keep).unwrap();
        assert!(kv.ttl("k").unwrap().is_some(), "KEEPTTL kept it");
        kv.set("gone".into(), b"x".to_vec(), Condition::Always, Ttl::After(0)).unwrap();
        assert_eq!(kv.get("gone"), None, "a zero time to live expires at once");
        assert_eq!(kv.sweep(), 0, "already removed when touched");
    }
}
