//! Routes polled messages to per-partition queues, pauses partitions whose queue is full, and
//! turns the offset trackers into commits. Owned by the poll thread; every method runs there.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message as _, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::partition::PartitionShared;
use super::worker::{run_partition, WorkerDeps};
use crate::kernel::Kernel;
use crate::message::{Header, Message};

/// The poll thread's view of one assigned partition.
struct Assigned {
    shared: Arc<PartitionShared>,
    queue: mpsc::Sender<Message>,
    /// Messages polled while the queue was full, in order. Pausing makes librdkafka drop what
    /// it prefetched and fetch it again on resume, so a partition is paused only once this
    /// overflow is as long as the queue itself.
    held: VecDeque<Message>,
    paused: bool,
    worker: JoinHandle<()>,
    last_committed: Option<i64>,
    completed_at_commit: u64,
}

/// All assigned partitions of one consumer.
pub(crate) struct Dispatcher<K> {
    deps: WorkerDeps<K>,
    runtime: tokio::runtime::Handle,
    partitions: HashMap<Arc<str>, HashMap<i32, Assigned>>,
    last_commit: Instant,
    /// A commit failed: the next one re-sends every partition's position.
    recommit: bool,
    /// How many partitions hold overflow messages.
    holding: usize,
}

impl<K: Kernel> Dispatcher<K> {
    pub(crate) fn new(deps: WorkerDeps<K>, runtime: tokio::runtime::Handle) -> Self {
        Self {
            deps,
            runtime,
            partitions: HashMap::new(),
            last_commit: Instant::now(),
            recommit: false,
            holding: 0,
        }
    }

    /// Starts a worker for each newly assigned partition.
    pub(crate) fn assign(&mut self, tpl: &TopicPartitionList) {
        for elem in tpl.elements() {
            let by_partition = match self.partitions.get_mut(elem.topic()) {
                Some(p) => p,
                None => self.partitions.entry(Arc::from(elem.topic())).or_default(),
            };
            if by_partition.contains_key(&elem.partition()) {
                continue;
            }
            let topic = match self.partitions.get_key_value(elem.topic()) {
                Some((k, _)) => k.clone(),
                None => Arc::from(elem.topic()),
            };
            let shared = PartitionShared::new(topic.clone(), elem.partition());
            let (tx, rx) = mpsc::channel(self.deps.settings.partition_buffer);
            let worker = self
                .runtime
                .spawn(run_partition(self.deps.clone(), shared.clone(), rx));
            tracing::info!(kernel = %self.deps.kernel_name, topic = %topic,
                partition = elem.partition(), "partition assigned");
            if let Some(p) = self.partitions.get_mut(elem.topic()) {
                p.insert(
                    elem.partition(),
                    Assigned {
                        shared,
                        queue: tx,
                        held: VecDeque::new(),
                        paused: false,
                        worker,
                        last_committed: None,
                        completed_at_commit: 0,
                    },
                );
            }
        }
    }

    /// Stops the revoked partitions' workers after their current message, waits (bounded) for
    /// their outputs to be acknowledged, and commits their final positions synchronously.
    pub(crate) fn revoke<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        tpl: &TopicPartitionList,
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
        self.holding -= revoked.iter().filter(|a| !a.held.is_empty()).count();
        if revoked.is_empty() {
            return;
        }
        let names: Vec<String> = revoked
            .iter()
            .map(|a| format!("{}[{}]", a.shared.topic, a.shared.partition))
            .collect();
        tracing::info!(kernel = %self.deps.kernel_name, partitions = ?names, "partitions revoked; draining");
        self.stop_and_commit(consumer, revoked);
    }

    /// Shutdown: every partition is drained and committed as if revoked.
    pub(crate) fn shutdown<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        let all: Vec<Assigned> = self
            .partitions
            .drain()
            .flat_map(|(_, p)| p.into_values())
            .collect();
        self.holding = 0;
        self.stop_and_commit(consumer, all);
    }

    fn stop_and_commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        partitions: Vec<Assigned>,
    ) {
        for a in &partitions {
            a.shared.stop.cancel();
        }
        let deadline = Instant::now() + self.deps.settings.drain_timeout;
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
        for a in &partitions {
            a.worker.abort();
        }
        let mut tpl = TopicPartitionList::new();
        for a in &partitions {
            if let Some(next) = a.shared.offsets().committable() {
                if a.last_committed != Some(next) || self.recommit {
                    let _ = tpl.add_partition_offset(
                        &a.shared.topic,
                        a.shared.partition,
                        Offset::Offset(next),
                    );
                }
            }
        }
        if tpl.count() > 0 {
            match consumer.commit(&tpl, CommitMode::Sync) {
                Ok(()) => {
                    super::stats::RuntimeStats::bump(&self.deps.stats.commits);
                    tracing::info!(kernel = %self.deps.kernel_name, offsets = ?offsets_of(&tpl),
                        "final offsets committed")
                }
                Err(e) => tracing::error!(kernel = %self.deps.kernel_name, error = %e,
                    offsets = ?offsets_of(&tpl),
                    "final commit failed; messages after the last commit will be redelivered"),
            }
        }
    }

    /// Hands a polled message to its partition's queue, or holds it and pauses the partition.
    pub(crate) fn dispatch<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        m: &BorrowedMessage<'_>,
    ) {
        let Some(a) = self
            .partitions
            .get_mut(m.topic())
            .and_then(|p| p.get_mut(&m.partition()))
        else {
            // Revoked in the meantime: whoever owns it now reads it again from the commit.
            return;
        };
        let message = owned_message(a.shared.topic.clone(), m);
        let message = if a.held.is_empty() {
            match a.queue.try_send(message) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(message)) => {
                    self.holding += 1;
                    message
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        } else {
            message
        };
        a.held.push_back(message);
        if !a.paused && a.held.len() >= self.deps.settings.partition_buffer {
            a.paused = true;
            set_paused(consumer, &a.shared, true);
        }
    }

    /// Whether any partition holds messages (the poll loop then polls more briefly).
    pub(crate) fn holding(&self) -> bool {
        self.holding > 0
    }

    /// Moves held messages into queues that have room, and resumes partitions whose queue has
    /// drained to half.
    pub(crate) fn service_held<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        if self.holding == 0 {
            return;
        }
        let half = self.deps.settings.partition_buffer.div_ceil(2);
        for a in self.partitions.values_mut().flat_map(|p| p.values_mut()) {
            if a.held.is_empty() {
                continue;
            }
            while let Some(message) = a.held.pop_front() {
                match a.queue.try_send(message) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(message)) => {
                        a.held.push_front(message);
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        a.held.clear();
                        break;
                    }
                }
            }
            if a.held.is_empty() {
                self.holding -= 1;
            }
            if a.paused && a.held.len() < half {
                a.paused = false;
                set_paused(consumer, &a.shared, false);
            }
        }
    }

    /// Commits asynchronously when the interval has passed or enough messages are done.
    pub(crate) fn maybe_commit<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        let settings = &self.deps.settings;
        let interval_due = self.last_commit.elapsed() >= settings.commit_interval;
        let mut done_since = 0u64;
        let mut tpl = TopicPartitionList::new();
        let mut advanced = Vec::new();
        for a in self.partitions.values_mut().flat_map(|p| p.values_mut()) {
            let (next, completed) = {
                let o = a.shared.offsets();
                (o.committable(), o.completed())
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
        match consumer.commit(&tpl, CommitMode::Async) {
            Ok(()) => {
                super::stats::RuntimeStats::bump(&self.deps.stats.commits);
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
            }
            Err(e) => {
                self.recommit = true;
                tracing::warn!(kernel = %self.deps.kernel_name, error = %e, "commit request failed; will retry");
            }
        }
        self.last_commit = Instant::now();
    }

    /// An asynchronous commit failed: send every position again next time.
    pub(crate) fn commit_failed(&mut self) {
        self.recommit = true;
    }
}

fn set_paused<C: ConsumerContext>(consumer: &BaseConsumer<C>, p: &PartitionShared, pause: bool) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&p.topic, p.partition);
    let result = if pause {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    match result {
        Ok(()) => {
            tracing::debug!(topic = %p.topic, partition = p.partition, pause, "partition flow control")
        }
        Err(e) => tracing::warn!(topic = %p.topic, partition = p.partition, pause, error = %e,
            "could not change the partition's pause state"),
    }
}

fn owned_message(topic: Arc<str>, m: &BorrowedMessage<'_>) -> Message {
    let headers = m.headers().map(Header::all_from_kafka).unwrap_or_default();
    Message {
        topic,
        partition: m.partition(),
        offset: m.offset(),
        timestamp_ms: m.timestamp().to_millis(),
        key: m.key().map(|k| k.to_vec().into()),
        value: m.payload().map(|v| v.to_vec().into()),
        headers,
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
