//! Blocking helpers for tests, demos and benchmarks: produce a batch, read a topic back, read
//! watermarks and a group's committed offsets. Call them from plain threads or
//! `spawn_blocking`, not from an async task that must keep running.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};

use crate::message::Header;

/// Every broker call is bounded by this.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A record read back from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub value: Option<Vec<u8>>,
    /// Its headers.
    pub headers: Vec<Header>,
}

impl Consumed {
    /// The value of header `name` as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .and_then(|h| h.value.as_ref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// Where to connect: a bootstrap list, or a whole client configuration (TLS, SASL, …).
pub trait Brokers {
    /// The base configuration every helper starts from.
    fn client_config(&self) -> ClientConfig;
}

impl Brokers for str {
    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self);
        c
    }
}

impl Brokers for String {
    fn client_config(&self) -> ClientConfig {
        self.as_str().client_config()
    }
}

impl Brokers for ClientConfig {
    fn client_config(&self) -> ClientConfig {
        self.clone()
    }
}

/// A record to produce: key, value and headers (name, text).
pub type ProducedRecord = (Option<Vec<u8>>, Vec<u8>, Vec<(String, String)>);

/// Produces `records` (key, value, headers) to `topic` and waits until all are acknowledged.
pub fn produce<I>(brokers: &(impl Brokers + ?Sized), topic: &str, records: I) -> KafkaResult<usize>
where
    I: IntoIterator<Item = ProducedRecord>,
{
    let producer: BaseProducer = brokers
        .client_config()
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let mut sent = 0usize;
    for (key, value, headers) in records {
        let mut owned = OwnedHeaders::new();
        for (k, v) in &headers {
            owned = owned.insert(KafkaHeader {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record = BaseRecord::to(topic).payload(&value).headers(owned);
        if let Some(k) = key.as_deref() {
            record = record.key(k);
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e),
            }
        }
        sent += 1;
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(sent)
}

/// Produces `count` keyed JSON messages `{"seq": i}` with key `key-i`.
pub fn produce_sequence(
    brokers: &(impl Brokers + ?Sized),
    topic: &str,
    count: usize,
) -> KafkaResult<usize> {
    produce(
        brokers,
        topic,
        (0..count).map(|i| {
            (
                Some(format!("key-{i}").into_bytes()),
                format!("{{\"seq\":{i}}}").into_bytes(),
                Vec::new(),
            )
        }),
    )
}

/// Low and high watermarks of every partition of `topic`.
pub fn watermarks(
    brokers: &(impl Brokers + ?Sized),
    topic: &str,
) -> KafkaResult<BTreeMap<i32, (i64, i64)>> {
    let consumer: BaseConsumer = brokers.client_config().create()?;
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let mut out = BTreeMap::new();
    for t in metadata.topics() {
        if let Some(e) = t.error() {
            return Err(KafkaError::MetadataFetch(e.into()));
        }
        for p in t.partitions() {
            out.insert(p.id(), consumer.fetch_watermarks(topic, p.id(), TIMEOUT)?);
        }
    }
    Ok(out)
}

/// The high watermark (next offset to be written) of every partition.
pub fn high_watermarks(
    brokers: &(impl Brokers + ?Sized),
    topic: &str,
) -> KafkaResult<BTreeMap<i32, i64>> {
    Ok(watermarks(brokers, topic)?
        .into_iter()
        .map(|(p, (_, high))| (p, high))
        .collect())
}

/// The offsets `group` has committed for `topic`; partitions without a commit are absent.
pub fn committed_offsets(
    brokers: &(impl Brokers + ?Sized),
    group: &str,
    topic: &str,
) -> KafkaResult<BTreeMap<i32, i64>> {
    let consumer: BaseConsumer = brokers.client_config().set("group.id", group).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in watermarks(brokers, topic)?.keys() {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(tpl, TIMEOUT)?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// Reads every record of `topic` from the beginning up to the high watermarks taken now.
pub fn read_topic(brokers: &(impl Brokers + ?Sized), topic: &str) -> KafkaResult<Vec<Consumed>> {
    let marks = watermarks(brokers, topic)?;
    let consumer: BaseConsumer = brokers
        .client_config()
        .set("group.id", "clustera-test-reader")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0i64;
    for (p, (low, high)) in &marks {
        if high > low {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*low))?;
            remaining += 1;
        }
    }
    let mut out = Vec::new();
    if remaining == 0 {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    let mut finished: BTreeMap<i32, bool> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while (finished.len() as i64) < remaining {
        if Instant::now() > deadline {
            return Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let high = marks.get(&m.partition()).map_or(0, |(_, h)| *h);
                if m.offset() < high {
                    out.push(Consumed {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                        headers: m.headers().map(Header::all_from_kafka).unwrap_or_default(),
                    });
                }
                if m.offset() + 1 >= high {
                    finished.insert(m.partition(), true);
                }
            }
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    Ok(out)
}

/// Creates a topic through the admin API (for brokers that do not auto-create, like tansu).
pub fn create_topic(
    brokers: &(impl Brokers + ?Sized),
    name: &str,
    partitions: i32,
) -> KafkaResult<()> {
    let admin: AdminClient<DefaultClientContext> = brokers.client_config().create()?;
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let results = futures::executor::block_on(admin.create_topics([&topic], &options))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(())
}
