//! Prometheus metrics (OpenMetrics text). Names carry the `clustera_` prefix and every series
//! a `kernel` label; other labels are bounded: topic, partition, outcome, error kind. Handles
//! for a partition's series are resolved once per assignment, so the per-message path only
//! touches atomics.

use std::borrow::Cow;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use super::histogram::DurationHistogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicOutcome {
    topic: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabel {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabel {
    topic: String,
    partition: i64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabel {
    kind: String,
}

/// From 100 µs to about 100 s: commits are rare, so the locking histogram is fine.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 21))
}

/// Every metric of one kernel.
#[derive(Debug)]
pub struct KernelMetrics {
    registry: Registry,
    messages: Family<TopicOutcome, Counter>,
    retries: Family<TopicLabel, Counter>,
    dead_letters: Family<TopicLabel, Counter>,
    errors: Family<ErrorLabel, Counter>,
    processing: Family<TopicLabel, DurationHistogram>,
    end_to_end: Family<TopicLabel, DurationHistogram>,
    commit: Histogram,
    lag: Family<PartitionLabel, Gauge>,
    uncommitted: Family<PartitionLabel, Gauge>,
    oldest_unfinished: Family<PartitionLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub(crate) assigned: Gauge,
    pub(crate) paused: Gauge,
    pub(crate) in_flight: Gauge,
    pub(crate) producer_queue: Gauge,
}

/// One partition's series, resolved once per assignment.
#[derive(Debug, Clone)]
pub(crate) struct PartitionMetrics {
    pub acked: Counter,
    pub skipped: Counter,
    pub dead_lettered: Counter,
    pub dead_letters: Counter,
    pub retries: Counter,
    pub processing: DurationHistogram,
    pub end_to_end: DurationHistogram,
}

impl KernelMetrics {
    /// The registry (prefix `clustera_`, label `kernel`), for a kernel's own metrics.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Registers every metric for kernel `kernel`.
    pub fn new(kernel: &str) -> Self {
        let labels = [(Cow::Borrowed("kernel"), Cow::Owned(kernel.to_owned()))];
        let mut registry = Registry::with_prefix_and_labels("clustera", labels.into_iter());
        let messages = Family::default();
        registry.register(
            "messages",
            "Messages whose outcome is final, by topic and outcome (ack, skip, dead_letter)",
            messages.clone(),
        );
        let retries = Family::default();
        registry.register("retries", "Attempts that ended in a retry", retries.clone());
        let dead_letters = Family::default();
        registry.register(
            "dead_letters",
            "Records sent to a dead-letter topic, by input topic",
            dead_letters.clone(),
        );
        let errors = Family::default();
        registry.register(
            "errors",
            "Errors by kind: transient, permanent, panic (kernel); produce, commit (runtime)",
            errors.clone(),
        );
        let processing: Family<TopicLabel, DurationHistogram> = Family::default();
        registry.register_with_unit(
            "processing_duration",
            "Time from the first attempt to the final outcome of a message",
            Unit::Seconds,
            processing.clone(),
        );
        let end_to_end: Family<TopicLabel, DurationHistogram> = Family::default();
        registry.register_with_unit(
            "end_to_end_latency",
            "Time from the message's timestamp to its final outcome",
            Unit::Seconds,
            end_to_end.clone(),
        );
        let commit = duration_histogram();
        registry.register_with_unit(
            "commit_duration",
            "Time taken by offset commit calls",
            Unit::Seconds,
            commit.clone(),
        );
        let lag = Family::default();
        registry.register(
            "consumer_lag",
            "Messages behind the high watermark, per assigned partition (librdkafka statistics)",
            lag.clone(),
        );
        let uncommitted = Family::default();
        registry.register(
            "uncommitted_messages",
            "Messages taken from a partition and not yet committable: in process, waiting for \
             their key or their outputs' acknowledgements, or done behind one that is not",
            uncommitted.clone(),
        );
        let oldest_unfinished =
            Family::<PartitionLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register_with_unit(
            "oldest_unfinished_age",
            "How long the partition's commit position has waited for its first unfinished \
             message (0 when nothing is unfinished)",
            Unit::Seconds,
            oldest_unfinished.clone(),
        );
        let assigned = Gauge::default();
        registry.register(
            "assigned_partitions",
            "Partitions assigned to this consumer",
            assigned.clone(),
        );
        let paused = Gauge::default();
        registry.register(
            "paused_partitions",
            "Partitions held by a retry: not read until the retried message is done",
            paused.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_messages",
            "Messages being processed now",
            in_flight.clone(),
        );
        let producer_queue = Gauge::default();
        registry.register(
            "producer_queue_depth",
            "Records handed to the producer and not yet acknowledged",
            producer_queue.clone(),
        );
        Self {
            registry,
            messages,
            retries,
            dead_letters,
            errors,
            processing,
            end_to_end,
            commit,
            lag,
            uncommitted,
            oldest_unfinished,
            assigned,
            paused,
            in_flight,
            producer_queue,
        }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub(crate) fn partition(&self, topic: &str) -> PartitionMetrics {
        let outcome = |o: &str| {
            self.messages
                .get_or_create(&TopicOutcome {
                    topic: topic.to_owned(),
                    outcome: o.to_owned(),
                })
                .clone()
        };
        let t = TopicLabel {
            topic: topic.to_owned(),
        };
        PartitionMetrics {
            acked: outcome("ack"),
            skipped: outcome("skip"),
            dead_lettered: outcome("dead_letter"),
            dead_letters: self.dead_letters.get_or_create(&t).clone(),
            retries: self.retries.get_or_create(&t).clone(),
            processing: self.processing.get_or_create(&t).clone(),
            end_to_end: self.end_to_end.get_or_create(&t).clone(),
        }
    }

    pub(crate) fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&ErrorLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub(crate) fn observe_commit(&self, seconds: f64) {
        self.commit.observe(seconds);
    }

    pub(crate) fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.lag
            .get_or_create(&PartitionLabel {
                topic: topic.to_owned(),
                partition: i64::from(partition),
            })
            .set(lag);
    }

    /// A partition's uncommitted messages and how long its first unfinished one has held
    /// the commit back.
    pub(crate) fn set_progress(
        &self,
        topic: &str,
        partition: i32,
        uncommitted: usize,
        oldest_age_seconds: f64,
    ) {
        let label = PartitionLabel {
            topic: topic.to_owned(),
            partition: i64::from(partition),
        };
        self.uncommitted
            .get_or_create(&label)
            .set(i64::try_from(uncommitted).unwrap_or(i64::MAX));
        self.oldest_unfinished
            .get_or_create(&label)
            .set(oldest_age_seconds);
    }

    pub(crate) fn forget_partition(&self, topic: &str, partition: i32) {
        let label = PartitionLabel {
            topic: topic.to_owned(),
            partition: i64::from(partition),
        };
        self.uncommitted.remove(&label);
        self.oldest_unfinished.remove(&label);
        self.lag.remove(&label);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every family, with one series each, as a scrape of a busy kernel shows them.
    fn exported_families() -> BTreeSet<String> {
        let m = KernelMetrics::new("k");
        let p = m.partition("t");
        p.acked.inc();
        p.processing.observe(std::time::Duration::from_millis(1));
        p.end_to_end.observe(std::time::Duration::from_millis(1));
        m.error("transient");
        m.set_lag("t", 0, 3);
        crate::testing::exposed_families(&m.encode())
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        let families = exported_families();
        assert!(
            families.iter().all(|f| f.starts_with("clustera_")),
            "{families:?}"
        );
        for expected in [
            "clustera_messages",
            "clustera_consumer_lag",
            "clustera_processing_duration_seconds",
        ] {
            assert!(families.contains(expected), "{expected} in {families:?}");
        }
        let text = KernelMetrics::new("k").encode();
        assert!(!text.contains("offset="), "no offsets as labels");
    }

    #[test]
    fn dashboard_and_alerts_query_exported_metrics() {
        // The relay's and the portal's metrics are checked by their own crates.
        use crate::testing::QuerySource;
        let families = exported_families();
        let mut checked = 0;
        let queries = crate::testing::deployed_queries();
        assert!(
            queries.iter().any(|(s, _)| *s == QuerySource::Alert),
            "alert rules read"
        );
        for (source, expr) in queries {
            let names = crate::testing::queried_families(&expr, "clustera_");
            assert!(!names.is_empty(), "{expr} queries no clustera metric");
            // A panel's rates follow Grafana's interval (at least four scrapes), never a
            // fixed window that shows nothing when zoomed out or is noisy when zoomed in.
            if source == QuerySource::Dashboard && expr.contains("rate(") {
                assert!(expr.contains("[$__rate_interval]"), "{expr}");
            }
            for family in names {
                if family.starts_with("clustera_relay_")
                    || family.starts_with("clustera_kafkasend_")
                {
                    continue;
                }
                assert!(
                    families.contains(&family),
                    "{family} (in {expr}) is not exported: {families:?}"
                );
                checked += 1;
            }
        }
        assert!(
            checked >= 14,
            "the dashboard and alerts cover the metrics ({checked} references)"
        );
    }
}
