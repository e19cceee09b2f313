//! `clustera lag`: committed offsets, high watermarks and lag of a consumer group.

use anyhow::{bail, Context as _};
use clap::Args;
use clustera::testing::kafka::TIMEOUT;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::connect::{connect, BrokerArgs};

/// Arguments of `clustera lag`.
#[derive(Args)]
pub struct LagArgs {
    #[command(flatten)]
    brokers: BrokerArgs,
    /// The consumer group.
    #[arg(long)]
    group: String,
    /// Only this topic (default: every topic the group has committed offsets for).
    #[arg(long)]
    topic: Option<String>,
}

/// One partition's line.
struct Row {
    topic: String,
    partition: i32,
    committed: Option<i64>,
    high: i64,
    lag: i64,
}

/// Prints one line per partition and the total; fails if the group has committed nothing.
pub fn run(args: LagArgs) -> anyhow::Result<()> {
    let mut config = connect(&args.brokers)?;
    let consumer: BaseConsumer = config
        .set("group.id", &args.group)
        .create()
        .context("creating a Kafka client")?;
    // Every topic in one metadata request, and every committed offset in one offset fetch.
    let metadata = consumer
        .fetch_metadata(args.topic.as_deref(), TIMEOUT)
        .context("reading the topics' metadata")?;
    let mut all = TopicPartitionList::new();
    for t in metadata.topics() {
        if args.topic.is_some() && (t.error().is_some() || t.partitions().is_empty()) {
            bail!("unknown topic {}", t.name());
        }
        if t.name().starts_with("__") {
            continue;
        }
        for p in t.partitions() {
            all.add_partition(t.name(), p.id());
        }
    }
    let committed = consumer
        .committed_offsets(all, TIMEOUT)
        .with_context(|| format!("reading the committed offsets of group {:?}", args.group))?;
    let elements = committed.elements();
    let offset_of = |e: &rdkafka::topic_partition_list::TopicPartitionListElem<'_>| match e.offset()
    {
        Offset::Offset(o) => Some(o),
        _ => None,
    };
    // Topics the group reads: those it has committed any offset for.
    let read: std::collections::BTreeSet<String> = elements
        .iter()
        .filter(|e| offset_of(e).is_some())
        .map(|e| e.topic().to_owned())
        .collect();
    let mut rows = Vec::new();
    for e in elements.iter().filter(|e| read.contains(e.topic())) {
        let (low, high) = consumer
            .fetch_watermarks(e.topic(), e.partition(), TIMEOUT)
            .with_context(|| {
                format!(
                    "reading the watermarks of {} partition {}",
                    e.topic(),
                    e.partition()
                )
            })?;
        let committed = offset_of(e);
        // Without a commit the group starts at the oldest record still kept at best: what is
        // gone (retention, compaction) is no lag.
        let lag = high - committed.unwrap_or(low);
        rows.push(Row {
            topic: e.topic().to_owned(),
            partition: e.partition(),
            committed,
            high,
            lag,
        });
    }
    if rows.is_empty() {
        bail!(
            // Brokers answer an offset fetch alike for a group that does not exist and for one
            // that has joined but not committed; telling them apart needs the group APIs,
            // which the development broker does not serve.
            "unknown consumer group {:?}: it has no committed offsets{} (a group that has \
             not committed yet looks the same)",
            args.group,
            args.topic
                .as_deref()
                .map(|t| format!(" for topic {t}"))
                .unwrap_or_default()
        );
    }
    rows.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let mut table = format!(
        "{:<30} {:>9} {:>12} {:>12} {:>10}\n",
        "TOPIC", "PARTITION", "COMMITTED", "HIGH", "LAG"
    );
    for r in &rows {
        let c = r.committed.map_or("-".to_owned(), |c| c.to_string());
        table.push_str(&format!(
            "{:<30} {:>9} {c:>12} {:>12} {:>10}\n",
            r.topic, r.partition, r.high, r.lag
        ));
    }
    let total: i64 = rows.iter().map(|r| r.lag).sum();
    table.push_str(&format!(
        "{:<30} {:>9} {:>12} {:>12} {total:>10}\n",
        "TOTAL", "", "", ""
    ));
    crate::exit::print(&table)?;
    Ok(())
}
