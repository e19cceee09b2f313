//! The reliability suite (R1 to R4 of the runtime-hardening issue). CI runs it at a reduced
//! scale; `scripts/reliability.sh` runs the same code at full scale
//! (`CLUSTERA_RELIABILITY=full`) and writes RELIABILITY.md from the rows each scenario appends
//! to `CLUSTERA_RELIABILITY_REPORT`. Every scenario asserts 0 lost and its own bound, with
//! exact counts in the report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::io::Write as _;
use std::process::Child;
use std::time::{Duration, Instant};

use clustera::config::Secret;
use clustera::dead_letter_headers as dlq;
use clustera::testing::{kafka, MockBroker};
use clustera::{Config, Context, Kernel, KernelError, Message, Outcome, Record};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use common::*;

/// Full scale or CI's reduced one.
fn full() -> bool {
    std::env::var("CLUSTERA_RELIABILITY").is_ok_and(|v| v == "full")
}

/// `full` at full scale, `ci` otherwise.
fn scale<T>(full_value: T, ci: T) -> T {
    if full() {
        full_value
    } else {
        ci
    }
}

/// One row of the report: what a scenario measured.
struct Row<'a> {
    scenario: &'a str,
    setup: String,
    inputs: usize,
    lost: usize,
    duplicated: usize,
    stalled: usize,
    recovery: Duration,
    notes: String,
}

/// Prints the row, and appends it to the report file when one is named.
fn report(row: &Row<'_>) {
    let line = format!(
        "| {} | {} | {} | {} | {} | {} ({:.2}%) | {} | {:.1} s | {} |",
        row.scenario,
        if full() { "full" } else { "ci" },
        row.setup,
        row.inputs,
        row.lost,
        row.duplicated,
        100.0 * row.duplicated as f64 / row.inputs.max(1) as f64,
        row.stalled,
        row.recovery.as_secs_f64(),
        row.notes,
    );
    eprintln!("reliability: {line}");
    if let Ok(path) = std::env::var("CLUSTERA_RELIABILITY_REPORT") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }
}

/// Lost inputs and duplicate outputs of a copy from `input` to `output` (outputs name their
/// source `(partition, offset)`).
fn lost_and_duplicated(bootstrap: &str, input: &str, output: &str) -> (usize, usize, usize) {
    let inputs = input_positions(bootstrap, input);
    let outputs = kafka::read_topic(bootstrap, output).unwrap();
    let counts = histogram(&transform_sources(&outputs));
    let lost = inputs.keys().filter(|p| !counts.contains_key(p)).count();
    let duplicated = counts.values().map(|n| n - 1).sum();
    (inputs.len(), lost, duplicated)
}

fn transform(bootstrap: &str, input: &str, output: &str, group: &str) -> Child {
    transform_process(
        bootstrap,
        input,
        output,
        group,
        &[
            ("KAFKA_GROUP_PROTOCOL", "consumer"),
            ("TRANSFORM_DELAY_MS", "1"),
            ("RUST_LOG", "error"),
        ],
    )
}

/// R1: three transform processes share 8 partitions; every 3 s one is SIGKILLed and started
/// again. Goal: 0 lost, duplicates at most 2%.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r1_churn_sigkill_every_three_seconds() {
    let (messages, kills) = scale((100_000, 15), (20_000, 4));
    let (_broker, bootstrap) = mock_with_sequence(&[("r1-in", 8), ("r1-out", 8)], messages).await;
    let mut members: Vec<Child> = (0..3)
        .map(|_| transform(&bootstrap, "r1-in", "r1-out", "r1"))
        .collect();
    for kill in 0..kills {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let victim = kill % members.len();
        let _ = members[victim].kill();
        let _ = members[victim].wait();
        members[victim] = transform(&bootstrap, "r1-in", "r1-out", "r1");
    }
    let recovering = Instant::now();
    let b = bootstrap.clone();
    wait_for_blocking(
        "R1 to commit everything",
        Duration::from_secs(300),
        move || fully_committed(&b, "r1", "r1-in"),
    )
    .await;
    let recovery = recovering.elapsed();
    for m in &mut members {
        let _ = m.kill();
        let _ = m.wait();
    }
    let b = bootstrap.clone();
    let (inputs, lost, duplicated) =
        blocking(move || lost_and_duplicated(&b, "r1-in", "r1-out")).await;
    report(&Row {
        scenario: "R1 churn",
        setup: format!("3 processes, 8 partitions, {kills} SIGKILLs every 3 s, KIP-848"),
        inputs,
        lost,
        duplicated,
        stalled: 0,
        recovery,
        notes: "recovery: last restart to commits at the high watermarks".into(),
    });
    assert_eq!(lost, 0, "R1 lost inputs");
    assert!(
        duplicated * 50 <= inputs,
        "R1: {duplicated} duplicates of {inputs} is over 2%"
    );
}

/// R2: members join and leave `rounds` times while one member stays; under the eager and
/// cooperative-sticky assignors (classic protocol) and KIP-848.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r2_membership_changes() {
    let rounds = scale(10, 3);
    for (name, assignor) in [
        ("eager (range)", Some("range")),
        ("cooperative-sticky", Some("cooperative-sticky")),
        ("KIP-848", None),
    ] {
        membership(name, assignor, rounds).await;
    }
}

async fn membership(name: &str, assignor: Option<&str>, rounds: usize) {
    const PARTITIONS: usize = 4;
    let messages = scale(20_000, 6_000);
    let prefix = format!("r2-{}", name.split_whitespace().next().unwrap());
    let (input, output) = (format!("{prefix}-in"), format!("{prefix}-out"));
    let (_broker, bootstrap) =
        mock_with_sequence(&[(&input, PARTITIONS as i32), (&output, 4)], messages).await;
    let make = |b: &str| -> Config {
        let mut c = match assignor {
            Some(a) => {
                let mut c = config("copy", b, &input);
                c.properties
                    .insert("partition.assignment.strategy".into(), Secret::new(a));
                c
            }
            None => config_kip848("copy", b, &input),
        };
        c.group_id = prefix.clone();
        c
    };
    let kernel = || SlowCopy {
        output: output.clone(),
        delay: Duration::from_millis(2),
    };
    let stayer = start(make(&bootstrap), kernel());
    let mut commit_failures = 0;
    for _ in 0..rounds {
        let visitor = start(make(&bootstrap), kernel());
        tokio::time::sleep(Duration::from_secs(2)).await;
        commit_failures += visitor.stop().await.commit_failures;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let recovering = Instant::now();
    let (b, i, g) = (bootstrap.clone(), input.clone(), prefix.clone());
    wait_for_blocking(
        "R2 to commit everything",
        Duration::from_secs(180),
        move || fully_committed(&b, &g, &i),
    )
    .await;
    let recovery = recovering.elapsed();
    commit_failures += stayer.stop().await.commit_failures;
    let (b, i, o) = (bootstrap.clone(), input.clone(), output.clone());
    let (inputs, lost, duplicated) = blocking(move || lost_and_duplicated(&b, &i, &o)).await;
    // At a leave, what is in process when the drain ends can be processed again: at most one
    // message per partition (each processes one at a time) per membership change.
    let in_flight_bound = PARTITIONS * 2 * rounds;
    report(&Row {
        scenario: "R2 membership",
        setup: format!("{name}, {rounds} joins and leaves, {PARTITIONS} partitions"),
        inputs,
        lost,
        duplicated,
        stalled: 0,
        recovery,
        notes: format!(
            "{commit_failures} commits refused during rebalances; in-flight bound {in_flight_bound}"
        ),
    });
    assert_eq!(lost, 0, "R2 {name} lost inputs");
    if commit_failures == 0 {
        assert!(
            duplicated <= in_flight_bound,
            "R2 {name}: {duplicated} duplicates over the in-flight bound {in_flight_bound}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r3_broker_faults() {
    // The shipped configuration: no local message timeout, so nothing fails during the
    // outage and the idempotent producer keeps every partition's order.
    broker_faults(None).await;
    // An operator's 3 s timeout, shorter than the outage: records fail and are resent.
    broker_faults(Some(3_000)).await;
}

async fn broker_faults(message_timeout_ms: Option<u64>) {
    let (keys, per_key, outage) = scale((100, 200, 10), (40, 75, 5));
    let broker = MockBroker::start(1).unwrap();
    broker.create_topic("r3-in", 4).unwrap();
    broker.create_topic("r3-out", 4).unwrap();
    let bootstrap = broker.bootstrap().to_owned();
    let records: Vec<kafka::ProducedRecord> = (0..per_key)
        .flat_map(|n| {
            (0..keys).map(move |k| {
                (
                    Some(format!("key-{k}").into_bytes()),
                    n.to_string().into_bytes(),
                    Vec::new(),
                )
            })
        })
        .collect();
    let b = bootstrap.clone();
    blocking(move || kafka::produce(&b, "r3-in", records).unwrap()).await;

    let mut cfg = config("keyed", &bootstrap, "r3-in");
    if let Some(ms) = message_timeout_ms {
        cfg.properties
            .insert("message.timeout.ms".into(), Secret::new(ms.to_string()));
    }
    let running = start(
        cfg,
        KeyedCopy {
            output: "r3-out".into(),
        },
    );
    let stats = running.stats.clone();
    let total = (keys * per_key) as u64;
    wait_for("progress", Duration::from_secs(60), || {
        stats.snapshot().processed() > total / 10
    })
    .await;
    let cluster = broker.cluster();
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE; 5],
    );
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT; 5],
    );
    let before = stats.snapshot().processed();
    wait_for("progress through errors", Duration::from_secs(60), || {
        stats.snapshot().processed() > before + total / 10
    })
    .await;
    cluster.broker_down(1).unwrap();
    tokio::time::sleep(Duration::from_secs(outage)).await;
    cluster.broker_up(1).unwrap();
    let recovering = Instant::now();
    let b = bootstrap.clone();
    wait_for_blocking(
        "R3 commits at the high watermark",
        Duration::from_secs(180),
        move || fully_committed(&b, "keyed-consumer-group", "r3-in"),
    )
    .await;
    let recovery = recovering.elapsed();
    let summary = running.stop().await;

    let b = bootstrap.clone();
    let outputs = blocking(move || kafka::read_topic(&b, "r3-out").unwrap()).await;
    let appearances = FirstAppearances::of(&outputs);
    let duplicated = appearances.duplicates;
    let lost = keys * per_key - appearances.distinct();
    let out_of_order = appearances.reordered_keys();
    report(&Row {
        scenario: "R3 broker faults",
        setup: format!(
            "{keys} keys × {per_key}, 5 produce + 5 commit errors, {outage} s outage, message.timeout.ms {}",
            message_timeout_ms.map_or("unset (shipped)".to_owned(), |ms| ms.to_string())
        ),
        inputs: keys * per_key,
        lost,
        duplicated,
        stalled: 0,
        recovery,
        notes: format!(
            "{out_of_order} keys out of order; {} failed deliveries resent; recovery: broker up to commits at the high watermark",
            summary.produce_failures
        ),
    });
    assert_eq!(lost, 0, "R3 lost inputs");
    match message_timeout_ms {
        None => assert_eq!(
            out_of_order, 0,
            "R3 (shipped configuration): keys whose order of first appearance changed"
        ),
        // With a timeout shorter than the outage, a record that was in flight can land
        // before the resend of an earlier one (librdkafka goes on with a bumped epoch between
        // the failure and the runtime's purge): counted and reported, not guaranteed.
        Some(_) => assert!(summary.produce_failures > 0, "the outage failed deliveries"),
    }
}

/// Undecodable inputs, outputs refused for good and panics, mixed with good inputs.
struct Poison;

impl Kernel for Poison {
    fn name(&self) -> &str {
        "poison"
    }
    fn default_topics(&self) -> Vec<String> {
        vec![]
    }
    async fn process(&self, msg: &Message, ctx: &mut Context) -> Result<Outcome, KernelError> {
        let text = msg.text()?;
        match text {
            "panic" => panic!("poison pill"),
            "huge" => ctx.send(Record::to("r4-out").value(vec![b'x'; 2_000_000])),
            other => ctx.send(
                Record::to("r4-out")
                    .maybe_key(msg.key_bytes())
                    .value(other.to_owned()),
            ),
        }
        Ok(Outcome::Ack)
    }
}

/// R4: poison. Goal: every bad input in the dead-letter topic with its provenance, and no
/// partition stalled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r4_poison() {
    // The kernel's panics are expected (and dead-lettered); keep their reports out of the log.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.to_string().contains("poison pill") {
            default_hook(info);
        }
    }));
    let messages = scale(20_000, 4_000);
    let broker = MockBroker::start(1).unwrap();
    for t in ["r4-in", "r4-out", "r4-in.dlq"] {
        broker.create_topic(t, 4).unwrap();
    }
    let bootstrap = broker.bootstrap().to_owned();
    let mut expected: HashMap<&str, usize> = HashMap::new();
    let records: Vec<kafka::ProducedRecord> = (0..messages)
        .map(|i| {
            let value = match i % 100 {
                7 => b"\xff\xfe not utf-8".to_vec(),
                31 => b"panic".to_vec(),
                59 => b"huge".to_vec(),
                _ => format!("good {i}").into_bytes(),
            };
            (Some(format!("k{i}").into_bytes()), value, Vec::new())
        })
        .collect();
    for r in &records {
        let kind = match r.1.as_slice() {
            b"panic" => "panic",
            b"huge" => "refused",
            v if std::str::from_utf8(v).is_err() => "undecodable",
            _ => "good",
        };
        *expected.entry(kind).or_default() += 1;
    }
    let b = bootstrap.clone();
    blocking(move || kafka::produce(&b, "r4-in", records).unwrap()).await;
    let started = Instant::now();
    let summary = run_to_completion(
        config("poison", &bootstrap, "r4-in"),
        Poison,
        &bootstrap,
        "r4-in",
        messages,
    )
    .await;
    let elapsed = started.elapsed();
    let b = bootstrap.clone();
    let (letters, outputs) = blocking(move || {
        (
            kafka::read_topic(&b, "r4-in.dlq").unwrap(),
            kafka::read_topic(&b, "r4-out").unwrap(),
        )
    })
    .await;
    let mut got: HashMap<&str, usize> = HashMap::new();
    let mut without_provenance = 0;
    for l in &letters {
        let error = l.header(dlq::ERROR).unwrap_or_default();
        let kind = if error.contains("panicked") {
            "panic"
        } else if error.contains("refused") {
            "refused"
        } else {
            "undecodable"
        };
        *got.entry(kind).or_default() += 1;
        if l.header(dlq::ORIGINAL_TOPIC).as_deref() != Some("r4-in")
            || l.header(dlq::ORIGINAL_OFFSET).is_none()
        {
            without_provenance += 1;
        }
    }
    let bad = messages - expected["good"];
    let lost = (bad.saturating_sub(letters.len())) + expected["good"].saturating_sub(outputs.len());
    report(&Row {
        scenario: "R4 poison",
        setup: format!(
            "{} undecodable, {} refused outputs, {} panics",
            expected["undecodable"], expected["refused"], expected["panic"]
        ),
        inputs: messages,
        lost,
        duplicated: (letters.len() + outputs.len()).saturating_sub(messages),
        stalled: 0,
        recovery: elapsed,
        notes: format!(
            "{} dead letters ({without_provenance} without provenance); time: the whole run",
            letters.len()
        ),
    });
    for kind in ["undecodable", "refused", "panic"] {
        assert_eq!(got.get(kind), expected.get(kind), "{kind} dead letters");
    }
    assert_eq!(without_provenance, 0);
    assert_eq!(outputs.len(), expected["good"], "good outputs");
    assert_eq!(summary.outputs_refused as usize, expected["refused"]);
}
