//! Counters shared between threads.

use std::sync::atomic::{AtomicU64, Ordering};

/// Adds one to `counter`. Counters are only read for reporting, so no ordering is needed.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
