//! A lock-free duration histogram for the per-message path. prometheus-client's `Histogram`
//! takes a lock per observation, and every partition worker of a topic shares one series;
//! here an observation is two relaxed atomic additions. Buckets are powers of two in
//! nanoseconds, from 16 µs to about 137 s, so the bucket index is a leading-zeros count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// log2 of the first bucket's upper bound in nanoseconds (16.384 µs).
const FIRST: u32 = 14;
/// Finite buckets: up to 2^37 ns, about 137 s.
const FINITE: usize = 24;

#[derive(Debug)]
struct Inner {
    /// Non-cumulative counts; the last slot counts observations above every finite bucket.
    buckets: [AtomicU64; FINITE + 1],
    sum_nanos: AtomicU64,
}

/// A histogram of durations, cheap to clone and to observe from many threads.
#[derive(Debug, Clone)]
pub(crate) struct DurationHistogram(Arc<Inner>);

impl Default for DurationHistogram {
    fn default() -> Self {
        Self(Arc::new(Inner {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }))
    }
}

impl DurationHistogram {
    pub(crate) fn observe(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.buckets[bucket_index(nanos)].fetch_add(1, Ordering::Relaxed);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Moves every observation into `target`, leaving this histogram empty.
    pub(crate) fn drain_into(&self, target: &DurationHistogram) {
        for (mine, theirs) in self.0.buckets.iter().zip(&target.0.buckets) {
            let n = mine.swap(0, Ordering::Relaxed);
            if n > 0 {
                theirs.fetch_add(n, Ordering::Relaxed);
            }
        }
        let sum = self.0.sum_nanos.swap(0, Ordering::Relaxed);
        target.0.sum_nanos.fetch_add(sum, Ordering::Relaxed);
    }

    /// Observations so far.
    #[cfg(test)]
    fn count(&self) -> u64 {
        self.0
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }
}

/// The first bucket whose upper bound (2^(FIRST + i) ns) is at least `nanos`.
fn bucket_index(nanos: u64) -> usize {
    if nanos <= 1 << FIRST {
        return 0;
    }
    // ceil(log2(nanos)) for nanos > 1.
    let log2_ceil = 64 - (nanos - 1).leading_zeros();
    usize::try_from(log2_ceil - FIRST)
        .unwrap_or(FINITE)
        .min(FINITE)
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // prometheus-client accumulates the per-bucket counts itself.
        let mut count = 0u64;
        let mut buckets = Vec::with_capacity(FINITE + 1);
        for (i, b) in self.0.buckets.iter().enumerate() {
            let n = b.load(Ordering::Relaxed);
            count += n;
            let bound = if i < FINITE {
                (1u64 << (FIRST as usize + i)) as f64 / 1e9
            } else {
                f64::INFINITY
            };
            buckets.push((bound, n));
        }
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_bounds() {
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(1 << FIRST), 0);
        assert_eq!(bucket_index((1 << FIRST) + 1), 1);
        assert_eq!(bucket_index(1 << (FIRST + 1)), 1);
        assert_eq!(bucket_index(u64::MAX), FINITE);
        let h = DurationHistogram::default();
        h.observe(Duration::from_micros(10));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(1000));
        assert_eq!(h.count(), 3);
        let total = DurationHistogram::default();
        h.drain_into(&total);
        assert_eq!((h.count(), total.count()), (0, 3));
        let h = total;
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("d", "test", h.clone());
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("d_bucket{le=\"0.000016384\"} 1\n"), "{text}");
        assert!(text.contains("d_bucket{le=\"0.004194304\"} 2\n"), "{text}");
        assert!(
            text.contains("d_bucket{le=\"137.438953472\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("d_bucket{le=\"+Inf\"} 3"), "{text}");
        assert!(text.contains("d_count 3"), "{text}");
    }
}
