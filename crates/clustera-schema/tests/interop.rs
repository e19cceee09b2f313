//! Interoperability with the reference client: bytes written by confluent-kafka's Python
//! `AvroSerializer` / `JSONSerializer` decode in Clustera, and Clustera's bytes decode with
//! its `AvroDeserializer` / `JSONDeserializer`. Both clients talk to the same registry (the
//! in-memory one on loopback), so they share schema ids; what is tested is the bytes.
//!
//! Needs the Python client: `scripts/install-python-schema.sh` installs it into a cached
//! virtualenv (run by this test when `CLUSTERA_SCHEMA_PYTHON` is not set).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

use clustera::Message;
use clustera_schema::testing::TestRegistry;
use clustera_schema::{wire, AvroSchema, EventCodec, JsonSchema, RegistryClient, RegistrySettings};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const ORDER_V1: &str = r#"{"type":"record","name":"OrderEvent","namespace":"shop","fields":[
  {"name":"order_id","type":"string"},
  {"name":"customer","type":"string"},
  {"name":"amount_cents","type":"long"},
  {"name":"currency","type":{"type":"enum","name":"Currency","symbols":["EUR","USD","JPY"]}},
  {"name":"express","type":"boolean"},
  {"name":"items","type":{"type":"array","items":{"type":"record","name":"Line","fields":[
    {"name":"sku","type":"string"},{"name":"quantity","type":"int"},{"name":"unit_price","type":"double"}]}}}
]}"#;

/// v1 plus an optional field with a default: the evolution step.
const ORDER_V2: &str = r#"{"type":"record","name":"OrderEvent","namespace":"shop","fields":[
  {"name":"order_id","type":"string"},
  {"name":"customer","type":"string"},
  {"name":"amount_cents","type":"long"},
  {"name":"currency","type":{"type":"enum","name":"Currency","symbols":["EUR","USD","JPY"]}},
  {"name":"express","type":"boolean"},
  {"name":"items","type":{"type":"array","items":{"type":"record","name":"Line","fields":[
    {"name":"sku","type":"string"},{"name":"quantity","type":"int"},{"name":"unit_price","type":"double"}]}}},
  {"name":"coupon","type":["null","string"],"default":null}
]}"#;

const ORDER_JSON_SCHEMA: &str = r#"{
  "$schema": "http://json-schema.org/draft-07/schema#",
  "title": "OrderEvent",
  "type": "object",
  "required": ["order_id", "customer", "amount_cents", "currency", "express", "items"],
  "additionalProperties": false,
  "properties": {
    "order_id": {"type": "string", "minLength": 1},
    "customer": {"type": "string"},
    "amount_cents": {"type": "integer", "minimum": 0},
    "currency": {"enum": ["EUR", "USD", "JPY"]},
    "express": {"type": "boolean"},
    "items": {"type": "array", "minItems": 1, "items": {
      "type": "object", "required": ["sku", "quantity", "unit_price"],
      "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer", "minimum": 1},
                     "unit_price": {"type": "number"}}}},
    "coupon": {"type": ["string", "null"]}
  }
}"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
enum Currency {
    Eur,
    Usd,
    Jpy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Line {
    sku: String,
    quantity: i32,
    unit_price: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderV1 {
    order_id: String,
    customer: String,
    amount_cents: i64,
    currency: Currency,
    express: bool,
    items: Vec<Line>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderV2 {
    order_id: String,
    customer: String,
    amount_cents: i64,
    currency: Currency,
    express: bool,
    items: Vec<Line>,
    coupon: Option<String>,
}

fn orders_v1() -> Vec<OrderV1> {
    let line = |sku: &str, quantity, unit_price| Line {
        sku: sku.into(),
        quantity,
        unit_price,
    };
    vec![
        OrderV1 {
            order_id: "o-1".into(),
            customer: "Zoë Ångström 東京".into(),
            amount_cents: 1999,
            currency: Currency::Eur,
            express: false,
            items: vec![line("book", 1, 19.99)],
        },
        OrderV1 {
            order_id: "o-2".into(),
            customer: String::new(),
            amount_cents: i64::MAX,
            currency: Currency::Jpy,
            express: true,
            items: vec![line("a", 3, 0.1), line("b", i32::MAX, -2.5e300)],
        },
        OrderV1 {
            order_id: "o-3".into(),
            customer: "c".into(),
            amount_cents: 0,
            currency: Currency::Usd,
            express: false,
            items: vec![line("z", 1, 0.0)],
        },
    ]
}

fn upgrade(o: OrderV1, coupon: Option<&str>) -> OrderV2 {
    OrderV2 {
        order_id: o.order_id,
        customer: o.customer,
        amount_cents: o.amount_cents,
        currency: o.currency,
        express: o.express,
        items: o.items,
        coupon: coupon.map(str::to_owned),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The virtualenv's python with confluent-kafka, installed once by the project's script.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        if let Ok(p) = std::env::var("CLUSTERA_SCHEMA_PYTHON") {
            return PathBuf::from(p);
        }
        let script = workspace_root().join("scripts/install-python-schema.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed: the interoperability test needs python3 with venv and PyPI access \
             (apt-get install python3 python3-venv), or CLUSTERA_SCHEMA_PYTHON pointing at a \
             python with confluent-kafka[avro,json]",
            script.display()
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// Runs the Python client over `lines`, returning its output lines.
fn confluent(registry: &TestRegistry, args: &[&str], lines: &[String]) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/confluent_client.py");
    let mut child = Command::new(python())
        .arg(&script)
        .args(args)
        .env("SCHEMA_REGISTRY_URL", registry.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for line in lines {
            writeln!(stdin, "{line}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "confluent_client.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let result: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(
        result.len(),
        lines.len(),
        "one output line per input line: {text}"
    );
    result
}

fn schema_file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn client(registry: &TestRegistry) -> Arc<RegistryClient> {
    Arc::new(RegistryClient::new(RegistrySettings::new(registry.url())).unwrap())
}

fn message(bytes: Vec<u8>) -> Message {
    Message::new("orders", 0, 0).with_value(bytes)
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn python_avro_bytes_decode_in_clustera_byte_for_byte() {
    let registry = TestRegistry::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let v1_file = schema_file(&dir, "v1.avsc", ORDER_V1);
    let orders = orders_v1();
    let inputs: Vec<String> = orders
        .iter()
        .map(|o| serde_json::to_string(o).unwrap())
        .collect();
    let from_python: Vec<Vec<u8>> = confluent(
        &registry,
        &["serialize", "avro", "orders", &v1_file],
        &inputs,
    )
    .iter()
    .map(|h| unhex(h))
    .collect();

    let rt = rt();
    let v1 = EventCodec::<OrderV1>::registry_avro(
        client(&registry),
        AvroSchema::parse(ORDER_V1).unwrap(),
    );
    let v2 = EventCodec::<OrderV2>::registry_avro(
        client(&registry),
        AvroSchema::parse(ORDER_V2).unwrap(),
    );
    for (order, bytes) in orders.iter().zip(&from_python) {
        // Same schema, same subject, same registry: Clustera writes the very same bytes.
        let ours = rt.block_on(v1.encode("orders", order)).unwrap();
        assert_eq!(hex(&ours), hex(bytes), "{order:?}");
        assert_eq!(
            &rt.block_on(v1.decode(&message(bytes.clone()))).unwrap(),
            order
        );
        // And the evolved reader reads Python's older records, with the default.
        let evolved = rt.block_on(v2.decode(&message(bytes.clone()))).unwrap();
        assert_eq!(evolved, upgrade(order.clone(), None));
    }
    assert_eq!(
        registry.versions("orders-value").len(),
        1,
        "both registered one schema"
    );
}

#[test]
fn clustera_avro_bytes_decode_in_python() {
    let registry = TestRegistry::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let v1_file = schema_file(&dir, "v1.avsc", ORDER_V1);
    let rt = rt();
    let v1 = EventCodec::<OrderV1>::registry_avro(
        client(&registry),
        AvroSchema::parse(ORDER_V1).unwrap(),
    );
    let v2 = EventCodec::<OrderV2>::registry_avro(
        client(&registry),
        AvroSchema::parse(ORDER_V2).unwrap(),
    );
    // A v1 record, then v2 records after the evolution step, with and without the new field.
    let mut expected: Vec<Value> = Vec::new();
    let mut lines = Vec::new();
    let mut orders = orders_v1().into_iter();
    let first = orders.next().unwrap();
    lines.push(hex(&rt.block_on(v1.encode("orders", &first)).unwrap()));
    expected.push(serde_json::to_value(&first).unwrap());
    for (order, coupon) in orders.zip([Some("WELCOME10"), None]) {
        let order = upgrade(order, coupon);
        lines.push(hex(&rt.block_on(v2.encode("orders", &order)).unwrap()));
        expected.push(serde_json::to_value(&order).unwrap());
    }
    assert_eq!(
        registry.versions("orders-value").len(),
        2,
        "v2 registered as a new version"
    );

    // Python reads each record with the schema it was written with...
    let decoded = confluent(&registry, &["deserialize", "avro", "orders"], &lines);
    for (line, want) in decoded.iter().zip(&expected) {
        assert_eq!(&serde_json::from_str::<Value>(line).unwrap(), want);
    }
    // ...and a Python consumer still on v1 reads the v2 records, without the new field.
    let decoded = confluent(
        &registry,
        &["deserialize", "avro", "orders", &v1_file],
        &lines,
    );
    for (line, want) in decoded.iter().zip(&expected) {
        let mut want = want.clone();
        want.as_object_mut().unwrap().remove("coupon");
        assert_eq!(serde_json::from_str::<Value>(line).unwrap(), want);
    }
}

#[test]
fn json_schema_bytes_cross_both_ways() {
    let registry = TestRegistry::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let schema_path = schema_file(&dir, "order.schema.json", ORDER_JSON_SCHEMA);
    let orders: Vec<OrderV2> = orders_v1()
        .into_iter()
        .zip([Some("SPRING"), None, None])
        .map(|(o, c)| upgrade(o, c))
        .collect();
    let inputs: Vec<String> = orders
        .iter()
        .map(|o| serde_json::to_string(o).unwrap())
        .collect();
    let from_python = confluent(
        &registry,
        &["serialize", "json", "orders-json", &schema_path],
        &inputs,
    );

    let rt = rt();
    let codec = EventCodec::<OrderV2>::registry_json(
        client(&registry),
        JsonSchema::from_file(&schema_path).unwrap(),
    );
    let mut ours = Vec::new();
    for (order, line) in orders.iter().zip(&from_python) {
        let bytes = unhex(line);
        assert_eq!(
            &rt.block_on(codec.decode(&message(bytes.clone()))).unwrap(),
            order
        );
        let mine = rt.block_on(codec.encode("orders-json", order)).unwrap();
        // The same schema id in the frame: both registered the one schema.
        assert_eq!(
            wire::decode(&mine).unwrap().schema_id,
            wire::decode(&bytes).unwrap().schema_id
        );
        ours.push(hex(&mine));
    }
    assert_eq!(registry.versions("orders-json-value").len(), 1);
    let decoded = confluent(&registry, &["deserialize", "json", "orders-json"], &ours);
    for (line, order) in decoded.iter().zip(&orders) {
        assert_eq!(
            serde_json::from_str::<Value>(line).unwrap(),
            serde_json::to_value(order).unwrap()
        );
    }
}
