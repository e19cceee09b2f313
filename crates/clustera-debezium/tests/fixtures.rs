//! Every recorded form decodes to the expected typed event; malformed inputs give typed
//! errors; nothing panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clustera_debezium::{
    decode, decode_routed, ChangeEvent, DecodeError, Decoded, Op, OutboxColumns, OutboxEvent,
    RoutedHeaders, Snapshot,
};
use proptest::prelude::*;
use serde_json::json;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn change(name: &str) -> ChangeEvent {
    match decode(Some(&fixture(name))).unwrap_or_else(|e| panic!("{name}: {e}")) {
        Decoded::Change(c) => *c,
        Decoded::Tombstone => panic!("{name} is not a tombstone"),
    }
}

fn outbox(name: &str) -> OutboxEvent {
    OutboxEvent::from_change(&change(name), &OutboxColumns::default())
        .unwrap()
        .unwrap()
}

const PAYLOAD: fn() -> serde_json::Value =
    || json!({"email": "test@example.com", "username": "testuser"});

#[test]
fn create_with_and_without_the_schema_wrapper() {
    for name in ["create_no_schema.json", "create_with_schema.json"] {
        let c = change(name);
        assert_eq!(c.op, Op::Create);
        assert_eq!(c.source.snapshot, Some(Snapshot::No));
        assert_eq!(c.source.qualified_table(), "activity.event_outbox");
        assert_eq!(c.source.lsn, Some(24_023_928));
        assert_eq!(c.ts_us, Some(1_705_314_600_456_789), "ts_ns wins");
        let e = outbox(name);
        assert_eq!(e.event_id, "8a4d2b1e-3f5c-4e7a-9b1d-2c3e4f5a6b7c");
        assert_eq!(e.aggregate_id, "11111111-2222-4333-8444-555555555555");
        assert_eq!(
            (e.aggregate_type.as_str(), e.event_type.as_str()),
            ("User", "UserCreated")
        );
        assert_eq!(e.payload, PAYLOAD(), "jsonb string expanded");
        assert_eq!(e.status.as_deref(), Some("pending"));
        assert_eq!(e.created_at_us, Some(1_705_314_600_123_456));
    }
}

#[test]
fn update_delete_snapshot_truncate_message() {
    let u = outbox("update.json");
    assert_eq!(u.event_type, "UserUpdated");
    assert_eq!(change("update.json").op, Op::Update);

    let d = change("delete.json");
    assert_eq!((d.op, d.after.is_none()), (Op::Delete, true));
    assert_eq!(
        outbox("delete.json").event_id,
        "8a4d2b1e-3f5c-4e7a-9b1d-2c3e4f5a6b7c",
        "delete carries the old row"
    );

    let r = change("snapshot_read.json");
    assert_eq!(
        (r.op, r.source.snapshot.clone()),
        (Op::Read, Some(Snapshot::Last))
    );
    assert_eq!(r.ts_us, Some(1_705_314_600_456_000), "ts_ms only");

    let old = change("snapshot_read_boolean_old.json");
    assert_eq!(
        old.source.snapshot,
        Some(Snapshot::Yes),
        "boolean snapshot of old examples"
    );
    let e = outbox("snapshot_read_boolean_old.json");
    assert_eq!(e.payload, PAYLOAD(), "already expanded jsonb");
    assert_eq!(
        e.created_at_us,
        Some(1_705_314_600_123_456),
        "microsecond integer"
    );

    let t = change("truncate.json");
    assert_eq!(t.op, Op::Truncate);
    assert_eq!(
        OutboxEvent::from_change(&t, &OutboxColumns::default()).unwrap(),
        None
    );
    let m = change("message.json");
    assert_eq!(m.op, Op::Message);
    assert_eq!(m.message.unwrap()["prefix"], "audit");
}

#[test]
fn tombstones() {
    assert_eq!(decode(None).unwrap(), Decoded::Tombstone);
    assert_eq!(decode(Some(b"null")).unwrap(), Decoded::Tombstone);
    assert_eq!(
        decode(Some(br#"{"schema":null,"payload":null}"#)).unwrap(),
        Decoded::Tombstone
    );
}

#[test]
fn outbox_event_router_forms() {
    let id = b"8a4d2b1e-3f5c-4e7a-9b1d-2c3e4f5a6b7c".as_slice();
    let quoted = br#""8a4d2b1e-3f5c-4e7a-9b1d-2c3e4f5a6b7c""#.as_slice();
    for (name, id_header) in [
        ("router_escaped.json", id),
        ("router_escaped_with_schema.json", quoted),
        ("router_expanded.json", id),
    ] {
        let headers: [(&str, &[u8]); 2] = [("id", id_header), ("eventType", b"UserCreated")];
        let e = decode_routed(
            "outbox.event.User",
            Some(br#""11111111-2222-4333-8444-555555555555""#),
            Some(&fixture(name)),
            &headers,
            &RoutedHeaders::default(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(e.event_id, "8a4d2b1e-3f5c-4e7a-9b1d-2c3e4f5a6b7c", "{name}");
        assert_eq!(e.aggregate_id, "11111111-2222-4333-8444-555555555555");
        assert_eq!(
            (e.aggregate_type.as_str(), e.event_type.as_str()),
            ("User", "UserCreated")
        );
        assert_eq!(e.payload, PAYLOAD(), "{name}");
    }
    let missing = decode_routed(
        "outbox.event.User",
        Some(b"k"),
        Some(b"{}"),
        &[],
        &RoutedHeaders::default(),
    );
    assert_eq!(missing, Err(DecodeError::Missing("header id".into())));
}

#[test]
fn router_form_with_only_its_default_id_header() {
    // Debezium's router with no options: topic outbox.event.<aggregatetype>, key the
    // aggregate id (JsonConverter: a quoted string), the payload as value, header `id` only.
    let id = b"406c07f3-26f0-4eea-a50c-109940064b8f".as_slice();
    let headers: [(&str, &[u8]); 1] = [("id", id)];
    let payload = br#"{"id": 1, "type": "OrderCreated", "customerId": 123}"#;
    let e = decode_routed(
        "outbox.event.Order",
        Some(br#""1""#),
        Some(payload),
        &headers,
        &RoutedHeaders::default(),
    )
    .unwrap();
    assert_eq!(e.event_id, "406c07f3-26f0-4eea-a50c-109940064b8f");
    assert_eq!(e.aggregate_id, "1");
    assert_eq!(e.aggregate_type, "Order");
    // No event type anywhere: the aggregate type stands for it.
    assert_eq!(e.event_type, "Order");
    // Told where the payload carries it, it is taken from there.
    let names = RoutedHeaders {
        event_type_field: Some("type".into()),
        ..RoutedHeaders::default()
    };
    let e = decode_routed(
        "outbox.event.Order",
        Some(br#""1""#),
        Some(payload),
        &headers,
        &names,
    )
    .unwrap();
    assert_eq!(e.event_type, "OrderCreated");
    assert_eq!(e.payload["customerId"], 123);
    // A header still wins over the payload's field.
    let with_header: [(&str, &[u8]); 2] = [("id", id), ("eventType", b"OrderShipped")];
    let e = decode_routed(
        "outbox.event.Order",
        Some(b"1"),
        Some(payload),
        &with_header,
        &names,
    )
    .unwrap();
    assert_eq!(e.event_type, "OrderShipped");
}

#[test]
fn debeziums_standard_outbox_columns() {
    // The raw change event of Debezium's documented outbox example, through a processor that
    // knows Clustera's columns first and Debezium's standard ones second.
    let raw = br#"{"before":null,"after":{"id":"406c07f3-26f0-4eea-a50c-109940064b8f","aggregateid":"1","aggregatetype":"Order","payload":"{\"id\": 1, \"customerId\": 123}","timestamp":1556890294344,"type":"OrderCreated"},"source":{"connector":"postgresql","schema":"inventory","table":"outboxevent"},"op":"c","ts_ms":1556890294484}"#;
    let Decoded::Change(c) = decode(Some(raw)).unwrap() else {
        panic!("tombstone")
    };
    assert_eq!(
        OutboxEvent::from_change(&c, &OutboxColumns::default()),
        Err(DecodeError::NotOutbox("inventory.outboxevent".into()))
    );
    let mappings = [OutboxColumns::default(), OutboxColumns::debezium()];
    let e = OutboxEvent::from_change_any(&c, &mappings)
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            e.event_id.as_str(),
            e.aggregate_id.as_str(),
            e.aggregate_type.as_str(),
            e.event_type.as_str()
        ),
        (
            "406c07f3-26f0-4eea-a50c-109940064b8f",
            "1",
            "Order",
            "OrderCreated"
        )
    );
    assert_eq!(e.payload, json!({"id": 1, "customerId": 123}));
    assert_eq!((e.status, e.created_at_us), (None, None));
    // A bigint aggregate id is read as its text.
    let numeric = json!({"id": "x", "aggregateid": 42, "aggregatetype": "Order", "type": "OrderCreated", "payload": null});
    let e =
        OutboxEvent::from_row(numeric.as_object().unwrap(), &OutboxColumns::debezium()).unwrap();
    assert_eq!(e.aggregate_id, "42");
    // Clustera's own rows still take the first mapping.
    assert_eq!(
        OutboxEvent::from_change_any(&change("create_no_schema.json"), &mappings)
            .unwrap()
            .unwrap(),
        outbox("create_no_schema.json")
    );
}

#[test]
fn malformed_inputs_give_typed_errors() {
    let corpus: &[(&[u8], &str)] = &[
        (b"", "not JSON"),
        (b"{", "not JSON"),
        (b"[1,2]", "is not a JSON object"),
        (b"42", "is not a JSON object"),
        (br#"{"after":{}}"#, "missing field `op`"),
        (br#"{"op":"x","after":{}}"#, "unknown op"),
        (br#"{"op":7,"after":{}}"#, "expected a string"),
        (br#"{"op":"c"}"#, "missing field `after`"),
        (br#"{"op":"c","after":[]}"#, "expected an object"),
        (br#"{"op":"d","after":null}"#, "missing field `before`"),
        (
            br#"{"op":"c","after":{},"source":{"snapshot":"maybe"}}"#,
            "unknown value",
        ),
        (
            br#"{"op":"c","after":{},"source":{"snapshot":1}}"#,
            "expected a string or boolean",
        ),
        (
            br#"{"op":"c","after":{},"source":"pg"}"#,
            "source is not a JSON object",
        ),
        (
            br#"{"op":"c","after":{},"ts_ms":"soon"}"#,
            "expected a number",
        ),
        (
            br#"{"op":"c","after":{},"ts_ms":1.5}"#,
            "is not a whole number",
        ),
        (br#"{"op":"m"}"#, "missing field `message`"),
    ];
    for (input, expected) in corpus {
        let err = decode(Some(input)).expect_err(&String::from_utf8_lossy(input));
        assert!(
            err.to_string().contains(expected),
            "{}: {err}",
            String::from_utf8_lossy(input)
        );
    }
    let rows: &[(serde_json::Value, &str)] = &[
        (json!({"event_type": "X"}), "missing field `event_id`"),
        (
            json!({"event_id": "1", "aggregate_id": "a", "aggregate_type": "T", "event_type": ""}),
            "is empty",
        ),
        (
            json!({"event_id": true, "aggregate_id": "a", "aggregate_type": "T", "event_type": "E"}),
            "expected a string",
        ),
        (
            json!({"event_id": 1.5, "aggregate_id": "a", "aggregate_type": "T", "event_type": "E"}),
            "expected a string",
        ),
        (
            json!({"event_id": "1", "aggregate_id": "a", "aggregate_type": "T", "event_type": "E", "payload": "{oops"}),
            "jsonb column is not JSON",
        ),
        (
            json!({"event_id": "1", "aggregate_id": "a", "aggregate_type": "T", "event_type": "E", "created_at": "yesterday"}),
            "not an ISO-8601",
        ),
        (
            json!({"event_id": "1", "aggregate_id": "a", "aggregate_type": "T", "event_type": "E", "created_at": true}),
            "expected a timestamp",
        ),
    ];
    for (row, expected) in rows {
        let err =
            OutboxEvent::from_row(row.as_object().unwrap(), &OutboxColumns::default()).unwrap_err();
        assert!(err.to_string().contains(expected), "{row}: {err}");
    }
    let other_table = decode(Some(
        br#"{"op":"c","after":{"name":"x"},"source":{"schema":"public","table":"users"}}"#,
    ))
    .unwrap();
    let Decoded::Change(c) = other_table else {
        panic!()
    };
    assert_eq!(
        OutboxEvent::from_change(&c, &OutboxColumns::default()),
        Err(DecodeError::NotOutbox("public.users".into()))
    );
}

proptest! {
    /// Arbitrary bytes and arbitrary JSON never panic the decoders.
    #[test]
    fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512), text in "\\PC{0,200}") {
        let _ = decode(Some(&bytes));
        let _ = decode(Some(text.as_bytes()));
        let headers: [(&str, &[u8]); 2] = [("id", &bytes), ("eventType", text.as_bytes())];
        let _ = decode_routed(&text, Some(&bytes), Some(text.as_bytes()), &headers, &RoutedHeaders::default());
        if let Ok(Decoded::Change(c)) = decode(Some(text.as_bytes())) {
            let _ = OutboxEvent::from_change(&c, &OutboxColumns::default());
        }
    }
}
