//! The client: sends jobs to portals and waits for their responses. One client may have many
//! jobs in flight; responses are matched to them by job id.
//!
//! The client reads every partition of the response topic from the positions it had when the
//! client connected (no consumer group, nothing committed), so each client sees all
//! responses and keeps those of its own jobs.
//!
//! **The first answer wins.** A portal that restarts mid-job runs the job again, so a job may
//! be answered twice. An answer is a response head with its chunks, or an error. The client
//! returns the first complete answer; a new response head (or an error) arriving while a
//! response is still incomplete replaces it (that response was cut off: its portal died while
//! sending it). Answers arriving for a job already answered are ignored, logged at debug
//! level and counted ([`Client::duplicate_answers`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clustera_send_protocol::{
    BodyInfo, Envelope, ErrorCode, JobId, Progress as Reassembled, Reassembly, ReassemblyError,
    RequestHead,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message as _, Offset, TopicPartitionList};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::config::Wire;
use crate::spool::{Spool, SpoolConfig};
use crate::transport::{JobProducer, ReadAt, SendError};

/// What to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// HTTP method.
    pub method: String,
    /// Path (and query) under the portal's API.
    pub endpoint: String,
    /// Headers to ask for (the portal filters them).
    pub headers: Vec<(String, String)>,
}

/// The request's body.
#[derive(Debug)]
pub enum Body {
    /// No body.
    Empty,
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// A file, read twice (once to hash it, once to send it) and never held in memory.
    File(PathBuf),
}

/// The API's response.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// The body, checked against its SHA-256.
    pub body: Spool,
}

/// Why a job failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Kafka failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The body could not be read or stored.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The portal answered with an error.
    #[error("the portal refused the job ({code:?}): {message}")]
    Portal {
        /// The error's code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// No complete answer within the timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The response broke the protocol.
    #[error("the response is unusable: {0}")]
    Protocol(String),
}

impl From<SendError> for ClientError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Kafka(k) => Self::Kafka(k),
            SendError::Io(io) => Self::Io(io),
        }
    }
}

/// Progress reports while a job runs.
pub trait Progress: Send + Sync {
    /// Request body bytes acknowledged by Kafka, of `total`.
    fn uploaded(&self, _sent: u64, _total: u64) {}
    /// Response body bytes received, of `total`.
    fn downloaded(&self, _received: u64, _total: u64) {}
}

/// No progress reports.
pub struct Quiet;

impl Progress for Quiet {}

/// Jobs waiting for their answer, and those answered lately.
#[derive(Default)]
struct Jobs {
    pending: HashMap<JobId, mpsc::Sender<Envelope>>,
    answered: HashSet<JobId>,
    answered_order: VecDeque<JobId>,
}

/// Answered jobs remembered, to recognise their later answers.
const REMEMBERED: usize = 10_000;

impl Jobs {
    /// Moves `job` from pending to answered.
    fn answered(&mut self, job: JobId) {
        self.pending.remove(&job);
        if self.answered.insert(job) {
            self.answered_order.push_back(job);
            while self.answered_order.len() > REMEMBERED {
                if let Some(old) = self.answered_order.pop_front() {
                    self.answered.remove(&old);
                }
            }
        }
    }
}

type Pending = Arc<Mutex<Jobs>>;

/// Whether a response message starts an answer (a response head or an error).
fn is_answer(envelope: &Envelope) -> bool {
    matches!(envelope, Envelope::Response(_) | Envelope::Error(_))
}

/// A response whose head has arrived and whose body is arriving.
struct Incoming {
    status: u16,
    headers: Vec<(String, String)>,
    reassembly: Reassembly,
    spool: Spool,
}

/// Sends jobs and receives their responses.
pub struct Client {
    requests: JobProducer,
    wire: Wire,
    pending: Pending,
    /// Answers ignored because their job was already answered.
    duplicates: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
    spool: SpoolConfig,
    /// The largest response body accepted.
    max_body: u64,
    /// Who this client is to portals (their fair sharing).
    client_id: String,
}

/// The client id unless one is given: the host name (or `anonymous` if it cannot be read).
pub fn default_client_id() -> String {
    whoami::hostname().unwrap_or_else(|_| "anonymous".to_owned())
}

impl Client {
    /// Connects with `kafka`'s settings (brokers, security). Blocks while it looks up the
    /// response topic's current ends: call it from a blocking context or at start-up.
    pub fn connect(kafka: &clustera::Config, wire: Wire) -> Result<Self, ClientError> {
        let mut consumer_config = kafka.common_client_config();
        consumer_config
            .set("group.id", format!("kafkasend-client-{}", JobId::new()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        // Brokers that do not answer a waiting fetch when data arrives (tansu, librdkafka's
        // mock cluster) would otherwise add up to 500 ms per response message. A client
        // waits for few responses, so the extra idle fetches cost little.
        if let Some(wait) = kafka.properties.get("fetch.wait.max.ms") {
            consumer_config.set("fetch.wait.max.ms", wait.expose());
        } else {
            consumer_config.set("fetch.wait.max.ms", "10");
        }
        let consumer: BaseConsumer = consumer_config.create()?;
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(&wire.response_topic), timeout)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(ClientError::Protocol(format!(
                "the response topic {} does not exist",
                wire.response_topic
            )));
        }
        // Explicit positions, not "the end": a response produced before the first fetch
        // would be skipped by a lazily resolved end offset.
        let mut assignment = TopicPartitionList::new();
        for p in partitions {
            let (_, high) = consumer.fetch_watermarks(&wire.response_topic, p, timeout)?;
            assignment.add_partition_offset(&wire.response_topic, p, Offset::Offset(high))?;
        }
        consumer.assign(&assignment)?;
        let pending: Pending = Arc::default();
        let duplicates = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (pending, duplicates, stop) = (pending.clone(), duplicates.clone(), stop.clone());
            std::thread::Builder::new()
                .name("kafkasend-responses".into())
                .spawn(move || read_responses(&consumer, &pending, &duplicates, &stop))?
        };
        Ok(Self {
            requests: JobProducer::new(kafka, &wire.request_topic)?,
            wire,
            pending,
            duplicates,
            stop,
            reader: Some(reader),
            spool: SpoolConfig::default(),
            max_body: 64 << 30,
            client_id: default_client_id(),
        })
    }

    /// The same client, named `client_id` to portals (`clustera send --client-id`). Portals
    /// share their job slots and bytes fairly between client ids.
    #[must_use]
    pub fn with_client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = client_id.into();
        self
    }

    /// Who this client is to portals.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Sends a job and waits up to `timeout` for its complete response.
    pub async fn send(
        &self,
        request: Request,
        body: Body,
        timeout: Duration,
        progress: &dyn Progress,
    ) -> Result<Response, ClientError> {
        let job_id = JobId::new();
        let (tx, mut rx) = mpsc::channel(64);
        lock(&self.pending).pending.insert(job_id, tx);
        let _registered = Unregister(&self.pending, job_id);
        let work = async {
            self.upload(job_id, request, body, progress).await?;
            self.receive(&mut rx, progress).await
        };
        let result = tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| ClientError::Timeout(timeout))?;
        if matches!(result, Ok(_) | Err(ClientError::Portal { .. })) {
            lock(&self.pending).answered(job_id);
            // Answers already queued behind the one taken.
            while let Ok(envelope) = rx.try_recv() {
                if is_answer(&envelope) {
                    self.duplicate(job_id);
                }
            }
        }
        result
    }

    /// Answers ignored so far because their job had been answered already (a portal that
    /// restarted mid-job ran it again).
    pub fn duplicate_answers(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    fn duplicate(&self, job: JobId) {
        note_duplicate(&self.duplicates, job);
    }

    async fn upload(
        &self,
        job_id: JobId,
        request: Request,
        body: Body,
        progress: &dyn Progress,
    ) -> Result<(), ClientError> {
        let chunk_size = self.wire.chunk_size;
        let file;
        let empty = Vec::new();
        let (info, source): (BodyInfo, &dyn ReadAt) = match &body {
            Body::Empty => (BodyInfo::of(&[], chunk_size), &empty),
            Body::Bytes(b) => (BodyInfo::of(b, chunk_size), b),
            Body::File(path) => {
                let path = path.clone();
                let (opened, info) =
                    tokio::task::spawn_blocking(move || hash_file(&path, chunk_size))
                        .await
                        .map_err(|e| std::io::Error::other(e.to_string()))??;
                file = opened;
                (info, &file)
            }
        };
        let head = Envelope::Request(RequestHead {
            job_id,
            method: request.method,
            endpoint: request.endpoint,
            headers: request.headers,
            body: info.clone(),
            sent_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            client_id: Some(self.client_id.clone()),
            // The topic this client reads: a portal answers there if its PORTAL_REPLY_TOPICS
            // allows it.
            reply_to: Some(self.wire.response_topic.clone()),
        })
        .encode();
        let total = info.size;
        self.requests
            .send_with_body(job_id, &head, &info, source, &|sent| {
                progress.uploaded(sent, total)
            })
            .await?;
        Ok(())
    }

    async fn receive(
        &self,
        rx: &mut mpsc::Receiver<Envelope>,
        progress: &dyn Progress,
    ) -> Result<Response, ClientError> {
        let mut response: Option<Incoming> = None;
        while let Some(envelope) = rx.recv().await {
            match envelope {
                Envelope::Error(e) => {
                    return Err(ClientError::Portal {
                        code: e.code,
                        message: e.message,
                    })
                }
                Envelope::Response(head) => {
                    if response.is_some() {
                        tracing::debug!(job_id = %head.job_id,
                            "a new response head before the previous response was complete; \
                             taking the new one (the earlier was cut off)");
                    }
                    let max = u32::try_from(self.wire.max_message_bytes).unwrap_or(u32::MAX);
                    let reassembly = Reassembly::new(head.body.clone(), max, self.max_body)
                        .map_err(|e| ClientError::Protocol(e.to_string()))?;
                    let spool = Spool::for_size(head.body.size, &self.spool)?;
                    if reassembly.is_complete() {
                        return Ok(Response {
                            status: head.status,
                            headers: head.headers,
                            body: spool,
                        });
                    }
                    response = Some(Incoming {
                        status: head.status,
                        headers: head.headers,
                        reassembly,
                        spool,
                    });
                }
                Envelope::Chunk(chunk) => {
                    let Some(Incoming {
                        reassembly, spool, ..
                    }) = response.as_mut()
                    else {
                        return Err(ClientError::Protocol(
                            "a response chunk arrived before the response head".into(),
                        ));
                    };
                    let data = chunk
                        .bytes()
                        .map_err(|e| ClientError::Protocol(e.to_string()))?;
                    let step = reassembly
                        .accept(&chunk, &data, spool)
                        .map_err(|e| match e {
                            ReassemblyError::Protocol(p) => ClientError::Protocol(p.to_string()),
                            ReassemblyError::Sink(io) => ClientError::Io(io),
                        })?;
                    let body = reassembly.body();
                    progress.downloaded(
                        (u64::from(reassembly.received()) * u64::from(body.chunk_size))
                            .min(body.size),
                        body.size,
                    );
                    if step == Reassembled::Complete {
                        if let Some(done) = response.take() {
                            return Ok(Response {
                                status: done.status,
                                headers: done.headers,
                                body: done.spool,
                            });
                        }
                    }
                }
                // A request on the response topic: not ours to act on.
                Envelope::Request(_) => {}
            }
        }
        Err(ClientError::Protocol("the response reader stopped".into()))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Removes a job from the pending table when its `send` ends, however it ends.
struct Unregister<'a>(&'a Pending, JobId);

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        lock(self.0).pending.remove(&self.1);
    }
}

fn lock(p: &Pending) -> std::sync::MutexGuard<'_, Jobs> {
    p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn note_duplicate(duplicates: &AtomicU64, job: JobId) {
    let n = duplicates.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::debug!(job_id = %job, duplicates = n, "a later answer of a job already answered; ignored");
}

/// Opens and hashes a file: its body description for the request head.
fn hash_file(
    path: &std::path::Path,
    chunk_size: u32,
) -> std::io::Result<(std::fs::File, BodyInfo)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((file, BodyInfo::hashed(size, &hasher.finalize(), chunk_size)))
}

/// The response reader's thread: decodes every response and hands it to its job.
fn read_responses(
    consumer: &BaseConsumer,
    pending: &Pending,
    duplicates: &AtomicU64,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = match result {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "reading responses");
                continue;
            }
        };
        let Some(job) = message
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.parse::<JobId>().ok())
        else {
            continue;
        };
        let tx = {
            let jobs = lock(pending);
            match jobs.pending.get(&job) {
                Some(tx) => tx.clone(),
                None => {
                    let answered = jobs.answered.contains(&job);
                    drop(jobs);
                    if answered
                        && Envelope::decode(message.payload().unwrap_or_default())
                            .is_ok_and(|e| is_answer(&e))
                    {
                        note_duplicate(duplicates, job);
                    }
                    continue;
                }
            }
        };
        match Envelope::decode(message.payload().unwrap_or_default()) {
            // Waits when the job is slow to take its messages: backpressure, not memory.
            Ok(envelope) => {
                let _ = tx.blocking_send(envelope);
            }
            Err(e) => {
                let _ = tx.blocking_send(Envelope::Error(clustera_send_protocol::ErrorResponse {
                    job_id: job,
                    code: e.code(),
                    message: format!("an undecodable response message: {e}"),
                }));
            }
        }
    }
}
