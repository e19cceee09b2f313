//! Environment → typed configuration. Every error names the variable and what is wrong with it,
//! and is reported before any connection is made.

pub mod budget;
mod checks;
pub(crate) mod properties;
mod runtime;
mod secret;
mod tls;

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

use checks::{canonical_property, check_group_protocol, refuse_weak_delivery};

use crate::infra::env::{env_vars, flag, split_list};
pub use crate::infra::env::{load_dotenv, ConfigError};

pub(crate) use runtime::dead_letter_topic;
pub use runtime::{Guarantee, ProcessingOrder, RuntimeSettings};
pub use secret::Secret;
pub use tls::TlsConfig;

/// Prefix of variables passed through to librdkafka: `KAFKA_PROPERTY_FETCH_WAIT_MAX_MS=50`
/// sets `fetch.wait.max.ms=50`.
pub const PROPERTY_PREFIX: &str = "KAFKA_PROPERTY_";

/// SASL authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslConfig {
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER`.
    pub mechanism: String,
    /// The user name.
    pub username: String,
    /// The password.
    pub password: Secret,
}

/// Everything a kernel needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The kernel's name (labels, defaults).
    pub kernel_name: String,
    /// `KAFKA_BOOTSTRAP_SERVERS`.
    pub bootstrap_servers: String,
    /// Topics to consume: `KAFKA_TOPIC` (comma-separated) or the kernel's defaults.
    pub topics: Vec<String>,
    /// `KAFKA_CONSUMER_GROUP`.
    pub group_id: String,
    /// `KAFKA_CLIENT_ID`.
    pub client_id: String,
    /// TLS from `KAFKA_CA_CERT`, `KAFKA_CLIENT_CERT`, `KAFKA_CLIENT_KEY`.
    pub tls: Option<TlsConfig>,
    /// SASL from `KAFKA_SASL_MECHANISM`, `KAFKA_SASL_USERNAME`, `KAFKA_SASL_PASSWORD`.
    pub sasl: Option<SaslConfig>,
    /// `KAFKA_SECURITY_PROTOCOL`, when set explicitly.
    pub security_protocol: Option<String>,
    /// Extra librdkafka properties (values are treated as secrets: never logged).
    pub properties: BTreeMap<String, Secret>,
    /// Runtime behaviour.
    pub runtime: RuntimeSettings,
}

/// librdkafka properties the runtime owns; overriding them would break its guarantees.
const OWNED_PROPERTIES: &[&str] = &[
    "enable.auto.commit",
    "enable.auto.offset.store",
    "group.id",
    "bootstrap.servers",
    // Set from CLUSTERA_TRANSACTIONAL_ID under exactly-once; a transactional producer
    // anywhere else would refuse every record sent outside a transaction.
    "transactional.id",
];

/// Opts out of the producer settings that "acknowledged by the broker" relies on.
pub const WEAK_DELIVERY_VARIABLE: &str = "CLUSTERA_ALLOW_WEAK_DELIVERY";

/// librdkafka's default `message.max.bytes`.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// The well-known `KAFKA_*` variables that map to librdkafka properties one to one.
const DIRECT_PROPERTIES: &[(&str, &str)] = &[
    ("KAFKA_AUTO_OFFSET_RESET", "auto.offset.reset"),
    ("KAFKA_SESSION_TIMEOUT_MS", "session.timeout.ms"),
    ("KAFKA_MAX_POLL_INTERVAL_MS", "max.poll.interval.ms"),
    ("KAFKA_MESSAGE_MAX_BYTES", "message.max.bytes"),
    ("KAFKA_GROUP_PROTOCOL", "group.protocol"),
];

impl Config {
    /// Reads the process environment, after loading a `.env` file if one is present (variables
    /// already set win over the file).
    pub fn from_env(kernel_name: &str, default_topics: &[String]) -> Result<Self, ConfigError> {
        load_dotenv()?;
        Self::from_vars(kernel_name, default_topics, &env_vars())
    }

    /// The connection settings of the environment (brokers, TLS, SASL) for command-line
    /// tools, with `brokers` overriding `KAFKA_BOOTSTRAP_SERVERS`.
    pub fn tool_client_from_env(brokers: Option<&str>) -> Result<ClientConfig, ConfigError> {
        Ok(Self::tool_from_env(brokers)?.common_client_config())
    }

    /// The whole configuration of the environment for a process that consumes no topic of
    /// its own (a command-line tool, the outbox relay), with `brokers` overriding
    /// `KAFKA_BOOTSTRAP_SERVERS`: connection settings, passthrough properties (checked as for
    /// a kernel) and runtime settings.
    pub fn tool_from_env(brokers: Option<&str>) -> Result<Self, ConfigError> {
        load_dotenv()?;
        let mut vars = env_vars();
        if let Some(b) = brokers {
            vars.insert("KAFKA_BOOTSTRAP_SERVERS".to_owned(), b.to_owned());
        }
        // Tools name their topics on the command line.
        vars.remove("KAFKA_TOPIC");
        Self::from_vars("clustera", &["unused".to_owned()], &vars)
    }

    /// Builds the configuration from a map of variables (the environment, or a test's map).
    pub fn from_vars(
        kernel_name: &str,
        default_topics: &[String],
        vars: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let var = |name: &str| vars.get(name).map(|v| v.trim().to_owned());
        let bootstrap_servers = var("KAFKA_BOOTSTRAP_SERVERS")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                ConfigError::invalid(
                    "KAFKA_BOOTSTRAP_SERVERS",
                    "missing: set it to the broker list, e.g. 127.0.0.1:9092",
                )
            })?;
        let topics = match var("KAFKA_TOPIC") {
            Some(list) => split_list(&list),
            None => default_topics.to_vec(),
        };
        if topics.is_empty() {
            return Err(ConfigError::invalid(
                "KAFKA_TOPIC",
                "no topic to consume: set KAFKA_TOPIC or give the kernel default topics",
            ));
        }
        if let Some(bad) = topics.iter().find(|t| !valid_topic_name(t)) {
            return Err(ConfigError::invalid(
                "KAFKA_TOPIC",
                format!("{bad:?} is not a valid topic name (letters, digits, '.', '_', '-'; at most 249)"),
            ));
        }
        let group_id = var("KAFKA_CONSUMER_GROUP")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| format!("{kernel_name}-consumer-group"));
        let client_id = var("KAFKA_CLIENT_ID")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| format!("{kernel_name}-{}", std::process::id()));

        let tls = TlsConfig::from_vars(&var)?;
        let sasl = sasl_from_vars(&var)?;
        let security_protocol = var("KAFKA_SECURITY_PROTOCOL").filter(|v| !v.is_empty());

        let mut properties = BTreeMap::new();
        for (variable, property) in DIRECT_PROPERTIES {
            if let Some(v) = var(variable).filter(|v| !v.is_empty()) {
                properties.insert((*property).to_owned(), Secret::new(v));
            }
        }
        for (name, value) in vars {
            let Some(suffix) = name.strip_prefix(PROPERTY_PREFIX) else {
                continue;
            };
            let property = canonical_property(&suffix.to_ascii_lowercase().replace('_', "."));
            if property.is_empty() {
                return Err(ConfigError::invalid(name, "names no librdkafka property"));
            }
            if OWNED_PROPERTIES.contains(&property.as_str()) {
                return Err(ConfigError::invalid(
                    name,
                    format!("{property} is managed by the runtime and cannot be overridden"),
                ));
            }
            properties.insert(property, Secret::new(value.trim()));
        }
        if !flag(&var, WEAK_DELIVERY_VARIABLE)?.unwrap_or(false) {
            refuse_weak_delivery(&properties, vars)?;
        }
        check_group_protocol(&properties, vars)?;

        let config = Self {
            kernel_name: kernel_name.to_owned(),
            bootstrap_servers,
            topics,
            group_id,
            client_id,
            tls,
            sasl,
            security_protocol,
            properties,
            runtime: runtime::runtime_from_vars(&var)?,
        };
        if config.runtime.guarantee == Guarantee::ExactlyOnce
            && config
                .properties
                .get("isolation.level")
                .is_some_and(|v| v.expose().trim() != "read_committed")
        {
            return Err(ConfigError::invalid(
                variable_or_prefix("isolation.level", vars),
                "exactly-once reads its inputs with isolation.level=read_committed; records of \
                 aborted transactions would otherwise be processed",
            ));
        }
        config.validate_properties(vars)?;
        Ok(config)
    }

    /// Every value that must never be logged: certificates, keys, the SASL password and all
    /// passthrough property values (those are only redacted when at least 4 characters long).
    pub fn secret_values(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .properties
            .values()
            .map(|v| v.expose().to_owned())
            .collect();
        if let Some(tls) = &self.tls {
            for pem in [&tls.ca_pem, &tls.client_cert_pem, &tls.client_key_pem]
                .into_iter()
                .flatten()
            {
                out.push(pem.expose().to_owned());
            }
        }
        if let Some(sasl) = &self.sasl {
            out.push(sasl.password.expose().to_owned());
        }
        out
    }

    /// A minimal configuration for tests and tools: defaults everywhere, no security, no HTTP
    /// listener.
    pub fn for_brokers(kernel_name: &str, bootstrap_servers: &str, topics: &[&str]) -> Self {
        Self {
            kernel_name: kernel_name.to_owned(),
            bootstrap_servers: bootstrap_servers.to_owned(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            group_id: format!("{kernel_name}-consumer-group"),
            client_id: format!("{kernel_name}-{}", std::process::id()),
            tls: None,
            sasl: None,
            security_protocol: None,
            properties: BTreeMap::new(),
            runtime: RuntimeSettings {
                http_addr: None,
                // Like the HTTP listener: a test kernel reports its status only when asked.
                status_topic: None,
                ..RuntimeSettings::default()
            },
        }
    }

    /// The producer's `message.max.bytes`: the largest record it will send.
    pub fn max_message_bytes(&self) -> usize {
        self.properties
            .get("message.max.bytes")
            .and_then(|v| v.expose().parse().ok())
            .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES)
    }

    /// Settings shared by the consumer and the producer: brokers, identity and security.
    pub fn common_client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        c.set("client.id", &self.client_id);
        let protocol = self.security_protocol.clone().unwrap_or_else(|| {
            match (self.tls.is_some(), self.sasl.is_some()) {
                (true, true) => "sasl_ssl",
                (true, false) => "ssl",
                (false, true) => "sasl_plaintext",
                (false, false) => "plaintext",
            }
            .to_owned()
        });
        c.set("security.protocol", protocol);
        if let Some(tls) = &self.tls {
            if let Some(ca) = &tls.ca_pem {
                c.set("ssl.ca.pem", ca.expose());
            }
            if let Some(cert) = &tls.client_cert_pem {
                c.set("ssl.certificate.pem", cert.expose());
            }
            if let Some(key) = &tls.client_key_pem {
                c.set("ssl.key.pem", key.expose());
            }
        }
        if let Some(sasl) = &self.sasl {
            c.set("sasl.mechanism", &sasl.mechanism);
            c.set("sasl.username", &sasl.username);
            c.set("sasl.password", sasl.password.expose());
        }
        c
    }

    /// The consumer's librdkafka configuration when at most one partition is assigned. See
    /// [`Config::consumer_config_for`].
    pub fn consumer_config(&self) -> ClientConfig {
        self.consumer_config_for(1)
    }

    /// The consumer's librdkafka configuration: manual commits only, and prefetch sized so
    /// that `partitions` assigned partitions stay within the memory budget.
    pub fn consumer_config_for(&self, partitions: usize) -> ClientConfig {
        let mut c = self.common_client_config();
        c.set("group.id", &self.group_id);
        c.set("enable.auto.commit", "false");
        c.set("enable.auto.offset.store", "false");
        c.set("auto.offset.reset", "earliest");
        c.set("enable.partition.eof", "false");
        // librdkafka's default too; stated because exactly-once depends on it (an operator's
        // read_uncommitted is refused under exactly-once when the configuration is read).
        c.set("isolation.level", "read_committed");
        // Each partition has its own queue (see runtime::dispatch), and librdkafka applies
        // these caps per queue: the budget is divided by the partitions (config::budget).
        // Without a budget, memory ahead of the kernel stays under about 8 MiB × partitions.
        match self.runtime.memory_bytes {
            Some(budget) => {
                let s = budget::split(budget, partitions, self.max_message_bytes() as u64);
                c.set(
                    "queued.max.messages.kbytes",
                    s.queued_max_kbytes.to_string(),
                );
                c.set("queued.min.messages", s.queued_min_messages.to_string());
                c.set(
                    "max.partition.fetch.bytes",
                    s.partition_fetch_bytes.to_string(),
                );
                // A full queue makes librdkafka wait this long before it looks again (1 s by
                // default): with small queues the worker would drain them and then idle.
                c.set("fetch.queue.backoff.ms", "5");
            }
            None => {
                c.set("queued.max.messages.kbytes", "8192");
                c.set("queued.min.messages", "50000");
            }
        }
        // Consumer lag for metrics and the stall watchdog comes from librdkafka's statistics.
        c.set("statistics.interval.ms", "5000");
        // The failure of an asynchronous commit is only ever reported as a warning log
        // (COMMITFAIL, see runtime::consumer), so warnings must reach the runtime even when the
        // application's own log filter would not show them.
        if (c.log_level as i32) < (rdkafka::config::RDKafkaLogLevel::Warning as i32) {
            c.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
        }
        for (k, v) in &self.properties {
            if !properties::is_producer_only(k) {
                c.set(k, v.expose());
            }
        }
        c
    }

    /// The kernel's producer's librdkafka configuration: idempotent, acknowledged by all
    /// replicas (see [`crate::infra::producer`]), and transactional under exactly-once.
    pub fn producer_config(&self) -> ClientConfig {
        let mut c = crate::infra::producer::idempotent_producer_config(
            self,
            crate::infra::producer::DEFAULT_LINGER,
        );
        if self.runtime.guarantee == Guarantee::ExactlyOnce {
            let timeout = self.runtime.transaction_timeout.as_millis().to_string();
            c.set("transactional.id", self.transactional_id());
            c.set("transaction.timeout.ms", &timeout);
            // librdkafka wants every record settled within the transaction's life; a record
            // that times out fails its transaction, which is then aborted and redone.
            if !self.properties.contains_key("message.timeout.ms") {
                c.set("message.timeout.ms", &timeout);
            }
        }
        c
    }

    /// The `transactional.id` of this instance under exactly-once: `CLUSTERA_TRANSACTIONAL_ID`,
    /// or `<group>-<client id>`.
    pub fn transactional_id(&self) -> String {
        self.runtime
            .transactional_id
            .clone()
            .unwrap_or_else(|| format!("{}-{}", self.group_id, self.client_id))
    }

    /// Asks librdkafka to parse both configurations, so an unknown property or a bad value is
    /// reported now, naming the variable that set it.
    fn validate_properties(&self, vars: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        for client in [self.consumer_config(), self.producer_config()] {
            if let Err(e) = client.create_native_config() {
                let text = e.to_string();
                let culprit = self
                    .properties
                    .keys()
                    .find(|p| text.contains(p.as_str()))
                    .cloned();
                let variable = culprit.as_deref().map_or_else(
                    || format!("{PROPERTY_PREFIX}*"),
                    |p| variable_or_prefix(p, vars),
                );
                return Err(ConfigError::invalid(
                    variable,
                    format!("rejected by librdkafka: {}", redact_values(&text, self)),
                ));
            }
        }
        Ok(())
    }
}

/// The variable that set `property`, or the `KAFKA_PROPERTY_*` family when none is known.
fn variable_or_prefix(property: &str, vars: &BTreeMap<String, String>) -> String {
    variable_for_property(property, vars).unwrap_or_else(|| format!("{PROPERTY_PREFIX}*"))
}

/// Finds the variable that set `property`.
fn variable_for_property(property: &str, vars: &BTreeMap<String, String>) -> Option<String> {
    if let Some((v, _)) = DIRECT_PROPERTIES.iter().find(|(_, p)| *p == property) {
        if vars.contains_key(*v) {
            return Some((*v).to_owned());
        }
    }
    vars.keys()
        .find(|k| {
            k.strip_prefix(PROPERTY_PREFIX).is_some_and(|s| {
                canonical_property(&s.to_ascii_lowercase().replace('_', ".")) == property
            })
        })
        .cloned()
}

/// librdkafka's messages quote values; make sure no property value reaches a log.
fn redact_values(text: &str, config: &Config) -> String {
    let mut out = text.to_owned();
    for v in config.properties.values() {
        if !v.expose().is_empty() {
            out = out.replace(v.expose(), "***");
        }
    }
    out
}

fn sasl_from_vars(var: &dyn Fn(&str) -> Option<String>) -> Result<Option<SaslConfig>, ConfigError> {
    let mechanism = var("KAFKA_SASL_MECHANISM").filter(|v| !v.is_empty());
    let username = var("KAFKA_SASL_USERNAME").filter(|v| !v.is_empty());
    let password = var("KAFKA_SASL_PASSWORD").filter(|v| !v.is_empty());
    let Some(mechanism) = mechanism else {
        if username.is_some() || password.is_some() {
            return Err(ConfigError::invalid(
                "KAFKA_SASL_MECHANISM",
                "missing: KAFKA_SASL_USERNAME/PASSWORD are set; choose PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
            ));
        }
        return Ok(None);
    };
    let mechanism = mechanism.to_ascii_uppercase();
    if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"].contains(&mechanism.as_str()) {
        return Err(ConfigError::invalid(
            "KAFKA_SASL_MECHANISM",
            format!("{mechanism:?} is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER"),
        ));
    }
    let needs_credentials = mechanism != "OAUTHBEARER";
    let username = match username {
        Some(u) => u,
        None if needs_credentials => {
            return Err(ConfigError::invalid(
                "KAFKA_SASL_USERNAME",
                format!("missing: required by SASL mechanism {mechanism}"),
            ))
        }
        None => String::new(),
    };
    let password = match password {
        Some(p) => Secret::new(p),
        None if needs_credentials => {
            return Err(ConfigError::invalid(
                "KAFKA_SASL_PASSWORD",
                format!("missing: required by SASL mechanism {mechanism}"),
            ))
        }
        None => Secret::new(""),
    };
    Ok(Some(SaslConfig {
        mechanism,
        username,
        password,
    }))
}

pub(super) fn valid_topic_name(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests;
