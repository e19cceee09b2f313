//! The seed's Activity App read models: users, user statistics, activities and their
//! participants.

use std::sync::Arc;

use clustera_debezium::OutboxEvent;
use serde_json::{json, Value};

use clustera_outbox::{field, DocOp, Handler, HandlerError, Registry};

/// `users/<user_id>` from UserCreated and UserUpdated.
pub struct UserProjection;

/// `user_stats/global` and `user_stats/<user_id>` counters.
pub struct UserStatistics;

/// `activities/<activity_id>` from ActivityCreated, ActivityUpdated and ParticipantJoined.
pub struct ActivityProjection;

fn payload_object(event: &OutboxEvent) -> Result<&serde_json::Map<String, Value>, HandlerError> {
    event.payload.as_object().ok_or_else(|| {
        HandlerError::Invalid(format!("{}: payload is not an object", event.event_type))
    })
}

impl Handler for UserProjection {
    fn name(&self) -> &str {
        "user_projection"
    }

    fn handle(&self, event: &OutboxEvent) -> Result<Vec<DocOp>, HandlerError> {
        let user_id = field(event, "user_id")?.to_owned();
        let mut doc = payload_object(event)?.clone();
        doc.insert("last_event_id".into(), json!(event.event_id));
        Ok(vec![match event.event_type.as_str() {
            "UserCreated" => {
                field(event, "email")?;
                DocOp::Upsert {
                    collection: "users",
                    id: user_id,
                    doc: Value::Object(doc),
                }
            }
            _ => DocOp::Merge {
                collection: "users",
                id: user_id,
                patch: Value::Object(doc),
            },
        }])
    }
}

impl Handler for UserStatistics {
    fn name(&self) -> &str {
        "user_statistics"
    }

    fn handle(&self, event: &OutboxEvent) -> Result<Vec<DocOp>, HandlerError> {
        let inc = |id: String, field: &'static str| DocOp::Increment {
            collection: "user_stats",
            id,
            field,
            by: 1,
        };
        Ok(match event.event_type.as_str() {
            "UserCreated" => vec![
                inc("global".into(), "total_users"),
                inc(field(event, "user_id")?.into(), "events"),
            ],
            "ActivityCreated" => vec![
                inc("global".into(), "total_activities"),
                inc(field(event, "creator_id")?.into(), "activities_created"),
            ],
            "ParticipantJoined" => vec![
                inc("global".into(), "total_participations"),
                inc(field(event, "user_id")?.into(), "activities_joined"),
            ],
            _ => Vec::new(),
        })
    }
}

impl Handler for ActivityProjection {
    fn name(&self) -> &str {
        "activity_projection"
    }

    fn handle(&self, event: &OutboxEvent) -> Result<Vec<DocOp>, HandlerError> {
        let activity_id = field(event, "activity_id")?.to_owned();
        Ok(match event.event_type.as_str() {
            "ActivityCreated" => {
                field(event, "creator_id")?;
                let mut doc = payload_object(event)?.clone();
                doc.entry("participants").or_insert_with(|| json!([]));
                doc.insert("participant_count".into(), json!(0));
                vec![DocOp::Upsert {
                    collection: "activities",
                    id: activity_id,
                    doc: Value::Object(doc),
                }]
            }
            "ActivityUpdated" => vec![DocOp::Merge {
                collection: "activities",
                id: activity_id,
                patch: Value::Object(payload_object(event)?.clone()),
            }],
            "ParticipantJoined" => {
                let user_id = field(event, "user_id")?.to_owned();
                vec![
                    DocOp::AddToSet {
                        collection: "activities",
                        id: activity_id.clone(),
                        field: "participants",
                        value: json!(user_id),
                    },
                    DocOp::Increment {
                        collection: "activities",
                        id: activity_id,
                        field: "participant_count",
                        by: 1,
                    },
                ]
            }
            _ => Vec::new(),
        })
    }
}

/// The seed's registrations: UserCreated → user projection and user statistics, and so on.
pub fn registry() -> Registry {
    let users: Arc<dyn Handler> = Arc::new(UserProjection);
    let stats: Arc<dyn Handler> = Arc::new(UserStatistics);
    let activities: Arc<dyn Handler> = Arc::new(ActivityProjection);
    let mut r = Registry::new();
    r.register("UserCreated", users.clone())
        .register("UserCreated", stats.clone())
        .register("UserUpdated", users)
        .register("ActivityCreated", activities.clone())
        .register("ActivityCreated", stats.clone())
        .register("ActivityUpdated", activities.clone())
        .register("ParticipantJoined", activities)
        .register("ParticipantJoined", stats);
    r
}
