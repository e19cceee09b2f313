//! The registry client and the registry codecs against a real HTTP registry on loopback:
//! registration, lookup, fetch by id, caching, evolution, and each failure with its kind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use clustera::config::Secret;
use clustera::{ErrorKind, Message};
use clustera_schema::testing::TestRegistry;
use clustera_schema::{
    wire, AvroSchema, EventCodec, JsonSchema, RegistryClient, RegistryError, RegistrySettings,
    SchemaType, SubjectNameStrategy,
};
use serde::{Deserialize, Serialize};

const V1: &str = r#"{"type":"record","name":"OrderEvent","namespace":"shop","fields":[
    {"name":"order_id","type":"string"},{"name":"amount_cents","type":"long"}]}"#;
const V2: &str = r#"{"type":"record","name":"OrderEvent","namespace":"shop","fields":[
    {"name":"order_id","type":"string"},{"name":"amount_cents","type":"long"},
    {"name":"coupon","type":["null","string"],"default":null}]}"#;
/// A new required field without a default: v3 cannot read v2's records.
const V3_BREAKING: &str = r#"{"type":"record","name":"OrderEvent","namespace":"shop","fields":[
    {"name":"order_id","type":"string"},{"name":"amount_cents","type":"long"},
    {"name":"region","type":"string"}]}"#;

#[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
struct OrderV1 {
    order_id: String,
    amount_cents: i64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
struct OrderV2 {
    order_id: String,
    amount_cents: i64,
    coupon: Option<String>,
}

fn client(registry: &TestRegistry) -> Arc<RegistryClient> {
    Arc::new(RegistryClient::new(RegistrySettings::new(registry.url())).unwrap())
}

fn message(value: Vec<u8>) -> Message {
    Message::new("orders", 0, 0).with_value(value)
}

#[tokio::test]
async fn register_lookup_fetch_and_cache() {
    let registry = TestRegistry::start().unwrap();
    let c = client(&registry);
    let id = c
        .register("orders-value", SchemaType::Avro, V1)
        .await
        .unwrap();
    assert_eq!(
        c.lookup("orders-value", SchemaType::Avro, V1)
            .await
            .unwrap(),
        id
    );
    // A second client (no cache) sees the same ids.
    let fresh = client(&registry);
    assert_eq!(
        fresh
            .lookup("orders-value", SchemaType::Avro, V1)
            .await
            .unwrap(),
        id
    );
    let found = fresh.schema_by_id(id).await.unwrap();
    assert_eq!(
        (found.schema_type, found.schema.as_str()),
        (SchemaType::Avro, V1)
    );
    let v2 = fresh
        .register("orders-value", SchemaType::Avro, V2)
        .await
        .unwrap();
    assert_ne!(v2, id);
    let latest = fresh.latest("orders-value").await.unwrap();
    assert_eq!((latest.version, latest.schema.id), (2, v2));
    assert_eq!(registry.versions("orders-value"), [id, v2]);

    // After the first call for each schema, nothing goes over the wire.
    let before = registry.requests();
    for _ in 0..50 {
        fresh
            .register("orders-value", SchemaType::Avro, V2)
            .await
            .unwrap();
        fresh.schema_by_id(id).await.unwrap();
        fresh.avro_schema(id).await.unwrap();
    }
    // One parse of schema `id` is all: it was fetched already.
    assert_eq!(registry.requests(), before);
}

#[tokio::test]
async fn avro_codec_evolves_and_reads_older_records() {
    let registry = TestRegistry::start().unwrap();
    let old =
        EventCodec::<OrderV1>::registry_avro(client(&registry), AvroSchema::parse(V1).unwrap());
    let new =
        EventCodec::<OrderV2>::registry_avro(client(&registry), AvroSchema::parse(V2).unwrap());
    let old_bytes = old
        .encode(
            "orders",
            &OrderV1 {
                order_id: "o1".into(),
                amount_cents: 100,
            },
        )
        .await
        .unwrap();
    let new_bytes = new
        .encode(
            "orders",
            &OrderV2 {
                order_id: "o2".into(),
                amount_cents: 200,
                coupon: Some("WELCOME".into()),
            },
        )
        .await
        .unwrap();
    assert_ne!(
        wire::decode(&old_bytes).unwrap().schema_id,
        wire::decode(&new_bytes).unwrap().schema_id
    );
    // The v2 reader reads both; the v1 record gets the default.
    let a = new.decode(&message(old_bytes.clone())).await.unwrap();
    assert_eq!(
        a,
        OrderV2 {
            order_id: "o1".into(),
            amount_cents: 100,
            coupon: None
        }
    );
    let b = new.decode(&message(new_bytes.clone())).await.unwrap();
    assert_eq!(b.coupon.as_deref(), Some("WELCOME"));
    // The v1 reader (an old consumer not yet upgraded) reads v2 records, ignoring the coupon.
    let c = old.decode(&message(new_bytes)).await.unwrap();
    assert_eq!(
        c,
        OrderV1 {
            order_id: "o2".into(),
            amount_cents: 200
        }
    );
    assert_eq!(registry.versions("orders-value").len(), 2);
}

#[tokio::test]
async fn incompatible_schema_is_a_clear_permanent_error() {
    let registry = TestRegistry::start().unwrap();
    let c = client(&registry);
    c.register("orders-value", SchemaType::Avro, V2)
        .await
        .unwrap();
    let err = c
        .register("orders-value", SchemaType::Avro, V3_BREAKING)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Incompatible { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("incompatible with subject \"orders-value\" (registry 409)"),
        "{text}"
    );
    assert!(!err.is_retriable());

    #[derive(Serialize)]
    struct V3 {
        order_id: String,
        amount_cents: i64,
        region: String,
    }
    let codec = EventCodec::<V3>::registry_avro(c, AvroSchema::parse(V3_BREAKING).unwrap());
    let err = codec
        .encode(
            "orders",
            &V3 {
                order_id: "o".into(),
                amount_cents: 1,
                region: "eu".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(err.to_string().contains("registry 409"), "{err}");
}

#[tokio::test]
async fn unknown_ids_and_unframed_values_are_poison_pills() {
    let registry = TestRegistry::start().unwrap();
    let codec =
        EventCodec::<OrderV1>::registry_avro(client(&registry), AvroSchema::parse(V1).unwrap());
    let err = codec
        .decode(&message(wire::encode(4242, b"\x02x\x02")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(
        err.to_string().contains("schema id 4242 is unknown"),
        "{err}"
    );
    let err = codec
        .decode(&message(br#"{"order_id":"o"}"#.to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(err.to_string().contains("not the magic byte 0"), "{err}");
    // A truncated datum of a known schema.
    let good = codec
        .encode(
            "orders",
            &OrderV1 {
                order_id: "o1".into(),
                amount_cents: 100,
            },
        )
        .await
        .unwrap();
    let err = codec
        .decode(&message(good[..good.len() - 1].to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(
        err.to_string().contains("a datum of shop.OrderEvent"),
        "{err}"
    );
    // A JSON Schema id given to the Avro codec.
    let c = client(&registry);
    let json_id = c
        .register("other-value", SchemaType::Json, r#"{"type":"object"}"#)
        .await
        .unwrap();
    let err = codec
        .decode(&message(wire::encode(json_id, b"{}")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(err.to_string().contains("this codec reads Avro"), "{err}");
}

#[tokio::test]
async fn unreachable_registry_is_retried_and_the_next_url_is_tried() {
    // A port that was free a moment ago: connection refused.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut settings = RegistrySettings::new(closed.clone());
    settings.timeout = Duration::from_secs(5);
    let down = Arc::new(RegistryClient::new(settings.clone()).unwrap());
    let err = down.schema_by_id(1).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::Unreachable { .. }) && err.is_retriable(),
        "{err:?}"
    );
    assert!(err.to_string().contains("unreachable"), "{err}");
    let codec = EventCodec::<OrderV1>::registry_avro(down, AvroSchema::parse(V1).unwrap());
    let err = codec
        .decode(&message(wire::encode(1, b"")))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Unavailable,
        "never dead-lettered: {err}"
    );
    let err = codec
        .encode(
            "orders",
            &OrderV1 {
                order_id: "o".into(),
                amount_cents: 1,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");

    // With a second URL that answers, the client fails over.
    let registry = TestRegistry::start().unwrap();
    settings.urls.push(registry.url().to_owned());
    let both = RegistryClient::new(settings).unwrap();
    let id = both
        .register("orders-value", SchemaType::Avro, V1)
        .await
        .unwrap();
    assert_eq!(both.schema_by_id(id).await.unwrap().schema, V1);
}

#[tokio::test]
async fn basic_auth_is_sent_and_a_refusal_is_explained() {
    let registry = TestRegistry::start_with_basic_auth("api-key", "s3cret").unwrap();
    let anonymous = client(&registry);
    let err = anonymous
        .register("s", SchemaType::Avro, V1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("SCHEMA_REGISTRY_USERNAME"),
        "{err}"
    );
    let mut settings = RegistrySettings::new(registry.url());
    settings.basic_auth = Some(("api-key".into(), Secret::new("s3cret")));
    let authed = RegistryClient::new(settings).unwrap();
    let id = authed.register("s", SchemaType::Avro, V1).await.unwrap();
    assert_eq!(authed.schema_by_id(id).await.unwrap().id, id);
}

#[tokio::test]
async fn lookup_without_registering_and_subject_strategies() {
    let registry = TestRegistry::start().unwrap();
    let c = client(&registry);
    let codec = EventCodec::<OrderV1>::registry_avro(c.clone(), AvroSchema::parse(V1).unwrap())
        .auto_register(false);
    let event = OrderV1 {
        order_id: "o".into(),
        amount_cents: 1,
    };
    let err = codec.encode("orders", &event).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(
        err.to_string()
            .contains("not registered under subject \"orders-value\""),
        "{err}"
    );
    let id = c
        .register("orders-value", SchemaType::Avro, V1)
        .await
        .unwrap();
    let bytes = codec.encode("orders", &event).await.unwrap();
    assert_eq!(wire::decode(&bytes).unwrap().schema_id, id);

    for (strategy, subject) in [
        (SubjectNameStrategy::Record, "shop.OrderEvent"),
        (SubjectNameStrategy::TopicRecord, "payments-shop.OrderEvent"),
    ] {
        let codec = EventCodec::<OrderV1>::registry_avro(c.clone(), AvroSchema::parse(V1).unwrap())
            .subject_strategy(strategy);
        codec.encode("payments", &event).await.unwrap();
        assert_eq!(registry.versions(subject), [id], "{strategy}");
    }
}

#[tokio::test]
async fn json_schema_codec_validates_both_ways() {
    let registry = TestRegistry::start().unwrap();
    let schema = JsonSchema::parse(
        r#"{"title":"OrderEvent","type":"object","required":["order_id","amount_cents"],
            "properties":{"order_id":{"type":"string","minLength":1},
                          "amount_cents":{"type":"integer","minimum":1}}}"#,
    )
    .unwrap();
    let codec = EventCodec::<OrderV1>::registry_json(client(&registry), schema);
    let bytes = codec
        .encode(
            "orders",
            &OrderV1 {
                order_id: "o1".into(),
                amount_cents: 5,
            },
        )
        .await
        .unwrap();
    let framed = wire::decode(&bytes).unwrap();
    assert_eq!(framed.payload, br#"{"amount_cents":5,"order_id":"o1"}"#);
    assert_eq!(
        codec
            .decode(&message(bytes.clone()))
            .await
            .unwrap()
            .amount_cents,
        5
    );
    let err = codec
        .encode(
            "orders",
            &OrderV1 {
                order_id: String::new(),
                amount_cents: 0,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(
        err.to_string().contains("at /amount_cents") && err.to_string().contains("at /order_id"),
        "{err}"
    );
    // A record another producer wrote with the same schema id but an invalid value.
    let bad = wire::encode(framed.schema_id, br#"{"order_id":"o2","amount_cents":-3}"#);
    let err = codec.decode(&message(bad)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(
        err.to_string()
            .contains("at /amount_cents: -3 is less than the minimum of 1"),
        "{err}"
    );
}
