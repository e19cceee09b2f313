//! `clustera lag`: committed offsets, high watermarks and lag of a consumer group (computed by
//! [`clustera_console::kafka::group_lag`], which the console's pages use too).

use anyhow::bail;
use clap::Args;

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
    /// Output: a table (text), or one JSON document for scripts: the group, its total lag and
    /// each partition's topic, partition, committed offset (null if none), low and high
    /// watermarks and lag.
    #[arg(short = 'f', long, value_enum, default_value = "text")]
    format: LagFormat,
}

/// How `clustera lag` prints.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LagFormat {
    /// An aligned table with a total.
    Text,
    /// One JSON object.
    Json,
}

/// Prints one line per partition and the total; fails if the group has committed nothing.
pub fn run(args: LagArgs) -> anyhow::Result<()> {
    let config = connect(&args.brokers)?;
    let rows = clustera_console::kafka::group_lag(&config, &args.group, args.topic.as_deref())?;
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
    let total: i64 = rows.iter().map(|r| r.lag).sum();
    if let LagFormat::Json = args.format {
        let partitions: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "topic": r.topic,
                    "partition": r.partition,
                    "committed": r.committed,
                    "low": r.low,
                    "high": r.high,
                    "lag": r.lag,
                })
            })
            .collect();
        let doc =
            serde_json::json!({ "group": args.group, "lag": total, "partitions": partitions });
        crate::exit::print(&format!("{doc}\n"))?;
        return Ok(());
    }
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
    table.push_str(&format!(
        "{:<30} {:>9} {:>12} {:>12} {total:>10}\n",
        "TOTAL", "", "", ""
    ));
    crate::exit::print(&table)?;
    Ok(())
}
