//! Deliveries held while a guest publishes a batch, then handed to each
//! subscriber's mailbox in one push.
//!
//! A push takes the mailbox's lock and adds to its byte count, and the
//! subscriber's connection, draining on another worker, takes both too:
//! for a `publish-batch` of hundreds of messages to one subscriber, their
//! cache lines moved between the cores once per message. Held, they move
//! once per batch, and the subscriber is woken once.
//!
//! Only connections' mailboxes are held for; a session queues its
//! deliveries at once (its own lock, its store). Each mailbox gets its
//! deliveries in the order they were routed.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::mailbox::{Mailbox, Routed};
use crate::router::{self, Subscription, Target, min_qos};
use crate::store::StoredMessage;

/// Most deliveries held before they are handed over: bounds what a batch
/// to many subscribers keeps back, in time and memory.
const MAX_HELD: usize = 1024;

/// Deliveries routed and not yet pushed, by mailbox. Whatever is still held
/// when it is dropped is handed over then, so a failed batch loses nothing
/// it routed.
#[derive(Default)]
pub struct HeldDeliveries {
    /// Each mailbox with its deliveries, in the order they were routed.
    by_mailbox: Vec<(Arc<Mailbox>, Vec<Routed>)>,
    /// Where each mailbox is in `by_mailbox`, by its address (the `Arc`
    /// held there keeps the address from being reused meanwhile).
    index: FxHashMap<usize, usize>,
    /// The entry the last delivery went to: with one subscriber, every
    /// delivery, and each is checked against it before the index.
    last: usize,
    held: usize,
}

impl HeldDeliveries {
    /// Hand `message`, matched by `subscription`, over now (a session) or
    /// at [`HeldDeliveries::hand_over`] (a connection).
    pub fn deliver(&mut self, subscription: &Subscription, message: Arc<StoredMessage>) {
        let Target::Connection(mailbox) = &subscription.target else {
            return router::deliver(subscription, message);
        };
        let qos = min_qos(message.message.qos, subscription.max_qos);
        let entry = match self.by_mailbox.get(self.last) {
            Some((held, _)) if Arc::ptr_eq(held, mailbox) => self.last,
            _ => {
                let next = self.by_mailbox.len();
                let entry = *self.index.entry(Arc::as_ptr(mailbox) as usize).or_insert(next);
                if entry == next {
                    self.by_mailbox.push((Arc::clone(mailbox), Vec::new()));
                }
                entry
            }
        };
        self.last = entry;
        self.by_mailbox[entry].1.push(Routed::live(subscription.id, message, qos, false));
        self.held += 1;
        if self.held >= MAX_HELD {
            self.hand_over();
        }
    }

    /// Push what is held, one batch per mailbox.
    pub fn hand_over(&mut self) {
        for (mailbox, mut routed) in self.by_mailbox.drain(..) {
            let dropped = mailbox.push_batch(&mut routed);
            if dropped > 0 {
                tracing::debug!(
                    connection = mailbox.connection,
                    dropped,
                    "deliveries dropped: outbound buffer full"
                );
            }
        }
        self.index.clear();
        self.last = 0;
        self.held = 0;
    }
}

impl Drop for HeldDeliveries {
    fn drop(&mut self) {
        self.hand_over();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::Inbox;
    use crate::wasm::bindings::types::{FilterKind, Message, Qos};

    fn subscription(mailbox: &Arc<Mailbox>, id: u32) -> Subscription {
        Subscription {
            target: Target::Connection(Arc::clone(mailbox)),
            id,
            filter: "t".into(),
            kind: FilterKind::Wildcard,
            max_qos: Qos::AtMostOnce,
            group: None,
            no_local: false,
        }
    }

    fn message(payload: &str) -> Arc<StoredMessage> {
        Arc::new(StoredMessage { message: Message::new("t", payload), published_at: 0 })
    }

    fn taken(inbox: &mut Inbox) -> Vec<(u32, String)> {
        let routed = inbox.try_take(usize::MAX, usize::MAX);
        routed
            .iter()
            .map(|r| (r.subscription, String::from_utf8_lossy(&r.message.message.payload).into()))
            .collect()
    }

    #[test]
    fn each_mailbox_gets_its_deliveries_in_order_when_they_are_handed_over() {
        let (first, mut first_inbox) = Mailbox::new(1, 1 << 20);
        let (second, mut second_inbox) = Mailbox::new(2, 1 << 20);
        let mut held = HeldDeliveries::default();
        for (i, payload) in ["a", "b", "c"].into_iter().enumerate() {
            let message = message(payload);
            held.deliver(&subscription(&first, 10), Arc::clone(&message));
            held.deliver(&subscription(&second, 20), Arc::clone(&message));
            if i == 1 {
                // A second subscription of the first connection matches too.
                held.deliver(&subscription(&first, 11), message);
            }
        }
        assert!(taken(&mut first_inbox).is_empty(), "nothing is pushed before the hand-over");
        held.hand_over();
        let expected = [(10, "a"), (10, "b"), (11, "b"), (10, "c")].map(|(id, p)| (id, p.to_string()));
        assert_eq!(taken(&mut first_inbox), expected);
        let expected = [(20, "a"), (20, "b"), (20, "c")].map(|(id, p)| (id, p.to_string()));
        assert_eq!(taken(&mut second_inbox), expected);
    }

    #[test]
    fn deliveries_are_handed_over_when_too_many_are_held_and_when_dropped() {
        let (mailbox, mut inbox) = Mailbox::new(1, 1 << 30);
        let mut held = HeldDeliveries::default();
        for _ in 0..MAX_HELD + 1 {
            held.deliver(&subscription(&mailbox, 1), message("x"));
        }
        assert_eq!(taken(&mut inbox).len(), MAX_HELD, "the first {MAX_HELD} went at the bound");
        drop(held);
        assert_eq!(taken(&mut inbox).len(), 1, "the rest went when the holder was dropped");
    }
}
