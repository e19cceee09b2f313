//! The demo system's load generator: realistic Activity App events inserted into the outbox
//! with referential integrity (participants join activities that exist, created by users that
//! exist), in the proportions users 40%, activities 30%, participants 30%.
//!
//! It rides out a PostgreSQL restart: a transaction that meets an unavailable server is
//! retried on a new connection (with backoff) until it commits. Each event has an id of its
//! own chosen here and is inserted with `ON CONFLICT DO NOTHING`, so a transaction whose
//! commit was acknowledged by the server but not seen by the generator inserts nothing the
//! second time: every planned event is in the outbox exactly once.

use clustera_outbox::pg;
use serde_json::json;
use tokio_postgres::Client;

/// Events of one kind to insert.
struct Planned {
    /// Hashed into the event's uuid.
    event_id: String,
    aggregate_type: &'static str,
    event_type: &'static str,
    payload: serde_json::Value,
}

/// How fast events are inserted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// As fast as possible, `batch` events per transaction.
    Burst {
        /// Events per transaction.
        batch: usize,
    },
    /// A steady rate: every 10 ms, the events due by then in one transaction.
    Steady {
        /// Events per second.
        per_second: f64,
    },
}

/// Inserts `count` events at `pace` into the database at `url`; returns how many of each
/// type. Fails on an error that is not the server being unavailable.
pub async fn generate(
    url: &str,
    count: usize,
    pace: Pace,
) -> Result<[(&'static str, usize); 3], tokio_postgres::Error> {
    let mut client = pg::connect(url).await?;
    let client = &mut client;
    // Ids unique to this run, also between runs of one process.
    let run = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros())
    );
    let (mut users, mut activities, mut joins) =
        (Vec::<String>::new(), Vec::<String>::new(), 0usize);
    let mut planned = Vec::with_capacity(count);
    for i in 0..count {
        // The first events must create users and activities for later ones to refer to.
        let slot = i % 10;
        let kind = if users.is_empty() || slot < 4 {
            0
        } else if activities.is_empty() || slot < 7 {
            1
        } else {
            2
        };
        let event_id = format!("{run}-{i}");
        planned.push(match kind {
            0 => {
                let id = format!("user-{run}-{i}");
                users.push(id.clone());
                Planned {
                    event_id,
                    aggregate_type: "User",
                    event_type: "UserCreated",
                    payload: json!({"user_id": id, "email": format!("{id}@example.com"), "username": format!("u{i}")}),
                }
            }
            1 => {
                let id = format!("activity-{run}-{i}");
                let creator = users[i % users.len()].clone();
                activities.push(id.clone());
                Planned {
                    event_id,
                    aggregate_type: "Activity",
                    event_type: "ActivityCreated",
                    payload: json!({"activity_id": id, "creator_id": creator, "title": format!("Activity {i}")}),
                }
            }
            _ => {
                joins += 1;
                Planned {
                    event_id,
                    aggregate_type: "Activity",
                    event_type: "ParticipantJoined",
                    payload: json!({"activity_id": activities[(i * 7) % activities.len()], "user_id": users[(i * 13) % users.len()]}),
                }
            }
        });
    }
    match pace {
        Pace::Burst { batch } => {
            for chunk in planned.chunks(batch.max(1)) {
                insert_until_committed(client, url, chunk).await?;
            }
        }
        Pace::Steady { per_second } => {
            let started = std::time::Instant::now();
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut sent = 0;
            while sent < planned.len() {
                tick.tick().await;
                // Due by now, so a slow transaction is caught up on the next tick.
                let due = (started.elapsed().as_secs_f64() * per_second) as usize;
                let upto = due.clamp(sent, planned.len());
                if upto > sent {
                    insert_until_committed(client, url, &planned[sent..upto]).await?;
                    sent = upto;
                }
            }
        }
    }
    Ok([
        ("UserCreated", users.len()),
        ("ActivityCreated", activities.len()),
        ("ParticipantJoined", joins),
    ])
}

/// Inserts `events` in one transaction, again on a new connection for as long as the server
/// is unavailable.
async fn insert_until_committed(
    client: &mut Client,
    url: &str,
    events: &[Planned],
) -> Result<(), tokio_postgres::Error> {
    loop {
        match insert(client, events).await {
            Ok(()) => return Ok(()),
            Err(e) if pg::is_unavailable(&e) => {
                tracing::warn!(error = %e, events = events.len(), "postgres unavailable; the load generator reconnects and inserts again");
                *client = pg::reconnect(url, "load generator").await?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Inserts `events` in one transaction, the statements pipelined; an event already there
/// (the same transaction committed before) is left alone.
async fn insert(client: &mut Client, events: &[Planned]) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let statement = tx
        .prepare(
            "INSERT INTO activity.event_outbox (event_id, aggregate_id, aggregate_type, event_type, payload)
             VALUES (md5($5)::uuid, md5($1)::uuid, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING",
        )
        .await?;
    let (transaction, statement) = (&tx, &statement);
    let inserts = events.iter().map(|p| async move {
        // The aggregate id keys the Kafka record: one aggregate's events stay in order.
        let aggregate = p
            .payload
            .get("activity_id")
            .or_else(|| p.payload.get("user_id"))
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        transaction
            .execute(
                statement,
                &[
                    &aggregate,
                    &p.aggregate_type,
                    &p.event_type,
                    &p.payload,
                    &p.event_id,
                ],
            )
            .await
    });
    futures::future::try_join_all(inserts).await?;
    tx.commit().await
}
