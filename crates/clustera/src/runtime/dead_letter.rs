//! The dead-letter record: the original message plus headers that say where it came from and
//! why it failed. Pure: no I/O.
//!
//! A dead letter must always be deliverable, or the partition it protects would freeze: the
//! error text is bounded, a message dead-lettered twice keeps one set of provenance headers
//! (the latest), and an original too large to fit `message.max.bytes` is replaced by a
//! reference to where it can still be read (topic, partition, offset, size).

use std::sync::Arc;

use crate::context::Record;
use crate::message::{Header, Message};

/// Names of the provenance headers added to every dead-letter record.
pub mod headers {
    /// The topic the message was read from.
    pub const ORIGINAL_TOPIC: &str = "clustera.original.topic";
    /// Its partition.
    pub const ORIGINAL_PARTITION: &str = "clustera.original.partition";
    /// Its offset.
    pub const ORIGINAL_OFFSET: &str = "clustera.original.offset";
    /// Its timestamp in milliseconds since the epoch (absent if the broker sent none).
    pub const ORIGINAL_TIMESTAMP: &str = "clustera.original.timestamp";
    /// The consumer group that gave up on it.
    pub const CONSUMER_GROUP: &str = "clustera.consumer.group";
    /// The kernel that gave up on it.
    pub const KERNEL: &str = "clustera.kernel";
    /// Why: the kernel's reason or the last error (at most 4 KiB).
    pub const ERROR: &str = "clustera.error";
    /// How many times it was processed.
    pub const ATTEMPTS: &str = "clustera.attempts";
    /// Present when the original value was too large to travel in the dead letter: its size in
    /// bytes. The dead letter's value is then a JSON reference
    /// `{"topic", "partition", "offset", "size"}` to the original record.
    pub const VALUE_OMITTED: &str = "clustera.value.omitted";
    /// Present when the original headers were dropped to make the dead letter fit: how many.
    pub const HEADERS_OMITTED: &str = "clustera.headers.omitted";
    /// Present when the original key was dropped to make the dead letter fit: its size.
    pub const KEY_OMITTED: &str = "clustera.key.omitted";

    /// Every header the runtime writes on a dead letter.
    pub const ALL: [&str; 11] = [
        ORIGINAL_TOPIC,
        ORIGINAL_PARTITION,
        ORIGINAL_OFFSET,
        ORIGINAL_TIMESTAMP,
        CONSUMER_GROUP,
        KERNEL,
        ERROR,
        ATTEMPTS,
        VALUE_OMITTED,
        HEADERS_OMITTED,
        KEY_OMITTED,
    ];
}

/// The longest error text carried in [`headers::ERROR`].
pub const MAX_ERROR_BYTES: usize = 4096;

/// Room kept below `message.max.bytes` for the record's framing (batch and record headers,
/// varints) and the provenance headers' own overhead.
const FRAMING_ALLOWANCE: usize = 1024;

/// Builds dead letters for one kernel: who gives up, where letters go, how large they may be.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetters {
    pub group: Arc<str>,
    pub kernel: Arc<str>,
    /// One topic for every input (`CLUSTERA_DLQ_TOPIC`); otherwise `<input>.dlq`.
    pub topic: Option<String>,
    /// The producer's `message.max.bytes`.
    pub max_bytes: usize,
}

impl DeadLetters {
    /// The dead-letter topic for messages read from `input_topic`.
    pub(crate) fn topic_for(&self, input_topic: &str) -> String {
        crate::config::dead_letter_topic(self.topic.as_deref(), input_topic)
    }

    /// The dead letter for `message`: its key, value and headers (any earlier provenance
    /// replaced), then the provenance headers; shrunk to fit `max_bytes`.
    pub(crate) fn record(&self, message: &Message, reason: &str, attempts: u32) -> Record {
        self.record_with(message, reason, attempts, &[])
    }

    /// Like [`DeadLetters::record`], with the kernel's `extra` headers (say, which of its
    /// handlers failed) after the provenance headers, replacing the original's of the same
    /// name; a provenance header (`clustera.original.*`, ...) among them is ignored.
    pub(crate) fn record_with(
        &self,
        message: &Message,
        reason: &str,
        attempts: u32,
        extra: &[Header],
    ) -> Record {
        let mut headers: Vec<Header> = message
            .headers()
            .iter()
            .filter(|h| {
                !headers::ALL.contains(&h.name.as_str()) && !extra.iter().any(|e| e.name == h.name)
            })
            .cloned()
            .collect();
        let mut add = |name: &str, value: String| {
            headers.push(Header {
                name: name.to_owned(),
                value: Some(value.into_bytes().into()),
            })
        };
        add(headers::ORIGINAL_TOPIC, message.topic().to_owned());
        add(headers::ORIGINAL_PARTITION, message.partition().to_string());
        add(headers::ORIGINAL_OFFSET, message.offset().to_string());
        if let Some(ts) = message.timestamp_ms() {
            add(headers::ORIGINAL_TIMESTAMP, ts.to_string());
        }
        add(headers::CONSUMER_GROUP, self.group.to_string());
        add(headers::KERNEL, self.kernel.to_string());
        add(headers::ERROR, bounded(reason, MAX_ERROR_BYTES));
        add(headers::ATTEMPTS, attempts.to_string());
        // The runtime's provenance is not the kernel's to rewrite.
        headers.extend(
            extra
                .iter()
                .filter(|h| !headers::ALL.contains(&h.name.as_str()))
                .cloned(),
        );
        let mut record = Record {
            topic: self.topic_for(message.topic()),
            key: message.key_bytes(),
            value: message.value_bytes(),
            headers,
            partition: None,
        };
        let origin = Origin {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
        };
        fit(&mut record, &origin, self.max_bytes);
        record
    }
}

/// Where the original of a dead letter can still be read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// Shrinks `record` until its estimated size fits `max_bytes`: first the value is replaced by a
/// reference, then the original headers are dropped, then the key. Returns whether anything
/// was dropped.
pub(crate) fn fit(record: &mut Record, origin: &Origin<'_>, max_bytes: usize) -> bool {
    let limit = max_bytes.saturating_sub(FRAMING_ALLOWANCE);
    shrink(record, origin, |r| estimated_size(r) > limit)
}

/// Each step of cutting a dead letter down, taken while `too_big` says so: the value becomes
/// a reference, the original headers go, the key goes. Returns whether anything was cut.
fn shrink(record: &mut Record, origin: &Origin<'_>, too_big: impl Fn(&Record) -> bool) -> bool {
    let mut shrunk = false;
    if too_big(record) && !has_header(record, headers::VALUE_OMITTED) {
        omit_value(record, origin);
        shrunk = true;
    }
    let is_original = |h: &Header| !headers::ALL.contains(&h.name.as_str());
    let originals = record.headers.iter().filter(|h| is_original(h)).count();
    if originals > 0 && too_big(record) {
        record.headers.retain(|h| !is_original(h));
        record
            .headers
            .push(text_header(headers::HEADERS_OMITTED, originals));
        shrunk = true;
    }
    if too_big(record) {
        if let Some(key) = record.key.take() {
            record
                .headers
                .push(text_header(headers::KEY_OMITTED, key.len()));
            shrunk = true;
        }
    }
    shrunk
}

/// Replaces the value by a JSON reference to the original record, and says so in a header.
pub(crate) fn omit_value(record: &mut Record, origin: &Origin<'_>) {
    let size = record.value.as_ref().map_or(0, |v| v.len());
    let reference = serde_json::json!({
        "omitted": "the original value is too large for a dead letter; read it at this position",
        "topic": origin.topic,
        "partition": origin.partition,
        "offset": origin.offset,
        "size": size,
    });
    record.value = Some(reference.to_string().into_bytes().into());
    record
        .headers
        .push(text_header(headers::VALUE_OMITTED, size));
}

/// Cuts a dead letter the broker refused for its size down to its provenance: the value
/// becomes a reference, and the original headers and key go. Returns `false` when there was
/// nothing left to cut (the letter is as small as it can be).
pub(crate) fn shrink_to_provenance(record: &mut Record, origin: &Origin<'_>) -> bool {
    shrink(record, origin, |_| true)
}

fn has_header(record: &Record, name: &str) -> bool {
    record.headers.iter().any(|h| h.name == name)
}

fn text_header(name: &str, n: usize) -> Header {
    Header {
        name: name.to_owned(),
        value: Some(n.to_string().into_bytes().into()),
    }
}

/// What the record will weigh on the wire, give or take framing.
fn estimated_size(record: &Record) -> usize {
    let len = |b: &Option<bytes::Bytes>| b.as_ref().map_or(0, |b| b.len());
    len(&record.key)
        + len(&record.value)
        + record
            .headers
            .iter()
            .map(|h| h.name.len() + len(&h.value) + 8)
            .sum::<usize>()
}

/// `text` cut to at most `max` bytes on a character boundary, saying how much was cut.
pub(crate) fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let note = format!(" … ({} bytes cut)", text.len());
    let mut end = max.saturating_sub(note.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{note}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letters(max_bytes: usize) -> DeadLetters {
        DeadLetters {
            group: Arc::from("g"),
            kernel: Arc::from("kern"),
            topic: None,
            max_bytes,
        }
    }

    fn get(r: &Record, n: &str) -> Option<String> {
        r.headers
            .iter()
            .find(|h| h.name == n)
            .and_then(|h| h.value.clone())
            .map(|v| String::from_utf8(v.to_vec()).unwrap_or_default())
    }

    fn count(r: &Record, n: &str) -> usize {
        r.headers.iter().filter(|h| h.name == n).count()
    }

    #[test]
    fn keeps_the_original_and_adds_provenance() {
        let m = Message::new("orders", 3, 42)
            .with_key(&b"k"[..])
            .with_value(&b"v"[..])
            .with_header("trace", &b"t1"[..])
            .with_timestamp_ms(1_700_000_000_000);
        let r = letters(1_000_000).record(&m, "bad json", 5);
        assert_eq!(r.topic, "orders.dlq");
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"v"[..]));
        assert_eq!(get(&r, "trace").as_deref(), Some("t1"));
        assert_eq!(get(&r, headers::ORIGINAL_TOPIC).as_deref(), Some("orders"));
        assert_eq!(get(&r, headers::ORIGINAL_PARTITION).as_deref(), Some("3"));
        assert_eq!(get(&r, headers::ORIGINAL_OFFSET).as_deref(), Some("42"));
        assert_eq!(
            get(&r, headers::ORIGINAL_TIMESTAMP).as_deref(),
            Some("1700000000000")
        );
        assert_eq!(get(&r, headers::CONSUMER_GROUP).as_deref(), Some("g"));
        assert_eq!(get(&r, headers::KERNEL).as_deref(), Some("kern"));
        assert_eq!(get(&r, headers::ERROR).as_deref(), Some("bad json"));
        assert_eq!(get(&r, headers::ATTEMPTS).as_deref(), Some("5"));
        assert_eq!(get(&r, headers::VALUE_OMITTED), None);
    }

    #[test]
    fn the_configured_topic_wins() {
        let mut l = letters(1_000_000);
        l.topic = Some("all.dlq".into());
        let r = l.record(&Message::new("orders", 0, 0), "x", 1);
        assert_eq!(r.topic, "all.dlq");
    }

    #[test]
    fn a_dead_letter_dead_lettered_again_has_one_set_of_provenance() {
        let first = letters(1_000_000).record(
            &Message::new("orders", 3, 42)
                .with_value(&b"v"[..])
                .with_header("trace", &b"t1"[..]),
            "first failure",
            5,
        );
        // A kernel reading orders.dlq fails on it in turn.
        let mut again = Message::new("orders.dlq", 0, 7).with_value(&b"v"[..]);
        for h in &first.headers {
            again = again.with_header(h.name.clone(), h.value.clone().unwrap_or_default());
        }
        let second = letters(1_000_000).record(&again, "second failure", 1);
        for name in [
            headers::ORIGINAL_TOPIC,
            headers::ORIGINAL_OFFSET,
            headers::ERROR,
            headers::ATTEMPTS,
        ] {
            assert_eq!(count(&second, name), 1, "{name} appears once");
        }
        assert_eq!(
            get(&second, headers::ORIGINAL_TOPIC).as_deref(),
            Some("orders.dlq")
        );
        assert_eq!(
            get(&second, headers::ERROR).as_deref(),
            Some("second failure")
        );
        assert_eq!(get(&second, "trace").as_deref(), Some("t1"));
    }

    #[test]
    fn the_error_text_is_bounded() {
        let reason = "é".repeat(10_000);
        let r = letters(1_000_000).record(&Message::new("t", 0, 0), &reason, 1);
        let e = get(&r, headers::ERROR).unwrap_or_default();
        assert!(e.len() <= MAX_ERROR_BYTES, "{} bytes", e.len());
        assert!(e.ends_with("(20000 bytes cut)"), "{e}");
    }

    #[test]
    fn a_value_too_large_is_replaced_by_a_reference() {
        let big = vec![b'x'; 2_000_000];
        let m = Message::new("orders", 1, 9)
            .with_key(&b"k"[..])
            .with_value(big);
        let r = letters(1_000_000).record(&m, "too large", 1);
        assert_eq!(get(&r, headers::VALUE_OMITTED).as_deref(), Some("2000000"));
        let v: serde_json::Value =
            serde_json::from_slice(r.value.as_deref().unwrap_or_default()).unwrap_or_default();
        assert_eq!(v["topic"], "orders");
        assert_eq!(v["partition"], 1);
        assert_eq!(v["offset"], 9);
        assert_eq!(v["size"], 2_000_000);
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]), "the key still fits");
        assert!(estimated_size(&r) < 1_000_000);
    }

    #[test]
    fn huge_headers_and_key_are_dropped_last() {
        let mut m = Message::new("orders", 0, 1)
            .with_key(vec![b'k'; 1_200_000])
            .with_value(&b"small"[..]);
        for i in 0..3 {
            m = m.with_header(format!("h{i}"), vec![b'h'; 300_000]);
        }
        let r = letters(1_000_000).record(&m, "x", 1);
        assert_eq!(get(&r, headers::HEADERS_OMITTED).as_deref(), Some("3"));
        assert_eq!(get(&r, headers::KEY_OMITTED).as_deref(), Some("1200000"));
        assert!(r.key.is_none());
        assert!(estimated_size(&r) < 1_000_000);
        assert_eq!(get(&r, headers::ORIGINAL_OFFSET).as_deref(), Some("1"));
    }

    #[test]
    fn shrinking_for_a_smaller_broker_limit_keeps_only_provenance() {
        let m = Message::new("t", 2, 3)
            .with_key(vec![b'k'; 100_000])
            .with_value(vec![0; 500_000])
            .with_header("h", vec![b'h'; 100_000]);
        let mut r = letters(1_000_000).record(&m, "x", 1);
        let origin = Origin {
            topic: "t",
            partition: 2,
            offset: 3,
        };
        assert!(shrink_to_provenance(&mut r, &origin));
        assert_eq!(get(&r, headers::VALUE_OMITTED).as_deref(), Some("500000"));
        assert_eq!(get(&r, headers::HEADERS_OMITTED).as_deref(), Some("1"));
        assert_eq!(get(&r, headers::KEY_OMITTED).as_deref(), Some("100000"));
        assert_eq!(get(&r, "h"), None);
        assert_eq!(get(&r, headers::ORIGINAL_PARTITION).as_deref(), Some("2"));
        assert!(estimated_size(&r) < 10_000);
        assert!(
            !shrink_to_provenance(&mut r, &origin),
            "nothing left to cut"
        );
    }
}
