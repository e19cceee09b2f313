//! A compacted topic read as a table: the latest value of every key, kept up to date by a
//! background thread. The console reads the kernels' status topic and its own dead-letter
//! marks this way.
//!
//! The thread assigns every partition from the beginning (no consumer group, nothing
//! committed), waits for the topic while it does not exist, and ends when the table is
//! dropped.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The latest value of each key of one topic.
pub type Rows = BTreeMap<String, Vec<u8>>;

/// A compacted topic followed in the background.
#[derive(Debug, Clone)]
pub struct Table {
    topic: String,
    rows: Arc<RwLock<Rows>>,
}

impl Table {
    /// Starts following `topic`.
    pub fn follow(config: &ClientConfig, topic: &str) -> Self {
        let rows = Arc::new(RwLock::new(Rows::new()));
        let weak = Arc::downgrade(&rows);
        let (config, name) = (config.clone(), topic.to_owned());
        let spawned = std::thread::Builder::new()
            .name(format!("console-{topic}"))
            .spawn(move || follow(&config, &name, &weak));
        if let Err(e) = spawned {
            tracing::error!(topic, error = %e, "cannot start the thread that reads the topic");
        }
        Self {
            topic: topic.to_owned(),
            rows,
        }
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// A copy of the rows now.
    pub fn rows(&self) -> Rows {
        self.rows.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn follow(config: &ClientConfig, topic: &str, rows: &Weak<RwLock<Rows>>) {
    let consumer: BaseConsumer = match crate::kafka::reader_config(config)
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(topic, error = %e, "cannot create a client to read the topic");
            return;
        }
    };
    let mut partitions = 0usize;
    let mut checked: Option<Instant> = None;
    while rows.strong_count() > 0 {
        // New partitions (and the topic's creation) are picked up every few seconds.
        if checked
            .is_none_or(|c| c.elapsed() > Duration::from_secs(if partitions == 0 { 1 } else { 10 }))
        {
            checked = Some(Instant::now());
            if let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
                let found: Vec<i32> = md
                    .topics()
                    .iter()
                    .filter(|t| t.error().is_none())
                    .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                    .collect();
                if found.len() > partitions {
                    let mut tpl = TopicPartitionList::new();
                    for p in &found {
                        // Partitions already read keep their position.
                        let at = match consumer
                            .position()
                            .ok()
                            .and_then(|pos| pos.find_partition(topic, *p).map(|e| e.offset()))
                        {
                            Some(Offset::Offset(o)) => Offset::Offset(o),
                            _ => Offset::Beginning,
                        };
                        let _ = tpl.add_partition_offset(topic, *p, at);
                    }
                    match consumer.assign(&tpl) {
                        Ok(()) => partitions = found.len(),
                        Err(e) => tracing::warn!(topic, error = %e, "cannot read the topic"),
                    }
                }
            }
        }
        if partitions == 0 {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let Some(key) = m.key() else { continue };
                let key = String::from_utf8_lossy(key).into_owned();
                let Some(rows) = rows.upgrade() else { break };
                let mut rows = rows.write().unwrap_or_else(|p| p.into_inner());
                match m.payload() {
                    Some(v) => {
                        rows.insert(key, v.to_vec());
                    }
                    None => {
                        rows.remove(&key);
                    }
                }
            }
            Some(Err(e)) => tracing::debug!(topic, error = %e, "reading the topic"),
            None => {}
        }
    }
}

impl Table {
    /// Records a row written by this process at once, before the reader sees it come back.
    pub fn put(&self, key: String, value: Vec<u8>) {
        self.rows
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, value);
    }
}
