//! What a guest's `Store` holds: its connection's view of the broker, what
//! the guest asked for during the current call, and its resource limits.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::auth::{ConnAuth, Identity};
use crate::broker::BrokerCore;
use crate::mailbox::Mailbox;
use crate::mailbox::{Inbox, Routed};
use crate::metrics::ProtocolMetrics;
use crate::router::SubscriptionKey;
use crate::sessions::Session;
use crate::sessions::unix_now;
use crate::store::Ticket;
use crate::wasm::bindings::types::{FilterKind, Qos, Will};
use crate::wasm::engine::MAX_TABLE_ELEMENTS;
use crate::wasm::guest_text::GuestText;
use crate::wasm::packing::pack_routed;
use crate::wasm::protocol::ProtocolEnv;
use crate::wasm::stdio::GuestOutput;

/// Most WASI resources (streams, pollables, descriptors) one guest may hold
/// at once. Each is host memory that the guest's memory limit does not
/// count, and by default only wasmtime's limit of 100 000 handles per store
/// stops a guest that takes handles and never drops them: measured, one
/// connection holding 100 000 stdout handles raised the broker's resident
/// memory by 69 MB. A guest needs a handful (its stdout and stderr, a
/// pollable while it writes them); past this many the WASI call traps and
/// ends the connection.
pub const MAX_WASI_RESOURCES: usize = 1024;

/// A rule the guest broke; raised as a trap that ends the connection.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Violation(pub String);

/// The connection a serving guest is bound to. Absent while the guest only
/// describes itself or probes, when host calls are not allowed.
pub struct ConnLink {
    /// Shared broker state: router, sessions.
    pub broker: Arc<BrokerCore>,
    /// This connection's inbox, for the router and for takeover.
    pub mailbox: Arc<Mailbox>,
    /// The client's address, the listener's policy, a certificate's user.
    pub auth: ConnAuth,
}

impl ConnLink {
    /// The connection id.
    pub fn id(&self) -> u64 {
        self.mailbox.connection
    }
}

/// A subscription made without a session; it ends with the connection.
pub struct OwnedSubscription {
    pub key: SubscriptionKey,
    pub filter: String,
    pub kind: FilterKind,
    pub group: Option<String>,
}

/// Changes to connection timers asked for during a call, applied by the
/// connection after the call returns.
#[derive(Debug, Default, Clone, Copy)]
pub struct TimerRequests {
    /// New idle timeout (`Some(None)` turns it off).
    pub idle: Option<Option<Duration>>,
    /// New guest timer (`Some(None)` cancels it).
    pub timer: Option<Option<Duration>>,
}

/// Memory and table limits of one instance, remembering a refusal so an
/// out-of-memory trap can be told apart from other traps.
pub struct GuestLimiter {
    memory_bytes: usize,
    /// Set once a growth was refused.
    pub refused: bool,
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.memory_bytes;
        self.refused |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= MAX_TABLE_ELEMENTS;
        self.refused |= !allowed;
        Ok(allowed)
    }
}

/// The data of one guest's `Store`.
pub struct GuestState {
    /// The protocol this guest implements.
    pub env: Arc<ProtocolEnv>,
    /// The connection, once the guest serves one.
    pub link: Option<ConnLink>,
    /// Bytes the guest sent, not yet written to the socket.
    pub out: Vec<u8>,
    /// Set when the guest asked to close.
    pub close: Option<String>,
    /// Timer changes asked for in the current call.
    pub timers: TimerRequests,
    /// Bytes the guest passed to the host in the current call.
    pub call_input: usize,
    /// Epoch ticks left in the current call.
    pub ticks_left: u32,
    /// Messages published in the current call, added to the protocol's
    /// `publishes` metric when the call ends: one shared atomic add per
    /// call rather than per message.
    pub publishes: u32,
    /// A publish reached a subscriber since the connection last looked: the
    /// connection then yields, so another worker can run the subscriber
    /// (`Connection::yield_to_receivers`).
    pub handed_off: bool,
    /// Memory limits.
    pub limiter: GuestLimiter,
    /// Subscriptions owned by this connection (not by a session), by id.
    pub subscriptions: HashMap<u32, OwnedSubscription>,
    /// Next subscription id to hand out.
    pub next_subscription: u32,
    /// At-least-once deliveries handed to the guest and not yet acked.
    pub unacked: HashSet<u64>,
    /// Next id for at-least-once deliveries outside a session. Session
    /// delivery ids are queue positions; these stay apart from them.
    next_delivery_id: u64,
    /// The connection's inbox (set while serving).
    pub inbox: Option<Inbox>,
    /// The will to publish if the connection ends with it still set.
    pub will: Option<Will>,
    /// The attached session.
    pub session: Option<Arc<Session>>,
    /// Store ticket the guest's output must wait for (set by durable publishes).
    pub ticket: Option<Ticket>,
    /// Who the client is: from its certificate, `authenticate`, or anonymous
    /// where the listener allows it; `None` until then.
    pub principal: Option<Identity>,
    wasi: WasiCtx,
    table: ResourceTable,
}

/// A guest's WASI resource table, capped at [`MAX_WASI_RESOURCES`].
fn resource_table() -> ResourceTable {
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_WASI_RESOURCES);
    table
}

impl GuestState {
    /// State for a guest of `env`; `connection` tags its log output.
    pub fn new(env: Arc<ProtocolEnv>, connection: u64) -> Self {
        let budget = env.guest_output_bytes;
        let stdout = GuestOutput::new(env.name.clone(), connection, "stdout", budget);
        let stderr = GuestOutput::new(env.name.clone(), connection, "stderr", budget);
        // No preopened directory, no environment, no stdin, no network:
        // every socket is refused (the builder's address check also denies
        // every address) and no name is looked up. The import check refuses
        // the clocks unless granted.
        let wasi = WasiCtx::builder()
            .stdout(stdout)
            .stderr(stderr)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let memory_bytes = env.limits.memory_bytes;
        Self {
            env,
            link: None,
            out: Vec::new(),
            close: None,
            timers: TimerRequests::default(),
            call_input: 0,
            ticks_left: 0,
            publishes: 0,
            handed_off: false,
            limiter: GuestLimiter { memory_bytes, refused: false },
            subscriptions: HashMap::new(),
            next_subscription: 1,
            unacked: HashSet::new(),
            next_delivery_id: 1 << 63,
            inbox: None,
            will: None,
            session: None,
            ticket: None,
            principal: None,
            wasi,
            table: resource_table(),
        }
    }

    /// The connection link, or a violation when the guest may not call the host now.
    pub fn link(&self) -> wasmtime::Result<&ConnLink> {
        self.link.as_ref().ok_or_else(|| {
            Violation("host called outside a connection (from describe or probe)".into()).into()
        })
    }

    /// Count `bytes` passed by the guest in this call against its budget.
    pub fn charge(&mut self, bytes: usize) -> wasmtime::Result<()> {
        self.call_input = self.charged(bytes)?;
        Ok(())
    }

    /// What the call's count would be with `bytes` more, or the violation
    /// if that is over budget; for callers that record it later.
    pub fn charged(&self, bytes: usize) -> wasmtime::Result<usize> {
        let total = self.call_input.saturating_add(bytes);
        if total > self.env.limits.call_input_bytes {
            return Err(Violation(format!(
                "passed more than {} bytes to the host in one call",
                self.env.limits.call_input_bytes
            ))
            .into());
        }
        Ok(total)
    }
}

impl GuestState {
    /// Pack the deliveries of routed messages into `packed` for the guest:
    /// drop what the access rules forbid (acking it in the session), assign
    /// ids to at-least-once ones outside a session, apply the QoS ceiling,
    /// and work out the expiry that is left rather than the one published.
    /// `batch` keeps the messages packed, in order.
    pub fn pack_deliveries(&mut self, batch: &mut Vec<Routed>, packed: &mut Vec<u8>) {
        // Read the clock only if a message in the batch can expire.
        let mut now = None;
        // Borrowed field by field, not cloned: four `Arc` clones and drops
        // per batch were eight atomic operations on counts other threads share.
        let Self { env, link, principal: identity, session, next_delivery_id, unacked, .. } = self;
        let broker = link.as_ref().map(|link| &link.broker);
        let client_id = session.as_ref().map_or("", |s| s.client_id.as_str());
        // Access rules are checked on every delivery too, whatever the subscription said.
        batch.retain(|routed| {
            let allowed = match (broker, &*identity) {
                (Some(broker), Some(identity)) => broker.auth.acl(identity).may_receive(
                    &routed.message.message.topic,
                    identity.name(),
                    client_id,
                ),
                _ => false,
            };
            if !allowed {
                ProtocolMetrics::bump(&env.metrics.deliveries_denied);
                tracing::debug!(protocol = %env.name, topic = %GuestText(&routed.message.message.topic), "delivery denied by access rules");
                if let (Some(seq), Some(session)) = (routed.delivery_id, &*session) {
                    session.ack(seq);
                }
            }
            allowed
        });
        // Room for the whole batch at once: a delivery's charge (topic,
        // payload and 64 bytes) covers its packed size unless it carries
        // headers or MQTT 5 properties. Grown delivery by delivery, the buffer
        // was reallocated and copied about once per doubling.
        packed.reserve(batch.iter().map(Routed::charge).sum());
        for routed in batch.iter() {
            let id = match routed.delivery_id {
                Some(id) => Some(id),
                None if routed.qos != Qos::AtMostOnce => {
                    let id = *next_delivery_id;
                    *next_delivery_id += 1;
                    unacked.insert(id);
                    Some(id)
                }
                None => None,
            };
            let expiry_secs = routed.message.message.expiry_secs.map(|secs| {
                let waited = now.get_or_insert_with(unix_now).saturating_sub(routed.message.published_at);
                secs.saturating_sub(u32::try_from(waited).unwrap_or(u32::MAX)).max(1)
            });
            if let Err(e) = pack_routed(routed, id, expiry_secs, packed) {
                tracing::error!(protocol = %env.name, topic = %GuestText(&routed.message.message.topic), "delivery dropped: {e}");
            }
        }
        env.metrics.deliveries_out.fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}
