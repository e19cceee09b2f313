//! Lag over the last hour: every consumer group's total lag sampled in-process every
//! `sample_interval`, the latest per-partition figures kept for the overview.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::kafka::PartitionLag;
use crate::State;

/// How far back the history goes.
pub const HISTORY: Duration = Duration::from_secs(3600);

/// One group's samples: (milliseconds since the epoch, total lag), oldest first.
pub type Series = VecDeque<(u64, i64)>;

/// What the sampler has seen.
#[derive(Debug, Default)]
pub struct History {
    /// Total lag per group over the last hour.
    pub series: BTreeMap<String, Series>,
    /// Each group's partitions at the latest sample.
    pub latest: BTreeMap<String, Vec<PartitionLag>>,
}

impl History {
    /// Records one sample of `group` at `at_ms`, forgetting what is older than [`HISTORY`].
    pub fn record(&mut self, group: &str, at_ms: u64, partitions: Vec<PartitionLag>) {
        let total = partitions.iter().map(|p| p.lag).sum();
        let series = self.series.entry(group.to_owned()).or_default();
        series.push_back((at_ms, total));
        let horizon = at_ms.saturating_sub(u64::try_from(HISTORY.as_millis()).unwrap_or(0));
        while series.front().is_some_and(|(t, _)| *t < horizon) {
            series.pop_front();
        }
        self.latest.insert(group.to_owned(), partitions);
    }
}

/// Samples until the console is dropped.
pub(crate) fn start(state: Weak<State>, history: Arc<Mutex<History>>, every: Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(state) = state.upgrade() else { break };
            let history = history.clone();
            let sampled = tokio::task::spawn_blocking(move || {
                for group in state.known_groups() {
                    match crate::kafka::group_lag(&state.options.client, &group, None) {
                        Ok(rows) => history.lock().unwrap_or_else(|p| p.into_inner()).record(
                            &group,
                            crate::now_ms(),
                            rows,
                        ),
                        Err(e) => tracing::debug!(group, error = %e, "lag sample failed"),
                    }
                }
            })
            .await;
            if sampled.is_err() {
                tracing::warn!("lag sampling task failed");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(lag: i64) -> PartitionLag {
        PartitionLag {
            topic: "t".into(),
            partition: 0,
            committed: Some(0),
            low: 0,
            high: lag,
            lag,
        }
    }

    #[test]
    fn history_keeps_one_hour_of_totals() {
        let mut h = History::default();
        h.record("g", 1_000, vec![part(3), part(4)]);
        h.record("g", 1_000 + 3_600_000, vec![part(1)]);
        assert_eq!(h.series["g"], VecDeque::from([(1_000, 7), (3_601_000, 1)]));
        h.record("g", 1_001 + 3_600_000, vec![part(2)]);
        assert_eq!(
            h.series["g"].len(),
            2,
            "the first sample is now older than an hour"
        );
        assert_eq!(h.latest["g"], vec![part(2)]);
    }
}
