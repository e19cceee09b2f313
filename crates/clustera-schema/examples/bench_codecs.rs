//! What typed, validated decoding costs per message, against the baseline of plain
//! `serde_json::from_slice` (what `Message::json` does), run side by side in the same process.
//!
//! `cargo run --release -p clustera-schema --example bench_codecs [-- MESSAGES ROUNDS]`
//!
//! Each round decodes the same `MESSAGES` order events (default 20,000) with every codec, in
//! turn; the table gives the median rate over `ROUNDS` rounds (default 5) and its ratio to the
//! baseline's median. The registry codecs run after their cache is warm (one request per
//! schema id in a process's life), so they measure framing, the cache lookup, the bounds
//! check and Avro resolution or JSON Schema validation.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use clustera_schema::testing::TestRegistry;
use clustera_schema::{json, AvroSchema, EventCodec, JsonSchema, RegistryClient, RegistrySettings};
use serde::{Deserialize, Serialize};

const AVRO_V1: &str = r#"{"type":"record","name":"OrderEvent","namespace":"shop","fields":[
  {"name":"order_id","type":"string"},{"name":"customer_id","type":"string"},
  {"name":"amount_cents","type":"long"},
  {"name":"items","type":{"type":"array","items":{"type":"record","name":"Line","fields":[
    {"name":"sku","type":"string"},{"name":"quantity","type":"int"}]}}}]}"#;

const AVRO_V2: &str = r#"{"type":"record","name":"OrderEvent","namespace":"shop","fields":[
  {"name":"order_id","type":"string"},{"name":"customer_id","type":"string"},
  {"name":"amount_cents","type":"long"},
  {"name":"items","type":{"type":"array","items":{"type":"record","name":"Line","fields":[
    {"name":"sku","type":"string"},{"name":"quantity","type":"int"}]}}},
  {"name":"coupon","type":["null","string"],"default":null}]}"#;

const JSON_SCHEMA: &str = r#"{"title":"OrderEvent","type":"object",
  "required":["order_id","customer_id","amount_cents","items"],
  "properties":{"order_id":{"type":"string","pattern":"^ord-[0-9]+$"},
    "customer_id":{"type":"string","minLength":1},
    "amount_cents":{"type":"integer","minimum":0},
    "items":{"type":"array","minItems":1,"items":{"type":"object","required":["sku","quantity"],
      "properties":{"sku":{"type":"string"},"quantity":{"type":"integer","minimum":1}}}},
    "coupon":{"type":["string","null"]}}}"#;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Line {
    sku: String,
    quantity: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderV1 {
    order_id: String,
    customer_id: String,
    amount_cents: i64,
    items: Vec<Line>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderV2 {
    order_id: String,
    customer_id: String,
    amount_cents: i64,
    items: Vec<Line>,
    coupon: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let messages: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let registry = TestRegistry::start()?;
    let client = Arc::new(RegistryClient::new(RegistrySettings::new(registry.url()))?);

    let orders: Vec<OrderV1> = (0..messages)
        .map(|i| OrderV1 {
            order_id: format!("ord-{i}"),
            customer_id: format!("cust-{}", i % 977),
            amount_cents: (i as i64) * 37 % 100_000,
            items: (0..1 + i % 4)
                .map(|j| Line {
                    sku: format!("sku-{j}-{}", i % 50),
                    quantity: 1 + j as i32,
                })
                .collect(),
        })
        .collect();
    let schema = JsonSchema::parse(JSON_SCHEMA)?;
    let json_v1 = EventCodec::<OrderV1>::registry_json(client.clone(), schema.clone());
    let json_v2 = EventCodec::<OrderV2>::registry_json(client.clone(), schema.clone());
    let avro_v1 = EventCodec::<OrderV1>::registry_avro(client.clone(), AvroSchema::parse(AVRO_V1)?);
    let avro_v2 = EventCodec::<OrderV2>::registry_avro(client.clone(), AvroSchema::parse(AVRO_V2)?);
    let plain: Vec<Vec<u8>> = orders
        .iter()
        .map(serde_json::to_vec)
        .collect::<Result<_, _>>()?;
    let (framed_json, framed_avro) = rt.block_on(async {
        let mut j = Vec::new();
        let mut a = Vec::new();
        for o in &orders {
            j.push(
                json_v1
                    .encode("orders-json", o)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            );
            a.push(
                avro_v1
                    .encode("orders", o)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            );
        }
        anyhow::Ok((j, a))
    })?;
    let avro_schema = AvroSchema::parse(AVRO_V1)?;
    let avro_payloads: Vec<&[u8]> = framed_avro.iter().map(|b| &b[5..]).collect();

    type Run<'a> = Box<dyn Fn() -> anyhow::Result<()> + 'a>;
    let fail = |e: clustera::KernelError| anyhow::anyhow!("{e}");
    let variants: Vec<(&str, Run<'_>)> = vec![
        (
            "serde_json::from_slice (baseline, Message::json)",
            Box::new(|| {
                for b in &plain {
                    black_box(serde_json::from_slice::<OrderV2>(b)?);
                }
                Ok(())
            }),
        ),
        (
            "EventCodec::json (field paths)",
            Box::new(|| {
                for b in &plain {
                    black_box(json::decode::<OrderV2>(b, None)?);
                }
                Ok(())
            }),
        ),
        (
            "EventCodec::json_validated (JSON Schema)",
            Box::new(|| {
                for b in &plain {
                    black_box(json::decode::<OrderV2>(b, Some(&schema))?);
                }
                Ok(())
            }),
        ),
        (
            "EventCodec::registry_json",
            Box::new(|| {
                rt.block_on(async {
                    for b in &framed_json {
                        black_box(json_v2.decode_bytes(b).await.map_err(fail)?);
                    }
                    anyhow::Ok(())
                })
            }),
        ),
        (
            "AvroSchema::decode (same schema, no registry)",
            Box::new(|| {
                for b in &avro_payloads {
                    black_box(avro_schema.decode::<OrderV1>(b, None)?);
                }
                Ok(())
            }),
        ),
        (
            "EventCodec::registry_avro (v1 records, v2 reader)",
            Box::new(|| {
                rt.block_on(async {
                    for b in &framed_avro {
                        black_box(avro_v2.decode_bytes(b).await.map_err(fail)?);
                    }
                    anyhow::Ok(())
                })
            }),
        ),
    ];

    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for _ in 0..rounds {
        for (i, (_, run)) in variants.iter().enumerate() {
            let start = Instant::now();
            run()?;
            rates[i].push(messages as f64 / start.elapsed().as_secs_f64());
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let medians: Vec<f64> = rates.iter_mut().map(median).collect();
    println!(
        "{messages} order events (1-4 lines each), median of {rounds} rounds, side by side:\n"
    );
    println!("| decoder | messages/s | vs baseline |");
    println!("| --- | ---: | ---: |");
    for ((name, _), rate) in variants.iter().zip(&medians) {
        println!("| {name} | {:.0} | {:.2} |", rate, rate / medians[0]);
    }
    println!(
        "\nregistry requests in the whole run: {} (cache warm after the first record of each schema)",
        registry.requests()
    );
    Ok(())
}
