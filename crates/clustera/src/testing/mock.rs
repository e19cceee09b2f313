//! librdkafka's in-process mock cluster: a real Kafka protocol peer with consumer groups and
//! fault injection. Each partition keeps only about 5 MB.

use rdkafka::error::KafkaResult;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

/// A mock Kafka cluster listening on loopback for as long as this value lives.
pub struct MockBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
    bootstrap: String,
}

impl MockBroker {
    /// Starts a cluster of `brokers` brokers on random loopback ports.
    pub fn start(brokers: i32) -> KafkaResult<Self> {
        let cluster = MockCluster::new(brokers)?;
        let bootstrap = cluster.bootstrap_servers();
        Ok(Self { cluster, bootstrap })
    }

    /// The `bootstrap.servers` list.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Creates a topic (replication factor 1).
    pub fn create_topic(&self, name: &str, partitions: i32) -> KafkaResult<()> {
        self.cluster.create_topic(name, partitions, 1)
    }

    /// The cluster, for fault injection (`broker_down`, `request_errors`, …).
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.cluster
    }
}
