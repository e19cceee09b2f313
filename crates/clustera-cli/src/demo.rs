//! `clustera demo`: an embedded broker, a few thousand orders (some malformed) through a kernel
//! that adds tax, and a summary that checks the runtime's promises.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use clap::Args;
use clustera::testing::{kafka, MockBroker};
use clustera::{Config, Context, Kernel, KernelError, Message, Outcome, Record, Runtime};
use serde::Deserialize;
use serde_json::json;

/// Arguments of `clustera demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Orders to send.
    #[arg(long, default_value_t = 5000)]
    messages: usize,
    /// Every Nth order is malformed and ends in the dead-letter topic (0: none).
    #[arg(long, default_value_t = 100)]
    malformed_every: usize,
}

#[derive(Deserialize)]
struct Order {
    order_id: u64,
    amount_cents: u64,
    country: String,
}

/// Adds VAT to each order.
struct TaxKernel;

impl Kernel for TaxKernel {
    fn name(&self) -> &str {
        "tax"
    }

    fn default_topics(&self) -> Vec<String> {
        vec!["orders".into()]
    }

    async fn process(&self, msg: &Message, ctx: &mut Context) -> Result<Outcome, KernelError> {
        let order: Order = msg.json()?;
        let rate = match order.country.as_str() {
            "DE" => 19,
            "FR" => 20,
            "NL" => 21,
            _ => return Ok(Outcome::skip(format!("no VAT rate for {}", order.country))),
        };
        let tax = order.amount_cents * rate / 100;
        let out = json!({"order_id": order.order_id, "amount_cents": order.amount_cents,
            "tax_cents": tax, "total_cents": order.amount_cents + tax});
        ctx.send(
            Record::to("orders-taxed")
                .maybe_key(msg.key_bytes())
                .json(&out)
                .map_err(KernelError::permanent)?,
        );
        Ok(Outcome::Ack)
    }
}

/// Runs the demo and prints its summary; fails if a promise was broken.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let broker = MockBroker::start(1).context("starting the embedded broker")?;
    let bootstrap = broker.bootstrap().to_owned();
    broker.create_topic("orders", 4)?;
    broker.create_topic("orders-taxed", 4)?;
    broker.create_topic("orders.dlq", 1)?;
    println!("Embedded broker (librdkafka mock cluster) at {bootstrap}");

    let n = args.messages;
    let every = args.malformed_every;
    let b = bootstrap.clone();
    let produced = tokio::task::spawn_blocking(move || {
        kafka::produce(
            &b,
            "orders",
            (0..n).map(|i| {
                let value = if every > 0 && i % every == every - 1 {
                    b"{\"order_id\": oops".to_vec()
                } else {
                    let country = ["DE", "FR", "NL"][i % 3];
                    format!(
                        r#"{{"order_id":{i},"amount_cents":{},"country":"{country}"}}"#,
                        1000 + i
                    )
                    .into_bytes()
                };
                (Some(format!("order-{i}").into_bytes()), value, Vec::new())
            }),
        )
    })
    .await??;
    println!("Produced {produced} orders to 'orders' (4 partitions)");

    let mut config = Config::for_brokers("tax", &bootstrap, &["orders"]);
    config.runtime.commit_interval = Duration::from_millis(200);
    let group = config.group_id.clone();
    let runtime = Runtime::new(config, TaxKernel);
    let stats = runtime.stats();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let task = tokio::spawn(runtime.run_until(async {
        let _ = stop_rx.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(120);
    while stats.snapshot().processed() < produced as u64 {
        ensure!(
            Instant::now() < deadline,
            "the kernel did not finish within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    let _ = stop_tx.send(());
    let summary = task.await??;

    let b = bootstrap.clone();
    let g = group.clone();
    let (outputs, dead, committed, high) = tokio::task::spawn_blocking(move || {
        anyhow::Ok((
            kafka::read_topic(&b, "orders-taxed")?.len(),
            kafka::read_topic(&b, "orders.dlq")?.len(),
            kafka::committed_offsets(&b, &g, "orders")?,
            kafka::high_watermarks(&b, "orders")?,
        ))
    })
    .await??;
    let committed_total: i64 = committed.values().sum();
    let high_total: i64 = high.values().sum();
    println!();
    println!(
        "Kernel 'tax' (group {group}) finished in {:.2} s, including joining the group",
        elapsed.as_secs_f64()
    );
    println!("  processed        {:>8}", summary.processed());
    println!(
        "  acked            {:>8}   -> outputs on 'orders-taxed': {outputs}",
        summary.acked
    );
    println!(
        "  dead-lettered    {:>8}   -> records on 'orders.dlq':   {dead}",
        summary.dead_lettered
    );
    println!("  skipped          {:>8}", summary.skipped);
    println!("  committed        {committed_total:>8}   of {high_total} (high watermarks)");
    ensure!(
        outputs as u64 == summary.acked,
        "outputs ({outputs}) differ from acks ({})",
        summary.acked
    );
    ensure!(dead as u64 == summary.dead_lettered, "dead letters differ");
    ensure!(
        committed == high,
        "committed offsets {committed:?} differ from high watermarks {high:?}"
    );
    println!("\nOK: every order processed once, outputs acknowledged, offsets committed.");
    Ok(())
}
