//! What the streaming relay may confirm to PostgreSQL. Pure: no I/O, no clock.
//!
//! Events are numbered in the order they are sent; Kafka's acknowledgements are taken in that
//! same order (the relay awaits the oldest delivery first), so "every event before number
//! `n` is acknowledged" is one counter. A transaction can be confirmed (its commit's end LSN
//! reported as flushed) once every event up to its last one is acknowledged, and every
//! transaction before it was. With nothing in flight and no transaction open, the server's
//! own position (a keepalive's `wal_end`) can be confirmed: everything committed before it
//! has been received and acknowledged, and what is still open commits after it.
//!
//! The flushed position never moves back and never passes an unacknowledged event.

use std::collections::VecDeque;

/// A committed transaction waiting for its events' acknowledgements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    /// Events numbered below this are the transaction's and the ones before it.
    events_end: u64,
    /// The commit's end LSN: what to confirm once they are all acknowledged.
    end_lsn: u64,
    /// Commit time (microseconds since 2000-01-01), for the commit-to-ack latency.
    commit_ts: i64,
}

/// The relay's position bookkeeping (see the module documentation).
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress {
    /// The number the next event sent gets.
    sent: u64,
    /// Every event numbered below this is acknowledged.
    acknowledged: u64,
    /// Whether a transaction's Begin came without its Commit yet.
    in_transaction: bool,
    commits: VecDeque<Pending>,
    flushed: u64,
    /// Commit times of transactions confirmed since the last [`take_settled`](Self::take_settled).
    settled: Vec<i64>,
}

impl Progress {
    /// Starting where the server says the slot's stream starts (nothing to confirm before).
    pub fn new(start: u64) -> Self {
        Self {
            flushed: start,
            ..Self::default()
        }
    }

    /// A transaction's Begin.
    pub fn begin(&mut self) {
        self.in_transaction = true;
    }

    /// An event was handed to the producer; its number.
    pub fn sent(&mut self) -> u64 {
        let n = self.sent;
        self.sent += 1;
        n
    }

    /// The oldest unacknowledged event was acknowledged.
    pub fn acknowledged(&mut self) {
        debug_assert!(self.acknowledged < self.sent);
        self.acknowledged = (self.acknowledged + 1).min(self.sent);
        self.settle();
    }

    /// A transaction's Commit, ending at `end_lsn`.
    pub fn commit(&mut self, end_lsn: u64, commit_ts: i64) {
        self.in_transaction = false;
        self.commits.push_back(Pending {
            events_end: self.sent,
            end_lsn,
            commit_ts,
        });
        self.settle();
    }

    /// The server's position when it has nothing more to send for now (a keepalive):
    /// confirmed if nothing is outstanding.
    pub fn idle(&mut self, wal_end: u64) {
        if self.is_idle() {
            self.flushed = self.flushed.max(wal_end);
        }
    }

    /// Whether every event sent is acknowledged, every transaction confirmed, none open.
    pub fn is_idle(&self) -> bool {
        !self.in_transaction && self.commits.is_empty() && self.acknowledged == self.sent
    }

    /// Events sent and not yet acknowledged.
    #[cfg(test)]
    pub fn in_flight(&self) -> u64 {
        self.sent - self.acknowledged
    }

    /// Events acknowledged so far.
    pub fn acknowledged_count(&self) -> u64 {
        self.acknowledged
    }

    /// The position to report as flushed.
    pub fn flushed(&self) -> u64 {
        self.flushed
    }

    /// Commit times of the transactions confirmed since the last call.
    pub fn take_settled(&mut self) -> Vec<i64> {
        std::mem::take(&mut self.settled)
    }

    fn settle(&mut self) {
        while let Some(p) = self.commits.front() {
            if p.events_end > self.acknowledged {
                break;
            }
            self.flushed = self.flushed.max(p.end_lsn);
            self.settled.push(p.commit_ts);
            self.commits.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_transaction_is_confirmed_only_once_all_its_events_are_acknowledged() {
        let mut p = Progress::new(100);
        p.begin();
        p.sent();
        p.sent();
        p.commit(200, 1);
        p.begin();
        p.sent();
        p.commit(300, 2);
        assert_eq!(p.flushed(), 100);
        p.acknowledged();
        assert_eq!(p.flushed(), 100, "one of the first two events is still out");
        p.idle(1000);
        assert_eq!(p.flushed(), 100, "not idle: keepalives confirm nothing");
        p.acknowledged();
        assert_eq!(p.flushed(), 200);
        assert_eq!(p.take_settled(), vec![1]);
        p.acknowledged();
        assert_eq!(p.flushed(), 300);
        assert!(p.is_idle());
        p.idle(1000);
        assert_eq!(p.flushed(), 1000);
        p.idle(900);
        assert_eq!(p.flushed(), 1000, "never back");
    }

    #[test]
    fn an_open_transaction_holds_keepalives_back() {
        let mut p = Progress::new(0);
        p.begin();
        p.idle(50);
        assert_eq!(p.flushed(), 0);
        p.commit(60, 0);
        assert_eq!(
            p.flushed(),
            60,
            "a transaction without events settles at once"
        );
        p.idle(70);
        assert_eq!(p.flushed(), 70);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Event,
        Commit,
        Ack,
        Keepalive,
    }

    proptest! {
        /// Against a model that remembers every event's transaction: the flushed position
        /// never passes the commit of a transaction with an unacknowledged event, and never
        /// moves back.
        #[test]
        fn never_confirms_past_an_unacknowledged_event(
            ops in proptest::collection::vec(
                prop_oneof![Just(Op::Event), Just(Op::Commit), Just(Op::Ack), Just(Op::Keepalive)],
                0..200,
            )
        ) {
            let mut p = Progress::new(0);
            let mut lsn = 0u64;
            // Per event: the end LSN of its transaction, once committed.
            let mut events: Vec<Option<u64>> = Vec::new();
            let mut open: Vec<usize> = Vec::new();
            let mut in_tx = false;
            let mut acked = 0usize;
            let mut last = 0;
            for op in ops {
                lsn += 10;
                match op {
                    Op::Event => {
                        if !in_tx { p.begin(); in_tx = true; }
                        p.sent();
                        open.push(events.len());
                        events.push(None);
                    }
                    Op::Commit => {
                        if !in_tx { p.begin(); }
                        p.commit(lsn, 0);
                        for i in open.drain(..) { events[i] = Some(lsn); }
                        in_tx = false;
                    }
                    Op::Ack => {
                        if acked < events.len() { p.acknowledged(); acked += 1; }
                    }
                    Op::Keepalive => {
                        // The server's position: past every commit so far, before any open
                        // transaction's commit.
                        p.idle(lsn);
                    }
                }
                let flushed = p.flushed();
                prop_assert!(flushed >= last);
                last = flushed;
                for end in events[acked..].iter().flatten() {
                    prop_assert!(flushed < *end, "flushed {flushed} passes an unacknowledged event of the transaction ending at {end}");
                }
                prop_assert_eq!(p.in_flight(), (events.len() - acked) as u64);
            }
        }
    }
}
