//! `clustera demo orders`: seed 002's order-processing system, end to end on an embedded
//! broker (or `--brokers`, a fresh `clustera dev`). The five kernels of [`clustera_examples::orders`] run on the Clustera runtime in
//! this process; a storefront submits orders (some poison, some submitted twice); once every
//! order is final, a second consumer group of the `orders` kernel reads every request again,
//! so every kernel downstream sees every event a second time (what a crash before a commit, or
//! an operator's replay, does). Then it prints a summary and checks it against what the
//! storefront expects: each order in its expected final state once, one notification per
//! order, each poison request dead-lettered, the gateway's 503s retried, the stock taken equal
//! to what shipped. Any difference fails the command.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use clustera::config::Secret;
use clustera::runtime::RuntimeStats;
use clustera::testing::{kafka, MockBroker};
use clustera::{Config, Kernel, Runtime, RuntimeError, StatsSnapshot};
use clustera_examples::orders::generator::{card_limits, Storefront};
use clustera_examples::orders::kernels::{
    Intake, Inventory, Notification, Payment, Services, Shipping,
};
use clustera_examples::orders::stores::Catalog;
use clustera_examples::orders::topics;

use crate::demo::Stoppable;

mod summary;
use summary::Summary;

/// Arguments of `clustera demo orders`.
#[derive(Args)]
#[command(after_help = "\
Examples:
  clustera demo orders                      # 1,000 orders on an embedded broker, then the summary
  clustera demo orders --no-replay --partitions 8
  clustera dev & clustera demo orders --brokers 127.0.0.1:9092   # watch with `clustera consume -t orders.payments`")]
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
    /// Run on these brokers (a fresh `clustera dev`, say) instead of an embedded one; the
    /// flow's topics (orders.*) must be new or empty.
    #[arg(long)]
    brokers: Option<String>,
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
    let say = |line: String| {
        if !args.json {
            println!("{line}");
        }
    };
    // Kept until the end: the embedded broker lives as long as this value.
    let mut _embedded = None;
    let bootstrap = match &args.brokers {
        None => {
            let broker = MockBroker::start(1).context("starting the embedded broker")?;
            for topic in topics::ALL {
                broker.create_topic(topic, partitions_of(topic, args.partitions))?;
            }
            let bootstrap = broker.bootstrap().to_owned();
            say(format!(
                "Kafka {bootstrap} (embedded librdkafka mock cluster), {} partitions per topic",
                args.partitions
            ));
            _embedded = Some(broker);
            bootstrap
        }
        Some(brokers) => {
            let (list, partitions) = (brokers.clone(), args.partitions);
            let counts =
                tokio::task::spawn_blocking(move || prepare_topics(&list, partitions)).await??;
            say(format!("Kafka {brokers}: topics {counts}"));
            brokers.clone()
        }
    };

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

/// The dead-letter topic has one partition, the others `partitions`.
fn partitions_of(topic: &str, partitions: i32) -> i32 {
    if topic == topics::DEAD_LETTERS {
        1
    } else {
        partitions
    }
}

/// Makes sure the flow's topics exist on `brokers` and are empty (the checks count every
/// record), and describes them.
fn prepare_topics(brokers: &str, partitions: i32) -> anyhow::Result<String> {
    let producer: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let exists = |topic: &str| -> anyhow::Result<bool> {
        let metadata = rdkafka::producer::Producer::client(&producer)
            .fetch_metadata(Some(topic), kafka::TIMEOUT)
            .with_context(|| format!("cannot reach the brokers at {brokers}"))?;
        Ok(metadata
            .topics()
            .first()
            .is_some_and(|t| t.error().is_none() && !t.partitions().is_empty()))
    };
    let mut described = Vec::new();
    for topic in topics::ALL {
        // A producer's metadata request creates the topic where brokers auto-create (as
        // `clustera dev` does, with 4 partitions; it does not serve CreateTopics). Elsewhere
        // the admin API creates it.
        if !exists(topic)? {
            kafka::create_topic(brokers, topic, partitions_of(topic, partitions))
                .with_context(|| format!("creating topic {topic}"))?;
            if !exists(topic)? {
                bail!("topic {topic} was created on {brokers} but is not visible yet; run again");
            }
        }
        let marks = kafka::watermarks(brokers, topic)?;
        let held: i64 = marks.values().map(|(low, high)| high - low).sum();
        if marks.values().any(|(_, high)| *high > 0) {
            bail!(
                "topic {topic} on {brokers} is not new ({held} records kept): the demo counts \
                 every record, so it needs its topics empty; restart `clustera dev` (or delete \
                 the orders.* topics)"
            );
        }
        described.push(format!("{topic}:{}", marks.len()));
    }
    Ok(described.join(" "))
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
