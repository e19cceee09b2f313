//! The one producer builder: every process that produces (a kernel's runtime, the KafkaSend
//! portal and client, the outbox relay) gets an idempotent producer acknowledged by all
//! replicas, from the same `KAFKA_*` settings ([`Config`]), including `KAFKA_PROPERTY_*`
//! passthrough. Weak delivery settings were already refused when the [`Config`] was read
//! (unless `CLUSTERA_ALLOW_WEAK_DELIVERY` says otherwise).

use std::time::Duration;

use rdkafka::ClientConfig;

use crate::config::{budget, properties, Config};

/// How long the runtime's producer waits to fill a batch (`linger.ms`).
pub const DEFAULT_LINGER: Duration = Duration::from_millis(5);

/// The librdkafka configuration of an idempotent producer, acknowledged by all replicas,
/// waiting `linger` to fill a batch. Passthrough properties (`KAFKA_PROPERTY_*`) that concern a
/// producer win over every default here.
pub fn idempotent_producer_config(config: &Config, linger: Duration) -> ClientConfig {
    let mut c = config.common_client_config();
    c.set("enable.idempotence", "true");
    c.set("acks", "all");
    c.set("linger.ms", linger.as_millis().to_string());
    // No local timeout: the runtime never drops a record, and a record that times out
    // while later ones of its partition still go through (librdkafka bumps the idempotent
    // epoch and carries on) can land after them. Without it the idempotent producer keeps
    // every partition's order through any outage; refusals still fail at once. A
    // `message.timeout.ms` set by the operator wins, and then resends are best-effort in
    // order (runtime::producer).
    c.set("message.timeout.ms", "0");
    // Java's partitioner (murmur2 of the key, random for a null key) rather than librdkafka's
    // CRC32 default, so a key lands on the partition where a Java producer, Kafka Connect or
    // Debezium would put it. `KAFKA_PROPERTY_PARTITIONER` still wins.
    c.set("partitioner", "murmur2_random");
    if let Some(memory) = config.runtime.memory_bytes {
        let s = budget::split(memory, 1, config.max_message_bytes() as u64);
        c.set("queue.buffering.max.kbytes", s.producer_kbytes.to_string());
        c.set(
            "queue.buffering.max.messages",
            s.producer_messages.to_string(),
        );
    }
    for (k, v) in &config.properties {
        if !properties::is_consumer_only(k) {
            c.set(k, v.expose());
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        let mut pairs = pairs.to_vec();
        pairs.push(("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"));
        crate::testing::config_from_pairs(&pairs).unwrap()
    }

    #[test]
    fn idempotent_all_acks_and_the_linger_asked_for() {
        let c = idempotent_producer_config(&config(&[]), Duration::ZERO);
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("linger.ms"), Some("0"));
        assert_eq!(c.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(c.get("partitioner"), Some("murmur2_random"));
    }

    #[test]
    fn the_operator_can_choose_another_partitioner() {
        let c = idempotent_producer_config(
            &config(&[("KAFKA_PROPERTY_PARTITIONER", "consistent_random")]),
            Duration::ZERO,
        );
        assert_eq!(c.get("partitioner"), Some("consistent_random"));
    }

    #[test]
    fn passthrough_properties_reach_the_producer_and_consumer_ones_do_not() {
        let c = idempotent_producer_config(
            &config(&[
                ("KAFKA_PROPERTY_COMPRESSION_TYPE", "zstd"),
                ("KAFKA_PROPERTY_LINGER_MS", "20"),
                ("KAFKA_PROPERTY_FETCH_WAIT_MAX_MS", "50"),
            ]),
            Duration::ZERO,
        );
        assert_eq!(c.get("compression.type"), Some("zstd"));
        assert_eq!(c.get("linger.ms"), Some("20"), "the operator's value wins");
        assert_eq!(c.get("fetch.wait.max.ms"), None);
    }
}
