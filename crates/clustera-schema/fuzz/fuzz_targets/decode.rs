//! Fuzzes what comes off the wire: the Confluent framing, then the payload as an Avro datum
//! (generic and typed, with and without schema resolution) and as JSON validated against a
//! JSON Schema. Any input must give a value or a typed error, never a panic, a hang or an
//! unbounded allocation.
//! Run with `cargo fuzz run decode fuzz/corpus fuzz/seeds` from `crates/clustera-schema`
//! (new inputs go to the first directory, which git ignores).
#![no_main]

use std::sync::OnceLock;

use clustera_schema::{json, wire, AvroSchema, JsonSchema};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

const WRITER: &str = r#"{"type":"record","name":"OrderEvent","namespace":"shop","fields":[
  {"name":"order_id","type":"string"},
  {"name":"amount_cents","type":"long"},
  {"name":"status","type":{"type":"enum","name":"Status","symbols":["CREATED","PAID"]}},
  {"name":"tags","type":{"type":"array","items":"string"}},
  {"name":"attrs","type":{"type":"map","values":"double"}},
  {"name":"blob","type":"bytes"},
  {"name":"note","type":["null","string"],"default":null}
]}"#;

/// A reader that drops `attrs` and adds a defaulted field: resolution on every input.
const READER: &str = r#"{"type":"record","name":"OrderEvent","namespace":"shop","fields":[
  {"name":"order_id","type":"string"},
  {"name":"amount_cents","type":"long"},
  {"name":"status","type":{"type":"enum","name":"Status","symbols":["CREATED","PAID"]}},
  {"name":"tags","type":{"type":"array","items":"string"}},
  {"name":"blob","type":"bytes"},
  {"name":"note","type":["null","string"],"default":null},
  {"name":"coupon","type":["null","string"],"default":null}
]}"#;

const JSON_SCHEMA: &str = r#"{"type":"object","required":["order_id"],"properties":{
  "order_id":{"type":"string","pattern":"^ord-[0-9]+$"},
  "amount_cents":{"type":"integer","minimum":0},
  "placed_at":{"type":"string","format":"date-time"},
  "items":{"type":"array","items":{"type":"object"}}}}"#;

#[allow(dead_code)]
#[derive(Deserialize)]
struct Order {
    order_id: String,
    amount_cents: i64,
    tags: Vec<String>,
    note: Option<String>,
    coupon: Option<String>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct JsonOrder {
    order_id: String,
    amount_cents: Option<u64>,
}

struct Schemas {
    writer: AvroSchema,
    reader: AvroSchema,
    json: JsonSchema,
}

fn schemas() -> &'static Schemas {
    static S: OnceLock<Schemas> = OnceLock::new();
    S.get_or_init(|| Schemas {
        writer: AvroSchema::parse(WRITER).unwrap(),
        reader: AvroSchema::parse(READER).unwrap(),
        json: JsonSchema::parse(JSON_SCHEMA).unwrap(),
    })
}

fuzz_target!(|data: &[u8]| {
    let s = schemas();
    let Ok(framed) = wire::decode(data) else {
        return;
    };
    // The low bit of the schema id picks the payload's language, so one corpus covers both.
    if framed.schema_id % 2 == 0 {
        let _ = s.writer.decode_value(framed.payload, None);
        let _ = s.writer.decode::<Order>(framed.payload, Some(&s.reader));
    } else {
        let _ = json::decode::<JsonOrder>(framed.payload, Some(&s.json));
    }
});
