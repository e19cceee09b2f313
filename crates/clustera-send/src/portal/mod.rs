//! The portal: a Clustera kernel on the request topic. It reassembles each job's request
//! (spooling large bodies), validates it, calls the REST API, and sends the response back
//! in chunks on the response topic, keyed by the job id.
//!
//! Delivery: a request message is acknowledged (and its offset committed) once it is stored
//! in the job; the REST call runs in its own task so one long call does not hold back the
//! other jobs of its partition. A portal that dies mid-job therefore loses that job: its
//! remaining chunks reach a portal that has no head for them and answers an error, or the
//! client times out. The call is never made twice, since REST calls are not idempotent in
//! general.

mod call;
mod jobs;
mod metrics;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clustera::{Context, Kernel, KernelError, Message, Outcome};
use clustera_send_protocol::{
    BodyInfo, Chunk, Envelope, ErrorCode, ErrorResponse, JobId, Progress, Reassembly, RequestHead,
    ResponseHead,
};

use self::jobs::{Jobs, Receiving};
pub use self::metrics::PortalMetrics;
use crate::config::PortalConfig;
use crate::oauth::TokenSource;
use crate::spool::Spool;
use crate::ssrf::{Guard, GuardedResolver, Resolve, SystemResolver};
use crate::transport::JobProducer;

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
    replies: JobProducer,
    jobs: Mutex<Jobs>,
    metrics: PortalMetrics,
}

/// The portal kernel.
pub struct Portal {
    shared: Arc<Shared>,
}

impl Portal {
    /// A portal answering on `config`'s response topic through a producer made from `kafka`.
    /// `resolver` resolves host names (the system's in production).
    pub fn new(
        config: PortalConfig,
        kafka: &clustera::Config,
        resolver: Arc<dyn Resolve>,
    ) -> Result<Self, PortalError> {
        let guard = Guard::new(config.api_base_url.clone(), resolver);
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
        let replies = JobProducer::new(kafka, &config.wire.response_topic)?;
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                guard,
                http,
                tokens,
                replies,
                jobs: Mutex::new(Jobs::default()),
                metrics: PortalMetrics::default(),
            }),
        })
    }

    /// Runs the portal until `stop` resolves: the kernel on the request topic and the sweep
    /// of stale jobs.
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
        let portal = Self::new(config, &kafka, Arc::new(SystemResolver))?;
        let sweeper = tokio::spawn(sweep(portal.shared.clone()));
        tracing::info!(api = %portal.shared.config.api_base_url, topic = %portal.shared.config.wire.request_topic,
            "portal started");
        let shared = portal.shared.clone();
        let drain = kafka.runtime.drain_timeout;
        let result = clustera::Runtime::new(kafka, portal).run_until(stop).await;
        sweeper.abort();
        shared.shut_down(drain).await;
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

    async fn process(&self, msg: &Message, _ctx: &mut Context) -> Result<Outcome, KernelError> {
        let envelope = match Envelope::decode(msg.value().unwrap_or_default()) {
            Ok(e) => e,
            Err(e) => {
                // Answer the job if the key names one; otherwise it is a poison pill.
                let job = msg
                    .key()
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .and_then(|k| k.parse::<JobId>().ok());
                let Some(job) = job else {
                    return Err(KernelError::permanent(e));
                };
                self.shared.fail(job, e.code(), e.to_string()).await;
                return Ok(Outcome::Ack);
            }
        };
        match envelope {
            Envelope::Request(head) => self.shared.start(head).await,
            Envelope::Chunk(chunk) => self.shared.chunk(chunk).await,
            Envelope::Response(_) | Envelope::Error(_) => {
                return Ok(Outcome::skip("a response on the request topic"))
            }
        }
        Ok(Outcome::Ack)
    }
}

impl Shared {
    /// Validates a request head and starts receiving its body.
    async fn start(self: &Arc<Self>, head: RequestHead) {
        let job_id = head.job_id;
        {
            let jobs = self.lock();
            if jobs.receiving.contains_key(&job_id) || jobs.is_received(&job_id) {
                tracing::debug!(%job_id, "duplicate request head ignored");
                return;
            }
        }
        let receiving = match self.admit(head) {
            Ok(r) => r,
            Err((code, message)) => {
                tracing::warn!(%job_id, ?code, %message, "request refused");
                self.fail(job_id, code, message).await;
                return;
            }
        };
        tracing::info!(%job_id, method = %receiving.head.method, url = %receiving.url,
            bytes = receiving.head.body.size, chunks = receiving.head.body.total_chunks, "job started");
        if receiving.reassembly.is_complete() {
            self.execute(receiving);
        } else {
            self.lock().receiving.insert(job_id, receiving);
        }
    }

    /// The checks a head must pass before any of its body is accepted, and the reservation
    /// of its place and bytes.
    fn admit(&self, head: RequestHead) -> Result<Receiving, (ErrorCode, String)> {
        let config = &self.config;
        let max_chunk = u32::try_from(config.wire.max_message_bytes).unwrap_or(u32::MAX);
        let reassembly = Reassembly::new(head.body.clone(), max_chunk, config.max_body_bytes)
            .map_err(|e| (e.code(), e.to_string()))?;
        let url = self
            .guard
            .endpoint_url(&head.endpoint)
            .map_err(|e| (ErrorCode::SsrfBlocked, e.to_string()))?;
        config
            .policy
            .check_target(&head.method, self.guard.relative_path(&url))
            .map_err(|e| {
                let code = match e {
                    crate::policy::Violation::Method(_) => ErrorCode::InvalidRequest,
                    _ => ErrorCode::ForbiddenEndpoint,
                };
                (code, e.to_string())
            })?;
        let filtered = config
            .policy
            .filter_headers(&head.headers)
            .map_err(|e| (ErrorCode::ForbiddenHeader, e.to_string()))?;
        if !filtered.dropped.is_empty() {
            tracing::warn!(job_id = %head.job_id, dropped = ?filtered.dropped, "forbidden headers dropped (permissive mode)");
        }
        let spool = Spool::for_size(head.body.size, &config.spool)
            .map_err(|e| (ErrorCode::Internal, format!("spool: {e}")))?;
        let mut jobs = self.lock();
        if jobs.active >= config.max_jobs {
            return Err((
                ErrorCode::Busy,
                format!(
                    "the portal is handling its maximum of {} jobs",
                    config.max_jobs
                ),
            ));
        }
        if jobs.inflight_bytes + head.body.size > config.max_inflight_bytes {
            return Err((
                ErrorCode::Busy,
                format!(
                    "the portal holds {} body bytes; {} more would pass its limit of {}",
                    jobs.inflight_bytes, head.body.size, config.max_inflight_bytes
                ),
            ));
        }
        jobs.active += 1;
        jobs.inflight_bytes += head.body.size;
        self.metrics.occupancy(jobs.active, jobs.inflight_bytes);
        let now = Instant::now();
        Ok(Receiving {
            head,
            url,
            headers: filtered.forward,
            reassembly,
            spool,
            started: now,
            last_activity: now,
        })
    }

    /// Stores a chunk; the last one starts the call.
    async fn chunk(self: &Arc<Self>, chunk: Chunk) {
        let job_id = chunk.job_id;
        // Decoding and checking the chunk is the costly part: done before taking the lock.
        let data = chunk.bytes();
        let outcome = self.store_chunk(&chunk, data);
        match outcome {
            Ok(Some(complete)) => self.execute(complete),
            Ok(None) => {}
            Err((code, message)) => {
                tracing::warn!(%job_id, ?code, %message, "job failed while receiving");
                self.fail(job_id, code, message).await;
            }
        }
    }

    /// Stores a decoded chunk in its job: the complete job if it was the last, or why the job
    /// failed. Synchronous, so the table's lock is never held across an await.
    fn store_chunk(
        &self,
        chunk: &Chunk,
        data: Result<Vec<u8>, clustera_send_protocol::ProtocolError>,
    ) -> Result<Option<Receiving>, (ErrorCode, String)> {
        let job_id = chunk.job_id;
        let mut jobs = self.lock();
        if jobs.is_received(&job_id) {
            return Ok(None);
        }
        let Some(job) = jobs.receiving.get_mut(&job_id) else {
            return Err((
                ErrorCode::Incomplete,
                "a chunk for a job whose request head this portal never received (it may have \
                 restarted mid-job); send the job again"
                    .to_owned(),
            ));
        };
        job.last_activity = Instant::now();
        let result = data
            .map_err(|e| (e.code(), e.to_string()))
            .and_then(|data| {
                job.reassembly
                    .accept(chunk, &data, &mut job.spool)
                    .map_err(|e| match e {
                        clustera_send_protocol::ReassemblyError::Protocol(p) => {
                            (p.code(), p.to_string())
                        }
                        clustera_send_protocol::ReassemblyError::Sink(io) => {
                            (ErrorCode::Internal, format!("spool: {io}"))
                        }
                    })
            });
        match result {
            Ok(Progress::Complete) => {
                jobs.executing.insert(job_id);
                Ok(jobs.receiving.remove(&job_id))
            }
            Ok(_) => Ok(None),
            Err(e) => {
                if let Some(job) = jobs.receiving.remove(&job_id) {
                    jobs.release(job.head.body.size);
                    self.metrics.occupancy(jobs.active, jobs.inflight_bytes);
                }
                Err(e)
            }
        }
    }

    /// Calls the API for a complete job in its own task and answers it.
    fn execute(self: &Arc<Self>, job: Receiving) {
        self.lock().executing.insert(job.head.job_id);
        let shared = self.clone();
        tokio::spawn(async move {
            let job_id = job.head.job_id;
            let started = Instant::now();
            let answer =
                tokio::time::timeout(shared.config.job_timeout, call::call(&shared, &job)).await;
            // The call is over: its place and its bytes are free before the answer goes out,
            // so a client that sends its next job on receiving it finds room.
            {
                let mut jobs = shared.lock();
                jobs.release(job.head.body.size);
                shared.metrics.occupancy(jobs.active, jobs.inflight_bytes);
            }
            shared
                .metrics
                .calls
                .observe(started.elapsed().as_secs_f64());
            shared.metrics.moved("request", job.head.body.size);
            drop(job);
            match answer {
                Ok(Ok(answer)) => {
                    tracing::info!(%job_id, status = answer.status, bytes = answer.body.len(),
                        elapsed_ms = started.elapsed().as_millis() as u64, "API answered");
                    let bytes = answer.body.len();
                    match shared.respond(job_id, answer).await {
                        Ok(()) => {
                            shared.metrics.answered("ok");
                            shared.metrics.moved("response", bytes);
                        }
                        Err(e) => {
                            shared.metrics.answered("unsent");
                            tracing::error!(%job_id, error = %e, "sending the response failed");
                        }
                    }
                }
                Ok(Err(f)) => {
                    tracing::warn!(%job_id, code = ?f.code, message = %f.message, "call failed");
                    shared.fail(job_id, f.code, f.message).await;
                }
                Err(_) => {
                    let message = format!(
                        "the API did not answer within {} s",
                        shared.config.job_timeout.as_secs()
                    );
                    tracing::warn!(%job_id, %message, "call timed out");
                    shared.fail(job_id, ErrorCode::Timeout, message).await;
                }
            }
            let mut jobs = shared.lock();
            jobs.executing.remove(&job_id);
            jobs.finish(job_id);
        });
    }

    /// Sends the response head and its body in chunks.
    async fn respond(
        &self,
        job_id: JobId,
        answer: call::Answer,
    ) -> Result<(), crate::transport::SendError> {
        let info = BodyInfo::hashed(
            answer.body.len(),
            &answer.sha256,
            self.config.wire.chunk_size,
        );
        let head = Envelope::Response(ResponseHead {
            job_id,
            status: answer.status,
            headers: answer.headers,
            body: info.clone(),
        })
        .encode();
        self.replies
            .send_with_body(job_id, &head, &info, &answer.body, &|_| {})
            .await
    }

    /// Answers `job_id` with an error and forgets it.
    async fn fail(&self, job_id: JobId, code: ErrorCode, message: String) {
        {
            let mut jobs = self.lock();
            if jobs.is_finished(&job_id) {
                return;
            }
            jobs.finish(job_id);
        }
        let error = Envelope::Error(ErrorResponse {
            job_id,
            code,
            message,
        })
        .encode();
        if let Err(e) = self.replies.send(job_id, &error).await {
            tracing::error!(%job_id, error = %e, "sending the error response failed");
        }
    }

    /// At shutdown: answers the jobs still arriving (their clients can send them again), and
    /// waits up to `limit` for the calls under way to be answered.
    async fn shut_down(&self, limit: Duration) {
        let arriving: Vec<JobId> = self.lock().receiving.drain().map(|(id, _)| id).collect();
        for id in arriving {
            self.fail(
                id,
                ErrorCode::Incomplete,
                "the portal stopped before the request was complete; send the job again".into(),
            )
            .await;
        }
        let deadline = Instant::now() + limit;
        loop {
            let calling = self.lock().executing.len();
            if calling == 0 {
                return;
            }
            if Instant::now() > deadline {
                tracing::warn!(
                    calling,
                    "stopping with calls under way; their clients will time out"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Jobs> {
        // A panic while holding the lock leaves the table consistent enough to go on with.
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Every second: jobs idle too long (missing chunks) or too old are dropped and answered.
async fn sweep(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = Instant::now();
        let stale: Vec<(JobId, ErrorCode, String)> = {
            let mut jobs = shared.lock();
            let expired: Vec<JobId> = jobs
                .receiving
                .iter()
                .filter(|(_, j)| {
                    now - j.started > shared.config.job_max_age
                        || now - j.last_activity > shared.config.job_idle_timeout
                })
                .map(|(id, _)| *id)
                .collect();
            expired
                .into_iter()
                .filter_map(|id| {
                    let job = jobs.receiving.remove(&id)?;
                    jobs.release(job.head.body.size);
                    shared.metrics.occupancy(jobs.active, jobs.inflight_bytes);
                    let total = job.reassembly.body().total_chunks;
                    let received = job.reassembly.received();
                    Some(if now - job.started > shared.config.job_max_age {
                        (
                            id,
                            ErrorCode::Expired,
                            format!(
                            "the job is older than {} s with {received} of {total} chunks received",
                            shared.config.job_max_age.as_secs()
                        ),
                        )
                    } else {
                        (
                            id,
                            ErrorCode::Incomplete,
                            format!(
                            "no chunk for {} s: {received} of {total} chunks received, {} missing",
                            shared.config.job_idle_timeout.as_secs(),
                            total - received
                        ),
                        )
                    })
                })
                .collect()
        };
        for (id, code, message) in stale {
            tracing::warn!(job_id = %id, ?code, %message, "job swept");
            shared.fail(id, code, message).await;
        }
    }
}
