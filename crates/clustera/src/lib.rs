//! # Clustera: Kafka kernels in Rust
//!
//! A *kernel* is a small, single-purpose service: it consumes Kafka topics, processes each
//! message with one function, and optionally produces to other topics. You write
//! [`Kernel::process`]; the [`Runtime`] does the rest.
//!
//! ```no_run
//! use clustera::{Context, Kernel, KernelError, Message, Outcome, Record};
//!
//! struct Shout;
//!
//! impl Kernel for Shout {
//!     fn name(&self) -> &str { "shout" }
//!     fn default_topics(&self) -> Vec<String> { vec!["words".into()] }
//!     async fn process(&self, msg: &Message, ctx: &mut Context) -> Result<Outcome, KernelError> {
//!         let text = msg.text()?; // not UTF-8: a poison pill, dead-lettered
//!         ctx.send(Record::to("shouts").maybe_key(msg.key_bytes()).value(text.to_uppercase()));
//!         Ok(Outcome::Ack)
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     clustera::run(Shout)
//! }
//! ```
//!
//! ## Guarantees
//!
//! 1. **Consumer groups, ordered partitions.** The kernel joins a consumer group subscribed to
//!    one or more topics. Partitions are processed concurrently; the messages of one partition
//!    strictly in order, one at a time, unless `CLUSTERA_ORDERING` asks for `key` (each key's
//!    messages in order, keys concurrently) or `none`.
//! 2. **At-least-once.** An offset is committed only after the message's outcome is final, the
//!    tasks it deferred ([`Context::defer`]) have finished, *and* every record produced for it
//!    (outputs, dead letters, its tasks' records) has been acknowledged by the broker; commits
//!    never pass a message that is not done. Outputs are sent only when the outcome is [`Outcome::Ack`], so
//!    a retried attempt produces nothing. Commits are asynchronous and batched
//!    (`CLUSTERA_COMMIT_INTERVAL_MS`, 100 ms by default, and `CLUSTERA_COMMIT_EVERY`), and made
//!    synchronously when partitions are revoked and at shutdown. After a crash, messages after the last commit are processed again: make
//!    side effects idempotent.
//! 3. **Retries.** [`Outcome::Retry`] or a transient or unavailable [`KernelError`] (see
//!    [`ErrorKind`]: a dependency being down never dead-letters) retries the same message
//!    with exponential backoff and jitter; nothing later in that partition overtakes it. The
//!    poll thread keeps polling meanwhile (the partition's own queue simply waits), so the
//!    consumer is never evicted for exceeding `max.poll.interval.ms`. After
//!    `CLUSTERA_MAX_ATTEMPTS` attempts (default 5; 0 retries forever) the message is
//!    dead-lettered.
//! 4. **Dead letters.** [`Outcome::DeadLetter`], a permanent [`KernelError`] (such as a
//!    [`DecodeError`]), a panic in the kernel, or exhausted retries send the original key, value
//!    and headers to `<input-topic>.dlq` (or `CLUSTERA_DLQ_TOPIC`), with the headers listed in
//!    [`dead_letter_headers`]: original topic, partition, offset and timestamp, consumer group,
//!    kernel, error and attempt count. [`Context::dead_letter`] dead-letters a message for part
//!    of its effects while the rest go ahead.
//! 5. **Graceful shutdown.** On SIGINT or SIGTERM the kernel stops fetching, lets in-flight
//!    messages finish within `CLUSTERA_DRAIN_TIMEOUT_MS`, waits for their outputs, commits,
//!    leaves the group and flushes the producer. It never hangs: every wait is bounded, and
//!    blocking librdkafka calls run on the consumer's own thread or a blocking thread. A second
//!    signal exits at once.
//! 6. **Bounded memory, backpressure without pausing.** Each assigned partition has its own
//!    librdkafka queue, read by its own worker; librdkafka stops fetching a partition once its
//!    queue holds its share of the memory budget (`CLUSTERA_MEMORY_BYTES`, 16 MiB by default:
//!    half for prefetch, divided over every partition of the subscribed topics), so a slow or
//!    retrying partition is simply not read while the others go on. Nothing is paused, so
//!    prefetched data is never thrown away. The producer's queue and the inputs kept while
//!    their outputs are in flight take a quarter of the budget each; past that, workers wait.
//!
//! 7. **Batches, where the kernel wants them.** A kernel that writes more cheaply in bulk
//!    implements [`Kernel::process_batch`] and [`Kernel::max_batch`] (or the operator sets
//!    `CLUSTERA_BATCH_SIZE`). The runtime hands it up to that many messages of one partition
//!    that are *already fetched* (a batch never waits to fill), takes the final outcomes in
//!    order, and processes whatever the batch left undecided (a retry, a transient error, a
//!    panic) one message at a time, so guarantees 1 to 4 hold unchanged.
//! 8. **Exactly-once, on request.** With `CLUSTERA_GUARANTEE=exactly-once` each message's
//!    records and its input offset are committed in one Kafka transaction (one transactional
//!    producer per instance, offsets sent with the consumer group's metadata, as Kafka
//!    Streams' `exactly_once_v2`). A failed transaction is aborted and every partition rewound
//!    to its last commit; retries never reach a transaction. It covers effects on Kafka as
//!    `read_committed` consumers see them, not a kernel's own I/O; it refuses `key` and `none`
//!    ordering at start-up and [`Context::defer`] when used.
//!
//! Failed deliveries are never dropped and never freeze a partition: transient failures (an
//! outage longer than `message.timeout.ms`) are sent again in bulk, in each input partition's
//! original order; an output the broker refuses for good (too large, unknown or forbidden
//! topic) dead-letters its input. A dead letter always fits (bounded error text, oversized
//! originals replaced by a reference). What the runtime cannot recover from (a dead-letter
//! topic that refuses for good, a fatal client error, a dead worker) ends
//! [`Runtime::run_until`] with [`RuntimeError::Fatal`] after committing what is done, and
//! [`run`] exits non-zero.
//!
//! ## Configuration
//!
//! See [`Config`]: the seeds' `KAFKA_*` variables, TLS from base64 PEM, SASL, any librdkafka
//! property through `KAFKA_PROPERTY_*`, and the runtime's `CLUSTERA_*` settings. Bad
//! configuration is reported at start-up, naming the variable, before anything connects.

pub mod config;
mod context;
pub mod infra;
mod kernel;
mod message;
pub mod runtime;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

use std::process::ExitCode;

pub use config::{Config, ConfigError};
pub use context::{Context, DeadLetterPart, DeferredContext, Record, TaskEnded};
pub use kernel::{ErrorKind, Kernel, KernelError, Outcome, ResultExt};
pub use message::{DecodeError, Header, Message};
/// The metrics library kernels register their own metrics with
/// ([`Kernel::register_metrics`]).
pub use prometheus_client;
pub use runtime::{dead_letter_headers, Runtime, RuntimeError, StatsSnapshot};

/// Exit code for bad configuration (sysexits' `EX_CONFIG`).
pub const EXIT_CONFIG: u8 = 78;

/// Runs `kernel` as a process: reads the configuration from the environment (and `.env`),
/// sets up logging, runs until SIGINT or SIGTERM, and returns the exit code. Configuration
/// errors are printed on one line naming the variable, with exit code [`EXIT_CONFIG`].
pub fn run<K: Kernel>(kernel: K) -> ExitCode {
    ExitCode::from(run_to_status(kernel))
}

/// [`run`], returning the exit status as a number: for hosts that end the process themselves
/// (the Python bindings hand it to `sys.exit`, since [`ExitCode`] cannot be read back).
pub fn run_to_status<K: Kernel>(kernel: K) -> u8 {
    let config = match Config::from_env(kernel.name(), &kernel.default_topics()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: configuration error: {e}", kernel.name());
            return EXIT_CONFIG;
        }
    };
    let _logging = match telemetry::init_kernel_logging(kernel.name()) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("{}: configuration error: {e}", kernel.name());
            return EXIT_CONFIG;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{}: cannot start the async runtime: {e}", kernel.name());
            return 1;
        }
    };
    let name = kernel.name().to_owned();
    let result = rt.block_on(Runtime::new(config, kernel).run());
    // Blocking tasks (a stuck flush) must not keep the process alive.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(_) => 0,
        Err(RuntimeError::Config(e)) => {
            eprintln!("{}: configuration error: {e}", name);
            EXIT_CONFIG
        }
        Err(e) => {
            tracing::error!(error = %e, "kernel failed");
            1
        }
    }
}
