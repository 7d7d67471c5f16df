//! A connection's inbox: deliveries from the router, bounded in bytes, and a
//! way for the rest of the broker to ask the connection to close.
//!
//! The router pushes without waiting; the connection task drains in batches.
//! The byte bound is shared with the guest's own output, so one slow client
//! costs the broker at most its `outbound_buffer_bytes`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use crate::store::StoredMessage;
use crate::wasm::bindings::types::Qos;

/// Overhead charged per queued delivery on top of topic and payload.
const DELIVERY_OVERHEAD: usize = 64;

/// One message routed to one subscription of a connection.
#[derive(Debug, Clone)]
pub struct Routed {
    /// Subscription id (of the connection or its session).
    pub subscription: u32,
    /// The message, shared by every subscriber.
    pub message: Arc<StoredMessage>,
    /// QoS after the subscription's ceiling.
    pub qos: Qos,
    /// The session's delivery id, for deliveries queued in a session.
    pub delivery_id: Option<u64>,
    /// Sent from the retained store because of a new subscription.
    pub from_retained: bool,
    /// Handed out before without an ack.
    pub redelivered: bool,
}

impl Routed {
    /// A delivery straight from a publish (or from the retained store),
    /// not queued in a session.
    pub fn live(subscription: u32, message: &Arc<StoredMessage>, qos: Qos, from_retained: bool) -> Self {
        Routed {
            subscription,
            message: message.clone(),
            qos,
            delivery_id: None,
            from_retained,
            redelivered: false,
        }
    }

    /// Bytes this delivery is charged against the outbound budget.
    pub fn charge(&self) -> usize {
        self.message.message.topic.len() + self.message.message.payload.len() + DELIVERY_OVERHEAD
    }
}

/// Why the broker asks a connection to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// Another connection attached the same session.
    SessionTakenOver,
    /// The client does not read its deliveries fast enough.
    SlowConsumer,
    /// Another connection of the protocol asked for it.
    ClosedByRequest,
}

/// The sending side, held by the router for every subscription.
pub struct Mailbox {
    /// Connection id, for no-local and logs.
    pub connection: u64,
    tx: mpsc::UnboundedSender<Routed>,
    queued_bytes: AtomicUsize,
    limit: usize,
    dropped: AtomicU64,
    kick: Notify,
    kick_reason: Mutex<Option<Kick>>,
}

/// The receiving side, owned by the connection task.
pub struct Inbox {
    rx: mpsc::UnboundedReceiver<Routed>,
    mailbox: Arc<Mailbox>,
}

/// Outcome of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Over the byte bound: dropped and counted.
    Dropped,
}

impl Mailbox {
    /// A mailbox for `connection` holding at most `limit` bytes.
    pub fn new(connection: u64, limit: usize) -> (Arc<Mailbox>, Inbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mailbox = Arc::new(Mailbox {
            connection,
            tx,
            queued_bytes: AtomicUsize::new(0),
            limit,
            dropped: AtomicU64::new(0),
            kick: Notify::new(),
            kick_reason: Mutex::new(None),
        });
        (mailbox.clone(), Inbox { rx, mailbox })
    }

    /// Queue a delivery unless the connection is over its byte bound.
    /// A client too slow for an at-least-once delivery is disconnected (a
    /// session keeps the delivery queued for its return).
    pub fn push(&self, routed: Routed) -> Pushed {
        let charge = routed.charge();
        let queued = self.queued_bytes.fetch_add(charge, Ordering::AcqRel);
        if queued + charge > self.limit {
            self.queued_bytes.fetch_sub(charge, Ordering::AcqRel);
            if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::info!(
                    conn = self.connection,
                    "outbound buffer full: dropping at-most-once deliveries"
                );
            }
            if routed.qos != Qos::AtMostOnce {
                self.kick(Kick::SlowConsumer);
            }
            return Pushed::Dropped;
        }
        if self.tx.send(routed).is_err() {
            // The connection is gone; nothing to charge.
            self.queued_bytes.fetch_sub(charge, Ordering::AcqRel);
            return Pushed::Dropped;
        }
        Pushed::Queued
    }

    /// Bytes of deliveries queued and not yet taken.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Acquire)
    }

    /// Deliveries dropped because the bound was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Wait until the connection is asked to close; returns why.
    pub async fn kicked(&self) -> Kick {
        loop {
            if let Some(reason) = *self.kick_reason.lock() {
                return reason;
            }
            self.kick.notified().await;
        }
    }

    /// Ask the connection to close. The first reason wins.
    pub fn kick(&self, reason: Kick) {
        let mut slot = self.kick_reason.lock();
        if slot.is_none() {
            *slot = Some(reason);
        }
        drop(slot);
        self.kick.notify_one();
    }
}

impl Inbox {
    /// Take deliveries, waiting for at least one: at most `max` of them and,
    /// after the first, at most `max_bytes` of charge, so the guest's encoded
    /// output for one batch stays within the outbound buffer. Returns how
    /// many were taken; 0 only when every sender is gone.
    pub async fn recv_batch(&mut self, into: &mut Vec<Routed>, max: usize, max_bytes: usize) -> usize {
        let Some(first) = self.rx.recv().await else { return 0 };
        let mut taken = first.charge();
        into.push(first);
        let mut n = 1;
        while n < max && taken < max_bytes {
            match self.rx.try_recv() {
                Ok(routed) => {
                    taken += routed.charge();
                    into.push(routed);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        self.mailbox.queued_bytes.fetch_sub(taken, Ordering::AcqRel);
        n
    }

    /// Take what is waiting now, without waiting: at most `max` deliveries
    /// and, after the first, at most `max_bytes` of charge.
    pub fn try_take(&mut self, max: usize, max_bytes: usize) -> Vec<Routed> {
        let mut taken = Vec::new();
        let mut bytes = 0;
        while taken.len() < max && (taken.is_empty() || bytes < max_bytes) {
            match self.rx.try_recv() {
                Ok(routed) => {
                    bytes += routed.charge();
                    taken.push(routed);
                }
                Err(_) => break,
            }
        }
        self.mailbox.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        taken
    }
}
