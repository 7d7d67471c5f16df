//! The router: protocol-neutral subscriptions and fan-out.
//!
//! Wildcard filters live in a trie keyed by topic level, so matching costs
//! the topic's depth rather than the number of filters. Exact filters are a
//! hash map, glob filters a list. A publish takes the read lock, matches,
//! picks one member of each subscription group, and pushes into each
//! subscriber's [`Mailbox`] without waiting; the publisher learns the number
//! of receivers synchronously, which Redis `PUBLISH` and NATS no-responders
//! need. Subscribing takes the write lock.
//!
//! The lock is sharded by thread ([`ShardedLock`]): every publish on every
//! worker takes it, and one lock word written by all of them moved between
//! the cores' caches on each publish. A reader locks only its thread's
//! shard; a writer (subscribe, unsubscribe) locks them all, which is rare.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};
use parking_lot::RwLock;
use rustc_hash::FxHashMap;

use crate::handoff::HeldDeliveries;
use crate::mailbox::{Mailbox, Pushed, Routed};
use crate::sessions::Session;
use crate::store::StoredMessage;
use crate::topic;
use crate::wasm::bindings::types::{FilterKind, Qos};

/// Router-wide subscription key.
pub type SubscriptionKey = u64;

/// Who a subscription delivers to.
pub enum Target {
    /// A connection without a session: deliveries go straight to its inbox.
    Connection(Arc<Mailbox>),
    /// A session: at-least-once deliveries are queued until acked, and wait
    /// there while the client is away.
    Session(Arc<Session>),
}

impl Target {
    /// The connection currently behind this target.
    fn connection(&self) -> Option<u64> {
        match self {
            Target::Connection(mailbox) => Some(mailbox.connection),
            Target::Session(session) => session.holder_connection(),
        }
    }

    /// Hand over one message.
    pub fn deliver(&self, id: u32, message: Arc<StoredMessage>, qos: Qos, from_retained: bool) {
        match self {
            Target::Connection(mailbox) => {
                if mailbox.push(Routed::live(id, message, qos, from_retained)) == Pushed::Dropped {
                    tracing::debug!(
                        connection = mailbox.connection,
                        "delivery dropped: outbound buffer full"
                    );
                }
            }
            Target::Session(session) => session.offer(id, message, qos, from_retained),
        }
    }
}

/// What the router needs to know about one subscription.
pub struct Subscription {
    /// Where matching messages go.
    pub target: Target,
    /// Connection-local id handed to the guest.
    pub id: u32,
    /// The filter as given.
    pub filter: String,
    /// How the filter matches.
    pub kind: FilterKind,
    /// QoS ceiling.
    pub max_qos: Qos,
    /// Subscription group, if any.
    pub group: Option<String>,
    /// Skip messages published by the same connection.
    pub no_local: bool,
}

/// Children of a trie node by level. Most nodes have a few, found faster
/// by comparing than by hashing (SipHash, since clients choose the levels);
/// past [`FEW_CHILDREN`] they move to a hash map, so a client that makes
/// thousands of siblings still gets a constant-time look-up.
enum Children {
    Few(Vec<(Box<str>, Node)>),
    Many(HashMap<Box<str>, Node>),
}

/// Most children a node keeps in a list.
const FEW_CHILDREN: usize = 8;

impl Default for Children {
    fn default() -> Self {
        Children::Few(Vec::new())
    }
}

impl Children {
    fn is_empty(&self) -> bool {
        match self {
            Children::Few(few) => few.is_empty(),
            Children::Many(many) => many.is_empty(),
        }
    }

    fn get(&self, level: &str) -> Option<&Node> {
        match self {
            Children::Few(few) => few.iter().find(|(name, _)| **name == *level).map(|(_, node)| node),
            Children::Many(many) => many.get(level),
        }
    }

    fn get_mut(&mut self, level: &str) -> Option<&mut Node> {
        match self {
            Children::Few(few) => few.iter_mut().find(|(name, _)| **name == *level).map(|(_, node)| node),
            Children::Many(many) => many.get_mut(level),
        }
    }

    fn get_or_insert(&mut self, level: &str) -> &mut Node {
        if let Children::Few(few) = self
            && few.len() == FEW_CHILDREN
            && !few.iter().any(|(name, _)| **name == *level)
        {
            *self = Children::Many(std::mem::take(few).into_iter().collect());
        }
        match self {
            Children::Few(few) => {
                let at = match few.iter().position(|(name, _)| **name == *level) {
                    Some(at) => at,
                    None => {
                        few.push((level.into(), Node::default()));
                        few.len() - 1
                    }
                };
                &mut few[at].1
            }
            Children::Many(many) => many.entry(level.into()).or_default(),
        }
    }

    fn remove(&mut self, level: &str) {
        match self {
            Children::Few(few) => few.retain(|(name, _)| **name != *level),
            Children::Many(many) => {
                many.remove(level);
            }
        }
    }
}

#[derive(Default)]
struct Node {
    children: Children,
    plus: Option<Box<Node>>,
    /// Filters ending at this node.
    here: Vec<SubscriptionKey>,
    /// Filters ending in `#` right below this node.
    rest: Vec<SubscriptionKey>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.plus.is_none() && self.here.is_empty() && self.rest.is_empty()
    }

    fn insert(&mut self, mut levels: topic::Levels<'_>, key: SubscriptionKey) {
        match levels.next() {
            None => self.here.push(key),
            Some("#") => self.rest.push(key),
            Some("+") => self.plus.get_or_insert_with(Default::default).insert(levels, key),
            Some(level) => self.children.get_or_insert(level).insert(levels, key),
        }
    }

    /// Remove `key`; returns whether this node became empty.
    fn remove(&mut self, mut levels: topic::Levels<'_>, key: SubscriptionKey) -> bool {
        match levels.next() {
            None => self.here.retain(|k| *k != key),
            Some("#") => self.rest.retain(|k| *k != key),
            Some("+") => {
                if let Some(plus) = &mut self.plus
                    && plus.remove(levels, key)
                {
                    self.plus = None;
                }
            }
            Some(level) => {
                if let Some(child) = self.children.get_mut(level)
                    && child.remove(levels, key)
                {
                    self.children.remove(level);
                }
            }
        }
        self.is_empty()
    }

    /// Keys of the subscriptions matching the topic whose remaining levels
    /// are `levels` (an iterator, so a publish allocates nothing to split
    /// its topic); `top` is true at the root.
    fn collect(
        &self,
        mut levels: topic::Levels<'_>,
        top: bool,
        dollar: bool,
        out: &mut Vec<SubscriptionKey>,
    ) {
        // A leading wildcard does not match `$` topics.
        let wild_ok = !(top && dollar);
        if wild_ok {
            out.extend_from_slice(&self.rest);
        }
        let Some(level) = levels.next() else {
            out.extend_from_slice(&self.here);
            return;
        };
        if let Some(child) = self.children.get(level) {
            child.collect(levels.clone(), false, dollar, out);
        }
        if wild_ok && let Some(plus) = &self.plus {
            plus.collect(levels, false, dollar, out);
        }
    }
}

#[derive(Default)]
struct Index {
    // Looked up for every match of every publish. Fx rather than SipHash:
    // the keys come from the router's own counter, so no client can choose
    // colliding ones. Keys clients choose (levels, channels) stay SipHash.
    subscriptions: FxHashMap<SubscriptionKey, Subscription>,
    wildcard: Node,
    exact: HashMap<String, Vec<SubscriptionKey>>,
    globs: Vec<SubscriptionKey>,
}

/// Round-robin cursors of subscription groups, by a hash of (group name,
/// filter): no allocation per publish, and a collision only makes two
/// groups share a rotation.
#[derive(Default)]
struct Groups {
    cursors: RwLock<HashMap<u64, Arc<AtomicUsize>>>,
}

impl Groups {
    fn cursor(&self, group: &str, filter: &str) -> Arc<AtomicUsize> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (group, filter).hash(&mut hasher);
        let key = hasher.finish();
        if let Some(cursor) = self.cursors.read().get(&key) {
            return cursor.clone();
        }
        self.cursors.write().entry(key).or_default().clone()
    }
}

/// The broker's router.
#[derive(Default)]
pub struct Router {
    index: ShardedLock<Index>,
    groups: Groups,
    next_key: AtomicU64,
}

impl Router {
    /// The index for reading. A writer that panicked leaves the lock
    /// poisoned; the index is still usable (each change is one insert or
    /// removal), so it is used as is rather than failing every later publish.
    fn read(&self) -> ShardedLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The index for changing; see [`Router::read`] on poisoning.
    fn write(&self) -> ShardedLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Add a subscription; the filter must already be validated for its kind.
    pub fn subscribe(&self, subscription: Subscription) -> SubscriptionKey {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let mut index = self.write();
        match subscription.kind {
            FilterKind::Wildcard => index.wildcard.insert(topic::levels(&subscription.filter), key),
            FilterKind::Exact => index.exact.entry(subscription.filter.clone()).or_default().push(key),
            FilterKind::Glob => index.globs.push(key),
        }
        index.subscriptions.insert(key, subscription);
        key
    }

    /// Remove a subscription; unknown keys are ignored.
    pub fn unsubscribe(&self, key: SubscriptionKey) {
        let mut index = self.write();
        let Some(subscription) = index.subscriptions.remove(&key) else {
            return;
        };
        match subscription.kind {
            FilterKind::Wildcard => {
                index.wildcard.remove(topic::levels(&subscription.filter), key);
            }
            FilterKind::Exact => {
                if let Some(keys) = index.exact.get_mut(&subscription.filter) {
                    keys.retain(|k| *k != key);
                    if keys.is_empty() {
                        index.exact.remove(&subscription.filter);
                    }
                }
            }
            FilterKind::Glob => index.globs.retain(|k| *k != key),
        }
    }

    /// Distinct filters of `kind` with their number of subscriptions,
    /// sorted, only those matching glob `pattern` if given, at most `limit`.
    /// A scan of every subscription: for introspection, not the hot path.
    pub fn subscription_counts(
        &self,
        kind: FilterKind,
        pattern: Option<&str>,
        limit: usize,
    ) -> Vec<(String, u32)> {
        let index = self.read();
        let mut counts: std::collections::BTreeMap<&str, u32> = std::collections::BTreeMap::new();
        for subscription in index.subscriptions.values() {
            if subscription.kind == kind
                && pattern.is_none_or(|p| topic::glob_matches(p, &subscription.filter))
            {
                *counts.entry(subscription.filter.as_str()).or_default() += 1;
            }
        }
        counts.into_iter().take(limit).map(|(filter, n)| (filter.to_string(), n)).collect()
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.read().subscriptions.len()
    }

    /// Whether there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Route `message` from connection `publisher`; returns how many
    /// subscriptions it was handed to.
    pub fn publish(&self, message: Arc<StoredMessage>, publisher: u64) -> u32 {
        let routed = Arc::clone(&message);
        self.publish_with(&message.message.topic, publisher, move || routed)
    }

    /// Route a message to `topic` from connection `publisher`, made by
    /// `make` only once a receiver is found: a guest's publish that nobody
    /// receives (Redis `PUBLISH` to an empty channel) copies nothing out of
    /// the guest. Returns how many subscriptions it was handed to.
    pub fn publish_with(
        &self,
        topic: &str,
        publisher: u64,
        make: impl FnOnce() -> Arc<StoredMessage>,
    ) -> u32 {
        self.route(topic, publisher, make, deliver)
    }

    /// [`Router::publish_with`], with the deliveries to connections held in
    /// `held` until it hands them over: for a batch of publishes.
    pub fn publish_held(
        &self,
        topic: &str,
        publisher: u64,
        make: impl FnOnce() -> Arc<StoredMessage>,
        held: &mut HeldDeliveries,
    ) -> u32 {
        self.route(topic, publisher, make, |subscription, message| held.deliver(subscription, message))
    }

    /// Match `topic` and call `deliver` for each receiver.
    fn route(
        &self,
        topic: &str,
        publisher: u64,
        make: impl FnOnce() -> Arc<StoredMessage>,
        mut deliver: impl FnMut(&Subscription, Arc<StoredMessage>),
    ) -> u32 {
        let index = self.read();
        let mut keys = Vec::new();
        index.wildcard.collect(topic::levels(topic), true, topic.starts_with('$'), &mut keys);
        // Only Redis `SUBSCRIBE` makes exact subscriptions: without any, a
        // publish skips hashing its topic.
        if !index.exact.is_empty()
            && let Some(exact) = index.exact.get(topic)
        {
            keys.extend_from_slice(exact);
        }
        keys.extend(
            index.globs.iter().filter(|key| topic::glob_matches(&index.subscriptions[key].filter, topic)),
        );

        let mut receivers = 0;
        // The message is made for the first receiver. Each receiver is
        // handed it when the next is found, and the last takes the
        // publisher's reference: with one receiver, no reference count is
        // touched here (a clone and a drop, two atomic operations, on a
        // count the subscriber's thread changes too).
        let mut make = Some(make);
        let mut message = None;
        let mut held: Option<&Subscription> = None;
        let mut hand = |subscription| {
            if let Some(previous) = held.replace(subscription) {
                if let Some(message) = &message {
                    deliver(previous, Arc::clone(message));
                }
            } else {
                message = make.take().map(|make| make());
            }
            receivers += 1;
        };
        // A group is a group name with a filter (MQTT `$share/NAME/FILTER`,
        // a NATS queue on one subject): each gets the message once.
        let mut grouped: HashMap<(&str, &str), Vec<&Subscription>> = HashMap::new();
        for key in keys {
            let subscription = &index.subscriptions[&key];
            if subscription.no_local && subscription.target.connection() == Some(publisher) {
                continue;
            }
            match &subscription.group {
                Some(group) => grouped.entry((group, &subscription.filter)).or_default().push(subscription),
                None => hand(subscription),
            }
        }
        for ((group, filter), mut members) in grouped {
            // Prefer members whose client is connected; stable order, so the
            // cursor rotates fairly across publishes.
            let online: Vec<&Subscription> =
                members.iter().copied().filter(|s| s.target.connection().is_some()).collect();
            if !online.is_empty() {
                members = online;
            }
            members.sort_unstable_by_key(|s| (s.target.connection(), s.id));
            let turn = self.groups.cursor(group, filter).fetch_add(1, Ordering::Relaxed);
            hand(members[turn % members.len()]);
        }
        if let (Some(last), Some(message)) = (held, message) {
            deliver(last, message);
        }
        receivers
    }
}

/// Hand `message` to the target of `subscription` now, at the lower of
/// the two QoS levels.
pub fn deliver(subscription: &Subscription, message: Arc<StoredMessage>) {
    let qos = min_qos(message.message.qos, subscription.max_qos);
    subscription.target.deliver(subscription.id, message, qos, false);
}

/// The lower of two QoS levels.
pub fn min_qos(a: Qos, b: Qos) -> Qos {
    fn rank(q: Qos) -> u8 {
        match q {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
            Qos::ExactlyOnce => 2,
        }
    }
    if rank(a) <= rank(b) { a } else { b }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::Inbox;
    use crate::wasm::bindings::types::Message;

    fn message(topic: &str) -> Arc<StoredMessage> {
        Arc::new(StoredMessage { published_at: 0, message: Message::new(topic, b"x".to_vec()) })
    }

    fn subscribe(
        router: &Router,
        mailbox: &Arc<Mailbox>,
        id: u32,
        filter: &str,
        kind: FilterKind,
        group: Option<&str>,
    ) -> SubscriptionKey {
        router.subscribe(Subscription {
            target: Target::Connection(mailbox.clone()),
            id,
            filter: filter.into(),
            kind,
            max_qos: Qos::AtLeastOnce,
            group: group.map(Into::into),
            no_local: false,
        })
    }

    async fn drain(inbox: &mut Inbox) -> Vec<u32> {
        let mut batch = Vec::new();
        while let Ok(n) = tokio::time::timeout(
            std::time::Duration::from_millis(5),
            inbox.recv_batch(&mut batch, 100, usize::MAX),
        )
        .await
        {
            if n == 0 {
                break;
            }
        }
        batch.iter().map(|r| r.subscription).collect()
    }

    #[tokio::test]
    async fn wildcard_exact_and_glob_subscriptions_match() {
        let router = Router::default();
        let (mailbox, mut inbox) = Mailbox::new(1, 1 << 20);
        subscribe(&router, &mailbox, 1, "a/+/c", FilterKind::Wildcard, None);
        subscribe(&router, &mailbox, 2, "a/#", FilterKind::Wildcard, None);
        subscribe(&router, &mailbox, 3, "a/b/c", FilterKind::Exact, None);
        subscribe(&router, &mailbox, 4, "a/b*", FilterKind::Glob, None);
        subscribe(&router, &mailbox, 5, "#", FilterKind::Wildcard, None);
        assert_eq!(router.publish(message("a/b/c"), 9), 5);
        assert_eq!(drain(&mut inbox).await, vec![5, 2, 1, 3, 4]);
        assert_eq!(router.publish(message("a/b"), 9), 3);
        assert_eq!(router.publish(message("$SYS/a"), 9), 0);
    }

    #[tokio::test]
    async fn a_message_is_made_once_and_only_for_receivers() {
        let router = Router::default();
        let (mailbox, mut inbox) = Mailbox::new(1, 1 << 20);
        let made = std::cell::Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            message("a/b")
        };
        assert_eq!(router.publish_with("a/b", 9, make), 0);
        assert_eq!(made.get(), 0, "nobody receives it, so it is not made");
        subscribe(&router, &mailbox, 1, "a/+", FilterKind::Wildcard, None);
        subscribe(&router, &mailbox, 2, "#", FilterKind::Wildcard, None);
        subscribe(&router, &mailbox, 3, "a/b", FilterKind::Exact, None);
        assert_eq!(router.publish_with("a/b", 9, make), 3);
        assert_eq!(made.get(), 1, "one message is shared by every receiver");
        assert_eq!(drain(&mut inbox).await, vec![2, 1, 3]);
    }

    #[tokio::test]
    async fn held_publishes_reach_the_same_receivers_once_handed_over() {
        let router = Router::default();
        let (mailbox, mut inbox) = Mailbox::new(1, 1 << 20);
        subscribe(&router, &mailbox, 1, "a/+", FilterKind::Wildcard, None);
        subscribe(&router, &mailbox, 2, "a/b", FilterKind::Exact, None);
        let mut held = HeldDeliveries::default();
        assert_eq!(router.publish_held("a/b", 9, || message("a/b"), &mut held), 2);
        assert_eq!(router.publish_held("a/c", 9, || message("a/c"), &mut held), 1);
        assert_eq!(router.publish_held("x", 9, || message("x"), &mut held), 0);
        assert!(inbox.try_take(10, usize::MAX).is_empty(), "held until handed over");
        held.hand_over();
        assert_eq!(drain(&mut inbox).await, vec![1, 2, 1]);
    }

    #[tokio::test]
    async fn unsubscribe_prunes() {
        let router = Router::default();
        let (mailbox, _inbox) = Mailbox::new(1, 1 << 20);
        let key = subscribe(&router, &mailbox, 1, "a/+/c", FilterKind::Wildcard, None);
        router.unsubscribe(key);
        assert!(router.is_empty());
        assert!(router.read().wildcard.is_empty());
        assert_eq!(router.publish(message("a/b/c"), 9), 0);
    }

    /// A node's children move from a list to a hash map past
    /// `FEW_CHILDREN`; matching and pruning work on both sides of that.
    #[tokio::test]
    async fn many_siblings_match_and_prune() {
        let router = Router::default();
        let (mailbox, mut inbox) = Mailbox::new(1, 1 << 20);
        let siblings = 3 * FEW_CHILDREN as u32;
        let keys: Vec<SubscriptionKey> = (0..siblings)
            .map(|i| subscribe(&router, &mailbox, i, &format!("s/{i}/x"), FilterKind::Wildcard, None))
            .collect();
        assert!(matches!(router.read().wildcard.children.get("s").unwrap().children, Children::Many(_)));
        for i in [0, FEW_CHILDREN as u32, siblings - 1] {
            assert_eq!(router.publish(message(&format!("s/{i}/x")), 9), 1);
            assert_eq!(drain(&mut inbox).await, vec![i]);
        }
        assert_eq!(router.publish(message("s/none/x"), 9), 0);
        for key in keys {
            router.unsubscribe(key);
        }
        assert!(router.read().wildcard.is_empty(), "every level pruned");
        subscribe(&router, &mailbox, 1, "s/a", FilterKind::Wildcard, None);
        assert!(matches!(router.read().wildcard.children.get("s").unwrap().children, Children::Few(_)));
        assert_eq!(router.publish(message("s/a"), 9), 1);
    }

    #[tokio::test]
    async fn group_members_take_turns() {
        let router = Router::default();
        let (a, mut inbox_a) = Mailbox::new(1, 1 << 20);
        let (b, mut inbox_b) = Mailbox::new(2, 1 << 20);
        subscribe(&router, &a, 1, "jobs/#", FilterKind::Wildcard, Some("workers"));
        subscribe(&router, &b, 1, "jobs/#", FilterKind::Wildcard, Some("workers"));
        for _ in 0..10 {
            assert_eq!(router.publish(message("jobs/x"), 9), 1);
        }
        assert_eq!(drain(&mut inbox_a).await.len(), 5);
        assert_eq!(drain(&mut inbox_b).await.len(), 5);
    }

    #[tokio::test]
    async fn no_local_skips_publisher() {
        let router = Router::default();
        let (mailbox, _inbox) = Mailbox::new(7, 1 << 20);
        router.subscribe(Subscription {
            target: Target::Connection(mailbox.clone()),
            id: 1,
            filter: "t".into(),
            kind: FilterKind::Wildcard,
            max_qos: Qos::AtMostOnce,
            group: None,
            no_local: true,
        });
        assert_eq!(router.publish(message("t"), 7), 0);
        assert_eq!(router.publish(message("t"), 8), 1);
    }

    #[tokio::test]
    async fn full_mailbox_drops_at_most_once() {
        let router = Router::default();
        let (mailbox, _inbox) = Mailbox::new(1, 100);
        subscribe(&router, &mailbox, 1, "t", FilterKind::Wildcard, None);
        for _ in 0..5 {
            router.publish(message("t"), 9);
        }
        assert_eq!(mailbox.dropped(), 4);
    }

    #[tokio::test]
    async fn subscription_qos_is_a_ceiling() {
        let router = Router::default();
        let (mailbox, mut inbox) = Mailbox::new(1, 1 << 20);
        router.subscribe(Subscription {
            target: Target::Connection(mailbox.clone()),
            id: 1,
            filter: "t".into(),
            kind: FilterKind::Wildcard,
            max_qos: Qos::AtMostOnce,
            group: None,
            no_local: false,
        });
        let mut stored = (*message("t")).clone();
        stored.message.qos = Qos::ExactlyOnce;
        router.publish(Arc::new(stored), 9);
        let mut batch = Vec::new();
        inbox.recv_batch(&mut batch, 10, usize::MAX).await;
        assert_eq!(batch[0].qos, Qos::AtMostOnce);
        assert_eq!(min_qos(Qos::AtLeastOnce, Qos::ExactlyOnce), Qos::AtLeastOnce);
    }
}
