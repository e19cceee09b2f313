//! Exactly-once processing (`CLUSTERA_GUARANTEE=exactly-once`): what the workers, the producer
//! and the poll thread share about the open Kafka transaction.
//!
//! The shape is Kafka Streams' `exactly_once_v2`: one transactional producer per instance, and
//! every record a message leads to (outputs, dead letters) goes into the transaction that also
//! commits the message's offset, sent with the consumer group's metadata so that an instance
//! that lost its partitions in a rebalance is fenced by the group coordinator.
//!
//! - A worker *settles* a message (tracks it and queues its records) only while holding the
//!   [`Transactions::enter`] guard. The poll thread commits behind the write side of the same
//!   lock, so a transaction holds every record of a message or none of them, and its offsets
//!   cover exactly the messages whose records it holds (the worker is sequential: the settled
//!   messages are a prefix of the partition).
//! - Retries need no abort: the kernel's effects are collected in its `Context` and sent only
//!   once its outcome is final, so a retried attempt never reached the transaction.
//! - A failed transaction (a record refused or not delivered, a commit that must abort, a
//!   rebalance that fenced this member) is aborted, and every partition is rewound to its last
//!   committed offset and processed again. A record the broker refused for good is remembered
//!   ([`Transactions::refusal`]) so its input is dead-lettered the second time, instead of
//!   aborting forever.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::error::KafkaError;
use tokio::sync::{Notify, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio_util::sync::CancellationToken;

/// What the runtime guarantees about a message's effects on Kafka (`CLUSTERA_GUARANTEE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Guarantee {
    /// Every message's records are acknowledged before its offset is committed; a crash or a
    /// rebalance may repeat some (the default).
    #[default]
    AtLeastOnce,
    /// Records and offsets are committed together in Kafka transactions: a `read_committed`
    /// consumer of the outputs sees each input's records once, whatever crashes.
    ExactlyOnce,
}

impl std::str::FromStr for Guarantee {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "at-least-once" => Ok(Self::AtLeastOnce),
            "exactly-once" => Ok(Self::ExactlyOnce),
            other => Err(format!(
                "{other:?} is not a guarantee: use at-least-once or exactly-once"
            )),
        }
    }
}

/// Where a partition is.
type PartitionKey = (Arc<str>, i32);

/// The open transaction, as the workers, the producer and the poll thread see it.
#[derive(Debug)]
pub(crate) struct Transactions {
    /// Workers settle under the read side; the poll thread commits or aborts under the write
    /// side (tokio's lock is fair: a waiting commit holds back new settles).
    gate: RwLock<()>,
    /// A record of the open transaction failed: it cannot commit.
    doomed: AtomicBool,
    /// Messages settled into the open transaction.
    settled: AtomicU64,
    /// The most messages one transaction takes; workers wait for the commit past it.
    max_messages: u64,
    /// Notified when a transaction ends.
    ended: Notify,
    /// Inputs whose output the broker refused for good, with the reason: dead-lettered when
    /// they are processed again after the abort.
    refusals: Mutex<HashMap<PartitionKey, BTreeMap<i64, String>>>,
    /// How long one transactional call may take.
    pub timeout: Duration,
    /// This instance's `transactional.id`, for messages.
    pub id: String,
}

impl Transactions {
    pub(crate) fn new(max_messages: u64, timeout: Duration, id: String) -> Self {
        Self {
            gate: RwLock::new(()),
            doomed: AtomicBool::new(false),
            settled: AtomicU64::new(0),
            max_messages: max_messages.max(1),
            ended: Notify::new(),
            refusals: Mutex::new(HashMap::new()),
            timeout,
            id,
        }
    }

    /// Waits until a message may be settled into the open transaction: the transaction is not
    /// being committed and has room. `None` if `stop` is cancelled first; the message must then
    /// not be settled at all.
    pub(crate) async fn enter(&self, stop: &CancellationToken) -> Option<RwLockReadGuard<'_, ()>> {
        loop {
            let ended = self.ended.notified();
            if self.settled.load(Ordering::Acquire) >= self.max_messages {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return None,
                    _ = ended => continue,
                }
            }
            let guard = tokio::select! {
                biased;
                _ = stop.cancelled() => return None,
                g = self.gate.read() => g,
            };
            // Stopped while waiting: a rewind or a revocation already decided this partition.
            if stop.is_cancelled() {
                return None;
            }
            self.settled.fetch_add(1, Ordering::AcqRel);
            return Some(guard);
        }
    }

    /// Closes the gate for a commit or an abort: waits for the settles under way. Blocks; the
    /// poll thread calls it.
    pub(crate) fn close(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.blocking_write()
    }

    /// Messages settled into the open transaction.
    pub(crate) fn settled(&self) -> u64 {
        self.settled.load(Ordering::Acquire)
    }

    /// Whether the open transaction is full.
    pub(crate) fn full(&self) -> bool {
        self.settled() >= self.max_messages
    }

    /// A new transaction is open: nothing settled, nothing failed.
    pub(crate) fn opened(&self) {
        self.settled.store(0, Ordering::Release);
        self.doomed.store(false, Ordering::Release);
        self.ended.notify_waiters();
    }

    /// A record of the open transaction failed.
    pub(crate) fn doom(&self) {
        self.doomed.store(true, Ordering::Release);
    }

    /// Whether a record of the open transaction failed.
    pub(crate) fn is_doomed(&self) -> bool {
        self.doomed.load(Ordering::Acquire)
    }

    /// Remembers that an output of `offset` was refused for good, for `reason`.
    pub(crate) fn refuse(&self, topic: &Arc<str>, partition: i32, offset: i64, reason: String) {
        let mut r = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        r.entry((topic.clone(), partition))
            .or_default()
            .entry(offset)
            .or_insert(reason);
    }

    /// Why an output of `offset` was refused, if one was.
    pub(crate) fn refusal(&self, topic: &Arc<str>, partition: i32, offset: i64) -> Option<String> {
        let r = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        r.get(&(topic.clone(), partition))?.get(&offset).cloned()
    }

    /// Forgets the refusals below `committed`: those inputs are done for good.
    pub(crate) fn forget_below(&self, topic: &Arc<str>, partition: i32, committed: i64) {
        let mut r = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        let key = (topic.clone(), partition);
        if let Some(offsets) = r.get_mut(&key) {
            *offsets = offsets.split_off(&committed);
            if offsets.is_empty() {
                r.remove(&key);
            }
        }
    }
}

/// What to do after a transactional call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxnFailure {
    /// The call may be made again.
    Retriable,
    /// The transaction must be aborted (and the partitions rewound).
    Abort,
    /// The producer can never be used again (fenced by a newer instance, for one).
    Fatal,
}

/// Classifies a failed transactional call as librdkafka's transactional API describes it.
pub(crate) fn classify(error: &KafkaError) -> TxnFailure {
    match error {
        KafkaError::Transaction(e) if e.is_fatal() => TxnFailure::Fatal,
        KafkaError::Transaction(e) if e.txn_requires_abort() => TxnFailure::Abort,
        KafkaError::Transaction(e) if e.is_retriable() => TxnFailure::Retriable,
        // Anything else (a flush that timed out, an unexpected state): the transaction cannot
        // be trusted to hold what it should.
        _ => TxnFailure::Abort,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guarantees_parse_and_bad_values_name_the_choices() {
        assert_eq!("exactly-once".parse(), Ok(Guarantee::ExactlyOnce));
        assert_eq!("EXACTLY_ONCE".parse(), Ok(Guarantee::ExactlyOnce));
        assert_eq!("at-least-once".parse(), Ok(Guarantee::AtLeastOnce));
        let e = "once".parse::<Guarantee>().unwrap_err();
        assert!(e.contains("at-least-once or exactly-once"), "{e}");
    }

    #[test]
    fn refusals_are_remembered_until_committed_past() {
        let t = Transactions::new(10, Duration::from_secs(1), "t".into());
        let topic: Arc<str> = Arc::from("in");
        t.refuse(&topic, 0, 5, "too large".into());
        t.refuse(&topic, 0, 9, "bad".into());
        t.refuse(&topic, 1, 5, "other partition".into());
        assert_eq!(t.refusal(&topic, 0, 5).as_deref(), Some("too large"));
        assert_eq!(t.refusal(&topic, 0, 6), None);
        t.forget_below(&topic, 0, 6);
        assert_eq!(t.refusal(&topic, 0, 5), None);
        assert_eq!(t.refusal(&topic, 0, 9).as_deref(), Some("bad"));
        assert_eq!(t.refusal(&topic, 1, 5).as_deref(), Some("other partition"));
    }

    #[tokio::test]
    async fn a_full_transaction_holds_settles_until_the_next_one_opens() {
        let t = Arc::new(Transactions::new(2, Duration::from_secs(1), "t".into()));
        let stop = CancellationToken::new();
        drop(t.enter(&stop).await.unwrap());
        drop(t.enter(&stop).await.unwrap());
        assert!(t.full());
        let (t2, stop2) = (t.clone(), stop.clone());
        let third = tokio::spawn(async move { t2.enter(&stop2).await.is_some() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !third.is_finished(),
            "a third settle must wait for the commit"
        );
        t.opened();
        assert!(third.await.unwrap());
        assert_eq!(t.settled(), 1);
    }

    #[tokio::test]
    async fn a_stopped_partition_never_enters() {
        let t = Transactions::new(1, Duration::from_secs(1), "t".into());
        let stop = CancellationToken::new();
        drop(t.enter(&stop).await.unwrap());
        stop.cancel();
        assert!(t.enter(&stop).await.is_none(), "full and stopped");
        t.opened();
        assert!(t.enter(&stop).await.is_none(), "room but stopped");
    }
}
