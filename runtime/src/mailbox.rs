//! A connection's inbox: deliveries from the router, bounded in bytes, and a
//! way for the rest of the broker to ask the connection to close.
//!
//! The router pushes without waiting; the connection task drains in batches.
//! The byte bound is shared with the guest's own output, so one slow client
//! costs the broker at most its `outbound_buffer_bytes`.
//!
//! The queue is a `VecDeque` behind a lock rather than a channel: an empty
//! one allocates nothing (a tokio channel allocates a block of 32 slots up
//! front, 1.5 KiB for every idle connection), and the connection takes a
//! whole batch under one lock.
//!
//! One task waits on a mailbox, its connection's, for deliveries and kicks
//! alike, so one [`AtomicWaker`] wakes it for both. The connection polls
//! both waits each time it wakes; registering with an `AtomicWaker` is an
//! atomic swap where a `Notify` takes a lock to add its waiter to a list and
//! another to take it out again.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;

use crate::store::StoredMessage;
use crate::wasm::bindings::types::Qos;

/// Overhead charged per queued delivery on top of topic and payload.
const DELIVERY_OVERHEAD: usize = 64;
// Packing sizes its buffer from the charges, so a plain delivery's charge
// must cover its packed size.
const _: () = assert!(DELIVERY_OVERHEAD >= sandport_deliveries::FIXED_BYTES);

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
    pub fn live(subscription: u32, message: Arc<StoredMessage>, qos: Qos, from_retained: bool) -> Self {
        Routed { subscription, message, qos, delivery_id: None, from_retained, redelivered: false }
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
    /// The broker is shutting down.
    Shutdown,
}

/// The sending side, held by the router for every subscription.
pub struct Mailbox {
    /// Connection id, for no-local and logs.
    pub connection: u64,
    queue: Mutex<VecDeque<Routed>>,
    /// The connection task, woken when the queue stops being empty and
    /// when the connection is kicked.
    waker: AtomicWaker,
    /// The inbox was dropped: pushes are refused.
    closed: AtomicBool,
    queued_bytes: AtomicUsize,
    limit: usize,
    dropped: AtomicU64,
    kick_reason: Mutex<Option<Kick>>,
}

/// The receiving side, owned by the connection task.
pub struct Inbox {
    mailbox: Arc<Mailbox>,
}

/// Most queue capacity an inbox keeps once drained; a burst beyond it is
/// given back rather than held by a connection that went quiet.
const KEPT_CAPACITY: usize = 256;

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
        let mailbox = Arc::new(Mailbox {
            connection,
            queue: Mutex::new(VecDeque::new()),
            waker: AtomicWaker::new(),
            closed: AtomicBool::new(false),
            queued_bytes: AtomicUsize::new(0),
            limit,
            dropped: AtomicU64::new(0),
            kick_reason: Mutex::new(None),
        });
        (mailbox.clone(), Inbox { mailbox })
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
        let was_empty = {
            let mut queue = self.queue.lock();
            if self.closed.load(Ordering::Acquire) {
                drop(queue);
                // The connection is gone; nothing to charge.
                self.queued_bytes.fetch_sub(charge, Ordering::AcqRel);
                return Pushed::Dropped;
            }
            queue.push_back(routed);
            queue.len() == 1
        };
        // The inbox sleeps only on an empty queue, so only the first push
        // after it emptied needs to wake it (it registers before it looks,
        // so a push that lands in between wakes it too).
        if was_empty {
            self.waker.wake();
        }
        Pushed::Queued
    }

    /// Queue `batch` in order, taking it: under one lock, with one update
    /// of the byte count and at most one wake, where [`Mailbox::push`] for
    /// each would move those, shared with the draining thread, between cores
    /// once per delivery. A batch that would pass the byte bound is pushed
    /// one by one, so each delivery is admitted or dropped as `push` would.
    /// Returns how many were dropped.
    pub fn push_batch(&self, batch: &mut Vec<Routed>) -> usize {
        let charge: usize = batch.iter().map(Routed::charge).sum();
        let queued = self.queued_bytes.fetch_add(charge, Ordering::AcqRel);
        if queued + charge > self.limit {
            self.queued_bytes.fetch_sub(charge, Ordering::AcqRel);
            return batch
                .drain(..)
                .map(|routed| self.push(routed))
                .filter(|pushed| *pushed == Pushed::Dropped)
                .count();
        }
        let was_empty = {
            let mut queue = self.queue.lock();
            if self.closed.load(Ordering::Acquire) {
                drop(queue);
                self.queued_bytes.fetch_sub(charge, Ordering::AcqRel);
                let dropped = batch.len();
                batch.clear();
                return dropped;
            }
            let was_empty = queue.is_empty();
            queue.extend(batch.drain(..));
            was_empty
        };
        if was_empty {
            self.waker.wake();
        }
        0
    }

    /// Bytes of deliveries queued and not yet taken.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Acquire)
    }

    /// Deliveries dropped because the bound was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Wait until the connection is asked to close; returns why. Only the
    /// connection's own task may wait (see the module's notes).
    pub async fn kicked(&self) -> Kick {
        std::future::poll_fn(|cx| {
            self.waker.register(cx.waker());
            match *self.kick_reason.lock() {
                Some(reason) => Poll::Ready(reason),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// Ask the connection to close. The first reason wins.
    pub fn kick(&self, reason: Kick) {
        let mut slot = self.kick_reason.lock();
        if slot.is_none() {
            *slot = Some(reason);
        }
        drop(slot);
        self.waker.wake();
    }
}

impl Inbox {
    /// Take deliveries, waiting for at least one: at most `max` of them and,
    /// after the first, at most `max_bytes` of charge, so the guest's encoded
    /// output for one batch stays within the outbound buffer. Returns how
    /// many were taken. Cancel-safe: nothing is taken unless it returns.
    pub async fn recv_batch(&mut self, into: &mut Vec<Routed>, max: usize, max_bytes: usize) -> usize {
        std::future::poll_fn(|cx| {
            // Registered before looking, so a push after the look wakes us.
            self.mailbox.waker.register(cx.waker());
            match self.take_into(into, max, max_bytes) {
                0 => Poll::Pending,
                taken => Poll::Ready(taken),
            }
        })
        .await
    }

    /// Take what is waiting now, without waiting: at most `max` deliveries
    /// and, after the first, at most `max_bytes` of charge.
    pub fn try_take(&mut self, max: usize, max_bytes: usize) -> Vec<Routed> {
        let mut taken = Vec::new();
        self.take_into(&mut taken, max, max_bytes);
        taken
    }

    fn take_into(&mut self, into: &mut Vec<Routed>, max: usize, max_bytes: usize) -> usize {
        let mut queue = self.mailbox.queue.lock();
        let (mut taken, mut bytes) = (0, 0);
        while taken < max && (taken == 0 || bytes < max_bytes) {
            let Some(routed) = queue.pop_front() else { break };
            bytes += routed.charge();
            into.push(routed);
            taken += 1;
        }
        if queue.is_empty() && queue.capacity() > KEPT_CAPACITY {
            queue.shrink_to(KEPT_CAPACITY);
        }
        drop(queue);
        self.mailbox.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        taken
    }
}

impl Drop for Inbox {
    /// The connection is gone: later pushes are refused and what is queued
    /// is released now, not when the last router reference goes.
    fn drop(&mut self) {
        let mut queue = self.mailbox.queue.lock();
        self.mailbox.closed.store(true, Ordering::Release);
        let queued = std::mem::take(&mut *queue);
        drop(queue);
        let bytes: usize = queued.iter().map(Routed::charge).sum();
        self.mailbox.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::wasm::bindings::types::Message;

    fn routed(payload: &str) -> Routed {
        let message = Arc::new(StoredMessage { message: Message::new("t", payload), published_at: 0 });
        Routed::live(1, message, Qos::AtMostOnce, false)
    }

    #[tokio::test]
    async fn batches_stop_at_the_count_and_byte_limits_and_keep_the_rest() {
        let (mailbox, mut inbox) = Mailbox::new(1, 1 << 20);
        for _ in 0..5 {
            assert_eq!(mailbox.push(routed("x")), Pushed::Queued);
        }
        let mut batch = Vec::new();
        assert_eq!(inbox.recv_batch(&mut batch, 2, usize::MAX).await, 2);
        // One byte of budget still takes one delivery, never none.
        assert_eq!(inbox.recv_batch(&mut batch, 10, 1).await, 1);
        assert_eq!(inbox.try_take(10, usize::MAX).len(), 2);
        assert_eq!(mailbox.queued_bytes(), 0);
        assert!(inbox.try_take(10, usize::MAX).is_empty());
    }

    #[tokio::test]
    async fn a_waiting_inbox_wakes_for_a_push_after_it_emptied() {
        let (mailbox, mut inbox) = Mailbox::new(1, 1 << 20);
        let waiter = tokio::spawn(async move {
            let mut batch = Vec::new();
            inbox.recv_batch(&mut batch, 10, usize::MAX).await;
            inbox.recv_batch(&mut batch, 10, usize::MAX).await;
            batch.len()
        });
        mailbox.push(routed("a"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        mailbox.push(routed("b"));
        let taken = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").unwrap();
        assert_eq!(taken, 2);
    }

    #[tokio::test]
    async fn one_task_waiting_for_deliveries_and_kicks_wakes_for_either() {
        let (mailbox, mut inbox) = Mailbox::new(1, 1 << 20);
        let waiting = mailbox.clone();
        let waiter = tokio::spawn(async move {
            let mut batch = Vec::new();
            let mut woken = Vec::new();
            for _ in 0..2 {
                tokio::select! {
                    kick = waiting.kicked() => woken.push(format!("{kick:?}")),
                    taken = inbox.recv_batch(&mut batch, 10, usize::MAX) => woken.push(format!("{taken} taken")),
                }
            }
            woken
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        mailbox.push(routed("a"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        mailbox.kick(Kick::Shutdown);
        mailbox.kick(Kick::SlowConsumer);
        let woken = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").unwrap();
        assert_eq!(woken, ["1 taken", "Shutdown"], "the first kick's reason wins");
    }

    #[tokio::test]
    async fn a_cancelled_wait_loses_nothing() {
        let (mailbox, mut inbox) = Mailbox::new(1, 1 << 20);
        let mut batch = Vec::new();
        let waited =
            tokio::time::timeout(Duration::from_millis(10), inbox.recv_batch(&mut batch, 10, usize::MAX));
        assert!(waited.await.is_err());
        mailbox.push(routed("late"));
        assert_eq!(inbox.recv_batch(&mut batch, 10, usize::MAX).await, 1);
    }

    fn payloads(batch: &[Routed]) -> Vec<&[u8]> {
        batch.iter().map(|routed| routed.message.message.payload.as_slice()).collect()
    }

    #[tokio::test]
    async fn a_pushed_batch_is_queued_in_order_after_what_was_there() {
        let (mailbox, mut inbox) = Mailbox::new(1, 1 << 20);
        mailbox.push(routed("a"));
        let mut batch = vec![routed("b"), routed("c")];
        assert_eq!(mailbox.push_batch(&mut batch), 0);
        assert!(batch.is_empty(), "the batch is taken");
        assert_eq!(mailbox.queued_bytes(), 3 * routed("a").charge());
        let mut taken = Vec::new();
        inbox.recv_batch(&mut taken, 10, usize::MAX).await;
        assert_eq!(payloads(&taken), [b"a", b"b", b"c"]);
        assert_eq!(mailbox.queued_bytes(), 0);
    }

    #[test]
    fn a_batch_past_the_byte_bound_is_admitted_delivery_by_delivery() {
        let (mailbox, mut inbox) = Mailbox::new(1, 2 * routed("x").charge());
        let mut batch = vec![routed("a"), routed("b"), routed("c")];
        assert_eq!(mailbox.push_batch(&mut batch), 1);
        assert_eq!(mailbox.dropped(), 1);
        assert_eq!(payloads(&inbox.try_take(10, usize::MAX)), [b"a", b"b"], "what fits is queued");
        drop(inbox);
        let mut batch = vec![routed("late")];
        assert_eq!(mailbox.push_batch(&mut batch), 1, "refused once the inbox is gone");
        assert_eq!(mailbox.queued_bytes(), 0);
    }

    #[test]
    fn over_the_byte_bound_pushes_are_dropped_and_counted() {
        let (mailbox, _inbox) = Mailbox::new(1, 2 * routed("x").charge());
        assert_eq!(mailbox.push(routed("x")), Pushed::Queued);
        assert_eq!(mailbox.push(routed("x")), Pushed::Queued);
        assert_eq!(mailbox.push(routed("x")), Pushed::Dropped);
        assert_eq!(mailbox.dropped(), 1);
    }

    #[test]
    fn after_the_inbox_is_gone_pushes_are_refused_and_the_queue_released() {
        let (mailbox, inbox) = Mailbox::new(1, 1 << 20);
        mailbox.push(routed("queued"));
        drop(inbox);
        assert_eq!(mailbox.queued_bytes(), 0);
        assert_eq!(mailbox.push(routed("late")), Pushed::Dropped);
        assert_eq!(mailbox.queued_bytes(), 0);
    }
}
