//! The overview: brokers, topics and partitions, consumer groups with their state and lag,
//! and kernels up or down.

use std::sync::Arc;

use axum::extract::State as Extract;
use maud::{html, Markup};

use super::layout::Frame;
use crate::error::{blocking, ConsoleError};
use crate::{kafka, State};

/// `GET /`.
pub async fn page_handler(state: Arc<State>) -> Result<Markup, ConsoleError> {
    let s = state.clone();
    let (cluster, groups) = blocking(move || {
        let cluster = kafka::cluster(&s.client)?;
        Ok((cluster, super::groups::summaries(&s)))
    })
    .await?;
    let now = crate::now_ms();
    let kernels = state.kernels();
    let up = kernels.iter().filter(|k| !k.is_stale(now)).count();
    let user_topics = cluster
        .topics
        .iter()
        .filter(|t| !t.name.starts_with("__"))
        .count();
    let total_lag: i64 = groups.iter().filter_map(|g| g.lag).sum();
    let dlqs = state.dlq_topics(cluster.topics.iter().map(|t| t.name.as_str()));
    let body = html! {
        div.cards {
            div.card { div.n #brokers { (cluster.brokers.len()) } div.l { "brokers" } }
            div.card { div.n #topics { (user_topics) } div.l { "topics" } }
            div.card { div.n { (cluster.partition_count()) } div.l { "partitions" } }
            div.card { div.n { (groups.len()) } div.l { "consumer groups" } }
            div.card { div.n #total-lag { (total_lag) } div.l { "total lag" } }
            div.card { div.n { span.ok { (up) } " / " (kernels.len()) } div.l { "kernel instances up" } }
            div.card { div.n { a href="/dlq" { (dlqs.len()) } } div.l { "dead-letter topics" } }
        }
        h2 { "Brokers" }
        table { tr { th { "id" } th { "address" } }
            @for b in &cluster.brokers { tr { td { (b.id) } td { (b.address) } } }
        }
        h2 { "Consumer groups" }
        (super::groups::table(&groups))
        h2 { "Kernels" }
        (super::kernels::table(&kernels, now))
    };
    Ok(super::layout::page(
        &state,
        "Overview",
        Frame {
            nav: "/",
            refresh: Some(10),
            ..Frame::default()
        },
        body,
    ))
}

/// `GET /`.
pub async fn page(Extract(state): Extract<Arc<State>>) -> Result<Markup, ConsoleError> {
    page_handler(state).await
}
