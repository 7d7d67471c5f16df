//! Sessions: state that belongs to a client id rather than to a connection.
//!
//! A session is keyed by (protocol, client id). It owns its subscriptions
//! (they stay in the router while the client is away), a queue of
//! at-least-once deliveries waiting for acknowledgement, and an in-flight
//! window. Attaching an id that another connection holds closes that
//! connection (takeover) and resumes the session on the new one, re-sending
//! every unacknowledged delivery. A session whose expiry is not zero
//! outlives its connection and is written to the store, so it also survives
//! a restart.
//!
//! Lock order: the router's lock may be held while a session's mutex is
//! taken (fan-out), never the reverse; nothing here calls the router while
//! holding a session's mutex or the registry's.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::config::QueueFullPolicy;
use crate::kv::Kv;
use crate::mailbox::{Mailbox, Pushed, Routed};
use crate::router::{Router, Subscription, SubscriptionKey, Target};
use crate::store::{Op, QueuedRecord, SessionRecord, Snapshot, Store, StoredMessage};
use crate::wasm::bindings::types::{Qos, SubscribeOptions, SubscriptionInfo};
use crate::wasm::guest_text::GuestText;

/// Current time in Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Bounds of every session's queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueSettings {
    pub max: usize,
    pub policy: QueueFullPolicy,
}

/// One subscription owned by a session.
#[derive(Debug, Clone)]
struct SessionSubscription {
    filter: String,
    options: SubscribeOptions,
    key: SubscriptionKey,
}

/// An at-least-once delivery waiting for its ack.
struct Queued {
    subscription: u32,
    message: Arc<StoredMessage>,
    from_retained: bool,
    /// Handed to a connection at least once.
    delivered: bool,
}

struct Inner {
    /// Outlives its connection (expiry not zero).
    persistent: bool,
    /// Something of it was submitted to the store, so ending it must delete
    /// it there; a session that never outlived a connection costs no write.
    stored: bool,
    expiry_secs: Option<u32>,
    holder: Option<Arc<Mailbox>>,
    subscriptions: BTreeMap<u32, SessionSubscription>,
    next_subscription: u32,
    queue: BTreeMap<u64, Queued>,
    next_seq: u64,
    /// Next queue position to hand out.
    cursor: u64,
    inflight: usize,
    max_inflight: usize,
    disconnected_at: Option<u64>,
    ended: bool,
    /// The will of the last connection, waiting out its delay.
    pending_will: Option<Arc<PendingWill>>,
}

/// A will whose publication waits for its delay (MQTT 5 will delay
/// interval): cancelled if the session is resumed first, due at once if the
/// session ends first.
#[derive(Default)]
pub struct PendingWill {
    state: AtomicU8,
    wake: Notify,
}

const WILL_WAITING: u8 = 0;
const WILL_CANCELLED: u8 = 1;
const WILL_DUE: u8 = 2;

impl PendingWill {
    fn settle(&self, state: u8) {
        let _ = self.state.compare_exchange(WILL_WAITING, state, Ordering::AcqRel, Ordering::Acquire);
        self.wake.notify_one();
    }

    /// Wait up to `delay`; returns whether the will should be published.
    pub async fn wait(&self, delay: std::time::Duration) -> bool {
        if self.state.load(Ordering::Acquire) == WILL_WAITING {
            let _ = tokio::time::timeout(delay, self.wake.notified()).await;
        }
        self.state.load(Ordering::Acquire) != WILL_CANCELLED
    }
}

/// What became of a will with a delay when its connection ended.
pub enum WillDeferral {
    /// Waiting on the session; publish when [`PendingWill::wait`] says so.
    Deferred(Arc<PendingWill>),
    /// Another connection already resumed the session: never publish.
    Resumed,
    /// The session is gone: publish now.
    Ended,
}

/// One session.
pub struct Session {
    pub protocol: Arc<str>,
    pub client_id: String,
    store_key: String,
    store: Arc<Store>,
    queue_settings: QueueSettings,
    dropped: AtomicU64,
    /// Session-scoped key-value entries may exist (the guest used that
    /// scope, or the session was restored), so ending it must clear them;
    /// otherwise ending it skips the scan of the protocol's keys.
    kv_used: AtomicBool,
    inner: Mutex<Inner>,
}

impl Session {
    fn new(
        protocol: Arc<str>,
        client_id: String,
        registry: &Sessions,
        persistent: bool,
        expiry_secs: Option<u32>,
    ) -> Self {
        Session {
            store_key: storage_key(&protocol, &client_id),
            protocol,
            client_id,
            store: registry.store.clone(),
            kv_used: AtomicBool::new(false),
            queue_settings: registry.queue,
            dropped: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                persistent,
                stored: false,
                expiry_secs,
                holder: None,
                subscriptions: BTreeMap::new(),
                next_subscription: 1,
                queue: BTreeMap::new(),
                next_seq: 1,
                cursor: 0,
                inflight: 0,
                max_inflight: usize::from(u16::MAX),
                disconnected_at: None,
                ended: false,
                pending_will: None,
            }),
        }
    }

    /// The session's key-value scope is (or may be) in use.
    pub fn note_kv_use(&self) {
        self.kv_used.store(true, Ordering::Release);
    }

    /// Connection id of the holder, if online.
    pub fn holder_connection(&self) -> Option<u64> {
        self.inner.lock().holder.as_ref().map(|m| m.connection)
    }

    /// Deliveries dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Number of queued (unacknowledged) deliveries.
    pub fn queued(&self) -> usize {
        self.inner.lock().queue.len()
    }

    fn record(inner: &Inner) -> SessionRecord {
        SessionRecord {
            expiry_secs: inner.expiry_secs,
            disconnected_at: inner.disconnected_at,
            subscriptions: inner
                .subscriptions
                .iter()
                .map(|(id, s)| (*id, s.filter.clone(), s.options.clone()))
                .collect(),
            next_subscription: inner.next_subscription,
        }
    }

    fn persist(&self, inner: &mut Inner) {
        if inner.persistent && !inner.ended {
            inner.stored = true;
            self.store
                .submit(vec![Op::PutSession { key: self.store_key.clone(), record: Self::record(inner) }]);
        }
    }

    /// Hand `message` (matched by subscription `id`) to this session.
    pub fn offer(&self, id: u32, message: Arc<StoredMessage>, qos: Qos, from_retained: bool) {
        let mut inner = self.inner.lock();
        if inner.ended {
            return;
        }
        if qos == Qos::AtMostOnce {
            if let Some(holder) = &inner.holder {
                holder.push(Routed::live(id, message, qos, from_retained));
            }
            return;
        }
        if inner.queue.len() >= self.queue_settings.max {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            match self.queue_settings.policy {
                QueueFullPolicy::Refuse => {
                    tracing::debug!(session = %GuestText(&self.client_id), "queue full: delivery refused");
                    return;
                }
                QueueFullPolicy::DropOldest => {
                    if let Some((seq, oldest)) = inner.queue.pop_first() {
                        if oldest.delivered && inner.holder.is_some() {
                            inner.inflight = inner.inflight.saturating_sub(1);
                        }
                        if inner.persistent {
                            self.store.submit(vec![Op::Dequeue { key: self.store_key.clone(), seq }]);
                        }
                        tracing::debug!(session = %GuestText(&self.client_id), seq, "queue full: oldest delivery dropped");
                    }
                }
            }
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let mut stored = message;
        if stored.message.qos != qos {
            let mut capped = (*stored).clone();
            capped.message.qos = qos;
            stored = Arc::new(capped);
        }
        if inner.persistent {
            inner.stored = true;
            let record = QueuedRecord { subscription: id, message: (*stored).clone(), from_retained };
            self.store.submit(vec![Op::Enqueue { key: self.store_key.clone(), seq, record }]);
        }
        inner
            .queue
            .insert(seq, Queued { subscription: id, message: stored, from_retained, delivered: false });
        Self::pump(&mut inner);
    }

    /// Hand queued deliveries to the holder while the in-flight window allows.
    fn pump(inner: &mut Inner) {
        let Some(holder) = inner.holder.clone() else { return };
        let now = unix_now();
        let mut expired = Vec::new();
        let mut cursor = inner.cursor;
        for (&seq, queued) in inner.queue.range_mut(inner.cursor..) {
            if inner.inflight >= inner.max_inflight {
                break;
            }
            cursor = seq + 1;
            if queued.message.expired(now) {
                expired.push(seq);
                continue;
            }
            let routed = Routed {
                subscription: queued.subscription,
                message: queued.message.clone(),
                qos: queued.message.message.qos,
                delivery_id: Some(seq),
                from_retained: queued.from_retained,
                redelivered: queued.delivered,
            };
            if holder.push(routed) == Pushed::Dropped {
                cursor = seq;
                break;
            }
            queued.delivered = true;
            inner.inflight += 1;
        }
        inner.cursor = cursor;
        for seq in expired {
            inner.queue.remove(&seq);
        }
    }

    /// Acknowledge delivery `seq`; returns whether it was pending.
    pub fn ack(&self, seq: u64) -> bool {
        let mut inner = self.inner.lock();
        let Some(queued) = inner.queue.remove(&seq) else { return false };
        if queued.delivered {
            inner.inflight = inner.inflight.saturating_sub(1);
        }
        if inner.persistent {
            self.store.submit(vec![Op::Dequeue { key: self.store_key.clone(), seq }]);
        }
        Self::pump(&mut inner);
        true
    }

    /// Make `mailbox`'s connection the holder and re-send what is unacked.
    fn bind(
        &self,
        mailbox: &Arc<Mailbox>,
        max_inflight: u16,
        expiry_secs: Option<u32>,
    ) -> Vec<SubscriptionInfo> {
        let mut inner = self.inner.lock();
        if let Some(previous) = inner.holder.replace(mailbox.clone())
            && previous.connection != mailbox.connection
        {
            tracing::info!(protocol = %self.protocol, client_id = %GuestText(&self.client_id), old = previous.connection, new = mailbox.connection, "session taken over");
            previous.kick(crate::mailbox::Kick::SessionTakenOver);
        }
        if let Some(will) = inner.pending_will.take() {
            tracing::debug!(protocol = %self.protocol, client_id = %GuestText(&self.client_id), "session resumed: delayed will cancelled");
            will.settle(WILL_CANCELLED);
        }
        inner.expiry_secs = expiry_secs;
        inner.persistent = expiry_secs != Some(0);
        inner.max_inflight = usize::from(max_inflight.max(1));
        inner.inflight = 0;
        inner.cursor = 0;
        inner.disconnected_at = None;
        let subscriptions = inner
            .subscriptions
            .iter()
            .map(|(id, s)| SubscriptionInfo { id: *id, filter: s.filter.clone(), options: s.options.clone() })
            .collect();
        self.persist(&mut inner);
        Self::pump(&mut inner);
        subscriptions
    }

    /// The holder `connection` went away; returns whether it held the session.
    fn unbind(&self, connection: u64) -> bool {
        let mut inner = self.inner.lock();
        if inner.holder.as_ref().is_none_or(|h| h.connection != connection) {
            return false;
        }
        inner.holder = None;
        inner.inflight = 0;
        inner.disconnected_at = Some(unix_now());
        self.persist(&mut inner);
        true
    }

    /// Park the will of `connection`, which is ending, until its delay passes.
    pub fn defer_will(&self, connection: u64) -> WillDeferral {
        let mut inner = self.inner.lock();
        if inner.ended {
            return WillDeferral::Ended;
        }
        if inner.holder.as_ref().is_some_and(|h| h.connection != connection) {
            return WillDeferral::Resumed;
        }
        let pending = Arc::new(PendingWill::default());
        if let Some(earlier) = inner.pending_will.replace(pending.clone()) {
            earlier.settle(WILL_DUE);
        }
        WillDeferral::Deferred(pending)
    }

    /// Change how long the session outlives its connection.
    pub fn set_expiry(&self, expiry_secs: Option<u32>) {
        let mut inner = self.inner.lock();
        inner.expiry_secs = expiry_secs;
        inner.persistent = expiry_secs != Some(0);
        self.persist(&mut inner);
    }

    /// Number of subscriptions the session holds.
    pub fn subscription_count(&self) -> usize {
        self.inner.lock().subscriptions.len()
    }

    /// A new subscription id.
    pub fn next_subscription_id(&self) -> u32 {
        let mut inner = self.inner.lock();
        let id = inner.next_subscription;
        inner.next_subscription = inner.next_subscription.checked_add(1).unwrap_or(1);
        id
    }

    /// Record a subscription the router now holds.
    pub fn add_subscription(&self, id: u32, filter: String, options: SubscribeOptions, key: SubscriptionKey) {
        let mut inner = self.inner.lock();
        inner.subscriptions.insert(id, SessionSubscription { filter, options, key });
        self.persist(&mut inner);
    }

    /// Forget subscription `id`; returns its router key.
    pub fn remove_subscription(&self, id: u32) -> Option<SubscriptionKey> {
        let mut inner = self.inner.lock();
        let removed = inner.subscriptions.remove(&id)?;
        self.persist(&mut inner);
        Some(removed.key)
    }

    /// Whether the session already subscribes to `filter` with the same kind and group.
    pub fn has_filter(&self, filter: &str, options: &SubscribeOptions) -> bool {
        self.inner
            .lock()
            .subscriptions
            .values()
            .any(|s| s.filter == filter && s.options.kind == options.kind && s.options.group == options.group)
    }

    /// Mark the session ended; returns its router keys.
    fn end(&self) -> Vec<SubscriptionKey> {
        let mut inner = self.inner.lock();
        inner.ended = true;
        inner.queue.clear();
        if let Some(will) = inner.pending_will.take() {
            will.settle(WILL_DUE);
        }
        std::mem::take(&mut inner.subscriptions).into_values().map(|s| s.key).collect()
    }

    fn expired_at(&self, now: u64) -> bool {
        let inner = self.inner.lock();
        match (inner.holder.is_some(), inner.disconnected_at, inner.expiry_secs) {
            (false, Some(at), Some(secs)) => now >= at + u64::from(secs),
            _ => false,
        }
    }
}

/// Key of a session in the store. Built without `format!`: every CONNECT
/// makes one, on the guest call's fiber stack, and the formatting machinery
/// made that CONNECT's deepest stack use 4.8 KiB instead of 4.5 (a stack an
/// idle connection keeps; both are two pages still).
fn storage_key(protocol: &str, client_id: &str) -> String {
    let mut key = String::with_capacity(protocol.len() + 1 + client_id.len());
    key.push_str(protocol);
    key.push('\0');
    key.push_str(client_id);
    key
}

/// Result of attaching a session.
pub struct Attached {
    pub session: Arc<Session>,
    pub present: bool,
    pub subscriptions: Vec<SubscriptionInfo>,
}

/// A session's identity: (protocol, client id).
type SessionKey = (Arc<str>, String);

/// The registry of sessions.
pub struct Sessions {
    map: Mutex<HashMap<SessionKey, Arc<Session>>>,
    assigned: AtomicU64,
    prefix: String,
    store: Arc<Store>,
    queue: QueueSettings,
    kvs: Mutex<HashMap<Arc<str>, Arc<Kv>>>,
}

impl Sessions {
    /// A registry; assigned client ids start with `prefix`.
    pub fn new(prefix: impl Into<String>, store: Arc<Store>, queue: QueueSettings) -> Self {
        Self {
            map: Mutex::default(),
            assigned: AtomicU64::new(1),
            prefix: prefix.into(),
            store,
            queue,
            kvs: Mutex::default(),
        }
    }

    /// Register a protocol's key-value store, whose session-scoped entries
    /// are deleted with the session.
    pub fn register_kv(&self, protocol: Arc<str>, kv: Arc<Kv>) {
        self.kvs.lock().insert(protocol, kv);
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The session of `client_id` in `protocol`, if any.
    pub fn get(&self, protocol: &str, client_id: &str) -> Option<Arc<Session>> {
        self.map.lock().get(&(Arc::from(protocol), client_id.to_string())).cloned()
    }

    /// Attach `mailbox`'s connection to the session of `client_id`.
    #[allow(clippy::too_many_arguments)]
    pub fn attach(
        &self,
        router: &Router,
        protocol: &Arc<str>,
        client_id: &str,
        clean: bool,
        expiry_secs: Option<u32>,
        max_inflight: u16,
        mailbox: &Arc<Mailbox>,
    ) -> Attached {
        let client_id = if client_id.is_empty() {
            format!("{}-{}", self.prefix, self.assigned.fetch_add(1, Ordering::Relaxed))
        } else {
            client_id.to_string()
        };
        let key = (protocol.clone(), client_id.clone());
        let existing = self.map.lock().get(&key).cloned();
        let existing = match existing {
            // Expired but not yet swept: it is gone for the client.
            Some(old) if old.expired_at(unix_now()) => {
                self.destroy(router, &old);
                None
            }
            Some(old) if clean => {
                // The old holder (if any) is closed; its session is discarded.
                if let Some(holder) = old.inner.lock().holder.clone()
                    && holder.connection != mailbox.connection
                {
                    holder.kick(crate::mailbox::Kick::SessionTakenOver);
                }
                self.destroy(router, &old);
                None
            }
            other => other,
        };
        let (session, present) = match existing {
            Some(session) => (session, true),
            None => {
                let persistent = expiry_secs != Some(0);
                let session = Arc::new(Session::new(
                    protocol.clone(),
                    client_id.clone(),
                    self,
                    persistent,
                    expiry_secs,
                ));
                self.map.lock().insert(key, session.clone());
                (session, false)
            }
        };
        let subscriptions = session.bind(mailbox, max_inflight, expiry_secs);
        Attached { session, present, subscriptions }
    }

    /// The connection `connection` ended; a session that does not outlive
    /// it is removed.
    pub fn release(&self, router: &Router, session: &Arc<Session>, connection: u64) {
        if session.unbind(connection) && !session.inner.lock().persistent {
            self.destroy(router, session);
        }
    }

    /// Remove a session, its subscriptions, queue, and session-scoped data.
    pub fn destroy(&self, router: &Router, session: &Arc<Session>) {
        {
            let mut map = self.map.lock();
            let key = (session.protocol.clone(), session.client_id.clone());
            if map.get(&key).is_some_and(|s| Arc::ptr_eq(s, session)) {
                map.remove(&key);
            }
        }
        for key in session.end() {
            router.unsubscribe(key);
        }
        if session.inner.lock().stored {
            self.store.submit(vec![Op::DeleteSession { key: session.store_key.clone() }]);
        }
        if session.kv_used.load(Ordering::Acquire)
            && let Some(kv) = self.kvs.lock().get(&session.protocol)
        {
            kv.delete_prefix(&crate::wasm::host::session_kv_prefix(&session.client_id));
        }
    }

    /// Remove sessions whose expiry passed while offline; returns how many.
    pub fn sweep(&self, router: &Router, now: u64) -> usize {
        let expired: Vec<Arc<Session>> =
            self.map.lock().values().filter(|s| s.expired_at(now)).cloned().collect();
        for session in &expired {
            tracing::debug!(protocol = %session.protocol, client_id = %GuestText(&session.client_id), "session expired");
            self.destroy(router, session);
        }
        expired.len()
    }

    /// Rebuild sessions (and their subscriptions in `router`) from the store.
    pub fn restore(&self, router: &Router, snapshot: &mut Snapshot) {
        let now = unix_now();
        for (key, record, queued) in snapshot.sessions.drain(..) {
            let Some((protocol, client_id)) = key.split_once('\0') else { continue };
            let protocol: Arc<str> = protocol.into();
            let session = Arc::new(Session::new(
                protocol.clone(),
                client_id.to_string(),
                self,
                true,
                record.expiry_secs,
            ));
            {
                session.note_kv_use();
                let mut inner = session.inner.lock();
                inner.stored = true;
                // A crash leaves no disconnect time: count from this start.
                inner.disconnected_at = Some(record.disconnected_at.unwrap_or(now));
                inner.next_subscription = record.next_subscription;
                for (seq, item) in queued {
                    inner.next_seq = inner.next_seq.max(seq + 1);
                    let message = Arc::new(item.message);
                    let queued = Queued {
                        subscription: item.subscription,
                        message,
                        from_retained: item.from_retained,
                        delivered: false,
                    };
                    inner.queue.insert(seq, queued);
                }
            }
            for (id, filter, options) in record.subscriptions {
                let key = router.subscribe(Subscription {
                    target: Target::Session(session.clone()),
                    id,
                    filter: filter.clone(),
                    kind: options.kind,
                    max_qos: options.max_qos,
                    group: options.group.clone(),
                    no_local: options.no_local,
                });
                session.inner.lock().subscriptions.insert(id, SessionSubscription { filter, options, key });
            }
            self.map.lock().insert((protocol, client_id.to_string()), session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wasm::bindings::types::Message;

    fn registry() -> Sessions {
        registry_with(QueueFullPolicy::DropOldest)
    }

    fn registry_with(policy: QueueFullPolicy) -> Sessions {
        let queue = QueueSettings { max: 2, policy };
        Sessions::new("sp", Arc::new(Store::memory().0), queue)
    }

    fn message(payload: &str) -> Arc<StoredMessage> {
        Arc::new(StoredMessage {
            published_at: unix_now(),
            message: Message { qos: Qos::AtLeastOnce, ..Message::new("t", payload) },
        })
    }

    #[test]
    fn offline_sessions_expire_after_their_expiry() {
        let (router, sessions) = (Router::default(), registry());
        let protocol: Arc<str> = "mqtt".into();
        let (mailbox, _inbox) = Mailbox::new(1, 1 << 20);
        let short = sessions.attach(&router, &protocol, "short", false, Some(10), 10, &mailbox).session;
        let forever = sessions.attach(&router, &protocol, "forever", false, None, 10, &mailbox).session;
        let gone = sessions.attach(&router, &protocol, "gone", false, Some(0), 10, &mailbox).session;
        sessions.release(&router, &short, 1);
        sessions.release(&router, &forever, 1);
        sessions.release(&router, &gone, 1);
        assert_eq!(sessions.len(), 2, "an expiry of zero ends with the connection");
        assert_eq!(sessions.sweep(&router, unix_now() + 5), 0);
        assert_eq!(sessions.sweep(&router, unix_now() + 11), 1);
        assert!(sessions.get("mqtt", "forever").is_some());
    }

    #[test]
    fn ending_a_session_clears_its_keys_when_it_used_them() {
        use crate::kv::{Condition, Kv, Ttl};
        let (router, sessions) = (Router::default(), registry());
        let protocol: Arc<str> = "mqtt".into();
        let kv = Arc::new(Kv::new(protocol.clone(), 1 << 20, Arc::new(Store::memory().0)));
        sessions.register_kv(protocol.clone(), kv.clone());
        let (mailbox, _inbox) = Mailbox::new(1, 1 << 20);
        let key = |client: &str| format!("{}k", crate::wasm::host::session_kv_prefix(client));
        for client in ["user", "quiet"] {
            kv.set(key(client), b"v".to_vec(), Condition::Always, Ttl::None).unwrap();
        }
        let user = sessions.attach(&router, &protocol, "user", true, Some(0), 10, &mailbox).session;
        user.note_kv_use();
        let quiet = sessions.attach(&router, &protocol, "quiet", true, Some(0), 10, &mailbox).session;
        sessions.release(&router, &user, 1);
        sessions.release(&router, &quiet, 1);
        assert_eq!(kv.get(&key("user")), None, "a session that used its keys loses them with it");
        // Never written by this session (a host call would have noted it):
        // ending it does not scan the protocol's keys.
        assert!(kv.get(&key("quiet")).is_some());
    }

    #[tokio::test]
    async fn in_flight_window_and_queue_cap() {
        let (router, sessions) = (Router::default(), registry());
        let (mailbox, mut inbox) = Mailbox::new(1, 1 << 20);
        let session = sessions.attach(&router, &"mqtt".into(), "c", false, None, 1, &mailbox).session;
        session.offer(1, message("a"), Qos::AtLeastOnce, false);
        session.offer(1, message("b"), Qos::AtLeastOnce, false);
        session.offer(1, message("c"), Qos::AtLeastOnce, false);
        assert_eq!(session.queued(), 2, "the oldest was dropped at the cap");
        assert_eq!(session.dropped(), 1);
        let mut batch = Vec::new();
        inbox.recv_batch(&mut batch, 10, usize::MAX).await;
        // 'a' went out first; dropping it at the cap freed the window for 'b'.
        let payloads: Vec<&[u8]> = batch.iter().map(|r| r.message.message.payload.as_slice()).collect();
        assert_eq!(payloads, vec![&b"a"[..], &b"b"[..]]);
        assert!(!session.ack(batch[0].delivery_id.unwrap()), "'a' is no longer pending");
        assert!(session.ack(batch[1].delivery_id.unwrap()));
        batch.clear();
        inbox.recv_batch(&mut batch, 10, usize::MAX).await;
        assert_eq!(batch[0].message.message.payload, b"c");
    }

    #[test]
    fn refuse_policy_keeps_the_oldest() {
        let (router, sessions) = (Router::default(), registry_with(QueueFullPolicy::Refuse));
        let (mailbox, _inbox) = Mailbox::new(1, 1 << 20);
        let session = sessions.attach(&router, &"mqtt".into(), "c", false, None, 10, &mailbox).session;
        sessions.release(&router, &session, 1);
        for payload in ["a", "b", "c"] {
            session.offer(1, message(payload), Qos::AtLeastOnce, false);
        }
        assert_eq!((session.queued(), session.dropped()), (2, 1));
        let inner = session.inner.lock();
        let kept: Vec<&[u8]> = inner.queue.values().map(|q| q.message.message.payload.as_slice()).collect();
        assert_eq!(kept, vec![&b"a"[..], &b"b"[..]]);
    }
}
