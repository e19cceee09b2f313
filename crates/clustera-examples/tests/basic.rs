//! Example 1 for real: `basic-producer` and `basic-consumer` as processes against the
//! development broker (librdkafka's mock cluster, as `clustera dev` serves it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::process::{Command, Output};

use clustera::testing::kafka::{committed_offsets, high_watermarks, produce, read_topic};
use clustera::testing::MockBroker;

fn run(bin: &str, brokers: &str, args: &[&str]) -> (String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(bin)
        .arg("--brokers")
        .arg(brokers)
        .args(args)
        .env("KAFKA_GROUP_PROTOCOL", "consumer")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    );
    assert!(
        status.success(),
        "{bin} {args:?}: {status}\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

const PRODUCER: &str = env!("CARGO_BIN_EXE_basic-producer");
const CONSUMER: &str = env!("CARGO_BIN_EXE_basic-consumer");

#[test]
fn producer_reports_every_delivery_and_consumer_commits_what_it_handled() {
    let broker = MockBroker::start(1).unwrap();
    broker.create_topic("events", 3).unwrap();
    let brokers = broker.bootstrap();

    let (out, _) = run(PRODUCER, brokers, &["--count", "20"]);
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("delivered user-"))
            .count(),
        20,
        "{out}"
    );
    assert!(out.ends_with("sent 20: delivered 20, failed 0\n"), "{out}");

    // Keyed by user: each user's events on one partition, in the order sent.
    let records = read_topic(brokers, "events").unwrap();
    assert_eq!(records.len(), 20);
    let mut by_user: BTreeMap<String, Vec<(i32, u64)>> = BTreeMap::new();
    for r in &records {
        let v: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        by_user
            .entry(String::from_utf8(r.key.clone().unwrap()).unwrap())
            .or_default()
            .push((r.partition, v["event_id"].as_u64().unwrap()));
    }
    assert_eq!(by_user.len(), 5);
    for (user, events) in &by_user {
        assert!(
            events.iter().all(|(p, _)| *p == events[0].0),
            "{user}: {events:?}"
        );
        assert!(
            events.windows(2).all(|w| w[0].1 < w[1].1),
            "{user}: {events:?}"
        );
        assert_eq!(events.len(), 4);
    }

    // A poison record: skipped with its reason, and committed past.
    produce(
        brokers,
        "events",
        [(None, b"{not json".to_vec(), Vec::new())],
    )
    .unwrap();
    let group = ["--group", "example-1", "--idle-exit-secs", "60"];
    let (out, err) = run(
        CONSUMER,
        brokers,
        &[&group[..], &["--max-messages", "21"]].concat(),
    );
    assert_eq!(
        out.lines().filter(|l| l.contains(": event ")).count(),
        20,
        "{out}"
    );
    assert_eq!(err.matches("skipping events[").count(), 1, "{err}");
    assert!(err.contains("not an event"), "{err}");
    assert!(out.contains("handled 20, skipped 1 bad"), "{out}");
    assert_eq!(
        committed_offsets(brokers, "example-1", "events").unwrap(),
        high_watermarks(brokers, "events").unwrap(),
        "every handled record committed"
    );

    // A second run resumes at the commits: it sees only what came after.
    let (out, _) = run(PRODUCER, brokers, &["--count", "5"]);
    assert!(out.ends_with("sent 5: delivered 5, failed 0\n"), "{out}");
    let (out, err) = run(
        CONSUMER,
        brokers,
        &[&group[..], &["--max-messages", "5"]].concat(),
    );
    let handled: Vec<&str> = out.lines().filter(|l| l.contains(": event ")).collect();
    assert_eq!(handled.len(), 5, "{out}\n{err}");
    // The second producer run numbers its events from 0 again: the first five.
    for l in &handled {
        let id: u64 = l
            .split(": event ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(id < 5, "{l}");
    }
    assert!(out.contains("handled 5, skipped 0 bad"), "{out}");
    assert_eq!(
        committed_offsets(brokers, "example-1", "events").unwrap(),
        high_watermarks(brokers, "events").unwrap()
    );
}

#[test]
fn producer_fails_loudly_when_no_broker_answers() {
    // A port nothing listens on: every delivery times out, and the producer says so.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(PRODUCER)
        .args(["--brokers", &format!("127.0.0.1:{port}")])
        .args(["--count", "3", "--timeout-secs", "2"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert_eq!(
        stderr.matches("delivery failed for user-").count(),
        3,
        "{stderr}"
    );
    assert!(stdout.contains("sent 3: delivered 0, failed 3"), "{stdout}");
}
