//! The demo system's load generator: realistic Activity App events inserted into the outbox
//! with referential integrity (participants join activities that exist, created by users that
//! exist), in the proportions users 40%, activities 30%, participants 30%.

use serde_json::json;
use tokio_postgres::Client;

/// Events of one kind to insert.
struct Planned {
    aggregate_type: &'static str,
    event_type: &'static str,
    payload: serde_json::Value,
}

/// Inserts `count` events in transactions of `batch`; returns how many of each type.
pub async fn generate(
    client: &mut Client,
    count: usize,
    batch: usize,
) -> Result<[(&'static str, usize); 3], tokio_postgres::Error> {
    let run = std::process::id();
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
        planned.push(match kind {
            0 => {
                let id = format!("user-{run}-{i}");
                users.push(id.clone());
                Planned {
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
                    aggregate_type: "Activity",
                    event_type: "ActivityCreated",
                    payload: json!({"activity_id": id, "creator_id": creator, "title": format!("Activity {i}")}),
                }
            }
            _ => {
                joins += 1;
                Planned {
                    aggregate_type: "Activity",
                    event_type: "ParticipantJoined",
                    payload: json!({"activity_id": activities[(i * 7) % activities.len()], "user_id": users[(i * 13) % users.len()]}),
                }
            }
        });
    }
    for chunk in planned.chunks(batch.max(1)) {
        let tx = client.transaction().await?;
        for p in chunk {
            // The aggregate id keys the Kafka record: one aggregate's events stay in order.
            let aggregate = p
                .payload
                .get("activity_id")
                .or_else(|| p.payload.get("user_id"))
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            tx.execute(
                "INSERT INTO activity.event_outbox (aggregate_id, aggregate_type, event_type, payload)
                 VALUES (md5($1)::uuid, $2, $3, $4)",
                &[&aggregate, &p.aggregate_type, &p.event_type, &p.payload],
            )
            .await?;
        }
        tx.commit().await?;
    }
    Ok([
        ("UserCreated", users.len()),
        ("ActivityCreated", activities.len()),
        ("ParticipantJoined", joins),
    ])
}
