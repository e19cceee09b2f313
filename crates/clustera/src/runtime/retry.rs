//! The backoff between attempts of one message: exponential with jitter (backon).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::config::RuntimeSettings;

/// When to try again, and when to give up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    initial: Duration,
    max: Duration,
    max_attempts: Option<u32>,
}

impl RetryPolicy {
    pub(crate) fn from_settings(s: &RuntimeSettings) -> Self {
        Self {
            initial: s.retry_initial_delay,
            max: s.retry_max_delay,
            max_attempts: s.max_attempts,
        }
    }

    /// The delays before attempt 2, 3, …; never runs out (`exhausted` decides when to stop).
    pub(crate) fn delays(&self) -> impl Iterator<Item = Duration> {
        let max = self.max;
        ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_jitter()
            .without_max_times()
            .build()
            // Jitter is added on top of the capped delay; keep the cap a cap.
            .map(move |d| d.min(max))
    }

    /// Whether `attempts` attempts are all the message gets.
    pub(crate) fn exhausted(&self, attempts: u32) -> bool {
        self.max_attempts.is_some_and(|max| attempts >= max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let s = RuntimeSettings {
            retry_initial_delay: Duration::from_millis(10),
            retry_max_delay: Duration::from_millis(80),
            ..RuntimeSettings::default()
        };
        let delays: Vec<Duration> = RetryPolicy::from_settings(&s).delays().take(10).collect();
        assert!(delays.iter().all(|d| *d >= Duration::from_millis(10)));
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(80)));
        assert!(delays[5] >= Duration::from_millis(80) - Duration::from_millis(1));
    }

    #[test]
    fn attempts_are_bounded_unless_forever() {
        let bounded = RetryPolicy::from_settings(&RuntimeSettings::default());
        assert!(!bounded.exhausted(4));
        assert!(bounded.exhausted(5));
        let forever = RetryPolicy::from_settings(&RuntimeSettings {
            max_attempts: None,
            ..RuntimeSettings::default()
        });
        assert!(!forever.exhausted(u32::MAX));
    }
}
