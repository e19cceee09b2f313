//! One memory budget for a kernel (`CLUSTERA_MEMORY_BYTES`), divided into the librdkafka limits
//! that bound what the process holds: prefetch, the producer's queue, and the inputs kept while
//! their outputs are in flight. Pure arithmetic, no I/O.
//!
//! librdkafka copies its configuration when a client is created, so the prefetch share cannot
//! follow each assignment. Each assigned partition has its own queue (see `runtime::dispatch`)
//! and librdkafka applies its limits per queue, so the share is computed for the most
//! partitions this consumer can ever be assigned: every partition of its subscribed topics,
//! read from the cluster's metadata at start. A partition may hold its cap plus one fetch
//! response (at most `max.partition.fetch.bytes`, but always at least one message), so each
//! gets half of its slice for each.

/// `CLUSTERA_MEMORY_BYTES`' default: 16 MiB.
pub const DEFAULT_MEMORY_BYTES: u64 = 16 * 1024 * 1024;

/// What librdkafka keeps per queued message beyond its value (operation and message headers,
/// the fetch buffer it pins): small messages are bounded by count, not bytes.
const PER_MESSAGE_OVERHEAD: u64 = 256;

/// The librdkafka limits derived from a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSplit {
    /// `queued.max.messages.kbytes` (librdkafka multiplies it by 1,000).
    pub queued_max_kbytes: u64,
    /// `queued.min.messages`: the count cap per partition queue.
    pub queued_min_messages: u64,
    /// `max.partition.fetch.bytes`.
    pub partition_fetch_bytes: u64,
    /// `queue.buffering.max.kbytes` (librdkafka multiplies it by 1,024).
    pub producer_kbytes: u64,
    /// `queue.buffering.max.messages`.
    pub producer_messages: u64,
    /// Bytes of inputs the runtime keeps while their outputs are in flight (to dead-letter an
    /// input whose output is refused).
    pub retained_input_bytes: u64,
}

/// Splits `budget` bytes: half to prefetch across `partitions` queues, a quarter to the
/// producer's queue (never less than two records of `max_message_bytes`, or a large output
/// could never be queued), a quarter to retained inputs.
pub fn split(budget: u64, partitions: usize, max_message_bytes: u64) -> BudgetSplit {
    let partitions = (partitions.max(1)) as u64;
    let per_partition = budget / 2 / partitions;
    let half = (per_partition / 2).max(1_000);
    let producer = (budget / 4).max(max_message_bytes.saturating_mul(2));
    BudgetSplit {
        queued_max_kbytes: (half / 1_000).max(1),
        queued_min_messages: (half / PER_MESSAGE_OVERHEAD).max(1),
        partition_fetch_bytes: half,
        producer_kbytes: producer.div_ceil(1_024).max(1),
        producer_messages: (producer / PER_MESSAGE_OVERHEAD).max(1),
        retained_input_bytes: budget / 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the limits allow in the worst case: every partition holding its cap and one fetch
    /// response, and the producer's queue full.
    fn worst_case(s: &BudgetSplit, partitions: u64) -> u64 {
        partitions * (s.queued_max_kbytes * 1_000 + s.partition_fetch_bytes)
            + s.producer_kbytes * 1_024
            + s.retained_input_bytes
    }

    #[test]
    fn the_default_budget_holds_whatever_the_partition_count() {
        for partitions in [1u64, 8, 64, 500] {
            let s = split(DEFAULT_MEMORY_BYTES, partitions as usize, 1_000_000);
            assert!(
                worst_case(&s, partitions) <= DEFAULT_MEMORY_BYTES + 2_000 * partitions,
                "{partitions} partitions: {s:?}"
            );
        }
    }

    #[test]
    fn fewer_partitions_get_more_prefetch_each() {
        let eight = split(DEFAULT_MEMORY_BYTES, 8, 1_000_000);
        let many = split(DEFAULT_MEMORY_BYTES, 64, 1_000_000);
        assert!(eight.queued_max_kbytes > many.queued_max_kbytes);
        assert_eq!(eight.queued_max_kbytes, 524);
        assert_eq!(many.queued_max_kbytes, 65);
    }

    #[test]
    fn the_producer_can_always_queue_the_largest_record() {
        let s = split(1_000_000, 4, 5_000_000);
        assert!(s.producer_kbytes * 1_024 >= 10_000_000);
    }

    #[test]
    fn limits_never_reach_zero() {
        let s = split(0, 100_000, 0);
        assert!(s.queued_max_kbytes >= 1 && s.queued_min_messages >= 1);
        assert!(s.producer_kbytes >= 1 && s.producer_messages >= 1);
    }
}
