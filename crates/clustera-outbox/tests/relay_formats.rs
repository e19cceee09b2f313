//! The relay's output formats end to end, against a real PostgreSQL and a real Kafka protocol
//! peer: the Outbox Event Router's form (routed topics, event id header, aggregate key),
//! Debezium's change event with schemas and the primary key, and rows or tables the format
//! refuses (a clear stop, or a dead letter when configured).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use clustera::testing::{kafka, MockBroker};
use clustera_debezium::{decode, decode_routed, Decoded, Op, RoutedHeaders};
use clustera_outbox::relay::{init, RelayConfig, RelayError};
use clustera_outbox::testing::Postgres;
use serde_json::Value;
use tokio_postgres::Client;

mod common;
use common::{connect, insert, spawn_relay, wait_relayed};

/// A relay configuration from variables, as `clustera outbox relay` reads them.
fn config(pairs: &[(&str, &str)]) -> RelayConfig {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    RelayConfig::from_vars(&move |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })
    .unwrap()
}

/// The Outbox Event Router on the seed's outbox columns, routing by `route_by`.
fn router(route_by: &str) -> Vec<(&str, &str)> {
    vec![
        ("CLUSTERA_OUTBOX_FORMAT", "router"),
        ("CLUSTERA_OUTBOX_ROUTER_FIELD_EVENT_ID", "event_id"),
        ("CLUSTERA_OUTBOX_ROUTER_FIELD_EVENT_KEY", "aggregate_id"),
        ("CLUSTERA_OUTBOX_ROUTER_ROUTE_BY_FIELD", route_by),
        (
            "CLUSTERA_OUTBOX_ROUTER_ADDITIONAL_PLACEMENT",
            "event_type:header:eventType",
        ),
    ]
}

async fn ids_by_type(client: &Client) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in client
        .query(
            "SELECT aggregate_type, event_id::text FROM activity.event_outbox",
            &[],
        )
        .await
        .unwrap()
    {
        out.entry(row.get(0)).or_default().insert(row.get(1));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_router_form_routes_each_aggregate_type_to_its_topic() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let client = connect(pg.url()).await;
    init(pg.url(), &RelayConfig::default()).await.unwrap();
    let broker = MockBroker::start(1).unwrap();
    let bootstrap = broker.bootstrap().to_owned();
    for topic in ["outbox.event.User", "outbox.event.Order"] {
        broker.create_topic(topic, 3).unwrap();
    }
    insert(&client, 0, 3, 10).await;
    client
        .execute(
            "INSERT INTO activity.event_outbox (aggregate_id, aggregate_type, event_type, payload)
             SELECT gen_random_uuid(), 'Order', 'OrderPlaced', jsonb_build_object('n', i)
             FROM generate_series(1, 20) AS i",
            &[],
        )
        .await
        .unwrap();
    let relay = spawn_relay(pg.url(), &bootstrap, config(&router("aggregate_type"))).await;
    wait_relayed(&relay.relayed, 50).await;
    let _ = relay.stop.send(());
    relay.task.await.unwrap().unwrap();

    let expected = ids_by_type(&client).await;
    for (aggregate_type, ids) in &expected {
        let topic = format!("outbox.event.{aggregate_type}");
        let records = kafka::read_topic(&bootstrap, &topic).unwrap();
        let mut seen = BTreeSet::new();
        for r in &records {
            let headers: Vec<(&str, &[u8])> = r
                .headers
                .iter()
                .filter_map(|h| Some((h.name.as_str(), h.value.as_deref()?)))
                .collect();
            let event = decode_routed(
                &topic,
                r.key.as_deref(),
                r.value.as_deref(),
                &headers,
                &RoutedHeaders::default(),
            )
            .unwrap_or_else(|e| panic!("{topic}: {e}"));
            assert_eq!(&event.aggregate_type, aggregate_type);
            // The key is the aggregate id as the JSON converter writes a string.
            let key: Value = serde_json::from_slice(r.key.as_deref().unwrap()).unwrap();
            assert_eq!(key, Value::String(event.aggregate_id.clone()));
            let event_type = r.header("eventType").unwrap();
            assert_eq!(
                event_type,
                if aggregate_type == "User" {
                    "UserCreated"
                } else {
                    "OrderPlaced"
                }
            );
            // The payload is expanded: a JSON object, not a string holding one.
            let value: Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
            assert!(value.is_object(), "{value}");
            seen.insert(event.event_id);
        }
        assert_eq!(records.len(), ids.len(), "{topic}: duplicates");
        assert_eq!(&seen, ids, "{topic}: lost or foreign events");
    }
    assert_eq!(expected.values().map(BTreeSet::len).sum::<usize>(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn debezium_events_with_schemas_and_the_primary_key() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let client = connect(pg.url()).await;
    init(pg.url(), &RelayConfig::default()).await.unwrap();
    let broker = MockBroker::start(1).unwrap();
    let bootstrap = broker.bootstrap().to_owned();
    let topic = "shop.activity.event_outbox";
    broker.create_topic(topic, 2).unwrap();
    insert(&client, 0, 2, 5).await;
    let config = config(&[
        ("CLUSTERA_OUTBOX_TOPIC_PREFIX", "shop"),
        ("CLUSTERA_OUTBOX_SCHEMAS", "true"),
        ("CLUSTERA_OUTBOX_KEY_COLUMN", "primary-key"),
    ]);
    assert_eq!(config.topic().as_deref(), Some(topic));
    let relay = spawn_relay(pg.url(), &bootstrap, config).await;
    wait_relayed(&relay.relayed, 10).await;
    let _ = relay.stop.send(());
    relay.task.await.unwrap().unwrap();

    let database: String = client
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    let records = kafka::read_topic(&bootstrap, topic).unwrap();
    assert_eq!(records.len(), 10);
    let mut ids = BTreeSet::new();
    for r in &records {
        // Debezium's key: the replica identity's columns, with their schema.
        let key: Value = serde_json::from_slice(r.key.as_deref().unwrap()).unwrap();
        assert_eq!(key["schema"]["name"], "shop.activity.event_outbox.Key");
        let id = key["payload"]["event_id"].as_str().unwrap().to_owned();
        let value: Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        assert_eq!(
            value["schema"]["name"],
            "shop.activity.event_outbox.Envelope"
        );
        let Decoded::Change(change) = decode(r.value.as_deref()).unwrap() else {
            panic!("a tombstone")
        };
        assert_eq!(change.op, Op::Create);
        let after = change.after.as_ref().unwrap();
        assert_eq!(after["event_id"], Value::String(id.clone()));
        let source = &value["payload"]["source"];
        assert_eq!(source["db"], Value::String(database.clone()));
        assert_eq!(source["name"], "shop");
        assert!(source["lsn"].as_i64().unwrap() > 0, "{source}");
        assert!(source["txId"].as_i64().unwrap() > 0, "{source}");
        ids.insert(id);
    }
    assert_eq!(
        ids,
        client
            .query("SELECT event_id::text FROM activity.event_outbox", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<BTreeSet<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_the_format_cannot_write_stops_the_relay_with_the_reason() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let client = connect(pg.url()).await;
    init(pg.url(), &RelayConfig::default()).await.unwrap();
    let broker = MockBroker::start(1).unwrap();
    insert(&client, 0, 1, 1).await;
    let relay = spawn_relay(pg.url(), broker.bootstrap(), config(&router("region"))).await;
    let e = relay.task.await.unwrap().unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, RelayError::Table { .. }), "{text}");
    assert!(
        text.contains("activity.event_outbox") && text.contains("region"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_row_the_format_refuses_stops_the_relay_or_goes_to_the_dead_letter_topic() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let client = connect(pg.url()).await;
    init(pg.url(), &RelayConfig::default()).await.unwrap();
    client
        .batch_execute("ALTER TABLE activity.event_outbox ADD COLUMN route text")
        .await
        .unwrap();
    let broker = MockBroker::start(1).unwrap();
    let bootstrap = broker.bootstrap().to_owned();
    broker.create_topic("outbox.event.A", 1).unwrap();
    broker.create_topic("outbox.dead", 1).unwrap();
    // Two routed rows, one with no route, two more; each its own transaction.
    for route in [Some("A"), Some("A"), None, Some("A"), Some("A")] {
        client
            .execute(
                "INSERT INTO activity.event_outbox (aggregate_id, aggregate_type, event_type, payload, route)
                 VALUES (gen_random_uuid(), 'User', 'UserCreated', '{}', $1)",
                &[&route],
            )
            .await
            .unwrap();
    }
    let mut pairs = router("route");

    // Without a dead-letter topic, the relay stops at the row and names it.
    let relay = spawn_relay(pg.url(), &bootstrap, config(&pairs)).await;
    let e = relay.task.await.unwrap().unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, RelayError::Row { .. }), "{text}");
    assert!(
        text.contains("route") && text.contains("CLUSTERA_OUTBOX_DEAD_LETTER_TOPIC"),
        "{text}"
    );

    // With one, the row is dead-lettered and the rest go on.
    pairs.push(("CLUSTERA_OUTBOX_DEAD_LETTER_TOPIC", "outbox.dead"));
    let relay = spawn_relay(pg.url(), &bootstrap, config(&pairs)).await;
    wait_relayed(&relay.relayed, 5).await;
    let _ = relay.stop.send(());
    relay.task.await.unwrap().unwrap();

    let rows = client
        .query(
            "SELECT event_id::text, route FROM activity.event_outbox",
            &[],
        )
        .await
        .unwrap();
    let routed: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.get::<_, Option<String>>(1).is_some())
        .map(|r| r.get(0))
        .collect();
    let unrouted: Vec<String> = rows
        .iter()
        .filter(|r| r.get::<_, Option<String>>(1).is_none())
        .map(|r| r.get(0))
        .collect();
    // The first relay may have sent the first two rows before it stopped: at least once.
    let sent: BTreeSet<String> = kafka::read_topic(&bootstrap, "outbox.event.A")
        .unwrap()
        .iter()
        .map(|r| r.header("id").unwrap())
        .collect();
    assert_eq!(sent, routed);
    let dead = kafka::read_topic(&bootstrap, "outbox.dead").unwrap();
    assert_eq!(dead.len(), 1, "the refused row, once");
    let row: Value = serde_json::from_slice(dead[0].value.as_deref().unwrap()).unwrap();
    assert_eq!(row["event_id"], Value::String(unrouted[0].clone()));
    assert_eq!(row["route"], Value::Null);
    assert!(dead[0].header("clustera.error").unwrap().contains("route"));
    assert_eq!(
        dead[0].header("clustera.relay.table").as_deref(),
        Some("activity.event_outbox")
    );
    assert!(dead[0].header("clustera.relay.lsn").unwrap().contains('/'));
}
