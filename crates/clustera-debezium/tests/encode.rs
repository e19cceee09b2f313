//! The encoders against Debezium's documented examples (`tests/fixtures/docs`), Debezium's type
//! mapping (fixtures below, each value derived from Debezium's documented semantics), and the
//! crate's own decoder (what is encoded decodes back to the same event).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clustera_debezium::pgtype::oid;
use clustera_debezium::{
    decode, decode_routed, AdditionalField, ChangeEventConfig, ChangeEventEncoder, ColumnDef,
    Decoded, EncodeError, KafkaRecord, KeyConverter, Op, OutboxColumns, OutboxEvent, OutputFormat,
    Placement, RawKey, Relation, RoutedHeaders, RouterConfig, RouterEncoder, SnapshotRecord,
    SourcePosition, UnknownTypes, UserType,
};
use proptest::prelude::*;
use serde_json::{json, Value};

fn doc(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/docs/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn text(bytes: &Option<Vec<u8>>) -> &str {
    std::str::from_utf8(bytes.as_deref().unwrap()).unwrap()
}

fn json_of(bytes: &Option<Vec<u8>>) -> Value {
    serde_json::from_slice(bytes.as_deref().unwrap()).unwrap()
}

fn values(v: &[Option<&str>]) -> Vec<Option<String>> {
    v.iter().map(|s| s.map(str::to_owned)).collect()
}

/// `public.customers` of the PostgreSQL connector's documentation.
fn customers() -> Relation {
    Relation {
        schema: "public".into(),
        table: "customers".into(),
        columns: vec![
            ColumnDef::new("id", oid::INT4, -1).key(),
            ColumnDef::new("first_name", oid::VARCHAR, 259).not_null(),
            ColumnDef::new("last_name", oid::VARCHAR, 259).not_null(),
            ColumnDef::new("email", oid::VARCHAR, 259).not_null(),
        ],
    }
}

fn customers_config(schemas: bool) -> ChangeEventConfig {
    ChangeEventConfig {
        topic_prefix: "PostgreSQL_server".into(),
        database: "postgres".into(),
        version: "{debezium-version}".into(),
        schemas,
        ..ChangeEventConfig::default()
    }
}

fn customers_source() -> SourcePosition {
    SourcePosition {
        lsn: 24_023_128,
        last_commit_lsn: Some(24_023_119),
        tx_id: Some(555),
        commit_time_us: 1_559_033_904_863_123,
        xmin: None,
        snapshot: SnapshotRecord::False,
    }
}

const ANNE: [Option<&str>; 4] = [
    Some("1"),
    Some("Anne"),
    Some("Kretchmar"),
    Some("annek@noanswer.org"),
];
const CUSTOMERS_EMITTED_NS: i64 = 1_559_033_904_863_841_257;

fn encode_anne(schemas: bool) -> KafkaRecord {
    ChangeEventEncoder::new(customers_config(schemas), customers())
        .unwrap()
        .encode(&values(&ANNE), &customers_source(), CUSTOMERS_EMITTED_NS)
        .unwrap()
}

#[test]
fn create_event_matches_debeziums_documented_example() {
    let record = encode_anne(false);
    assert_eq!(record.topic, "PostgreSQL_server.public.customers");
    let mut expected = doc("pg_create_customers.json");
    // Where the documented example is not what the connector writes:
    // - `snapshot` has been a string enum (`io.debezium.data.Enum`) since Debezium 1.x, and an
    //   `op: c` event is streamed, so it is "false" (the example's `true` is a leftover);
    // - the envelope schema declares `transaction`, which the JsonConverter writes as null.
    expected["source"]["snapshot"] = json!("false");
    expected["transaction"] = Value::Null;
    assert_eq!(json_of(&record.value), expected);
    // Debezium's record key: the primary key as a struct.
    assert_eq!(text(&record.key), r#"{"id":1}"#);
    assert!(record.headers.is_empty());
}

#[test]
fn create_event_bytes_in_the_connectors_field_order() {
    // Field order as the JsonConverter writes a Struct: the schema's order (Envelope: before,
    // after, source, transaction, op, ts_*; Source: SchemaFactory's common fields, then the
    // PostgreSQL ones).
    assert_eq!(
        text(&encode_anne(false).value),
        concat!(
            r#"{"before":null,"after":{"id":1,"first_name":"Anne","last_name":"Kretchmar","email":"annek@noanswer.org"},"#,
            r#""source":{"version":"{debezium-version}","connector":"postgresql","name":"PostgreSQL_server","ts_ms":1559033904863,"#,
            r#""snapshot":"false","db":"postgres","sequence":"[\"24023119\",\"24023128\"]","ts_us":1559033904863123,"#,
            r#""ts_ns":1559033904863123000,"schema":"public","table":"customers","txId":555,"lsn":24023128,"xmin":null},"#,
            r#""transaction":null,"op":"c","ts_ms":1559033904863,"ts_us":1559033904863841,"ts_ns":1559033904863841257}"#
        )
    );
}

#[test]
fn create_event_with_schemas_wraps_key_and_value_as_the_json_converter_does() {
    let record = encode_anne(true);
    let value = json_of(&record.value);
    assert_eq!(value["payload"], json_of(&encode_anne(false).value));
    let schema = &value["schema"];
    assert_eq!(
        schema["name"],
        "PostgreSQL_server.public.customers.Envelope"
    );
    assert_eq!(schema["version"], 2);
    let fields = schema["fields"].as_array().unwrap();
    let names: Vec<&str> = fields
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "before",
            "after",
            "source",
            "transaction",
            "op",
            "ts_ms",
            "ts_us",
            "ts_ns"
        ]
    );
    // The row struct: the documented example's fields exactly (type, optional, field).
    let documented_row = json!([
        {"type": "int32", "optional": false, "field": "id"},
        {"type": "string", "optional": false, "field": "first_name"},
        {"type": "string", "optional": false, "field": "last_name"},
        {"type": "string", "optional": false, "field": "email"}
    ]);
    for row in &fields[..2] {
        assert_eq!(row["fields"], documented_row);
        assert_eq!(row["optional"], true);
        assert_eq!(row["name"], "PostgreSQL_server.public.customers.Value");
    }
    let source = &fields[2];
    assert_eq!(source["name"], "io.debezium.connector.postgresql.Source");
    assert_eq!(source["optional"], false);
    let source_fields: Vec<(String, String, bool)> = source["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["field"].as_str().unwrap().to_owned(),
                f["type"].as_str().unwrap().to_owned(),
                f["optional"].as_bool().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, String, bool)> = [
        ("version", "string", false),
        ("connector", "string", false),
        ("name", "string", false),
        ("ts_ms", "int64", false),
        ("snapshot", "string", true),
        ("db", "string", false),
        ("sequence", "string", true),
        ("ts_us", "int64", true),
        ("ts_ns", "int64", true),
        ("schema", "string", false),
        ("table", "string", false),
        ("txId", "int64", true),
        ("lsn", "int64", true),
        ("xmin", "int64", true),
    ]
    .iter()
    .map(|(f, t, o)| ((*f).to_owned(), (*t).to_owned(), *o))
    .collect();
    assert_eq!(source_fields, expected);
    assert_eq!(
        serde_json::to_string(&source["fields"][4]).unwrap(),
        r#"{"default":"false","field":"snapshot","name":"io.debezium.data.Enum","optional":true,"parameters":{"allowed":"true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},"type":"string","version":1}"#
    );
    // The key, wrapped too, with the documented key schema's name.
    assert_eq!(
        text(&record.key),
        r#"{"schema":{"type":"struct","fields":[{"type":"int32","optional":false,"field":"id"}],"optional":false,"name":"PostgreSQL_server.public.customers.Key"},"payload":{"id":1}}"#
    );
    // And the crate's decoder reads it back.
    match decode(record.value.as_deref()).unwrap() {
        Decoded::Change(c) => {
            assert_eq!(c.op, Op::Create);
            assert_eq!(c.source.tx_id, Some(555));
            assert_eq!(c.source.lsn, Some(24_023_128));
            assert_eq!(c.ts_us, Some(1_559_033_904_863_841));
        }
        Decoded::Tombstone => panic!("not a tombstone"),
    }
}

#[test]
fn snapshot_rows_are_reads_with_the_snapshot_marker() {
    let encoder = ChangeEventEncoder::new(customers_config(false), customers()).unwrap();
    for (marker, text_value) in [
        (SnapshotRecord::True, "true"),
        (SnapshotRecord::First, "first"),
        (SnapshotRecord::Last, "last"),
        (
            SnapshotRecord::LastInDataCollection,
            "last_in_data_collection",
        ),
        (SnapshotRecord::Incremental, "incremental"),
    ] {
        let source = SourcePosition {
            snapshot: marker,
            last_commit_lsn: None,
            ..customers_source()
        };
        let v = json_of(&encoder.encode(&values(&ANNE), &source, 0).unwrap().value);
        assert_eq!(v["op"], "r");
        assert_eq!(v["source"]["snapshot"], text_value);
        assert_eq!(v["source"]["sequence"], r#"[null,"24023128"]"#);
    }
}

/// Clustera's seed outbox table.
fn seed_outbox() -> Relation {
    Relation {
        schema: "activity".into(),
        table: "event_outbox".into(),
        columns: vec![
            ColumnDef::new("event_id", oid::UUID, -1).key(),
            ColumnDef::new("aggregate_id", oid::UUID, -1).not_null(),
            ColumnDef::new("aggregate_type", oid::TEXT, -1).not_null(),
            ColumnDef::new("event_type", oid::TEXT, -1).not_null(),
            ColumnDef::new("payload", oid::JSONB, -1).not_null(),
            ColumnDef::new("status", oid::TEXT, -1).not_null(),
            ColumnDef::new("created_at", oid::TIMESTAMPTZ, -1).not_null(),
        ],
    }
}

const SEED_ROW: [Option<&str>; 7] = [
    Some("8a4d2b1e-3f5c-4e7a-9b1d-2c3e4f5a6b7c"),
    Some("11111111-2222-4333-8444-555555555555"),
    Some("User"),
    Some("UserCreated"),
    Some(r#"{"email": "test@example.com", "username": "testuser"}"#),
    Some("pending"),
    Some("2024-01-15 10:30:00.1+00"),
];

#[test]
fn a_seed_outbox_row_round_trips_through_the_decoder() {
    let encoder = ChangeEventEncoder::new(
        ChangeEventConfig {
            key: RawKey::Column("aggregate_id".into()),
            ..ChangeEventConfig::default()
        },
        seed_outbox(),
    )
    .unwrap();
    assert_eq!(encoder.topic(), "postgres.activity.event_outbox");
    let record = encoder
        .encode(&values(&SEED_ROW), &customers_source(), 0)
        .unwrap();
    assert_eq!(text(&record.key), "11111111-2222-4333-8444-555555555555");
    let v = json_of(&record.value);
    // timestamptz: UTC, six fractional digits (the column's default precision).
    assert_eq!(v["after"]["created_at"], "2024-01-15T10:30:00.100000Z");
    assert_eq!(
        v["after"]["payload"],
        r#"{"email": "test@example.com", "username": "testuser"}"#
    );
    let Decoded::Change(change) = decode(record.value.as_deref()).unwrap() else {
        panic!("tombstone")
    };
    let event = OutboxEvent::from_change(&change, &OutboxColumns::default())
        .unwrap()
        .unwrap();
    assert_eq!(event.event_id, "8a4d2b1e-3f5c-4e7a-9b1d-2c3e4f5a6b7c");
    assert_eq!(event.aggregate_type, "User");
    assert_eq!(event.event_type, "UserCreated");
    assert_eq!(
        event.payload,
        json!({"email": "test@example.com", "username": "testuser"})
    );
    assert_eq!(event.created_at_us, Some(1_705_314_600_100_000));
}

/// The outbox table of Debezium's documentation (`inventory.outboxevent`).
fn debezium_outbox() -> Relation {
    Relation {
        schema: "inventory".into(),
        table: "outboxevent".into(),
        columns: vec![
            ColumnDef::new("id", oid::UUID, -1).key(),
            ColumnDef::new("aggregateid", oid::VARCHAR, 259).not_null(),
            ColumnDef::new("aggregatetype", oid::VARCHAR, 259).not_null(),
            ColumnDef::new("payload", oid::JSONB, -1),
            // The example's `timestamp` is an int64 of milliseconds: `timestamp(3)`.
            ColumnDef::new("timestamp", oid::TIMESTAMP, 3).not_null(),
            ColumnDef::new("type", oid::VARCHAR, 259).not_null(),
        ],
    }
}

/// The documented raw event's row, as pgoutput sends it.
fn documented_order_row() -> Vec<Option<String>> {
    let raw = doc("outbox_raw_order.json");
    let after = &raw["after"];
    vec![
        Some(after["id"].as_str().unwrap().to_owned()),
        Some(after["aggregateid"].as_str().unwrap().to_owned()),
        Some(after["aggregatetype"].as_str().unwrap().to_owned()),
        Some(after["payload"].as_str().unwrap().to_owned()),
        // 1556890294344 ms after the epoch.
        Some("2019-05-03 13:31:34.344".to_owned()),
        Some(after["type"].as_str().unwrap().to_owned()),
    ]
}

/// The documented raw event's processing time (`ts_ns`): the routed record's timestamp.
const ORDER_EMITTED_NS: i64 = 1_556_890_294_484_651_402;

#[test]
fn the_documented_raw_outbox_event_is_what_the_raw_encoder_writes() {
    let record = ChangeEventEncoder::new(
        ChangeEventConfig {
            topic_prefix: "dbserver1-bare".into(),
            database: "orderdb".into(),
            ..ChangeEventConfig::default()
        },
        debezium_outbox(),
    )
    .unwrap()
    .encode(
        &documented_order_row(),
        &customers_source(),
        ORDER_EMITTED_NS,
    )
    .unwrap();
    let v = json_of(&record.value);
    let documented = doc("outbox_raw_order.json");
    // The row, every column typed as documented (timestamp(3) → io.debezium.time.Timestamp).
    assert_eq!(v["after"], documented["after"]);
    for f in ["op", "ts_ms", "ts_us", "ts_ns"] {
        assert_eq!(v[f], documented[f], "{f}");
    }
    // The documented source block is Debezium 0.9's (`ts_usec`, `last_snapshot_record`); the
    // fields that survive keep their meaning.
    for f in ["connector", "name", "db", "schema", "table", "xmin"] {
        assert_eq!(v["source"][f], documented["source"][f], "{f}");
    }
}

#[test]
fn router_form_matches_the_documented_escaped_and_expanded_messages() {
    let row = documented_order_row();
    let documented_payload = row[3].clone().unwrap();
    let escaped = RouterEncoder::new(
        RouterConfig {
            expand_json_payload: false,
            ..RouterConfig::default()
        },
        &debezium_outbox(),
    )
    .unwrap()
    .encode(&row, &customers_source(), ORDER_EMITTED_NS)
    .unwrap();
    // The documented topic is `outbox.event.order`, but the router does not change case:
    // `route.topic.replacement` takes `aggregatetype` ("Order") as it is.
    assert_eq!(escaped.topic, "outbox.event.Order");
    // Kafka Message key: "1" (the JsonConverter's string).
    assert_eq!(text(&escaped.key), r#""1""#);
    // Header `id`: the event id (the documented header shows another example's uuid).
    assert_eq!(
        escaped.headers,
        [(
            "id".to_owned(),
            Some(b"406c07f3-26f0-4eea-a50c-109940064b8f".to_vec())
        )]
    );
    // Kafka Message Timestamp: 1556890294484, the raw event's ts_ms.
    assert_eq!(escaped.timestamp_ms, Some(1_556_890_294_484));
    // The value: the payload as a JSON string.
    assert_eq!(
        text(&escaped.value),
        serde_json::to_string(&documented_payload).unwrap()
    );

    let expanded = RouterEncoder::new(RouterConfig::default(), &debezium_outbox())
        .unwrap()
        .encode(&row, &customers_source(), ORDER_EMITTED_NS)
        .unwrap();
    assert_eq!(json_of(&expanded.value), doc("outbox_routed_expanded.json"));
    // Byte for byte: the documented document, compact, in the same order.
    assert_eq!(
        text(&expanded.value),
        concat!(
            r#"{"id":1,"lineItems":[{"id":1,"item":"Debezium in Action","status":"ENTERED","quantity":2,"totalPrice":39.98},"#,
            r#"{"id":2,"item":"Debezium for Dummies","status":"ENTERED","quantity":1,"totalPrice":29.99}],"#,
            r#""orderDate":"2019-01-31T12:13:01","customerId":123}"#
        )
    );
    assert_eq!(
        (expanded.topic.as_str(), text(&expanded.key)),
        ("outbox.event.Order", r#""1""#)
    );
}

#[test]
fn router_options_topic_headers_envelope_timestamp_and_string_keys() {
    let config = RouterConfig {
        topic_replacement: "${routedByValue}.events".into(),
        additional: AdditionalField::parse_list(
            "test",
            "type:header:eventType,aggregatetype:envelope:kind",
        )
        .unwrap(),
        timestamp: Some("timestamp".into()),
        key_converter: KeyConverter::String,
        ..RouterConfig::default()
    };
    let record = RouterEncoder::new(config, &debezium_outbox())
        .unwrap()
        .encode(
            &documented_order_row(),
            &customers_source(),
            ORDER_EMITTED_NS,
        )
        .unwrap();
    assert_eq!(record.topic, "Order.events");
    assert_eq!(text(&record.key), "1");
    assert_eq!(
        record.headers,
        [
            (
                "id".to_owned(),
                Some(b"406c07f3-26f0-4eea-a50c-109940064b8f".to_vec())
            ),
            ("eventType".to_owned(), Some(b"OrderCreated".to_vec())),
        ]
    );
    // The timestamp column (timestamp(3): ms) instead of the processing time.
    assert_eq!(record.timestamp_ms, Some(1_556_890_294_344));
    let v = json_of(&record.value);
    assert_eq!(v["kind"], "Order");
    assert_eq!(v["payload"]["customerId"], 123);
    assert_eq!(v.as_object().unwrap().len(), 2);
    // With schemas, the envelope's schema is named as Debezium's getSchemaName does.
    let with_schema = RouterEncoder::new(
        RouterConfig {
            topic_prefix: "dbserver1".into(),
            additional: AdditionalField::parse_list("test", "aggregatetype:envelope:kind").unwrap(),
            schemas: true,
            ..RouterConfig::default()
        },
        &debezium_outbox(),
    )
    .unwrap()
    .encode(&documented_order_row(), &customers_source(), 0)
    .unwrap();
    let v = json_of(&with_schema.value);
    assert_eq!(
        v["schema"]["name"],
        "dbserver1.inventory.outboxevent.Order.Value"
    );
    assert_eq!(v["schema"]["fields"][1]["field"], "kind");
    assert_eq!(v["payload"]["kind"], "Order");
}

#[test]
fn router_tombstone_for_an_empty_payload_only_when_asked() {
    let mut row = documented_order_row();
    row[3] = None;
    let encode = |tombstone: bool| {
        RouterEncoder::new(
            RouterConfig {
                tombstone_on_empty_payload: tombstone,
                ..RouterConfig::default()
            },
            &debezium_outbox(),
        )
        .unwrap()
        .encode(&row, &customers_source(), 0)
        .unwrap()
    };
    let tombstone = encode(true);
    assert_eq!(tombstone.value, None);
    assert_eq!(text(&tombstone.key), r#""1""#);
    assert_eq!(tombstone.headers[0].0, "id");
    // Without the option, a null payload is the JSON null, not a tombstone.
    assert_eq!(text(&encode(false).value), "null");
}

#[test]
fn router_expansion_drops_null_fields_and_empty_arrays_as_debezium_does() {
    let mut row = documented_order_row();
    row[3] = Some(
        r#"{"b": null, "a": [], "c": {"d": null, "e": 1.0, "f": [null, 2]}, "g": 12345678901}"#
            .into(),
    );
    let record = RouterEncoder::new(RouterConfig::default(), &debezium_outbox())
        .unwrap()
        .encode(&row, &customers_source(), 0)
        .unwrap();
    assert_eq!(
        text(&record.value),
        r#"{"c":{"e":1.0,"f":[null,2]},"g":12345678901}"#
    );
    // With schemas: the schema Debezium derives from the document.
    let with_schema = RouterEncoder::new(
        RouterConfig {
            schemas: true,
            ..RouterConfig::default()
        },
        &debezium_outbox(),
    )
    .unwrap()
    .encode(&row, &customers_source(), 0)
    .unwrap();
    assert_eq!(
        text(&with_schema.value),
        concat!(
            r#"{"schema":{"type":"struct","fields":["#,
            r#"{"type":"struct","fields":[{"type":"double","optional":true,"field":"e"},"#,
            r#"{"type":"array","items":{"type":"int32","optional":true},"optional":true,"field":"f"}],"optional":true,"name":"payload.c","field":"c"},"#,
            r#"{"type":"int64","optional":true,"field":"g"}],"optional":true,"name":"payload"},"#,
            r#""payload":{"c":{"e":1.0,"f":[null,2]},"g":12345678901}}"#
        )
    );
    assert_eq!(
        text(&with_schema.key),
        r#"{"schema":{"type":"string","optional":false},"payload":"1"}"#
    );
}

#[test]
fn the_processors_decoder_reads_the_router_form_back() {
    let config = RouterConfig {
        additional: AdditionalField::parse_list("test", "type:header:eventType").unwrap(),
        ..RouterConfig::default()
    };
    let record = RouterEncoder::new(config, &debezium_outbox())
        .unwrap()
        .encode(&documented_order_row(), &customers_source(), 0)
        .unwrap();
    let headers: Vec<(&str, &[u8])> = record
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_deref().unwrap()))
        .collect();
    let event = decode_routed(
        &record.topic,
        record.key.as_deref(),
        record.value.as_deref(),
        &headers,
        &RoutedHeaders::default(),
    )
    .unwrap();
    assert_eq!(event.event_id, "406c07f3-26f0-4eea-a50c-109940064b8f");
    assert_eq!(event.aggregate_id, "1");
    assert_eq!(event.aggregate_type, "Order");
    assert_eq!(event.event_type, "OrderCreated");
    assert_eq!(event.payload["lineItems"][1]["totalPrice"], 29.99);
}

#[test]
fn router_configuration_errors_name_the_column() {
    let err = RouterEncoder::new(RouterConfig::default(), &seed_outbox()).unwrap_err();
    assert_eq!(
        err,
        EncodeError::MissingColumn {
            role: "event id",
            column: "id".into(),
            table: "activity.event_outbox".into()
        }
    );
    let mut row = documented_order_row();
    row[2] = None;
    assert_eq!(
        RouterEncoder::new(RouterConfig::default(), &debezium_outbox())
            .unwrap()
            .encode(&row, &customers_source(), 0)
            .unwrap_err(),
        EncodeError::NullValue {
            role: "route-by",
            column: "aggregatetype".into()
        }
    );
    for (bad, why) in [
        ("a:partition", "partition placement is not supported"),
        ("a:elsewhere", "is not header or envelope"),
        ("a", "is not column:placement"),
        ("a:header:b:c", "is not column:placement"),
    ] {
        let e = AdditionalField::parse_list("X", bad)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("X: ") && e.contains(why), "{bad}: {e}");
    }
    assert_eq!(
        AdditionalField::parse_list("X", " type:header , t:envelope:alias ").unwrap(),
        [
            AdditionalField {
                column: "type".into(),
                placement: Placement::Header,
                alias: "type".into()
            },
            AdditionalField {
                column: "t".into(),
                placement: Placement::Envelope,
                alias: "alias".into()
            },
        ]
    );
}

// ---- Type mapping ------------------------------------------------------------------------

/// `(oid, typmod, text) → (value, schema)`: each value as Debezium documents the mapping.
fn mapped(type_oid: u32, typmod: i32, value: &str) -> (Value, Value) {
    mapped_column(ColumnDef::new("c", type_oid, typmod), value)
}

fn mapped_column(column: ColumnDef, value: &str) -> (Value, Value) {
    let relation = Relation {
        schema: "s".into(),
        table: "t".into(),
        columns: vec![column],
    };
    let record = ChangeEventEncoder::new(
        ChangeEventConfig {
            schemas: true,
            ..ChangeEventConfig::default()
        },
        relation,
    )
    .unwrap()
    .encode(&[Some(value.to_owned())], &SourcePosition::default(), 0)
    .unwrap();
    let v = json_of(&record.value);
    let mut schema = v["schema"]["fields"][1]["fields"][0].clone();
    schema.as_object_mut().unwrap().remove("field");
    (v["payload"]["after"]["c"].clone(), schema)
}

#[test]
fn type_mapping_fixtures() {
    let cases: Vec<(u32, i32, &str, Value, Value)> = vec![
        (
            oid::BOOL,
            -1,
            "t",
            json!(true),
            json!({"type": "boolean", "optional": true}),
        ),
        (
            oid::BOOL,
            -1,
            "f",
            json!(false),
            json!({"type": "boolean", "optional": true}),
        ),
        (
            oid::INT2,
            -1,
            "-32768",
            json!(-32768),
            json!({"type": "int16", "optional": true}),
        ),
        (
            oid::INT4,
            -1,
            "2147483647",
            json!(2_147_483_647),
            json!({"type": "int32", "optional": true}),
        ),
        (
            oid::INT8,
            -1,
            "-9223372036854775808",
            json!(i64::MIN),
            json!({"type": "int64", "optional": true}),
        ),
        (
            oid::OID,
            -1,
            "4294967295",
            json!(4_294_967_295u64),
            json!({"type": "int64", "optional": true}),
        ),
        (
            oid::FLOAT4,
            -1,
            "1.5",
            json!(1.5),
            json!({"type": "float", "optional": true}),
        ),
        (
            oid::FLOAT8,
            -1,
            "-2.25e-5",
            json!(-2.25e-5),
            json!({"type": "double", "optional": true}),
        ),
        (
            oid::FLOAT8,
            -1,
            "NaN",
            json!("NaN"),
            json!({"type": "double", "optional": true}),
        ),
        (
            oid::FLOAT8,
            -1,
            "-Infinity",
            json!("-Infinity"),
            json!({"type": "double", "optional": true}),
        ),
        (
            oid::TEXT,
            -1,
            "héllo",
            json!("héllo"),
            json!({"type": "string", "optional": true}),
        ),
        (
            oid::BPCHAR,
            9,
            "ab   ",
            json!("ab   "),
            json!({"type": "string", "optional": true}),
        ),
        // numeric(10,2): Connect Decimal, unscaled 1234 = 0x04D2, base64.
        (
            oid::NUMERIC,
            (10 << 16 | 2) + 4,
            "12.34",
            json!("BNI="),
            json!({"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
                   "parameters": {"scale": "2", "connect.decimal.precision": "10"}}),
        ),
        // -12.34: two's complement 0xFB2E.
        (
            oid::NUMERIC,
            (10 << 16 | 2) + 4,
            "-12.34",
            json!("+y4="),
            json!({"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
                   "parameters": {"scale": "2", "connect.decimal.precision": "10"}}),
        ),
        // numeric(5,0): 128 needs a sign byte, 0x0080.
        (
            oid::NUMERIC,
            (5 << 16) + 4,
            "128",
            json!("AIA="),
            json!({"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
                   "parameters": {"scale": "0", "connect.decimal.precision": "5"}}),
        ),
        // Unconstrained numeric: VariableScaleDecimal, trailing zeros stripped (1.500 → 15e-1).
        (
            oid::NUMERIC,
            -1,
            "1.500",
            json!({"scale": 1, "value": "Dw=="}),
            json!({"type": "struct", "fields": [{"type": "int32", "optional": false, "field": "scale"},
                                                 {"type": "bytes", "optional": false, "field": "value"}],
                   "optional": true, "name": "io.debezium.data.VariableScaleDecimal", "version": 1,
                   "doc": "Variable scaled decimal"}),
        ),
        // 100 keeps scale 0 (a negative scale is set back to 0): unscaled 100 = 0x64.
        (
            oid::NUMERIC,
            -1,
            "100",
            json!({"scale": 0, "value": "ZA=="}),
            Value::Null,
        ),
        (
            oid::DATE,
            -1,
            "2024-01-15",
            json!(19737),
            json!({"type": "int32", "optional": true, "name": "io.debezium.time.Date", "version": 1}),
        ),
        (oid::DATE, -1, "1969-12-31", json!(-1), Value::Null),
        // time(3) and below: ms past midnight; time and time(4..6): µs.
        (
            oid::TIME,
            3,
            "10:15:30.123",
            json!(36_930_123),
            json!({"type": "int32", "optional": true, "name": "io.debezium.time.Time", "version": 1}),
        ),
        (
            oid::TIME,
            -1,
            "10:15:30.123456",
            json!(36_930_123_456i64),
            json!({"type": "int64", "optional": true, "name": "io.debezium.time.MicroTime", "version": 1}),
        ),
        (
            oid::TIME,
            -1,
            "24:00:00",
            json!(86_400_000_000i64),
            Value::Null,
        ),
        // Debezium's documented TIMESTAMP example: "2018-06-20 15:13:16.945104" → 1529507596945104.
        (
            oid::TIMESTAMP,
            -1,
            "2018-06-20 15:13:16.945104",
            json!(1_529_507_596_945_104i64),
            json!({"type": "int64", "optional": true, "name": "io.debezium.time.MicroTimestamp", "version": 1}),
        ),
        (
            oid::TIMESTAMP,
            3,
            "2018-06-20 15:13:16.945",
            json!(1_529_507_596_945i64),
            json!({"type": "int64", "optional": true, "name": "io.debezium.time.Timestamp", "version": 1}),
        ),
        // Documented: +/-infinity become the JDBC driver's constants.
        (
            oid::TIMESTAMP,
            -1,
            "infinity",
            json!(9_223_372_036_825_200_000i64),
            Value::Null,
        ),
        (
            oid::TIMESTAMP,
            -1,
            "-infinity",
            json!(-9_223_372_036_832_400_000i64),
            Value::Null,
        ),
        (
            oid::TIMESTAMPTZ,
            -1,
            "2024-01-15 12:30:00.5+02",
            json!("2024-01-15T10:30:00.500000Z"),
            json!({"type": "string", "optional": true, "name": "io.debezium.time.ZonedTimestamp", "version": 1}),
        ),
        (
            oid::TIMESTAMPTZ,
            3,
            "2024-01-15 10:30:00+00",
            json!("2024-01-15T10:30:00.000Z"),
            Value::Null,
        ),
        (
            oid::TIMESTAMPTZ,
            0,
            "2024-01-15 10:30:00-05:30",
            json!("2024-01-15T16:00:00Z"),
            Value::Null,
        ),
        (
            oid::TIMESTAMPTZ,
            -1,
            "infinity",
            json!("infinity"),
            Value::Null,
        ),
        (
            oid::TIMETZ,
            -1,
            "23:30:00.25-02",
            json!("01:30:00.25Z"),
            json!({"type": "string", "optional": true, "name": "io.debezium.time.ZonedTime", "version": 1}),
        ),
        // MicroDuration: a month is 365.25/12 days.
        (
            oid::INTERVAL,
            -1,
            "1 mon 00:00:01",
            json!(2_629_801_000_000i64),
            json!({"type": "int64", "optional": true, "name": "io.debezium.time.MicroDuration", "version": 1}),
        ),
        (
            oid::BYTEA,
            -1,
            "\\x00ff10",
            json!("AP8Q"),
            json!({"type": "bytes", "optional": true}),
        ),
        (
            oid::UUID,
            -1,
            "8a4d2b1e-3f5c-4e7a-9b1d-2c3e4f5a6b7c",
            json!("8a4d2b1e-3f5c-4e7a-9b1d-2c3e4f5a6b7c"),
            json!({"type": "string", "optional": true, "name": "io.debezium.data.Uuid", "version": 1}),
        ),
        (
            oid::JSONB,
            -1,
            r#"{"a": [1, 2]}"#,
            json!(r#"{"a": [1, 2]}"#),
            json!({"type": "string", "optional": true, "name": "io.debezium.data.Json", "version": 1}),
        ),
        (oid::JSON, -1, r#"[1,2]"#, json!("[1,2]"), Value::Null),
        (
            oid::INT4_ARRAY,
            -1,
            "{1,NULL,-3}",
            json!([1, null, -3]),
            json!({"type": "array", "items": {"type": "int32", "optional": true}, "optional": true}),
        ),
        (
            oid::TEXT_ARRAY,
            -1,
            r#"{a,"b,c","d\"e",NULL}"#,
            json!(["a", "b,c", "d\"e", null]),
            Value::Null,
        ),
        (
            oid::UUID_ARRAY,
            -1,
            "{8a4d2b1e-3f5c-4e7a-9b1d-2c3e4f5a6b7c}",
            json!(["8a4d2b1e-3f5c-4e7a-9b1d-2c3e4f5a6b7c"]),
            json!({"type": "array", "items": {"type": "string", "optional": true, "name": "io.debezium.data.Uuid", "version": 1},
                   "optional": true}),
        ),
        (
            oid::JSONB_ARRAY,
            -1,
            r#"{"{\"a\": 1}"}"#,
            json!([r#"{"a": 1}"#]),
            Value::Null,
        ),
        (oid::DATE_ARRAY, -1, "{1970-01-02}", json!([1]), Value::Null),
        (
            oid::TIMESTAMPTZ_ARRAY,
            -1,
            r#"{"2024-01-15 10:30:00+00"}"#,
            json!(["2024-01-15T10:30:00.000000Z"]),
            Value::Null,
        ),
        (
            oid::NUMERIC_ARRAY,
            (10 << 16 | 2) + 4,
            "{1.00}",
            json!(["ZA=="]),
            Value::Null,
        ),
        (
            oid::BOOL_ARRAY,
            -1,
            "{t,f}",
            json!([true, false]),
            Value::Null,
        ),
        (
            oid::FLOAT8_ARRAY,
            -1,
            "{1.5,NaN}",
            json!([1.5, "NaN"]),
            Value::Null,
        ),
    ];
    for (type_oid, typmod, text, value, schema) in
        cases.into_iter().chain(debeziums_own_expectations())
    {
        let (got_value, got_schema) = mapped(type_oid, typmod, text);
        assert_eq!(
            got_value, value,
            "value of {text:?} (oid {type_oid}, typmod {typmod})"
        );
        if !schema.is_null() {
            assert_eq!(
                got_schema, schema,
                "schema of oid {type_oid}, typmod {typmod}"
            );
        }
    }
}

/// The values Debezium's own test suite expects for its `time_table`
/// (`AbstractRecordsProducerTest.schemaAndValuesForDateTimeTypes`, Debezium 3.4), fed with the
/// text pgoutput sends for the inserted values under `DateStyle=ISO, TimeZone=UTC`.
fn debeziums_own_expectations() -> Vec<(u32, i32, &'static str, Value, Value)> {
    let none = Value::Null;
    vec![
        // ts: '2016-11-04T13:51:30.123456'::TIMESTAMP
        (
            oid::TIMESTAMP,
            -1,
            "2016-11-04 13:51:30.123456",
            json!(1_478_267_490_123_456i64),
            none.clone(),
        ),
        // tsneg: TIMESTAMP(6) '1936-10-25T22:10:12.608'
        (
            oid::TIMESTAMP,
            6,
            "1936-10-25 22:10:12.608",
            json!(-1_047_174_587_392_000i64),
            none.clone(),
        ),
        // ts_ms: TIMESTAMP(3), rounded by PostgreSQL to .123
        (
            oid::TIMESTAMP,
            3,
            "2016-11-04 13:51:30.123",
            json!(1_478_267_490_123i64),
            none.clone(),
        ),
        // tz: '2016-11-04T13:51:30.123456+02:00'::TIMESTAMPTZ → "2016-11-04T11:51:30.123456Z"
        (
            oid::TIMESTAMPTZ,
            -1,
            "2016-11-04 11:51:30.123456+00",
            json!("2016-11-04T11:51:30.123456Z"),
            none.clone(),
        ),
        // date: '2016-11-04'
        (oid::DATE, -1, "2016-11-04", json!(17_109), none.clone()),
        // ti: TIME '13:51:30' (MicroTime); tip: TIME(3) '13:51:30.123' (Time); ttf: '24:00:00'
        (
            oid::TIME,
            -1,
            "13:51:30",
            json!(49_890_000_000i64),
            none.clone(),
        ),
        (
            oid::TIME,
            3,
            "13:51:30.123",
            json!(49_890_123),
            none.clone(),
        ),
        // ttz: TIMETZ '13:51:30.123789+02:00' → "11:51:30.123789Z"; tptz: TIMETZ(3)
        (
            oid::TIMETZ,
            -1,
            "13:51:30.123789+02",
            json!("11:51:30.123789Z"),
            none.clone(),
        ),
        (
            oid::TIMETZ,
            3,
            "13:51:30.123+02",
            json!("11:51:30.123Z"),
            none.clone(),
        ),
        // it: 'P1Y2M3DT4H5M6.78S' → MicroDuration.durationMicros(1, 2, 3, 4, 5, 6, 780000, …)
        (
            oid::INTERVAL,
            -1,
            "1 year 2 mons 3 days 04:05:06.78",
            json!(37_091_106_780_000i64),
            none.clone(),
        ),
        // ts_large, ts_large_ms: year 21016
        (
            oid::TIMESTAMP,
            -1,
            "21016-11-04 13:51:30.123456",
            json!(601_060_312_290_123_456i64),
            none.clone(),
        ),
        (
            oid::TIMESTAMP,
            3,
            "21016-11-04 13:51:30.124",
            json!(601_060_312_290_124i64),
            none.clone(),
        ),
        // tz_large: "+21016-11-04T06:51:30.123456Z"; tz_zero: "+21016-11-04T06:51:30.000000Z"
        (
            oid::TIMESTAMPTZ,
            -1,
            "21016-11-04 06:51:30.123456+00",
            json!("+21016-11-04T06:51:30.123456Z"),
            none.clone(),
        ),
        (
            oid::TIMESTAMPTZ,
            -1,
            "21016-11-04 06:51:30+00",
            json!("+21016-11-04T06:51:30.000000Z"),
            none.clone(),
        ),
        // ts_max: 9223371331200000000 - 1; tz_max: "+294247-01-01T23:59:59.999999Z"
        (
            oid::TIMESTAMP,
            -1,
            "294247-01-01 23:59:59.999999",
            json!(9_223_371_331_199_999_999i64),
            none.clone(),
        ),
        (
            oid::TIMESTAMPTZ,
            -1,
            "294247-01-01 23:59:59.999999+00",
            json!("+294247-01-01T23:59:59.999999Z"),
            none.clone(),
        ),
        // tz_min, streamed: "-4713-12-31T23:59:59.999999Z"
        (
            oid::TIMESTAMPTZ,
            -1,
            "4714-12-31 23:59:59.999999+00 BC",
            json!("-4713-12-31T23:59:59.999999Z"),
            none.clone(),
        ),
        // tz_pinf, tz_ninf
        (
            oid::TIMESTAMPTZ,
            -1,
            "-infinity",
            json!("-infinity"),
            none.clone(),
        ),
        // timetza element: "11:51:02Z"; timestamptza element: "2020-04-01T11:51:02.000000Z"
        (
            oid::TIMETZ_ARRAY,
            -1,
            "{11:51:02+00}",
            json!(["11:51:02Z"]),
            none.clone(),
        ),
        (
            oid::TIMESTAMPTZ_ARRAY,
            -1,
            r#"{"2020-04-01 11:51:02+00"}"#,
            json!(["2020-04-01T11:51:02.000000Z"]),
            none,
        ),
    ]
}

#[test]
fn enums_with_their_allowed_values() {
    let labels = vec!["pending".to_owned(), "sent".to_owned(), "failed".to_owned()];
    let (value, schema) = mapped_column(
        ColumnDef::new("c", 16_500, -1).with_user_type(UserType::Enum(labels.clone())),
        "sent",
    );
    assert_eq!(value, json!("sent"));
    assert_eq!(
        schema,
        json!({"type": "string", "optional": true, "name": "io.debezium.data.Enum", "version": 1,
               "parameters": {"allowed": "pending,sent,failed"}})
    );
    let (value, schema) = mapped_column(
        ColumnDef::new("c", 16_499, -1).with_user_type(UserType::EnumArray(labels)),
        "{sent,failed}",
    );
    assert_eq!(value, json!(["sent", "failed"]));
    assert_eq!(
        schema["items"]["parameters"]["allowed"],
        "pending,sent,failed"
    );
}

#[test]
fn bad_values_are_typed_errors_naming_the_column() {
    let encode = |type_oid: u32, typmod: i32, text: &str| {
        ChangeEventEncoder::new(
            ChangeEventConfig::default(),
            Relation {
                schema: "s".into(),
                table: "t".into(),
                columns: vec![ColumnDef::new("c", type_oid, typmod)],
            },
        )
        .unwrap()
        .encode(&[Some(text.to_owned())], &SourcePosition::default(), 0)
    };
    for (type_oid, typmod, text) in [
        (oid::INT2, -1, "40000"),
        (oid::INT4, -1, "1.5"),
        (oid::FLOAT8, -1, "one"),
        (oid::NUMERIC, -1, "NaN"),
        (oid::NUMERIC, (10 << 16 | 2) + 4, "1.234"),
        (oid::NUMERIC, -1, "1e5"),
        (oid::DATE, -1, "15/01/2024"),
        (oid::DATE, -1, "infinity"),
        (oid::TIMESTAMP, -1, "Mon Jan 15 10:30:00 2024"),
        (oid::TIMESTAMPTZ, -1, "2024-01-15 10:30:00"),
        (oid::TIME, -1, "10:61:00"),
        (oid::INTERVAL, -1, "P1D"),
        (oid::BYTEA, -1, "\\001"),
        (oid::BYTEA, -1, "\\x0"),
        (oid::INT4_ARRAY, -1, "{{1},{2}}"),
        (oid::INT4_ARRAY, -1, "{1,x}"),
    ] {
        match encode(type_oid, typmod, text) {
            Err(EncodeError::InvalidValue { column, .. }) => assert_eq!(column, "c"),
            other => panic!("{text:?} (oid {type_oid}): {other:?}"),
        }
    }
    // Too few values for the columns.
    assert_eq!(
        ChangeEventEncoder::new(ChangeEventConfig::default(), customers())
            .unwrap()
            .encode(&values(&ANNE[..3]), &SourcePosition::default(), 0)
            .unwrap_err(),
        EncodeError::ColumnCount {
            columns: 4,
            values: 3
        }
    );
}

#[test]
fn unknown_types_fail_by_default_or_are_omitted_as_debezium_does() {
    let relation = Relation {
        schema: "s".into(),
        table: "t".into(),
        columns: vec![
            ColumnDef::new("id", oid::INT4, -1).key(),
            ColumnDef::new("shape", 600, -1), // point
        ],
    };
    assert!(matches!(
        ChangeEventEncoder::new(ChangeEventConfig::default(), relation.clone()),
        Err(EncodeError::UnsupportedType { column, type_oid: 600, .. }) if column == "shape"
    ));
    let record = ChangeEventEncoder::new(
        ChangeEventConfig {
            unknown_types: UnknownTypes::Omit,
            ..ChangeEventConfig::default()
        },
        relation,
    )
    .unwrap()
    .encode(
        &values(&[Some("7"), Some("(1,2)")]),
        &SourcePosition::default(),
        0,
    )
    .unwrap();
    assert_eq!(json_of(&record.value)["after"], json!({"id": 7}));
}

#[test]
fn output_format_from_variables() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    // Defaults: Debezium's raw form, keyed by aggregate (Clustera's default).
    assert_eq!(
        OutputFormat::from_vars(vars(&[])).unwrap(),
        OutputFormat::Debezium(ChangeEventConfig {
            key: RawKey::Column("aggregate_id".into()),
            ..ChangeEventConfig::default()
        })
    );
    let OutputFormat::Debezium(c) = OutputFormat::from_vars(vars(&[
        ("CLUSTERA_OUTBOX_KEY_COLUMN", "primary-key"),
        ("CLUSTERA_OUTBOX_TOPIC", "outbox-events"),
    ]))
    .unwrap() else {
        panic!("not debezium")
    };
    assert_eq!(c.key, RawKey::PrimaryKey);
    let encoder = ChangeEventEncoder::new(c, seed_outbox()).unwrap();
    assert_eq!(encoder.topic(), "outbox-events");
    let OutputFormat::Debezium(c) = OutputFormat::from_vars(vars(&[
        ("CLUSTERA_OUTBOX_TOPIC_PREFIX", "shop"),
        ("CLUSTERA_OUTBOX_SCHEMAS", "true"),
        ("CLUSTERA_OUTBOX_KEY_COLUMN", "aggregate_id"),
    ]))
    .unwrap() else {
        panic!("not debezium")
    };
    assert_eq!(c.topic_prefix, "shop");
    assert!(c.schemas);
    assert_eq!(c.key, RawKey::Column("aggregate_id".into()));
    let OutputFormat::Router(r) = OutputFormat::from_vars(vars(&[
        ("CLUSTERA_OUTBOX_FORMAT", "router"),
        ("CLUSTERA_OUTBOX_ROUTER_FIELD_EVENT_ID", "event_id"),
        ("CLUSTERA_OUTBOX_ROUTER_FIELD_EVENT_KEY", "aggregate_id"),
        ("CLUSTERA_OUTBOX_ROUTER_ROUTE_BY_FIELD", "aggregate_type"),
        (
            "CLUSTERA_OUTBOX_ROUTER_TOPIC_REPLACEMENT",
            "events.${routedByValue}",
        ),
        (
            "CLUSTERA_OUTBOX_ROUTER_ADDITIONAL_PLACEMENT",
            "event_type:header:eventType",
        ),
        ("CLUSTERA_OUTBOX_ROUTER_TOMBSTONE_ON_EMPTY_PAYLOAD", "true"),
        ("CLUSTERA_OUTBOX_ROUTER_KEY_CONVERTER", "string"),
    ]))
    .unwrap() else {
        panic!("not router")
    };
    assert_eq!(
        (
            r.event_id.as_str(),
            r.event_key.as_str(),
            r.route_by.as_str(),
            r.topic_replacement.as_str()
        ),
        (
            "event_id",
            "aggregate_id",
            "aggregate_type",
            "events.${routedByValue}"
        )
    );
    assert!(r.tombstone_on_empty_payload && r.expand_json_payload);
    assert_eq!(r.key_converter, KeyConverter::String);
    assert_eq!(r.additional.len(), 1);
    assert_eq!(r.unknown_types, UnknownTypes::Omit);
    // The seed table in the router form, end to end.
    let record = OutputFormat::Router(r)
        .prepare(&seed_outbox())
        .unwrap()
        .encode(&values(&SEED_ROW), &SourcePosition::default(), 0)
        .unwrap();
    assert_eq!(record.topic, "events.User");
    assert_eq!(text(&record.key), "11111111-2222-4333-8444-555555555555");
    assert_eq!(
        text(&record.value),
        r#"{"email":"test@example.com","username":"testuser"}"#
    );
    for (pairs, variable) in [
        (
            &[("CLUSTERA_OUTBOX_FORMAT", "avro")][..],
            "CLUSTERA_OUTBOX_FORMAT",
        ),
        (
            &[("CLUSTERA_OUTBOX_SCHEMAS", "maybe")][..],
            "CLUSTERA_OUTBOX_SCHEMAS",
        ),
        (
            &[("CLUSTERA_OUTBOX_TOPIC_PREFIX", " ")][..],
            "CLUSTERA_OUTBOX_TOPIC_PREFIX",
        ),
        (
            &[("CLUSTERA_OUTBOX_UNKNOWN_TYPES", "keep")][..],
            "CLUSTERA_OUTBOX_UNKNOWN_TYPES",
        ),
        (
            &[
                ("CLUSTERA_OUTBOX_FORMAT", "router"),
                ("CLUSTERA_OUTBOX_ROUTER_KEY_CONVERTER", "avro"),
            ][..],
            "CLUSTERA_OUTBOX_ROUTER_KEY_CONVERTER",
        ),
        (
            &[
                ("CLUSTERA_OUTBOX_FORMAT", "router"),
                ("CLUSTERA_OUTBOX_ROUTER_ADDITIONAL_PLACEMENT", "x:y"),
            ][..],
            "CLUSTERA_OUTBOX_ROUTER_ADDITIONAL_PLACEMENT",
        ),
    ] {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let get = |name: &str| {
            owned
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        match OutputFormat::from_vars(get) {
            Err(EncodeError::Config { setting, .. }) => assert_eq!(setting, variable),
            other => panic!("{pairs:?}: {other:?}"),
        }
    }
}

proptest! {
    /// Any text in any mapped column: a value or a typed error, never a panic; and whatever
    /// encodes, decodes.
    #[test]
    fn arbitrary_text_never_panics(
        text in ".{0,40}",
        pick in 0usize..24,
        typmod in prop_oneof![Just(-1i32), 0i32..7, Just((10 << 16 | 2) + 4)],
    ) {
        let oids = [
            oid::BOOL, oid::INT2, oid::INT4, oid::INT8, oid::FLOAT4, oid::FLOAT8, oid::NUMERIC,
            oid::DATE, oid::TIME, oid::TIMESTAMP, oid::TIMESTAMPTZ, oid::TIMETZ, oid::INTERVAL,
            oid::BYTEA, oid::UUID, oid::JSONB, oid::INT4_ARRAY, oid::TEXT_ARRAY,
            oid::NUMERIC_ARRAY, oid::TIMESTAMPTZ_ARRAY, oid::DATE_ARRAY, oid::BYTEA_ARRAY,
            oid::TIME_ARRAY, oid::FLOAT8_ARRAY,
        ];
        let relation = Relation {
            schema: "s".into(),
            table: "t".into(),
            columns: vec![ColumnDef::new("c", oids[pick], typmod)],
        };
        let encoder = ChangeEventEncoder::new(ChangeEventConfig::default(), relation).unwrap();
        if let Ok(record) = encoder.encode(&[Some(text.clone())], &SourcePosition::default(), 0) {
            prop_assert!(decode(record.value.as_deref()).is_ok());
        }
        let router = RouterEncoder::new(RouterConfig::default(), &debezium_outbox()).unwrap();
        let mut row = documented_order_row();
        row[3] = Some(text);
        let _ = router.encode(&row, &SourcePosition::default(), 0);
    }
}
