//! The outbox pipeline through a PostgreSQL restart: `clustera outbox relay`, `clustera outbox
//! process` and `clustera outbox load --rate 500` run as processes while PostgreSQL is
//! stopped (`pg_ctl stop -m fast`) for 8 s and started again on the same data directory and
//! port. None of the three exits, the relay's `/healthz` fails while PostgreSQL is away and
//! recovers, nothing is dead-lettered, and every event is relayed and applied exactly once in
//! effect.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clustera::testing::{kafka, MockBroker};
use clustera_debezium::{decode, Decoded, OutboxColumns, OutboxEvent};
use clustera_outbox::testing::Postgres;
use clustera_outbox_demo::{activity, report};
use tokio_postgres::{Client, NoTls};

const BIN: &str = env!("CARGO_BIN_EXE_clustera");
const TOPIC: &str = "postgres.activity.event_outbox";
const EVENTS: i64 = 12_000;
const DOWN: Duration = Duration::from_secs(8);

/// `clustera outbox <args>`, its standard error in `dir/<name>.log`.
fn outbox(args: &[&str], db: &str, brokers: &str, dir: &Path, name: &str) -> Command {
    let mut c = Command::new(BIN);
    c.arg("outbox")
        .args(args)
        .env("DATABASE_URL", db)
        .env("KAFKA_BOOTSTRAP_SERVERS", brokers)
        .env("CLUSTERA_HTTP_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn,clustera_outbox=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap());
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn healthz(addr: &str) -> Option<u16> {
    let r = reqwest::get(format!("http://{addr}/healthz")).await.ok()?;
    Some(r.status().as_u16())
}

/// Polls until `/healthz` answers `status`; how long that took.
async fn wait_health(addr: &str, status: u16, within: Duration) -> Duration {
    let started = Instant::now();
    while healthz(addr).await != Some(status) {
        assert!(
            started.elapsed() < within,
            "relay /healthz never {status} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

fn on_topic(brokers: &str, topic: &str) -> i64 {
    kafka::high_watermarks(brokers, topic)
        .unwrap()
        .values()
        .sum()
}

fn running(child: &mut Child, name: &str, logs: &Path) {
    if let Some(status) = child.try_wait().unwrap() {
        let log = std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap_or_default();
        panic!("the {name} exited ({status}):\n{log}");
    }
}

fn terminate(mut child: Child, name: &str) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert!(status.success(), "the {name} stopped badly: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_under_load_loses_nothing_and_stops_nothing() {
    let mut pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let broker = MockBroker::start(1).unwrap();
    broker.create_topic(TOPIC, 4).unwrap();
    broker.create_topic(&format!("{TOPIC}.dlq"), 1).unwrap();
    let (db, brokers) = (pg.url().to_owned(), broker.bootstrap().to_owned());
    let logs = tempfile::tempdir().unwrap();
    let dir = logs.path();
    assert!(outbox(&["init"], &db, &brokers, dir, "init")
        .status()
        .unwrap()
        .success());

    let relay_addr = format!("127.0.0.1:{}", free_port());
    let mut relay = outbox(&["relay"], &db, &brokers, dir, "relay")
        .env("CLUSTERA_HTTP_ADDR", &relay_addr)
        .env("CLUSTERA_STALL_TIMEOUT_MS", "2000")
        .spawn()
        .unwrap();
    let mut processor = outbox(&["process"], &db, &brokers, dir, "processor")
        .spawn()
        .unwrap();
    let (relay_pid, processor_pid) = (relay.id(), processor.id());
    wait_health(&relay_addr, 200, Duration::from_secs(30)).await;
    let events = EVENTS.to_string();
    let mut load = outbox(
        &["load", "--events", &events, "--rate", "500"],
        &db,
        &brokers,
        dir,
        "load",
    )
    .spawn()
    .unwrap();

    // Well into the load: stop PostgreSQL for 8 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let b = brokers.clone();
        if tokio::task::spawn_blocking(move || on_topic(&b, TOPIC))
            .await
            .unwrap()
            >= 2500
        {
            break;
        }
        assert!(Instant::now() < deadline, "the pipeline got going");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::task::block_in_place(|| pg.stop()).unwrap();
    let stopped = Instant::now();
    // No round completes while PostgreSQL is away: past the 2 s stall timeout, unhealthy.
    let unhealthy_after = wait_health(&relay_addr, 503, DOWN).await;
    tokio::time::sleep(DOWN.saturating_sub(stopped.elapsed())).await;
    tokio::task::block_in_place(|| pg.start_again()).unwrap();
    let started = Instant::now();
    let healthy_after = wait_health(&relay_addr, 200, Duration::from_secs(60)).await;
    running(&mut relay, "relay", dir);
    running(&mut processor, "processor", dir);

    let status = tokio::task::spawn_blocking(move || load.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "the load generator rode out the restart: {status}"
    );
    let (client, conn) = tokio_postgres::connect(&db, NoTls).await.unwrap();
    tokio::spawn(conn);
    assert_eq!(
        count(&client, "SELECT count(*) FROM activity.event_outbox").await,
        EVENTS,
        "every generated event in the outbox exactly once"
    );

    // Every event's every handler applied: one marker each.
    let registry = activity::registry();
    let mut expected_markers = 0;
    for row in client
        .query(
            "SELECT event_type, count(*) FROM activity.event_outbox GROUP BY 1",
            &[],
        )
        .await
        .unwrap()
    {
        let (event_type, n): (String, i64) = (row.get(0), row.get(1));
        expected_markers += n * registry.handlers_for(&event_type).len() as i64;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let markers = count(&client, "SELECT count(*) FROM processed_events").await;
        if markers == expected_markers {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{markers} of {expected_markers} handler markers"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let caught_up = started.elapsed();
    assert_eq!(report::verify(&client).await.unwrap(), Vec::<String>::new());
    let global = client
        .query_one(
            "SELECT doc FROM read_models WHERE collection = 'user_stats' AND id = 'global'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, serde_json::Value>(0);
    for (field, event_type) in [
        ("total_users", "UserCreated"),
        ("total_activities", "ActivityCreated"),
        ("total_participations", "ParticipantJoined"),
    ] {
        let n = count(
            &client,
            &format!(
                "SELECT count(*) FROM activity.event_outbox WHERE event_type = '{event_type}'"
            ),
        )
        .await;
        assert_eq!(global[field], n, "{field}: each event counted exactly once");
    }

    // Every event on the topic; nothing dead-lettered.
    let b = brokers.clone();
    let relayed: Vec<String> = tokio::task::spawn_blocking(move || {
        kafka::read_topic(&b, TOPIC)
            .unwrap()
            .into_iter()
            .map(|m| {
                let Decoded::Change(c) = decode(m.value.as_deref()).unwrap() else {
                    panic!("tombstone")
                };
                let e: OutboxEvent = OutboxEvent::from_change(&c, &OutboxColumns::default())
                    .unwrap()
                    .unwrap();
                e.event_id
            })
            .collect()
    })
    .await
    .unwrap();
    let ids: BTreeSet<String> = client
        .query("SELECT event_id::text FROM activity.event_outbox", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(relayed.iter().cloned().collect::<BTreeSet<_>>(), ids);
    let b = brokers.clone();
    let dead = tokio::task::spawn_blocking(move || on_topic(&b, &format!("{TOPIC}.dlq")))
        .await
        .unwrap();
    assert_eq!(dead, 0, "nothing dead-lettered");

    // The same processes all along, and they stop cleanly.
    running(&mut relay, "relay", dir);
    running(&mut processor, "processor", dir);
    assert_eq!((relay.id(), processor.id()), (relay_pid, processor_pid));
    terminate(relay, "relay");
    terminate(processor, "processor");
    let relay_log = std::fs::read_to_string(dir.join("relay.log")).unwrap();
    assert!(relay_log.contains("reconnected to postgres"), "{relay_log}");
    let processor_log = std::fs::read_to_string(dir.join("processor.log")).unwrap();
    let retries = processor_log
        .lines()
        .filter(|l| l.contains("retrying"))
        .count();
    eprintln!(
        "postgres restart: down {DOWN:?}; relay unhealthy {unhealthy_after:?} after the stop, \
         healthy {healthy_after:?} after the start; every marker written {caught_up:?} after \
         the start; {} records on the topic for {EVENTS} events ({} sent twice); {retries} \
         processor retries logged",
        relayed.len(),
        relayed.len() as i64 - EVENTS
    );
}
