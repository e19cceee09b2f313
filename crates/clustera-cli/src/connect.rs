//! Connecting the command's clients: brokers from `--brokers` or `KAFKA_BOOTSTRAP_SERVERS`,
//! security from the same environment variables as kernels, and a reachability check with a
//! timeout so that no command hangs on a dead address.

use anyhow::Context as _;
use clustera::testing::kafka::TIMEOUT;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// The broker list argument shared by every command that talks to Kafka.
#[derive(clap::Args, Debug, Clone)]
pub struct BrokerArgs {
    /// Bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", value_name = "HOST:PORT,...")]
    pub brokers: String,
}

/// The client configuration, after checking that the brokers answer.
pub fn connect(args: &BrokerArgs) -> anyhow::Result<ClientConfig> {
    let config = clustera::Config::tool_client_from_env(Some(&args.brokers))?;
    let probe: BaseConsumer = config.create().context("creating a Kafka client")?;
    probe.fetch_metadata(None, TIMEOUT).with_context(|| {
        format!(
            "cannot reach the brokers at {} within {TIMEOUT:?}",
            args.brokers
        )
    })?;
    Ok(config)
}

/// Fails unless `topic` exists.
pub fn require_topic(config: &ClientConfig, topic: &str) -> anyhow::Result<i32> {
    let probe: BaseConsumer = config.create()?;
    let metadata = probe
        .fetch_metadata(Some(topic), TIMEOUT)
        .with_context(|| format!("reading metadata of topic {topic}"))?;
    let t = metadata
        .topics()
        .first()
        .with_context(|| format!("unknown topic {topic}"))?;
    if t.error().is_some() || t.partitions().is_empty() {
        anyhow::bail!("unknown topic {topic}");
    }
    Ok(i32::try_from(t.partitions().len()).unwrap_or(i32::MAX))
}
