//! The one way for any part of the runtime to say "this process cannot go on": a fenced
//! consumer, a fatal idempotent-producer error, a dead-letter topic that refuses for good, a
//! partition worker that died. The runtime then stops as gracefully as it still can and exits
//! non-zero, so the orchestrator restarts it; it never stays up doing nothing.

use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

/// Raised at most once; the first reason wins.
#[derive(Debug, Default)]
pub(crate) struct Fatal {
    raised: CancellationToken,
    reason: Mutex<Option<String>>,
}

impl Fatal {
    /// Records `reason` (if nothing was raised before) and wakes whoever waits.
    pub(crate) fn raise(&self, reason: impl Into<String>) {
        let reason = reason.into();
        let mut slot = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            tracing::error!(%reason, "fatal error: the kernel stops");
            *slot = Some(reason);
        }
        drop(slot);
        self.raised.cancel();
    }

    /// Whether a fatal error was raised.
    pub(crate) fn is_raised(&self) -> bool {
        self.raised.is_cancelled()
    }

    /// Resolves once a fatal error is raised.
    pub(crate) async fn raised(&self) {
        self.raised.cancelled().await;
    }

    /// The first reason raised.
    pub(crate) fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins() {
        let f = Fatal::default();
        assert!(!f.is_raised());
        f.raise("fenced");
        f.raise("later");
        assert!(f.is_raised());
        assert_eq!(f.reason().as_deref(), Some("fenced"));
    }
}
