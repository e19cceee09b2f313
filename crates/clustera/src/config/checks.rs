//! Checks of librdkafka properties that would break the runtime's guarantees or that a broker
//! refuses: weak acknowledgements, settings the KIP-848 group protocol owns, and aliases that
//! would slip past either.

use std::collections::BTreeMap;

use super::{variable_or_prefix, ConfigError, Secret, WEAK_DELIVERY_VARIABLE};
use crate::infra::env::parse_bool;

/// librdkafka's other names for properties the runtime looks at; each is read as the name it
/// stands for, so an alias cannot slip past a check.
pub(super) const ALIASES: &[(&str, &str)] = &[
    ("metadata.broker.list", "bootstrap.servers"),
    ("auto.commit.enable", "enable.auto.commit"),
    ("request.required.acks", "acks"),
    ("delivery.timeout.ms", "message.timeout.ms"),
    ("queue.buffering.max.ms", "linger.ms"),
    ("message.send.max.retries", "retries"),
    ("compression.codec", "compression.type"),
];

/// Consumer settings the next-generation group protocol (KIP-848, `group.protocol=consumer`)
/// refuses: the broker decides them.
const CLASSIC_ONLY_PROPERTIES: &[(&str, &str)] = &[
    (
        "session.timeout.ms",
        "the session timeout is set on the broker (group.consumer.session.timeout.ms)",
    ),
    (
        "heartbeat.interval.ms",
        "the heartbeat interval is set on the broker (group.consumer.heartbeat.interval.ms)",
    ),
    (
        "partition.assignment.strategy",
        "assignment is done by the broker; choose it with group.remote.assignor",
    ),
    (
        "group.protocol.type",
        "it only applies to the classic protocol",
    ),
];

/// The name librdkafka reads `property` as.
pub(super) fn canonical_property(property: &str) -> String {
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == property)
        .map_or(property, |(_, name)| name)
        .to_owned()
}

/// An offset is committed once the broker acknowledged its outputs; with `acks` other than
/// `all` or without idempotence, an acknowledgement no longer means the record is safe (a
/// leader failover loses it, a retry duplicates or reorders it).
pub(super) fn refuse_weak_delivery(
    properties: &BTreeMap<String, Secret>,
    vars: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    let variable = |p: &str| variable_or_prefix(p, vars);
    if let Some(acks) = properties.get("acks") {
        if !matches!(acks.expose().to_ascii_lowercase().as_str(), "all" | "-1") {
            return Err(ConfigError::invalid(
                variable("acks"),
                format!(
                    "acks={} would commit inputs whose outputs a broker failure can still lose; \
                     the runtime needs acks=all (set {WEAK_DELIVERY_VARIABLE}=true to accept the risk)",
                    acks.expose()
                ),
            ));
        }
    }
    if let Some(idempotence) = properties.get("enable.idempotence") {
        if parse_bool(idempotence.expose()) == Some(false) {
            return Err(ConfigError::invalid(
                variable("enable.idempotence"),
                format!(
                    "enable.idempotence=false lets retries duplicate and reorder outputs; \
                     the runtime needs it on (set {WEAK_DELIVERY_VARIABLE}=true to accept the risk)"
                ),
            ));
        }
    }
    Ok(())
}

/// `group.protocol` is `classic` (every broker) or `consumer` (KIP-848: Kafka 4.0 and later,
/// and librdkafka's mock cluster); the latter refuses the settings the broker now owns.
pub(super) fn check_group_protocol(
    properties: &BTreeMap<String, Secret>,
    vars: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    let variable = |p: &str| variable_or_prefix(p, vars);
    let Some(protocol) = properties.get("group.protocol") else {
        return Ok(());
    };
    match protocol.expose() {
        "classic" => Ok(()),
        "consumer" => {
            for (property, why) in CLASSIC_ONLY_PROPERTIES {
                if properties.contains_key(*property) {
                    return Err(ConfigError::invalid(
                        variable(property),
                        format!("{property} cannot be set with group.protocol=consumer: {why}"),
                    ));
                }
            }
            Ok(())
        }
        other => Err(ConfigError::invalid(
            variable("group.protocol"),
            format!("{other:?} is not a group protocol: use classic or consumer (KIP-848)"),
        )),
    }
}
