//! The `host` interface, implemented natively for every guest.
//!
//! Nothing a guest passes is trusted: sizes are charged against the per-call
//! budget, topics and filters are validated, and every publish and subscribe
//! is checked against the protocol's grants. A refusal the guest can handle
//! is returned as a `host-error`; a rule break (flooding, calling from
//! `probe`) is a trap that ends the connection.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::AuthError;
use crate::auth::acl::Acl;
use crate::handoff::HeldDeliveries;
use crate::kv::{Condition, KvError, Ttl};
use crate::metrics::ProtocolMetrics;
use crate::registry::MAX_LISTED;
use crate::router::{Subscription, Target, min_qos};
use crate::sessions::unix_now;
use crate::store::StoredMessage;
use crate::store::Ticket;
use crate::topic;
use crate::wasm::bindings::sandport::protocol::{host, types};
use crate::wasm::bindings::types::{
    ConnectionSummary, Credentials, ErrorCode, FilterKind, HostError, KvCondition, KvScope, KvSetOptions,
    LogLevel, Message, Principal, PublishOutcome, Qos, RetainedHandling, SessionInfo, SessionOptions,
    SubscribeOptions, Will,
};
use crate::wasm::borrowed::MessageRef;
use crate::wasm::cpu::HostTime;
use crate::wasm::guest_text::GuestText;
use crate::wasm::state::{GuestState, OwnedSubscription, Violation};

/// Most subscriptions one connection may hold.
pub const MAX_SUBSCRIPTIONS: usize = 10_000;

/// Longest client id, reason or group name a guest may pass.
const MAX_NAME_BYTES: usize = 1024;

/// Longest log line kept from a guest.
const MAX_LOG_BYTES: usize = 1024;

/// Most deliveries one `take-deliveries` call returns.
const MAX_TAKE: usize = 256;

/// Most headers on one message.
pub const MAX_HEADERS: usize = 1024;

/// Most messages one `publish-batch` call takes. It bounds what the host
/// allocates for a call (a lifted view and a result per message) and how
/// long the call runs, which the epoch deadline cannot interrupt: a guest
/// that passed its whole memory as a list of empty messages would
/// otherwise make the host allocate several times that memory.
pub const MAX_PUBLISH_BATCH: usize = 1024;

/// Refuse a `publish-batch` of more than [`MAX_PUBLISH_BATCH`] messages.
pub fn check_batch_len(len: usize) -> wasmtime::Result<()> {
    if len > MAX_PUBLISH_BATCH {
        return Err(Violation(format!(
            "passed {len} messages to publish-batch, which takes at most {MAX_PUBLISH_BATCH}"
        ))
        .into());
    }
    Ok(())
}

fn kv_refusal(error: KvError) -> HostError {
    let code = match error {
        KvError::Quota(_) => ErrorCode::QuotaExceeded,
        KvError::NotAnInteger | KvError::Overflow => ErrorCode::Invalid,
    };
    HostError { code, message: error.to_string() }
}

fn refuse<T>(code: ErrorCode, message: impl Into<String>) -> wasmtime::Result<Result<T, HostError>> {
    Ok(Err(HostError { code, message: message.into() }))
}

/// The refusal for anything before the client authenticated.
fn unauthenticated() -> HostError {
    HostError { code: ErrorCode::NotAuthorized, message: "authentication required".into() }
}

impl GuestState {
    /// The client id `%c` stands for in access rules: the attached session's.
    fn client_id(&self) -> &str {
        self.session.as_ref().map_or("", |s| s.client_id.as_str())
    }

    /// The access rules of the client and its user name, or a refusal
    /// while it is not authenticated.
    fn access(&self) -> Result<(&Acl, &str), HostError> {
        match (&self.link, &self.principal) {
            (Some(link), Some(identity)) => Ok((link.broker.auth.acl(identity), identity.name())),
            _ => Err(unauthenticated()),
        }
    }

    /// [`host::Host::attach_session`]'s work, kept out of line: its frame
    /// is gone before wasmtime lowers the result, which calls into the
    /// guest's allocator, the deepest point of a CONNECT on the fiber stack.
    /// Inlined (as whole-program LTO did), an idle connection kept two pages
    /// of that stack instead of one.
    #[inline(never)]
    fn attach_session_outlined(
        &mut self,
        client_id: String,
        options: SessionOptions,
    ) -> wasmtime::Result<Result<SessionInfo, HostError>> {
        let _timed = HostTime::enter();
        let link = self.link()?;
        let (broker, mailbox) = (link.broker.clone(), link.mailbox.clone());
        self.charge(client_id.len())?;
        if client_id.len() > MAX_NAME_BYTES {
            return refuse(ErrorCode::Invalid, "client id longer than 1024 bytes");
        }
        if self.session.is_some() {
            return refuse(ErrorCode::Invalid, "a session is already attached");
        }
        if self.principal.is_none() {
            return Ok(Err(unauthenticated()));
        }
        let attached = broker.sessions.attach(
            &broker.router,
            &self.env.name,
            &client_id,
            options.clean,
            options.expiry_secs,
            options.max_inflight,
            &mailbox,
        );
        let info = SessionInfo {
            client_id: attached.session.client_id.clone(),
            present: attached.present,
            subscriptions: attached.subscriptions,
        };
        self.session = Some(attached.session);
        Ok(Ok(info))
    }

    /// Validate a message the guest wants published (now or as a will).
    fn check_message(&self, message: &MessageRef<'_>) -> Result<(), HostError> {
        let invalid = |m: String| HostError { code: ErrorCode::Invalid, message: m };
        topic::validate_topic(&message.topic).map_err(|e| invalid(format!("topic {e}")))?;
        if let Some(reply_to) = &message.reply_to {
            topic::validate_topic(reply_to).map_err(|e| invalid(format!("reply-to topic {e}")))?;
        }
        if message.header_count > MAX_HEADERS {
            return Err(invalid(format!("more than {MAX_HEADERS} headers")));
        }
        if !self.env.grants.publish.iter().any(|grant| topic::matches_levels(grant, &message.topic)) {
            return Err(HostError {
                code: ErrorCode::NotAuthorized,
                message: format!("publishing to `{}` is not granted", message.topic),
            });
        }
        let (acl, user) = self.access()?;
        if !acl.may_publish(&message.topic, user, self.client_id()) {
            return Err(HostError {
                code: ErrorCode::NotAuthorized,
                message: format!("user `{user}` may not publish to `{}`", message.topic),
            });
        }
        Ok(())
    }

    /// Validate a filter and check it against the subscribe grants.
    fn check_filter(&self, filter: &str, kind: FilterKind) -> Result<(), HostError> {
        let checked = match kind {
            FilterKind::Wildcard => topic::validate_filter(filter),
            FilterKind::Exact | FilterKind::Glob => topic::validate_exact_or_glob(filter),
        };
        checked.map_err(|e| HostError { code: ErrorCode::Invalid, message: format!("filter {e}") })?;
        let grants = &self.env.grants.subscribe;
        let granted = match kind {
            FilterKind::Wildcard => grants.iter().any(|g| topic::covers(g, filter)),
            FilterKind::Exact => grants.iter().any(|g| topic::matches_levels(g, filter)),
            FilterKind::Glob => grants.iter().any(|g| topic::covers_glob(g, filter)),
        };
        if !granted {
            return Err(HostError {
                code: ErrorCode::NotAuthorized,
                message: format!("subscribing to `{filter}` is not granted"),
            });
        }
        let (acl, user) = self.access()?;
        if !acl.may_subscribe(filter, kind, user, self.client_id()) {
            return Err(HostError {
                code: ErrorCode::NotAuthorized,
                message: format!("user `{user}` may not subscribe to `{filter}`"),
            });
        }
        Ok(())
    }

    /// The key-value key for `key` in `scope`.
    fn kv_key(&self, scope: KvScope, key: &str) -> Result<String, HostError> {
        self.access()?;
        if key.len() > crate::kv::MAX_KEY_BYTES {
            return Err(HostError { code: ErrorCode::Invalid, message: "key too long".into() });
        }
        match scope {
            KvScope::Protocol => Ok(format!("p\0{key}")),
            KvScope::Session => match &self.session {
                Some(session) => {
                    session.note_kv_use();
                    Ok(format!("{}{key}", session_kv_prefix(&session.client_id)))
                }
                None => Err(HostError { code: ErrorCode::Invalid, message: "no session attached".into() }),
            },
        }
    }
}

/// What a publish decided, to be recorded in the guest's state once the
/// guest's memory is no longer borrowed.
pub struct Published {
    outcome: Result<PublishOutcome, HostError>,
    /// The call's input count with this message charged.
    call_input: usize,
    /// Set for a durable publish: the guest's output waits for it.
    ticket: Option<Ticket>,
}

impl GuestState {
    /// Room for `len` more bytes of output, or the violation; outside a
    /// connection (from `describe` or `probe`) there is none.
    pub fn outbound_room(&self, len: usize) -> wasmtime::Result<()> {
        self.link()?;
        // Deliveries are batched to half this limit, so honest output fits.
        let limit = self.env.limits.outbound_buffer_bytes;
        if self.out.len() + len > limit {
            return Err(Violation(format!("sent more than the {limit}-byte outbound buffer holds")).into());
        }
        Ok(())
    }

    /// `host.publish`: charge, check and route `message`. It is copied out
    /// of the guest only when it is kept: retained, or received. Its
    /// deliveries to connections wait in `held` when one is given (a
    /// `publish-batch`), and are pushed now otherwise.
    pub fn publish_ref(
        &self,
        message: MessageRef<'_>,
        held: Option<&mut HeldDeliveries>,
    ) -> wasmtime::Result<Published> {
        let _timed = HostTime::enter();
        // Outside a connection (from `describe` or `probe`) it is a violation.
        let link = self.link()?;
        let call_input = self.charged(message.bytes())?;
        if let Err(refusal) = self.check_message(&message) {
            return Ok(Published { outcome: Err(refusal), call_input, ticket: None });
        }
        let durable = message.retain || message.qos != Qos::AtMostOnce;
        // Borrowed, not cloned: an `Arc` clone and drop of the broker were
        // two atomic operations per message on a count every connection shares.
        let broker = &link.broker;
        let retained = message.retain.then(|| {
            let stored = Arc::new(StoredMessage::new(message.to_message()));
            broker.store.submit(vec![broker.retained.update(&stored)]);
            stored
        });
        let make = || retained.unwrap_or_else(|| Arc::new(StoredMessage::new(message.to_message())));
        let receivers = match held {
            Some(held) => broker.router.publish_held(&message.topic, link.id(), make, held),
            None => broker.router.publish_with(&message.topic, link.id(), make),
        };
        // The guest's acknowledgement goes out only once this is on disk.
        let ticket = durable.then(|| broker.store.barrier());
        Ok(Published { outcome: Ok(PublishOutcome { receivers }), call_input, ticket })
    }

    /// Record what [`GuestState::publish_ref`] decided; returns the guest's answer.
    pub fn record_publish(&mut self, published: Published) -> Result<PublishOutcome, HostError> {
        let Published { outcome, call_input, ticket } = published;
        self.call_input = call_input;
        if let Ok(PublishOutcome { receivers }) = outcome {
            // Counted into the metric when the call ends (`Guest::end_call`).
            self.publishes = self.publishes.saturating_add(1);
            self.handed_off |= receivers > 0;
        }
        if ticket.is_some() {
            self.ticket = ticket;
        }
        outcome
    }
}

/// Prefix of session-scoped key-value entries of `client_id`.
pub fn session_kv_prefix(client_id: &str) -> String {
    format!("s\0{client_id}\0")
}

impl types::Host for GuestState {}

// Each host function starts a `HostTime`: while a guest call is measured
// (`wasm/cpu.rs`) it clocks the time spent here, which is not the guest's;
// otherwise it costs one thread-local read.
impl host::Host for GuestState {
    fn send(&mut self, bytes: Vec<u8>) -> wasmtime::Result<()> {
        // Linked by `wasm/borrowed.rs`, which copies from guest memory.
        let _timed = HostTime::enter();
        self.outbound_room(bytes.len())?;
        self.out.extend_from_slice(&bytes);
        Ok(())
    }

    fn close(&mut self, reason: String) -> wasmtime::Result<()> {
        let _timed = HostTime::enter();
        self.link()?;
        self.charge(reason.len())?;
        let mut reason = reason;
        reason.truncate(reason.floor_char_boundary(MAX_NAME_BYTES));
        self.close.get_or_insert(reason);
        Ok(())
    }

    fn publish(&mut self, message: Message) -> wasmtime::Result<Result<PublishOutcome, HostError>> {
        // Linked by `wasm/borrowed.rs`, which reads the message in place;
        // this is the same publish for a message already copied out.
        let published = self.publish_ref(MessageRef::of(&message), None)?;
        Ok(self.record_publish(published))
    }

    fn publish_batch(
        &mut self,
        messages: Vec<Message>,
    ) -> wasmtime::Result<Vec<Result<PublishOutcome, HostError>>> {
        // Linked by `wasm/borrowed.rs` as well; this is the same batch copied out.
        check_batch_len(messages.len())?;
        messages.into_iter().map(|message| self.publish(message)).collect()
    }

    fn subscribe(
        &mut self,
        filter: String,
        options: SubscribeOptions,
    ) -> wasmtime::Result<Result<u32, HostError>> {
        let _timed = HostTime::enter();
        let link = self.link()?;
        let (broker, mailbox) = (link.broker.clone(), link.mailbox.clone());
        self.charge(filter.len() + options.group.as_ref().map_or(0, String::len))?;
        if let Err(refusal) = self.check_filter(&filter, options.kind) {
            return Ok(Err(refusal));
        }
        if let Some(group) = &options.group
            && (group.is_empty() || group.len() > MAX_NAME_BYTES)
        {
            return refuse(ErrorCode::Invalid, "group names are 1 to 1024 bytes");
        }
        let held = self.subscriptions.len() + self.session.as_ref().map_or(0, |s| s.subscription_count());
        if held >= MAX_SUBSCRIPTIONS {
            return refuse(ErrorCode::QuotaExceeded, format!("more than {MAX_SUBSCRIPTIONS} subscriptions"));
        }
        let is_new = match &self.session {
            Some(session) => !session.has_filter(&filter, &options),
            None => !self
                .subscriptions
                .values()
                .any(|s| s.filter == filter && s.kind == options.kind && s.group == options.group),
        };
        let (id, target) = match &self.session {
            Some(session) => (session.next_subscription_id(), Target::Session(session.clone())),
            None => {
                let id = self.next_subscription;
                self.next_subscription = self.next_subscription.checked_add(1).unwrap_or(1);
                (id, Target::Connection(mailbox.clone()))
            }
        };
        let key = broker.router.subscribe(Subscription {
            target,
            id,
            filter: filter.clone(),
            kind: options.kind,
            max_qos: options.max_qos,
            group: options.group.clone(),
            no_local: options.no_local,
        });
        // Shared subscriptions get no retained messages (MQTT 5 4.8.2).
        let send_retained = options.group.is_none()
            && match options.retained {
                RetainedHandling::Send => true,
                RetainedHandling::SendIfNew => is_new,
                RetainedHandling::Skip => false,
            };
        let retained = if send_retained {
            broker.retained.matching(&filter, options.kind, unix_now())
        } else {
            Vec::new()
        };
        let max_qos = options.max_qos;
        let target = match &self.session {
            Some(session) => {
                session.add_subscription(id, filter, options, key);
                Target::Session(session.clone())
            }
            None => {
                let owned = OwnedSubscription { key, filter, kind: options.kind, group: options.group };
                self.subscriptions.insert(id, owned);
                Target::Connection(mailbox)
            }
        };
        for message in retained {
            let qos = min_qos(message.message.qos, max_qos);
            target.deliver(id, message, qos, true);
        }
        Ok(Ok(id))
    }

    fn unsubscribe(&mut self, subscription: u32) -> wasmtime::Result<Result<(), HostError>> {
        let _timed = HostTime::enter();
        let broker = self.link()?.broker.clone();
        let key = match self.subscriptions.remove(&subscription) {
            Some(owned) => Some(owned.key),
            None => self.session.as_ref().and_then(|s| s.remove_subscription(subscription)),
        };
        match key {
            Some(key) => {
                broker.router.unsubscribe(key);
                Ok(Ok(()))
            }
            None => refuse(ErrorCode::Invalid, format!("no subscription {subscription} on this connection")),
        }
    }

    fn take_deliveries(&mut self, max: u32) -> wasmtime::Result<Vec<u8>> {
        let _timed = HostTime::enter();
        self.link()?;
        let max = (max as usize).min(MAX_TAKE);
        let mut taken = match self.inbox.as_mut() {
            // Half the outbound buffer, as for `on-deliver` batches.
            Some(inbox) => inbox.try_take(max, self.env.limits.outbound_buffer_bytes / 2),
            None => Vec::new(),
        };
        let mut packed = Vec::new();
        self.pack_deliveries(&mut taken, &mut packed);
        Ok(packed)
    }

    fn ack(&mut self, delivery: u64) -> wasmtime::Result<Result<(), HostError>> {
        let _timed = HostTime::enter();
        self.link()?;
        let acked = self.unacked.remove(&delivery) || self.session.as_ref().is_some_and(|s| s.ack(delivery));
        if acked {
            Ok(Ok(()))
        } else {
            refuse(ErrorCode::Invalid, format!("no unacknowledged delivery {delivery}"))
        }
    }

    fn authenticate(&mut self, credentials: Credentials) -> wasmtime::Result<Result<Principal, HostError>> {
        let _timed = HostTime::enter();
        let link = self.link()?;
        let (broker, conn) = (link.broker.clone(), link.auth.clone());
        let size = credentials.username.as_ref().map_or(0, String::len)
            + credentials.password.as_ref().map_or(0, Vec::len)
            + credentials.token.as_ref().map_or(0, String::len);
        self.charge(size)?;
        match broker.auth.authenticate(&credentials, &conn) {
            Ok(identity) => {
                let user = identity.name().to_string();
                self.principal = Some(identity);
                Ok(Ok(Principal { user }))
            }
            Err(refusal) => {
                let metrics = &self.env.metrics;
                let counter = if matches!(refusal, AuthError::Blocked(_)) {
                    &metrics.auth_blocked
                } else {
                    &metrics.auth_failures
                };
                ProtocolMetrics::bump(counter);
                tracing::info!(protocol = %self.env.name, peer = %conn.peer, "authentication refused: {refusal}");
                refuse(ErrorCode::NotAuthorized, refusal.to_string())
            }
        }
    }

    fn attach_session(
        &mut self,
        client_id: String,
        options: SessionOptions,
    ) -> wasmtime::Result<Result<SessionInfo, HostError>> {
        self.attach_session_outlined(client_id, options)
    }

    fn set_session_expiry(&mut self, expiry_secs: Option<u32>) -> wasmtime::Result<Result<(), HostError>> {
        let _timed = HostTime::enter();
        self.link()?;
        match &self.session {
            Some(session) => {
                session.set_expiry(expiry_secs);
                Ok(Ok(()))
            }
            None => refuse(ErrorCode::Invalid, "no session attached"),
        }
    }

    fn set_will(&mut self, will: Option<Will>) -> wasmtime::Result<Result<(), HostError>> {
        let _timed = HostTime::enter();
        self.link()?;
        if let Some(will) = &will {
            let message = MessageRef::of(&will.message);
            self.charge(message.bytes())?;
            if let Err(refusal) = self.check_message(&message) {
                return Ok(Err(refusal));
            }
        }
        self.will = will;
        Ok(Ok(()))
    }

    fn set_idle_timeout(&mut self, ms: u32) -> wasmtime::Result<()> {
        let _timed = HostTime::enter();
        self.link()?;
        self.timers.idle = Some((ms > 0).then(|| Duration::from_millis(ms.into())));
        Ok(())
    }

    fn set_timer(&mut self, ms: u32) -> wasmtime::Result<()> {
        let _timed = HostTime::enter();
        self.link()?;
        self.timers.timer = Some((ms > 0).then(|| Duration::from_millis(ms.into())));
        Ok(())
    }

    fn kv_get(
        &mut self,
        scope: KvScope,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, HostError>> {
        let _timed = HostTime::enter();
        self.link()?;
        self.charge(key.len())?;
        match self.kv_key(scope, &key) {
            Ok(key) => Ok(Ok(self.env.kv.get(&key))),
            Err(refusal) => Ok(Err(refusal)),
        }
    }

    fn kv_set(
        &mut self,
        scope: KvScope,
        key: String,
        value: Vec<u8>,
        options: KvSetOptions,
    ) -> wasmtime::Result<Result<bool, HostError>> {
        let _timed = HostTime::enter();
        self.link()?;
        self.charge(key.len() + value.len())?;
        let key = match self.kv_key(scope, &key) {
            Ok(key) => key,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let condition = match options.condition {
            KvCondition::Always => Condition::Always,
            KvCondition::IfAbsent => Condition::IfAbsent,
            KvCondition::IfPresent => Condition::IfPresent,
        };
        let ttl = match (options.keep_ttl, options.ttl_ms) {
            (true, _) => Ttl::Keep,
            (false, Some(ms)) => Ttl::After(ms),
            (false, None) => Ttl::None,
        };
        Ok(self.env.kv.set(key, value, condition, ttl).map_err(kv_refusal))
    }

    fn kv_delete(&mut self, scope: KvScope, key: String) -> wasmtime::Result<Result<bool, HostError>> {
        let _timed = HostTime::enter();
        self.link()?;
        self.charge(key.len())?;
        match self.kv_key(scope, &key) {
            Ok(key) => Ok(Ok(self.env.kv.delete(&key))),
            Err(refusal) => Ok(Err(refusal)),
        }
    }

    fn kv_increment(
        &mut self,
        scope: KvScope,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, HostError>> {
        let _timed = HostTime::enter();
        self.link()?;
        self.charge(key.len())?;
        match self.kv_key(scope, &key) {
            Ok(key) => Ok(self.env.kv.increment(key, delta).map_err(kv_refusal)),
            Err(refusal) => Ok(Err(refusal)),
        }
    }

    fn kv_expire(
        &mut self,
        scope: KvScope,
        key: String,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<bool, HostError>> {
        let _timed = HostTime::enter();
        self.link()?;
        self.charge(key.len())?;
        match self.kv_key(scope, &key) {
            Ok(key) => Ok(Ok(self.env.kv.expire(&key, ttl_ms))),
            Err(refusal) => Ok(Err(refusal)),
        }
    }

    fn kv_ttl(
        &mut self,
        scope: KvScope,
        key: String,
    ) -> wasmtime::Result<Result<Option<Option<u64>>, HostError>> {
        let _timed = HostTime::enter();
        self.link()?;
        self.charge(key.len())?;
        match self.kv_key(scope, &key) {
            Ok(key) => Ok(Ok(self.env.kv.ttl(&key))),
            Err(refusal) => Ok(Err(refusal)),
        }
    }

    fn kv_clear(&mut self, scope: KvScope, prefix: String) -> wasmtime::Result<Result<u64, HostError>> {
        let _timed = HostTime::enter();
        self.link()?;
        self.charge(prefix.len())?;
        match self.kv_key(scope, &prefix) {
            Ok(prefix) => Ok(Ok(self.env.kv.delete_prefix(&prefix))),
            Err(refusal) => Ok(Err(refusal)),
        }
    }

    fn kv_count(&mut self, scope: KvScope, prefix: String) -> wasmtime::Result<Result<u64, HostError>> {
        let _timed = HostTime::enter();
        self.link()?;
        self.charge(prefix.len())?;
        match self.kv_key(scope, &prefix) {
            Ok(prefix) => Ok(Ok(self.env.kv.count_prefix(&prefix))),
            Err(refusal) => Ok(Err(refusal)),
        }
    }

    fn set_connection_name(&mut self, name: Option<String>) -> wasmtime::Result<()> {
        let _timed = HostTime::enter();
        let id = self.link()?.id();
        self.charge(name.as_ref().map_or(0, String::len))?;
        let name = name.map(|mut n| {
            n.truncate(n.floor_char_boundary(MAX_NAME_BYTES));
            n
        });
        self.env.connections.set_name(id, name);
        Ok(())
    }

    fn list_connections(&mut self) -> wasmtime::Result<Vec<ConnectionSummary>> {
        let _timed = HostTime::enter();
        self.link()?;
        if self.principal.is_none() {
            return Ok(Vec::new());
        }
        let listed = self.env.connections.list();
        Ok(listed
            .into_iter()
            .map(|c| ConnectionSummary { id: c.id, peer: c.peer, name: c.name, age_ms: c.age_ms })
            .collect())
    }

    fn close_connection(&mut self, id: u64) -> wasmtime::Result<Result<(), HostError>> {
        let _timed = HostTime::enter();
        self.link()?;
        if self.principal.is_none() {
            return Ok(Err(unauthenticated()));
        }
        if self.env.connections.close(id) {
            Ok(Ok(()))
        } else {
            refuse(ErrorCode::Invalid, format!("no connection {id} in this protocol"))
        }
    }

    fn subscription_counts(
        &mut self,
        kind: FilterKind,
        pattern: Option<String>,
    ) -> wasmtime::Result<Vec<(String, u32)>> {
        let _timed = HostTime::enter();
        let broker = self.link()?.broker.clone();
        self.charge(pattern.as_ref().map_or(0, String::len))?;
        if self.principal.is_none() {
            return Ok(Vec::new());
        }
        Ok(broker.router.subscription_counts(kind, pattern.as_deref(), MAX_LISTED))
    }

    fn log(&mut self, level: LogLevel, text: String) -> wasmtime::Result<()> {
        let _timed = HostTime::enter();
        let connection = self.link()?.id();
        self.charge(text.len())?;
        let text = GuestText(&text[..text.floor_char_boundary(MAX_LOG_BYTES)]);
        let protocol = &*self.env.name;
        match level {
            LogLevel::Trace => tracing::trace!(protocol, conn = connection, "guest: {text}"),
            LogLevel::Debug => tracing::debug!(protocol, conn = connection, "guest: {text}"),
            LogLevel::Info => tracing::info!(protocol, conn = connection, "guest: {text}"),
            LogLevel::Warn => tracing::warn!(protocol, conn = connection, "guest: {text}"),
            LogLevel::Error => tracing::error!(protocol, conn = connection, "guest: {text}"),
        }
        Ok(())
    }
}
