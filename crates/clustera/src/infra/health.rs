//! Liveness and readiness, as every process reports them on `/healthz` and `/readyz` (see
//! [`super::http`]). Liveness fails when the process's main loop (a kernel's poll loop, the
//! relay's rounds) stops turning, or when a partition that has work makes no progress for the
//! stall timeout: a watchdog for kernels stuck in `process` and for consumers that stop
//! fetching after a rebalance.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What `/healthz` and `/readyz` report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HealthReport {
    /// Whether the check passes.
    pub ok: bool,
    /// Why not, one line per problem.
    pub problems: Vec<String>,
}

/// Shared health state, updated by the process's main loop.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    last_poll_ms: AtomicU64,
    ready: AtomicBool,
    poll_stall: Duration,
    stalled: Mutex<Vec<String>>,
    loop_name: &'static str,
    not_ready: &'static str,
}

impl Health {
    /// `poll_stall`: how long the main loop may go without turning before liveness fails.
    /// Worded for a kernel: its poll loop, its consumer group.
    pub fn new(poll_stall: Duration) -> Self {
        Self::for_loop(
            poll_stall,
            "poll loop",
            "not yet in the consumer group with an assignment",
        )
    }

    /// For another process: `loop_name` names its main loop and `not_ready` says why it is
    /// not ready until [`Health::set_ready`], in the problems reported.
    pub fn for_loop(
        poll_stall: Duration,
        loop_name: &'static str,
        not_ready: &'static str,
    ) -> Self {
        Self {
            started: Instant::now(),
            last_poll_ms: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            poll_stall,
            stalled: Mutex::new(Vec::new()),
            loop_name,
            not_ready,
        }
    }

    /// Milliseconds since this value was created: a cheap clock for atomics.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The main loop turned: liveness holds for `poll_stall` from now.
    pub fn poll_turned(&self) {
        self.last_poll_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Whether the process is ready for work (readiness).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub(crate) fn set_stalled(&self, problems: Vec<String>) {
        *self.stalled.lock().unwrap_or_else(|p| p.into_inner()) = problems;
    }

    /// Liveness: the poll loop turns and no partition is stalled.
    pub fn liveness(&self) -> HealthReport {
        let mut problems = self
            .stalled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let since_poll = self
            .now_ms()
            .saturating_sub(self.last_poll_ms.load(Ordering::Relaxed));
        if since_poll > u64::try_from(self.poll_stall.as_millis()).unwrap_or(u64::MAX) {
            problems.push(format!(
                "{} has not turned for {since_poll} ms",
                self.loop_name
            ));
        }
        HealthReport {
            ok: problems.is_empty(),
            problems,
        }
    }

    /// Readiness: set by [`Health::set_ready`] (a kernel: in the group with an assignment,
    /// possibly empty).
    pub fn readiness(&self) -> HealthReport {
        let ready = self.ready.load(Ordering::Relaxed);
        HealthReport {
            ok: ready,
            problems: if ready {
                Vec::new()
            } else {
                vec![self.not_ready.to_owned()]
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_reports_stalls_and_a_stuck_poll_loop() {
        let h = Health::new(Duration::from_millis(0));
        h.poll_turned();
        std::thread::sleep(Duration::from_millis(5));
        assert!(!h.liveness().ok, "poll loop idle past the threshold");
        let h = Health::new(Duration::from_secs(60));
        h.poll_turned();
        assert!(h.liveness().ok);
        h.set_stalled(vec!["t[0] stalled".into()]);
        assert_eq!(h.liveness().problems, vec!["t[0] stalled".to_owned()]);
        assert!(!h.readiness().ok);
        h.set_ready(true);
        assert!(h.readiness().ok);
    }
}
