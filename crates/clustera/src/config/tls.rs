//! Certificates from base64-encoded PEM environment variables, kept in memory.

use base64::Engine;

use super::{ConfigError, Secret};

/// TLS material for the broker connection, handed to librdkafka as in-memory PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// CA certificates that sign the brokers' certificates (`ssl.ca.pem`).
    pub ca_pem: Option<Secret>,
    /// The client certificate chain for mutual TLS (`ssl.certificate.pem`).
    pub client_cert_pem: Option<Secret>,
    /// The client's private key (`ssl.key.pem`).
    pub client_key_pem: Option<Secret>,
}

impl TlsConfig {
    /// Reads `KAFKA_CA_CERT`, `KAFKA_CLIENT_CERT` and `KAFKA_CLIENT_KEY`. `None` when none is set.
    pub(super) fn from_vars(
        var: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let ca = decode_pem(var, "KAFKA_CA_CERT", PemKind::Certificate)?;
        let cert = decode_pem(var, "KAFKA_CLIENT_CERT", PemKind::Certificate)?;
        let key = decode_pem(var, "KAFKA_CLIENT_KEY", PemKind::PrivateKey)?;
        match (&cert, &key) {
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    "KAFKA_CLIENT_KEY",
                    "missing: KAFKA_CLIENT_CERT is set, and a client certificate needs its key",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "KAFKA_CLIENT_CERT",
                    "missing: KAFKA_CLIENT_KEY is set, and a client key needs its certificate",
                ))
            }
            _ => {}
        }
        if ca.is_none() && cert.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            ca_pem: ca,
            client_cert_pem: cert,
            client_key_pem: key,
        }))
    }
}

#[derive(Clone, Copy)]
enum PemKind {
    Certificate,
    PrivateKey,
}

fn decode_pem(
    var: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
    kind: PemKind,
) -> Result<Option<Secret>, ConfigError> {
    let Some(raw) = var(name) else {
        return Ok(None);
    };
    // Values pasted from files often carry line breaks; base64 itself has none.
    let compact: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        return Ok(None);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| ConfigError::invalid(name, format!("not valid base64 ({e})")))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ConfigError::invalid(name, "decodes to binary, not to PEM text"))?;
    let blocks = pem::parse_many(text.as_bytes())
        .map_err(|e| ConfigError::invalid(name, format!("not valid PEM ({e})")))?;
    if blocks.is_empty() {
        return Err(ConfigError::invalid(
            name,
            "decodes to text with no PEM block (expected -----BEGIN ...-----)",
        ));
    }
    let ok = match kind {
        PemKind::Certificate => blocks.iter().all(|b| b.tag() == "CERTIFICATE"),
        PemKind::PrivateKey => {
            blocks.len() == 1 && blocks.iter().all(|b| b.tag().ends_with("PRIVATE KEY"))
        }
    };
    if !ok {
        let tags: Vec<&str> = blocks.iter().map(|b| b.tag()).collect();
        let expected = match kind {
            PemKind::Certificate => "CERTIFICATE blocks",
            PemKind::PrivateKey => "one PRIVATE KEY block",
        };
        return Err(ConfigError::invalid(
            name,
            format!("is PEM with {tags:?}, expected {expected}"),
        ));
    }
    Ok(Some(Secret::new(text)))
}
