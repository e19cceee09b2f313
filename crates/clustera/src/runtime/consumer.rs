//! The rdkafka consumer on its own thread. It polls, hands messages to the dispatcher, serves
//! rebalance callbacks, and commits. Blocking librdkafka calls (sync commit, close) happen here,
//! never on the async workers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};

use super::dispatch::Dispatcher;
use super::stats::RuntimeStats;
use crate::kernel::Kernel;

/// How often commits and held messages are looked at while messages flow.
const HOUSEKEEPING: Duration = Duration::from_millis(20);

/// librdkafka callbacks for the kernel's consumer.
pub(crate) struct KernelConsumerContext<K> {
    dispatcher: Mutex<Dispatcher<K>>,
    stats: Arc<RuntimeStats>,
    kernel_name: Arc<str>,
}

impl<K> KernelConsumerContext<K> {
    fn dispatcher(&self) -> MutexGuard<'_, Dispatcher<K>> {
        self.dispatcher.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<K: Kernel> ClientContext for KernelConsumerContext<K> {}

impl<K: Kernel> ConsumerContext for KernelConsumerContext<K> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.dispatcher().revoke(consumer, tpl);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self.dispatcher().assign(tpl),
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::error!(kernel = %self.kernel_name, error = %e, "rebalance error")
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                tracing::debug!(kernel = %self.kernel_name, partitions = offsets.count(), "offsets committed");
            }
            Err(e) => {
                RuntimeStats::bump(&self.stats.commit_failures);
                tracing::warn!(kernel = %self.kernel_name, error = %e, "offset commit failed; will commit again");
                self.dispatcher().commit_failed();
            }
        }
    }
}

/// The consumer, ready to be moved onto its thread.
pub(crate) struct PollLoop<K: Kernel> {
    consumer: BaseConsumer<KernelConsumerContext<K>>,
}

impl<K: Kernel> PollLoop<K> {
    /// Creates the consumer and subscribes; neither call waits for the network.
    pub(crate) fn new(
        config: &ClientConfig,
        topics: &[String],
        dispatcher: Dispatcher<K>,
        stats: Arc<RuntimeStats>,
        kernel_name: Arc<str>,
    ) -> KafkaResult<Self> {
        let context = KernelConsumerContext {
            dispatcher: Mutex::new(dispatcher),
            stats,
            kernel_name,
        };
        let consumer: BaseConsumer<_> = config.create_with_context(context)?;
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(Self { consumer })
    }

    /// Polls until `stop` is set, then drains, commits and leaves the group.
    pub(crate) fn run(self, stop: &AtomicBool) {
        let consumer = self.consumer;
        let mut next_housekeeping = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let holding = consumer.context().dispatcher().holding();
            let timeout = if holding {
                Duration::from_millis(5)
            } else {
                Duration::from_millis(100)
            };
            match consumer.poll(timeout) {
                Some(Ok(m)) => consumer.context().dispatcher().dispatch(&consumer, &m),
                Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
                None => {}
            }
            let now = Instant::now();
            if holding || now >= next_housekeeping {
                let mut d = consumer.context().dispatcher();
                d.service_held(&consumer);
                d.maybe_commit(&consumer);
                next_housekeeping = now + HOUSEKEEPING;
            }
        }
        consumer.context().dispatcher().shutdown(&consumer);
        // Leaving the group: revocation callbacks find nothing left to drain.
        consumer.unsubscribe();
        drop(consumer);
    }
}
