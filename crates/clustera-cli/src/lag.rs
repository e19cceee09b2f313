//! `clustera lag`: committed offsets, high watermarks and lag of a consumer group.

use anyhow::bail;
use clap::Args;
use clustera::testing::kafka::{self, TIMEOUT};
use rdkafka::consumer::{BaseConsumer, Consumer};

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

/// Prints one line per partition and the total; fails if the group has committed nothing.
pub fn run(args: LagArgs) -> anyhow::Result<()> {
    let config = connect(&args.brokers)?;
    let topics: Vec<String> = match &args.topic {
        Some(t) => vec![t.clone()],
        None => {
            let probe: BaseConsumer = config.create()?;
            let metadata = probe.fetch_metadata(None, TIMEOUT)?;
            metadata
                .topics()
                .iter()
                .map(|t| t.name().to_owned())
                .filter(|n| !n.starts_with("__"))
                .collect()
        }
    };
    let mut rows = Vec::new();
    for topic in &topics {
        let committed = kafka::committed_offsets(&config, &args.group, topic)?;
        if committed.is_empty() {
            continue;
        }
        for (partition, high) in kafka::high_watermarks(&config, topic)? {
            let c = committed.get(&partition).copied();
            let lag = high - c.unwrap_or(0);
            rows.push((topic.clone(), partition, c, high, lag));
        }
    }
    if rows.is_empty() {
        bail!(
            "unknown consumer group {:?}: it has no committed offsets{}",
            args.group,
            args.topic
                .as_deref()
                .map(|t| format!(" for topic {t}"))
                .unwrap_or_default()
        );
    }
    println!(
        "{:<30} {:>9} {:>12} {:>12} {:>10}",
        "TOPIC", "PARTITION", "COMMITTED", "HIGH", "LAG"
    );
    for (topic, partition, committed, high, lag) in &rows {
        let c = committed.map_or("-".to_owned(), |c| c.to_string());
        println!("{topic:<30} {partition:>9} {c:>12} {high:>12} {lag:>10}");
    }
    let total: i64 = rows.iter().map(|r| r.4).sum();
    println!(
        "{:<30} {:>9} {:>12} {:>12} {total:>10}",
        "TOTAL", "", "", ""
    );
    Ok(())
}
