//! The outbox pipeline across processes: `clustera outbox relay` killed with SIGKILL in the
//! middle of 10,000 inserts and restarted; every event reaches the read models exactly once
//! in effect. And PostgreSQL restarted under load: `clustera outbox relay`, `process` and
//! `load --rate 500` run while PostgreSQL is stopped (`pg_ctl stop -m fast`) for 8 s and
//! started again on the same data directory and port; none of them exits, the relay's
//! `/healthz` fails while PostgreSQL is away and recovers, nothing is dead-lettered, and every
//! event is relayed and applied exactly once in effect.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clustera::testing::{kafka, MockBroker};
use clustera::{Config, Runtime};
use clustera_debezium::{decode, Decoded, OutboxColumns, OutboxEvent};
use clustera_outbox::testing::Postgres;
use clustera_outbox::{OutboxProcessor, PgStore};
use clustera_outbox_demo::{activity, report};
use tokio_postgres::{Client, NoTls};

const BIN: &str = env!("CARGO_BIN_EXE_clustera");
const TOPIC: &str = "postgres.activity.event_outbox";

fn outbox(args: &[&str], db: &str, brokers: &str) -> Command {
    let mut c = Command::new(BIN);
    c.arg("outbox")
        .args(args)
        .env("DATABASE_URL", db)
        .env("KAFKA_BOOTSTRAP_SERVERS", brokers)
        .env("CLUSTERA_HTTP_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    c
}

fn relay(db: &str, brokers: &str) -> Child {
    outbox(&["relay"], db, brokers).spawn().unwrap()
}

fn on_topic(brokers: &str) -> i64 {
    records_on(brokers, TOPIC)
}

fn records_on(brokers: &str, topic: &str) -> i64 {
    kafka::high_watermarks(brokers, topic)
        .unwrap()
        .values()
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_killed_mid_stream_loses_nothing_and_read_models_see_each_event_once() {
    const N: i32 = 10_000;
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let broker = MockBroker::start(1).unwrap();
    broker.create_topic(TOPIC, 4).unwrap();
    broker.create_topic(&format!("{TOPIC}.dlq"), 1).unwrap();
    let (db, brokers) = (pg.url().to_owned(), broker.bootstrap().to_owned());
    assert!(outbox(&["init"], &db, &brokers).status().unwrap().success());

    let (client, conn) = tokio_postgres::connect(&db, NoTls).await.unwrap();
    tokio::spawn(conn);
    let mut first = relay(&db, &brokers);
    // 100 transactions of 100 users, while the relay runs.
    let inserting = tokio::spawn(async move {
        for t in 0..100 {
            client
                .execute(
                    "INSERT INTO activity.event_outbox (aggregate_id, aggregate_type, event_type, payload)
                     SELECT gen_random_uuid(), 'User', 'UserCreated',
                            jsonb_build_object('user_id', 'u' || i, 'email', 'u' || i || '@example.com', 'username', 'user' || i)
                     FROM generate_series($1::int, $2::int) AS i",
                    &[&(t * 100), &(t * 100 + 99)],
                )
                .await
                .unwrap();
        }
        client
    });
    let b = brokers.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::task::spawn_blocking({
        let b = b.clone();
        move || on_topic(&b)
    })
    .await
    .unwrap()
        < 3000
    {
        assert!(Instant::now() < deadline, "relay progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let at_kill = tokio::task::spawn_blocking(move || on_topic(&b))
        .await
        .unwrap();
    let client = inserting.await.unwrap();

    let mut second = relay(&db, &brokers);
    let b = brokers.clone();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let b = b.clone();
        if tokio::task::spawn_blocking(move || on_topic(&b))
            .await
            .unwrap()
            >= i64::from(N)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the restarted relay caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give it a round to confirm the last transactions, then stop it cleanly.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    assert!(second.wait().unwrap().success());
    let b = brokers.clone();
    let total = tokio::task::spawn_blocking(move || on_topic(&b))
        .await
        .unwrap();
    assert!(
        total >= i64::from(N),
        "nothing lost: {total} records for {N} events"
    );

    // The processor: every event applied once, duplicates absorbed by the markers.
    let store = Arc::new(PgStore::connect(&db).await.unwrap());
    let mut config = Config::for_brokers("outbox-processor", &brokers, &[TOPIC]);
    config.runtime.commit_interval = Duration::from_millis(200);
    let runtime = Runtime::new(
        config,
        OutboxProcessor::new(activity::registry(), store.clone()),
    );
    let stats = runtime.stats();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runtime.run_until(async {
        let _ = rx.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(180);
    while stats.snapshot().processed() < total as u64 {
        assert!(
            Instant::now() < deadline,
            "processed {:?} of {total}",
            stats.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = tx.send(());
    task.await.unwrap().unwrap();
    let global = store
        .document("user_stats", "global")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(global["total_users"], N, "each event counted exactly once");
    let users: i64 = client
        .query_one(
            "SELECT count(*) FROM read_models WHERE collection = 'users'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(users, i64::from(N));
    eprintln!("relay crash: {at_kill} records on the topic at the kill, {total} in the end ({} duplicates)", total - i64::from(N));
}

/// Runs `clustera demo` with `args`; returns its standard output after checking the run
/// processed every event and the verifier passed.
fn demo(events: usize, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["demo", "--events", &events.to_string()])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let processed = format!("processed {events:>19}   success rate 100.00%");
    assert!(stdout.contains(&processed), "{stdout}");
    assert!(stdout.contains("verify: OK"), "{stdout}");
    stdout
}

#[test]
fn the_demo_pipeline_passes_its_verifier_on_ten_thousand_events() {
    demo(10_000, &[]);
}

#[test]
fn the_seed_run_sizes_pass_steady_and_staged() {
    // The seed's demo runs 10, 100 and 1,000 events; each size at a steady rate and staged
    // (everything relayed before the processor starts, so it consumes a backlog in batches).
    for events in [10, 100, 1000] {
        let out = demo(events, &["--rate", "2000"]);
        assert!(
            out.contains("latency (outbox commit -> read model"),
            "{out}"
        );
        let out = demo(events, &["--staged"]);
        assert!(
            out.contains(&format!("processor: {events} events in")),
            "{out}"
        );
    }
}

const EVENTS: i64 = 12_000;
const DOWN: Duration = Duration::from_secs(8);

/// `clustera outbox <args>` logging to `dir/<name>.log`.
fn logged(args: &[&str], db: &str, brokers: &str, dir: &Path, name: &str) -> Command {
    let mut c = outbox(args, db, brokers);
    c.env("RUST_LOG", "warn,clustera_outbox=info")
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
    assert!(logged(&["init"], &db, &brokers, dir, "init")
        .status()
        .unwrap()
        .success());

    let relay_addr = format!("127.0.0.1:{}", free_port());
    let mut relay = logged(&["relay"], &db, &brokers, dir, "relay")
        .env("CLUSTERA_HTTP_ADDR", &relay_addr)
        .env("CLUSTERA_STALL_TIMEOUT_MS", "2000")
        .spawn()
        .unwrap();
    let mut processor = logged(&["process"], &db, &brokers, dir, "processor")
        .spawn()
        .unwrap();
    let (relay_pid, processor_pid) = (relay.id(), processor.id());
    wait_health(&relay_addr, 200, Duration::from_secs(30)).await;
    let events = EVENTS.to_string();
    let mut load = logged(
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
        if tokio::task::spawn_blocking(move || on_topic(&b))
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
    let dead = tokio::task::spawn_blocking(move || records_on(&b, &format!("{TOPIC}.dlq")))
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
