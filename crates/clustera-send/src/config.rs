//! The portal's settings, from the environment with the seed's variable names, checked for
//! consistency at start-up. Every error names the variable.

use std::path::PathBuf;
use std::time::Duration;

use clustera::config::Secret;
use clustera::infra::env::{flag, number, split_list, ConfigError};
use clustera_send_protocol::chunking::check_chunk_size;
use clustera_send_protocol::DEFAULT_CHUNK_SIZE;
use url::Url;

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::oauth::OAuthConfig;
use crate::path::{PathRules, DEFAULT_MAX_LEN};
use crate::policy::Policy;
use crate::spool::SpoolConfig;

/// The request topic unless `KAFKA_REQUEST_TOPIC` says otherwise.
pub const DEFAULT_REQUEST_TOPIC: &str = "kafkasend-requests";
/// The response topic unless `KAFKA_RESPONSE_TOPIC` says otherwise.
pub const DEFAULT_RESPONSE_TOPIC: &str = "kafkasend-responses";
/// The smallest `chunk_size` a head may declare for a body of several chunks, unless
/// `PORTAL_MIN_CHUNK_BYTES` (or a smaller `KAFKASEND_CHUNK_SIZE`) says otherwise.
pub const DEFAULT_MIN_CHUNK_SIZE: u32 = 4096;
/// librdkafka's default largest message.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;

/// Topics and chunking shared by the portal and its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wire {
    /// Where requests go (`KAFKA_REQUEST_TOPIC`).
    pub request_topic: String,
    /// Where responses go (`KAFKA_RESPONSE_TOPIC`).
    pub response_topic: String,
    /// Bytes per chunk before base64 (`KAFKASEND_CHUNK_SIZE`).
    pub chunk_size: u32,
    /// The largest Kafka message (`KAFKA_MESSAGE_MAX_BYTES`).
    pub max_message_bytes: usize,
}

impl Wire {
    /// From the environment; checks that a chunk fits in a message.
    pub fn from_vars(var: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let wire = Self {
            request_topic: var("KAFKA_REQUEST_TOPIC")
                .unwrap_or_else(|| DEFAULT_REQUEST_TOPIC.into()),
            response_topic: var("KAFKA_RESPONSE_TOPIC")
                .unwrap_or_else(|| DEFAULT_RESPONSE_TOPIC.into()),
            chunk_size: number(var, "KAFKASEND_CHUNK_SIZE")?.unwrap_or(DEFAULT_CHUNK_SIZE),
            max_message_bytes: number(var, "KAFKA_MESSAGE_MAX_BYTES")?
                .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES),
        };
        check_chunk_size(wire.chunk_size, wire.max_message_bytes)
            .map_err(|m| ConfigError::invalid("KAFKASEND_CHUNK_SIZE", m))?;
        if wire.request_topic == wire.response_topic {
            return Err(ConfigError::invalid(
                "KAFKA_RESPONSE_TOPIC",
                "must differ from KAFKA_REQUEST_TOPIC",
            ));
        }
        Ok(wire)
    }
}

/// Everything the portal needs besides Kafka's connection settings.
#[derive(Debug, Clone)]
pub struct PortalConfig {
    /// The REST API (`PORTAL_API_BASE_URL`): the only place requests go; trusted.
    pub api_base_url: Url,
    /// Endpoint and header allow-lists and the mode.
    pub policy: Policy,
    /// What endpoints may contain (`PORTAL_ALLOW_NON_ASCII_PATHS`, false;
    /// `PORTAL_MAX_ENDPOINT_BYTES`, 2048).
    pub path_rules: PathRules,
    /// Topics a head's `reply_to` may name (`PORTAL_REPLY_TOPICS`, globs; default: only the
    /// response topic).
    pub reply_topics: GlobSet,
    /// Smallest `chunk_size` a head with more than one chunk may declare
    /// (`PORTAL_MIN_CHUNK_BYTES`, 4096 or `KAFKASEND_CHUNK_SIZE` if smaller).
    pub min_chunk_size: u32,
    /// Longest wait for a job's first chunk (`PORTAL_FIRST_CHUNK_TIMEOUT_SECONDS`, 10).
    pub first_chunk_timeout: Duration,
    /// Longest REST call (`PORTAL_JOB_TIMEOUT_SECONDS`, 900).
    pub job_timeout: Duration,
    /// Oldest a job may get (`PORTAL_JOB_MAX_AGE_SECONDS`, 900).
    pub job_max_age: Duration,
    /// Longest wait for a job's next chunk (`PORTAL_JOB_IDLE_TIMEOUT_SECONDS`, 120).
    pub job_idle_timeout: Duration,
    /// Jobs held at once (`PORTAL_MAX_CONCURRENT_JOBS`, 32).
    pub max_jobs: usize,
    /// Body bytes held at once, in memory and spooled (`PORTAL_MAX_INFLIGHT_BYTES`, 2 GiB).
    pub max_inflight_bytes: u64,
    /// Largest request or response body (`PORTAL_MAX_BODY_BYTES`, 1 GiB).
    pub max_body_bytes: u64,
    /// Spooling (`PORTAL_SPOOL_THRESHOLD_BYTES`, 4 MiB; `PORTAL_SPOOL_DIR`).
    pub spool: SpoolConfig,
    /// OAuth2 client credentials, if `OAUTH2_TOKEN_URL` is set.
    pub oauth: Option<OAuthConfig>,
    /// Extra trusted CA certificates (PEM) for HTTPS to the API and the token endpoint
    /// (`PORTAL_API_CA_CERT`, base64 of the PEM, like `KAFKA_CA_CERT`).
    pub api_ca_pem: Option<Vec<u8>>,
    /// Topics and chunking.
    pub wire: Wire,
    /// `KAFKA_MAX_POLL_INTERVAL_MS` to set when it was not given (job timeout + 5 minutes).
    pub max_poll_interval_default: Option<u64>,
}

impl PortalConfig {
    /// From the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&clustera::infra::env::env_var)
    }

    /// From `var`, checking every setting and their consistency.
    pub fn from_vars(var: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let base = var("PORTAL_API_BASE_URL").ok_or_else(|| {
            ConfigError::invalid(
                "PORTAL_API_BASE_URL",
                "is required (the REST API's base URL)",
            )
        })?;
        let api_base_url = Url::parse(&base).map_err(|e| {
            ConfigError::invalid("PORTAL_API_BASE_URL", format!("{base:?} is not a URL: {e}"))
        })?;
        if !matches!(api_base_url.scheme(), "http" | "https") || api_base_url.host().is_none() {
            return Err(ConfigError::invalid(
                "PORTAL_API_BASE_URL",
                "must be an http or https URL with a host",
            ));
        }
        if !api_base_url.username().is_empty()
            || api_base_url.password().is_some()
            || api_base_url.query().is_some()
            || api_base_url.fragment().is_some()
        {
            return Err(ConfigError::invalid(
                "PORTAL_API_BASE_URL",
                "must not carry credentials, a query or a fragment",
            ));
        }
        let strict = flag(&var, "PORTAL_STRICT_SECURITY")?.unwrap_or(true);
        let list = |name: &str, default: &str| {
            split_list(&var(name).unwrap_or_else(|| default.to_owned()))
        };
        let endpoints = list("PORTAL_ALLOWED_ENDPOINTS", "");
        if strict && endpoints.is_empty() {
            return Err(ConfigError::invalid(
                "PORTAL_ALLOWED_ENDPOINTS",
                "is empty in strict mode: list the endpoints clients may call (globs such as /api/v1/documents/*)",
            ));
        }
        let headers = list("PORTAL_ALLOWED_HEADERS", "Content-Type");
        let mut policy = Policy::new(&endpoints, &headers, strict)
            .map_err(|m| ConfigError::invalid("PORTAL_ALLOWED_ENDPOINTS", m))?;
        if let Some(names) = var("PORTAL_ALLOWED_RESPONSE_HEADERS") {
            policy = policy.with_response_headers(&split_list(&names));
        }
        let path_rules = PathRules {
            allow_non_ascii: flag(&var, "PORTAL_ALLOW_NON_ASCII_PATHS")?.unwrap_or(false),
            max_len: number(&var, "PORTAL_MAX_ENDPOINT_BYTES")?.unwrap_or(DEFAULT_MAX_LEN),
        };
        let seconds = |name: &str, default: u64| -> Result<Duration, ConfigError> {
            let s = number::<u64>(&var, name)?.unwrap_or(default);
            if s == 0 {
                return Err(ConfigError::invalid(name, "must be at least 1"));
            }
            Ok(Duration::from_secs(s))
        };
        let job_timeout = seconds("PORTAL_JOB_TIMEOUT_SECONDS", 900)?;
        let job_max_age = seconds("PORTAL_JOB_MAX_AGE_SECONDS", 900)?;
        let job_idle_timeout = seconds("PORTAL_JOB_IDLE_TIMEOUT_SECONDS", 120)?;
        let first_chunk_timeout = seconds("PORTAL_FIRST_CHUNK_TIMEOUT_SECONDS", 10)?;
        let max_poll_interval_default = match number::<u64>(&var, "KAFKA_MAX_POLL_INTERVAL_MS")? {
            Some(ms) if u128::from(ms) <= job_timeout.as_millis() => {
                return Err(ConfigError::invalid(
                    "KAFKA_MAX_POLL_INTERVAL_MS",
                    format!(
                        "{ms} ms is not greater than PORTAL_JOB_TIMEOUT_SECONDS ({} s): the consumer would leave its group during long REST calls",
                        job_timeout.as_secs()
                    ),
                ))
            }
            Some(_) => None,
            None => Some(u64::try_from(job_timeout.as_millis()).unwrap_or(u64::MAX).saturating_add(300_000)),
        };
        let max_jobs = number(&var, "PORTAL_MAX_CONCURRENT_JOBS")?.unwrap_or(32);
        if max_jobs == 0 {
            return Err(ConfigError::invalid(
                "PORTAL_MAX_CONCURRENT_JOBS",
                "must be at least 1",
            ));
        }
        let max_body_bytes = number(&var, "PORTAL_MAX_BODY_BYTES")?.unwrap_or(1 << 30);
        let max_inflight_bytes = number(&var, "PORTAL_MAX_INFLIGHT_BYTES")?.unwrap_or(2 << 30);
        if max_inflight_bytes < max_body_bytes {
            return Err(ConfigError::invalid(
                "PORTAL_MAX_INFLIGHT_BYTES",
                "must be at least PORTAL_MAX_BODY_BYTES, or no body of the largest size could be accepted",
            ));
        }
        let spool = SpoolConfig {
            threshold: number(&var, "PORTAL_SPOOL_THRESHOLD_BYTES")?.unwrap_or(4 << 20),
            dir: var("PORTAL_SPOOL_DIR").map_or_else(std::env::temp_dir, PathBuf::from),
        };
        crate::spool::Spool::check_dir(&spool.dir).map_err(|e| {
            ConfigError::invalid(
                "PORTAL_SPOOL_DIR",
                format!("{} is not writable: {e}", spool.dir.display()),
            )
        })?;
        let oauth = match var("OAUTH2_TOKEN_URL") {
            None => None,
            Some(url) => Some(OAuthConfig {
                token_url: Url::parse(&url).map_err(|e| {
                    ConfigError::invalid("OAUTH2_TOKEN_URL", format!("{url:?} is not a URL: {e}"))
                })?,
                client_id: var("OAUTH2_CLIENT_ID").ok_or_else(|| {
                    ConfigError::invalid("OAUTH2_CLIENT_ID", "is required with OAUTH2_TOKEN_URL")
                })?,
                client_secret: Secret::new(var("OAUTH2_CLIENT_SECRET").ok_or_else(|| {
                    ConfigError::invalid(
                        "OAUTH2_CLIENT_SECRET",
                        "is required with OAUTH2_TOKEN_URL",
                    )
                })?),
                scope: var("OAUTH2_SCOPE"),
            }),
        };
        let api_ca_pem = match var("PORTAL_API_CA_CERT") {
            None => None,
            Some(b64) => {
                use base64::Engine as _;
                let pem = base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| {
                        ConfigError::invalid("PORTAL_API_CA_CERT", format!("is not base64: {e}"))
                    })?;
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    ConfigError::invalid(
                        "PORTAL_API_CA_CERT",
                        format!("is not a PEM certificate: {e}"),
                    )
                })?;
                Some(pem)
            }
        };
        let wire = Wire::from_vars(&var)?;
        let min_chunk_size = number(&var, "PORTAL_MIN_CHUNK_BYTES")?
            .unwrap_or_else(|| DEFAULT_MIN_CHUNK_SIZE.min(wire.chunk_size));
        if min_chunk_size == 0 || min_chunk_size > wire.chunk_size {
            return Err(ConfigError::invalid(
                "PORTAL_MIN_CHUNK_BYTES",
                format!(
                    "must be between 1 and KAFKASEND_CHUNK_SIZE ({})",
                    wire.chunk_size
                ),
            ));
        }
        let reply_patterns = var("PORTAL_REPLY_TOPICS")
            .map_or_else(|| vec![wire.response_topic.clone()], |v| split_list(&v));
        let mut reply_topics = GlobSetBuilder::new();
        for pattern in &reply_patterns {
            reply_topics.add(Glob::new(pattern).map_err(|e| {
                ConfigError::invalid("PORTAL_REPLY_TOPICS", format!("{pattern:?}: {e}"))
            })?);
        }
        let reply_topics = reply_topics
            .build()
            .map_err(|e| ConfigError::invalid("PORTAL_REPLY_TOPICS", e.to_string()))?;
        if reply_topics.is_match(&wire.request_topic) {
            return Err(ConfigError::invalid(
                "PORTAL_REPLY_TOPICS",
                "must not match KAFKA_REQUEST_TOPIC: answers would be read as requests",
            ));
        }
        Ok(Self {
            api_base_url,
            api_ca_pem,
            policy,
            path_rules,
            reply_topics,
            min_chunk_size,
            first_chunk_timeout,
            job_timeout,
            job_max_age,
            job_idle_timeout,
            max_jobs,
            max_inflight_bytes,
            max_body_bytes,
            spool,
            oauth,
            wire,
            max_poll_interval_default,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<PortalConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        PortalConfig::from_vars(&|k| map.get(k).cloned())
    }

    const BASE: (&str, &str) = ("PORTAL_API_BASE_URL", "http://127.0.0.1:9000/api");
    const ENDPOINTS: (&str, &str) = ("PORTAL_ALLOWED_ENDPOINTS", "/v1/upload,/v1/documents/*");

    #[test]
    fn secure_defaults() {
        let c = load(&[BASE, ENDPOINTS]).unwrap();
        assert!(c.policy.strict());
        assert_eq!(c.job_timeout, Duration::from_secs(900));
        assert_eq!(c.job_max_age, Duration::from_secs(900));
        assert_eq!(c.max_poll_interval_default, Some(1_200_000));
        assert!(c.oauth.is_none());
        assert_eq!(c.wire.request_topic, "kafkasend-requests");
        assert_eq!(c.wire.response_topic, "kafkasend-responses");
        assert_eq!(c.wire.chunk_size, 650_000);
        assert!(c.reply_topics.is_match("kafkasend-responses"));
        assert!(!c.reply_topics.is_match("other-replies"));
        assert!(!c.path_rules.allow_non_ascii);
        assert_eq!(c.min_chunk_size, 4096);
        assert!(!c.policy.returns_response_header("Set-Cookie"));
        let c = load(&[
            BASE,
            ENDPOINTS,
            ("PORTAL_REPLY_TOPICS", "replies.*,kafkasend-responses"),
        ])
        .unwrap();
        assert!(c.reply_topics.is_match("replies.team-a"));
    }

    #[test]
    fn inconsistent_settings_are_refused_by_name() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[ENDPOINTS], "PORTAL_API_BASE_URL"),
            (
                &[("PORTAL_API_BASE_URL", "ftp://x"), ENDPOINTS],
                "PORTAL_API_BASE_URL",
            ),
            (
                &[("PORTAL_API_BASE_URL", "http://u:p@x"), ENDPOINTS],
                "PORTAL_API_BASE_URL",
            ),
            (&[BASE], "PORTAL_ALLOWED_ENDPOINTS"),
            (
                &[BASE, ENDPOINTS, ("KAFKA_MAX_POLL_INTERVAL_MS", "900000")],
                "KAFKA_MAX_POLL_INTERVAL_MS",
            ),
            (
                &[BASE, ENDPOINTS, ("KAFKASEND_CHUNK_SIZE", "900000")],
                "KAFKASEND_CHUNK_SIZE",
            ),
            (
                &[BASE, ENDPOINTS, ("KAFKA_MESSAGE_MAX_BYTES", "500000")],
                "KAFKASEND_CHUNK_SIZE",
            ),
            (
                &[BASE, ENDPOINTS, ("PORTAL_STRICT_SECURITY", "maybe")],
                "PORTAL_STRICT_SECURITY",
            ),
            (
                &[BASE, ENDPOINTS, ("PORTAL_JOB_TIMEOUT_SECONDS", "0")],
                "PORTAL_JOB_TIMEOUT_SECONDS",
            ),
            (
                &[BASE, ENDPOINTS, ("OAUTH2_TOKEN_URL", "http://t/token")],
                "OAUTH2_CLIENT_ID",
            ),
            (
                &[
                    BASE,
                    ENDPOINTS,
                    ("KAFKA_RESPONSE_TOPIC", "kafkasend-requests"),
                ],
                "KAFKA_RESPONSE_TOPIC",
            ),
            (
                &[BASE, ENDPOINTS, ("PORTAL_MAX_INFLIGHT_BYTES", "10")],
                "PORTAL_MAX_INFLIGHT_BYTES",
            ),
            (
                &[BASE, ("PORTAL_ALLOWED_ENDPOINTS", "no-slash")],
                "PORTAL_ALLOWED_ENDPOINTS",
            ),
            (
                &[BASE, ("PORTAL_ALLOWED_ENDPOINTS", "TRACE /v1/x")],
                "PORTAL_ALLOWED_ENDPOINTS",
            ),
            (
                &[BASE, ENDPOINTS, ("PORTAL_REPLY_TOPICS", "kafkasend-*")],
                "PORTAL_REPLY_TOPICS",
            ),
            (
                &[BASE, ENDPOINTS, ("PORTAL_MIN_CHUNK_BYTES", "0")],
                "PORTAL_MIN_CHUNK_BYTES",
            ),
            (
                &[BASE, ENDPOINTS, ("PORTAL_ALLOW_NON_ASCII_PATHS", "maybe")],
                "PORTAL_ALLOW_NON_ASCII_PATHS",
            ),
        ];
        for (vars, variable) in cases {
            let e = load(vars).unwrap_err();
            assert_eq!(e.variable, *variable, "{vars:?}: {e}");
        }
        // A poll interval above the job timeout is kept as given.
        let c = load(&[BASE, ENDPOINTS, ("KAFKA_MAX_POLL_INTERVAL_MS", "1200000")]).unwrap();
        assert_eq!(c.max_poll_interval_default, None);
        // Permissive mode may leave the endpoint list empty (every endpoint allowed).
        load(&[BASE, ("PORTAL_STRICT_SECURITY", "false")]).unwrap();
    }
}
