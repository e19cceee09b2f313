//! Dead letters: their provenance (the runtime's `clustera.*` headers, see
//! [`clustera::dead_letter_headers`]), the record a replay sends back to the original topic,
//! and the ranges marked handled. Pure: the pages do the I/O.
//!
//! A replayed record is the original key, value and headers (the provenance headers
//! removed) plus [`REPLAYED_FROM`], naming the dead letter it came from as
//! `dlq-topic/partition/offset`.

use clustera::dead_letter_headers as h;
use serde::{Deserialize, Serialize};

use crate::browse::Record;

/// The header a replayed record carries: `dlq-topic/partition/offset` of its dead letter.
pub const REPLAYED_FROM: &str = "clustera.replayed.from";

/// Where a dead letter came from and why, from its headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance {
    /// The topic it was read from.
    pub topic: Option<String>,
    /// Its partition there.
    pub partition: Option<String>,
    /// Its offset there.
    pub offset: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// How many attempts were made.
    pub attempts: Option<String>,
    /// The kernel that gave up.
    pub kernel: Option<String>,
    /// Its consumer group.
    pub group: Option<String>,
    /// Set when the value was too large to travel: its size.
    pub value_omitted: Option<String>,
}

impl Provenance {
    /// Reads the provenance headers of `record`.
    pub fn of(record: &Record) -> Self {
        Self {
            topic: record.header(h::ORIGINAL_TOPIC),
            partition: record.header(h::ORIGINAL_PARTITION),
            offset: record.header(h::ORIGINAL_OFFSET),
            error: record.header(h::ERROR),
            attempts: record.header(h::ATTEMPTS),
            kernel: record.header(h::KERNEL),
            group: record.header(h::CONSUMER_GROUP),
            value_omitted: record.header(h::VALUE_OMITTED),
        }
    }
}

/// A record to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// The original topic.
    pub topic: String,
    /// The original key.
    pub key: Option<Vec<u8>>,
    /// The original value.
    pub value: Option<Vec<u8>>,
    /// The original headers, and [`REPLAYED_FROM`].
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// What replaying the dead letter `record` of `dlq_topic` sends, or why it cannot be
/// replayed.
pub fn replay_of(dlq_topic: &str, record: &Record) -> Result<Replay, String> {
    let p = Provenance::of(record);
    let at = format!("{dlq_topic}/{}/{}", record.partition, record.offset);
    let Some(topic) = p.topic.filter(|t| !t.is_empty()) else {
        return Err(format!(
            "{at} has no {} header: the console cannot tell where it came from",
            h::ORIGINAL_TOPIC
        ));
    };
    if let Some(size) = p.value_omitted {
        return Err(format!(
            "{at} does not hold the original value ({size} bytes, too large to dead-letter); \
             it is still at {topic} partition {} offset {} while retention keeps it",
            p.partition.unwrap_or_default(),
            p.offset.unwrap_or_default()
        ));
    }
    let provenance: Vec<&str> = h::ALL.to_vec();
    let mut headers: Vec<(String, Option<Vec<u8>>)> = record
        .headers
        .iter()
        .filter(|(name, _)| !provenance.contains(&name.as_str()) && name != REPLAYED_FROM)
        .cloned()
        .collect();
    headers.push((REPLAYED_FROM.to_owned(), Some(at.into_bytes())));
    Ok(Replay {
        topic,
        key: record.key.clone(),
        value: record.value.clone(),
        headers,
    })
}

/// A range of dead letters marked handled: the value of a record of the handled topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandledRange {
    /// The dead-letter topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// First offset marked.
    pub from: i64,
    /// Last offset marked (included).
    pub to: i64,
    /// When, in milliseconds since the epoch.
    pub at_ms: u64,
    /// The operator's note.
    #[serde(default)]
    pub note: String,
}

impl HandledRange {
    /// The record's key: one per range.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}-{}",
            self.topic, self.partition, self.from, self.to
        )
    }

    /// Whether it covers this dead letter.
    pub fn covers(&self, topic: &str, partition: i32, offset: i64) -> bool {
        self.topic == topic
            && self.partition == partition
            && (self.from..=self.to).contains(&offset)
    }
}

/// Parses `partition:offset` (a selected row).
pub fn parse_selection(s: &str) -> Result<(i32, i64), String> {
    let (p, o) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not PARTITION:OFFSET"))?;
    Ok((
        p.trim()
            .parse()
            .map_err(|_| format!("{p:?} is not a partition number"))?,
        o.trim()
            .parse()
            .map_err(|_| format!("{o:?} is not an offset"))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(headers: &[(&str, &str)]) -> Record {
        Record {
            partition: 1,
            offset: 7,
            timestamp_ms: None,
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), Some(v.as_bytes().to_vec())))
                .collect(),
        }
    }

    #[test]
    fn a_replay_goes_to_the_original_topic_without_provenance_and_says_where_from() {
        let r = letter(&[
            ("trace", "abc"),
            (h::ORIGINAL_TOPIC, "orders"),
            (h::ORIGINAL_OFFSET, "3"),
            (h::ERROR, "boom"),
            (REPLAYED_FROM, "older"),
        ]);
        assert_eq!(Provenance::of(&r).error.as_deref(), Some("boom"));
        let replay = replay_of("orders.dlq", &r).unwrap();
        assert_eq!(replay.topic, "orders");
        assert_eq!(replay.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(
            replay.headers,
            vec![
                ("trace".to_owned(), Some(b"abc".to_vec())),
                (REPLAYED_FROM.to_owned(), Some(b"orders.dlq/1/7".to_vec())),
            ]
        );
    }

    #[test]
    fn letters_without_origin_or_value_are_refused_with_the_reason() {
        assert!(replay_of("x.dlq", &letter(&[]))
            .unwrap_err()
            .contains("no clustera.original.topic header"));
        let omitted = letter(&[(h::ORIGINAL_TOPIC, "big"), (h::VALUE_OMITTED, "9000000")]);
        assert!(replay_of("x.dlq", &omitted)
            .unwrap_err()
            .contains("does not hold the original value (9000000 bytes"));
    }

    #[test]
    fn handled_ranges_and_selections() {
        let m = HandledRange {
            topic: "a.dlq".into(),
            partition: 0,
            from: 2,
            to: 4,
            at_ms: 0,
            note: String::new(),
        };
        assert_eq!(m.key(), "a.dlq/0/2-4");
        assert!(m.covers("a.dlq", 0, 4));
        assert!(!m.covers("a.dlq", 0, 5));
        assert!(!m.covers("a.dlq", 1, 3));
        assert_eq!(parse_selection("2:15"), Ok((2, 15)));
        assert!(parse_selection("x").is_err());
        assert!(parse_selection("1:y")
            .unwrap_err()
            .contains("not an offset"));
    }
}
