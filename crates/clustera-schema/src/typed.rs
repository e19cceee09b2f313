//! Typed events for kernels: an [`EventCodec`] decodes and validates a message into a serde
//! type and encodes outputs (validated before they are produced); [`Typed`] runs an
//! [`EventKernel`], which receives events already decoded.
//!
//! Failures follow the runtime's rules ([`clustera::ErrorKind`]):
//!
//! | failure | kind | so |
//! | --- | --- | --- |
//! | bytes that do not decode, a value that breaks its schema or type, an unknown schema id | permanent | dead-lettered at once, the field path and reason in `clustera.error` |
//! | an output that breaks its schema, a schema the registry refuses (incompatible, invalid, not registered) | permanent | the input is dead-lettered; nothing is produced |
//! | the registry unreachable, 502/503/504, 401/403 | unavailable | retried for as long as it lasts, never dead-lettered |
//! | the registry failing otherwise (500) | transient | retried up to `CLUSTERA_MAX_ATTEMPTS` |

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use clustera::{Context, Kernel, KernelError, Message, Outcome, Record};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::registry::{RegistryClient, RegistryError, SchemaType};
use crate::{json, wire, AvroSchema, JsonSchema, SchemaError, SubjectNameStrategy};

/// How events of type `T` are carried on the wire.
pub struct EventCodec<T> {
    format: Format,
    strategy: SubjectNameStrategy,
    auto_register: bool,
    _type: PhantomData<fn() -> T>,
}

enum Format {
    Json(Option<JsonSchema>),
    RegistryJson {
        registry: Arc<RegistryClient>,
        schema: JsonSchema,
    },
    RegistryAvro {
        registry: Arc<RegistryClient>,
        schema: AvroSchema,
    },
}

impl<T> std::fmt::Debug for EventCodec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let format = match &self.format {
            Format::Json(None) => "json",
            Format::Json(Some(_)) => "json+schema",
            Format::RegistryJson { .. } => "registry json-schema",
            Format::RegistryAvro { .. } => "registry avro",
        };
        f.debug_struct("EventCodec")
            .field("type", &std::any::type_name::<T>())
            .field("format", &format)
            .field("subject_strategy", &self.strategy)
            .finish()
    }
}

impl<T> EventCodec<T> {
    fn with(format: Format, strategy: SubjectNameStrategy, auto_register: bool) -> Self {
        Self {
            format,
            strategy,
            auto_register,
            _type: PhantomData,
        }
    }

    /// Plain JSON, checked only by `T`'s own shape.
    pub fn json() -> Self {
        Self::with(Format::Json(None), SubjectNameStrategy::Topic, false)
    }

    /// Plain JSON validated against `schema` on the way in and on the way out.
    pub fn json_validated(schema: JsonSchema) -> Self {
        Self::with(
            Format::Json(Some(schema)),
            SubjectNameStrategy::Topic,
            false,
        )
    }

    /// JSON Schema through a registry, in the Confluent wire format. Outputs are validated
    /// against `schema` and framed with its id (registered, or looked up, under the subject
    /// of the registry settings' strategy); inputs are validated against the schema whose id
    /// they carry.
    pub fn registry_json(registry: Arc<RegistryClient>, schema: JsonSchema) -> Self {
        let (strategy, auto) = strategy_of(&registry);
        Self::with(Format::RegistryJson { registry, schema }, strategy, auto)
    }

    /// Avro through a registry, in the Confluent wire format. Outputs are written with
    /// `schema`; inputs are read with the writer's schema (by the id they carry) resolved to
    /// `schema`, so records written with older compatible versions decode into `T`.
    pub fn registry_avro(registry: Arc<RegistryClient>, schema: AvroSchema) -> Self {
        let (strategy, auto) = strategy_of(&registry);
        Self::with(Format::RegistryAvro { registry, schema }, strategy, auto)
    }

    /// Overrides the subject name strategy of the registry settings.
    pub fn subject_strategy(mut self, strategy: SubjectNameStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Overrides whether encoding registers the schema (`true`) or only looks it up.
    pub fn auto_register(mut self, on: bool) -> Self {
        self.auto_register = on;
        self
    }
}

fn strategy_of(registry: &RegistryClient) -> (SubjectNameStrategy, bool) {
    let s = registry.settings();
    (s.subject_strategy, s.auto_register)
}

impl<T: DeserializeOwned> EventCodec<T> {
    /// Decodes and validates the message's value.
    pub async fn decode(&self, message: &Message) -> Result<T, KernelError> {
        let bytes = message
            .value()
            .ok_or_else(|| KernelError::permanent("message has no value (tombstone)"))?;
        self.decode_bytes(bytes).await
    }

    /// Decodes and validates a value.
    pub async fn decode_bytes(&self, bytes: &[u8]) -> Result<T, KernelError> {
        match &self.format {
            Format::Json(schema) => json::decode(bytes, schema.as_ref()).map_err(poison),
            Format::RegistryJson { registry, .. } => {
                let framed = wire::decode(bytes).map_err(poison)?;
                let writer = registry
                    .json_schema(framed.schema_id)
                    .await
                    .map_err(registry_error)?;
                json::decode(framed.payload, Some(&writer)).map_err(poison)
            }
            Format::RegistryAvro { registry, schema } => {
                let framed = wire::decode(bytes).map_err(poison)?;
                let writer = registry
                    .avro_schema(framed.schema_id)
                    .await
                    .map_err(registry_error)?;
                writer.decode(framed.payload, Some(schema)).map_err(poison)
            }
        }
    }
}

impl<T: Serialize> EventCodec<T> {
    /// Encodes `event` for `topic`, validated against the schema first.
    pub async fn encode(&self, topic: &str, event: &T) -> Result<Vec<u8>, KernelError> {
        match &self.format {
            Format::Json(schema) => json::encode(event, schema.as_ref()).map_err(bad_output),
            Format::RegistryJson { registry, schema } => {
                let payload = json::encode(event, Some(schema)).map_err(bad_output)?;
                let subject = self
                    .strategy
                    .subject(topic, schema.title(), false)
                    .map_err(bad_output)?;
                let id = self
                    .schema_id(registry, &subject, SchemaType::Json, schema.text())
                    .await?;
                Ok(wire::encode(id, &payload))
            }
            Format::RegistryAvro { registry, schema } => {
                let payload = schema.encode(event).map_err(bad_output)?;
                let subject = self
                    .strategy
                    .subject(topic, schema.full_name().as_deref(), false)
                    .map_err(bad_output)?;
                let id = self
                    .schema_id(registry, &subject, SchemaType::Avro, schema.text())
                    .await?;
                Ok(wire::encode(id, &payload))
            }
        }
    }

    /// A record for `topic` holding `event`; set its key and headers as for any [`Record`].
    pub async fn record(&self, topic: &str, event: &T) -> Result<Record, KernelError> {
        Ok(Record::to(topic).value(self.encode(topic, event).await?))
    }

    async fn schema_id(
        &self,
        registry: &RegistryClient,
        subject: &str,
        schema_type: SchemaType,
        text: &str,
    ) -> Result<u32, KernelError> {
        let id = if self.auto_register {
            registry.register(subject, schema_type, text).await
        } else {
            registry.lookup(subject, schema_type, text).await
        };
        id.map_err(registry_error)
    }
}

/// A message that does not fit is a poison pill.
fn poison(e: SchemaError) -> KernelError {
    KernelError::permanent(e)
}

fn bad_output(e: SchemaError) -> KernelError {
    KernelError::permanent(format!("output event refused: {e}"))
}

/// Maps a registry failure onto the runtime's retry rules (see the module docs).
pub fn registry_error(e: RegistryError) -> KernelError {
    match &e {
        RegistryError::Unreachable { .. } | RegistryError::Unauthorized { .. } => {
            KernelError::unavailable(e)
        }
        RegistryError::Server {
            status: 502..=504, ..
        } => KernelError::unavailable(e),
        RegistryError::Server { .. } => KernelError::transient(e),
        _ => KernelError::permanent(e),
    }
}

/// A kernel that receives its input already decoded and validated. Run it with
/// [`Typed`]: `clustera::run(Typed(MyKernel { .. }))`.
pub trait EventKernel: Send + Sync + 'static {
    /// The input event type.
    type Event: DeserializeOwned + Send;

    /// As [`Kernel::name`].
    fn name(&self) -> &str;

    /// As [`Kernel::default_topics`].
    fn default_topics(&self) -> Vec<String>;

    /// How inputs are decoded.
    fn events(&self) -> &EventCodec<Self::Event>;

    /// Processes one decoded event; `message` is the record it came from (key, headers,
    /// offset). As [`Kernel::process`] otherwise.
    fn handle(
        &self,
        event: Self::Event,
        message: &Message,
        ctx: &mut Context,
    ) -> impl Future<Output = Result<Outcome, KernelError>> + Send;

    /// As [`Kernel::register_metrics`].
    fn register_metrics(&self, _registry: &mut clustera::prometheus_client::registry::Registry) {}
}

/// Runs an [`EventKernel`] as a [`Kernel`]: each message is decoded with
/// [`EventKernel::events`] first; one that does not decode is dead-lettered with the reason
/// and never reaches [`EventKernel::handle`].
#[derive(Debug)]
pub struct Typed<K>(pub K);

impl<K: EventKernel> Kernel for Typed<K> {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn default_topics(&self) -> Vec<String> {
        self.0.default_topics()
    }

    async fn process(&self, message: &Message, ctx: &mut Context) -> Result<Outcome, KernelError> {
        let event = self.0.events().decode(message).await?;
        self.0.handle(event, message, ctx).await
    }

    fn register_metrics(&self, registry: &mut clustera::prometheus_client::registry::Registry) {
        self.0.register_metrics(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clustera::testing::TestDriver;
    use clustera::ErrorKind;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Ping {
        n: u32,
    }

    struct Doubler {
        events: EventCodec<Ping>,
    }

    impl EventKernel for Doubler {
        type Event = Ping;
        fn name(&self) -> &str {
            "doubler"
        }
        fn default_topics(&self) -> Vec<String> {
            vec!["pings".into()]
        }
        fn events(&self) -> &EventCodec<Ping> {
            &self.events
        }
        async fn handle(
            &self,
            p: Ping,
            _m: &Message,
            ctx: &mut Context,
        ) -> Result<Outcome, KernelError> {
            ctx.send(self.events.record("doubled", &Ping { n: p.n * 2 }).await?);
            Ok(Outcome::Ack)
        }
    }

    fn schema() -> JsonSchema {
        JsonSchema::parse(r#"{"type":"object","required":["n"],"properties":{"n":{"type":"integer","maximum":100}}}"#)
            .unwrap()
    }

    #[tokio::test]
    async fn typed_kernel_decodes_validates_and_dead_letters_with_the_path() {
        let mut driver = TestDriver::new(Typed(Doubler {
            events: EventCodec::json_validated(schema()),
        }));
        let run = driver.process_value(None, br#"{"n": 21}"#).await;
        assert_eq!(run.outcome, Outcome::Ack);
        assert_eq!(run.outputs.len(), 1);
        assert_eq!(run.outputs[0].value.as_deref(), Some(&br#"{"n":42}"#[..]));

        let run = driver.process_value(None, br#"{"n": 101}"#).await;
        let Outcome::DeadLetter(reason) = &run.outcome else {
            panic!("{:?}", run.outcome)
        };
        assert!(
            reason.contains("at /n: 101 is greater than the maximum of 100"),
            "{reason}"
        );
        assert!(run.outputs.is_empty());

        let run = driver.process_value(None, br#"{"n": "x"}"#).await;
        assert!(
            matches!(&run.outcome, Outcome::DeadLetter(r) if r.contains("at /n")),
            "{:?}",
            run.outcome
        );

        // The output schema is checked too: 60 doubles to 120, past the maximum.
        let run = driver.process_value(None, br#"{"n": 60}"#).await;
        let Outcome::DeadLetter(reason) = &run.outcome else {
            panic!("{:?}", run.outcome)
        };
        assert!(
            reason.contains("output event refused") && reason.contains("120"),
            "{reason}"
        );
        assert!(run.outputs.is_empty());
    }

    #[test]
    fn registry_failures_follow_the_retry_rules() {
        let kind = |e| registry_error(e).kind();
        assert_eq!(
            kind(RegistryError::Unreachable {
                url: "u".into(),
                reason: "r".into()
            }),
            ErrorKind::Unavailable
        );
        assert_eq!(
            kind(RegistryError::Server {
                status: 503,
                message: String::new()
            }),
            ErrorKind::Unavailable
        );
        assert_eq!(
            kind(RegistryError::Server {
                status: 500,
                message: String::new()
            }),
            ErrorKind::Transient
        );
        assert_eq!(
            kind(RegistryError::Unauthorized {
                status: 401,
                message: String::new()
            }),
            ErrorKind::Unavailable
        );
        assert_eq!(kind(RegistryError::UnknownId(3)), ErrorKind::Permanent);
        assert_eq!(
            kind(RegistryError::Incompatible {
                subject: "s".into(),
                message: String::new()
            }),
            ErrorKind::Permanent
        );
    }
}
