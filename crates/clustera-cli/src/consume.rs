//! `clustera consume`: print messages of a topic, with kcat's choices of partition, start
//! offset, end and output format.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufWriter, ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use clustera::testing::kafka::{self, TIMEOUT};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::connect::{connect, require_topic, BrokerArgs};
use crate::format::{self, Format};

/// Where reading starts, as kcat's `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// The oldest record still kept.
    Beginning,
    /// Only records produced from now on.
    End,
    /// The group's committed offset (`--group` required).
    Stored,
    /// This offset.
    At(i64),
    /// This many records before the end.
    FromEnd(i64),
    /// The first record whose timestamp is at or after these milliseconds since the epoch.
    Time(i64),
}

fn parse_offset(s: &str) -> Result<StartOffset, String> {
    let number = |n: &str| {
        n.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            format!("{s:?} is not an offset: use beginning, end, stored, N, -N or @TIMESTAMP_MS")
        })
    };
    match s {
        "beginning" => Ok(StartOffset::Beginning),
        "end" => Ok(StartOffset::End),
        "stored" => Ok(StartOffset::Stored),
        _ => match (s.strip_prefix('@'), s.strip_prefix('-')) {
            (Some(ms), _) => number(ms).map(StartOffset::Time),
            (_, Some(n)) => number(n).map(StartOffset::FromEnd),
            _ => number(s).map(StartOffset::At),
        },
    }
}

/// Arguments of `clustera consume`.
#[derive(Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    brokers: BrokerArgs,
    /// Topic to read.
    #[arg(short = 't', long)]
    topic: String,
    /// Read as this consumer group, committing what was printed (also on Ctrl-C); without it
    /// nothing is committed. Alone it joins the group and resumes where it was; with
    /// --partition or --offset it reads the partitions it is told and commits for the group.
    #[arg(long)]
    group: Option<String>,
    /// Only this partition (default: every partition).
    #[arg(short = 'p', long, value_name = "N")]
    partition: Option<i32>,
    /// Where to start: beginning, end, stored (the group's commit), N (that offset), -N (N
    /// records before the end of each partition) or @TIMESTAMP_MS (the first record at or
    /// after that time). Default: end, or stored with --group.
    #[arg(short = 'o', long, value_name = "OFFSET", value_parser = parse_offset, allow_hyphen_values = true,
          conflicts_with = "from_beginning", requires_if("stored", "group"))]
    offset: Option<StartOffset>,
    /// Start at the beginning: --offset beginning, except that a group resumes where it was.
    #[arg(long)]
    from_beginning: bool,
    /// Stop once every partition read has been read to its end.
    #[arg(short = 'e', long)]
    exit_at_end: bool,
    /// Stop after this many messages.
    #[arg(short = 'c', long)]
    count: Option<usize>,
    /// Stop after this many seconds without a message.
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Output format: text (KEY<TAB>VALUE per line), json (an object per line) or a kcat
    /// format string ('%k\t%s\n'; tokens %t %p %o %k %K %s %S %R %T %h %%).
    #[arg(short = 'f', long, default_value = "text", value_name = "FORMAT")]
    format: Format,
}

/// What the loop ended on.
enum End {
    /// The count, the end of the data, Ctrl-C or the idle timeout: a normal stop.
    Done,
    /// The reader closed the pipe: stop quietly.
    PipeClosed,
}

/// Prints messages until `--count`, `--exit-at-end`, `--timeout`, Ctrl-C or a closed pipe,
/// then commits what was printed when reading as a group (nothing after a closed pipe).
pub fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let mut config = connect(&args.brokers)?;
    let partitions = require_topic(&config, &args.topic)?;
    if let Some(p) = args.partition {
        if !(0..partitions).contains(&p) {
            bail!(
                "topic {} has {partitions} partition(s), numbered 0 to {}: there is no partition {p}",
                args.topic,
                partitions - 1
            );
        }
    }
    config
        .set("enable.auto.commit", "false")
        // Offsets are stored only once their records reached standard output.
        .set("enable.auto.offset.store", "false")
        .set(
            "enable.partition.eof",
            if args.exit_at_end { "true" } else { "false" },
        )
        .set(
            "group.id",
            args.group.as_deref().unwrap_or("clustera-cli-reader"),
        );
    // Where a group without a commit starts: the flags say, else -X or KAFKA_AUTO_OFFSET_RESET,
    // else only new records.
    if args.from_beginning || args.offset == Some(StartOffset::Beginning) {
        config.set("auto.offset.reset", "earliest");
    } else if config.get("auto.offset.reset").is_none() {
        config.set("auto.offset.reset", "latest");
    }
    let consumer: BaseConsumer<QuietEnd> = config.create_with_context(QuietEnd)?;
    // Alone, --group joins the group; otherwise the partitions are assigned directly.
    let subscribed = args.group.is_some()
        && args.partition.is_none()
        && matches!(args.offset, None | Some(StartOffset::Stored));
    if subscribed {
        consumer.subscribe(&[&args.topic])?;
    } else {
        let chosen: Vec<i32> = match args.partition {
            Some(p) => vec![p],
            None => (0..partitions).collect(),
        };
        let start = start_offsets(&consumer, &config, &args, &chosen)?;
        let mut tpl = TopicPartitionList::new();
        for (p, offset) in start {
            tpl.add_partition_offset(&args.topic, p, offset)?;
        }
        consumer.assign(&tpl)?;
    }

    let stop = stop_on_signals()?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut reader = Reader {
        consumer: &consumer,
        args: &args,
        pending: BTreeMap::new(),
        printed: 0,
    };
    let end = reader.read(&mut out, &stop);
    let printed = reader.printed;
    let end = match end {
        // Flushing may still find the pipe closed.
        Ok(End::Done) => match reader.flush(&mut out) {
            Ok(()) => End::Done,
            Err(e) => pipe_or(e)?,
        },
        other => other?,
    };
    // A closed pipe commits nothing: what sat in the pipe when the reader left (`| head -1`
    // leaves up to 64 KiB) was never read, and a group must not skip it.
    if let End::PipeClosed = end {
        return Ok(());
    }
    if args.group.is_some() && printed > 0 {
        match consumer.commit_consumer_state(CommitMode::Sync) {
            // Every printed partition was taken away by a rebalance before it was stored.
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) if !subscribed => {
                return Err(e).context(
                    "committing the group's offsets (reading chosen partitions commits outside \
                     the group's membership, which a broker refuses while the group has members)",
                )
            }
            Err(e) => return Err(e).context("committing the group's offsets"),
        }
    }
    if let (Some(c), Some(_)) = (args.count, args.timeout) {
        if printed < c && !stop.load(Ordering::Relaxed) && !args.exit_at_end {
            bail!("timed out after {printed} of {c} messages");
        }
    }
    Ok(())
}

/// The consumer's context: librdkafka also reports the end of a partition (which
/// --exit-at-end asks for) as a global error, which is no error to log.
struct QuietEnd;

impl ClientContext for QuietEnd {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for QuietEnd {}

/// A flag that Ctrl-C (SIGINT) and SIGTERM raise, so the loop stops and commits instead of
/// the process dying with what it printed uncommitted.
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{signal, SignalKind};
    let stop = Arc::new(AtomicBool::new(false));
    let handle = tokio::runtime::Handle::try_current()
        .context("consume runs inside the command's async runtime")?;
    // Registered here, before the first poll, so no signal can arrive unhandled.
    let _entered = handle.enter();
    let mut interrupt = signal(SignalKind::interrupt()).context("handling Ctrl-C")?;
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let flag = Arc::clone(&stop);
    handle.spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        flag.store(true, Ordering::Relaxed);
    });
    Ok(stop)
}

/// The start offset of each chosen partition.
fn start_offsets(
    consumer: &BaseConsumer<QuietEnd>,
    config: &rdkafka::ClientConfig,
    args: &ConsumeArgs,
    chosen: &[i32],
) -> anyhow::Result<Vec<(i32, Offset)>> {
    let topic = &args.topic;
    let default = match (&args.group, args.from_beginning) {
        (_, true) => StartOffset::Beginning,
        (Some(_), false) => StartOffset::Stored,
        (None, false) => StartOffset::End,
    };
    match args.offset.unwrap_or(default) {
        StartOffset::Beginning => Ok(chosen.iter().map(|p| (*p, Offset::Beginning)).collect()),
        StartOffset::End => Ok(chosen.iter().map(|p| (*p, Offset::End)).collect()),
        StartOffset::Stored => Ok(chosen.iter().map(|p| (*p, Offset::Stored)).collect()),
        StartOffset::At(n) => Ok(chosen.iter().map(|p| (*p, Offset::Offset(n))).collect()),
        StartOffset::FromEnd(n) => {
            // N before the end, but never before the oldest record kept.
            let marks = kafka::watermarks(config, topic)
                .with_context(|| format!("reading the watermarks of {topic}"))?;
            Ok(chosen
                .iter()
                .map(|p| {
                    let (low, high) = marks.get(p).copied().unwrap_or((0, 0));
                    (*p, Offset::Offset(high.saturating_sub(n).max(low)))
                })
                .collect())
        }
        StartOffset::Time(ms) => {
            let mut query = TopicPartitionList::new();
            for p in chosen {
                query.add_partition_offset(topic, *p, Offset::Offset(ms))?;
            }
            let found = consumer
                .offsets_for_times(query, TIMEOUT)
                .with_context(|| format!("looking up the offsets of {topic} at {ms} ms"))?;
            found
                .elements()
                .iter()
                .map(|e| {
                    if let Err(err) = e.error() {
                        bail!(
                            "looking up the offset of {topic} partition {} at {ms} ms: {err}",
                            e.partition()
                        );
                    }
                    // No record at or after that time: only what comes next.
                    let offset = match e.offset() {
                        Offset::Offset(o) if o >= 0 => Offset::Offset(o),
                        _ => Offset::End,
                    };
                    Ok((e.partition(), offset))
                })
                .collect()
        }
    }
}

/// The consume loop and what it has printed but not yet stored for commit.
struct Reader<'a> {
    consumer: &'a BaseConsumer<QuietEnd>,
    args: &'a ConsumeArgs,
    /// Partition → offset of the last record written to the buffer, not yet flushed.
    pending: BTreeMap<i32, i64>,
    printed: usize,
}

/// Records written between flushes: bounded, so a steady stream is still committed as a
/// whole on Ctrl-C.
const FLUSH_EVERY: usize = 500;

impl Reader<'_> {
    fn read(&mut self, out: &mut impl Write, stop: &AtomicBool) -> anyhow::Result<End> {
        let args = self.args;
        let idle_limit = args.timeout.map(Duration::from_secs);
        let mut last = Instant::now();
        let mut at_end: BTreeSet<i32> = BTreeSet::new();
        let mut unflushed = 0usize;
        while args.count.is_none_or(|c| self.printed < c) && !stop.load(Ordering::Relaxed) {
            if idle_limit.is_some_and(|l| last.elapsed() >= l) {
                break;
            }
            if args.exit_at_end && self.all_at_end(&at_end)? {
                break;
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {
                    // Idle: hand what was written to the reader now.
                    if unflushed > 0 {
                        if let Err(e) = self.flush(out) {
                            return pipe_or(e);
                        }
                        unflushed = 0;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    at_end.insert(p);
                }
                // The error itself travels on: a broker that is gone exits with 69.
                Some(Err(e)) => return Err(e).context(format!("consuming {}", args.topic)),
                Some(Ok(m)) => {
                    last = Instant::now();
                    at_end.remove(&m.partition());
                    if let Err(e) = write_message(out, &m, &args.format) {
                        return pipe_or(e.into());
                    }
                    self.pending.insert(m.partition(), m.offset());
                    self.printed += 1;
                    unflushed += 1;
                    if unflushed >= FLUSH_EVERY {
                        if let Err(e) = self.flush(out) {
                            return pipe_or(e);
                        }
                        unflushed = 0;
                    }
                }
            }
        }
        Ok(End::Done)
    }

    /// Whether every partition being read has reported its end since its last record. A
    /// group member reads what the group gives it; before that, it has not started.
    fn all_at_end(&self, at_end: &BTreeSet<i32>) -> anyhow::Result<bool> {
        let assigned = self.consumer.assignment()?;
        Ok(assigned.count() > 0
            && assigned
                .elements()
                .iter()
                .all(|e| at_end.contains(&e.partition())))
    }

    /// Flushes the output, then stores the offsets of what it held for the next commit.
    fn flush(&mut self, out: &mut impl Write) -> anyhow::Result<()> {
        out.flush()?;
        let pending = std::mem::take(&mut self.pending);
        if self.args.group.is_some() {
            for (p, offset) in pending {
                // librdkafka stores offset + 1: the next record to read.
                match self.consumer.store_offset(&self.args.topic, p, offset) {
                    Ok(()) => {}
                    // A rebalance took the partition away: its new owner reads it again.
                    Err(KafkaError::StoreOffset(RDKafkaErrorCode::State)) => {}
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("storing the offset of partition {p}"))
                    }
                }
            }
        }
        Ok(())
    }
}

/// A closed pipe ends the loop quietly; any other error is the command's.
fn pipe_or(e: anyhow::Error) -> anyhow::Result<End> {
    match e.downcast_ref::<std::io::Error>() {
        Some(io) if io.kind() == ErrorKind::BrokenPipe => Ok(End::PipeClosed),
        _ => Err(e).context("writing to standard output"),
    }
}

fn write_message(
    out: &mut impl Write,
    m: &BorrowedMessage<'_>,
    format: &Format,
) -> std::io::Result<()> {
    let headers = m
        .headers()
        .map(|hs| hs.iter().map(|h| (h.key, h.value)).collect())
        .unwrap_or_default();
    let record = format::Record {
        topic: m.topic(),
        partition: m.partition(),
        offset: m.offset(),
        timestamp: m.timestamp().to_millis(),
        key: m.key(),
        value: m.payload(),
        headers,
    };
    format::write(out, format, &record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_as_kcat_spells_them() {
        assert_eq!(parse_offset("beginning"), Ok(StartOffset::Beginning));
        assert_eq!(parse_offset("end"), Ok(StartOffset::End));
        assert_eq!(parse_offset("stored"), Ok(StartOffset::Stored));
        assert_eq!(parse_offset("42"), Ok(StartOffset::At(42)));
        assert_eq!(parse_offset("-5"), Ok(StartOffset::FromEnd(5)));
        assert_eq!(
            parse_offset("@1700000000000"),
            Ok(StartOffset::Time(1_700_000_000_000))
        );
        for bad in ["", "first", "--5", "@", "@-1", "1.5"] {
            assert_eq!(
                parse_offset(bad).unwrap_err(),
                format!(
                    "{bad:?} is not an offset: use beginning, end, stored, N, -N or @TIMESTAMP_MS"
                )
            );
        }
    }
}
