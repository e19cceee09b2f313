//! A Schema Registry client with a cache, over the registry's REST API.
//!
//! It uses the calls every Confluent-compatible registry serves (Confluent Schema Registry,
//! Karapace, Redpanda's built-in registry, Apicurio Registry's `/apis/ccompat/v7` API):
//! `POST /subjects/{subject}/versions` (register), `POST /subjects/{subject}` (look up),
//! `GET /schemas/ids/{id}` and `GET /subjects/{subject}/versions/latest`.
//!
//! Schemas never change once registered, so answers are cached for the life of the client:
//! after the first record of each schema, encoding and decoding make no request. Parsed Avro
//! schemas and compiled JSON Schemas are cached by id too.

mod error;
mod settings;

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::json;

pub use error::RegistryError;
pub use settings::RegistrySettings;

use crate::{AvroSchema, JsonSchema, SchemaError, SchemaId};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
const ACCEPT: &str =
    "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json; qs=0.9, application/json; qs=0.5";

/// The schema languages this crate encodes and decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaType {
    /// Apache Avro (the registry's default type, sent without `schemaType`).
    Avro,
    /// JSON Schema (`schemaType: "JSON"`).
    Json,
}

impl SchemaType {
    fn from_registry(name: Option<&str>) -> Result<Self, String> {
        match name.unwrap_or("AVRO") {
            "AVRO" => Ok(Self::Avro),
            "JSON" => Ok(Self::Json),
            other => Err(format!(
                "schema type {other} is not supported (AVRO and JSON are)"
            )),
        }
    }
}

/// A schema as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredSchema {
    /// Its global id, the one in the wire format.
    pub id: SchemaId,
    /// Its language.
    pub schema_type: SchemaType,
    /// Its text.
    pub schema: String,
}

/// A subject's version, as `GET /subjects/{subject}/versions/{version}` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectVersion {
    /// The subject.
    pub subject: String,
    /// The version within the subject, from 1.
    pub version: u32,
    /// The schema.
    pub schema: RegisteredSchema,
}

#[derive(Default)]
struct Cache {
    by_id: HashMap<SchemaId, RegisteredSchema>,
    ids: HashMap<(String, SchemaType, String), SchemaId>,
    avro: HashMap<SchemaId, AvroSchema>,
    json: HashMap<SchemaId, JsonSchema>,
}

/// A client for one registry (or several URLs of one), shared by every partition of a kernel.
pub struct RegistryClient {
    http: reqwest::Client,
    urls: Vec<reqwest::Url>,
    settings: RegistrySettings,
    cache: Mutex<Cache>,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("urls", &self.settings.urls)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct IdBody {
    id: SchemaId,
}

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

#[derive(Deserialize)]
struct VersionBody {
    subject: String,
    version: u32,
    id: SchemaId,
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: Option<i64>,
    message: Option<String>,
}

/// An answer other than 2xx, before it is given a meaning for the call.
struct Refusal {
    status: u16,
    code: Option<i64>,
    message: String,
}

impl RegistryClient {
    /// A client for `settings`. Fails only on TLS material the HTTP client refuses.
    pub fn new(settings: RegistrySettings) -> Result<Self, RegistryError> {
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout);
        if let Some(pem) = &settings.ca_pem {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem.expose().as_bytes()).map_err(|e| {
                    RegistryError::Unreachable {
                        url: settings.urls.join(","),
                        reason: format!("CA certificates refused: {e}"),
                    }
                })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| RegistryError::Unreachable {
            url: settings.urls.join(","),
            reason: format!("cannot build the HTTP client: {e}"),
        })?;
        let mut urls = Vec::new();
        for url in &settings.urls {
            // A base URL with a path (Apicurio's /apis/ccompat/v7) must end with '/' for joins.
            let with_slash = if url.ends_with('/') {
                url.clone()
            } else {
                format!("{url}/")
            };
            urls.push(reqwest::Url::parse(&with_slash).map_err(|e| {
                RegistryError::Unreachable {
                    url: url.clone(),
                    reason: format!("not a URL: {e}"),
                }
            })?);
        }
        if urls.is_empty() {
            return Err(RegistryError::Unreachable {
                url: String::new(),
                reason: "no registry URL configured".into(),
            });
        }
        Ok(Self {
            http,
            urls,
            settings,
            cache: Mutex::new(Cache::default()),
        })
    }

    /// A client configured by the `SCHEMA_REGISTRY_*` variables (see
    /// [`RegistrySettings::from_vars`]). Fails, naming the variable, when
    /// `SCHEMA_REGISTRY_URL` is unset or a setting is invalid.
    pub fn from_env() -> Result<Self, clustera::config::ConfigError> {
        use clustera::config::ConfigError;
        let settings = RegistrySettings::from_env()?.ok_or_else(|| {
            ConfigError::invalid(
                "SCHEMA_REGISTRY_URL",
                "missing: set it to the registry's base URL",
            )
        })?;
        let variable = if settings.ca_pem.is_some() {
            "SCHEMA_REGISTRY_CA_CERT"
        } else {
            "SCHEMA_REGISTRY_URL"
        };
        Self::new(settings).map_err(|e| ConfigError::invalid(variable, e.to_string()))
    }

    /// The settings the client was built with.
    pub fn settings(&self) -> &RegistrySettings {
        &self.settings
    }

    /// Registers `schema` under `subject` (or finds it there) and returns its id.
    pub async fn register(
        &self,
        subject: &str,
        schema_type: SchemaType,
        schema: &str,
    ) -> Result<SchemaId, RegistryError> {
        if let Some(id) = self.cached_id(subject, schema_type, schema) {
            return Ok(id);
        }
        let call = format!("POST /subjects/{subject}/versions");
        let path = format!("subjects/{}/versions", encode_segment(subject));
        let body = self
            .send(
                &call,
                reqwest::Method::POST,
                &path,
                Some(request(schema_type, schema)),
            )
            .await?
            .map_err(|r| match r.status {
                409 => RegistryError::Incompatible {
                    subject: subject.to_owned(),
                    message: r.message,
                },
                422 => RegistryError::InvalidSchema {
                    subject: subject.to_owned(),
                    message: r.message,
                },
                _ => refusal_error(&call, r),
            })?;
        let id = parse::<IdBody>(&call, body)?.id;
        self.remember(subject, schema_type, schema, id);
        Ok(id)
    }

    /// The id of `schema` under `subject`, without registering it.
    pub async fn lookup(
        &self,
        subject: &str,
        schema_type: SchemaType,
        schema: &str,
    ) -> Result<SchemaId, RegistryError> {
        if let Some(id) = self.cached_id(subject, schema_type, schema) {
            return Ok(id);
        }
        let call = format!("POST /subjects/{subject}");
        let path = format!("subjects/{}", encode_segment(subject));
        let body = self
            .send(
                &call,
                reqwest::Method::POST,
                &path,
                Some(request(schema_type, schema)),
            )
            .await?
            .map_err(|r| match r.status {
                404 => RegistryError::NotRegistered {
                    subject: subject.to_owned(),
                    message: r.message,
                },
                _ => refusal_error(&call, r),
            })?;
        let id = parse::<IdBody>(&call, body)?.id;
        self.remember(subject, schema_type, schema, id);
        Ok(id)
    }

    /// The schema with this id.
    pub async fn schema_by_id(&self, id: SchemaId) -> Result<RegisteredSchema, RegistryError> {
        if let Some(found) = self.lock().by_id.get(&id) {
            return Ok(found.clone());
        }
        let call = format!("GET /schemas/ids/{id}");
        let body = self
            .send(
                &call,
                reqwest::Method::GET,
                &format!("schemas/ids/{id}"),
                None,
            )
            .await?
            .map_err(|r| match (r.status, r.code) {
                (404, Some(40403) | None) => RegistryError::UnknownId(id),
                _ => refusal_error(&call, r),
            })?;
        let body = parse::<SchemaBody>(&call, body)?;
        let schema_type = SchemaType::from_registry(body.schema_type.as_deref()).map_err(|e| {
            RegistryError::Schema {
                id,
                source: SchemaError::Schema(e),
            }
        })?;
        let found = RegisteredSchema {
            id,
            schema_type,
            schema: body.schema,
        };
        self.lock().by_id.insert(id, found.clone());
        Ok(found)
    }

    /// The latest version registered under `subject`. Not cached: it changes.
    pub async fn latest(&self, subject: &str) -> Result<SubjectVersion, RegistryError> {
        let call = format!("GET /subjects/{subject}/versions/latest");
        let path = format!("subjects/{}/versions/latest", encode_segment(subject));
        let body = self
            .send(&call, reqwest::Method::GET, &path, None)
            .await?
            .map_err(|r| match r.status {
                404 => RegistryError::NotRegistered {
                    subject: subject.to_owned(),
                    message: r.message,
                },
                _ => refusal_error(&call, r),
            })?;
        let body = parse::<VersionBody>(&call, body)?;
        let schema_type = SchemaType::from_registry(body.schema_type.as_deref()).map_err(|e| {
            RegistryError::Schema {
                id: body.id,
                source: SchemaError::Schema(e),
            }
        })?;
        Ok(SubjectVersion {
            subject: body.subject,
            version: body.version,
            schema: RegisteredSchema {
                id: body.id,
                schema_type,
                schema: body.schema,
            },
        })
    }

    /// The Avro schema with this id, parsed once.
    pub async fn avro_schema(&self, id: SchemaId) -> Result<AvroSchema, RegistryError> {
        if let Some(schema) = self.lock().avro.get(&id) {
            return Ok(schema.clone());
        }
        let found = self.schema_by_id(id).await?;
        if found.schema_type != SchemaType::Avro {
            return Err(RegistryError::Schema {
                id,
                source: SchemaError::Schema(format!(
                    "is a {:?} schema, and this codec reads Avro",
                    found.schema_type
                )),
            });
        }
        let parsed = AvroSchema::parse(&found.schema)
            .map_err(|source| RegistryError::Schema { id, source })?;
        self.lock().avro.insert(id, parsed.clone());
        Ok(parsed)
    }

    /// The JSON Schema with this id, compiled once.
    pub async fn json_schema(&self, id: SchemaId) -> Result<JsonSchema, RegistryError> {
        if let Some(schema) = self.lock().json.get(&id) {
            return Ok(schema.clone());
        }
        let found = self.schema_by_id(id).await?;
        if found.schema_type != SchemaType::Json {
            return Err(RegistryError::Schema {
                id,
                source: SchemaError::Schema(format!(
                    "is a {:?} schema, and this codec reads JSON Schema",
                    found.schema_type
                )),
            });
        }
        let compiled = JsonSchema::parse(&found.schema)
            .map_err(|source| RegistryError::Schema { id, source })?;
        self.lock().json.insert(id, compiled.clone());
        Ok(compiled)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // The cache holds no invariant a panic could break halfway: keep using it.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached_id(&self, subject: &str, schema_type: SchemaType, schema: &str) -> Option<SchemaId> {
        self.lock()
            .ids
            .get(&(subject.to_owned(), schema_type, schema.to_owned()))
            .copied()
    }

    fn remember(&self, subject: &str, schema_type: SchemaType, schema: &str, id: SchemaId) {
        let mut cache = self.lock();
        cache
            .ids
            .insert((subject.to_owned(), schema_type, schema.to_owned()), id);
        cache.by_id.entry(id).or_insert_with(|| RegisteredSchema {
            id,
            schema_type,
            schema: schema.to_owned(),
        });
    }

    /// Sends one call, trying each URL in turn while they cannot be reached. The outer error
    /// is transport; the inner `Err` is the registry's refusal, for the caller to name.
    async fn send(
        &self,
        call: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Result<bytes::Bytes, Refusal>, RegistryError> {
        let mut last = None;
        for base in &self.urls {
            let url = base.join(path).map_err(|e| RegistryError::BadResponse {
                call: call.to_owned(),
                reason: format!("cannot build the URL: {e}"),
            })?;
            let mut req = self
                .http
                .request(method.clone(), url)
                .header(reqwest::header::ACCEPT, ACCEPT);
            if let Some((user, password)) = &self.settings.basic_auth {
                req = req.basic_auth(user, Some(password.expose()));
            }
            if let Some(body) = &body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                    .body(body.to_string());
            }
            let response = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(url = %base, error = %error_text(&e), "schema registry unreachable");
                    last = Some(RegistryError::Unreachable {
                        url: base.to_string(),
                        reason: error_text(&e),
                    });
                    continue;
                }
            };
            let status = response.status();
            let bytes = match response.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    last = Some(RegistryError::Unreachable {
                        url: base.to_string(),
                        reason: format!("connection lost reading the answer: {}", error_text(&e)),
                    });
                    continue;
                }
            };
            if status.is_success() {
                return Ok(Ok(bytes));
            }
            let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(b) => (
                    b.error_code,
                    b.message
                        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned()),
                ),
                Err(_) => (None, truncate(&String::from_utf8_lossy(&bytes))),
            };
            return Ok(Err(Refusal {
                status: status.as_u16(),
                code,
                message,
            }));
        }
        Err(last.unwrap_or_else(|| RegistryError::Unreachable {
            url: String::new(),
            reason: "no registry URL configured".into(),
        }))
    }
}

fn request(schema_type: SchemaType, schema: &str) -> serde_json::Value {
    match schema_type {
        SchemaType::Avro => json!({ "schema": schema }),
        SchemaType::Json => json!({ "schema": schema, "schemaType": "JSON" }),
    }
}

fn refusal_error(call: &str, r: Refusal) -> RegistryError {
    match r.status {
        401 | 403 => RegistryError::Unauthorized {
            status: r.status,
            message: r.message,
        },
        500..=599 => RegistryError::Server {
            status: r.status,
            message: r.message,
        },
        _ => RegistryError::Unexpected {
            call: call.to_owned(),
            status: r.status,
            message: r.message,
        },
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    call: &str,
    body: bytes::Bytes,
) -> Result<T, RegistryError> {
    serde_json::from_slice(&body).map_err(|e| RegistryError::BadResponse {
        call: call.to_owned(),
        reason: format!("{e}: {}", truncate(&String::from_utf8_lossy(&body))),
    })
}

/// A path segment with everything but unreserved characters percent-encoded: subjects may
/// hold `/`, `:` or spaces.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn error_text(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn truncate(s: &str) -> String {
    const MAX: usize = 300;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_percent_encoded() {
        assert_eq!(encode_segment("orders-value"), "orders-value");
        assert_eq!(encode_segment("a/b c:d"), "a%2Fb%20c%3Ad");
    }

    #[test]
    fn schema_types_follow_the_api() {
        assert_eq!(SchemaType::from_registry(None), Ok(SchemaType::Avro));
        assert_eq!(
            SchemaType::from_registry(Some("JSON")),
            Ok(SchemaType::Json)
        );
        assert!(SchemaType::from_registry(Some("PROTOBUF"))
            .unwrap_err()
            .contains("PROTOBUF"));
        assert_eq!(request(SchemaType::Avro, "x"), json!({"schema": "x"}));
    }

    #[test]
    fn retriable_errors_are_the_registry_being_down() {
        let down = RegistryError::Unreachable {
            url: "http://r/".into(),
            reason: "refused".into(),
        };
        assert!(down.is_retriable());
        assert!(RegistryError::Server {
            status: 503,
            message: String::new()
        }
        .is_retriable());
        assert!(!RegistryError::UnknownId(9).is_retriable());
        assert!(!RegistryError::Incompatible {
            subject: "s".into(),
            message: String::new()
        }
        .is_retriable());
    }
}
