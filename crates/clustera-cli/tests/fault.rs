//! `clustera dev --control` and `clustera fault`, observed by real Kafka clients.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureRecord;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

const BIN: &str = env!("CARGO_BIN_EXE_clustera");

/// `clustera dev --control` on free ports, killed on drop. Its stderr goes to a file.
struct Dev {
    child: Child,
    addr: String,
    control: String,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dev {
    fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("dev.stderr");
        let mut child = Command::new(BIN)
            .args(["dev", "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        // The bootstrap address, then the control API's URL, once both are bound.
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let (mut addr, mut control) = (String::new(), String::new());
        out.read_line(&mut addr).unwrap();
        out.read_line(&mut control).unwrap();
        let (addr, control) = (addr.trim().to_owned(), control.trim().to_owned());
        assert!(addr.starts_with("127.0.0.1:"), "bootstrap line: {addr:?}");
        assert!(
            control.starts_with("http://127.0.0.1:"),
            "control line: {control:?}"
        );
        Dev {
            child,
            addr,
            control,
            stderr,
            _dir: dir,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap()
    }

    fn fault(&self, args: &[&str]) -> Output {
        clustera(&[&["fault", "--control", &self.control], args].concat())
    }

    /// Runs `clustera fault` and returns its stdout, failing the test if it failed.
    fn fault_ok(&self, args: &[&str]) -> String {
        let out = self.fault(args);
        assert!(
            out.status.success(),
            "fault {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Polls `fault status` until `done` holds for its output (at most `limit`).
    fn wait_status(&self, limit: Duration, done: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let status = self.fault_ok(&["status"]);
            if done(&status) {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "gave up waiting; status:\n{status}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clustera(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("CLUSTERA_CONTROL")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A refusal: non-zero exit, one line on stderr, which is returned.
fn refused(out: &Output) -> String {
    assert!(!out.status.success(), "expected a refusal");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(out.stdout.is_empty());
    err
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn producer(bootstrap: &str, settings: &[(&str, &str)]) -> FutureProducer {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (k, v) in settings {
        config.set(*k, *v);
    }
    config.create().unwrap()
}

/// Keeps the last statistics librdkafka emitted.
#[derive(Clone, Default)]
struct LastStats(Arc<Mutex<Option<Statistics>>>);

impl ClientContext for LastStats {
    fn stats(&self, statistics: Statistics) {
        *self.0.lock().unwrap() = Some(statistics);
    }
}

impl LastStats {
    /// Produce requests sent to all brokers, per the latest statistics.
    fn produce_requests(&self) -> Option<i64> {
        let stats = self.0.lock().unwrap();
        stats.as_ref().map(|s| {
            s.brokers
                .values()
                .filter_map(|b| b.req.get("Produce"))
                .sum()
        })
    }

    /// Waits for statistics newer than now and returns their Produce request count.
    fn produce_requests_after(&self, limit: Duration) -> i64 {
        *self.0.lock().unwrap() = None;
        let start = Instant::now();
        loop {
            if let Some(n) = self.produce_requests() {
                return n;
            }
            assert!(start.elapsed() < limit, "no statistics");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn broker_down_for_two_seconds_fails_short_produces_then_comes_back() {
    let dev = Dev::start(&["--topic", "f:1"]);
    let rt = runtime();
    // A client with a short delivery timeout, connected before the outage.
    let short = producer(&dev.addr, &[("message.timeout.ms", "200")]);
    short
        .client()
        .fetch_metadata(Some("f"), Duration::from_secs(10))
        .unwrap();
    let steady = producer(&dev.addr, &[("message.timeout.ms", "30000")]);
    let send = |p: &FutureProducer, value: &str| {
        rt.block_on(p.send(
            FutureRecord::<(), _>::to("f").payload(value),
            Duration::from_secs(5),
        ))
        .map_err(|(e, _)| e)
    };
    let before = send(&steady, "before").unwrap();
    assert_eq!((before.partition, before.offset), (0, 0));

    assert_eq!(
        dev.fault_ok(&["down", "--for", "2"]),
        "all brokers down for 2 s\n"
    );
    match send(&short, "during") {
        Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)) => {}
        other => panic!("expected a delivery timeout while the broker is down: {other:?}"),
    }

    // It comes back by itself, and the next message follows the first: the one that timed
    // out was never written.
    dev.wait_status(Duration::from_secs(15), |s| s.contains("broker 1: up\n"));
    let after = send(&steady, "after").unwrap();
    assert_eq!((after.partition, after.offset), (0, 1));
    let log = dev.stderr();
    assert!(
        log.contains("clustera dev: all brokers down for 2 s"),
        "{log}"
    );
    assert!(log.contains("clustera dev: broker 1 up again"), "{log}");

    // Down until up, by hand.
    assert_eq!(
        dev.fault_ok(&["down", "--broker", "1"]),
        "broker 1 down until up\n"
    );
    let status = dev.fault_ok(&["status"]);
    assert!(status.contains("broker 1: down\n"), "{status}");
    assert!(send(&short, "while down").is_err());
    assert_eq!(dev.fault_ok(&["up", "--broker", "1"]), "broker 1 up\n");
    let again = send(&steady, "again").unwrap();
    assert_eq!(again.offset, 2);
}

#[test]
fn produce_errors_are_injected_counted_and_consumed() {
    let dev = Dev::start(&["--topic", "e:1"]);
    assert_eq!(
        dev.fault_ok(&["errors", "--api", "produce", "--code", "6", "--count", "3"]),
        "next 3 Produce request(s) fail with NOT_LEADER_FOR_PARTITION (6)\n"
    );
    let status = dev.fault_ok(&["status"]);
    assert!(
        status.contains("injected so far: 3 Produce error(s) NOT_LEADER_FOR_PARTITION (6)\n"),
        "{status}"
    );

    let stats = LastStats::default();
    let producer: FutureProducer<LastStats> = ClientConfig::new()
        .set("bootstrap.servers", &dev.addr)
        .set("statistics.interval.ms", "100")
        .set("enable.idempotence", "false")
        .set("retry.backoff.ms", "10")
        .create_with_context(stats.clone())
        .unwrap();
    let rt = runtime();
    let send = |value: &str| {
        rt.block_on(producer.send(
            FutureRecord::<(), _>::to("e").payload(value),
            Duration::from_secs(5),
        ))
        .map_err(|(e, _)| e)
    };
    // NOT_LEADER_OR_FOLLOWER is retriable: librdkafka refreshes metadata and sends again, so
    // the message is delivered, by the fourth Produce request, and written once.
    let first = send("first").unwrap();
    assert_eq!((first.partition, first.offset), (0, 0));
    assert_eq!(stats.produce_requests_after(Duration::from_secs(10)), 4);
    // The errors are used up: the next message takes one request.
    let second = send("second").unwrap();
    assert_eq!(second.offset, 1);
    assert_eq!(stats.produce_requests_after(Duration::from_secs(10)), 5);

    // Pending errors can be dropped before any request uses them.
    dev.fault_ok(&["errors", "--api", "Produce", "--code", "6", "--count", "50"]);
    assert_eq!(
        dev.fault_ok(&["clear", "--api", "PRODUCE"]),
        "pending Produce errors dropped\n"
    );
    let third = send("third").unwrap();
    assert_eq!(third.offset, 2);
    assert_eq!(stats.produce_requests_after(Duration::from_secs(10)), 6);
}

#[test]
fn bad_requests_are_refused_naming_the_problem() {
    let dev = Dev::start(&["--broker-count", "2"]);
    let err = refused(&dev.fault(&["errors", "--api", "Nope", "--code", "6", "--count", "1"]));
    assert!(
        err.starts_with("clustera: control API refused: unknown API name \"Nope\": errors can be injected for Produce, Fetch,"),
        "{err}"
    );
    let err = refused(&dev.fault(&["down", "--broker", "7"]));
    assert_eq!(
        err.trim(),
        "clustera: control API refused: unknown broker 7: the brokers are 1 to 2 (or all)"
    );
    let err = refused(&dev.fault(&["rtt", "--broker", "0", "--ms", "5"]));
    assert!(err.contains("unknown broker 0"), "{err}");
    let err = refused(&dev.fault(&["errors", "--api", "Produce", "--code", "4242"]));
    assert!(err.contains("unknown Kafka error code 4242"), "{err}");
    let err = refused(&dev.fault(&["errors", "--api", "Produce", "--code", "-195"]));
    assert!(err.contains("unknown Kafka error code -195"), "{err}");
    let err = refused(&dev.fault(&["errors", "--api", "metadata", "--code", "3"]));
    assert!(
        err.contains("API Metadata cannot be failed on demand"),
        "{err}"
    );
    let err = refused(&dev.fault(&["down", "--for", "0"]));
    assert!(err.contains("for_seconds 0: expected 1 to 86400"), "{err}");

    // Nothing was changed by the refusals.
    assert_eq!(
        dev.fault_ok(&["status"]),
        format!("bootstrap {}\nbroker 1: up\nbroker 2: up\n", dev.addr)
    );
    // Both brokers can be acted on; rtt is shown.
    assert_eq!(
        dev.fault_ok(&["rtt", "--broker", "2", "--ms", "30"]),
        "broker 2 round-trip time 30 ms\n"
    );
    assert!(dev
        .fault_ok(&["status"])
        .ends_with("broker 2: up, rtt 30 ms\n"));

    // An unreachable control API, and a control address that is not loopback.
    let err = refused(&clustera(&["fault", "--control", "127.0.0.1:1", "status"]));
    assert!(
        err.starts_with("clustera: cannot reach the control API at http://127.0.0.1:1:"),
        "{err}"
    );
    let err = refused(&clustera(&[
        "dev",
        "--listen",
        "127.0.0.1:0",
        "--control",
        "0.0.0.0:0",
    ]));
    assert!(
        err.contains("--control 0.0.0.0:0: the control API only serves loopback addresses"),
        "{err}"
    );
    // A usage error is clap's exit code 2.
    let out = clustera(&[
        "fault",
        "--control",
        &dev.control,
        "errors",
        "--api",
        "Produce",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn brokers_is_still_accepted_and_bootstrap_survives_a_broker_down() {
    let dev = Dev::start(&["--brokers", "3"]);
    let status = dev.fault_ok(&["status"]);
    assert!(status.ends_with("broker 3: up\n"), "{status}");
    assert_eq!(status.lines().count(), 4, "{status}");

    // With broker 1 down, a new client still bootstraps (through broker 2), and the mock
    // leaves broker 1 out of its metadata.
    assert_eq!(
        dev.fault_ok(&["down", "--broker", "1"]),
        "broker 1 down until up\n"
    );
    let client = producer(&dev.addr, &[]);
    let metadata = client
        .client()
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let ids: BTreeSet<i32> = metadata.brokers().iter().map(|b| b.id()).collect();
    assert_eq!(ids, BTreeSet::from([2, 3]));
}

fn consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("group.protocol", "consumer")
        .create()
        .unwrap()
}

/// Polls until the consumer holds all of `partitions` (at most `limit`).
fn wait_assigned(consumer: &BaseConsumer, partitions: i32, limit: Duration) {
    let want: BTreeSet<i32> = (0..partitions).collect();
    let start = Instant::now();
    loop {
        let _ = consumer.poll(Duration::from_millis(100));
        let got: BTreeSet<i32> = consumer
            .assignment()
            .unwrap()
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect();
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "assignment {got:?} after {limit:?}, expected {want:?}"
        );
    }
}

#[test]
fn consumer_protocol_members_get_their_partitions_at_once_after_a_restart() {
    let dev = Dev::start(&["--topic", "k:4"]);
    let banner = dev.stderr();
    assert!(
        banner.contains("group.protocol=consumer (KAFKA_GROUP_PROTOCOL=consumer"),
        "{banner}"
    );
    let first = consumer(&dev.addr, "restarts");
    first.subscribe(&["k"]).unwrap();
    wait_assigned(&first, 4, Duration::from_secs(30));
    // A clean stop leaves the group; its successor is not made to wait for a session
    // timeout (the classic protocol on this mock waits about 44 s here).
    drop(first);
    let second = consumer(&dev.addr, "restarts");
    second.subscribe(&["k"]).unwrap();
    wait_assigned(&second, 4, Duration::from_secs(15));
}
