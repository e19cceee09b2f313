//! Exactly-once commits, on the poll thread: the open transaction is committed with every
//! partition's finished position, or aborted, and then every partition is rewound to its last
//! commit (see `runtime::transaction` for the whole design).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};

use super::{idle_position, offsets_of, wait_until, Assigned, Dispatcher};
use crate::kernel::Kernel;
use crate::runtime::partition_queue::Splitter;
use crate::runtime::stats::RuntimeStats;
use crate::runtime::transaction::{classify, TxnFailure};

/// How often a retriable transactional call is tried again before the producer is given up:
/// librdkafka allows no other transactional call until a timed-out one completes.
const RETRIES: u32 = 3;

/// Aborts in a row (no commit in between) after which the kernel stops: something fails every
/// transaction (a topic it may not write to, a partition that never answers) and redoing the
/// same work again would never end.
const MAX_ABORTS_IN_A_ROW: u32 = 10;

/// Why the open transaction could not commit.
enum Failed {
    Abort(String),
    Fatal(String),
}

impl<K: Kernel> Dispatcher<K> {
    /// Commits the open transaction when the interval has passed and something is in it, or
    /// when it is full.
    pub(super) fn maybe_commit_transaction<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        split: Splitter<'_>,
    ) {
        let Some(txn) = self.deps.transactions.clone() else {
            return;
        };
        let interval_due = self.last_commit.elapsed() >= self.deps.settings.commit_interval;
        if !(interval_due || txn.full()) {
            return;
        }
        // Idle partitions still move past the transaction markers of their input.
        let idle_moved = interval_due && {
            let positions = consumer.position().ok();
            self.partitions.values().flat_map(|p| p.values()).any(|a| {
                positions
                    .as_ref()
                    .and_then(|p| idle_position(a, p))
                    .is_some_and(|p| a.last_committed.is_none_or(|c| p > c))
            })
        };
        if txn.settled() == 0 && !idle_moved {
            self.last_commit = Instant::now();
            return;
        }
        self.end_transaction(consumer, &mut Vec::new(), Some(split));
    }

    /// Revocation and shutdown under exactly-once: waits (at most half the transaction
    /// timeout, so the open transaction is not timed out meanwhile) for the stopped workers to
    /// finish the message in hand, then commits what is settled. Nothing unfinished is waited
    /// for longer: a stopped partition can no longer settle anything, and whoever reads it next
    /// starts from this commit.
    pub(super) fn stop_and_commit_transaction<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        mut partitions: Vec<Assigned>,
        split: Option<Splitter<'_>>,
    ) {
        let doomed = self
            .deps
            .transactions
            .as_ref()
            .is_some_and(|t| t.is_doomed());
        if !doomed {
            let limit = self
                .deps
                .settings
                .drain_timeout
                .min(self.deps.settings.transaction_timeout / 2);
            wait_until(Instant::now() + limit, || {
                partitions.iter().all(|a| a.worker.is_finished())
            });
        }
        // Settles under way finish before the gate closes; only then are the workers aborted,
        // so no message's records are cut in half.
        self.end_transaction(consumer, &mut partitions, split);
        for a in &mut partitions {
            a.worker.abort();
            a.publish(&self.deps.stats);
        }
    }

    /// Commits the open transaction with the finished positions of every assigned partition
    /// and of `leaving` (revoked, or everything at shutdown), then opens the next one unless
    /// `split` is `None` (shutdown). If it cannot commit, it is aborted and the assigned
    /// partitions are rewound to their last commit; `leaving` ones are left to their next
    /// owner, who reads them from the last commit too.
    pub(super) fn end_transaction<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        leaving: &mut [Assigned],
        split: Option<Splitter<'_>>,
    ) {
        let Some(txn) = self.deps.transactions.clone() else {
            return;
        };
        let producer = self.deps.producer.clone();
        let p = producer.transactional();
        let closed = txn.close();
        let started = Instant::now();
        let outcome = self.commit_open(consumer, leaving);
        self.deps
            .telemetry
            .metrics
            .observe_commit(started.elapsed().as_secs_f64());
        self.last_commit = Instant::now();
        match outcome {
            Ok(()) => self.aborts_in_a_row = 0,
            Err(Failed::Fatal(reason)) => {
                self.deps.fatal.raise(reason);
                return;
            }
            Err(Failed::Abort(reason)) => {
                RuntimeStats::bump(&self.deps.stats.aborts);
                self.deps.telemetry.metrics.error("transaction");
                tracing::warn!(kernel = %self.deps.kernel_name, %reason,
                    "transaction aborted; every partition goes back to its last commit");
                self.aborts_in_a_row += 1;
                if self.aborts_in_a_row >= MAX_ABORTS_IN_A_ROW {
                    self.deps.fatal.raise(format!(
                        "{MAX_ABORTS_IN_A_ROW} transactions in a row were aborted, the last one \
                         because of: {reason}"
                    ));
                    return;
                }
                if let Err(e) = retried(|| p.abort_transaction(txn.timeout)) {
                    self.deps.fatal.raise(format!(
                        "the transaction could neither commit ({reason}) nor abort ({e})"
                    ));
                    return;
                }
                if let Some(split) = split {
                    self.rewind(consumer, split);
                }
            }
        }
        if split.is_none() || self.deps.fatal.is_raised() {
            return;
        }
        if let Err(e) = p.begin_transaction() {
            self.deps
                .fatal
                .raise(format!("cannot open the next transaction: {e}"));
            return;
        }
        txn.opened();
        drop(closed);
    }

    /// Flushes, checks and commits the open transaction; the caller holds the gate.
    fn commit_open<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        leaving: &mut [Assigned],
    ) -> Result<(), Failed> {
        let Some(txn) = self.deps.transactions.clone() else {
            return Ok(());
        };
        let producer = self.deps.producer.clone();
        let p = producer.transactional();
        // Every settled message's records are queued: their acknowledgements decide.
        p.flush(txn.timeout).map_err(|e| {
            Failed::Abort(format!(
                "records not acknowledged within {:?}: {e}",
                txn.timeout
            ))
        })?;
        if txn.is_doomed() {
            return Err(Failed::Abort("a record of the transaction failed".into()));
        }
        let positions = consumer.position().ok();
        let mut tpl = TopicPartitionList::new();
        let mut advanced = Vec::new();
        let assigned = self.partitions.values().flat_map(|p| p.values());
        for a in assigned.chain(leaving.iter()) {
            let (next, completed) = {
                let o = a.shared.offsets();
                (o.committable(), o.completed())
            };
            let idle = positions.as_ref().and_then(|p| idle_position(a, p));
            let next = next.max(idle).max(a.last_committed);
            if let Some(next) = next.filter(|n| Some(*n) != a.last_committed) {
                let _ = tpl.add_partition_offset(
                    &a.shared.topic,
                    a.shared.partition,
                    Offset::Offset(next),
                );
                advanced.push((a.shared.topic.clone(), a.shared.partition, next, completed));
            }
        }
        if tpl.count() > 0 {
            let group = consumer
                .group_metadata()
                .ok_or_else(|| Failed::Abort("no consumer group metadata".into()))?;
            retried(|| p.send_offsets_to_transaction(&tpl, &group, txn.timeout))
                .map_err(|e| failed("sending the offsets to the transaction", &e))?;
        }
        retried(|| p.commit_transaction(txn.timeout))
            .map_err(|e| failed("committing the transaction", &e))?;
        RuntimeStats::bump(&self.deps.stats.commits);
        if !advanced.is_empty() {
            tracing::debug!(kernel = %self.deps.kernel_name, offsets = ?offsets_of(&tpl),
                "transaction committed");
        }
        for (topic, partition, next, completed) in advanced {
            txn.forget_below(&topic, partition, next);
            let a = match self.partitions.get_mut(&topic) {
                Some(p) if p.contains_key(&partition) => p.get_mut(&partition),
                _ => leaving
                    .iter_mut()
                    .find(|a| a.shared.topic == topic && a.shared.partition == partition),
            };
            if let Some(a) = a {
                a.last_committed = Some(next);
                a.completed_at_commit = completed;
            }
        }
        Ok(())
    }

    /// After an abort: stops every assigned partition's worker, moves each partition back to
    /// its last commit (or where it started), and starts new workers there.
    fn rewind<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>, split: Splitter<'_>) {
        let all: Vec<Assigned> = self
            .partitions
            .drain()
            .flat_map(|(_, p)| p.into_values())
            .collect();
        for a in &all {
            a.shared.stop.cancel();
            if let Some(q) = self
                .queues
                .get(&(a.shared.topic.clone(), a.shared.partition))
            {
                q.retire();
            }
        }
        // A worker waiting to settle sees its stop at once; one inside the kernel finishes
        // its message first, and nothing it settles later can reach a transaction.
        let deadline = Instant::now() + self.deps.settings.drain_timeout;
        wait_until(deadline, || all.iter().all(|a| a.worker.is_finished()));
        let mut tpl = TopicPartitionList::new();
        let mut carried = Vec::new();
        for mut a in all {
            a.worker.abort();
            a.publish(&self.deps.stats);
            let target = a
                .last_committed
                .or(a.rewind_floor)
                .or_else(|| a.shared.first_taken());
            let (topic, partition) = (a.shared.topic.clone(), a.shared.partition);
            if let Some(target) = target {
                if let Err(e) = consumer.seek(
                    &topic,
                    partition,
                    Offset::Offset(target),
                    Duration::from_secs(10),
                ) {
                    self.deps.fatal.raise(format!(
                        "cannot rewind {topic}[{partition}] to offset {target} after an abort: {e}"
                    ));
                    return;
                }
            }
            tpl.add_partition(&topic, partition);
            carried.push((topic, partition, a.last_committed, target));
        }
        tracing::warn!(kernel = %self.deps.kernel_name, partitions = tpl.count(),
            "partitions rewound to their last commit");
        self.assign(&tpl, split);
        for (topic, partition, last_committed, target) in carried {
            match self
                .partitions
                .get_mut(&topic)
                .and_then(|p| p.get_mut(&partition))
            {
                Some(a) => {
                    a.last_committed = last_committed;
                    a.rewind_floor = target;
                }
                // Without a worker the partition would never move again.
                None => self.deps.fatal.raise(format!(
                    "{topic}[{partition}] could not be read again after an abort"
                )),
            }
        }
    }
}

/// Makes a transactional call, again while it fails in a retriable way.
fn retried(mut call: impl FnMut() -> KafkaResult<()>) -> KafkaResult<()> {
    let mut tries = 0;
    loop {
        match call() {
            Err(e) if classify(&e) == TxnFailure::Retriable && tries < RETRIES => {
                tries += 1;
                tracing::warn!(error = %e, tries, "transactional call failed; trying again");
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// What a failed transactional call means for the transaction.
fn failed(doing: &str, e: &rdkafka::error::KafkaError) -> Failed {
    match classify(e) {
        TxnFailure::Fatal => Failed::Fatal(format!(
            "the transactional producer failed for good {doing}: {e} (fenced by a newer \
             instance with the same transactional.id, or the broker refused transactions)"
        )),
        TxnFailure::Abort => Failed::Abort(format!("{doing}: {e}")),
        // librdkafka accepts no other transactional call (not even an abort) until this one
        // completes; the broker aborts the transaction after its timeout, and a restart fences
        // this producer.
        TxnFailure::Retriable => Failed::Fatal(format!(
            "{doing} did not complete after {} tries: {e}",
            RETRIES + 1
        )),
    }
}
