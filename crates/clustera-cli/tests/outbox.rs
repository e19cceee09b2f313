//! The outbox pipeline across processes: `clustera outbox relay` killed with SIGKILL in the
//! middle of 10,000 inserts and restarted; every event reaches the read models exactly once
//! in effect.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clustera::testing::{kafka, MockBroker};
use clustera::{Config, Runtime};
use clustera_outbox::testing::Postgres;
use clustera_outbox::{OutboxProcessor, PgStore};
use clustera_outbox_demo::activity;
use tokio_postgres::NoTls;

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
    kafka::high_watermarks(brokers, TOPIC)
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
