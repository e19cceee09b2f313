//! Kafka admin queries: the cluster's brokers and topics, watermarks, consumer groups and their
//! lag. The one home of this logic: `clustera lag` uses [`group_lag`] too.
//!
//! Every call here blocks on librdkafka; the server runs them off the async workers.

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::error::ConsoleError;

/// How long one admin request may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// One broker of the cluster.
#[derive(Debug, Clone)]
pub struct Broker {
    /// Its id.
    pub id: i32,
    /// `host:port`.
    pub address: String,
}

/// One topic: its name and partition ids.
#[derive(Debug, Clone)]
pub struct Topic {
    /// Its name.
    pub name: String,
    /// Partition ids, ascending.
    pub partitions: Vec<i32>,
}

/// The cluster as metadata shows it.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// Every broker.
    pub brokers: Vec<Broker>,
    /// Every topic, by name (internal `__*` topics included).
    pub topics: Vec<Topic>,
}

impl Cluster {
    /// Partitions over every topic.
    pub fn partition_count(&self) -> usize {
        self.topics.iter().map(|t| t.partitions.len()).sum()
    }

    /// The topic called `name`.
    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.iter().find(|t| t.name == name)
    }
}

/// One partition's committed offset and lag in a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The group's committed offset, if any.
    pub committed: Option<i64>,
    /// The oldest offset still kept.
    pub low: i64,
    /// The high watermark.
    pub high: i64,
    /// Messages the group has yet to read: `high - committed`, or `high - low` without a
    /// commit (what retention or compaction removed is no lag).
    pub lag: i64,
}

/// One member of a consumer group, as the group coordinator describes it.
#[derive(Debug, Clone)]
pub struct Member {
    /// Member id.
    pub id: String,
    /// Its `client.id`.
    pub client_id: String,
    /// Its host.
    pub host: String,
    /// Partitions assigned to it, by topic.
    pub assignment: Vec<(String, Vec<i32>)>,
}

/// A consumer group as the brokers list it.
#[derive(Debug, Clone)]
pub struct Group {
    /// Its name.
    pub name: String,
    /// `Stable`, `Empty`, `PreparingRebalance`...
    pub state: String,
    /// Its members.
    pub members: Vec<Member>,
}

/// The configuration of the console's readers: they assign partitions and never join nor
/// commit, but librdkafka refuses an assignment to a consumer without a `group.id`.
pub fn reader_config(config: &ClientConfig) -> ClientConfig {
    let mut c = config.clone();
    c.set("group.id", "clustera-console-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    c
}

/// A client that joins no group, for metadata and watermarks.
pub fn client(config: &ClientConfig) -> Result<BaseConsumer, ConsoleError> {
    reader_config(config)
        .create()
        .map_err(|e| ConsoleError::kafka("creating a Kafka client", e))
}

/// Brokers and topics, sorted by name.
pub fn cluster(client: &BaseConsumer) -> Result<Cluster, ConsoleError> {
    let metadata = client
        .fetch_metadata(None, TIMEOUT)
        .map_err(|e| ConsoleError::kafka("reading the cluster's metadata", e))?;
    let mut topics: Vec<Topic> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| {
            let mut partitions: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
            partitions.sort_unstable();
            Topic {
                name: t.name().to_owned(),
                partitions,
            }
        })
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    let mut brokers: Vec<Broker> = metadata
        .brokers()
        .iter()
        .map(|b| Broker {
            id: b.id(),
            address: format!("{}:{}", b.host(), b.port()),
        })
        .collect();
    brokers.sort_by_key(|b| b.id);
    Ok(Cluster { brokers, topics })
}

/// A partition's low and high watermarks.
pub fn watermarks(
    client: &BaseConsumer,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64), ConsoleError> {
    client
        .fetch_watermarks(topic, partition, TIMEOUT)
        .map_err(|e| {
            ConsoleError::kafka(
                format!("reading the watermarks of {topic} partition {partition}"),
                e,
            )
        })
}

/// Consumer groups as the brokers list them (ListGroups and DescribeGroups). Brokers that do
/// not serve these APIs (the development broker) answer with an error.
pub fn groups(client: &BaseConsumer, timeout: Duration) -> Result<Vec<Group>, ConsoleError> {
    let list = client
        .fetch_group_list(None, timeout)
        .map_err(|e| ConsoleError::kafka("listing consumer groups", e))?;
    let mut groups: Vec<Group> = list
        .groups()
        .iter()
        .filter(|g| g.protocol_type() == "consumer" || g.protocol_type().is_empty())
        .map(|g| Group {
            name: g.name().to_owned(),
            state: g.state().to_owned(),
            members: g
                .members()
                .iter()
                .map(|m| Member {
                    id: m.id().to_owned(),
                    client_id: m.client_id().to_owned(),
                    host: m.client_host().to_owned(),
                    assignment: m
                        .assignment()
                        .and_then(parse_assignment)
                        .unwrap_or_default(),
                })
                .collect(),
        })
        .collect();
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(groups)
}

/// Committed offsets, watermarks and lag of `group` on every partition of the topics it has
/// committed offsets for (or of `topic` only), sorted by topic and partition. Empty when the
/// group has committed nothing.
pub fn group_lag(
    config: &ClientConfig,
    group: &str,
    topic: Option<&str>,
) -> Result<Vec<PartitionLag>, ConsoleError> {
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| ConsoleError::kafka("creating a Kafka client", e))?;
    // Every topic in one metadata request, and every committed offset in one offset fetch.
    let metadata = consumer
        .fetch_metadata(topic, TIMEOUT)
        .map_err(|e| ConsoleError::kafka("reading the topics' metadata", e))?;
    let mut all = TopicPartitionList::new();
    for t in metadata.topics() {
        if topic.is_some() && (t.error().is_some() || t.partitions().is_empty()) {
            return Err(ConsoleError::NotFound(format!(
                "unknown topic {}",
                t.name()
            )));
        }
        if t.name().starts_with("__") {
            continue;
        }
        for p in t.partitions() {
            all.add_partition(t.name(), p.id());
        }
    }
    let committed = consumer.committed_offsets(all, TIMEOUT).map_err(|e| {
        ConsoleError::kafka(
            format!("reading the committed offsets of group {group:?}"),
            e,
        )
    })?;
    let elements = committed.elements();
    let offset_of = |e: &rdkafka::topic_partition_list::TopicPartitionListElem<'_>| match e.offset()
    {
        Offset::Offset(o) => Some(o),
        _ => None,
    };
    // Topics the group reads: those it has committed any offset for.
    let read: BTreeSet<String> = elements
        .iter()
        .filter(|e| offset_of(e).is_some())
        .map(|e| e.topic().to_owned())
        .collect();
    let mut rows = Vec::new();
    for e in elements.iter().filter(|e| read.contains(e.topic())) {
        let (low, high) = watermarks(&consumer, e.topic(), e.partition())?;
        let committed = offset_of(e);
        rows.push(PartitionLag {
            topic: e.topic().to_owned(),
            partition: e.partition(),
            committed,
            low,
            high,
            lag: lag(committed, low, high),
        });
    }
    rows.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(rows)
}

/// Messages a group has yet to read. Without a commit the group starts at the oldest record
/// still kept at best; a commit below it (records since removed) counts from there too.
pub fn lag(committed: Option<i64>, low: i64, high: i64) -> i64 {
    (high - committed.unwrap_or(low).max(low)).max(0)
}

/// Parses a member's assignment (Kafka's ConsumerProtocolAssignment: version, then topics
/// with their partitions, then user data). Pure; `None` if the bytes do not parse.
pub fn parse_assignment(bytes: &[u8]) -> Option<Vec<(String, Vec<i32>)>> {
    let mut r = Reader(bytes);
    let _version = r.i16()?;
    let topics = r.i32()?;
    let mut out = Vec::new();
    for _ in 0..topics.max(0) {
        let len = usize::try_from(r.i16()?).ok()?;
        let name = String::from_utf8(r.take(len)?.to_vec()).ok()?;
        let count = r.i32()?;
        let mut partitions = Vec::new();
        for _ in 0..count.max(0) {
            partitions.push(r.i32()?);
        }
        out.push((name, partitions));
    }
    Some(out)
}

/// Big-endian reads over a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_from_the_commit_or_the_oldest_record_kept() {
        assert_eq!(lag(Some(7), 0, 10), 3);
        assert_eq!(lag(None, 4, 10), 6);
        assert_eq!(lag(Some(2), 4, 10), 6, "removed records are no lag");
        assert_eq!(lag(Some(10), 0, 10), 0);
    }

    #[test]
    fn assignments_parse_and_truncated_ones_do_not() {
        let mut b = vec![0, 1, 0, 0, 0, 2];
        for (name, parts) in [("orders", vec![0i32, 3]), ("x", vec![])] {
            b.extend_from_slice(&(name.len() as i16).to_be_bytes());
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(&(parts.len() as i32).to_be_bytes());
            for p in parts {
                b.extend_from_slice(&p.to_be_bytes());
            }
        }
        b.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            parse_assignment(&b),
            Some(vec![("orders".into(), vec![0, 3]), ("x".into(), vec![])])
        );
        assert_eq!(parse_assignment(&b[..9]), None);
        assert_eq!(parse_assignment(&[]), None);
    }
}
