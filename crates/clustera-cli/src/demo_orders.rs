//! `clustera demo orders`: seed 002's order-processing system, end to end on the embedded
//! broker. The five kernels of [`clustera_examples::orders`] run on the Clustera runtime in
//! this process; a storefront submits orders (some poison, some submitted twice); once every
//! order is final, a second consumer group of the `orders` kernel reads every request again,
//! so every kernel downstream sees every event a second time (what a crash before a commit, or
//! an operator's replay, does). Then it prints a summary and checks it against what the
//! storefront expects: each order in its expected final state once, one notification per
//! order, each poison request dead-lettered, the gateway's 503s retried, the stock taken equal
//! to what shipped. Any difference fails the command.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use clustera::config::Secret;
use clustera::runtime::RuntimeStats;
use clustera::testing::{kafka, MockBroker};
use clustera::{Config, Kernel, Runtime, RuntimeError, StatsSnapshot};
use clustera_examples::orders::events::FinalState;
use clustera_examples::orders::generator::{card_limits, Storefront};
use clustera_examples::orders::kernels::{
    Intake, Inventory, Notification, Payment, Services, Shipping,
};
use clustera_examples::orders::stores::Catalog;
use clustera_examples::orders::topics;
use serde::Serialize;

use crate::demo::Stoppable;

/// Arguments of `clustera demo orders`.
#[derive(Args)]
pub struct OrdersArgs {
    /// Orders the storefront submits (one in 25 is poison).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=20_000))]
    orders: u64,
    /// Seed of the storefront's choices (customers, products, quantities).
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Partitions of each topic (the dead-letter topic has one).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=64))]
    partitions: i32,
    /// Skip the replay of every request after the flow.
    #[arg(long)]
    no_replay: bool,
    /// Print the summary as one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

/// The longest the flow (or the replay) may take to settle.
const SETTLE_LIMIT: Duration = Duration::from_secs(300);

/// One kernel running in this process.
struct Running {
    name: String,
    inputs: Vec<&'static str>,
    stats: Arc<RuntimeStats>,
    task: Stoppable<Result<StatsSnapshot, RuntimeError>>,
}

/// Starts `kernel` in consumer group `group` and waits until it holds its partitions.
async fn start<K: Kernel>(
    bootstrap: &str,
    kernel: K,
    group: &str,
    inputs: Vec<&'static str>,
) -> anyhow::Result<Running> {
    let name = kernel.name().to_owned();
    let mut config = Config::for_brokers(&name, bootstrap, &inputs);
    config.group_id = group.to_owned();
    config.runtime.dead_letter_topic = Some(topics::DEAD_LETTERS.to_owned());
    config.runtime.retry_initial_delay = Duration::from_millis(20);
    // The embedded broker answers an empty fetch only when its wait expires (see the outbox
    // demo); KIP-848 joins without the classic protocol's rebalance delay.
    config
        .properties
        .insert("fetch.wait.max.ms".into(), Secret::new("5"));
    config
        .properties
        .insert("group.protocol".into(), Secret::new("consumer"));
    let runtime = Runtime::new(config, kernel);
    let stats = runtime.stats();
    let task = Stoppable::spawn(|stop| runtime.run_until(stop));
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.snapshot().partitions_assigned == 0 {
        if Instant::now() > deadline {
            bail!("kernel {name} did not join its consumer group within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Running {
        name,
        inputs,
        stats,
        task,
    })
}

/// Runs the demo and prints the summary; fails if a check fails.
pub async fn run(args: OrdersArgs) -> anyhow::Result<()> {
    let storefront = Storefront::generate(args.orders as usize, args.seed);
    let broker = MockBroker::start(1).context("starting the embedded broker")?;
    for topic in topics::ALL {
        let partitions = if topic == topics::DEAD_LETTERS {
            1
        } else {
            args.partitions
        };
        broker.create_topic(topic, partitions)?;
    }
    let bootstrap = broker.bootstrap().to_owned();
    let say = |line: String| {
        if !args.json {
            println!("{line}");
        }
    };
    say(format!(
        "Kafka {bootstrap} (embedded librdkafka mock cluster), {} partitions per topic",
        args.partitions
    ));

    let services = Arc::new(Services::new(Catalog::demo(), card_limits()));
    let s = || services.clone();
    let mut kernels = vec![
        start(&bootstrap, Intake(s()), "orders", vec![topics::REQUESTS]).await?,
        start(
            &bootstrap,
            Inventory(s()),
            "inventory",
            vec![topics::PLACED, topics::PAYMENTS],
        )
        .await?,
        start(&bootstrap, Payment(s()), "payment", vec![topics::INVENTORY]).await?,
        start(
            &bootstrap,
            Shipping(s()),
            "shipping",
            vec![topics::PAYMENTS],
        )
        .await?,
        start(
            &bootstrap,
            Notification(s()),
            "notification",
            vec![topics::INVENTORY, topics::PAYMENTS, topics::SHIPMENTS],
        )
        .await?,
    ];
    say("kernels orders, inventory, payment, shipping, notification: in their groups".into());

    let started = Instant::now();
    let records: Vec<kafka::ProducedRecord> = storefront
        .records
        .iter()
        .map(|(key, value)| {
            (
                key.clone().map(String::into_bytes),
                value.clone(),
                Vec::new(),
            )
        })
        .collect();
    let brokers = bootstrap.clone();
    tokio::task::spawn_blocking(move || kafka::produce(&brokers, topics::REQUESTS, records))
        .await?
        .context("submitting the orders")?;
    say(format!(
        "storefront: submitted {} orders ({} poison) and {} of them again",
        args.orders,
        storefront.poison.len(),
        storefront.resubmitted
    ));
    settle(&bootstrap, &kernels, &services, &say).await?;
    let flow_time = started.elapsed();
    say(format!(
        "every order final in {:.2} s ({:.0} orders/s through five kernels)",
        flow_time.as_secs_f64(),
        args.orders as f64 / flow_time.as_secs_f64().max(1e-9)
    ));

    let replayed = !args.no_replay;
    if replayed {
        say("replay: a second group of the orders kernel reads every request again".into());
        kernels.push(
            start(
                &bootstrap,
                Intake(s()),
                "orders-replay",
                vec![topics::REQUESTS],
            )
            .await?,
        );
        settle(&bootstrap, &kernels, &services, &say).await?;
    }

    let mut stats: Vec<(String, StatsSnapshot)> = Vec::new();
    for k in kernels {
        let label = if stats.iter().any(|(name, _)| *name == k.name) {
            format!("{} (replay)", k.name)
        } else {
            k.name.clone()
        };
        let snapshot = k
            .task
            .stop()
            .await?
            .with_context(|| format!("kernel {label}"))?;
        stats.push((label, snapshot));
    }
    let brokers = bootstrap.clone();
    let dead_letters =
        tokio::task::spawn_blocking(move || kafka::read_topic(&brokers, topics::DEAD_LETTERS))
            .await?
            .context("reading the dead letters")?;
    let summary = Summary::build(&storefront, &services, &stats, &dead_letters, replayed);
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        summary.print();
    }
    if summary.problems.is_empty() {
        Ok(())
    } else {
        for p in &summary.problems {
            eprintln!("check failed: {p}");
        }
        bail!("{} check(s) failed", summary.problems.len())
    }
}

/// Waits until the flow is at rest: every kernel has a final outcome for every record of its
/// inputs, every record it produced is acknowledged, and nothing moved while this was read.
async fn settle(
    bootstrap: &str,
    kernels: &[Running],
    services: &Services,
    say: &impl Fn(String),
) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE_LIMIT;
    let mut last_report = Instant::now();
    loop {
        let before: Vec<StatsSnapshot> = kernels.iter().map(|k| k.stats.snapshot()).collect();
        let brokers = bootstrap.to_owned();
        let marks = tokio::task::spawn_blocking(move || {
            let mut marks = BTreeMap::new();
            for t in topics::ALL {
                marks.insert(
                    t,
                    kafka::high_watermarks(&brokers, t)?.values().sum::<i64>(),
                );
            }
            Ok::<_, rdkafka::error::KafkaError>(marks)
        })
        .await??;
        let after: Vec<StatsSnapshot> = kernels.iter().map(|k| k.stats.snapshot()).collect();
        let at_rest = before == after
            && kernels.iter().zip(&after).all(|(k, s)| {
                let input: i64 = k.inputs.iter().map(|t| marks[t]).sum();
                s.processed() == input as u64
                    && s.outputs_acked + s.produce_failures >= s.outputs_sent
            });
        if at_rest {
            return Ok(());
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            say(format!(
                "  {} orders final, {} dead letters",
                services.book.finals().len(),
                marks[topics::DEAD_LETTERS]
            ));
        }
        if Instant::now() > deadline {
            bail!(
                "the flow did not come to rest within {} s",
                SETTLE_LIMIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What happened, against what the storefront expects.
#[derive(Serialize)]
struct Summary {
    submitted: usize,
    resubmitted: usize,
    poison: usize,
    replayed: bool,
    /// Each final state, expected and recorded on the read side.
    finals: Vec<FinalCount>,
    notifications: usize,
    /// Records on the dead-letter topic, and the distinct requests they hold.
    dead_letter_records: usize,
    dead_lettered_requests: usize,
    /// Poison kind → distinct requests dead-lettered.
    dead_letters_by_kind: BTreeMap<String, usize>,
    /// One `clustera.error` per poison kind.
    dead_letter_errors: BTreeMap<String, String>,
    gateway_503s_expected: usize,
    charges: usize,
    shipments: usize,
    /// Each kernel's runtime counters, in the flow's order.
    kernels: Vec<KernelSummary>,
    /// Kernel → redeliveries its handler absorbed.
    repeats: BTreeMap<String, u64>,
    problems: Vec<String>,
}

#[derive(Serialize)]
struct FinalCount {
    state: String,
    expected: usize,
    recorded: usize,
}

#[derive(Serialize)]
struct KernelSummary {
    name: String,
    acked: u64,
    /// Acknowledged events meant for another kernel (the replay's are counted with the
    /// first group's).
    ignored: u64,
    skipped: u64,
    dead_lettered: u64,
    retries: u64,
    /// Records acknowledged: outputs and dead letters.
    records: u64,
}

impl Summary {
    fn build(
        storefront: &Storefront,
        services: &Services,
        stats: &[(String, StatsSnapshot)],
        dead_letters: &[kafka::Consumed],
        replayed: bool,
    ) -> Self {
        let mut problems = Vec::new();
        let book = services.book.finals();
        let mut finals = Vec::new();
        for state in [
            FinalState::Shipped,
            FinalState::OutOfStock,
            FinalState::PaymentDeclined,
        ] {
            let recorded = book.values().filter(|s| **s == state).count();
            finals.push(FinalCount {
                state: state.to_string(),
                expected: storefront.expected_in(state),
                recorded,
            });
        }
        for (id, expected) in &storefront.expected {
            match book.get(id) {
                None => problems.push(format!("order {id} never reached a final state")),
                Some(s) if s != expected => {
                    problems.push(format!("order {id} ended {s}, expected {expected}"))
                }
                Some(_) => {}
            }
        }
        for id in book
            .keys()
            .filter(|id| !storefront.expected.contains_key(*id))
        {
            problems.push(format!(
                "order {id} is on the read side but was never valid"
            ));
        }
        problems.extend(services.book.conflicts());
        let notifications = services.book.notifications();
        let notified: BTreeSet<&str> = notifications.iter().map(|n| n.order_id.as_str()).collect();
        if notified.len() != notifications.len() {
            problems.push(format!(
                "{} notifications for {} orders",
                notifications.len(),
                notified.len()
            ));
        }

        // Dead letters: only poison requests, each once per delivery of it.
        let kinds: BTreeMap<&str, &str> = storefront
            .poison
            .iter()
            .map(|(k, kind)| (k.as_str(), *kind))
            .collect();
        let mut originals = BTreeSet::new();
        let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
        let mut errors = BTreeMap::new();
        for d in dead_letters {
            let key = d
                .key
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let original = (
                d.header("clustera.original.topic").unwrap_or_default(),
                d.header("clustera.original.partition").unwrap_or_default(),
                d.header("clustera.original.offset").unwrap_or_default(),
            );
            if original.0 != topics::REQUESTS {
                problems.push(format!(
                    "dead letter from {:?}: {:?}",
                    original.0,
                    d.header("clustera.error")
                ));
            }
            let Some(kind) = kinds.get(key.as_ref()) else {
                problems.push(format!(
                    "request {key} was dead-lettered but is not poison: {:?}",
                    d.header("clustera.error")
                ));
                continue;
            };
            if originals.insert(original) {
                *by_kind.entry((*kind).to_owned()).or_default() += 1;
            }
            errors
                .entry((*kind).to_owned())
                .or_insert_with(|| d.header("clustera.error").unwrap_or_default());
        }
        if originals.len() != storefront.poison.len() {
            problems.push(format!(
                "{} poison requests dead-lettered, {} submitted",
                originals.len(),
                storefront.poison.len()
            ));
        }
        let deliveries = if replayed { 2 } else { 1 };
        if dead_letters.len() != storefront.poison.len() * deliveries {
            problems.push(format!(
                "{} dead letters for {} poison requests delivered {deliveries} time(s)",
                dead_letters.len(),
                storefront.poison.len()
            ));
        }

        // The 503s: one retry per order the gateway fails once, none dead-lettered.
        let payment = stats
            .iter()
            .find(|(name, _)| name == "payment")
            .map(|(_, s)| *s)
            .unwrap_or_default();
        if payment.retries != storefront.gateway_retries as u64 {
            problems.push(format!(
                "payment retried {} times, the gateway failed {} first charges",
                payment.retries, storefront.gateway_retries
            ));
        }
        for (name, s) in stats {
            if !name.starts_with("orders") && s.dead_lettered != 0 {
                problems.push(format!("{name} dead-lettered {} messages", s.dead_lettered));
            }
        }

        // Stock: what left the shelves is exactly what shipped.
        let mut shipped_units: BTreeMap<String, u64> = BTreeMap::new();
        for (id, request) in &storefront.requests {
            if book.get(id) == Some(&FinalState::Shipped) {
                for l in &request.lines {
                    *shipped_units.entry(l.sku.clone()).or_default() += u64::from(l.quantity);
                }
            }
        }
        let now = services.warehouse.stock();
        for (sku, initial) in services.catalog.initial_stock() {
            let taken = initial - now.get(&sku).copied().unwrap_or(initial);
            let shipped = shipped_units.get(&sku).copied().unwrap_or(0);
            if taken != shipped {
                problems.push(format!("{sku}: {taken} units taken, {shipped} shipped"));
            }
        }
        let expected_charges =
            storefront.expected.len() - storefront.expected_in(FinalState::OutOfStock);
        if services.gateway.charges() != expected_charges {
            problems.push(format!(
                "{} charges, {expected_charges} orders reached payment",
                services.gateway.charges()
            ));
        }

        let c = &services.counters;
        let handlers = [
            ("orders", &c.orders),
            ("inventory", &c.inventory),
            ("payment", &c.payment),
            ("shipping", &c.shipping),
            ("notification", &c.notification),
        ];
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Summary {
            submitted: storefront.expected.len() + storefront.poison.len(),
            resubmitted: storefront.resubmitted,
            poison: storefront.poison.len(),
            replayed,
            finals,
            notifications: notifications.len(),
            dead_letter_records: dead_letters.len(),
            dead_lettered_requests: originals.len(),
            dead_letters_by_kind: by_kind,
            dead_letter_errors: errors,
            gateway_503s_expected: storefront.gateway_retries,
            charges: services.gateway.charges(),
            shipments: services.carrier.shipments(),
            kernels: stats
                .iter()
                .map(|(name, s)| KernelSummary {
                    name: name.clone(),
                    acked: s.acked,
                    ignored: handlers
                        .iter()
                        .find(|(n, _)| n == name)
                        .map_or(0, |(_, h)| load(&h.ignored)),
                    skipped: s.skipped,
                    dead_lettered: s.dead_lettered,
                    retries: s.retries,
                    records: s.outputs_acked,
                })
                .collect(),
            repeats: handlers
                .iter()
                .map(|(name, h)| ((*name).to_owned(), load(&h.repeats)))
                .collect(),
            problems,
        }
    }

    fn print(&self) {
        println!("\nfinal states (read side)   expected  recorded");
        for f in &self.finals {
            println!("  {:<24} {:>8}  {:>8}", f.state, f.expected, f.recorded);
        }
        println!(
            "notifications sent: {} (one per order); charges: {}; shipments: {}",
            self.notifications, self.charges, self.shipments
        );
        println!(
            "dead letters on {}: {} records for {} poison requests{}",
            topics::DEAD_LETTERS,
            self.dead_letter_records,
            self.dead_lettered_requests,
            if self.replayed {
                " (each dead-lettered once per delivery: the replay delivered them again)"
            } else {
                ""
            }
        );
        for (kind, n) in &self.dead_letters_by_kind {
            let error = self.dead_letter_errors.get(kind).map_or("", String::as_str);
            let error: String = error.chars().take(120).collect();
            println!("  {kind:<16} {n:>4}  e.g. {error}");
        }
        println!(
            "\nkernel                   acked  (not for it)  dead letters  retries  records  repeats absorbed"
        );
        for k in &self.kernels {
            let repeats = if k.name.ends_with("(replay)") {
                String::from("(counted above)")
            } else {
                self.repeats.get(&k.name).copied().unwrap_or(0).to_string()
            };
            println!(
                "  {:<20} {:>7}  {:>12}  {:>12}  {:>7}  {:>7}  {repeats:>16}",
                k.name, k.acked, k.ignored, k.dead_lettered, k.retries, k.records
            );
        }
        println!(
            "(retries: the gateway's 503 on the first charge of {} orders; records: outputs and \
             dead letters; repeats: requests submitted twice{}, absorbed by each handler's \
             idempotency)",
            self.gateway_503s_expected,
            if self.replayed { " and the replay" } else { "" }
        );
        if self.problems.is_empty() {
            println!(
                "\nchecks: OK (every order in its expected final state once, one notification \
                 each, every poison request dead-lettered, stock taken = stock shipped)"
            );
        }
    }
}
