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
