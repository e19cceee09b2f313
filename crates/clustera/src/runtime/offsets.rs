//! Which offsets of one partition are safe to commit. Pure bookkeeping, no I/O.
//!
//! A message is *done* when its outcome is final and every record it caused (outputs or its
//! dead-letter record) has been acknowledged by the broker. Acknowledgements arrive out of order,
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
}

impl Entry {
    fn done(&self) -> bool {
        self.finished && self.unacked == 0
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

    /// Starts tracking `offset`. Offsets must increase; gaps (compaction, transaction markers)
    /// are fine.
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
        });
        Ok(())
    }

    /// Begins and finishes `offset` in one step, with `unacked` records about to be sent for it.
    /// A partition's worker is sequential, so a message need not be tracked while the kernel
    /// runs: nothing later can finish before it, and the committable offset can reach it but
    /// never pass it.
    pub fn finished_with(&mut self, offset: i64, unacked: u32) -> Result<(), OffsetError> {
        self.begin(offset)?;
        if let Some(entry) = self.in_flight.back_mut() {
            entry.unacked = unacked;
            entry.finished = true;
        }
        self.advance();
        Ok(())
    }

    /// Records that `count` more records were produced on behalf of `offset`. Call it before
    /// sending them, so that an acknowledgement can never arrive first.
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

    /// Records that the outcome for `offset` is final.
    pub fn finish(&mut self, offset: i64) -> Result<(), OffsetError> {
        self.entry_mut(offset)?.finished = true;
        self.advance();
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

    /// Messages done since creation.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Records still waiting for an acknowledgement.
    pub fn unacked(&self) -> u64 {
        self.in_flight.iter().map(|e| u64::from(e.unacked)).sum()
    }

    /// Whether every message begun is finished and every record acknowledged, ignoring messages
    /// that were begun but never finished (they will be redelivered to whoever reads next).
    pub fn settled(&self) -> bool {
        self.in_flight.iter().all(|e| e.unacked == 0)
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
        t.begin(10).unwrap();
        t.add_unacked(10, 1).unwrap();
        t.finish(10).unwrap();
        assert_eq!(t.committable(), None, "output not yet acked");
        t.ack(10).unwrap();
        assert_eq!(t.committable(), Some(11));
        assert_eq!(t.completed(), 1);
    }

    #[test]
    fn later_done_message_does_not_overtake_earlier_pending_one() {
        let mut t = PartitionOffsets::new();
        for o in [0, 1, 2] {
            t.begin(o).unwrap();
        }
        t.add_unacked(0, 2).unwrap();
        for o in [0, 1, 2] {
            t.finish(o).unwrap();
        }
        assert_eq!(t.committable(), None);
        t.ack(0).unwrap();
        assert_eq!(t.committable(), None);
        t.ack(0).unwrap();
        assert_eq!(t.committable(), Some(3));
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
        t.begin(5).unwrap();
        t.begin(9).unwrap();
        t.finish(9).unwrap();
        t.finish(5).unwrap();
        assert_eq!(t.committable(), Some(10));
    }

    #[test]
    fn misuse_is_reported_not_panicked() {
        let mut t = PartitionOffsets::new();
        t.begin(3).unwrap();
        assert_eq!(
            t.begin(3),
            Err(OffsetError::OutOfOrder { offset: 3, last: 3 })
        );
        assert_eq!(t.ack(3), Err(OffsetError::TooManyAcks(3)));
        assert_eq!(t.finish(4), Err(OffsetError::NotInFlight(4)));
    }

    #[test]
    fn settled_ignores_unfinished_but_waits_for_acks() {
        let mut t = PartitionOffsets::new();
        t.begin(0).unwrap();
        assert!(
            t.settled(),
            "an unfinished message without outputs is settled"
        );
        t.add_unacked(0, 1).unwrap();
        assert!(!t.settled());
        t.ack(0).unwrap();
        assert!(t.settled());
        assert_eq!(t.committable(), None, "still not finished");
    }

    /// One step of the runtime's life: begin, produce, ack or finish some message.
    #[derive(Debug, Clone)]
    enum Op {
        Produce(usize, u32),
        Ack(usize),
        Finish(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..64usize, 1..3u32).prop_map(|(i, n)| Op::Produce(i, n)),
            (0..64usize).prop_map(Op::Ack),
            (0..64usize).prop_map(Op::Finish),
        ]
    }

    proptest! {
        /// Whatever the interleaving, the committable offset never passes a message that is not
        /// done, and once everything is done it is one past the last offset.
        #[test]
        fn committable_never_passes_an_undone_message(
            gaps in prop::collection::vec(1..4i64, 1..64),
            ops in prop::collection::vec(op(), 0..400),
        ) {
            let offsets: Vec<i64> = gaps.iter().scan(0i64, |acc, g| { *acc += g; Some(*acc) }).collect();
            let mut t = PartitionOffsets::new();
            for &o in &offsets { t.begin(o).unwrap(); }
            // The model: per message, (produced, acked, finished).
            let mut model = vec![(0u32, 0u32, false); offsets.len()];
            for op in ops {
                match op {
                    Op::Produce(i, n) => {
                        let i = i % offsets.len();
                        if !model[i].2 {
                            t.add_unacked(offsets[i], n).unwrap();
                            model[i].0 += n;
                        }
                    }
                    Op::Ack(i) => {
                        let i = i % offsets.len();
                        if model[i].1 < model[i].0 {
                            t.ack(offsets[i]).unwrap();
                            model[i].1 += 1;
                        }
                    }
                    Op::Finish(i) => {
                        let i = i % offsets.len();
                        if !model[i].2 {
                            t.finish(offsets[i]).unwrap();
                            model[i].2 = true;
                        }
                    }
                }
                let done_prefix = model.iter().take_while(|m| m.2 && m.0 == m.1).count();
                let expected = done_prefix.checked_sub(1).map(|i| offsets[i] + 1);
                prop_assert_eq!(t.committable(), expected);
            }
            // Finish and ack everything: the whole partition becomes committable.
            for (i, m) in model.iter_mut().enumerate() {
                while m.1 < m.0 { t.ack(offsets[i]).unwrap(); m.1 += 1; }
                if !m.2 { t.finish(offsets[i]).unwrap(); m.2 = true; }
            }
            prop_assert_eq!(t.committable(), offsets.last().map(|o| o + 1));
            prop_assert_eq!(t.in_flight(), 0);
        }
    }
}
