//! The message browser: records of one partition from an offset or a time, newest or oldest
//! first, filtered by a key or value substring.
//!
//! A browse reads with its own group-less consumer assigned to the partition, so it neither
//! joins nor disturbs any consumer group. It scans at most [`MAX_SCAN`] records per request:
//! a filter that matches little answers with what it found and where to continue.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::error::ConsoleError;
use crate::kafka::{self, TIMEOUT};

/// The most records one request reads.
pub const MAX_SCAN: usize = 10_000;
/// The most records one page shows.
pub const MAX_LIMIT: usize = 500;

/// One record as read.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its timestamp in milliseconds since the epoch, if it has one.
    pub timestamp_ms: Option<i64>,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub value: Option<Vec<u8>>,
    /// Its headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    /// The first header called `name`, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// Where a browse starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The newest record (newest first) or the oldest one kept (oldest first).
    Edge,
    /// This offset (included).
    Offset(i64),
    /// The first record at or after this time, in milliseconds since the epoch.
    Time(i64),
}

/// What to read.
#[derive(Debug, Clone)]
pub struct Query {
    /// The partition.
    pub partition: i32,
    /// Where to start.
    pub start: Start,
    /// Newest first (backwards from the start) or oldest first.
    pub newest_first: bool,
    /// Only records whose key or value contains this (empty: all).
    pub filter: String,
    /// The most records to return.
    pub limit: usize,
}

/// What a browse found.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// The records, in the order asked for.
    pub records: Vec<Record>,
    /// The partition's low watermark.
    pub low: i64,
    /// Its high watermark.
    pub high: i64,
    /// Records read to find them.
    pub scanned: usize,
    /// Where the next page starts, if there is more.
    pub next: Option<i64>,
}

/// Reads records of `topic` as `query` says.
pub fn browse(config: &ClientConfig, topic: &str, query: &Query) -> Result<Found, ConsoleError> {
    let limit = query.limit.clamp(1, MAX_LIMIT);
    let consumer = reader(config)?;
    let (low, high) = kafka::watermarks(&consumer, topic, query.partition)?;
    let start = match query.start {
        Start::Edge => None,
        Start::Offset(o) => Some(o),
        Start::Time(t) => {
            Some(offset_for_time(&consumer, topic, query.partition, t)?.unwrap_or(high))
        }
    };
    let mut found = Found {
        low,
        high,
        ..Found::default()
    };
    if query.newest_first {
        // Windows read backwards from the start: the whole page at once without a filter,
        // larger windows with one.
        let window = if query.filter.is_empty() { limit } else { 500 } as i64;
        let mut end = start.map_or(high, |s| (s + 1).min(high));
        while end > low && found.records.len() < limit && found.scanned < MAX_SCAN {
            let from = (end - window).max(low);
            let mut batch = read_range(&consumer, topic, query.partition, from, end)?;
            found.scanned += batch.len();
            batch.reverse();
            for r in batch {
                if found.records.len() == limit {
                    found.next = Some(r.offset);
                    break;
                }
                if crate::value::matches(&query.filter, r.key.as_deref(), r.value.as_deref()) {
                    found.records.push(r);
                }
            }
            end = from;
            if found.next.is_some() {
                break;
            }
        }
        if found.next.is_none() && end > low {
            found.next = Some(end - 1);
        }
    } else {
        let mut from = start.map_or(low, |s| s.max(low));
        while from < high && found.records.len() < limit && found.scanned < MAX_SCAN {
            let window = if query.filter.is_empty() {
                limit as i64
            } else {
                500
            };
            let end = (from + window).min(high);
            let batch = read_range(&consumer, topic, query.partition, from, end)?;
            found.scanned += batch.len();
            for r in batch {
                if found.records.len() == limit {
                    found.next = Some(r.offset);
                    break;
                }
                if crate::value::matches(&query.filter, r.key.as_deref(), r.value.as_deref()) {
                    found.records.push(r);
                }
            }
            from = end;
            if found.next.is_some() {
                break;
            }
        }
        if found.next.is_none() && from < high {
            found.next = Some(from);
        }
    }
    Ok(found)
}

/// Reads the records at exactly these offsets of one partition (missing ones are left out).
pub fn read_offsets(
    config: &ClientConfig,
    topic: &str,
    partition: i32,
    offsets: &[i64],
) -> Result<Vec<Record>, ConsoleError> {
    let consumer = reader(config)?;
    let mut out = Vec::new();
    let mut sorted = offsets.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    // Contiguous runs are read in one go.
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 && j - i < 999 {
            j += 1;
        }
        let batch = read_range(&consumer, topic, partition, sorted[i], sorted[j] + 1)?;
        out.extend(
            batch
                .into_iter()
                .filter(|r| sorted.binary_search(&r.offset).is_ok()),
        );
        i = j + 1;
    }
    Ok(out)
}

/// A group-less consumer that reports the end of a partition.
fn reader(config: &ClientConfig) -> Result<BaseConsumer, ConsoleError> {
    kafka::reader_config(config)
        .set("enable.partition.eof", "true")
        // A page waits for its records: no broker-side wait for more data to batch.
        .set("fetch.wait.max.ms", "10")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(|e| ConsoleError::kafka("creating a Kafka client", e))
}

/// The first offset at or after `time_ms`; `None` when every record is older.
fn offset_for_time(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    time_ms: i64,
) -> Result<Option<i64>, ConsoleError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(time_ms))
        .map_err(|e| ConsoleError::kafka("preparing an offset lookup", e))?;
    let found = consumer
        .offsets_for_times(tpl, TIMEOUT)
        .map_err(|e| ConsoleError::kafka(format!("looking up offsets by time in {topic}"), e))?;
    Ok(found.elements().first().and_then(|e| match e.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }))
}

/// Records of `[from, end)` of one partition, in offset order.
pub(crate) fn read_range(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    from: i64,
    end: i64,
) -> Result<Vec<Record>, ConsoleError> {
    let mut out = Vec::new();
    if from >= end {
        return Ok(out);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))
        .map_err(|e| ConsoleError::kafka("preparing a read", e))?;
    consumer
        .assign(&tpl)
        .map_err(|e| ConsoleError::kafka(format!("reading {topic} partition {partition}"), e))?;
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) if is_transient(&e) => {}
            Some(Err(e)) => {
                return Err(ConsoleError::kafka(
                    format!("reading {topic} partition {partition}"),
                    e,
                ))
            }
            Some(Ok(m)) => {
                if m.offset() >= end {
                    break;
                }
                let headers = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    timestamp_ms: m.timestamp().to_millis(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers,
                });
                if m.offset() >= end - 1 {
                    break;
                }
            }
        }
    }
    let _ = consumer.unassign();
    Ok(out)
}

/// Errors librdkafka recovers from by itself.
fn is_transient(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown)
    )
}
