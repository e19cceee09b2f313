//! The jobs a portal holds: their reassembly, their spool, their age and activity, where their
//! head came from, and the limits on how many and how large.
//!
//! Each job in the table has a task deferred by its head message (see the module docs of
//! [`super`]); the table hands the task the job's end (its complete request, or why it failed)
//! through a oneshot channel.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use clustera_send_protocol::{ErrorCode, JobId, Reassembly, RequestHead};
use tokio::sync::oneshot;
use url::Url;

use crate::spool::Spool;

/// A job whose request is still arriving, or complete and handed to its task.
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

/// How a job's request ended, as its task learns it.
pub enum Ended {
    /// The request is complete: call the API.
    Complete(Box<Receiving>),
    /// The request failed while arriving (a bad chunk, swept as stale): answer this error.
    Failed(ErrorCode, String),
}

/// The message a job's head came in: a redelivery of it has the same origin, a client's
/// duplicate head a different one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The request topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// The head's offset.
    pub offset: i64,
}

/// What a job in the table is doing.
pub enum State {
    /// Its body is arriving; the sender tells the task how the request ended.
    Receiving(Box<Receiving>, oneshot::Sender<Ended>),
    /// Complete and handed to its task, which calls the API.
    Calling,
}

/// One job in the table.
pub struct Job {
    /// Tells this admission of the job from a later one (after a redelivery).
    pub generation: u64,
    /// Where its head came from.
    pub origin: Origin,
    /// The body bytes it reserved.
    pub bytes: u64,
    /// What it is doing.
    pub state: State,
}

/// Jobs recently finished, so late duplicates of their messages are recognised.
const REMEMBERED: usize = 10_000;

/// Every job of a portal instance. Each job in `jobs` holds one place of `max_jobs` and its
/// body's bytes of `max_inflight_bytes`, released when it leaves the table.
#[derive(Default)]
pub struct Jobs {
    /// Jobs receiving or calling, by id.
    jobs: HashMap<JobId, Job>,
    /// Finished jobs (answered, or refused) with their head's origin if known, oldest first.
    finished: HashMap<JobId, Option<Origin>>,
    finished_order: VecDeque<JobId>,
    /// Deferred tasks alive per request partition (topic, partition).
    tasks: HashMap<(String, i32), usize>,
    /// Body bytes reserved by the jobs in the table.
    inflight_bytes: u64,
    next_generation: u64,
}

impl Jobs {
    /// Jobs in the table.
    pub fn active(&self) -> usize {
        self.jobs.len()
    }

    /// Body bytes the jobs in the table reserved.
    pub fn inflight_bytes(&self) -> u64 {
        self.inflight_bytes
    }

    /// The job, if it is in the table.
    pub fn get(&self, job: &JobId) -> Option<&Job> {
        self.jobs.get(job)
    }

    /// The job, if it is in the table, to change.
    pub fn get_mut(&mut self, job: &JobId) -> Option<&mut Job> {
        self.jobs.get_mut(job)
    }

    /// Adds a job (replacing any with the same id, which is returned) and reserves its bytes.
    pub fn insert(&mut self, id: JobId, origin: Origin, bytes: u64, state: State) -> u64 {
        self.next_generation += 1;
        let generation = self.next_generation;
        self.remove(&id, None);
        self.finished.remove(&id);
        self.inflight_bytes += bytes;
        self.jobs.insert(
            id,
            Job {
                generation,
                origin,
                bytes,
                state,
            },
        );
        generation
    }

    /// Removes a job, releasing its reservation: any admission of it, or only `generation`.
    pub fn remove(&mut self, id: &JobId, generation: Option<u64>) -> Option<Job> {
        if generation.is_some_and(|g| self.jobs.get(id).is_some_and(|j| j.generation != g)) {
            return None;
        }
        let job = self.jobs.remove(id)?;
        self.inflight_bytes = self.inflight_bytes.saturating_sub(job.bytes);
        Some(job)
    }

    /// Ids of the jobs still receiving.
    pub fn receiving(&self) -> impl Iterator<Item = (&JobId, &Receiving)> {
        self.jobs.iter().filter_map(|(id, j)| match &j.state {
            State::Receiving(r, _) => Some((id, r.as_ref())),
            State::Calling => None,
        })
    }

    /// Whether `job` was finished here, and from which head.
    pub fn finished(&self, job: &JobId) -> Option<&Option<Origin>> {
        self.finished.get(job)
    }

    /// Marks `job` finished (answered or refused); its late duplicate chunks are ignored.
    pub fn finish(&mut self, job: JobId, origin: Option<Origin>) {
        if self.finished.insert(job, origin).is_none() {
            self.finished_order.push_back(job);
            while self.finished_order.len() > REMEMBERED {
                if let Some(old) = self.finished_order.pop_front() {
                    self.finished.remove(&old);
                }
            }
        }
    }

    /// Deferred tasks alive for a partition.
    pub fn tasks(&self, topic: &str, partition: i32) -> usize {
        self.tasks
            .get(&(topic.to_owned(), partition))
            .copied()
            .unwrap_or(0)
    }

    /// Counts a deferred task of a partition in (`true`) or out.
    pub fn count_task(&mut self, topic: &str, partition: i32, alive: bool) {
        let key = (topic.to_owned(), partition);
        let n = self.tasks.entry(key.clone()).or_insert(0);
        if alive {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.tasks.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(offset: i64) -> Origin {
        Origin {
            topic: "t".into(),
            partition: 0,
            offset,
        }
    }

    #[test]
    fn a_stale_generation_removes_nothing_and_reservations_follow_the_table() {
        let mut jobs = Jobs::default();
        let id = JobId::new();
        let first = jobs.insert(id, origin(1), 100, State::Calling);
        // A redelivered head replaces the job: the old reservation is released.
        let second = jobs.insert(id, origin(1), 40, State::Calling);
        assert_eq!((jobs.active(), jobs.inflight_bytes()), (1, 40));
        assert!(jobs.remove(&id, Some(first)).is_none());
        assert_eq!(jobs.active(), 1);
        assert!(jobs.remove(&id, Some(second)).is_some());
        assert_eq!((jobs.active(), jobs.inflight_bytes()), (0, 0));
    }

    #[test]
    fn finishing_is_remembered_and_a_new_admission_forgets_it() {
        let mut jobs = Jobs::default();
        let id = JobId::new();
        jobs.finish(id, Some(origin(7)));
        assert_eq!(jobs.finished(&id), Some(&Some(origin(7))));
        jobs.insert(id, origin(7), 0, State::Calling);
        assert!(jobs.finished(&id).is_none());
        jobs.count_task("t", 0, true);
        jobs.count_task("t", 0, true);
        jobs.count_task("t", 0, false);
        assert_eq!((jobs.tasks("t", 0), jobs.tasks("t", 1)), (1, 0));
    }
}
