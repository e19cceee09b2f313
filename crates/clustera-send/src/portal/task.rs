//! A job's deferred task: waits for the job's request to end, calls the API, and states the
//! answer as records of its deferred context; and the sweep that ends jobs whose request
//! stopped arriving.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clustera::{DeferredContext, KernelError, Outcome};
use clustera_send_protocol::{BodyInfo, Chunker, Envelope, ErrorCode, JobId, ResponseHead};
use tokio::sync::oneshot;

use super::call;
use super::jobs::{Complete, Ended, Job, Origin, State};
use super::Shared;

/// The state a job's deferred task shares across its attempts. Dropping it (the task ended,
/// was cancelled at the drain timeout, or never started) takes the job out of the table, if
/// this admission of it is still there, and frees its partition's task slot.
pub(super) struct JobTask {
    shared: Arc<Shared>,
    job_id: JobId,
    generation: u64,
    origin: Origin,
    /// Where the job is answered.
    reply_topic: String,
    /// How the job's request ended; taken by the first attempt.
    ended: Mutex<Option<oneshot::Receiver<Ended>>>,
}

impl JobTask {
    /// The task of the job admitted as `generation`, whose head came from `origin`.
    pub(super) fn new(
        shared: Arc<Shared>,
        job_id: JobId,
        generation: u64,
        origin: Origin,
        reply_topic: String,
        ended: oneshot::Receiver<Ended>,
    ) -> Self {
        Self {
            shared,
            job_id,
            generation,
            origin,
            reply_topic,
            ended: Mutex::new(Some(ended)),
        }
    }

    /// One attempt of the task. The task answers every failure of the job itself, so the
    /// runtime never retries it; it only gives up (an `unavailable` error, which the runtime
    /// turns into "leave the message to the partition's next owner") when the partition stops
    /// before the job's request is complete.
    pub(super) async fn run(&self, out: DeferredContext) -> Result<Outcome, KernelError> {
        let job_id = self.job_id;
        let taken = self
            .ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(ended) = taken else {
            return Ok(Outcome::skip(format!(
                "job {job_id}: its task was called again after it gave up"
            )));
        };
        let ended = tokio::select! {
            biased;
            ended = ended => ended,
            () = out.stopped() => {
                tracing::info!(%job_id, "partition stopped before the request was complete; \
                    its next owner runs the job");
                return Err(KernelError::unavailable(
                    "the partition stopped before the job's request was complete",
                ));
            }
        };
        match ended {
            Ok(Ended::Complete(job)) => self.execute(*job, &out).await,
            Ok(Ended::Failed(code, message)) => {
                out.send(
                    self.shared
                        .error_record(&self.reply_topic, job_id, code, message),
                );
            }
            // Its table entry was replaced by a redelivery of its head, whose task runs it.
            Err(_) => {
                return Err(KernelError::unavailable(
                    "the job was taken over by a redelivery of its head",
                ))
            }
        }
        Ok(Outcome::Ack)
    }

    /// Calls the API for the complete job and states its answer. The job keeps its place
    /// until its answer is handed to the producer; its request bytes are given back once the
    /// call is over, its response bytes (counted as they are read) once they are sent.
    async fn execute(&self, job: Complete, out: &DeferredContext) {
        let (shared, job_id) = (&self.shared, self.job_id);
        let started = Instant::now();
        let answer = tokio::time::timeout(
            shared.config.job_timeout,
            call::call(shared, &job, self.generation),
        )
        .await;
        shared.release(job_id, self.generation, job.head.body.size);
        shared
            .metrics
            .calls
            .observe(started.elapsed().as_secs_f64());
        shared.metrics.moved("request", job.head.body.size);
        drop(job);
        let (code, message) = match answer {
            Ok(Ok(answer)) => {
                tracing::info!(%job_id, status = answer.status, bytes = answer.body.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64, "API answered");
                let bytes = answer.body.len();
                let sent = stream_response(job_id, &self.reply_topic, answer, shared, out).await;
                self.leave_table();
                match sent {
                    Ok(()) => {
                        shared.metrics.answered("ok");
                        shared.metrics.moved("response", bytes);
                        return;
                    }
                    // The head and some chunks may be out: the error replaces them (the
                    // client drops an incomplete response when another answer arrives).
                    Err(e) => {
                        tracing::error!(%job_id, error = %e, "cannot send the spooled response");
                        (
                            ErrorCode::Internal,
                            "the portal could not send the whole response".to_owned(),
                        )
                    }
                }
            }
            Ok(Err(f)) => {
                tracing::warn!(%job_id, code = ?f.code, message = %f.message, "call failed");
                self.leave_table();
                (f.code, f.message)
            }
            Err(_) => {
                let message = format!(
                    "the API did not answer within {} s",
                    shared.config.job_timeout.as_secs()
                );
                tracing::warn!(%job_id, %message, "call timed out");
                self.leave_table();
                (ErrorCode::Timeout, message)
            }
        };
        out.send(shared.error_record(&self.reply_topic, job_id, code, message));
    }

    /// Takes the job out of the table (its place and bytes) and remembers it as finished. An
    /// error answer is small: its place is free before it is sent, so a client that sends its
    /// next job on receiving it finds room.
    fn leave_table(&self) {
        let mut jobs = self.shared.lock();
        let removed = jobs.remove(&self.job_id, Some(self.generation));
        jobs.finish(self.job_id, Some(self.origin.clone()));
        self.shared
            .metrics
            .occupancy(jobs.active(), jobs.inflight_bytes());
        drop(jobs);
        drop(removed);
    }
}

impl Drop for JobTask {
    fn drop(&mut self) {
        let removed = {
            let mut jobs = self.shared.lock();
            let removed = jobs.remove(&self.job_id, Some(self.generation));
            jobs.count_task(&self.origin.topic, self.origin.partition, false);
            self.shared
                .metrics
                .occupancy(jobs.active(), jobs.inflight_bytes());
            removed
        };
        if removed.is_some() {
            tracing::debug!(job_id = %self.job_id, "job left unanswered (its partition stopped)");
        }
        // Its spool (a file, perhaps) is dropped here, outside the lock.
        drop(removed);
    }
}

/// Sends the response head, then the body chunk by chunk as it is read from its spool, each
/// produced at once (so a large answer is never held in memory whole) and committed with the
/// job's head once acknowledged.
async fn stream_response(
    job_id: JobId,
    topic: &str,
    answer: call::Answer,
    shared: &Shared,
    out: &DeferredContext,
) -> std::io::Result<()> {
    let chunk_size = shared.config.wire.chunk_size;
    let size = answer.body.len();
    let info = BodyInfo::hashed(size, &answer.sha256, chunk_size);
    let head = Envelope::Response(ResponseHead {
        job_id,
        status: answer.status,
        headers: answer.headers,
        body: info.clone(),
    })
    .encode();
    let ended = |_| std::io::Error::other("the job's task ended while answering");
    out.send_now(shared.answer_record(topic, job_id, head))
        .await
        .map_err(ended)?;
    let body = Arc::new(answer.body);
    let chunker = Chunker::new(job_id);
    for sequence in 0..info.total_chunks {
        let offset = u64::from(sequence) * u64::from(chunk_size);
        let len = usize::try_from(info.chunk_len(sequence)).unwrap_or(0);
        let spool = body.clone();
        // The spool may be a file: read off the async threads.
        let data = tokio::task::spawn_blocking(move || spool.read(offset, len))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        if data.len() != len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the response ended at {} bytes, {size} expected",
                    offset + data.len() as u64
                ),
            ));
        }
        let payload = chunker.encode(sequence, info.total_chunks, &data);
        out.send_now(shared.answer_record(topic, job_id, payload))
            .await
            .map_err(ended)?;
    }
    Ok(())
}

/// Every second: jobs whose first chunk is late, idle too long (missing chunks) or too old
/// are taken out of the table, and their tasks answer why.
pub(super) async fn sweep(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = Instant::now();
        let config = &shared.config;
        let stale: Vec<(Job, ErrorCode, String)> = {
            let mut jobs = shared.lock();
            let expired: Vec<(JobId, ErrorCode, String)> = jobs
                .receiving()
                .filter_map(|(id, j)| {
                    let total = j.head.body.total_chunks;
                    let received = j.received;
                    if now - j.started > config.job_max_age {
                        Some((
                            *id,
                            ErrorCode::Expired,
                            format!(
                            "the job is older than {} s with {received} of {total} chunks received",
                            config.job_max_age.as_secs()
                        ),
                        ))
                    } else if received == 0 && now - j.started > config.first_chunk_timeout {
                        Some((
                            *id,
                            ErrorCode::Incomplete,
                            format!(
                                "no chunk within {} s of the head: 0 of {total} chunks received",
                                config.first_chunk_timeout.as_secs()
                            ),
                        ))
                    } else if now - j.last_activity > config.job_idle_timeout {
                        Some((
                            *id,
                            ErrorCode::Incomplete,
                            format!(
                            "no chunk for {} s: {received} of {total} chunks received, {} missing",
                            config.job_idle_timeout.as_secs(),
                            total - received
                        ),
                        ))
                    } else {
                        None
                    }
                })
                .collect();
            let stale = expired
                .into_iter()
                .filter_map(|(id, code, message)| {
                    let job = jobs.remove(&id, None)?;
                    jobs.finish(id, Some(job.origin.clone()));
                    Some((job, code, message))
                })
                .collect();
            shared
                .metrics
                .occupancy(jobs.active(), jobs.inflight_bytes());
            stale
        };
        for (job, code, message) in stale {
            if let State::Receiving(receiving, tell) = job.state {
                tracing::warn!(job_id = %receiving.head.job_id, ?code, %message, "job swept");
                drop(receiving);
                let _ = tell.send(Ended::Failed(code, message));
            }
        }
    }
}
