//! The jobs a portal is receiving: their reassembly, their spool, their age and activity,
//! and the limits on how many and how large.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use clustera_send_protocol::{JobId, Reassembly, RequestHead};
use url::Url;

use crate::spool::Spool;

/// A job whose request is still arriving.
pub struct Receiving {
    /// The request head.
    pub head: RequestHead,
    /// Where it goes.
    pub url: Url,
    /// The headers to forward.
    pub headers: Vec<(String, String)>,
    /// Progress of the body.
    pub reassembly: Reassembly,
    /// The body so far.
    pub spool: Spool,
    /// When the head arrived.
    pub started: Instant,
    /// When the last chunk arrived.
    pub last_activity: Instant,
}

/// Jobs recently finished, so late duplicates of their messages are recognised and ignored.
const REMEMBERED: usize = 10_000;

/// Every job of a portal instance.
#[derive(Default)]
pub struct Jobs {
    /// Receiving, by id.
    pub receiving: HashMap<JobId, Receiving>,
    /// Finished (answered), oldest first.
    finished_order: VecDeque<JobId>,
    finished: HashSet<JobId>,
    /// Jobs whose body is complete and whose call is under way: their late duplicate chunks
    /// are ignored.
    pub executing: HashSet<JobId>,
    /// Jobs received or being called.
    pub active: usize,
    /// Body bytes reserved by active jobs.
    pub inflight_bytes: u64,
}

impl Jobs {
    /// Whether `job` was already answered.
    pub fn is_finished(&self, job: &JobId) -> bool {
        self.finished.contains(job)
    }

    /// Whether `job`'s request is complete: answered, or being called.
    pub fn is_received(&self, job: &JobId) -> bool {
        self.finished.contains(job) || self.executing.contains(job)
    }

    /// Marks `job` answered.
    pub fn finish(&mut self, job: JobId) {
        if self.finished.insert(job) {
            self.finished_order.push_back(job);
            if self.finished_order.len() > REMEMBERED {
                if let Some(old) = self.finished_order.pop_front() {
                    self.finished.remove(&old);
                }
            }
        }
    }

    /// Releases an active job's reservation.
    pub fn release(&mut self, bytes: u64) {
        self.active = self.active.saturating_sub(1);
        self.inflight_bytes = self.inflight_bytes.saturating_sub(bytes);
    }
}
