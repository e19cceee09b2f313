//! Certificates from base64-encoded PEM environment variables, or from PEM files named by
//! `<VARIABLE>_FILE` (a mounted Secret), kept in memory.

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
    /// Reads `KAFKA_CA_CERT`, `KAFKA_CLIENT_CERT` and `KAFKA_CLIENT_KEY` (base64 PEM), or
    /// `KAFKA_CA_CERT_FILE`, `KAFKA_CLIENT_CERT_FILE` and `KAFKA_CLIENT_KEY_FILE` (paths of PEM
    /// files). `None` when none is set.
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

/// The PEM text of `name` (base64) or of the file `name_FILE` names; both set is an error.
fn decode_pem(
    var: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
    kind: PemKind,
) -> Result<Option<Secret>, ConfigError> {
    let file_variable = format!("{name}_FILE");
    let inline = var(name).filter(|v| !v.trim().is_empty());
    let file = var(&file_variable).filter(|v| !v.trim().is_empty());
    let (variable, text) = match (inline, file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                name,
                format!("set either {name} (base64) or {file_variable} (a file), not both"),
            ))
        }
        (None, None) => return Ok(None),
        (Some(raw), None) => (name.to_owned(), from_base64(name, &raw)?),
        (None, Some(path)) => {
            let path = path.trim();
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::invalid(&file_variable, format!("cannot read {path}: {e}"))
            })?;
            (file_variable, text)
        }
    };
    check_pem(&variable, text, kind).map(Some)
}

fn from_base64(name: &str, raw: &str) -> Result<String, ConfigError> {
    // Values pasted from files often carry line breaks; base64 itself has none.
    let compact: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| ConfigError::invalid(name, format!("not valid base64 ({e})")))?;
    String::from_utf8(bytes)
        .map_err(|_| ConfigError::invalid(name, "decodes to binary, not to PEM text"))
}

/// `text` if it holds the PEM blocks `kind` needs; the error names `name`.
fn check_pem(name: &str, text: String, kind: PemKind) -> Result<Secret, ConfigError> {
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
    Ok(Secret::new(text))
}
