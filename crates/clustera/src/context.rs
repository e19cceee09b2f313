//! What a kernel can do while processing a message: collect output records.

use std::sync::Arc;

use bytes::Bytes;

use crate::message::Header;

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The topic to produce to.
    pub topic: String,
    /// The key; records with the same key land in the same partition.
    pub key: Option<Bytes>,
    /// The value; `None` produces a tombstone.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// An explicit partition; `None` lets the partitioner choose by key.
    pub partition: Option<i32>,
}

impl Record {
    /// A record for `topic` with no key, value or headers yet.
    pub fn to(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            key: None,
            value: None,
            headers: Vec::new(),
            partition: None,
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the key if there is one (convenient with [`crate::Message::key_bytes`]).
    pub fn maybe_key(mut self, key: Option<Bytes>) -> Self {
        self.key = key;
        self
    }

    /// Sets the value.
    pub fn value(mut self, value: impl Into<Bytes>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Serializes `value` as JSON and sets the `content-type` header.
    pub fn json<T: serde::Serialize>(self, value: &T) -> Result<Self, serde_json::Error> {
        let bytes = serde_json::to_vec(value)?;
        Ok(self
            .value(bytes)
            .header("content-type", &b"application/json"[..]))
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header {
            name: name.into(),
            value: Some(value.into()),
        });
        self
    }

    /// Pins the record to a partition.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// Handed to [`crate::Kernel::process`] with each message.
#[derive(Debug)]
pub struct Context {
    kernel: Arc<str>,
    attempt: u32,
    outputs: Vec<Record>,
}

impl Context {
    /// A context for one attempt; `attempt` counts from 1.
    pub fn new(kernel: impl Into<Arc<str>>, attempt: u32) -> Self {
        Self {
            kernel: kernel.into(),
            attempt,
            outputs: Vec::new(),
        }
    }

    /// Queues a record. It is produced only if this attempt's outcome is `Ack`, and the input's
    /// offset is committed only after the broker has acknowledged it.
    pub fn send(&mut self, record: Record) {
        self.outputs.push(record);
    }

    /// Which attempt this is, counting from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The kernel's name.
    pub fn kernel(&self) -> &str {
        &self.kernel
    }

    /// The records queued so far.
    pub fn outputs(&self) -> &[Record] {
        &self.outputs
    }

    /// Takes the queued records.
    pub(crate) fn take_outputs(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.outputs)
    }
}
