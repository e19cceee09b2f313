//! Topics: their partitions and watermarks, the message browser, and producing a message.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State as Extract};
use axum::http::HeaderMap;
use maud::{html, Markup};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde::Deserialize;

use super::layout::{csrf, value, Frame};
use crate::browse::{self, Found, Record, Start};
use crate::error::{blocking, ConsoleError};
use crate::security::{check_csrf, Form};
use crate::{clock, kafka, State};

/// `GET /topics`.
pub async fn list(Extract(state): Extract<Arc<State>>) -> Result<Markup, ConsoleError> {
    let s = state.clone();
    let cluster = blocking(move || kafka::cluster(&s.client)).await?;
    let body = html! {
        table #topic-list {
            tr { th { "topic" } th.num { "partitions" } }
            @for t in &cluster.topics {
                tr { td { a href={ "/topics/" (t.name) } { (t.name) } } td.num { (t.partitions.len()) } }
            }
        }
    };
    Ok(super::layout::page(
        &state,
        "Topics",
        Frame {
            nav: "/topics",
            ..Frame::default()
        },
        body,
    ))
}

/// The browser's query string.
#[derive(Debug, Default, Deserialize)]
pub struct BrowseParams {
    /// Partition (default 0).
    pub partition: Option<String>,
    /// Start offset.
    pub offset: Option<String>,
    /// Start time (UTC).
    pub time: Option<String>,
    /// `newest` (default) or `oldest`.
    pub order: Option<String>,
    /// Key or value substring.
    pub filter: Option<String>,
    /// Records per page.
    pub limit: Option<String>,
}

impl BrowseParams {
    /// The browse query these ask for, or what is wrong with them.
    pub fn query(&self) -> Result<browse::Query, ConsoleError> {
        let bad =
            |what: &str, v: &str| ConsoleError::BadRequest(format!("{what}: {v:?} is not valid"));
        let some = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let partition = match some(&self.partition) {
            None => 0,
            Some(p) => p.parse().map_err(|_| bad("partition", &p))?,
        };
        let start = match (some(&self.offset), some(&self.time)) {
            (Some(o), _) => Start::Offset(o.parse().map_err(|_| bad("offset", &o))?),
            (None, Some(t)) => Start::Time(clock::parse(&t).ok_or_else(|| {
                ConsoleError::BadRequest(format!("time: {t:?} is not like 2026-12-03T18:00 (UTC)"))
            })?),
            (None, None) => Start::Edge,
        };
        let limit = match some(&self.limit) {
            None => 50,
            Some(l) => l.parse().map_err(|_| bad("limit", &l))?,
        };
        Ok(browse::Query {
            partition,
            start,
            newest_first: some(&self.order).as_deref() != Some("oldest"),
            filter: self.filter.clone().unwrap_or_default(),
            limit,
        })
    }
}

/// `GET /topics/{topic}`: partitions, the browser and the produce form.
pub async fn detail(
    Extract(state): Extract<Arc<State>>,
    Path(topic): Path<String>,
    Query(params): Query<BrowseParams>,
) -> Result<Markup, ConsoleError> {
    render(state, topic, params, None).await
}

async fn render(
    state: Arc<State>,
    topic: String,
    params: BrowseParams,
    flash: Option<(bool, String)>,
) -> Result<Markup, ConsoleError> {
    let query = params.query()?;
    let (s, t, q) = (state.clone(), topic.clone(), query.clone());
    let (partitions, found) = blocking(move || {
        let cluster = kafka::cluster(&s.client)?;
        let info = cluster
            .topic(&t)
            .ok_or_else(|| ConsoleError::NotFound(format!("unknown topic {t}")))?;
        if !info.partitions.contains(&q.partition) {
            return Err(ConsoleError::BadRequest(format!(
                "topic {t} has no partition {} (it has {})",
                q.partition,
                info.partitions.len()
            )));
        }
        let mut partitions = Vec::new();
        for p in &info.partitions {
            let (low, high) = kafka::watermarks(&s.client, &t, *p)?;
            partitions.push((*p, low, high));
        }
        let found = browse::browse(&s.options.client, &t, &q)?;
        Ok((partitions, found))
    })
    .await?;
    let body = html! {
        h2 { "Partitions" }
        table #partitions {
            tr { th.num { "partition" } th.num { "low watermark" } th.num { "high watermark" } th.num { "records" } }
            @for (p, low, high) in &partitions {
                tr { td.num { a href={ "?partition=" (p) } { (p) } } td.num { (low) } td.num { (high) } td.num { (high - low) } }
            }
        }
        h2 { "Messages" }
        (browse_form(&params, &query))
        (records_table(&found, None))
        (next_link(&params, &found, query.newest_first))
        @if !state.options.read_only {
            h2 { "Produce a message" }
            form.bar #produce method="post" action={ "/topics/" (topic) "/produce" } {
                (csrf(&state))
                label { "partition (empty: by key)" input name="partition" size="4"; }
                label { "key" input name="key"; }
                label { "value" textarea name="value" rows="3" cols="50" {} }
                label { "headers (name=value, one a line)" textarea name="headers" rows="3" cols="30" {} }
                button type="submit" { "Produce" }
            }
        }
    };
    Ok(super::layout::page(
        &state,
        &format!("Topic {topic}"),
        Frame {
            nav: "/topics",
            refresh: None,
            flash,
        },
        body,
    ))
}

/// The browser's form.
pub fn browse_form(params: &BrowseParams, query: &browse::Query) -> Markup {
    html! {
        form.bar #browse method="get" {
            label { "partition" input name="partition" size="4" value=(params.partition.clone().unwrap_or_default()); }
            label { "from offset" input name="offset" size="8" value=(params.offset.clone().unwrap_or_default()); }
            label { "or from time (UTC)" input name="time" placeholder="2026-12-03T18:00" value=(params.time.clone().unwrap_or_default()); }
            label { "order" select name="order" {
                option value="newest" selected[query.newest_first] { "newest first" }
                option value="oldest" selected[!query.newest_first] { "oldest first" } } }
            label { "key or value contains" input name="filter" value=(query.filter); }
            label { "limit" input name="limit" size="4" value=(query.limit); }
            button type="submit" { "Browse" }
        }
    }
}

fn next_link(params: &BrowseParams, found: &Found, newest_first: bool) -> Markup {
    html! {
        p.muted {
            "Watermarks " (found.low) "–" (found.high) "; " (found.records.len()) " shown of " (found.scanned) " read. "
            @if let Some(next) = found.next {
                a #next href={ "?partition=" (params.partition.clone().unwrap_or_default()) "&offset=" (next)
                    "&order=" (if newest_first { "newest" } else { "oldest" })
                    "&filter=" (encode(params.filter.as_deref().unwrap_or_default()))
                    "&limit=" (params.limit.clone().unwrap_or_default()) } { "more from offset " (next) }
            }
        }
    }
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// A table of records; for dead letters (`dlq`: read-only or not), provenance columns, a
/// checkbox and a replay button per row.
pub fn records_table(found: &Found, dlq: Option<(&State, &str)>) -> Markup {
    html! {
        table #messages {
            tr {
                @if let Some((s, _)) = dlq { @if !s.options.read_only { th { input type="checkbox" data-select-all; } } }
                th.num { "partition" } th.num { "offset" } th { "timestamp (UTC)" }
                @if dlq.is_some() { th { "original topic" } th.num { "partition" } th.num { "offset" } th { "error" } th.num { "attempts" } th { "status" } }
                th { "key" } th { "value" } th { "headers" }
                @if let Some((s, _)) = dlq { @if !s.options.read_only { th {} } }
            }
            @for r in &found.records { (row(r, dlq)) }
        }
    }
}

fn row(r: &Record, dlq: Option<(&State, &str)>) -> Markup {
    let p = crate::dlq::Provenance::of(r);
    html! {
        tr.message data-offset=(r.offset) {
            @if let Some((s, _)) = dlq { @if !s.options.read_only {
                td { input type="checkbox" name="sel" form="replay-selected" value={ (r.partition) ":" (r.offset) }; } } }
            td.num { (r.partition) } td.num { (r.offset) }
            td { (r.timestamp_ms.map(clock::format_ms).unwrap_or_default()) }
            @if let Some((s, topic)) = dlq {
                td { (p.topic.clone().unwrap_or_default()) } td.num { (p.partition.clone().unwrap_or_default()) }
                td.num { (p.offset.clone().unwrap_or_default()) } td.error { pre { (p.error.clone().unwrap_or_default()) } }
                td.num { (p.attempts.clone().unwrap_or_default()) }
                td { @if super::dead_letters::is_handled(s, topic, r.partition, r.offset) { span.ok { "handled" } } }
            }
            td.key { (value(r.key.as_deref())) }
            td.value { (value(r.value.as_deref())) }
            td { table.headers { @for (n, v) in &r.headers { tr { td { (n) } td { (crate::value::short(v.as_deref())) } } } } }
            @if let Some((s, topic)) = dlq { @if !s.options.read_only {
                td { form.inline method="post" action={ "/dlq/" (topic) "/replay" } {
                    (csrf(s))
                    input type="hidden" name="sel" value={ (r.partition) ":" (r.offset) };
                    button.replay type="submit" { "Replay" }
                } }
            } }
        }
    }
}

/// `POST /topics/{topic}/produce`.
pub async fn produce(
    Extract(state): Extract<Arc<State>>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Markup, ConsoleError> {
    let form = Form::parse(&body);
    check_csrf(&state, &headers, &form)?;
    let partition =
        match form
            .get("partition")
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            None => None,
            Some(p) => Some(p.parse::<i32>().map_err(|_| {
                ConsoleError::BadRequest(format!("partition: {p:?} is not a number"))
            })?),
        };
    let key = form.get("key").filter(|k| !k.is_empty()).map(str::to_owned);
    let value = form.get("value").unwrap_or_default().replace("\r\n", "\n");
    let mut hs = OwnedHeaders::new();
    for line in form
        .get("headers")
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let (n, v) = line.split_once('=').ok_or_else(|| {
            ConsoleError::BadRequest(format!("header {line:?} is not name=value"))
        })?;
        hs = hs.insert(Header {
            key: n.trim(),
            value: Some(v.trim()),
        });
    }
    let mut record = FutureRecord::to(&topic).payload(&value).headers(hs);
    if let Some(k) = &key {
        record = record.key(k);
    }
    if let Some(p) = partition {
        record = record.partition(p);
    }
    let sent = state.producer.send(record, Duration::from_secs(10)).await;
    let flash = match sent {
        Ok(d) => (
            true,
            format!(
                "produced to {topic} partition {} at offset {}",
                d.partition, d.offset
            ),
        ),
        Err((e, _)) => (false, format!("producing to {topic} failed: {e}")),
    };
    let params = BrowseParams {
        partition: partition.map(|p| p.to_string()),
        ..BrowseParams::default()
    };
    render(state, topic, params, Some(flash)).await
}
