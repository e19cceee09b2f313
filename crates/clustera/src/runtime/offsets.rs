//! Which offsets of one partition are safe to commit. Pure bookkeeping, no I/O.
//!
//! A message is *done* when its outcome is final, every deferred task it started has finished,
//! and every record it caused (outputs, dead letters, its tasks' records) has been
//! acknowledged by the broker. Acknowledgements arrive out of order,
//! so a later message can be done before an earlier one; the committable position is therefore
//! the offset of the first message that is not yet done (Kafka commits the *next* offset to read).

use std::collections::VecDeque;

/// The progress of one in-flight message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    offset: i64,
    /// Records produced for this message whose delivery is not yet acknowledged.
    unacked: u32,
    /// The kernel's outcome for this message is final.
    finished: bool,
    /// A record of this message was refused for good and the message is being dead-lettered
    /// in its place (see [`PartitionOffsets::refused`]).
    dead_lettered: bool,
    /// Given up when its partition stopped (see [`PartitionOffsets::abandon`]).
    abandoned: bool,
}

impl Entry {
    fn done(&self) -> bool {
        self.finished && self.unacked == 0 && !self.abandoned
    }
}

/// A mistake in how the runtime drives the tracker; it names the offset involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OffsetError {
    /// Offsets must be begun in increasing order, as a partition delivers them.
    #[error("offset {offset} begun after offset {last}: partitions deliver in increasing order")]
    OutOfOrder {
        /// The offset that was begun.
        offset: i64,
        /// The last offset begun before it.
        last: i64,
    },
    /// The offset was never begun, or is already done and forgotten.
    #[error("offset {0} is not in flight")]
    NotInFlight(i64),
    /// More acknowledgements arrived than records were produced.
    #[error("offset {0} acknowledged more records than it produced")]
    TooManyAcks(i64),
}

/// Tracks in-flight messages of one partition and yields the offset that is safe to commit.
#[derive(Debug, Default, Clone)]
pub struct PartitionOffsets {
    in_flight: VecDeque<Entry>,
    /// The next offset to commit: everything below it is done.
    done_up_to: Option<i64>,
    /// The last offset handed to [`PartitionOffsets::begin`].
    last_begun: Option<i64>,
    /// Messages done since the tracker was created.
    completed: u64,
}

impl PartitionOffsets {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts tracking `offset`, taken for processing; [`PartitionOffsets::complete`]
    /// finishes it. Offsets must increase; gaps (compaction, transaction markers) are fine.
    pub fn begin(&mut self, offset: i64) -> Result<(), OffsetError> {
        if let Some(last) = self.last_begun {
            if offset <= last {
                return Err(OffsetError::OutOfOrder { offset, last });
            }
        }
        self.last_begun = Some(offset);
        self.in_flight.push_back(Entry {
            offset,
            unacked: 0,
            finished: false,
            dead_lettered: false,
            abandoned: false,
        });
        Ok(())
    }

    /// Begins and finishes `offset` in one step, with `unacked` units about to be settled for
    /// it: records about to be sent, and deferred tasks about to run (each task's unit is
    /// settled by [`PartitionOffsets::ack`] once its own records are added). A partition's
    /// worker is sequential, so a message need not be tracked while the kernel runs: nothing
    /// later can finish before it, and the committable offset can reach it but never pass it.
    pub fn finished_with(&mut self, offset: i64, unacked: u32) -> Result<(), OffsetError> {
        self.begin(offset)?;
        if let Some(entry) = self.in_flight.back_mut() {
            entry.unacked = unacked;
            entry.finished = true;
        }
        self.advance();
        Ok(())
    }

    /// Finishes a begun `offset` with `unacked` units about to be settled (as in
    /// [`PartitionOffsets::finished_with`]).
    pub fn complete(&mut self, offset: i64, unacked: u32) -> Result<(), OffsetError> {
        let entry = self.entry_mut(offset)?;
        entry.unacked += unacked;
        entry.finished = true;
        self.advance();
        Ok(())
    }

    /// Records that `count` more records are about to be sent on behalf of `offset`, by a
    /// deferred task whose own unit is still unsettled (so the message cannot be done yet).
    /// Call it before sending them, so that an acknowledgement can never arrive first.
    pub fn add_unacked(&mut self, offset: i64, count: u32) -> Result<(), OffsetError> {
        let entry = self.entry_mut(offset)?;
        entry.unacked += count;
        Ok(())
    }

    /// Records the broker's acknowledgement of one record produced for `offset`.
    pub fn ack(&mut self, offset: i64) -> Result<(), OffsetError> {
        let entry = self.entry_mut(offset)?;
        if entry.unacked == 0 {
            return Err(OffsetError::TooManyAcks(offset));
        }
        entry.unacked -= 1;
        self.advance();
        Ok(())
    }

    /// Records that one record produced for `offset` was refused for good by the broker. The
    /// message must then be dead-lettered instead: the first refusal returns `true`, and the
    /// refused record's place is taken by the dead letter the caller sends for the same
    /// offset; later refusals of the same message return `false` and only count as settled,
    /// since one dead letter stands for the message.
    pub fn refused(&mut self, offset: i64) -> Result<bool, OffsetError> {
        let entry = self.entry_mut(offset)?;
        if entry.unacked == 0 {
            return Err(OffsetError::TooManyAcks(offset));
        }
        if !entry.dead_lettered {
            entry.dead_lettered = true;
            return Ok(true);
        }
        entry.unacked -= 1;
        self.advance();
        Ok(false)
    }

    /// Gives `offset` up: its partition stopped before a deferred task of it could finish.
    /// It is never committed (whoever reads the partition next gets it again), and it no
    /// longer holds the drain back.
    pub fn abandon(&mut self, offset: i64) -> Result<(), OffsetError> {
        self.entry_mut(offset)?.abandoned = true;
        Ok(())
    }

    /// The offset to commit (the next one to read), if any message has been done.
    pub fn committable(&self) -> Option<i64> {
        self.done_up_to
    }

    /// Messages begun but not yet done.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The first message not yet done, which the commit waits for.
    pub fn first_unfinished(&self) -> Option<i64> {
        self.in_flight.front().map(|e| e.offset)
    }

    /// Messages done since creation.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Whether every record and deferred task is settled, ignoring abandoned messages (they
    /// will be redelivered to whoever reads next).
    pub fn settled(&self) -> bool {
        self.in_flight.iter().all(|e| e.unacked == 0 || e.abandoned)
    }

    fn entry_mut(&mut self, offset: i64) -> Result<&mut Entry, OffsetError> {
        let index = self
            .in_flight
            .binary_search_by_key(&offset, |e| e.offset)
            .map_err(|_| OffsetError::NotInFlight(offset))?;
        Ok(&mut self.in_flight[index])
    }

    fn advance(&mut self) {
        while let Some(front) = self.in_flight.front() {
            if !front.done() {
                break;
            }
            self.done_up_to = Some(front.offset + 1);
            self.completed += 1;
            self.in_flight.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commits_nothing_until_first_message_done() {
        let mut t = PartitionOffsets::new();
        t.finished_with(10, 1).unwrap();
        assert_eq!(t.committable(), None, "output not yet acked");
        t.ack(10).unwrap();
        assert_eq!(t.committable(), Some(11));
        assert_eq!(t.completed(), 1);
    }

    #[test]
    fn finished_with_waits_for_its_records() {
        let mut t = PartitionOffsets::new();
        t.finished_with(0, 0).unwrap();
        assert_eq!(t.committable(), Some(1));
        t.finished_with(1, 2).unwrap();
        t.finished_with(2, 0).unwrap();
        assert_eq!(
            t.committable(),
            Some(1),
            "offset 1 still has two records in flight"
        );
        t.ack(1).unwrap();
        t.ack(1).unwrap();
        assert_eq!(t.committable(), Some(3));
        assert_eq!(t.completed(), 3);
    }

    #[test]
    fn a_deferred_task_holds_its_message_until_its_records_are_acknowledged() {
        let mut t = PartitionOffsets::new();
        // One output and one deferred task.
        t.finished_with(0, 2).unwrap();
        t.finished_with(1, 0).unwrap();
        t.ack(0).unwrap();
        assert_eq!(t.committable(), None, "the task is still running");
        // The task ends with two records: they are expected before its unit is settled.
        t.add_unacked(0, 2).unwrap();
        t.ack(0).unwrap();
        assert_eq!(t.committable(), None, "its records are not acknowledged");
        t.ack(0).unwrap();
        t.ack(0).unwrap();
        assert_eq!(t.committable(), Some(2), "and the later message follows");
    }

    #[test]
    fn an_abandoned_message_is_settled_but_never_committed() {
        let mut t = PartitionOffsets::new();
        t.finished_with(0, 0).unwrap();
        t.finished_with(1, 1).unwrap();
        t.finished_with(2, 0).unwrap();
        assert!(!t.settled());
        t.abandon(1).unwrap();
        assert!(t.settled(), "the drain need not wait for it");
        assert_eq!(t.committable(), Some(1), "nor can the commit pass it");
    }

    #[test]
    fn a_refused_output_is_replaced_by_one_dead_letter() {
        let mut t = PartitionOffsets::new();
        t.finished_with(0, 3).unwrap();
        t.ack(0).unwrap();
        assert_eq!(t.refused(0), Ok(true), "first refusal: send a dead letter");
        assert_eq!(
            t.refused(0),
            Ok(false),
            "second refusal: covered by that letter"
        );
        assert_eq!(
            t.committable(),
            None,
            "the dead letter is not yet acknowledged"
        );
        t.ack(0).unwrap();
        assert_eq!(t.committable(), Some(1));
        assert_eq!(t.refused(0), Err(OffsetError::NotInFlight(0)));
    }

    #[test]
    fn gaps_in_offsets_are_fine() {
        let mut t = PartitionOffsets::new();
        t.finished_with(5, 1).unwrap();
        t.finished_with(9, 0).unwrap();
        t.ack(5).unwrap();
        assert_eq!(t.committable(), Some(10));
    }

    #[test]
    fn misuse_is_reported_not_panicked() {
        let mut t = PartitionOffsets::new();
        t.finished_with(3, 1).unwrap();
        assert_eq!(
            t.finished_with(3, 0),
            Err(OffsetError::OutOfOrder { offset: 3, last: 3 })
        );
        t.ack(3).unwrap();
        assert_eq!(t.ack(3), Err(OffsetError::NotInFlight(3)));
        assert_eq!(t.add_unacked(4, 1), Err(OffsetError::NotInFlight(4)));
        t.finished_with(5, 0).unwrap();
        t.finished_with(6, 1).unwrap();
        assert_eq!(t.add_unacked(5, 1), Err(OffsetError::NotInFlight(5)));
        t.abandon(6).unwrap();
        t.ack(6).unwrap();
        assert_eq!(t.ack(6), Err(OffsetError::TooManyAcks(6)));
    }

    /// One step of the runtime's life: a record or task of some message settles, or a task
    /// adds records before settling.
    #[derive(Debug, Clone)]
    enum Op {
        Ack(usize),
        Add(usize, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..64usize).prop_map(Op::Ack),
            (0..64usize, 1..3u32).prop_map(|(i, n)| Op::Add(i, n)),
        ]
    }

    proptest! {
        /// Whatever the interleaving, the committable offset never passes a message that is not
        /// done, and once everything is settled it is one past the last offset.
        #[test]
        fn committable_never_passes_an_undone_message(
            messages in prop::collection::vec((1..4i64, 0..3u32), 1..64),
            ops in prop::collection::vec(op(), 0..400),
        ) {
            let offsets: Vec<i64> = messages.iter().scan(0i64, |acc, (g, _)| { *acc += g; Some(*acc) }).collect();
            let mut t = PartitionOffsets::new();
            // The model: per message, (units expected, units settled).
            let mut model: Vec<(u32, u32)> = Vec::new();
            for (&o, &(_, units)) in offsets.iter().zip(&messages) {
                t.finished_with(o, units).unwrap();
                model.push((units, 0));
            }
            for op in ops {
                match op {
                    Op::Ack(i) => {
                        let i = i % offsets.len();
                        if model[i].1 < model[i].0 {
                            t.ack(offsets[i]).unwrap();
                            model[i].1 += 1;
                        }
                    }
                    Op::Add(i, n) => {
                        let i = i % offsets.len();
                        if model[i].1 < model[i].0 {
                            t.add_unacked(offsets[i], n).unwrap();
                            model[i].0 += n;
                        }
                    }
                }
                let done_prefix = model.iter().take_while(|m| m.0 == m.1).count();
                let expected = done_prefix.checked_sub(1).map(|i| offsets[i] + 1);
                prop_assert_eq!(t.committable(), expected);
                prop_assert_eq!(t.settled(), model.iter().all(|m| m.0 == m.1));
            }
            for (i, m) in model.iter_mut().enumerate() {
                while m.1 < m.0 { t.ack(offsets[i]).unwrap(); m.1 += 1; }
            }
            prop_assert_eq!(t.committable(), offsets.last().map(|o| o + 1));
            prop_assert_eq!(t.in_flight(), 0);
        }
    }
}
