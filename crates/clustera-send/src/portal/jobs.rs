//! The jobs a portal holds: where their head came from, who sent them, the bytes they hold,
//! and whether their request is still arriving; the limits on how many and how much, shared
//! fairly between clients.
//!
//! Each job in the table has a task deferred by its head message (see the module docs of
//! [`super`]); the table hands the task the job's end (its complete request, or why it failed)
//! through a oneshot channel.
//!
//! The table is behind one `std::sync::Mutex`, held only for bookkeeping: never across file
//! I/O, hashing or an `.await`. A job's body (its reassembly and spool) is behind a lock of its
//! own ([`Incoming`]), which only that job's chunks take, off the async threads.
//!
//! # Fair sharing
//!
//! Job places (`PORTAL_MAX_CONCURRENT_JOBS`) and bytes (`PORTAL_MAX_INFLIGHT_BYTES`) are
//! shared between the clients holding jobs (by the heads' `client_id`; version 1 heads are one
//! anonymous client). Nothing is refused while there is room. When there is none, a client
//! holding less than its share (the limit divided by the clients holding jobs, itself
//! included) takes room from the client furthest over its share: that client's newest job
//! still receiving its request is ended and answered `busy`. A client at or over its share is
//! answered `busy` itself. Jobs already calling the API are never evicted.
//!
//! Bytes are counted as they arrive (request chunks, response pieces), never as a head
//! declares them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use clustera_send_protocol::{ErrorCode, JobId, Reassembly, RequestHead};
use tokio::sync::oneshot;
use url::Url;

use crate::spool::Spool;

/// A job's body while it arrives: behind its own lock, taken only by the job's chunks (off
/// the async threads), never while the table's lock is held.
pub struct Incoming {
    /// Progress of the body.
    pub reassembly: Reassembly,
    /// The body so far.
    pub spool: Spool,
}

/// A complete request, handed to its task.
pub struct Complete {
    /// The request head.
    pub head: RequestHead,
    /// Where it goes.
    pub url: Url,
    /// The headers to forward.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub spool: Spool,
}

/// A job whose request is still arriving.
pub struct Receiving {
    /// The request head.
    pub head: RequestHead,
    /// Where it goes.
    pub url: Url,
    /// The headers to forward.
    pub headers: Vec<(String, String)>,
    /// The body so far.
    pub body: Arc<tokio::sync::Mutex<Incoming>>,
    /// Distinct chunks stored so far.
    pub received: u32,
    /// When the head arrived.
    pub started: Instant,
    /// When the last chunk arrived.
    pub last_activity: Instant,
}

/// How a job's request ended, as its task learns it.
pub enum Ended {
    /// The request is complete: call the API.
    Complete(Box<Complete>),
    /// The request failed while arriving (a bad chunk, swept as stale, evicted): answer this
    /// error.
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
    /// Complete and handed to its task, which calls the API and sends the answer.
    Calling,
}

/// One job in the table.
pub struct Job {
    /// Tells this admission of the job from a later one (after a redelivery).
    pub generation: u64,
    /// Where its head came from.
    pub origin: Origin,
    /// Who sent it.
    pub client: String,
    /// Body bytes it holds (request chunks received, response read and not yet sent).
    pub bytes: u64,
    /// What it is doing.
    pub state: State,
}

/// Jobs recently finished, so late duplicates of their messages are recognised.
const REMEMBERED: usize = 10_000;

/// Places and bytes a client holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    /// Jobs in the table.
    pub jobs: usize,
    /// Bytes of those jobs.
    pub bytes: u64,
}

/// Every job of a portal instance.
#[derive(Default)]
pub struct Jobs {
    /// Jobs receiving or calling, by id.
    jobs: HashMap<JobId, Job>,
    /// Finished jobs (answered, or refused) with their head's origin if known, oldest first.
    finished: HashMap<JobId, Option<Origin>>,
    finished_order: VecDeque<JobId>,
    /// Deferred tasks alive per request partition (topic, partition).
    tasks: HashMap<(String, i32), usize>,
    /// What each client holding jobs holds.
    clients: HashMap<String, Holding>,
    /// Body bytes held by the jobs in the table.
    inflight_bytes: u64,
    next_generation: u64,
}

/// What a head's admission found.
pub enum Admission {
    /// Admitted as this generation; jobs evicted to make room (to answer `busy`, outside the
    /// lock); and the earlier admission of the same job that a redelivered head replaced (to
    /// drop outside the lock, unanswered: the new admission runs the job).
    Admitted(u64, Vec<Job>, Option<Job>),
    /// Another head of a job here or finished here: ignored.
    Duplicate,
    /// No room for this client.
    Busy(String),
}

impl Jobs {
    /// Jobs in the table.
    pub fn active(&self) -> usize {
        self.jobs.len()
    }

    /// Body bytes the jobs in the table hold.
    pub fn inflight_bytes(&self) -> u64 {
        self.inflight_bytes
    }

    /// What `client` holds.
    pub fn holding(&self, client: &str) -> Holding {
        self.clients.get(client).copied().unwrap_or_default()
    }

    /// The job, if it is in the table.
    pub fn get(&self, job: &JobId) -> Option<&Job> {
        self.jobs.get(job)
    }

    /// The job, if it is in the table, to change.
    pub fn get_mut(&mut self, job: &JobId) -> Option<&mut Job> {
        self.jobs.get_mut(job)
    }

    /// The job as admitted in `generation`, if it is still in the table.
    pub fn generation_mut(&mut self, job: &JobId, generation: u64) -> Option<&mut Job> {
        self.jobs
            .get_mut(job)
            .filter(|j| j.generation == generation)
    }

    /// Admits a job atomically: the duplicate check, the fair share of places and the
    /// insertion happen under one lock. A head with the same origin as the job here (a
    /// redelivery) replaces it; a head with another origin, of a job here or finished here, is
    /// a duplicate.
    pub fn admit(
        &mut self,
        id: JobId,
        origin: &Origin,
        client: &str,
        max_jobs: usize,
        state: impl FnOnce() -> State,
    ) -> Admission {
        let here = self.jobs.get(&id).map(|j| &j.origin);
        let finished = self.finished.get(&id).and_then(Option::as_ref);
        let redelivered = match here.or(finished) {
            Some(first) if first != origin => return Admission::Duplicate,
            Some(_) => here.is_some(),
            None => false,
        };
        let mut evicted = Vec::new();
        let active = self.jobs.len() - usize::from(redelivered);
        if active >= max_jobs {
            let share = self.share_of(client, max_jobs as u64);
            let held = self.holding(client).jobs as u64;
            if held >= share {
                return Admission::Busy(format!(
                    "the portal holds its maximum of {max_jobs} jobs and client {client:?} \
                     holds {held}, its share"
                ));
            }
            match self.evict(client, max_jobs as u64, |h| h.jobs as u64) {
                Some(job) => evicted.push(job),
                None => {
                    return Admission::Busy(format!(
                        "the portal holds its maximum of {max_jobs} jobs, all under way"
                    ))
                }
            }
        }
        self.next_generation += 1;
        let generation = self.next_generation;
        let replaced = self.remove(&id, None);
        self.finished.remove(&id);
        self.clients.entry(client.to_owned()).or_default().jobs += 1;
        self.jobs.insert(
            id,
            Job {
                generation,
                origin: origin.clone(),
                client: client.to_owned(),
                bytes: 0,
                state: state(),
            },
        );
        Admission::Admitted(generation, evicted, replaced)
    }

    /// Counts `n` more bytes for the job admitted as `generation`, within the portal's limit
    /// shared fairly (see the module docs). `Ok` carries the jobs evicted to make room (to
    /// answer `busy` outside the lock); `Err` says why the job cannot hold them (or `None`
    /// if the job is no longer here).
    pub fn reserve(
        &mut self,
        id: &JobId,
        generation: u64,
        n: u64,
        max_bytes: u64,
    ) -> Result<Vec<Job>, Option<String>> {
        let client = match self.jobs.get(id) {
            Some(j) if j.generation == generation => j.client.clone(),
            _ => return Err(None),
        };
        let mut evicted = Vec::new();
        while self.inflight_bytes + n > max_bytes {
            let share = self.share_of(&client, max_bytes);
            let held = self.holding(&client).bytes;
            if held + n > share {
                self.restore(evicted);
                return Err(Some(format!(
                    "the portal holds {} body bytes of at most {max_bytes}, and client \
                     {client:?} holds {held}: {n} more would pass its share",
                    self.inflight_bytes
                )));
            }
            match self.evict(&client, max_bytes, |h| h.bytes) {
                Some(job) => evicted.push(job),
                None => {
                    self.restore(evicted);
                    return Err(Some(format!(
                        "the portal holds {} body bytes of at most {max_bytes}; {n} more do \
                         not fit",
                        self.inflight_bytes
                    )));
                }
            }
        }
        self.add_bytes(id, n as i64);
        Ok(evicted)
    }

    /// Gives back `n` bytes of a job (a duplicate chunk, a request body no longer needed).
    pub fn release(&mut self, id: &JobId, generation: u64, n: u64) {
        if self
            .jobs
            .get(id)
            .is_some_and(|j| j.generation == generation)
        {
            let n = n.min(self.jobs.get(id).map_or(0, |j| j.bytes));
            self.add_bytes(id, -(n as i64));
        }
    }

    fn add_bytes(&mut self, id: &JobId, delta: i64) {
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        job.bytes = job.bytes.saturating_add_signed(delta);
        self.inflight_bytes = self.inflight_bytes.saturating_add_signed(delta);
        if let Some(h) = self.clients.get_mut(&job.client) {
            h.bytes = h.bytes.saturating_add_signed(delta);
        }
    }

    /// Evicted jobs put back when the room they made was not enough after all.
    fn restore(&mut self, evicted: Vec<Job>) {
        for job in evicted {
            // An evicted job is always Receiving, admitted earlier; put it back as it was.
            let id = match &job.state {
                State::Receiving(r, _) => r.head.job_id,
                State::Calling => continue,
            };
            let h = self.clients.entry(job.client.clone()).or_default();
            h.jobs += 1;
            h.bytes += job.bytes;
            self.inflight_bytes += job.bytes;
            self.finished.remove(&id);
            self.jobs.insert(id, job);
        }
    }

    /// `limit` divided between the clients holding jobs, `client` included.
    fn share_of(&self, client: &str, limit: u64) -> u64 {
        let mut clients = self.clients.len() as u64;
        if !self.clients.contains_key(client) {
            clients += 1;
        }
        (limit / clients.max(1)).max(1)
    }

    /// Takes out the newest job still receiving of the client furthest over its share of
    /// `limit` by `measure` (not `client` itself), and marks it finished.
    fn evict(
        &mut self,
        client: &str,
        limit: u64,
        measure: impl Fn(&Holding) -> u64,
    ) -> Option<Job> {
        let share = self.share_of(client, limit);
        let mut over: Vec<(&String, u64)> = self
            .clients
            .iter()
            .filter(|(c, h)| c.as_str() != client && measure(h) > share)
            .map(|(c, h)| (c, measure(h)))
            .collect();
        over.sort_by_key(|o| std::cmp::Reverse(o.1));
        for (victim, _) in over {
            let newest = self
                .jobs
                .iter()
                .filter(|(_, j)| &j.client == victim && matches!(j.state, State::Receiving(..)))
                .max_by_key(|(_, j)| j.generation)
                .map(|(id, _)| *id);
            if let Some(id) = newest {
                let job = self.remove(&id, None)?;
                self.finish(id, Some(job.origin.clone()));
                return Some(job);
            }
        }
        None
    }

    /// Removes a job, releasing its place and bytes: any admission of it, or only
    /// `generation`.
    pub fn remove(&mut self, id: &JobId, generation: Option<u64>) -> Option<Job> {
        if generation.is_some_and(|g| self.jobs.get(id).is_some_and(|j| j.generation != g)) {
            return None;
        }
        let job = self.jobs.remove(id)?;
        self.inflight_bytes = self.inflight_bytes.saturating_sub(job.bytes);
        if let Some(h) = self.clients.get_mut(&job.client) {
            h.jobs = h.jobs.saturating_sub(1);
            h.bytes = h.bytes.saturating_sub(job.bytes);
            if h.jobs == 0 {
                self.clients.remove(&job.client);
            }
        }
        Some(job)
    }

    /// The jobs still receiving.
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

    fn admitted(a: Admission) -> (u64, Vec<Job>) {
        match a {
            Admission::Admitted(g, mut e, replaced) => {
                e.extend(replaced);
                (g, e)
            }
            Admission::Duplicate => panic!("duplicate"),
            Admission::Busy(m) => panic!("busy: {m}"),
        }
    }

    fn receiving() -> State {
        let (tell, _) = oneshot::channel();
        let head = RequestHead {
            job_id: JobId::new(),
            method: "GET".into(),
            endpoint: "/x".into(),
            headers: vec![],
            body: clustera_send_protocol::BodyInfo::of(b"", 10),
            sent_at_ms: 0,
            client_id: None,
            reply_to: None,
        };
        let reassembly = Reassembly::new(head.body.clone(), 10, 10).unwrap();
        State::Receiving(
            Box::new(Receiving {
                head,
                url: Url::parse("http://x/").unwrap(),
                headers: vec![],
                body: Arc::new(tokio::sync::Mutex::new(Incoming {
                    reassembly,
                    spool: Spool::Memory(Vec::new()),
                })),
                received: 0,
                started: Instant::now(),
                last_activity: Instant::now(),
            }),
            tell,
        )
    }

    #[test]
    fn a_stale_generation_removes_nothing_and_bytes_follow_the_table() {
        let mut jobs = Jobs::default();
        let id = JobId::new();
        let (first, _) = admitted(jobs.admit(id, &origin(1), "a", 10, || State::Calling));
        jobs.reserve(&id, first, 100, 1000).unwrap();
        // A redelivered head replaces the job: the old bytes are released.
        let (second, replaced) = admitted(jobs.admit(id, &origin(1), "a", 10, || State::Calling));
        assert_eq!(replaced.len(), 1);
        jobs.reserve(&id, second, 40, 1000).unwrap();
        assert_eq!((jobs.active(), jobs.inflight_bytes()), (1, 40));
        assert!(jobs.remove(&id, Some(first)).is_none());
        assert_eq!(jobs.active(), 1);
        assert!(jobs.remove(&id, Some(second)).is_some());
        assert_eq!((jobs.active(), jobs.inflight_bytes()), (0, 0));
        assert_eq!(jobs.holding("a"), Holding::default());
    }

    #[test]
    fn duplicates_are_found_under_the_lock_and_finishing_is_remembered() {
        let mut jobs = Jobs::default();
        let id = JobId::new();
        admitted(jobs.admit(id, &origin(7), "a", 10, || State::Calling));
        assert!(matches!(
            jobs.admit(id, &origin(8), "a", 10, || State::Calling),
            Admission::Duplicate
        ));
        jobs.remove(&id, None);
        jobs.finish(id, Some(origin(7)));
        assert!(matches!(
            jobs.admit(id, &origin(9), "a", 10, || State::Calling),
            Admission::Duplicate
        ));
        admitted(jobs.admit(id, &origin(7), "a", 10, || State::Calling));
        assert!(jobs.finished(&id).is_none());
        jobs.count_task("t", 0, true);
        jobs.count_task("t", 0, true);
        jobs.count_task("t", 0, false);
        assert_eq!((jobs.tasks("t", 0), jobs.tasks("t", 1)), (1, 0));
    }

    #[test]
    fn a_client_under_its_share_takes_room_from_one_over_it() {
        let mut jobs = Jobs::default();
        let flood: Vec<JobId> = (0..4).map(|_| JobId::new()).collect();
        for (i, id) in flood.iter().enumerate() {
            admitted(jobs.admit(*id, &origin(i as i64), "flooder", 4, receiving));
        }
        // Alone, the flooder's share is everything: its fifth job is busy.
        assert!(matches!(
            jobs.admit(JobId::new(), &origin(9), "flooder", 4, receiving),
            Admission::Busy(_)
        ));
        // Another client gets a place: the flooder's newest receiving job is evicted.
        let (_, evicted) =
            admitted(jobs.admit(JobId::new(), &origin(10), "other", 4, || State::Calling));
        assert_eq!(evicted.len(), 1);
        assert_eq!(evicted[0].client, "flooder");
        assert!(jobs.finished(&flood[3]).is_some());
        assert_eq!(jobs.holding("flooder").jobs, 3);
        // Shares are now 2 each: the flooder, over its share, is busy.
        assert!(matches!(
            jobs.admit(JobId::new(), &origin(11), "flooder", 4, receiving),
            Admission::Busy(_)
        ));
    }

    #[test]
    fn bytes_are_counted_as_they_arrive_and_shared() {
        let mut jobs = Jobs::default();
        let (a, b) = (JobId::new(), JobId::new());
        let (ga, _) = admitted(jobs.admit(a, &origin(1), "a", 10, receiving));
        assert_eq!(
            jobs.inflight_bytes(),
            0,
            "nothing reserved for a declared size"
        );
        jobs.reserve(&a, ga, 900, 1000).unwrap();
        assert!(jobs.reserve(&a, ga, 200, 1000).err().flatten().is_some());
        let (gb, _) = admitted(jobs.admit(b, &origin(2), "b", 10, || State::Calling));
        // b is under its share (500): a, over it, loses its receiving job.
        let evicted = jobs.reserve(&b, gb, 300, 1000).unwrap();
        assert_eq!(evicted.len(), 1);
        assert_eq!((jobs.inflight_bytes(), jobs.holding("a").bytes), (300, 0));
        jobs.release(&b, gb, 300);
        assert_eq!(jobs.inflight_bytes(), 0);
    }
}
