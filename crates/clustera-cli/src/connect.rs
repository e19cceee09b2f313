//! Connecting the command's clients: brokers from `--brokers` or `KAFKA_BOOTSTRAP_SERVERS`,
//! security and librdkafka properties from the same environment variables as kernels (plus
//! `-X property=value`), and a reachability check with a timeout so that no command hangs on a
//! dead address.

use std::collections::BTreeMap;

use anyhow::Context as _;
use clustera::config::PROPERTY_PREFIX;
use clustera::testing::kafka::TIMEOUT;
use clustera::ConfigError;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::exit::Unavailable;

/// The broker arguments shared by every command that talks to Kafka.
#[derive(clap::Args, Debug, Clone)]
pub struct BrokerArgs {
    /// Bootstrap servers.
    #[arg(
        short = 'b',
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        value_name = "HOST:PORT,..."
    )]
    pub brokers: String,
    /// A librdkafka property, as kcat's -X (repeatable); wins over the same property set by
    /// a KAFKA_PROPERTY_* variable, and is checked the same way.
    #[arg(short = 'X', value_name = "PROPERTY=VALUE", value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
}

/// Parses `-X name=value`; the name must look like a librdkafka property.
fn parse_property(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not PROPERTY=VALUE"))?;
    // Names travel as KAFKA_PROPERTY_* variables (dots become underscores), so only the
    // characters librdkafka's names use can make the round trip.
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.')
    {
        return Err(format!(
            "{name:?} is not a librdkafka property name (lowercase, digits and dots, e.g. fetch.wait.max.ms)"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// The variable a `-X` property travels as.
fn property_variable(name: &str) -> String {
    format!(
        "{PROPERTY_PREFIX}{}",
        name.to_ascii_uppercase().replace('.', "_")
    )
}

/// The client configuration from the environment and the arguments, before any broker is
/// contacted: errors here are configuration errors (exit code 78).
pub fn client_config(args: &BrokerArgs) -> Result<ClientConfig, ConfigError> {
    clustera::infra::env::load_dotenv()?;
    let mut vars = clustera::infra::env::env_vars();
    vars.insert("KAFKA_BOOTSTRAP_SERVERS".to_owned(), args.brokers.clone());
    // Tools name their topics on the command line.
    vars.remove("KAFKA_TOPIC");
    // -X goes through the same checks as KAFKA_PROPERTY_* (owned properties, weak delivery,
    // librdkafka's own parsing); the command line wins over the environment.
    let mut from_flag: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &args.properties {
        let variable = property_variable(name);
        vars.insert(variable.clone(), value.clone());
        from_flag.insert(variable, format!("-X {name}"));
    }
    let config = clustera::Config::from_vars("clustera", &["unused".to_owned()], &vars).map_err(
        |mut e| {
            if let Some(flag) = from_flag.get(&e.variable) {
                e.variable.clone_from(flag);
            }
            e
        },
    )?;
    let mut client = config.common_client_config();
    // Every client gets every property: librdkafka ignores a producer property on a consumer
    // (and the reverse) with a warning the command does not log.
    for (name, value) in &config.properties {
        client.set(name, value.expose());
    }
    Ok(client)
}

/// The client configuration, after checking that the brokers answer.
pub fn connect(args: &BrokerArgs) -> anyhow::Result<ClientConfig> {
    let config = client_config(args)?;
    let probe: BaseConsumer = config.create().context("creating a Kafka client")?;
    if let Err(e) = probe.fetch_metadata(None, TIMEOUT) {
        return Err(anyhow::Error::new(Unavailable(format!(
            "cannot reach the brokers at {} within {TIMEOUT:?}: {e}",
            args.brokers
        ))));
    }
    Ok(config)
}

/// Fails unless `topic` exists; its partition count.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_property("fetch.wait.max.ms=50").unwrap(),
            ("fetch.wait.max.ms".to_owned(), "50".to_owned())
        );
        assert_eq!(
            parse_property("sasl.password=a=b").unwrap(),
            ("sasl.password".to_owned(), "a=b".to_owned())
        );
        assert_eq!(
            parse_property("acks").unwrap_err(),
            "\"acks\" is not PROPERTY=VALUE"
        );
        assert!(parse_property("Bad_Name=1")
            .unwrap_err()
            .starts_with("\"Bad_Name\" is not a librdkafka property name"));
        assert_eq!(
            property_variable("fetch.wait.max.ms"),
            "KAFKA_PROPERTY_FETCH_WAIT_MAX_MS"
        );
    }
}
