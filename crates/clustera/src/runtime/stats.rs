//! Counters of what the runtime did, readable while it runs.

use std::sync::atomic::{AtomicU64, Ordering};

/// Running totals since start. Cheap to read at any time through [`crate::Runtime::stats`].
#[derive(Debug, Default)]
pub struct RuntimeStats {
    pub(crate) acked: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) outputs_sent: AtomicU64,
    pub(crate) outputs_acked: AtomicU64,
    pub(crate) produce_failures: AtomicU64,
    pub(crate) outputs_refused: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) commit_failures: AtomicU64,
    pub(crate) partitions_assigned: AtomicU64,
    pub(crate) aborts: AtomicU64,
}

/// A copy of [`RuntimeStats`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Messages whose outcome was `Ack`.
    pub acked: u64,
    /// Messages skipped.
    pub skipped: u64,
    /// Messages sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Attempts that ended in a retry.
    pub retries: u64,
    /// Records handed to the producer (outputs and dead letters, resends included).
    pub outputs_sent: u64,
    /// Records the broker acknowledged.
    pub outputs_acked: u64,
    /// Deliveries that failed (then sent again, dead-lettered in their input's place, or fatal).
    pub produce_failures: u64,
    /// Outputs the broker refused for good; each dead-lettered its input.
    pub outputs_refused: u64,
    /// Offset commits made (asynchronous ones counted when the request is queued).
    pub commits: u64,
    /// Offset commits that failed: a commit call that returned an error, or an asynchronous
    /// commit whose result (as a whole or for one partition) was an error. Either way every
    /// position is sent again with the next commit.
    pub commit_failures: u64,
    /// Partitions assigned to this consumer, counted at every assignment.
    pub partitions_assigned: u64,
    /// Under exactly-once, transactions aborted (each rewound every partition to its last
    /// commit, so the messages since were processed again and counted again above).
    pub aborts: u64,
}

impl StatsSnapshot {
    /// Messages whose outcome is final, whatever it was.
    pub fn processed(&self) -> u64 {
        self.acked + self.skipped + self.dead_lettered
    }
}

impl RuntimeStats {
    pub(crate) fn bump(counter: &AtomicU64) {
        crate::infra::bump(counter);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            acked: r(&self.acked),
            skipped: r(&self.skipped),
            dead_lettered: r(&self.dead_lettered),
            retries: r(&self.retries),
            outputs_sent: r(&self.outputs_sent),
            outputs_acked: r(&self.outputs_acked),
            produce_failures: r(&self.produce_failures),
            outputs_refused: r(&self.outputs_refused),
            commits: r(&self.commits),
            commit_failures: r(&self.commit_failures),
            partitions_assigned: r(&self.partitions_assigned),
            aborts: r(&self.aborts),
        }
    }
}
