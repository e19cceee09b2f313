//! Where the registry is and how to reach it, from the environment.

use std::time::Duration;

use base64::Engine;
use clustera::config::{ConfigError, Secret};
use clustera::infra::env::{self, Vars};

use crate::SubjectNameStrategy;

/// How a [`RegistryClient`](super::RegistryClient) reaches the registry, and how codecs use it.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// One or more base URLs; the next is tried when one cannot be reached.
    pub urls: Vec<String>,
    /// HTTP basic auth: user name and password (Confluent Cloud: API key and secret).
    pub basic_auth: Option<(String, Secret)>,
    /// PEM certificates to trust besides the system's, for a registry behind a private CA.
    pub ca_pem: Option<Secret>,
    /// How long one request may take, connecting included.
    pub timeout: Duration,
    /// The subject name strategy of codecs built from these settings.
    pub subject_strategy: SubjectNameStrategy,
    /// Whether producing registers the schema when the subject does not have it yet (as
    /// Confluent's serializers' `auto.register.schemas`, on by default), or only looks it up.
    pub auto_register: bool,
}

impl RegistrySettings {
    /// Settings for `url`, with no auth, the default timeout (10 s), the topic strategy and
    /// auto-registration.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            urls: vec![url.into()],
            basic_auth: None,
            ca_pem: None,
            timeout: Duration::from_secs(10),
            subject_strategy: SubjectNameStrategy::Topic,
            auto_register: true,
        }
    }

    /// Reads the settings from the process environment (and `.env`); `None` when
    /// `SCHEMA_REGISTRY_URL` is unset. See [`RegistrySettings::from_vars`].
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        env::load_dotenv()?;
        Self::from_vars(&env::env_var)
    }

    /// Reads:
    ///
    /// | variable | meaning |
    /// | --- | --- |
    /// | `SCHEMA_REGISTRY_URL` | base URL, or several separated by commas |
    /// | `SCHEMA_REGISTRY_USERNAME`, `SCHEMA_REGISTRY_PASSWORD` | basic auth |
    /// | `SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO` | basic auth as `user:password` (Confluent's `basic.auth.user.info`) |
    /// | `SCHEMA_REGISTRY_CA_CERT` | base64 of PEM CA certificates (as `KAFKA_CA_CERT`) |
    /// | `SCHEMA_REGISTRY_CA_LOCATION` | a PEM CA file (Confluent's `ssl.ca.location`) |
    /// | `SCHEMA_REGISTRY_TIMEOUT_MS` | per request, default 10000 |
    /// | `SCHEMA_REGISTRY_SUBJECT_NAME_STRATEGY` | `topic` (default), `record`, `topic-record` |
    /// | `SCHEMA_REGISTRY_AUTO_REGISTER` | register on produce (default true) or only look up |
    pub fn from_vars(var: Vars<'_>) -> Result<Option<Self>, ConfigError> {
        let Some(url_list) = var("SCHEMA_REGISTRY_URL").filter(|v| !v.trim().is_empty()) else {
            return Ok(None);
        };
        let urls = env::split_list(&url_list);
        for url in &urls {
            let parsed = reqwest::Url::parse(url).map_err(|e| {
                ConfigError::invalid("SCHEMA_REGISTRY_URL", format!("{url:?} is not a URL ({e})"))
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ConfigError::invalid(
                    "SCHEMA_REGISTRY_URL",
                    format!("{url:?}: expected an http:// or https:// URL"),
                ));
            }
        }
        let mut settings = Self::new(String::new());
        settings.urls = urls;
        settings.basic_auth = basic_auth(var)?;
        settings.ca_pem = ca_pem(var)?;
        if let Some(ms) = env::number::<u64>(var, "SCHEMA_REGISTRY_TIMEOUT_MS")? {
            if ms == 0 {
                return Err(ConfigError::invalid(
                    "SCHEMA_REGISTRY_TIMEOUT_MS",
                    "must be at least 1",
                ));
            }
            settings.timeout = Duration::from_millis(ms);
        }
        if let Some(s) = var("SCHEMA_REGISTRY_SUBJECT_NAME_STRATEGY").filter(|v| !v.is_empty()) {
            settings.subject_strategy = s.parse().map_err(|e: crate::SchemaError| {
                ConfigError::invalid("SCHEMA_REGISTRY_SUBJECT_NAME_STRATEGY", e.to_string())
            })?;
        }
        if let Some(on) = env::flag(var, "SCHEMA_REGISTRY_AUTO_REGISTER")? {
            settings.auto_register = on;
        }
        Ok(Some(settings))
    }
}

fn basic_auth(var: Vars<'_>) -> Result<Option<(String, Secret)>, ConfigError> {
    let user = var("SCHEMA_REGISTRY_USERNAME").filter(|v| !v.is_empty());
    let password = var("SCHEMA_REGISTRY_PASSWORD").filter(|v| !v.is_empty());
    let info = var("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO").filter(|v| !v.is_empty());
    match (user, password, info) {
        (None, None, None) => Ok(None),
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => Err(ConfigError::invalid(
            "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO",
            "set either it or SCHEMA_REGISTRY_USERNAME and SCHEMA_REGISTRY_PASSWORD, not both",
        )),
        (None, None, Some(info)) => match info.split_once(':') {
            Some((user, password)) if !user.is_empty() => {
                Ok(Some((user.to_owned(), Secret::new(password))))
            }
            _ => Err(ConfigError::invalid(
                "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO",
                "expected user:password",
            )),
        },
        (Some(user), Some(password), None) => Ok(Some((user, Secret::new(password)))),
        (Some(_), None, None) => Err(ConfigError::invalid(
            "SCHEMA_REGISTRY_PASSWORD",
            "missing: SCHEMA_REGISTRY_USERNAME is set",
        )),
        (None, Some(_), None) => Err(ConfigError::invalid(
            "SCHEMA_REGISTRY_USERNAME",
            "missing: SCHEMA_REGISTRY_PASSWORD is set",
        )),
    }
}

fn ca_pem(var: Vars<'_>) -> Result<Option<Secret>, ConfigError> {
    let inline = var("SCHEMA_REGISTRY_CA_CERT").filter(|v| !v.trim().is_empty());
    let file = var("SCHEMA_REGISTRY_CA_LOCATION").filter(|v| !v.trim().is_empty());
    let (name, text) = match (inline, file) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                "SCHEMA_REGISTRY_CA_LOCATION",
                "set either it or SCHEMA_REGISTRY_CA_CERT, not both",
            ))
        }
        (Some(b64), None) => {
            let compact: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact.as_bytes())
                .map_err(|e| {
                    ConfigError::invalid(
                        "SCHEMA_REGISTRY_CA_CERT",
                        format!("not valid base64 ({e})"),
                    )
                })?;
            let text = String::from_utf8(bytes).map_err(|_| {
                ConfigError::invalid(
                    "SCHEMA_REGISTRY_CA_CERT",
                    "decodes to binary, not to PEM text",
                )
            })?;
            ("SCHEMA_REGISTRY_CA_CERT", text)
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::invalid(
                    "SCHEMA_REGISTRY_CA_LOCATION",
                    format!("cannot read {path}: {e}"),
                )
            })?;
            ("SCHEMA_REGISTRY_CA_LOCATION", text)
        }
    };
    match reqwest::Certificate::from_pem_bundle(text.as_bytes()) {
        Ok(certs) if !certs.is_empty() => Ok(Some(Secret::new(text))),
        Ok(_) => Err(ConfigError::invalid(name, "holds no PEM certificate")),
        Err(e) => Err(ConfigError::invalid(
            name,
            format!("not PEM certificates ({e})"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(pairs: &[(&str, &str)]) -> Result<Option<RegistrySettings>, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        RegistrySettings::from_vars(&|k| map.get(k).cloned())
    }

    #[test]
    fn unset_means_no_registry() {
        assert!(read(&[]).unwrap().is_none());
    }

    #[test]
    fn reads_every_setting() {
        let s = read(&[
            ("SCHEMA_REGISTRY_URL", "http://a:8081, https://b:8081"),
            ("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "key:se:cret"),
            ("SCHEMA_REGISTRY_TIMEOUT_MS", "2500"),
            (
                "SCHEMA_REGISTRY_SUBJECT_NAME_STRATEGY",
                "TopicRecordNameStrategy",
            ),
            ("SCHEMA_REGISTRY_AUTO_REGISTER", "false"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.urls, ["http://a:8081", "https://b:8081"]);
        let (user, password) = s.basic_auth.clone().unwrap();
        assert_eq!((user.as_str(), password.expose()), ("key", "se:cret"));
        assert_eq!(s.timeout, Duration::from_millis(2500));
        assert_eq!(s.subject_strategy, SubjectNameStrategy::TopicRecord);
        assert!(!s.auto_register);
        assert!(
            !format!("{s:?}").contains("se:cret"),
            "the password never shows"
        );
        let s = read(&[
            ("SCHEMA_REGISTRY_URL", "http://a"),
            ("SCHEMA_REGISTRY_USERNAME", "u"),
            ("SCHEMA_REGISTRY_PASSWORD", "p"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.basic_auth.unwrap().0, "u");
    }

    #[test]
    fn bad_settings_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("SCHEMA_REGISTRY_URL", "registry:8081")],
                "SCHEMA_REGISTRY_URL",
            ),
            (&[("SCHEMA_REGISTRY_URL", "ftp://r")], "SCHEMA_REGISTRY_URL"),
            (
                &[
                    ("SCHEMA_REGISTRY_URL", "http://r"),
                    ("SCHEMA_REGISTRY_USERNAME", "u"),
                ],
                "SCHEMA_REGISTRY_PASSWORD",
            ),
            (
                &[
                    ("SCHEMA_REGISTRY_URL", "http://r"),
                    ("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "nocolon"),
                ],
                "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO",
            ),
            (
                &[
                    ("SCHEMA_REGISTRY_URL", "http://r"),
                    ("SCHEMA_REGISTRY_CA_CERT", "!!"),
                ],
                "SCHEMA_REGISTRY_CA_CERT",
            ),
            (
                // base64 of "hello": not PEM.
                &[
                    ("SCHEMA_REGISTRY_URL", "http://r"),
                    ("SCHEMA_REGISTRY_CA_CERT", "aGVsbG8="),
                ],
                "SCHEMA_REGISTRY_CA_CERT",
            ),
            (
                &[
                    ("SCHEMA_REGISTRY_URL", "http://r"),
                    ("SCHEMA_REGISTRY_CA_LOCATION", "/no/ca.pem"),
                ],
                "SCHEMA_REGISTRY_CA_LOCATION",
            ),
            (
                &[
                    ("SCHEMA_REGISTRY_URL", "http://r"),
                    ("SCHEMA_REGISTRY_TIMEOUT_MS", "0"),
                ],
                "SCHEMA_REGISTRY_TIMEOUT_MS",
            ),
            (
                &[
                    ("SCHEMA_REGISTRY_URL", "http://r"),
                    ("SCHEMA_REGISTRY_SUBJECT_NAME_STRATEGY", "by-color"),
                ],
                "SCHEMA_REGISTRY_SUBJECT_NAME_STRATEGY",
            ),
        ];
        for (pairs, variable) in cases {
            let err = read(pairs).unwrap_err();
            assert_eq!(&err.variable, variable, "{pairs:?}: {err}");
        }
    }
}
