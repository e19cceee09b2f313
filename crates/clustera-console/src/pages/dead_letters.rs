//! Dead letters: every `*.dlq` topic and `CLUSTERA_DLQ_TOPIC`, their provenance as columns,
//! replay of one, a selection or a range to the original topic, and ranges marked handled.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State as Extract};
use axum::http::HeaderMap;
use maud::{html, Markup};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;

use super::layout::{csrf, Frame};
use super::topics::{browse_form, records_table, BrowseParams};
use crate::browse::{self, Found};
use crate::dlq::{self, HandledRange};
use crate::error::{blocking, ConsoleError};
use crate::security::{check_csrf, Form};
use crate::{kafka, State};

/// Whether a dead letter lies in a range marked handled.
pub fn is_handled(state: &State, topic: &str, partition: i32, offset: i64) -> bool {
    state
        .handled
        .rows()
        .values()
        .filter_map(|v| serde_json::from_slice::<HandledRange>(v).ok())
        .any(|m| m.covers(topic, partition, offset))
}

/// `GET /dlq`.
pub async fn list(Extract(state): Extract<Arc<State>>) -> Result<Markup, ConsoleError> {
    let s = state.clone();
    let rows = blocking(move || {
        let cluster = kafka::cluster(&s.client)?;
        let mut rows = Vec::new();
        for t in s.dlq_topics(cluster.topics.iter().map(|t| t.name.as_str())) {
            let mut count = 0;
            for p in cluster
                .topic(&t)
                .map(|t| t.partitions.clone())
                .unwrap_or_default()
            {
                let (low, high) = kafka::watermarks(&s.client, &t, p)?;
                count += high - low;
            }
            rows.push((t, count));
        }
        Ok(rows)
    })
    .await?;
    let body = html! {
        @if rows.is_empty() { p.muted { "No dead-letter topic (*.dlq or CLUSTERA_DLQ_TOPIC) yet." } }
        table #dlq-list {
            tr { th { "dead-letter topic" } th.num { "records" } }
            @for (t, n) in &rows { tr { td { a href={ "/dlq/" (t) } { (t) } } td.num { (n) } } }
        }
    };
    Ok(super::layout::page(
        &state,
        "Dead letters",
        Frame {
            nav: "/dlq",
            ..Frame::default()
        },
        body,
    ))
}

/// `GET /dlq/{topic}`.
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
    let every_partition = params
        .partition
        .as_deref()
        .is_none_or(|p| p.trim().is_empty());
    let (s, t, q) = (state.clone(), topic.clone(), query.clone());
    let found = blocking(move || {
        let cluster = kafka::cluster(&s.client)?;
        let info = cluster
            .topic(&t)
            .ok_or_else(|| ConsoleError::NotFound(format!("unknown topic {t}")))?;
        if !every_partition {
            return browse::browse(&s.options.client, &t, &q);
        }
        // Every partition, merged by time.
        let mut all = Found::default();
        for p in &info.partitions {
            let f = browse::browse(
                &s.options.client,
                &t,
                &browse::Query {
                    partition: *p,
                    ..q.clone()
                },
            )?;
            all.scanned += f.scanned;
            all.high += f.high - f.low;
            all.records.extend(f.records);
        }
        all.records
            .sort_by_key(|r| (r.timestamp_ms, r.partition, r.offset));
        if q.newest_first {
            all.records.reverse();
        }
        all.records.truncate(q.limit.clamp(1, browse::MAX_LIMIT));
        Ok(all)
    })
    .await?;
    let read_only = state.options.read_only;
    let body = html! {
        p.muted { "Replaying sends a dead letter's key, value and headers back to its original topic, with a "
            code { (dlq::REPLAYED_FROM) } " header naming the dead letter." }
        (browse_form(&params, &query))
        @if !read_only {
            form #replay-selected method="post" action={ "/dlq/" (topic) "/replay" } { (csrf(&state)) }
        }
        (records_table(&found, Some((&state, &topic))))
        @if !read_only {
            p { button form="replay-selected" type="submit" #replay-selection { "Replay selected" } }
            h2 { "Replay or mark a range" }
            form.bar method="post" action={ "/dlq/" (topic) "/replay" } data-confirm="Replay every dead letter of this range?" {
                (csrf(&state))
                label { "partition" input name="partition" size="4" value="0"; }
                label { "from offset" input name="from" size="8"; }
                label { "to offset (included)" input name="to" size="8"; }
                button type="submit" { "Replay range" }
            }
            form.bar method="post" action={ "/dlq/" (topic) "/handled" } {
                (csrf(&state))
                label { "partition" input name="partition" size="4" value="0"; }
                label { "from offset" input name="from" size="8"; }
                label { "to offset (included)" input name="to" size="8"; }
                label { "note" input name="note"; }
                button.secondary type="submit" { "Mark handled" }
            }
        }
    };
    Ok(super::layout::page(
        &state,
        &format!("Dead letters {topic}"),
        Frame {
            nav: "/dlq",
            refresh: None,
            flash,
        },
        body,
    ))
}

/// The `partition`, `from` and `to` fields of a range form.
fn range(form: &Form) -> Result<Option<(i32, i64, i64)>, ConsoleError> {
    let field = |n: &str| form.get(n).map(str::trim).filter(|v| !v.is_empty());
    let (Some(from), Some(to)) = (field("from"), field("to")) else {
        return Ok(None);
    };
    let num = |n: &str, v: &str| {
        v.parse::<i64>()
            .map_err(|_| ConsoleError::BadRequest(format!("{n}: {v:?} is not a number")))
    };
    let partition = i32::try_from(num("partition", field("partition").unwrap_or("0"))?)
        .map_err(|_| ConsoleError::BadRequest("partition out of range".into()))?;
    let (from, to) = (num("from", from)?, num("to", to)?);
    if to < from || to - from >= 10_000 {
        return Err(ConsoleError::BadRequest(format!(
            "range {from}–{to}: the end must not be before the start, and at most 10000 records at once"
        )));
    }
    Ok(Some((partition, from, to)))
}

/// `POST /dlq/{topic}/replay`: the selected rows (`sel=PARTITION:OFFSET`, repeated) or a range.
pub async fn replay(
    Extract(state): Extract<Arc<State>>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Markup, ConsoleError> {
    let form = Form::parse(&body);
    check_csrf(&state, &headers, &form)?;
    let mut wanted: Vec<(i32, i64)> = Vec::new();
    for s in form.all("sel") {
        wanted.push(dlq::parse_selection(s).map_err(ConsoleError::BadRequest)?);
    }
    if let Some((p, from, to)) = range(&form)? {
        wanted.extend((from..=to).map(|o| (p, o)));
    }
    if wanted.is_empty() {
        return Err(ConsoleError::BadRequest(
            "nothing to replay: select dead letters or give a range".into(),
        ));
    }
    let (s, t) = (state.clone(), topic.clone());
    let letters = blocking(move || {
        let mut by_partition: std::collections::BTreeMap<i32, Vec<i64>> = Default::default();
        for (p, o) in wanted {
            by_partition.entry(p).or_default().push(o);
        }
        let mut out = Vec::new();
        for (p, offsets) in by_partition {
            out.extend(browse::read_offsets(&s.options.client, &t, p, &offsets)?);
        }
        Ok(out)
    })
    .await?;
    let (mut sent, mut refused) = (0usize, Vec::new());
    for letter in &letters {
        let replay = match dlq::replay_of(&topic, letter) {
            Ok(r) => r,
            Err(why) => {
                refused.push(why);
                continue;
            }
        };
        let mut hs = OwnedHeaders::new();
        for (n, v) in &replay.headers {
            hs = hs.insert(Header {
                key: n,
                value: v.as_deref(),
            });
        }
        let mut record = FutureRecord::to(&replay.topic).headers(hs);
        if let Some(k) = &replay.key {
            record = record.key(k);
        }
        if let Some(v) = &replay.value {
            record = record.payload(v);
        }
        match state.producer.send(record, Duration::from_secs(10)).await {
            Ok(_) => sent += 1,
            Err((e, _)) => refused.push(format!(
                "{topic}/{}/{} to {}: {e}",
                letter.partition, letter.offset, replay.topic
            )),
        }
    }
    let ok = refused.is_empty() && !letters.is_empty();
    let mut text = format!("replayed {sent} dead letter(s)");
    if letters.is_empty() {
        text = "no dead letter found at the offsets given".into();
    }
    if !refused.is_empty() {
        text.push_str(&format!("; {} not: {}", refused.len(), refused.join("; ")));
    }
    render(state, topic, BrowseParams::default(), Some((ok, text))).await
}

/// `POST /dlq/{topic}/handled`: records a range as handled.
pub async fn mark_handled(
    Extract(state): Extract<Arc<State>>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Markup, ConsoleError> {
    let form = Form::parse(&body);
    check_csrf(&state, &headers, &form)?;
    let (partition, from, to) = range(&form)?.ok_or_else(|| {
        ConsoleError::BadRequest("give the range's first and last offsets".into())
    })?;
    let mark = HandledRange {
        topic: topic.clone(),
        partition,
        from,
        to,
        at_ms: crate::now_ms(),
        note: form.get("note").unwrap_or_default().to_owned(),
    };
    let value = serde_json::to_vec(&mark).map_err(|e| ConsoleError::Internal(e.to_string()))?;
    let key = mark.key();
    let record = FutureRecord::to(state.handled.topic())
        .key(&key)
        .payload(&value);
    let flash = match state.producer.send(record, Duration::from_secs(10)).await {
        Ok(_) => {
            state.handled.put(key, value);
            (
                true,
                format!("marked {topic} partition {partition} offsets {from}–{to} handled"),
            )
        }
        Err((e, _)) => (
            false,
            format!("cannot record the mark in {}: {e}", state.handled.topic()),
        ),
    };
    render(state, topic, BrowseParams::default(), Some(flash)).await
}
