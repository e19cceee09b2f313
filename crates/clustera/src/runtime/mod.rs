//! The engine that runs a [`Kernel`]: one file per concern.
//!
//! The walk of one message: at assignment, `dispatch.rs` splits the partition's own queue off
//! the consumer and starts its worker; the worker (`worker.rs`) reads that queue, runs the
//! kernel with retries (`retry.rs`), and hands outputs or the dead letter (`dead_letter.rs`) to
//! the producer (`producer.rs`); when the outcome is final and every record is acknowledged,
//! the partition's tracker (`offsets.rs`) lets the next commit include it. The poll thread
//! (`consumer.rs`) serves rebalances and makes the commits.

mod clock;
mod concurrent;
mod consumer;
pub(crate) mod dead_letter;
mod decide;
mod deferred;
mod deps;
mod dispatch;
mod effects;
mod fatal;
pub(crate) mod lanes;
pub mod offsets;
mod partition;
mod partition_queue;
mod produce_error;
mod producer;
mod retry;
mod shutdown;
mod stats;
pub mod trace;
pub(crate) mod transaction;
mod worker;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;

pub use dead_letter::headers as dead_letter_headers;
pub use shutdown::signal;
pub use stats::{RuntimeStats, StatsSnapshot};

use crate::config::Config;
use crate::kernel::Kernel;
use crate::telemetry::{Health, Redactor, Telemetry};
use consumer::PollLoop;
use dead_letter::DeadLetters;
use dispatch::Dispatcher;
use fatal::Fatal;
use producer::OutputProducer;
use retry::RetryPolicy;
use worker::WorkerDeps;

/// Why the runtime could not run.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// librdkafka refused to create a client or subscribe.
    #[error("kafka client: {0}")]
    Kafka(#[from] KafkaError),
    /// The poll thread could not be started or died.
    #[error("consumer thread: {0}")]
    Thread(String),
    /// The HTTP listener could not bind its address.
    #[error(transparent)]
    Http(#[from] crate::infra::http::ListenError),
    /// The configuration cannot work (settings that contradict each other or the kernel).
    #[error("configuration error: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// Must be called inside a tokio runtime.
    #[error("no tokio runtime: call Runtime::run from within one")]
    NoTokio,
    /// Something the kernel cannot recover from: a fenced or fatally failed client, a
    /// dead-letter topic that refuses for good, a partition worker that died. The runtime
    /// committed what was done and stopped.
    #[error("{0}")]
    Fatal(String),
}

/// Runs one kernel against Kafka until told to stop.
pub struct Runtime<K: Kernel> {
    config: Config,
    kernel: Arc<K>,
    stats: Arc<RuntimeStats>,
    telemetry: Arc<Telemetry>,
}

impl<K: Kernel> Runtime<K> {
    /// Prepares a runtime; nothing connects until [`Runtime::run_until`].
    pub fn new(config: Config, kernel: K) -> Self {
        // Revocation may hold the poll loop for the drain timeout; only longer is a stall.
        let poll_stall = config.runtime.drain_timeout + Duration::from_secs(30);
        // Passthrough values such as `debug=all` are not secrets; only sensitive-looking
        // property names and the security settings are redacted from librdkafka's logs.
        let secrets = config
            .secret_values()
            .into_iter()
            .filter(|v| !is_plain_word(v));
        let mut telemetry = Telemetry::new(
            &config.kernel_name,
            Health::new(poll_stall),
            Redactor::new(secrets),
        );
        kernel.register_metrics(telemetry.metrics.registry_mut());
        let telemetry = Arc::new(telemetry);
        Self {
            config,
            kernel: Arc::new(kernel),
            stats: Arc::new(RuntimeStats::default()),
            telemetry,
        }
    }

    /// Metrics and health, readable while the runtime runs (and the HTTP listener's address).
    pub fn telemetry(&self) -> Arc<Telemetry> {
        self.telemetry.clone()
    }

    /// Counters that can be read while the runtime runs.
    pub fn stats(&self) -> Arc<RuntimeStats> {
        self.stats.clone()
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run(self) -> Result<StatsSnapshot, RuntimeError> {
        self.run_until(signal()).await
    }

    /// Runs until `shutdown` resolves, then: stops fetching, lets in-flight messages finish
    /// within the drain timeout, waits for their outputs, commits, leaves the group and flushes
    /// the producer. Returns the final counters.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<StatsSnapshot, RuntimeError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| RuntimeError::NoTokio)?;
        let config = &self.config;
        let settings = Arc::new(config.runtime.clone());
        let http = match settings.http_addr {
            None => None,
            Some(addr) => {
                let server = crate::infra::serve(addr, self.telemetry.clone()).await?;
                self.telemetry.set_http_addr(server.addr());
                Some(server)
            }
        };
        let kernel_name: Arc<str> = Arc::from(config.kernel_name.as_str());
        let group_id: Arc<str> = Arc::from(config.group_id.as_str());
        let fatal = Arc::new(Fatal::default());
        let dead_letters = DeadLetters {
            group: group_id.clone(),
            kernel: kernel_name.clone(),
            topic: settings.dead_letter_topic.clone(),
            max_bytes: config.max_message_bytes(),
        };
        let transactions = (settings.guarantee == transaction::Guarantee::ExactlyOnce).then(|| {
            Arc::new(transaction::Transactions::new(
                settings.commit_every,
                settings.transaction_timeout,
                config.transactional_id(),
            ))
        });
        let (producer, resender) = OutputProducer::start(
            &config.producer_config(),
            self.stats.clone(),
            self.telemetry.clone(),
            dead_letters,
            fatal.clone(),
            settings.retry_max_delay,
            transactions.clone(),
        )?;
        if let Some(t) = &transactions {
            open_first_transaction(&producer, t).await?;
        }
        let deps = WorkerDeps {
            kernel: self.kernel.clone(),
            producer: producer.clone(),
            settings: settings.clone(),
            retry: RetryPolicy::from_settings(&settings),
            group_id,
            kernel_name: kernel_name.clone(),
            stats: self.stats.clone(),
            telemetry: self.telemetry.clone(),
            batch: settings
                .batch_size
                .unwrap_or_else(|| self.kernel.max_batch())
                .max(1),
            fatal: fatal.clone(),
            retained: settings.memory_bytes.map(|budget| {
                let split =
                    crate::config::budget::split(budget, 1, config.max_message_bytes() as u64);
                let permits = u32::try_from((split.retained_input_bytes / 1024).max(1))
                    .unwrap_or(u32::MAX)
                    .min(MAX_RETAINED_PERMITS);
                (
                    Arc::new(tokio::sync::Semaphore::new(permits as usize)),
                    permits,
                )
            }),
            transactions,
        };
        if deps.batch > 1 && settings.ordering != lanes::ProcessingOrder::Partition {
            return Err(crate::config::ConfigError::invalid(
                "CLUSTERA_ORDERING",
                format!(
                    "{:?} ordering processes messages one at a time each, so it cannot be \
                     combined with batches of {} (CLUSTERA_BATCH_SIZE or the kernel's \
                     max_batch); set CLUSTERA_BATCH_SIZE=1 or CLUSTERA_ORDERING=partition",
                    settings.ordering, deps.batch
                ),
            )
            .into());
        }
        // Prefetch is sized for every partition this consumer can be assigned (config::budget).
        let partitions = match settings.memory_bytes {
            Some(_) => subscribed_partitions(&producer, &config.topics).await,
            None => 1,
        };
        let consumer_config = config.consumer_config_for(partitions);
        if let Some(budget) = settings.memory_bytes {
            tracing::info!(
                budget,
                partitions,
                queued_max_kbytes = consumer_config.get("queued.max.messages.kbytes"),
                queued_min_messages = consumer_config.get("queued.min.messages"),
                "memory budget divided over every partition of the subscribed topics"
            );
        }
        let poll_loop = PollLoop::new(
            &consumer_config,
            &config.topics,
            Dispatcher::new(deps, handle),
            self.stats.clone(),
            self.telemetry.clone(),
            kernel_name.clone(),
            fatal.clone(),
        )?;
        tracing::info!(kernel = %kernel_name, topics = ?config.topics, group = %config.group_id,
            client_id = %config.client_id, "kernel started");

        let stop = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let thread_stop = stop.clone();
        std::thread::Builder::new()
            .name(format!("{kernel_name}-poll"))
            .spawn(move || {
                poll_loop.run(&thread_stop);
                let _ = done_tx.send(());
            })
            .map_err(|e| RuntimeError::Thread(e.to_string()))?;

        let status = settings.status_topic.clone().and_then(|topic| {
            let id = crate::telemetry::status::Identity {
                kernel: config.kernel_name.clone(),
                group: config.group_id.clone(),
                client_id: config.client_id.clone(),
                topics: config.topics.clone(),
            };
            crate::telemetry::status::StatusReporter::start(
                &config.common_client_config(),
                topic,
                settings.status_interval,
                id,
                self.stats.clone(),
                self.telemetry.clone(),
            )
            .inspect_err(|e| tracing::warn!(error = %e, "cannot start status reporting"))
            .ok()
        });

        let mut done_rx = done_rx;
        let mut poll_ended = false;
        tokio::select! {
            _ = shutdown => {}
            _ = fatal.raised() => {}
            _ = &mut done_rx => {
                poll_ended = true;
                // The poll thread only ends on its own after a fatal error; otherwise it died.
                if !fatal.is_raised() {
                    fatal.raise("the consumer's poll thread ended unexpectedly");
                }
            }
        }
        tracing::info!(kernel = %kernel_name, "stopping: draining in-flight messages");
        stop.store(true, Ordering::Relaxed);
        // The poll thread bounds its own drain; the extra margin covers the final commit and
        // leaving the group, and guarantees this never hangs.
        let limit = settings.drain_timeout + Duration::from_secs(10);
        if !poll_ended && tokio::time::timeout(limit, done_rx).await.is_err() {
            tracing::error!(kernel = %kernel_name, "consumer did not close in time; exiting anyway");
        }

        resender.abort();
        let _ = resender.await;
        let in_flight = producer.in_flight();
        let flush_timeout = Duration::from_secs(5);
        let flushed = tokio::task::spawn_blocking(move || {
            let result = producer.flush_blocking(flush_timeout);
            // Dropping the last reference joins librdkafka threads: off the async workers.
            drop(producer);
            result
        })
        .await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(kernel = %kernel_name, error = %e, in_flight,
                "producer flush incomplete; those inputs were not committed and will be redelivered"),
            Err(e) => {
                tracing::warn!(kernel = %kernel_name, error = %e, "producer flush task failed")
            }
        }
        if let Some(status) = status {
            status.stop().await;
        }
        // The listener stops here.
        drop(http);
        if let Some(reason) = fatal.reason() {
            return Err(RuntimeError::Fatal(reason));
        }
        let summary = self.stats.snapshot();
        tracing::info!(kernel = %kernel_name, acked = summary.acked, skipped = summary.skipped,
            dead_lettered = summary.dead_lettered, retries = summary.retries, "kernel stopped");
        Ok(summary)
    }
}

/// Registers the transactional producer (fencing any earlier producer with the same
/// `transactional.id` and aborting its open transaction) and opens the first transaction.
async fn open_first_transaction(
    producer: &Arc<OutputProducer>,
    transactions: &Arc<transaction::Transactions>,
) -> Result<(), RuntimeError> {
    use rdkafka::producer::Producer as _;
    let (p, timeout, id) = (
        producer.clone(),
        transactions.timeout,
        transactions.id.clone(),
    );
    tokio::task::spawn_blocking(move || {
        p.transactional().init_transactions(timeout)?;
        p.transactional().begin_transaction()
    })
    .await
    .map_err(|e| RuntimeError::Thread(e.to_string()))?
    .map_err(|e| {
        RuntimeError::Fatal(format!(
            "cannot start transactions with transactional.id {id:?}: {e}"
        ))
    })?;
    transactions.opened();
    tracing::info!(transactional_id = %transactions.id, "exactly-once: transactional producer registered");
    Ok(())
}

/// tokio's semaphore holds at most `usize::MAX >> 3` permits; a KiB each, this is 16 GiB.
const MAX_RETAINED_PERMITS: u32 = 1 << 24;

/// Partitions a consumer of `topics` can be assigned at most. Topics not found yet (created on
/// first use) are counted as [`UNKNOWN_TOPIC_PARTITIONS`]; with no answer from the cluster, all
/// of them are.
async fn subscribed_partitions(producer: &Arc<OutputProducer>, topics: &[String]) -> usize {
    let (p, t) = (producer.clone(), topics.to_vec());
    let found =
        tokio::task::spawn_blocking(move || p.partitions_of(&t, Duration::from_secs(10))).await;
    let (count, missing) = match found {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            tracing::warn!(error = %e,
                "cannot read the topics' partition counts; the memory budget assumes {UNKNOWN_TOPIC_PARTITIONS} each");
            (0, topics.to_vec())
        }
        Err(_) => (0, topics.to_vec()),
    };
    if !missing.is_empty() {
        tracing::info!(topics = ?missing,
            "topics not found yet; the memory budget assumes {UNKNOWN_TOPIC_PARTITIONS} partitions each");
    }
    (count + missing.len() * UNKNOWN_TOPIC_PARTITIONS).max(1)
}

/// Partitions assumed for a subscribed topic the cluster does not know yet.
const UNKNOWN_TOPIC_PARTITIONS: usize = 8;

/// Short lowercase words and numbers (`all`, `5000`, `earliest`) are configuration, not
/// secrets; redacting them would garble every log line.
fn is_plain_word(v: &str) -> bool {
    v.len() < 12
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == ',' || c == '.')
}
