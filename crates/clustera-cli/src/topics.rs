//! `clustera topics`: list topics, or create one.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use clustera::testing::kafka::{self, TIMEOUT};
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::connect::{connect, BrokerArgs};

/// Arguments of `clustera topics`.
#[derive(Args)]
pub struct TopicsArgs {
    #[command(flatten)]
    brokers: BrokerArgs,
    #[command(subcommand)]
    action: Option<TopicsAction>,
}

/// What to do with topics (default: list them).
#[derive(Subcommand)]
enum TopicsAction {
    /// Create a topic.
    Create {
        /// Its name.
        name: String,
        /// Number of partitions.
        #[arg(long, default_value_t = 1)]
        partitions: i32,
    },
}

/// Lists topics with their partition counts, or creates one.
pub fn run(args: TopicsArgs) -> anyhow::Result<()> {
    let config = connect(&args.brokers)?;
    match args.action {
        Some(TopicsAction::Create { name, partitions }) => {
            kafka::create_topic(&config, &name, partitions)
                .with_context(|| format!("creating topic {name} (the development broker creates topics on first produce instead)"))?;
            crate::exit::print(&format!("created {name} with {partitions} partition(s)\n"))?;
        }
        None => {
            let probe: BaseConsumer = config.create()?;
            let metadata = probe.fetch_metadata(None, TIMEOUT)?;
            let mut topics: Vec<(String, usize)> = metadata
                .topics()
                .iter()
                .map(|t| (t.name().to_owned(), t.partitions().len()))
                .collect();
            topics.sort();
            let list: String = topics
                .iter()
                .map(|(name, partitions)| format!("{name}\t{partitions}\n"))
                .collect();
            crate::exit::print(&list)?;
        }
    }
    Ok(())
}
