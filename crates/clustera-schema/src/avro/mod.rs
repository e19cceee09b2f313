//! Avro, through `apache-avro`: encoding serde values as binary datums (the payload of the
//! Confluent wire format, with no container-file header) and decoding them with schema
//! resolution, so a reader with a newer schema reads records written with an older one (a
//! field added with a default, a field removed, a type promoted), as the Avro specification's
//! resolution rules say.
//!
//! Every datum is first bounds-checked against its writer's schema, so a
//! hostile record (a block count of billions, nesting thousands deep) is refused as bad
//! data rather than making `apache-avro` allocate gigabytes or overflow the stack.

mod bounds;

use std::fmt;
use std::sync::Arc;

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::SchemaError;

/// A parsed Avro schema with the text it came from, cheap to clone.
#[derive(Clone)]
pub struct AvroSchema {
    inner: Arc<Inner>,
}

struct Inner {
    text: String,
    schema: Schema,
    names: bounds::Names,
}

impl fmt::Debug for AvroSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AvroSchema")
            .field("name", &self.full_name())
            .finish_non_exhaustive()
    }
}

impl AvroSchema {
    /// Parses a schema from its JSON text (`.avsc`). References to other registered schemas
    /// are not supported: a schema must be self-contained.
    pub fn parse(text: &str) -> Result<Self, SchemaError> {
        let schema = Schema::parse_str(text)
            .map_err(|e| SchemaError::Schema(format!("invalid Avro schema: {e}")))?;
        let names = bounds::names(&schema)
            .map_err(|e| SchemaError::Schema(format!("invalid Avro schema: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                text: text.to_owned(),
                schema,
                names,
            }),
        })
    }

    /// The text the schema was parsed from, as registered with a Schema Registry.
    pub fn text(&self) -> &str {
        &self.inner.text
    }

    /// The parsed schema.
    pub fn schema(&self) -> &Schema {
        &self.inner.schema
    }

    /// The full name (`namespace.Name`) of a named schema (record, enum, fixed): the record
    /// name of the record subject name strategies.
    pub fn full_name(&self) -> Option<String> {
        self.inner.schema.name().map(|n| n.fullname(None))
    }

    /// `Ok` when records written with `writer` can be read with this schema, else why not
    /// (a new field without a default, an incompatible type change).
    pub fn can_read(&self, writer: &AvroSchema) -> Result<(), SchemaError> {
        SchemaCompatibility::can_read(writer.schema(), self.schema()).map_err(|e| {
            SchemaError::Schema(format!(
                "records written with {} cannot be read with {}: {e}",
                writer.describe(),
                self.describe()
            ))
        })
    }

    fn describe(&self) -> String {
        self.full_name().unwrap_or_else(|| "the schema".into())
    }

    /// Encodes `value` as a binary datum of this schema. A value that does not fit (a missing
    /// field, a wrong type) is refused, naming the type.
    pub fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, SchemaError> {
        let type_name = std::any::type_name::<T>();
        let avro = apache_avro::to_value(value).map_err(|e| {
            SchemaError::Encode(format!("{type_name} cannot be represented in Avro: {e}"))
        })?;
        // Resolution maps serde's shapes onto the schema: `None` onto the null branch of a
        // union, a string onto an enum symbol, and fills in defaults.
        let resolved = avro.resolve(self.schema()).map_err(|e| {
            SchemaError::Encode(format!(
                "{type_name} does not fit the Avro schema {}: {e}",
                self.describe()
            ))
        })?;
        apache_avro::to_avro_datum(self.schema(), resolved).map_err(|e| {
            SchemaError::Encode(format!(
                "{type_name} does not fit the Avro schema {}: {e}",
                self.describe()
            ))
        })
    }

    /// Decodes a binary datum written with `self` (the writer's schema), read with `reader`
    /// when given (schema resolution), into `T`.
    pub fn decode<T: DeserializeOwned>(
        &self,
        payload: &[u8],
        reader: Option<&AvroSchema>,
    ) -> Result<T, SchemaError> {
        let value = self.decode_value(payload, reader)?;
        apache_avro::from_value(&value).map_err(|e| SchemaError::Decode {
            type_name: std::any::type_name::<T>(),
            path: String::new(),
            reason: e.to_string(),
        })
    }

    /// Decodes a binary datum into Avro's generic value.
    pub fn decode_value(
        &self,
        mut payload: &[u8],
        reader: Option<&AvroSchema>,
    ) -> Result<apache_avro::types::Value, SchemaError> {
        bounds::check(self.schema(), &self.inner.names, payload).map_err(|e| {
            SchemaError::Avro(format!("refused a datum of {}: {e}", self.describe()))
        })?;
        apache_avro::from_avro_datum(self.schema(), &mut payload, reader.map(|r| r.schema()))
            .map_err(|e| {
                SchemaError::Avro(format!(
                    "cannot decode a datum of {}{}: {e}",
                    self.describe(),
                    match reader {
                        Some(r) => format!(" as {}", r.describe()),
                        None => String::new(),
                    }
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    const V1: &str = r#"{"type":"record","name":"OrderEvent","namespace":"shop","fields":[
        {"name":"order_id","type":"string"},
        {"name":"amount_cents","type":"long"},
        {"name":"status","type":{"type":"enum","name":"Status","symbols":["CREATED","PAID"]}}
    ]}"#;
    const V2: &str = r#"{"type":"record","name":"OrderEvent","namespace":"shop","fields":[
        {"name":"order_id","type":"string"},
        {"name":"amount_cents","type":"long"},
        {"name":"status","type":{"type":"enum","name":"Status","symbols":["CREATED","PAID"]}},
        {"name":"coupon","type":["null","string"],"default":null}
    ]}"#;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    enum Status {
        #[serde(rename = "CREATED")]
        Created,
        #[serde(rename = "PAID")]
        Paid,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct V1Event {
        order_id: String,
        amount_cents: i64,
        status: Status,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct V2Event {
        order_id: String,
        amount_cents: i64,
        status: Status,
        coupon: Option<String>,
    }

    #[test]
    fn round_trip_and_known_bytes() {
        let schema = AvroSchema::parse(V1).unwrap();
        assert_eq!(schema.full_name().as_deref(), Some("shop.OrderEvent"));
        let event = V1Event {
            order_id: "o1".into(),
            amount_cents: 1250,
            status: Status::Paid,
        };
        let bytes = schema.encode(&event).unwrap();
        // string "o1" (zigzag length 2 = 0x04), long 1250 (zigzag 2500 = 0xc4 0x13), enum 1.
        assert_eq!(bytes, [0x04, b'o', b'1', 0xc4, 0x13, 0x02]);
        assert_eq!(schema.decode::<V1Event>(&bytes, None).unwrap(), event);
    }

    #[test]
    fn newer_reader_reads_older_records() {
        let v1 = AvroSchema::parse(V1).unwrap();
        let v2 = AvroSchema::parse(V2).unwrap();
        v2.can_read(&v1).unwrap();
        let old = v1
            .encode(&V1Event {
                order_id: "o1".into(),
                amount_cents: 5,
                status: Status::Created,
            })
            .unwrap();
        let read: V2Event = v1.decode(&old, Some(&v2)).unwrap();
        assert_eq!(read.coupon, None);
        assert_eq!(read.status, Status::Created);
        let new = v2
            .encode(&V2Event {
                order_id: "o2".into(),
                amount_cents: 7,
                status: Status::Paid,
                coupon: Some("WELCOME".into()),
            })
            .unwrap();
        let read: V2Event = v2.decode(&new, None).unwrap();
        assert_eq!(read.coupon.as_deref(), Some("WELCOME"));
        // And an old reader reads new records, skipping the field it does not know.
        let read: V1Event = v2.decode(&new, Some(&v1)).unwrap();
        assert_eq!(read.order_id, "o2");
    }

    #[test]
    fn incompatible_evolution_is_explained() {
        let v1 = AvroSchema::parse(V1).unwrap();
        let required = AvroSchema::parse(
            r#"{"type":"record","name":"OrderEvent","namespace":"shop","fields":[
                {"name":"order_id","type":"string"},{"name":"region","type":"string"}]}"#,
        )
        .unwrap();
        let err = required.can_read(&v1).unwrap_err().to_string();
        assert!(err.contains("cannot be read with shop.OrderEvent"), "{err}");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let v1 = AvroSchema::parse(V1).unwrap();
        // A string length far past the input, a truncated long, an enum index out of range.
        for bytes in [
            &[0x7e_u8, b'x'][..],
            &[0x04, b'o', b'1', 0xc4][..],
            &[0x00, 0x02, 0x08][..],
        ] {
            let err = v1.decode::<V1Event>(bytes, None).unwrap_err().to_string();
            assert!(err.contains("a datum of shop.OrderEvent"), "{err}");
        }
        assert!(AvroSchema::parse(r#"{"type":"record"}"#).is_err());
        #[derive(Serialize)]
        struct Missing {
            order_id: String,
        }
        let err = v1
            .encode(&Missing {
                order_id: "o".into(),
            })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not fit the Avro schema shop.OrderEvent"),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let v1 = AvroSchema::parse(V1).unwrap();
            let v2 = AvroSchema::parse(V2).unwrap();
            let _ = v1.decode::<V1Event>(&bytes, None);
            let _ = v2.decode::<V1Event>(&bytes, Some(&v1));
            let _ = v1.decode_value(&bytes, Some(&v2));
        }
    }
}
