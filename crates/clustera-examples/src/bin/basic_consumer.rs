//! Example 1b: a consumer with error handling and manual commits, written with rdkafka
//! directly (seed 002's Pattern 2).
//!
//! ```sh
//! clustera dev &
//! cargo run -p clustera-examples --bin basic-producer -- --count 10
//! cargo run -p clustera-examples --bin basic-consumer -- --idle-exit-secs 5
//! ```
//!
//! It joins group `--group` (default `events-consumer`) on `--topic` (default `events`), starts
//! from the earliest record the first time (`auto.offset.reset=earliest`; afterwards the
//! group's committed offsets win), decodes each value as a JSON event, and commits each
//! offset only after the event was handled (`enable.auto.commit=false`). It stops on Ctrl-C,
//! after `--max-messages`, or after `--idle-exit-secs` without a message, and commits
//! synchronously before leaving.
//!
//! What it does by hand, and a Clustera kernel gets from the runtime:
//! - **commits after processing**: here one asynchronous commit per message (the seed commits
//!   synchronously after each message, which caps a consumer at one round trip per
//!   message); the runtime batches commits and never commits past a message not yet done;
//! - **errors**: a bad value is logged and skipped here, because a hand-written consumer has
//!   nowhere to put it; the runtime dead-letters it with its provenance, and retries
//!   transient failures with backoff without blocking the other partitions;
//! - **client errors**: most librdkafka errors are reports of something it already retries
//!   (a broker that went away); only fatal ones end the loop;
//! - **shutdown**: a final synchronous commit, then leaving the group, so the partitions move
//!   to another member at once.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use clustera_examples::DEFAULT_BROKERS;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, Offset};
use serde::Deserialize;

/// Consumes JSON events with manual commits.
#[derive(Parser)]
struct Args {
    /// Bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = DEFAULT_BROKERS)]
    brokers: String,
    /// Topic to consume.
    #[arg(long, default_value = "events")]
    topic: String,
    /// Consumer group.
    #[arg(long, default_value = "events-consumer")]
    group: String,
    /// Stop after this many messages.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Stop after this many seconds without a message.
    #[arg(long)]
    idle_exit_secs: Option<u64>,
    /// The group protocol: `classic` (every broker) or `consumer` (KIP-848: Kafka 4.0 and
    /// later, and `clustera dev`, where a member that rejoins gets its partitions at once).
    #[arg(long, env = "KAFKA_GROUP_PROTOCOL", default_value = "classic")]
    group_protocol: String,
}

/// The event `basic-producer` sends.
#[derive(Debug, Deserialize)]
struct Event {
    event_id: u64,
    user_id: String,
    action: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("basic-consumer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Why the loop ended.
enum Stop {
    Signal,
    Idle,
    Count,
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", &args.group)
        .set("client.id", "basic-consumer")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("group.protocol", &args.group_protocol)
        .create()?;
    consumer.subscribe(&[&args.topic])?;
    let idle = args
        .idle_exit_secs
        .map_or(Duration::MAX, Duration::from_secs);
    let (mut handled, mut bad) = (0u64, 0u64);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let stop = loop {
        if args.max_messages.is_some_and(|max| handled + bad >= max) {
            break Stop::Count;
        }
        let next = tokio::select! {
            _ = &mut ctrl_c => break Stop::Signal,
            next = tokio::time::timeout(idle, consumer.recv()) => next,
        };
        let message = match next {
            Err(_) => break Stop::Idle,
            Ok(Ok(m)) => m,
            // Only with enable.partition.eof=true: the end of a partition, not an error.
            Ok(Err(KafkaError::PartitionEOF(_))) => continue,
            Ok(Err(e)) => {
                // librdkafka retries connection problems by itself and reports them here;
                // a fatal error (say, a fenced static member) means this client is done.
                if let Some((code, reason)) = consumer.client().fatal_error() {
                    anyhow::bail!("fatal consumer error {code:?}: {reason}");
                }
                eprintln!("consumer error (librdkafka retries): {e}");
                continue;
            }
        };
        match handle(&message) {
            Ok(event) => {
                handled += 1;
                println!(
                    "{}[{}]@{}: event {} {} by {}",
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    event.event_id,
                    event.action,
                    event.user_id
                );
            }
            Err(reason) => {
                bad += 1;
                eprintln!(
                    "skipping {}[{}]@{}: {reason}",
                    message.topic(),
                    message.partition(),
                    message.offset()
                );
            }
        }
        // After handling, never before: a crash between the two re-reads the message (at
        // least once) instead of losing it. Asynchronous, so the loop does not wait a
        // round trip; a failed commit is made good by the next one or the final one.
        if let Err(e) = consumer.commit_message(&message, CommitMode::Async) {
            eprintln!("commit failed (the next commit covers it): {e}");
        }
    };
    let why = match stop {
        Stop::Signal => "interrupted",
        Stop::Idle => "idle",
        Stop::Count => "--max-messages reached",
    };
    // What the asynchronous commits have not settled yet, synchronously; nothing to commit
    // (no message since the last commit) is not an error.
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => anyhow::bail!("final commit failed: {e}"),
    }
    let committed = consumer.committed(Duration::from_secs(10))?;
    let committed: BTreeMap<i32, i64> = committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect();
    println!("stopped ({why}): handled {handled}, skipped {bad} bad, committed {committed:?}");
    // Dropping the consumer leaves the group.
    Ok(())
}

/// Decodes and "processes" one event; an error names what was wrong with it.
fn handle(message: &BorrowedMessage<'_>) -> Result<Event, String> {
    let value = message.payload().ok_or("no value (a tombstone)")?;
    serde_json::from_slice::<Event>(value).map_err(|e| format!("not an event: {e}"))
}
