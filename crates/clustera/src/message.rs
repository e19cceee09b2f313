//! The message a kernel sees, and its typed decoding.

use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;

/// Why a message's bytes could not be turned into the type asked for. Permanent: the same
/// bytes will never decode, so the runtime dead-letters the message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The message has no value (a tombstone).
    #[error("message has no value (tombstone)")]
    NoValue,
    /// The value is not valid JSON for the requested type.
    #[error("value is not valid JSON for {type_name}: {source}")]
    Json {
        /// The Rust type that was asked for.
        type_name: &'static str,
        /// What serde_json reported, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// The value is not valid MessagePack for the requested type.
    #[cfg(feature = "msgpack")]
    #[error("value is not valid MessagePack for {type_name}: {source}")]
    MsgPack {
        /// The Rust type that was asked for.
        type_name: &'static str,
        /// What rmp-serde reported.
        #[source]
        source: rmp_serde::decode::Error,
    },
    /// The value is MessagePack, and this kernel was built without clustera's `msgpack`
    /// feature.
    #[cfg(not(feature = "msgpack"))]
    #[error("content-type {0:?} needs clustera's `msgpack` feature, which this kernel was built without")]
    MsgPackNotBuilt(String),
    /// The `content-type` header names a format this runtime does not decode.
    #[error("unsupported content-type {0:?} (expected application/json or application/msgpack)")]
    UnsupportedContentType(String),
    /// The value is not UTF-8 text.
    #[error("value is not UTF-8: {0}")]
    NotUtf8(#[from] std::str::Utf8Error),
}

/// One header: Kafka allows repeated names and null values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The header's name.
    pub name: String,
    /// The header's value; `None` for a null value.
    pub value: Option<Bytes>,
}

impl Header {
    /// Copies librdkafka's headers.
    pub(crate) fn all_from_kafka(headers: &rdkafka::message::BorrowedHeaders) -> Vec<Header> {
        use rdkafka::message::Headers as _;
        headers
            .iter()
            .map(|h| Header {
                name: h.key.to_owned(),
                value: h.value.map(Bytes::copy_from_slice),
            })
            .collect()
    }
}

/// A consumed record, owned so it can move between the poll thread and partition workers.
#[derive(Debug, Clone)]
pub struct Message {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) timestamp_ms: Option<i64>,
    pub(crate) key: Option<Bytes>,
    pub(crate) value: Option<Bytes>,
    pub(crate) headers: Vec<Header>,
}

impl Message {
    /// Copies a consumed record; `topic` is shared between all messages of a partition.
    pub(crate) fn from_kafka(topic: Arc<str>, m: &rdkafka::message::BorrowedMessage<'_>) -> Self {
        use rdkafka::Message as _;
        Message {
            topic,
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key().map(Bytes::copy_from_slice),
            value: m.payload().map(Bytes::copy_from_slice),
            headers: m.headers().map(Header::all_from_kafka).unwrap_or_default(),
        }
    }

    /// Builds a message by hand, for tests and the in-memory [`crate::testing::TestDriver`].
    pub fn new(topic: &str, partition: i32, offset: i64) -> Self {
        Self {
            topic: Arc::from(topic),
            partition,
            offset,
            timestamp_ms: None,
            key: None,
            value: None,
            headers: Vec::new(),
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the value.
    pub fn with_value(mut self, value: impl Into<Bytes>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header {
            name: name.into(),
            value: Some(value.into()),
        });
        self
    }

    /// Sets the timestamp, in milliseconds since the Unix epoch.
    pub fn with_timestamp_ms(mut self, ms: i64) -> Self {
        self.timestamp_ms = Some(ms);
        self
    }

    /// The topic it was read from.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition it was read from.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Its offset in the partition.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Create or log-append time, in milliseconds since the Unix epoch, when the broker sent one.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp_ms
    }

    /// The key bytes, if any.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// The key shared cheaply, for reusing it on an output record.
    pub fn key_bytes(&self) -> Option<Bytes> {
        self.key.clone()
    }

    /// The value bytes; `None` for a tombstone.
    pub fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }

    /// The value shared cheaply.
    pub fn value_bytes(&self) -> Option<Bytes> {
        self.value.clone()
    }

    /// All headers in wire order.
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// The last value of the header `name` (names compare case-insensitively, as HTTP's do).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .rev()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| h.value.as_deref())
    }

    /// The value as UTF-8 text.
    pub fn text(&self) -> Result<&str, DecodeError> {
        let bytes = self.value().ok_or(DecodeError::NoValue)?;
        Ok(std::str::from_utf8(bytes)?)
    }

    /// Decodes the value as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        let bytes = self.value().ok_or(DecodeError::NoValue)?;
        serde_json::from_slice(bytes).map_err(|source| DecodeError::Json {
            type_name: std::any::type_name::<T>(),
            source,
        })
    }

    /// Decodes the value by its `content-type` header: MessagePack for `application/msgpack`
    /// (or `application/x-msgpack`), JSON when it is absent or `application/json`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        let content_type = self
            .header("content-type")
            .map(|v| String::from_utf8_lossy(v).trim().to_ascii_lowercase());
        let essence = content_type
            .as_deref()
            .map(|c| c.split(';').next().unwrap_or(c).trim());
        match essence {
            None | Some("application/json") | Some("") => self.json(),
            #[cfg(feature = "msgpack")]
            Some("application/msgpack") | Some("application/x-msgpack") => {
                let bytes = self.value().ok_or(DecodeError::NoValue)?;
                rmp_serde::from_slice(bytes).map_err(|source| DecodeError::MsgPack {
                    type_name: std::any::type_name::<T>(),
                    source,
                })
            }
            #[cfg(not(feature = "msgpack"))]
            Some("application/msgpack") | Some("application/x-msgpack") => Err(
                DecodeError::MsgPackNotBuilt(content_type.unwrap_or_default()),
            ),
            Some(_) => Err(DecodeError::UnsupportedContentType(
                content_type.unwrap_or_default(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct User {
        id: u32,
    }

    #[test]
    fn json_decodes_and_reports_type_on_failure() {
        let m = Message::new("t", 0, 0).with_value(&br#"{"id": 7}"#[..]);
        assert_eq!(m.json::<User>().unwrap(), User { id: 7 });
        let bad = Message::new("t", 0, 1).with_value(&b"{nope"[..]);
        let err = bad.json::<User>().unwrap_err().to_string();
        assert!(err.contains("User"), "{err}");
        assert!(matches!(
            Message::new("t", 0, 2).json::<User>(),
            Err(DecodeError::NoValue)
        ));
    }

    #[cfg(feature = "msgpack")]
    #[test]
    fn decode_follows_content_type() {
        let packed = rmp_serde::to_vec_named(&User { id: 3 }).unwrap();
        let m = Message::new("t", 0, 0)
            .with_value(packed)
            .with_header("Content-Type", &b"application/msgpack"[..]);
        assert_eq!(m.decode::<User>().unwrap(), User { id: 3 });
        let xml = Message::new("t", 0, 0)
            .with_value(&b"<a/>"[..])
            .with_header("content-type", &b"application/xml"[..]);
        assert!(matches!(
            xml.decode::<User>(),
            Err(DecodeError::UnsupportedContentType(_))
        ));
        let json = Message::new("t", 0, 0)
            .with_value(&br#"{"id":1}"#[..])
            .with_header("content-type", &b"application/json; charset=utf-8"[..]);
        assert_eq!(json.decode::<User>().unwrap(), User { id: 1 });
    }
}
