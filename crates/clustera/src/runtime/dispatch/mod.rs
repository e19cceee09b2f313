//! Gives each assigned partition its own librdkafka queue and worker, and turns the offset
//! trackers into commits. Owned by the poll thread; every method runs there.
//!
//! Each partition's messages are split off the consumer's main queue (librdkafka's partition
//! queues), so a worker reads its partition directly and backpressure is librdkafka's own
//! bounded prefetch: a slow or retrying partition simply stops being read, while the poll
//! thread keeps serving the group. Nothing is paused, so nothing prefetched is thrown away.
//!
//! Messages fetched before the split still arrive on the main queue. They are older than
//! anything in the partition queue, so they are handed to the worker first ("residual"), and the
//! worker starts reading its partition queue only once the main queue has been seen empty.
//!
//! Under exactly-once, commits are transactions instead (`transactional.rs`).

mod transactional;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message as _, Offset, TopicPartitionList};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::partition::PartitionShared;
use super::partition_queue::{Owner, SharedQueue, Splitter};
use super::stats::RuntimeStats;
use super::transaction::Guarantee;
use super::worker::{run_partition, PartitionSource, WorkerDeps};
use crate::kernel::Kernel;
use crate::message::Message;
use crate::telemetry::PartitionMetrics;

/// The poll thread's view of one assigned partition.
struct Assigned {
    shared: Arc<PartitionShared>,
    /// Messages of this partition that arrived on the main queue (fetched before the split).
    residual: mpsc::UnboundedSender<Message>,
    /// Cancelled once the main queue holds no more messages of this partition.
    released: CancellationToken,
    worker: JoinHandle<()>,
    last_committed: Option<i64>,
    completed_at_commit: u64,
    /// For the stall watchdog: messages done when last looked at, and when that changed.
    last_completed: u64,
    last_progress_ms: u64,
    /// The topic's metric series this partition's counters are published into.
    metrics: PartitionMetrics,
    /// Counter values already published: acked, skipped, dead-lettered, retries, letters.
    published: [u64; 5],
    /// The first unfinished offset when last looked at, and since when it has been first.
    first_unfinished: Option<(i64, u64)>,
    /// Under exactly-once, where an abort rewinds this partition when it has no commit of its
    /// own: the position an earlier rewind went back to.
    rewind_floor: Option<i64>,
}

impl Assigned {
    /// Moves what the worker counted since the last call into the shared metrics and stats.
    fn publish(&mut self, stats: &RuntimeStats) {
        let c = &self.shared.counters;
        let now = [
            &c.acked,
            &c.skipped,
            &c.dead_lettered,
            &c.retries,
            &c.letters,
        ]
        .map(|a| a.load(Ordering::Relaxed));
        let delta: [u64; 5] = std::array::from_fn(|i| now[i] - self.published[i]);
        self.published = now;
        let m = &self.metrics;
        m.acked.inc_by(delta[0]);
        m.skipped.inc_by(delta[1]);
        m.dead_lettered.inc_by(delta[2]);
        m.retries.inc_by(delta[3]);
        m.dead_letters.inc_by(delta[4]);
        for (counter, d) in [
            &stats.acked,
            &stats.skipped,
            &stats.dead_lettered,
            &stats.retries,
        ]
        .into_iter()
        .zip(delta)
        {
            counter.fetch_add(d, Ordering::Relaxed);
        }
        c.processing.drain_into(&m.processing);
        c.end_to_end.drain_into(&m.end_to_end);
    }
}

/// All assigned partitions of one consumer.
pub(crate) struct Dispatcher<K: Kernel> {
    deps: WorkerDeps<K>,
    /// Whether some partition still waits to be released.
    unreleased: bool,
    runtime: tokio::runtime::Handle,
    partitions: HashMap<Arc<str>, HashMap<i32, Assigned>>,
    /// Every partition queue this consumer has read, kept until it closes (see
    /// `partition_queue`).
    queues: HashMap<(Arc<str>, i32), Arc<SharedQueue>>,
    /// The last assignment's worker claim; each new worker gets the next.
    last_owner: Owner,
    last_commit: Instant,
    /// A commit failed: the next one re-sends every partition's position.
    recommit: bool,
    /// When every position was last sent regardless of change (see `maybe_commit`).
    last_full_commit: Instant,
    /// Under exactly-once, transactions aborted since the last one that committed.
    aborts_in_a_row: u32,
}

impl<K: Kernel> Dispatcher<K> {
    pub(crate) fn new(deps: WorkerDeps<K>, runtime: tokio::runtime::Handle) -> Self {
        Self {
            deps,
            unreleased: false,
            runtime,
            partitions: HashMap::new(),
            queues: HashMap::new(),
            last_owner: 0,
            last_commit: Instant::now(),
            recommit: false,
            last_full_commit: Instant::now(),
            aborts_in_a_row: 0,
        }
    }

    /// Starts a worker for each newly assigned partition, on the partition's own queue split
    /// off the main queue by `split`. Runs in the rebalance callback, after librdkafka applied
    /// the assignment.
    pub(crate) fn assign(&mut self, tpl: &TopicPartitionList, split: Splitter<'_>) {
        for elem in tpl.elements() {
            let (topic, partition) = (elem.topic(), elem.partition());
            if self
                .partitions
                .get(topic)
                .is_some_and(|p| p.contains_key(&partition))
            {
                continue;
            }
            let Some(handle) = split(topic, partition) else {
                tracing::error!(topic, partition, "cannot split the partition's queue");
                continue;
            };
            let topic: Arc<str> = match self.partitions.get_key_value(topic) {
                Some((k, _)) => k.clone(),
                None => Arc::from(topic),
            };
            let queue = self
                .queues
                .entry((topic.clone(), partition))
                .or_insert_with(SharedQueue::new)
                .clone();
            self.last_owner += 1;
            let ready = Arc::new(Notify::new());
            let wake = ready.clone();
            queue.hand_over(handle, self.last_owner, move || wake.notify_one());
            let shared = PartitionShared::new(topic.clone(), partition);
            let (residual, residual_rx) = mpsc::unbounded_channel();
            let released = CancellationToken::new();
            let source = PartitionSource {
                queue,
                owner: self.last_owner,
                ready,
                residual: residual_rx,
                released: released.clone(),
            };
            let worker =
                self.runtime
                    .spawn(run_partition(self.deps.clone(), shared.clone(), source));
            tracing::info!(kernel = %self.deps.kernel_name, topic = %topic, partition,
                "partition assigned");
            self.unreleased = true;
            super::stats::RuntimeStats::bump(&self.deps.stats.partitions_assigned);
            let metrics = self.deps.telemetry.metrics.partition(&topic);
            self.partitions.entry(topic).or_default().insert(
                partition,
                Assigned {
                    shared,
                    residual,
                    released,
                    worker,
                    last_committed: None,
                    completed_at_commit: 0,
                    last_completed: 0,
                    last_progress_ms: self.deps.telemetry.health.now_ms(),
                    metrics,
                    published: [0; 5],
                    first_unfinished: None,
                    rewind_floor: None,
                },
            );
        }
        self.count_assigned();
    }

    fn count_assigned(&self) {
        let n = self.partitions.values().map(HashMap::len).sum::<usize>();
        self.deps
            .telemetry
            .metrics
            .assigned
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Records a partition's lag from librdkafka's statistics.
    pub(crate) fn update_lag(&self, topic: &str, partition: i32, lag: i64) {
        if let Some(a) = self.partitions.get(topic).and_then(|p| p.get(&partition)) {
            a.shared.lag.store(lag, Ordering::Relaxed);
            self.deps.telemetry.metrics.set_lag(topic, partition, lag);
        }
    }

    /// The watchdog and the gauges sampled rather than counted: a partition with work (a
    /// message in process, or lag) that has finished nothing for the stall timeout is stalled.
    pub(crate) fn watch(&mut self) {
        let telemetry = &self.deps.telemetry;
        let now = telemetry.health.now_ms();
        let timeout =
            u64::try_from(self.deps.settings.stall_timeout.as_millis()).unwrap_or(u64::MAX);
        let mut stalled = Vec::new();
        let mut paused = 0i64;
        let mut in_flight = 0i64;
        for a in self.partitions.values_mut().flat_map(|p| p.values_mut()) {
            a.publish(&self.deps.stats);
            if a.worker.is_finished() && !a.shared.stop.is_cancelled() {
                // Kernel panics are caught; this is the runtime's own failure. Its partition
                // would never move again, so the process must not stay up.
                self.deps.fatal.raise(format!(
                    "the worker of {}[{}] ended unexpectedly",
                    a.shared.topic, a.shared.partition
                ));
            }
            let (completed, uncommitted, first) = {
                let o = a.shared.offsets();
                (o.completed(), o.in_flight(), o.first_unfinished())
            };
            a.first_unfinished = match (first, a.first_unfinished) {
                (None, _) => None,
                (Some(f), Some((was, since))) if f == was => Some((was, since)),
                (Some(f), _) => Some((f, now)),
            };
            let oldest_age = a
                .first_unfinished
                .map_or(0.0, |(_, since)| now.saturating_sub(since) as f64 / 1000.0);
            telemetry.metrics.set_progress(
                &a.shared.topic,
                a.shared.partition,
                uncommitted,
                oldest_age,
            );
            if completed != a.last_completed {
                a.last_completed = completed;
                a.last_progress_ms = now;
            }
            let busy = a.shared.busy.load(Ordering::Relaxed);
            in_flight += i64::from(busy);
            let lag = a.shared.lag.load(Ordering::Relaxed);
            if a.shared.retrying.load(Ordering::Relaxed) {
                paused += 1;
            }
            let idle_for = now.saturating_sub(a.last_progress_ms);
            if (busy || lag > 0) && idle_for > timeout {
                stalled.push(format!(
                    "{}[{}]: no message finished for {idle_for} ms (lag {lag}, {})",
                    a.shared.topic,
                    a.shared.partition,
                    if busy {
                        "a message is in process"
                    } else {
                        "nothing in process"
                    },
                ));
            }
        }
        telemetry.metrics.paused.set(paused);
        telemetry.metrics.in_flight.set(in_flight);
        telemetry
            .metrics
            .producer_queue
            .set(i64::from(self.deps.producer.in_flight()));
        telemetry.health.set_stalled(stalled);
    }

    /// Stops the revoked partitions' workers after their current message, waits (bounded) for
    /// their outputs to be acknowledged, and commits their final positions synchronously.
    pub(crate) fn revoke<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        tpl: &TopicPartitionList,
        split: Splitter<'_>,
    ) {
        let mut revoked = Vec::new();
        for elem in tpl.elements() {
            if let Some(a) = self
                .partitions
                .get_mut(elem.topic())
                .and_then(|p| p.remove(&elem.partition()))
            {
                revoked.push(a);
            }
        }
        self.partitions.retain(|_, p| !p.is_empty());
        for a in &revoked {
            if let Some(q) = self
                .queues
                .get(&(a.shared.topic.clone(), a.shared.partition))
            {
                q.retire();
            }
            self.deps
                .telemetry
                .metrics
                .forget_partition(&a.shared.topic, a.shared.partition);
        }
        self.count_assigned();
        if revoked.is_empty() {
            return;
        }
        let names: Vec<String> = revoked
            .iter()
            .map(|a| format!("{}[{}]", a.shared.topic, a.shared.partition))
            .collect();
        tracing::info!(kernel = %self.deps.kernel_name, partitions = ?names, "partitions revoked; draining");
        self.stop_and_commit(consumer, revoked, Some(split));
    }

    /// Shutdown: every partition is drained and committed as if revoked.
    pub(crate) fn shutdown<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        let all: Vec<Assigned> = self
            .partitions
            .drain()
            .flat_map(|(_, p)| p.into_values())
            .collect();
        self.stop_and_commit(consumer, all, None);
        // The handles hold the consumer, which owns this dispatcher.
        for (_, q) in self.queues.drain() {
            q.close();
        }
    }

    /// Stops `partitions`, waits (bounded) for them to finish, and commits their final
    /// positions: synchronously, or under exactly-once in the transaction, which `split` (to
    /// rewind the partitions that stay should it abort) reopens; `None` at shutdown.
    fn stop_and_commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        mut partitions: Vec<Assigned>,
        split: Option<Splitter<'_>>,
    ) {
        for a in &partitions {
            a.shared.stop.cancel();
        }
        if self.deps.settings.guarantee == Guarantee::ExactlyOnce {
            self.stop_and_commit_transaction(consumer, partitions, split);
            return;
        }
        // After a fatal error, what cannot finish (a refused dead letter) would only hold the
        // exit back for the whole drain timeout.
        let drain = if self.deps.fatal.is_raised() {
            self.deps.settings.drain_timeout.min(Duration::from_secs(5))
        } else {
            self.deps.settings.drain_timeout
        };
        let deadline = Instant::now() + drain;
        let drained = wait_until(deadline, || {
            partitions
                .iter()
                .all(|a| a.worker.is_finished() && a.shared.offsets().settled())
        });
        if !drained {
            tracing::warn!(kernel = %self.deps.kernel_name,
                timeout_ms = self.deps.settings.drain_timeout.as_millis() as u64,
                "drain timeout: committing what is done; unfinished messages will be redelivered");
        }
        for a in &mut partitions {
            a.worker.abort();
            a.publish(&self.deps.stats);
        }
        // Every finished position, changed or not: an earlier asynchronous commit of the same
        // position may have failed without a word, and this is the last chance to make it.
        let mut tpl = TopicPartitionList::new();
        for a in &partitions {
            // Never behind what was committed already (an idle position past transaction
            // markers can be ahead of the last message).
            let next = a.shared.offsets().committable();
            if let Some(next) = next.max(a.last_committed) {
                let _ = tpl.add_partition_offset(
                    &a.shared.topic,
                    a.shared.partition,
                    Offset::Offset(next),
                );
            }
        }
        if tpl.count() > 0 {
            self.commit(consumer, &tpl, CommitMode::Sync);
        }
    }

    /// Hands a message that arrived on the main queue to its partition's worker.
    pub(crate) fn dispatch(&mut self, m: &BorrowedMessage<'_>) {
        let Some(a) = self
            .partitions
            .get(m.topic())
            .and_then(|p| p.get(&m.partition()))
        else {
            // Revoked in the meantime: whoever owns it now reads it again from the commit.
            return;
        };
        tracing::debug!(
            topic = m.topic(),
            partition = m.partition(),
            offset = m.offset(),
            "message fetched before its partition was split; handing it over first"
        );
        // Handed over, it is past the consumer's position: an exactly-once rewind must go back
        // to it even if the worker never gets it.
        a.shared.taken(m.offset());
        // A closed channel means the worker stopped; the message is then read again later.
        let _ = a
            .residual
            .send(Message::from_kafka(a.shared.topic.clone(), m));
    }

    /// Whether newly assigned workers wait for the main queue to be seen empty.
    pub(crate) fn releasing(&self) -> bool {
        self.unreleased
    }

    /// The main queue was seen empty: no message fetched before a split remains, so every
    /// worker may read its partition queue.
    pub(crate) fn release_all(&mut self) {
        if !self.unreleased {
            return;
        }
        for a in self.partitions.values().flat_map(|p| p.values()) {
            a.released.cancel();
        }
        self.unreleased = false;
    }

    /// Commits asynchronously when the interval has passed or enough messages are done; under
    /// exactly-once, commits the open transaction (`split` rewinds the partitions should it
    /// abort).
    pub(crate) fn maybe_commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        split: Splitter<'_>,
    ) {
        if self.deps.settings.guarantee == Guarantee::ExactlyOnce {
            self.maybe_commit_transaction(consumer, split);
            return;
        }
        // librdkafka reports the result of an asynchronous commit only to an offset-commit
        // callback, which rdkafka's consumer does not install: a failed commit goes unseen.
        // So every few intervals every position is sent again, changed or not (idempotent),
        // and a lost commit heals itself.
        let full_every = (self.deps.settings.commit_interval * 5).max(Duration::from_secs(5));
        if self.last_full_commit.elapsed() >= full_every {
            self.recommit = true;
            self.last_full_commit = Instant::now();
        }
        let settings = &self.deps.settings;
        let interval_due = self.last_commit.elapsed() >= settings.commit_interval;
        // Read before each partition's `holding` flag (see `idle_position`).
        let positions = if interval_due {
            consumer.position().ok()
        } else {
            None
        };
        let mut done_since = 0u64;
        let mut tpl = TopicPartitionList::new();
        let mut advanced = Vec::new();
        for a in self.partitions.values_mut().flat_map(|p| p.values_mut()) {
            let (next, completed) = {
                let o = a.shared.offsets();
                (o.committable(), o.completed())
            };
            let next = match positions.as_ref().and_then(|p| idle_position(a, p)) {
                Some(position) => Some(next.map_or(position, |n| n.max(position))),
                None => next,
            };
            done_since += completed - a.completed_at_commit;
            if let Some(next) = next {
                if a.last_committed != Some(next) || self.recommit {
                    let _ = tpl.add_partition_offset(
                        &a.shared.topic,
                        a.shared.partition,
                        Offset::Offset(next),
                    );
                    advanced.push((a.shared.topic.clone(), a.shared.partition, next, completed));
                }
            }
        }
        if tpl.count() == 0 || !(interval_due || done_since >= settings.commit_every) {
            return;
        }
        if self.commit(consumer, &tpl, CommitMode::Async) {
            self.recommit = false;
            for (topic, partition, next, completed) in advanced {
                if let Some(a) = self
                    .partitions
                    .get_mut(&topic)
                    .and_then(|p| p.get_mut(&partition))
                {
                    a.last_committed = Some(next);
                    a.completed_at_commit = completed;
                }
            }
        } else {
            self.recommit = true;
        }
        self.last_commit = Instant::now();
    }

    /// Commits `tpl`, timing it, counting it and logging the outcome. Returns whether the
    /// commit call succeeded (an asynchronous one only queued its request).
    fn commit<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        tpl: &TopicPartitionList,
        mode: CommitMode,
    ) -> bool {
        let started = Instant::now();
        let result = consumer.commit(tpl, mode);
        let telemetry = &self.deps.telemetry;
        telemetry
            .metrics
            .observe_commit(started.elapsed().as_secs_f64());
        let kernel = &self.deps.kernel_name;
        let offsets = offsets_of(tpl);
        match result {
            Ok(()) => {
                RuntimeStats::bump(&self.deps.stats.commits);
                tracing::info!(%kernel, ?offsets, sync = matches!(mode, CommitMode::Sync), "offsets committed");
                true
            }
            Err(e) => {
                telemetry.metrics.error("commit");
                RuntimeStats::bump(&self.deps.stats.commit_failures);
                tracing::error!(%kernel, error = %e, ?offsets,
                    "commit failed; it is retried, and messages after the last commit would be redelivered");
                false
            }
        }
    }

    /// An asynchronous commit failed: send every position again next time.
    pub(crate) fn commit_failed(&mut self) {
        self.recommit = true;
    }
}

/// The consumer's position in an idle partition: past the transaction markers (and aborted
/// records) that follow the last message, which the kernel never sees. Committing only the
/// last message's offset + 1 would leave the lag at 1 behind a commit marker for good, and a
/// stall on an idle partition.
///
/// `positions` must be read before this looks at the worker: a message taken before that
/// read is either unfinished (`holding` is set) or finished and tracked, so the position
/// never passes a message that is not done.
fn idle_position(a: &Assigned, positions: &TopicPartitionList) -> Option<i64> {
    if a.shared.holding.load(Ordering::SeqCst) || a.shared.offsets().in_flight() > 0 {
        return None;
    }
    match positions
        .find_partition(&a.shared.topic, a.shared.partition)?
        .offset()
    {
        Offset::Offset(p) => Some(p),
        _ => None,
    }
}

fn offsets_of(tpl: &TopicPartitionList) -> Vec<String> {
    tpl.elements()
        .iter()
        .map(|e| format!("{}[{}]={:?}", e.topic(), e.partition(), e.offset()))
        .collect()
}

/// Polls `done` every few milliseconds until it holds or `deadline` passes. Runs on the poll
/// thread, which may block: acknowledgements arrive on the producer's own thread.
fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
