//! The rdkafka consumer on its own thread. It polls, hands messages to the dispatcher, serves
//! rebalance callbacks, and commits. Blocking librdkafka calls (sync commit, close) happen here,
//! never on the async workers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};

use super::dispatch::Dispatcher;
use super::fatal::Fatal;
use super::partition_queue::QueueHandle;
use super::stats::RuntimeStats;
use crate::kernel::Kernel;
use crate::telemetry::Telemetry;

/// How often commits are looked at.
const HOUSEKEEPING: Duration = Duration::from_millis(20);

/// The main queue's poll timeout: also how quickly a stop request is noticed.
const POLL_TIMEOUT: Duration = Duration::from_millis(20);

/// The kernel's consumer.
pub(crate) type KernelConsumer<K> = BaseConsumer<KernelConsumerContext<K>>;

/// librdkafka callbacks for the kernel's consumer.
pub(crate) struct KernelConsumerContext<K: Kernel> {
    dispatcher: Mutex<Dispatcher<K>>,
    /// Set once the consumer exists, to split partition queues off it; weak because the
    /// consumer owns this context.
    consumer: OnceLock<Weak<KernelConsumer<K>>>,
    stats: Arc<RuntimeStats>,
    telemetry: Arc<Telemetry>,
    kernel_name: Arc<str>,
    fatal: Arc<Fatal>,
    /// An asynchronous commit failed: the poll thread re-sends every position next time.
    /// A flag rather than the dispatcher's lock, because librdkafka's own threads set it.
    commit_failed: AtomicBool,
}

impl<K: Kernel> KernelConsumerContext<K> {
    fn dispatcher(&self) -> MutexGuard<'_, Dispatcher<K>> {
        self.dispatcher.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn observe_commit_failure(&self) {
        RuntimeStats::bump(&self.stats.commit_failures);
        self.telemetry.metrics.error("commit");
        self.commit_failed.store(true, Ordering::Relaxed);
    }
}

impl<K: Kernel> ClientContext for KernelConsumerContext<K> {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        // librdkafka hands the result of a manual asynchronous commit to nobody: rdkafka's
        // event API receives results of automatic commits only (rd_kafka_commit posts no
        // reply without an offset_commit_cb, which rdkafka does not install). A failure is
        // then logged under COMMITFAIL, and that is the one place it can be observed.
        if fac == "COMMITFAIL" {
            self.observe_commit_failure();
        }
        self.telemetry.redactor.log(level, fac, log_message);
    }

    // A fatal error (a fenced static member) arrives with its underlying code, not `Fatal`;
    // the poll loop asks the client whether it is fatal.
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(kernel = %self.kernel_name, %error, reason, "consumer error");
    }

    fn stats(&self, statistics: Statistics) {
        let d = self.dispatcher();
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // librdkafka reports -1 for partitions it is not consuming.
                if *partition >= 0 && p.consumer_lag >= 0 {
                    d.update_lag(topic, *partition, p.consumer_lag);
                }
            }
        }
    }
}

impl<K: Kernel> ConsumerContext for KernelConsumerContext<K> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let registered = self.consumer.get().and_then(Weak::upgrade);
            self.dispatcher()
                .revoke(consumer, tpl, &|topic, partition| {
                    split(&registered, topic, partition)
                });
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let consumer = self.consumer.get().and_then(Weak::upgrade);
                if consumer.is_none() {
                    tracing::error!("assignment before the consumer was registered; ignoring it");
                }
                self.dispatcher()
                    .assign(tpl, &|topic, partition| split(&consumer, topic, partition));
                // In the group with an assignment, even an empty one.
                self.telemetry.health.set_ready(true);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::error!(kernel = %self.kernel_name, error = %e, "rebalance error")
            }
        }
    }

    // Results of asynchronous commits arrive here, from the main queue's poll. A commit can
    // fail as a whole or per partition (the request succeeds, a partition's entry carries the
    // error), so both are looked at.
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let failed: Vec<String> = offsets
            .elements()
            .iter()
            .filter_map(|e| {
                e.error()
                    .err()
                    .map(|err| format!("{}[{}]: {err}", e.topic(), e.partition()))
            })
            .collect();
        let error = match result {
            Err(e) => Some(e.to_string()),
            Ok(()) if !failed.is_empty() => Some(failed.join(", ")),
            Ok(()) => None,
        };
        match error {
            None => {
                tracing::debug!(kernel = %self.kernel_name, partitions = offsets.count(), "offsets committed");
            }
            Some(error) => {
                tracing::warn!(kernel = %self.kernel_name, %error, "offset commit failed; will commit again");
                self.observe_commit_failure();
            }
        }
    }
}

/// Splits `partition`'s queue off `consumer`'s main queue.
fn split<K: Kernel>(
    consumer: &Option<Arc<KernelConsumer<K>>>,
    topic: &str,
    partition: i32,
) -> Option<Box<dyn QueueHandle>> {
    let queue = consumer.as_ref()?.split_partition_queue(topic, partition)?;
    Some(Box::new(queue))
}

/// The consumer, ready to be moved onto its thread.
pub(crate) struct PollLoop<K: Kernel> {
    consumer: Arc<KernelConsumer<K>>,
}

impl<K: Kernel> PollLoop<K> {
    /// Creates the consumer and subscribes; neither call waits for the network.
    pub(crate) fn new(
        config: &ClientConfig,
        topics: &[String],
        dispatcher: Dispatcher<K>,
        stats: Arc<RuntimeStats>,
        telemetry: Arc<Telemetry>,
        kernel_name: Arc<str>,
        fatal: Arc<Fatal>,
    ) -> KafkaResult<Self> {
        let context = KernelConsumerContext {
            dispatcher: Mutex::new(dispatcher),
            consumer: OnceLock::new(),
            stats,
            telemetry,
            kernel_name,
            fatal,
            commit_failed: AtomicBool::new(false),
        };
        let consumer: Arc<KernelConsumer<K>> = Arc::new(config.create_with_context(context)?);
        let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(Self { consumer })
    }

    /// Polls until `stop` is set, then drains, commits and leaves the group.
    pub(crate) fn run(self, stop: &AtomicBool) {
        let consumer = self.consumer;
        let mut next_housekeeping = Instant::now();
        let mut releasing = false;
        let fatal = consumer.context().fatal.clone();
        while !stop.load(Ordering::Relaxed) && !fatal.is_raised() {
            // Partitions are read by their workers; this queue carries events (rebalances,
            // commit results, errors) and messages fetched before a partition was split. Right
            // after an assignment it is polled without waiting, so that the new workers are
            // released as soon as it is seen empty.
            let timeout = if releasing {
                Duration::ZERO
            } else {
                POLL_TIMEOUT
            };
            let polled = consumer.poll(timeout);
            // Rebalance callbacks lock the dispatcher inside poll, so it is locked only after.
            let mut d = consumer.context().dispatcher();
            match polled {
                Some(Ok(m)) => d.dispatch(&m),
                Some(Err(e)) => match consumer.client().fatal_error() {
                    // A fenced static member, for instance: this consumer can never work again.
                    Some((code, text)) => fatal.raise(format!(
                        "the consumer failed for good: {text} ({code:?}); last error: {e}"
                    )),
                    None => tracing::warn!(error = %e, "consumer error"),
                },
                None => d.release_all(),
            }
            consumer.context().telemetry.health.poll_turned();
            let now = Instant::now();
            if now >= next_housekeeping {
                if let Some((code, text)) = consumer.client().fatal_error() {
                    fatal.raise(format!("the consumer failed for good: {text} ({code:?})"));
                }
                if consumer
                    .context()
                    .commit_failed
                    .swap(false, Ordering::Relaxed)
                {
                    d.commit_failed();
                }
                let registered = Some(consumer.clone());
                d.maybe_commit(&consumer, &|topic, partition| {
                    split(&registered, topic, partition)
                });
                d.watch();
                next_housekeeping = now + HOUSEKEEPING;
            }
            releasing = d.releasing();
        }
        consumer.context().dispatcher().shutdown(&consumer);
        // Leaving the group: revocation callbacks find nothing left to drain.
        consumer.unsubscribe();
        // The dispatcher dropped its partition queues, which held the consumer too; closing
        // must happen here, on this thread, so wait (bounded) for any other holder to let go.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&consumer) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(consumer);
    }
}
