//! What every partition worker (and every deferred task) shares.

use std::sync::Arc;

use super::fatal::Fatal;
use super::producer::OutputProducer;
use super::retry::RetryPolicy;
use super::stats::RuntimeStats;
use super::transaction::Transactions;
use crate::config::RuntimeSettings;
use crate::telemetry::Telemetry;

/// What every partition worker shares.
pub(crate) struct WorkerDeps<K> {
    pub kernel: Arc<K>,
    pub producer: Arc<OutputProducer>,
    pub settings: Arc<RuntimeSettings>,
    pub retry: RetryPolicy,
    pub group_id: Arc<str>,
    pub kernel_name: Arc<str>,
    pub stats: Arc<RuntimeStats>,
    pub telemetry: Arc<Telemetry>,
    /// Most messages per `process_batch` call; 1 never batches.
    pub batch: usize,
    /// Raised when the process cannot go on.
    pub fatal: Arc<Fatal>,
    /// The memory budget's share for inputs kept while their outputs are in flight, in KiB
    /// permits, and how many permits it holds; `None` without a budget.
    pub retained: Option<(Arc<tokio::sync::Semaphore>, u32)>,
    /// The open transaction, under exactly-once.
    pub transactions: Option<Arc<Transactions>>,
}

impl<K> Clone for WorkerDeps<K> {
    fn clone(&self) -> Self {
        Self {
            kernel: self.kernel.clone(),
            producer: self.producer.clone(),
            settings: self.settings.clone(),
            retry: self.retry,
            group_id: self.group_id.clone(),
            kernel_name: self.kernel_name.clone(),
            stats: self.stats.clone(),
            telemetry: self.telemetry.clone(),
            batch: self.batch,
            fatal: self.fatal.clone(),
            retained: self.retained.clone(),
            transactions: self.transactions.clone(),
        }
    }
}
