//! One librdkafka queue handle per partition, owned by the dispatcher for the consumer's
//! lifetime and lent to whichever worker currently owns the partition.
//!
//! librdkafka keeps one fetch queue per partition and one wake-up callback on it, and every
//! handle to that queue clears the callback when dropped (rdkafka's `PartitionQueue` does so
//! in `Drop`). If workers owned their handles, a worker stuck past the drain timeout would
//! drop its handle after the next assignment's worker had armed its callback, and that
//! partition would never wake again. So only the dispatcher replaces a handle, and it drops
//! the old one before arming the new one, under the same lock the workers poll through.
//!
//! Each assignment still needs a fresh handle: librdkafka forwards a newly assigned
//! partition's queue to the consumer's main queue again, and only splitting it off (what
//! `split_partition_queue` does) stops that.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;

use crate::message::Message;

/// A worker's claim on a partition's queue: the assignment it was started for.
pub(crate) type Owner = u64;

/// What one poll of a shared partition queue found.
pub(crate) enum Polled {
    Message(Message),
    Error(KafkaError),
    /// Nothing fetched yet: wait for the wake-up.
    Empty,
    /// The partition was revoked or handed to a newer worker: stop reading.
    Superseded,
}

/// A librdkafka partition queue handle, whatever its consumer's context type: what the
/// workers and the dispatcher need of it.
pub(crate) trait QueueHandle: Send {
    /// Takes the next message, never blocking.
    fn poll_now(&self, topic: &Arc<str>) -> Polled;
    /// Calls `wake` whenever the queue receives messages (replacing any earlier callback).
    fn wake_with(&mut self, wake: Box<dyn Fn() + Send + Sync>);
}

impl<C: ConsumerContext> QueueHandle for PartitionQueue<C> {
    fn poll_now(&self, topic: &Arc<str>) -> Polled {
        match self.poll(Duration::ZERO) {
            Some(Ok(m)) => Polled::Message(Message::from_kafka(topic.clone(), &m)),
            Some(Err(e)) => Polled::Error(e),
            None => Polled::Empty,
        }
    }

    fn wake_with(&mut self, wake: Box<dyn Fn() + Send + Sync>) {
        self.set_nonempty_callback(wake);
    }
}

/// Splits a partition's queue off the consumer's main queue: `(topic, partition)` to a handle.
pub(crate) type Splitter<'a> = &'a dyn Fn(&str, i32) -> Option<Box<dyn QueueHandle>>;

/// A partition's queue handle and who may read it.
pub(crate) struct SharedQueue {
    slot: Mutex<Slot>,
}

struct Slot {
    handle: Option<Box<dyn QueueHandle>>,
    /// The only worker allowed to poll; 0 for none.
    owner: Owner,
}

impl SharedQueue {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            slot: Mutex::new(Slot {
                handle: None,
                owner: 0,
            }),
        })
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        // Nothing panics while holding it; a poisoned lock still holds a whole handle.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives the partition to a new worker: `handle` (just split off for this assignment)
    /// replaces the previous one, and `wake` is called whenever the queue receives messages.
    pub(crate) fn hand_over(
        &self,
        mut handle: Box<dyn QueueHandle>,
        owner: Owner,
        wake: impl Fn() + Send + Sync + 'static,
    ) {
        let mut slot = self.slot();
        // Dropping the previous handle clears the queue's callback, so it goes first.
        slot.handle = None;
        handle.wake_with(Box::new(wake));
        slot.handle = Some(handle);
        slot.owner = owner;
    }

    /// Revocation: the worker that owned the partition may not take anything more from it.
    pub(crate) fn retire(&self) {
        self.slot().owner = 0;
    }

    /// Shutdown: drops the handle, which holds the consumer, so the consumer can close.
    pub(crate) fn close(&self) {
        let mut slot = self.slot();
        slot.owner = 0;
        slot.handle = None;
    }

    /// Takes the next message if `owner` still owns the partition. Never blocks.
    pub(crate) fn poll(&self, owner: Owner, topic: &Arc<str>) -> Polled {
        let slot = self.slot();
        let handle = match &slot.handle {
            Some(handle) if slot.owner == owner => handle,
            _ => return Polled::Superseded,
        };
        handle.poll_now(topic)
    }
}
