//! Wall-clock time for end-to-end latency.

use std::time::{Duration, Instant};

/// Wall-clock milliseconds from a monotonic instant, for end-to-end latency without a system
/// clock read per message. Re-anchored every ten seconds so clock adjustments are followed.
pub(crate) struct WallClock {
    anchor: Instant,
    anchor_epoch_ms: i64,
}

impl WallClock {
    pub(crate) fn new() -> Self {
        Self {
            anchor: Instant::now(),
            anchor_epoch_ms: system_epoch_ms(),
        }
    }

    pub(crate) fn epoch_ms(&mut self, at: Instant) -> i64 {
        let since = at.saturating_duration_since(self.anchor);
        if since > Duration::from_secs(10) {
            *self = Self::new();
            return self.anchor_epoch_ms;
        }
        self.anchor_epoch_ms + i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn system_epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
