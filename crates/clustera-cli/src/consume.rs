//! `clustera consume`: print messages of a topic.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use clustera::testing::kafka;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::connect::{connect, require_topic, BrokerArgs};

/// Output format.
#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// The value, one line per message.
    Text,
    /// A JSON object per line: topic, partition, offset, key, value, headers.
    Json,
}

/// Arguments of `clustera consume`.
#[derive(Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    brokers: BrokerArgs,
    /// Topic to read.
    #[arg(long)]
    topic: String,
    /// Read as this consumer group, committing what was printed; without it nothing is
    /// committed.
    #[arg(long)]
    group: Option<String>,
    /// Start at the beginning (default: only new messages; a group resumes where it was).
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<usize>,
    /// Stop after this many seconds without a message.
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

/// Prints messages until `--count`, `--timeout` or Ctrl-C.
pub fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let mut config = connect(&args.brokers)?;
    let partitions = require_topic(&config, &args.topic)?;
    config
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set(
            "auto.offset.reset",
            if args.from_beginning {
                "earliest"
            } else {
                "latest"
            },
        );
    match &args.group {
        Some(g) => config.set("group.id", g),
        None => config.set("group.id", "clustera-cli-reader"),
    };
    let consumer: BaseConsumer = config.create()?;
    if args.group.is_some() {
        consumer.subscribe(&[&args.topic])?;
    } else {
        let marks = kafka::watermarks(&config, &args.topic)?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            let (low, high) = marks.get(&p).copied().unwrap_or((0, 0));
            let start = if args.from_beginning { low } else { high };
            tpl.add_partition_offset(&args.topic, p, Offset::Offset(start))?;
        }
        consumer.assign(&tpl)?;
    }
    let idle_limit = args.timeout.map(Duration::from_secs);
    let mut last = Instant::now();
    let mut printed = 0usize;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    while args.count.is_none_or(|c| printed < c) {
        if idle_limit.is_some_and(|l| last.elapsed() >= l) {
            if let Some(c) = args.count {
                bail!("timed out after {printed} of {c} messages");
            }
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(e)) => bail!("consuming {}: {e}", args.topic),
            Some(Ok(m)) => {
                last = Instant::now();
                print_message(&mut out, &m, args.format)?;
                printed += 1;
                if args.group.is_some() {
                    consumer.store_offset_from_message(&m)?;
                }
            }
        }
    }
    out.flush()?;
    if args.group.is_some() && printed > 0 {
        consumer
            .commit_consumer_state(CommitMode::Sync)
            .context("committing the group's offsets")?;
    }
    Ok(())
}

fn print_message(
    out: &mut impl Write,
    m: &rdkafka::message::BorrowedMessage<'_>,
    format: Format,
) -> anyhow::Result<()> {
    let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
    match format {
        Format::Text => writeln!(out, "{}", text(m.payload()).unwrap_or_default())?,
        Format::Json => {
            let headers: serde_json::Map<String, serde_json::Value> = m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_owned(), text(h.value).into()))
                        .collect()
                })
                .unwrap_or_default();
            let line = serde_json::json!({
                "topic": m.topic(), "partition": m.partition(), "offset": m.offset(),
                "key": text(m.key()), "value": text(m.payload()), "headers": headers,
            });
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}
