//! Set-up shared by the relay's integration tests: PostgreSQL sessions, outbox inserts, and a
//! relay running in a task.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clustera_outbox::relay::{Relay, RelayConfig, RelayError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

/// A plain session to `url`.
pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// `transactions` transactions of `per` inserts each, aggregates cycling over 50 ids.
pub async fn insert(client: &Client, start: usize, transactions: usize, per: usize) {
    for t in 0..transactions {
        let first = start + t * per;
        client
            .execute(
                "INSERT INTO activity.event_outbox (aggregate_id, aggregate_type, event_type, payload)
                 SELECT ('00000000-0000-4000-8000-' || lpad((i % 50)::text, 12, '0'))::uuid, 'User', 'UserCreated',
                        jsonb_build_object('seq', i, 'user_id', 'u' || i, 'email', 'u' || i || '@example.com')
                 FROM generate_series($1::int, $2::int) AS i",
                &[&(first as i32), &((first + per - 1) as i32)],
            )
            .await
            .unwrap();
    }
}

/// The relay's Kafka settings for a broker at `bootstrap`.
pub fn kafka_config(bootstrap: &str) -> clustera::Config {
    clustera::Config::for_brokers("relay-test", bootstrap, &[])
}

/// A relay running in a task: its counter of acknowledged events, its stop, its end.
pub struct RunningRelay {
    /// Events Kafka acknowledged.
    pub relayed: Arc<AtomicU64>,
    /// Send to stop it.
    pub stop: oneshot::Sender<()>,
    /// How it ended.
    pub task: JoinHandle<Result<(), RelayError>>,
}

/// Starts a relay with `config` in a task.
pub async fn spawn_relay(url: &str, bootstrap: &str, config: RelayConfig) -> RunningRelay {
    let relay = Relay::connect(url, &kafka_config(bootstrap), config)
        .await
        .unwrap();
    let relayed = relay.relayed();
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(relay.run_until(async {
        let _ = rx.await;
    }));
    RunningRelay {
        relayed,
        stop,
        task,
    }
}

/// Waits (60 s at most) until `count` events were acknowledged.
pub async fn wait_relayed(relayed: &AtomicU64, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while relayed.load(Ordering::Relaxed) < count {
        assert!(
            Instant::now() < deadline,
            "relayed {} of {count}",
            relayed.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The text of the first column of every row `sql` returns (event ids, say).
pub async fn column_set(client: &Client, sql: &str) -> std::collections::BTreeSet<String> {
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}
