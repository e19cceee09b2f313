//! Consumer groups: state, members and assignment, committed offsets and lag per partition,
//! lag over the last hour, and offset resets with a dry run first.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State as Extract};
use axum::http::HeaderMap;
use maud::{html, Markup};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::layout::{csrf, Frame};
use crate::error::{blocking, ConsoleError};
use crate::kafka::{self, PartitionLag};
use crate::security::{check_csrf, Form};
use crate::State;

/// One line of the groups' table.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The group.
    pub name: String,
    /// Its state, when the brokers describe groups.
    pub state: Option<String>,
    /// Members the brokers list, or kernel instances reporting it.
    pub members: usize,
    /// Total lag at the latest sample.
    pub lag: Option<i64>,
}

/// Every known group. Blocking.
pub fn summaries(state: &State) -> Vec<Summary> {
    let described = state.described_groups();
    let kernels = state.kernels();
    let now = crate::now_ms();
    // known_groups locks the history itself.
    let names = state.known_groups();
    let history = state.history.lock().unwrap_or_else(|p| p.into_inner());
    names
        .into_iter()
        .map(|name| {
            let d = described.iter().find(|g| g.name == name);
            let instances = kernels
                .iter()
                .filter(|k| k.group == name && !k.is_stale(now))
                .count();
            Summary {
                state: d.map(|g| g.state.clone()),
                members: d.map_or(instances, |g| g.members.len()),
                lag: history
                    .latest
                    .get(&name)
                    .map(|rows| rows.iter().map(|r| r.lag).sum()),
                name,
            }
        })
        .collect()
}

/// The groups' table.
pub fn table(groups: &[Summary]) -> Markup {
    html! {
        table #groups {
            tr { th { "group" } th { "state" } th.num { "members" } th.num { "lag" } }
            @for g in groups {
                tr {
                    td { a href={ "/groups/" (g.name) } { (g.name) } }
                    td { (g.state.as_deref().unwrap_or("-")) }
                    td.num { (g.members) }
                    td.num { @if let Some(l) = g.lag { (l) } @else { "…" } }
                }
            }
        }
    }
}

/// `GET /groups`.
pub async fn list(Extract(state): Extract<Arc<State>>) -> Result<Markup, ConsoleError> {
    let s = state.clone();
    let groups = blocking(move || Ok(summaries(&s))).await?;
    let body = html! {
        p.muted { "Lag is sampled every " (state.options.sample_interval.as_secs()) " s; open a group for live figures." }
        (table(&groups))
    };
    Ok(super::layout::page(
        &state,
        "Consumer groups",
        Frame {
            nav: "/groups",
            refresh: Some(15),
            ..Frame::default()
        },
        body,
    ))
}

/// `GET /groups/{group}`.
pub async fn detail(
    Extract(state): Extract<Arc<State>>,
    Path(group): Path<String>,
) -> Result<Markup, ConsoleError> {
    render(state, group, None, None).await
}

async fn render(
    state: Arc<State>,
    group: String,
    flash: Option<(bool, String)>,
    preview: Option<Markup>,
) -> Result<Markup, ConsoleError> {
    let (s, g) = (state.clone(), group.clone());
    let (rows, described) = blocking(move || {
        let rows = kafka::group_lag(&s.options.client, &g, None)?;
        let described = s.described_groups().into_iter().find(|x| x.name == g);
        Ok((rows, described))
    })
    .await?;
    let now = crate::now_ms();
    let instances: Vec<_> = state
        .kernels()
        .into_iter()
        .filter(|k| k.group == group)
        .collect();
    let series = state
        .history
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .series
        .get(&group)
        .cloned()
        .unwrap_or_default();
    let total: i64 = rows.iter().map(|r| r.lag).sum();
    let body = html! {
        div.cards {
            div.card { div.n #group-lag { (total) } div.l { "lag" } }
            div.card { div.n { (described.as_ref().map_or("-".to_owned(), |d| d.state.clone())) } div.l { "state" } }
            div.card { div.n { (rows.len()) } div.l { "partitions with commits" } }
        }
        h2 { "Members" }
        @if let Some(d) = &described {
            table { tr { th { "member" } th { "client id" } th { "host" } th { "assignment" } }
                @for m in &d.members { tr { td { (m.id) } td { (m.client_id) } td { (m.host) }
                    td { @for (t, ps) in &m.assignment { div { (t) " " (format!("{ps:?}")) } } } } }
            }
        } @else {
            p.muted { "The brokers do not describe groups (the development broker serves no group APIs); "
                "these are the kernel instances that report this group." }
        }
        (super::kernels::table(&instances, now))
        h2 { "Lag per partition" }
        (lag_table(&rows))
        h2 { "Lag over the last hour" }
        (chart(&series))
        @if !state.options.read_only {
            h2 { "Reset offsets" }
            form.bar method="post" action={ "/groups/" (group) "/reset" } {
                (csrf(&state))
                label { "topic (empty: every topic the group reads)" input name="topic"; }
                label { "to" select name="to" {
                    option value="earliest" { "earliest" } option value="latest" { "latest" }
                    option value="offset" { "offset" } option value="time" { "time (UTC)" } } }
                label { "offset or time" input name="value" placeholder="42 or 2026-12-03T18:00"; }
                button type="submit" name="action" value="preview" { "Dry run" }
            }
            @if let Some(p) = preview { (p) }
        }
    };
    Ok(super::layout::page(
        &state,
        &format!("Consumer group {group}"),
        Frame {
            nav: "/groups",
            refresh: None,
            flash,
        },
        body,
    ))
}

fn lag_table(rows: &[PartitionLag]) -> Markup {
    html! {
        table #lag {
            tr { th { "topic" } th.num { "partition" } th.num { "committed" } th.num { "low" } th.num { "high" } th.num { "lag" } }
            @for r in rows {
                tr { td { a href={ "/topics/" (r.topic) } { (r.topic) } } td.num { (r.partition) }
                    td.num { @if let Some(c) = r.committed { (c) } @else { "-" } }
                    td.num { (r.low) } td.num { (r.high) } td.num.lag { (r.lag) } }
            }
        }
    }
}

/// Total lag over time as an inline SVG line chart.
pub fn chart(series: &crate::sampler::Series) -> Markup {
    let (w, h, pad) = (720.0_f64, 160.0_f64, 30.0_f64);
    if series.len() < 2 {
        return html! { p.muted { "Not enough samples yet (one every sample interval)." } };
    }
    let (t0, t1) = (
        series.front().map_or(0, |s| s.0),
        series.back().map_or(0, |s| s.0),
    );
    let max = series.iter().map(|s| s.1).max().unwrap_or(0).max(1) as f64;
    let span = (t1.saturating_sub(t0)).max(1) as f64;
    let points: Vec<String> = series
        .iter()
        .map(|(t, v)| {
            let x = pad + (t.saturating_sub(t0)) as f64 / span * (w - 2.0 * pad);
            let y = h - pad - (*v as f64) / max * (h - 2.0 * pad);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    html! {
        svg.chart #lag-chart width=(w) height=(h) viewBox={ "0 0 " (w) " " (h) } xmlns="http://www.w3.org/2000/svg" role="img" {
            title { "Total lag over the last hour" }
            polyline points=(points.join(" ")) {}
            text x="4" y=(pad) { (max as i64) }
            text x="4" y=(h - pad) { "0" }
            text x=(pad) y=(h - 8.0) { (crate::clock::format_ms(i64::try_from(t0).unwrap_or(0))) }
            text x=(w - pad - 120.0) y=(h - 8.0) { (crate::clock::format_ms(i64::try_from(t1).unwrap_or(0))) }
        }
    }
}

/// `POST /groups/{group}/reset`: `action=preview` shows what would change; `action=apply`
/// commits it (refused while the group has live members).
pub async fn reset(
    Extract(state): Extract<Arc<State>>,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Markup, ConsoleError> {
    let form = Form::parse(&body);
    check_csrf(&state, &headers, &form)?;
    let topic = form
        .get("topic")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let to = form.get("to").unwrap_or("latest").to_owned();
    let value = form.get("value").unwrap_or_default().trim().to_owned();
    let apply = form.get("action") == Some("apply");
    let (s, g) = (state.clone(), group.clone());
    let (to2, value2, topic2) = (to.clone(), value.clone(), topic.clone());
    let plan = blocking(move || plan_reset(&s, &g, topic2.as_deref(), &to2, &value2)).await?;
    if apply {
        let now = crate::now_ms();
        if state
            .kernels()
            .iter()
            .any(|k| k.group == group && !k.is_stale(now))
        {
            return Err(ConsoleError::BadRequest(format!(
                "group {group} has running kernel instances: stop them before resetting its offsets"
            )));
        }
        let (s, g, p) = (state.clone(), group.clone(), plan.clone());
        blocking(move || commit_plan(&s, &g, &p)).await?;
        let flash = Some((
            true,
            format!("offsets of {} partition(s) reset to {to}", plan.len()),
        ));
        return render(state, group, flash, None).await;
    }
    let preview = html! {
        h2 { "Dry run" }
        table #reset-plan {
            tr { th { "topic" } th.num { "partition" } th.num { "committed" } th.num { "new offset" } }
            @for (t, p, old, new) in &plan { tr { td { (t) } td.num { (p) }
                td.num { @if let Some(o) = old { (o) } @else { "-" } } td.num { (new) } } }
        }
        form.bar method="post" action={ "/groups/" (group) "/reset" }
            data-confirm="Commit these offsets for the group?" {
            (csrf(&state))
            input type="hidden" name="topic" value=(topic.unwrap_or_default());
            input type="hidden" name="to" value=(to);
            input type="hidden" name="value" value=(value);
            button type="submit" name="action" value="apply" { "Apply this reset" }
        }
    };
    render(state, group, None, Some(preview)).await
}

/// Each partition's committed offset now and after the reset.
type Plan = Vec<(String, i32, Option<i64>, i64)>;

fn plan_reset(
    state: &State,
    group: &str,
    topic: Option<&str>,
    to: &str,
    value: &str,
) -> Result<Plan, ConsoleError> {
    let mut rows = kafka::group_lag(&state.options.client, group, topic)?;
    if rows.is_empty() {
        if let Some(t) = topic {
            // A group that never committed on this topic: every partition of it.
            let cluster = kafka::cluster(&state.client)?;
            let parts = cluster
                .topic(t)
                .map(|t| t.partitions.clone())
                .unwrap_or_default();
            for p in parts {
                let (low, high) = kafka::watermarks(&state.client, t, p)?;
                rows.push(PartitionLag {
                    topic: t.to_owned(),
                    partition: p,
                    committed: None,
                    low,
                    high,
                    lag: high - low,
                });
            }
        }
    }
    if rows.is_empty() {
        return Err(ConsoleError::BadRequest(format!(
            "group {group} has no committed offsets: name a topic to reset it on"
        )));
    }
    let time = if to == "time" {
        Some(crate::clock::parse(value).ok_or_else(|| {
            ConsoleError::BadRequest(format!(
                "{value:?} is not a time like 2026-12-03T18:00 (UTC)"
            ))
        })?)
    } else {
        None
    };
    let mut plan = Vec::new();
    for r in rows {
        let new = match to {
            "earliest" => r.low,
            "latest" => r.high,
            "offset" => value
                .parse::<i64>()
                .map_err(|_| ConsoleError::BadRequest(format!("{value:?} is not an offset")))?
                .clamp(r.low, r.high),
            "time" => {
                let mut tpl = TopicPartitionList::new();
                let _ = tpl.add_partition_offset(
                    &r.topic,
                    r.partition,
                    Offset::Offset(time.unwrap_or(0)),
                );
                let found = state
                    .client
                    .offsets_for_times(tpl, kafka::TIMEOUT)
                    .map_err(|e| ConsoleError::kafka("looking up offsets by time", e))?;
                match found.elements().first().map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => r.high,
                }
            }
            other => {
                return Err(ConsoleError::BadRequest(format!(
                    "{other:?} is not one of earliest, latest, offset, time"
                )))
            }
        };
        plan.push((r.topic, r.partition, r.committed, new));
    }
    Ok(plan)
}

fn commit_plan(state: &State, group: &str, plan: &Plan) -> Result<(), ConsoleError> {
    let consumer: BaseConsumer = state
        .options
        .client
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| ConsoleError::kafka("creating a Kafka client", e))?;
    let mut tpl = TopicPartitionList::new();
    for (t, p, _, new) in plan {
        tpl.add_partition_offset(t, *p, Offset::Offset(*new))
            .map_err(|e| ConsoleError::kafka("preparing the commit", e))?;
    }
    consumer.commit(&tpl, CommitMode::Sync).map_err(|e| {
        ConsoleError::kafka(
            format!("committing the new offsets of group {group} (a group with active members refuses them)"),
            e,
        )
    })
}
