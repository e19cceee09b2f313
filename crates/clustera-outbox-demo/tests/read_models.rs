//! Handlers against a real PostgreSQL: the same events delivered twice leave the read models
//! identical, and one failing handler does not stop the others.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use clustera_debezium::OutboxEvent;
use clustera_outbox::testing::Postgres;
use clustera_outbox::{DocOp, Handler, HandlerError, HandlerOutcome, PgStore, Registry};
use clustera_outbox_demo::activity;
use serde_json::json;

fn event(n: usize, event_type: &str, payload: serde_json::Value) -> OutboxEvent {
    OutboxEvent {
        event_id: format!("evt-{n}"),
        aggregate_id: format!("agg-{n}"),
        aggregate_type: "Test".into(),
        event_type: event_type.into(),
        payload,
        status: Some("pending".into()),
        created_at_us: None,
    }
}

/// 1,000 events with referential integrity: users, their activities, participants.
fn activity_events() -> Vec<OutboxEvent> {
    let mut out = Vec::new();
    for i in 0..1000 {
        let e = match i % 10 {
            0..=3 => event(
                i,
                "UserCreated",
                json!({"user_id": format!("u{}", i / 10), "email": format!("u{i}@example.com"), "username": format!("user{i}")}),
            ),
            4..=6 => event(
                i,
                "ActivityCreated",
                json!({"activity_id": format!("a{i}"), "creator_id": format!("u{}", i / 10), "title": format!("Hike {i}")}),
            ),
            7 => event(
                i,
                "UserUpdated",
                json!({"user_id": format!("u{}", i / 10), "username": format!("renamed{i}")}),
            ),
            _ => event(
                i,
                "ParticipantJoined",
                json!({"activity_id": format!("a{}", i - i % 10 + 4), "user_id": format!("u{}", i / 10)}),
            ),
        };
        out.push(e);
    }
    out
}

#[tokio::test]
async fn delivering_the_same_events_twice_changes_nothing() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let store = PgStore::connect(pg.url()).await.unwrap();
    let registry = activity::registry();
    let events = activity_events();
    for e in &events {
        for o in registry.dispatch(&store, e).await {
            assert!(matches!(o, HandlerOutcome::Applied(_)), "{o:?}");
        }
    }
    let first = store.all_documents().await.unwrap();
    for e in &events {
        for o in registry.dispatch(&store, e).await {
            assert!(
                matches!(o, HandlerOutcome::AlreadyApplied(_)),
                "redelivery is a no-op: {o:?}"
            );
        }
    }
    assert_eq!(
        store.all_documents().await.unwrap(),
        first,
        "read models identical after redelivery"
    );

    // Spot checks of the projections.
    let stats = store
        .document("user_stats", "global")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stats["total_users"], 400);
    assert_eq!(stats["total_activities"], 300);
    assert_eq!(stats["total_participations"], 200);
    let a = store.document("activities", "a4").await.unwrap().unwrap();
    assert_eq!(
        a["participants"],
        json!(["u0"]),
        "each ParticipantJoined once: {a}"
    );
    assert_eq!(
        a["participant_count"], 2,
        "two joins by the same user count twice, the set holds one"
    );
    let u = store.document("users", "u0").await.unwrap().unwrap();
    assert_eq!(
        u["username"], "renamed7",
        "UserUpdated merged over UserCreated: {u}"
    );
    assert!(u["email"].as_str().unwrap().ends_with("@example.com"));
}

/// Fails every event: its failure must stay its own.
struct Broken;

impl Handler for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn handle(&self, _: &OutboxEvent) -> Result<Vec<DocOp>, HandlerError> {
        Err(HandlerError::Invalid("always fails".into()))
    }
}

#[tokio::test]
async fn one_failing_handler_does_not_stop_the_others() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let store = PgStore::connect(pg.url()).await.unwrap();
    let mut registry: Registry = activity::registry();
    registry.register("UserCreated", Arc::new(Broken));
    let e = event(1, "UserCreated", json!({"user_id": "u1", "email": "a@b.c"}));
    let outcomes = registry.dispatch(&store, &e).await;
    assert_eq!(outcomes.len(), 3);
    assert_eq!(
        outcomes[0],
        HandlerOutcome::Applied("user_projection".into())
    );
    assert_eq!(
        outcomes[1],
        HandlerOutcome::Applied("user_statistics".into())
    );
    assert!(matches!(&outcomes[2], HandlerOutcome::Invalid { handler, .. } if handler == "broken"));
    assert!(store.document("users", "u1").await.unwrap().is_some());

    // An event a handler cannot use is reported for that handler, not applied half-way.
    let bad = event(2, "UserCreated", json!({"user_id": "u2"}));
    let outcomes = registry.dispatch(&store, &bad).await;
    assert!(
        matches!(&outcomes[0], HandlerOutcome::Invalid { handler, error } if handler == "user_projection" && error.contains("email"))
    );
    assert_eq!(
        outcomes[1],
        HandlerOutcome::Applied("user_statistics".into())
    );
    assert!(store.document("users", "u2").await.unwrap().is_none());
}
