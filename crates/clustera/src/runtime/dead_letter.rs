//! The dead-letter record: the original message plus headers that say where it came from and
//! why it failed. Pure: no I/O.

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
    /// Why: the kernel's reason or the last error.
    pub const ERROR: &str = "clustera.error";
    /// How many times it was processed.
    pub const ATTEMPTS: &str = "clustera.attempts";
}

/// Why a message is being dead-lettered.
#[derive(Debug, Clone)]
pub(crate) struct Failure<'a> {
    pub group: &'a str,
    pub kernel: &'a str,
    pub reason: &'a str,
    pub attempts: u32,
}

/// Builds the dead-letter record for `message`: the original key, value and headers, then the
/// provenance headers.
pub(crate) fn dead_letter_record(
    topic: String,
    message: &Message,
    failure: &Failure<'_>,
) -> Record {
    let mut headers: Vec<Header> = message.headers().to_vec();
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
    add(headers::CONSUMER_GROUP, failure.group.to_owned());
    add(headers::KERNEL, failure.kernel.to_owned());
    add(headers::ERROR, failure.reason.to_owned());
    add(headers::ATTEMPTS, failure.attempts.to_string());
    Record {
        topic,
        key: message.key_bytes(),
        value: message.value_bytes(),
        headers,
        partition: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_original_and_adds_provenance() {
        let m = Message::new("orders", 3, 42)
            .with_key(&b"k"[..])
            .with_value(&b"v"[..])
            .with_header("trace", &b"t1"[..])
            .with_timestamp_ms(1_700_000_000_000);
        let f = Failure {
            group: "g",
            kernel: "kern",
            reason: "bad json",
            attempts: 5,
        };
        let r = dead_letter_record("orders.dlq".into(), &m, &f);
        assert_eq!(r.topic, "orders.dlq");
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"v"[..]));
        let get = |n: &str| {
            r.headers
                .iter()
                .find(|h| h.name == n)
                .and_then(|h| h.value.clone())
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
        };
        assert_eq!(get("trace").as_deref(), Some("t1"));
        assert_eq!(get(headers::ORIGINAL_TOPIC).as_deref(), Some("orders"));
        assert_eq!(get(headers::ORIGINAL_PARTITION).as_deref(), Some("3"));
        assert_eq!(get(headers::ORIGINAL_OFFSET).as_deref(), Some("42"));
        assert_eq!(
            get(headers::ORIGINAL_TIMESTAMP).as_deref(),
            Some("1700000000000")
        );
        assert_eq!(get(headers::CONSUMER_GROUP).as_deref(), Some("g"));
        assert_eq!(get(headers::KERNEL).as_deref(), Some("kern"));
        assert_eq!(get(headers::ERROR).as_deref(), Some("bad json"));
        assert_eq!(get(headers::ATTEMPTS).as_deref(), Some("5"));
    }
}
