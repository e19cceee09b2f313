//! Example 3: consumer groups. Members join one group and leave it while records flow; every
//! assignment and revocation is printed as it happens, and at the end every record has been
//! read exactly once (no loss, no duplicate) across the handovers.
//!
//! ```sh
//! clustera dev --topic group-events:6 &
//! cargo run -p clustera-examples --bin consumer-groups -- --members 3
//! ```
//!
//! The script: member-1 joins and gets every partition; each further member joins and takes
//! its share (a rebalance); then member-2 leaves and its partitions move to the others. A
//! batch of records is produced in each phase and read before the next. With more members
//! than partitions the extra members sit idle (the seed's second common mistake).
//!
//! What each member does that a Clustera kernel gets from the runtime: it commits what it has
//! processed *before* giving a partition up (in the revocation callback, synchronously), so
//! the next owner starts exactly after it (the seed's fourth common mistake). `--protocol
//! consumer` (the default) is KIP-848's group protocol: the broker computes the assignment and
//! hands partitions over incrementally; `classic` works with every broker but, on `clustera
//! dev`, makes each rebalance wait for the session timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};
use clustera_examples::DEFAULT_BROKERS;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

/// Members joining and leaving a consumer group, with every rebalance printed.
#[derive(Parser)]
struct Args {
    /// Bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = DEFAULT_BROKERS)]
    brokers: String,
    /// Topic (created on first use by `clustera dev` with 4 partitions, unless started with
    /// `--topic group-events:6`).
    #[arg(long, default_value = "group-events")]
    topic: String,
    /// Consumer group.
    #[arg(long, default_value = "group-demo")]
    group: String,
    /// Members that join one after another (2 to 8).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=8))]
    members: u32,
    /// Records produced in each phase.
    #[arg(long, default_value_t = 60)]
    per_phase: u64,
    /// Group protocol.
    #[arg(long, env = "KAFKA_GROUP_PROTOCOL", value_enum, default_value_t = Protocol::Consumer)]
    protocol: Protocol,
}

/// `group.protocol`.
#[derive(Clone, Copy, ValueEnum)]
enum Protocol {
    /// KIP-848: broker-side assignment, incremental handovers.
    Consumer,
    /// The classic protocol: client-side assignment.
    Classic,
}

/// What the members have seen, shared with the script.
#[derive(Default)]
struct Seen {
    /// Partitions each member owns now.
    owned: BTreeMap<String, BTreeSet<i32>>,
    /// How many times each (partition, offset) was read.
    reads: BTreeMap<(i32, i64), u32>,
    /// Records read by each member.
    per_member: BTreeMap<String, u64>,
}

type Shared = Arc<Mutex<Seen>>;

fn lock(seen: &Shared) -> MutexGuard<'_, Seen> {
    // A member thread that panicked cannot leave the counters half-written: keep going.
    seen.lock().unwrap_or_else(|p| p.into_inner())
}

/// One member's callbacks: librdkafka calls them from the member's `poll`.
struct MemberContext {
    name: String,
    started: Instant,
    seen: Shared,
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Commit what was processed before the partitions go, synchronously, so the next
            // owner starts right after it. Records are handled inside `poll`, so a
            // partition's position is exactly what is done. Committed again even if an
            // asynchronous commit already sent it: this one waits for the broker's answer.
            let commit = match revoked_positions(consumer, tpl) {
                Ok(positions) if positions.count() == 0 => "nothing read".to_owned(),
                Ok(positions) => match consumer.commit(&positions, CommitMode::Sync) {
                    Ok(()) => "committed".to_owned(),
                    Err(e) => format!("COMMIT FAILED: {e}"),
                },
                Err(e) => format!("COMMIT FAILED: no position: {e}"),
            };
            let gone = partitions(tpl);
            let mut seen = lock(&self.seen);
            let owned = seen.owned.entry(self.name.clone()).or_default();
            owned.retain(|p| !gone.contains(p));
            println!(
                "{:>6.2}s  {:<9} revoked  {:<16} ({commit}), owns {}",
                self.started.elapsed().as_secs_f64(),
                self.name,
                list(&gone),
                list(owned)
            );
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            // An incremental rebalance that gives this member nothing new.
            Rebalance::Assign(tpl) if tpl.count() == 0 => {}
            Rebalance::Assign(tpl) => {
                let new = partitions(tpl);
                let mut seen = lock(&self.seen);
                let owned = seen.owned.entry(self.name.clone()).or_default();
                owned.extend(new.iter().copied());
                println!(
                    "{:>6.2}s  {:<9} assigned {:<16} owns {}",
                    self.started.elapsed().as_secs_f64(),
                    self.name,
                    list(&new),
                    list(owned)
                );
            }
            Rebalance::Error(e) => eprintln!("{}: rebalance error: {e}", self.name),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// The positions (next offsets to read) of the revoked partitions that have one.
fn revoked_positions(
    consumer: &BaseConsumer<MemberContext>,
    revoked: &TopicPartitionList,
) -> KafkaResult<TopicPartitionList> {
    let positions = consumer.position()?;
    let mut out = TopicPartitionList::new();
    for e in revoked.elements() {
        if let Some(p) = positions.find_partition(e.topic(), e.partition()) {
            if let Offset::Offset(o) = p.offset() {
                out.add_partition_offset(e.topic(), e.partition(), Offset::Offset(o))?;
            }
        }
    }
    Ok(out)
}

fn partitions(tpl: &TopicPartitionList) -> BTreeSet<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

fn list(ps: &BTreeSet<i32>) -> String {
    if ps.is_empty() {
        return "nothing".into();
    }
    let names: Vec<String> = ps.iter().map(|p| format!("p{p}")).collect();
    format!("[{}]", names.join(" "))
}

/// A member: a thread polling its own consumer until told to leave.
struct Member {
    name: String,
    leave: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<()>>,
}

impl Member {
    fn join(args: &Args, name: String, started: Instant, seen: Shared) -> anyhow::Result<Self> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &args.brokers)
            .set("group.id", &args.group)
            .set("client.id", &name)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false");
        match args.protocol {
            Protocol::Consumer => config.set("group.protocol", "consumer"),
            // Cooperative: only the partitions that move are revoked, like KIP-848.
            Protocol::Classic => config.set("partition.assignment.strategy", "cooperative-sticky"),
        };
        let context = MemberContext {
            name: name.clone(),
            started,
            seen: seen.clone(),
        };
        let consumer: BaseConsumer<MemberContext> = config.create_with_context(context)?;
        consumer.subscribe(&[&args.topic])?;
        let leave = Arc::new(AtomicBool::new(false));
        let stop = leave.clone();
        let member = name.clone();
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            while !stop.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(100)) {
                    None => {}
                    Some(Ok(m)) => {
                        let mut seen = lock(&seen);
                        *seen.reads.entry((m.partition(), m.offset())).or_default() += 1;
                        *seen.per_member.entry(member.clone()).or_default() += 1;
                        drop(seen);
                        if let Err(e) = consumer.commit_message(&m, CommitMode::Async) {
                            eprintln!("{member}: commit failed (the next one covers it): {e}");
                        }
                    }
                    Some(Err(e)) => {
                        if let Some((code, reason)) = consumer.client().fatal_error() {
                            bail!("{member}: fatal consumer error {code:?}: {reason}");
                        }
                        eprintln!("{member}: consumer error (librdkafka retries): {e}");
                    }
                }
            }
            // Leaving the group revokes (and so commits) the member's partitions, through
            // the callbacks above.
            consumer.unsubscribe();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !lock(&seen)
                .owned
                .get(&member)
                .is_none_or(BTreeSet::is_empty)
                && Instant::now() < deadline
            {
                let _ = consumer.poll(Duration::from_millis(50));
            }
            Ok(())
        });
        Ok(Self {
            name,
            leave,
            thread,
        })
    }

    fn leave(self) -> anyhow::Result<()> {
        self.leave.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("{} panicked", self.name))?
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("consumer-groups: {e:#}");
            ExitCode::FAILURE
        }
    }
}

const WAIT: Duration = Duration::from_secs(90);

fn run(args: &Args) -> anyhow::Result<bool> {
    let started = Instant::now();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    // A producer's metadata request creates the topic on brokers that auto-create.
    let metadata = producer
        .client()
        .fetch_metadata(Some(&args.topic), Duration::from_secs(10))
        .context("reading the topic's metadata")?;
    let count = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    if count == 0 {
        bail!("topic {} has no partitions (does it exist?)", args.topic);
    }
    let all: BTreeSet<i32> = (0..count as i32).collect();
    println!(
        "topic {} has {count} partitions; group {}; {} members\n",
        args.topic, args.group, args.members
    );

    let seen: Shared = Arc::default();
    let mut members: Vec<Member> = Vec::new();
    let mut produced = 0u64;
    for n in 1..=args.members {
        let name = format!("member-{n}");
        println!("--- {name} joins");
        members.push(Member::join(args, name, started, seen.clone())?);
        let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
        wait_balanced(&seen, &names, &all)?;
        produced += produce(&producer, &args.topic, produced, args.per_phase)?;
        wait_read(&seen, produced)?;
    }
    let leaving = members.remove(1);
    println!("--- {} leaves", leaving.name);
    leaving.leave()?;
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    wait_balanced(&seen, &names, &all)?;
    produced += produce(&producer, &args.topic, produced, args.per_phase)?;
    wait_read(&seen, produced)?;
    for m in members {
        m.leave()?;
    }

    let seen = lock(&seen);
    let duplicates: u64 = seen.reads.values().map(|n| u64::from(n - 1)).sum();
    let read = seen.reads.len() as u64;
    println!("\nrecords read by each member:");
    for (name, n) in &seen.per_member {
        println!("  {name:<9} {n}");
    }
    println!(
        "produced {produced}, read {read}, lost {}, duplicates {duplicates}",
        produced.saturating_sub(read)
    );
    Ok(read == produced && duplicates == 0)
}

/// Waits until `members` own every partition between them, each partition once, and nobody
/// else owns any: the rebalance is over.
fn wait_balanced(seen: &Shared, members: &[String], all: &BTreeSet<i32>) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        {
            let seen = lock(seen);
            let mut union = BTreeSet::new();
            let mut overlap = false;
            for (name, owned) in &seen.owned {
                if !members.contains(name) && !owned.is_empty() {
                    overlap = true;
                }
                for p in owned {
                    overlap |= !union.insert(*p);
                }
            }
            // Each member gets its share (or is idle when there are more members than
            // partitions); a member still waiting for its first assignment is not done.
            let fair = all.len() / members.len();
            let shared = members
                .iter()
                .all(|m| seen.owned.get(m).map_or(0, BTreeSet::len) >= fair);
            if !overlap && &union == all && shared {
                let owners: Vec<String> = members
                    .iter()
                    .map(|m| match seen.owned.get(m) {
                        Some(owned) if !owned.is_empty() => format!("{m} {}", list(owned)),
                        // The seed's second common mistake, shown: with more members than
                        // partitions, some get nothing (KIP-848 does not even call them back).
                        _ => format!("{m} idle (more members than partitions)"),
                    })
                    .collect();
                println!("          settled: {}", owners.join(" · "));
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the group did not settle within {} s", WAIT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Produces `count` records numbered from `first`, keyed so that they spread over partitions.
fn produce(producer: &BaseProducer, topic: &str, first: u64, count: u64) -> anyhow::Result<u64> {
    for seq in first..first + count {
        let key = format!("key-{}", seq % 16);
        let value = format!("{{\"seq\":{seq}}}");
        let mut record = BaseRecord::to(topic).key(&key).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => bail!("cannot queue record {seq}: {e}"),
            }
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .context("delivering the phase's records")?;
    println!("          produced {count} records");
    Ok(count)
}

/// Waits until `expected` distinct records have been read.
fn wait_read(seen: &Shared, expected: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while (lock(seen).reads.len() as u64) < expected {
        if Instant::now() > deadline {
            bail!(
                "only {} of {expected} records read within {} s",
                lock(seen).reads.len(),
                WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
