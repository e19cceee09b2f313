//! The portal: a Clustera kernel on the request topic. It reassembles each job's request
//! (spooling large bodies), validates it, calls the REST API, and sends the response back
//! in chunks on the response topic, keyed by the job id.
//!
//! # Delivery: the runtime owns the job
//!
//! The message carrying a job's request head defers a task ([`clustera::Context::defer`]).
//! The partition's worker goes on with the next messages, among them the job's chunks, which
//! it stores in the jobs table ([`jobs`]); each chunk message is done at once, but offsets
//! commit contiguously, so the head's pending task holds back the commit of every later
//! offset of its partition, the job's chunks included. Once the body is complete the table
//! hands it to the task (a oneshot channel), which calls the API and states the answer (the
//! response head and its body in chunks, or an error envelope) as records of the deferred
//! context. The runtime produces them through its own idempotent producer, and the head's
//! offset commits only once the task has finished and every answer record is acknowledged.
//!
//! So a portal that dies mid-job loses nothing: its successor receives the head and the chunks
//! again, reassembles the job and calls the API again. **Calls are at least once**: every call
//! carries `Idempotency-Key: "<job id>"` (the IETF httpapi draft's header, a structured-field
//! string), the same for every run of the job, so an API can recognise a repeat; a client's own
//! `Idempotency-Key` header is never forwarded (refused in strict mode, dropped otherwise,
//! like credentials). A client may receive two answers for one job and keeps the first.
//!
//! Whatever ends a job ends its task, which answers: a chunk that breaks the protocol, the
//! sweep of jobs idle or too old (`PORTAL_JOB_IDLE_TIMEOUT_SECONDS`,
//! `PORTAL_JOB_MAX_AGE_SECONDS`), the call's timeout. When the partition stops (revocation,
//! shutdown) a task still waiting for chunks gives up without answering, its head uncommitted,
//! and the partition's next owner runs the job; a call under way has the runtime's drain
//! timeout to finish and answer, after which it is cancelled and the job runs again elsewhere.
//!
//! Duplicates: a redelivered head (same topic, partition and offset as the job's head here)
//! replaces the job and runs it again; a head at another offset or partition (a client sending
//! the same job twice) is ignored while the job is here or remembered as finished, and so are
//! chunks of a job this portal has finished. The check and the admission are one step under
//! the table's lock ([`jobs::Jobs::admit`]).
//!
//! # Isolation
//!
//! A message is answered only as the job its Kafka key names (a `job_id` other than the key is
//! refused as the key's job), chunks count only on their head's partition, answers go to the
//! head's `reply_to` topic when `PORTAL_REPLY_TOPICS` allows it, and error answers never carry
//! the API's address or an upstream's body (the log does).
//!
//! # Limits
//!
//! `PORTAL_MAX_CONCURRENT_JOBS` bounds the jobs held (receiving, calling, or sending their
//! answer) and `PORTAL_MAX_INFLIGHT_BYTES` the bytes they hold: request bytes as they arrive,
//! response bytes as they are read, never a size a head declares. Both are shared fairly
//! between client ids ([`jobs`]). A head declaring chunks smaller than
//! `PORTAL_MIN_CHUNK_BYTES` is refused, and one whose first chunk does not come within
//! `PORTAL_FIRST_CHUNK_TIMEOUT_SECONDS` is dropped. Each job also holds one of its
//! partition's `CLUSTERA_MAX_DEFERRED` deferred-task slots until its answer is handed to the
//! runtime. A head that finds its partition's slots all taken is answered `busy` at once
//! rather than deferred: the partition would otherwise wait for a slot while the chunks that
//! would free one queue behind it. Unless `CLUSTERA_MAX_DEFERRED` is set, the portal raises it
//! to `PORTAL_MAX_CONCURRENT_JOBS` so that the portal's own limit is the one that applies.
//!
//! Work: a chunk is decoded, checked, written and hashed in a blocking task, under its job's
//! own lock only; the table's lock is held for bookkeeping, never across file I/O, hashing or
//! an `.await`. The response is hashed and spooled in blocking tasks too, 256 KiB at a time,
//! then streamed from its spool chunk by chunk with `DeferredContext::send_now`: each chunk
//! message is produced at once, waiting for room in the runtime's producer queue (bounded by
//! `CLUSTERA_MEMORY_BYTES`), so a large answer is never held whole. Its records still commit
//! with the job's head, once acknowledged.

mod call;
pub mod jobs;
mod metrics;
mod task;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clustera::{Context, Kernel, KernelError, Message, Outcome, Record};
use clustera_send_protocol::{
    Chunk, Envelope, ErrorCode, ErrorResponse, JobId, Progress, Reassembly, RequestHead,
};
use tokio::sync::oneshot;

use self::jobs::{Admission, Complete, Ended, Incoming, Jobs, Origin, Receiving, State};
pub use self::metrics::PortalMetrics;
use self::task::JobTask;
use crate::config::PortalConfig;
use crate::oauth::TokenSource;
use crate::spool::Spool;
use crate::ssrf::{Guard, GuardedResolver, Resolve, SystemResolver};
use crate::target::Refusal;

/// Why the portal could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    /// Kafka could not be set up.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The HTTP clients could not be built.
    #[error("http client: {0}")]
    Http(String),
    /// The runtime failed.
    #[error(transparent)]
    Runtime(#[from] clustera::RuntimeError),
}

/// What the portal's kernel and its tasks share.
pub struct Shared {
    config: PortalConfig,
    guard: Guard,
    http: reqwest::Client,
    tokens: TokenSource,
    jobs: Arc<Mutex<Jobs>>,
    metrics: PortalMetrics,
    /// Deferred tasks a partition may run at once (`CLUSTERA_MAX_DEFERRED`).
    max_deferred: usize,
}

/// The portal kernel.
pub struct Portal {
    shared: Arc<Shared>,
}

impl Portal {
    /// A portal answering on `config`'s response topic through the producer of the runtime
    /// `kafka` configures, whose partitions run at most `kafka.runtime.max_deferred` deferred
    /// tasks at once (`CLUSTERA_MAX_DEFERRED`). `resolver` resolves host names (the system's
    /// in production).
    pub fn new(
        config: PortalConfig,
        kafka: &clustera::Config,
        resolver: Arc<dyn Resolve>,
    ) -> Result<Self, PortalError> {
        let guard =
            Guard::new(config.api_base_url.clone(), resolver).with_rules(config.path_rules.clone());
        // No redirects (a 3xx goes back to the client as it is), no proxies from the
        // environment, and names resolved only through the guard.
        let roots = match &config.api_ca_pem {
            Some(pem) => reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| PortalError::Http(format!("PORTAL_API_CA_CERT: {e}")))?,
            None => Vec::new(),
        };
        let mut http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver(guard.clone())))
            .connect_timeout(Duration::from_secs(30));
        for root in &roots {
            http = http.add_root_certificate(root.clone());
        }
        let http = http.build().map_err(|e| PortalError::Http(e.to_string()))?;
        let tokens = TokenSource::new(config.oauth.clone(), &roots)
            .map_err(|e| PortalError::Http(e.to_string()))?;
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                guard,
                http,
                tokens,
                jobs: Arc::default(),
                metrics: PortalMetrics::default(),
                max_deferred: kafka.runtime.max_deferred.max(1),
            }),
        })
    }

    /// Runs the portal until `stop` resolves: the kernel on the request topic and the sweep
    /// of stale jobs. The runtime's drain (`CLUSTERA_DRAIN_TIMEOUT_MS`) lets the calls under
    /// way answer; jobs still arriving are left to the next owner of their partition.
    pub async fn run(
        config: PortalConfig,
        mut kafka: clustera::Config,
        stop: impl std::future::Future<Output = ()> + Send,
    ) -> Result<clustera::StatsSnapshot, PortalError> {
        if let Some(ms) = config.max_poll_interval_default {
            kafka
                .properties
                .entry("max.poll.interval.ms".into())
                .or_insert_with(|| clustera::config::Secret::new(ms.to_string()));
        }
        if config.oauth.is_none() {
            tracing::warn!("OAUTH2_TOKEN_URL is not set: REST calls carry no token");
        }
        if !config.policy.strict() {
            tracing::warn!(
                "PORTAL_STRICT_SECURITY is off: forbidden headers are dropped, not refused"
            );
        }
        if std::env::var_os("CLUSTERA_MAX_DEFERRED").is_none() {
            // The portal's own limit applies, not the runtime's default (see the module docs).
            kafka.runtime.max_deferred = kafka.runtime.max_deferred.max(config.max_jobs);
        }
        let portal = Self::new(config, &kafka, Arc::new(SystemResolver))?;
        // Not a job's task: it only ends jobs (their own tasks answer), so stopping it with
        // the runtime loses nothing.
        let sweeper = tokio::spawn(task::sweep(portal.shared.clone()));
        tracing::info!(api = %portal.shared.config.api_base_url, topic = %portal.shared.config.wire.request_topic,
            "portal started");
        let result = clustera::Runtime::new(kafka, portal).run_until(stop).await;
        sweeper.abort();
        Ok(result?)
    }
}

impl Kernel for Portal {
    fn name(&self) -> &str {
        "kafkasend-portal"
    }

    fn default_topics(&self) -> Vec<String> {
        vec![self.shared.config.wire.request_topic.clone()]
    }

    fn register_metrics(&self, registry: &mut clustera::prometheus_client::registry::Registry) {
        self.shared.metrics.register(registry);
    }

    async fn process(&self, msg: &Message, ctx: &mut Context) -> Result<Outcome, KernelError> {
        // The key says which job a message belongs to; the portal answers only that job, so a
        // message cannot make it answer (or refuse) someone else's job.
        let keyed = msg
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.parse::<JobId>().ok());
        let envelope = match Envelope::decode(msg.value().unwrap_or_default()) {
            Ok(e) => e,
            Err(e) => {
                // Answer the job if the key names one; otherwise it is a poison pill.
                let Some(job) = keyed else {
                    return Err(KernelError::permanent(e));
                };
                self.shared
                    .refuse(ctx, None, job, None, e.code(), e.to_string());
                return Ok(Outcome::Ack);
            }
        };
        match keyed {
            Some(job) if job == envelope.job_id() => {}
            Some(job) => {
                let message = format!(
                    "the message's key {job} is not its job_id {}",
                    envelope.job_id()
                );
                tracing::warn!(%job, "{message}");
                self.shared
                    .refuse(ctx, None, job, None, ErrorCode::InvalidRequest, message);
                return Ok(Outcome::Ack);
            }
            None => {
                return Err(KernelError::permanent(
                    "a KafkaSend message whose key is not a job id: it cannot be answered",
                ))
            }
        }
        let origin = Origin {
            topic: msg.topic().to_owned(),
            partition: msg.partition(),
            offset: msg.offset(),
        };
        match envelope {
            Envelope::Request(head) => self.shared.start(ctx, head, origin),
            Envelope::Chunk(chunk) => self.shared.chunk(ctx, chunk, &origin).await,
            Envelope::Response(_) | Envelope::Error(_) => {
                return Ok(Outcome::skip("a response on the request topic"))
            }
        }
        Ok(Outcome::Ack)
    }
}

/// The longest `client_id` accepted.
const MAX_CLIENT_ID: usize = 200;

impl Shared {
    /// Validates a request head, admits its job and defers the job's task.
    fn start(self: &Arc<Self>, ctx: &mut Context, head: RequestHead, origin: Origin) {
        let job_id = head.job_id;
        let reply_topic = match &head.reply_to {
            None => self.config.wire.response_topic.clone(),
            Some(topic) if self.config.reply_topics.is_match(topic) => topic.clone(),
            Some(topic) => {
                let message = format!("reply_to topic {topic:?} is not allowed");
                tracing::warn!(%job_id, "{message}");
                self.refuse(
                    ctx,
                    None,
                    job_id,
                    Some(origin),
                    ErrorCode::InvalidRequest,
                    message,
                );
                return;
            }
        };
        let (generation, ended) = match self.admit(head, &origin) {
            Ok(Some(admitted)) => admitted,
            Ok(None) => return,
            Err((code, message)) => {
                tracing::warn!(%job_id, ?code, %message, "request refused");
                self.refuse(ctx, Some(&reply_topic), job_id, Some(origin), code, message);
                return;
            }
        };
        let task = Arc::new(JobTask::new(
            self.clone(),
            job_id,
            generation,
            origin,
            reply_topic,
            ended,
        ));
        ctx.defer(move |out| {
            let task = task.clone();
            async move { task.run(out).await }
        });
    }

    /// The checks a head must pass before any of its body is accepted, and its admission:
    /// atomically, the duplicate check, its fair share of places, and its partition's task
    /// slot. Nothing is allocated or reserved in proportion to the body it declares. Returns
    /// the job's generation in the table and the channel its task learns the job's end from
    /// (already holding the complete job if it has no body to wait for), or `None` for a
    /// duplicate head (ignored).
    #[allow(clippy::type_complexity)]
    fn admit(
        &self,
        head: RequestHead,
        origin: &Origin,
    ) -> Result<Option<(u64, oneshot::Receiver<Ended>)>, (ErrorCode, String)> {
        let config = &self.config;
        let max_chunk = u32::try_from(config.wire.max_message_bytes).unwrap_or(u32::MAX);
        let reassembly = Reassembly::new(head.body.clone(), max_chunk, config.max_body_bytes)
            .map_err(|e| (e.code(), e.to_string()))?;
        if head.body.total_chunks > 1 && head.body.chunk_size < config.min_chunk_size {
            return Err((
                ErrorCode::InvalidRequest,
                format!(
                    "chunk_size {} is below the portal's minimum of {} bytes",
                    head.body.chunk_size, config.min_chunk_size
                ),
            ));
        }
        let client = head.client_id.clone().unwrap_or_default();
        if client.len() > MAX_CLIENT_ID || client.chars().any(char::is_control) {
            return Err((
                ErrorCode::InvalidRequest,
                format!(
                    "client_id must be at most {MAX_CLIENT_ID} bytes without control characters"
                ),
            ));
        }
        let url = crate::target::target(&self.guard, &config.policy, &head.method, &head.endpoint)
            .map_err(|r| (r.code, r.message))?;
        let filtered = config.policy.filter_headers(&head.headers).map_err(|v| {
            let r = Refusal::from(v);
            (r.code, r.message)
        })?;
        if !filtered.dropped.is_empty() {
            tracing::warn!(job_id = %head.job_id, dropped = ?filtered.dropped, "forbidden headers dropped (permissive mode)");
        }
        // Grows as chunks arrive: nothing is set aside for the declared size.
        let spool = Spool::for_size(head.body.size, &config.spool).map_err(|e| {
            tracing::error!(job_id = %head.job_id, error = %e, "cannot create a spool");
            (
                ErrorCode::Internal,
                "the portal could not store the body".to_owned(),
            )
        })?;
        let job_id = head.job_id;
        tracing::info!(%job_id, %client, method = %head.method, url = %url,
            bytes = head.body.size, chunks = head.body.total_chunks, "job received");
        let (tell, ended) = oneshot::channel();
        let complete = reassembly.is_complete();
        let now = Instant::now();
        let (method, bytes, chunks) = (head.method.clone(), head.body.size, head.body.total_chunks);
        let mut pending = Some((head, url, filtered.forward, reassembly, spool, tell));
        let mut jobs = self.lock();
        if jobs.tasks(&origin.topic, origin.partition) >= self.max_deferred
            && jobs.get(&job_id).is_none_or(|j| j.origin != *origin)
        {
            return Err((
                ErrorCode::Busy,
                format!(
                    "partition {} already has its maximum of {} jobs under way \
                     (CLUSTERA_MAX_DEFERRED)",
                    origin.partition, self.max_deferred
                ),
            ));
        }
        let admission = jobs.admit(job_id, origin, &client, config.max_jobs, || {
            let Some((head, url, headers, reassembly, spool, tell)) = pending.take() else {
                return State::Calling;
            };
            if complete {
                let _ = tell.send(Ended::Complete(Box::new(Complete {
                    head,
                    url,
                    headers,
                    spool,
                })));
                return State::Calling;
            }
            State::Receiving(
                Box::new(Receiving {
                    head,
                    url,
                    headers,
                    body: Arc::new(tokio::sync::Mutex::new(Incoming { reassembly, spool })),
                    received: 0,
                    started: now,
                    last_activity: now,
                }),
                tell,
            )
        });
        let (generation, evicted, replaced) = match admission {
            Admission::Admitted(generation, evicted, replaced) => (generation, evicted, replaced),
            Admission::Duplicate => {
                tracing::debug!(%job_id, offset = origin.offset, "duplicate request head ignored");
                return Ok(None);
            }
            Admission::Busy(message) => return Err((ErrorCode::Busy, message)),
        };
        jobs.count_task(&origin.topic, origin.partition, true);
        self.metrics.occupancy(jobs.active(), jobs.inflight_bytes());
        drop(jobs);
        tracing::info!(%job_id, %method, bytes, chunks, generation, "job admitted");
        if replaced.is_some() {
            tracing::info!(%job_id, offset = origin.offset, "request head redelivered; running the job again");
        }
        // The replaced admission's task learns it was taken over (its channel closes).
        drop(replaced);
        self.end_evicted(evicted);
        Ok(Some((generation, ended)))
    }

    /// Tells the tasks of jobs taken out of the table to make room that they are `busy`
    /// (outside the table's lock; their spools are dropped here too).
    fn end_evicted(&self, evicted: Vec<jobs::Job>) {
        for job in evicted {
            if let State::Receiving(receiving, tell) = job.state {
                let job_id = receiving.head.job_id;
                let message = format!(
                    "the portal is full and client {:?} holds more than its share; send the job again later",
                    job.client
                );
                tracing::warn!(%job_id, client = %job.client, "job evicted to make room for another client");
                drop(receiving);
                let _ = tell.send(Ended::Failed(ErrorCode::Busy, message));
            }
        }
    }

    /// Stores a chunk in its job: decoded, checked, written and hashed off the async threads,
    /// with only the job's own lock held meanwhile; its bytes are counted against the limits
    /// before they are written. The last chunk hands the complete job to its task; one that
    /// breaks the protocol, or that the limits have no room for, ends the job (its task
    /// answers why).
    async fn chunk(&self, ctx: &mut Context, chunk: Chunk, origin: &Origin) {
        let job_id = chunk.job_id;
        let (generation, body) = {
            let mut jobs = self.lock();
            let Some(job) = jobs.get_mut(&job_id) else {
                if jobs.finished(&job_id).is_some() {
                    return; // a late chunk of a job answered or refused here
                }
                drop(jobs);
                let message = "a chunk for a job whose request head this portal never received; \
                               send the job again";
                tracing::warn!(%job_id, sequence = chunk.sequence, "{message}");
                self.refuse(
                    ctx,
                    None,
                    job_id,
                    None,
                    ErrorCode::Incomplete,
                    message.to_owned(),
                );
                return;
            };
            if (job.origin.topic.as_str(), job.origin.partition)
                != (origin.topic.as_str(), origin.partition)
            {
                tracing::warn!(%job_id, partition = origin.partition, head_partition = job.origin.partition,
                    "a chunk on another partition than its head's; ignored");
                return;
            }
            let State::Receiving(receiving, _) = &mut job.state else {
                return; // the body is complete: a duplicate chunk
            };
            receiving.last_activity = Instant::now();
            (job.generation, receiving.body.clone())
        };
        let guard = body.lock_owned().await;
        let shared = self.shared_limits();
        let stored =
            tokio::task::spawn_blocking(move || store(guard, &chunk, &shared, job_id, generation))
                .await
                .unwrap_or_else(|e| {
                    tracing::error!(%job_id, error = %e, "storing a chunk panicked");
                    Stored::Failed(
                        ErrorCode::Internal,
                        "the portal could not store the body".into(),
                    )
                });
        let stored = match stored {
            Stored::Accepted { received, evicted } => {
                self.end_evicted(evicted);
                Stored::Accepted {
                    received,
                    evicted: Vec::new(),
                }
            }
            other => other,
        };
        let removed = {
            let mut jobs = self.lock();
            let Some(job) = jobs.generation_mut(&job_id, generation) else {
                return; // ended meanwhile (swept, evicted, replaced): its task has answered
            };
            match stored {
                Stored::Accepted { received, .. } => {
                    if let State::Receiving(r, _) = &mut job.state {
                        r.received = received;
                    }
                    return;
                }
                Stored::Duplicate => return,
                Stored::Complete(spool) => {
                    let State::Receiving(receiving, tell) =
                        std::mem::replace(&mut job.state, State::Calling)
                    else {
                        return;
                    };
                    drop(jobs);
                    let receiving = *receiving;
                    let complete = Complete {
                        head: receiving.head,
                        url: receiving.url,
                        headers: receiving.headers,
                        spool,
                    };
                    // The task may be gone (its partition stopped): then so is the job.
                    let _ = tell.send(Ended::Complete(Box::new(complete)));
                    return;
                }
                Stored::Failed(code, message) => {
                    tracing::warn!(%job_id, ?code, %message, "job failed while receiving");
                    let origin = job.origin.clone();
                    let removed = jobs.remove(&job_id, None);
                    jobs.finish(job_id, Some(origin));
                    self.metrics.occupancy(jobs.active(), jobs.inflight_bytes());
                    removed.map(|r| (r, code, message))
                }
            }
        };
        if let Some((
            jobs::Job {
                state: State::Receiving(_, tell),
                ..
            },
            code,
            message,
        )) = removed
        {
            let _ = tell.send(Ended::Failed(code, message));
        }
    }

    /// What the blocking part of storing a chunk needs of the portal.
    fn shared_limits(&self) -> Limits {
        Limits {
            jobs: self.jobs.clone(),
            max_bytes: self.config.max_inflight_bytes,
            metrics: self.metrics.clone(),
        }
    }

    /// Answers `job_id` with an error now, with this message's effects, on `topic` (the
    /// response topic by default), and remembers it as finished so its later chunks are
    /// ignored.
    fn refuse(
        &self,
        ctx: &mut Context,
        topic: Option<&str>,
        job_id: JobId,
        origin: Option<Origin>,
        code: ErrorCode,
        message: String,
    ) {
        self.lock().finish(job_id, origin);
        let topic = topic.unwrap_or(&self.config.wire.response_topic);
        ctx.send(self.error_record(topic, job_id, code, message));
    }

    /// A record of `job_id`'s answer on `topic`.
    fn answer_record(&self, topic: &str, job_id: JobId, payload: Vec<u8>) -> Record {
        Record::to(topic).key(job_id.key()).value(payload)
    }

    /// The error envelope answering `job_id` on `topic`.
    fn error_record(&self, topic: &str, job_id: JobId, code: ErrorCode, message: String) -> Record {
        let error = Envelope::Error(ErrorResponse {
            job_id,
            code,
            message,
        });
        self.answer_record(topic, job_id, error.encode())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Jobs> {
        lock(&self.jobs)
    }

    /// Counts `n` more bytes (a response's) for a job under way; `Err` with the message to
    /// answer `busy` with when the limits have no room.
    fn reserve(&self, job_id: JobId, generation: u64, n: u64) -> Result<(), String> {
        let mut jobs = self.lock();
        let result = jobs.reserve(&job_id, generation, n, self.config.max_inflight_bytes);
        self.metrics.occupancy(jobs.active(), jobs.inflight_bytes());
        drop(jobs);
        match result {
            Ok(evicted) => {
                self.end_evicted(evicted);
                Ok(())
            }
            Err(message) => Err(message.unwrap_or_else(|| "the job has ended".to_owned())),
        }
    }

    /// Gives back `n` bytes of a job under way.
    fn release(&self, job_id: JobId, generation: u64, n: u64) {
        let mut jobs = self.lock();
        jobs.release(&job_id, generation, n);
        self.metrics.occupancy(jobs.active(), jobs.inflight_bytes());
    }
}

fn lock(jobs: &Mutex<Jobs>) -> std::sync::MutexGuard<'_, Jobs> {
    // A panic while holding the lock leaves the table consistent enough to go on with.
    jobs.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The table and the byte limit, for the blocking part of storing a chunk.
struct Limits {
    jobs: Arc<Mutex<Jobs>>,
    max_bytes: u64,
    metrics: PortalMetrics,
}

/// What storing a chunk did.
enum Stored {
    /// Stored; the body is not complete yet. Jobs evicted to make room for its bytes.
    Accepted {
        /// Distinct chunks so far.
        received: u32,
        /// Jobs to answer `busy`.
        evicted: Vec<jobs::Job>,
    },
    /// A chunk already stored.
    Duplicate,
    /// The last chunk: the whole body, checked against its SHA-256.
    Complete(Spool),
    /// The job ends with this error.
    Failed(ErrorCode, String),
}

/// Decodes, checks, counts and stores one chunk: run off the async threads, holding only the
/// job's own lock (the table's is taken briefly to count the bytes).
fn store(
    mut incoming: tokio::sync::OwnedMutexGuard<Incoming>,
    chunk: &Chunk,
    limits: &Limits,
    job_id: JobId,
    generation: u64,
) -> Stored {
    let data = match chunk.bytes() {
        Ok(d) => d,
        Err(e) => return Stored::Failed(e.code(), e.to_string()),
    };
    let n = data.len() as u64;
    let reserved = {
        let mut jobs = lock(&limits.jobs);
        let r = jobs.reserve(&job_id, generation, n, limits.max_bytes);
        limits
            .metrics
            .occupancy(jobs.active(), jobs.inflight_bytes());
        r
    };
    let evicted = match reserved {
        Ok(evicted) => evicted,
        Err(None) => return Stored::Duplicate, // the job has ended meanwhile
        Err(Some(message)) => return Stored::Failed(ErrorCode::Busy, message),
    };
    let Incoming { reassembly, spool } = &mut *incoming;
    let result = reassembly.accept(chunk, &data, spool);
    let release = || {
        let mut jobs = lock(&limits.jobs);
        jobs.release(&job_id, generation, n);
        limits
            .metrics
            .occupancy(jobs.active(), jobs.inflight_bytes());
    };
    match result {
        Ok(Progress::Accepted { received, .. }) => Stored::Accepted { received, evicted },
        Ok(Progress::Duplicate) => {
            release();
            Stored::Duplicate
        }
        Ok(Progress::Complete) => {
            let spool = std::mem::replace(spool, Spool::Memory(Vec::new()));
            Stored::Complete(spool)
        }
        Err(clustera_send_protocol::ReassemblyError::Protocol(p)) => {
            Stored::Failed(p.code(), p.to_string())
        }
        Err(clustera_send_protocol::ReassemblyError::Sink(io)) => {
            tracing::error!(%job_id, error = %io, "cannot write to a spool");
            Stored::Failed(
                ErrorCode::Internal,
                "the portal could not store the body".to_owned(),
            )
        }
    }
}
