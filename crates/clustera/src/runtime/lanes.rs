//! Which of a partition's taken messages may be processed now, when processing is concurrent
//! (`CLUSTERA_ORDERING=key` or `none`). Pure bookkeeping, no I/O.
//!
//! Under `key`, a message whose key has another message in process waits in that key's lane
//! and starts when the one before it is finished, so every key's messages are processed in
//! their order while different keys run concurrently. A retried message therefore holds back
//! only its own key. Messages without a key carry no order (Kafka spreads them over
//! partitions anyway): they run concurrently, as under `none`.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

/// How the messages of one partition are ordered (`CLUSTERA_ORDERING`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProcessingOrder {
    /// One message at a time, in offset order (the default).
    #[default]
    Partition,
    /// Messages of one key in order, different keys concurrently.
    Key,
    /// Every message concurrently.
    Unordered,
}

impl std::str::FromStr for ProcessingOrder {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "partition" => Ok(Self::Partition),
            "key" => Ok(Self::Key),
            "none" => Ok(Self::Unordered),
            other => Err(format!(
                "{other:?} is not an ordering (expected partition, key or none)"
            )),
        }
    }
}

/// The lane a message runs in: its key under `key` ordering; `None` for no lane.
pub(crate) type LaneKey = Option<Bytes>;

/// A partition's messages in process and waiting behind a busy key.
#[derive(Debug)]
pub(crate) struct Lanes<M> {
    ordering: ProcessingOrder,
    /// Keys with a message in process, with the messages of that key waiting behind it.
    busy: HashMap<Bytes, VecDeque<M>>,
    running: usize,
    waiting: usize,
}

impl<M> Lanes<M> {
    pub(crate) fn new(ordering: ProcessingOrder) -> Self {
        Self {
            ordering,
            busy: HashMap::new(),
            running: 0,
            waiting: 0,
        }
    }

    /// The lane of a message with `key`.
    pub(crate) fn lane(&self, key: Option<&[u8]>) -> LaneKey {
        match self.ordering {
            ProcessingOrder::Key => key.map(Bytes::copy_from_slice),
            ProcessingOrder::Partition | ProcessingOrder::Unordered => None,
        }
    }

    /// A message taken from the partition: returned if it may start now, else kept until
    /// the message before it in its lane is done.
    pub(crate) fn admit(&mut self, lane: &LaneKey, message: M) -> Option<M> {
        let Some(key) = lane else {
            self.running += 1;
            return Some(message);
        };
        match self.busy.get_mut(key) {
            Some(queue) => {
                queue.push_back(message);
                self.waiting += 1;
                None
            }
            None => {
                self.busy.insert(key.clone(), VecDeque::new());
                self.running += 1;
                Some(message)
            }
        }
    }

    /// A message of `lane` is done: the next one of its lane, which may start now.
    pub(crate) fn done(&mut self, lane: &LaneKey) -> Option<M> {
        self.running = self.running.saturating_sub(1);
        let key = lane.as_ref()?;
        let queue = self.busy.get_mut(key)?;
        match queue.pop_front() {
            Some(next) => {
                self.waiting -= 1;
                self.running += 1;
                Some(next)
            }
            None => {
                self.busy.remove(key);
                None
            }
        }
    }

    /// Messages taken and not yet done: in process or waiting.
    pub(crate) fn in_flight(&self) -> usize {
        self.running + self.waiting
    }

    /// Messages in process now.
    pub(crate) fn running(&self) -> usize {
        self.running
    }

    /// Empties the lanes (the partition stopped): the messages that never started.
    pub(crate) fn take_waiting(&mut self) -> Vec<M> {
        self.waiting = 0;
        self.busy.drain().flat_map(|(_, q)| q).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn orderings_parse_and_bad_ones_are_named() {
        assert_eq!("key".parse(), Ok(ProcessingOrder::Key));
        assert_eq!(" Partition ".parse(), Ok(ProcessingOrder::Partition));
        assert_eq!("none".parse(), Ok(ProcessingOrder::Unordered));
        let e = "keys".parse::<ProcessingOrder>().unwrap_err();
        assert!(e.contains("\"keys\""), "{e}");
    }

    #[test]
    fn a_busy_key_queues_and_other_keys_run() {
        let mut lanes = Lanes::new(ProcessingOrder::Key);
        let a = lanes.lane(Some(b"a"));
        let b = lanes.lane(Some(b"b"));
        assert_eq!(lanes.admit(&a, 1), Some(1));
        assert_eq!(lanes.admit(&a, 2), None, "a is busy");
        assert_eq!(lanes.admit(&b, 3), Some(3), "b is not");
        assert_eq!(lanes.admit(&a, 4), None);
        assert_eq!((lanes.running(), lanes.in_flight()), (2, 4));
        assert_eq!(lanes.done(&a), Some(2));
        assert_eq!(lanes.done(&b), None);
        assert_eq!(lanes.done(&a), Some(4));
        assert_eq!(lanes.done(&a), None);
        assert_eq!(lanes.in_flight(), 0);
        assert_eq!(lanes.admit(&a, 5), Some(5), "a's lane was released");
    }

    #[test]
    fn keyless_messages_and_unordered_mode_never_wait() {
        let mut lanes = Lanes::new(ProcessingOrder::Key);
        let none = lanes.lane(None);
        assert_eq!(lanes.admit(&none, 1), Some(1));
        assert_eq!(lanes.admit(&none, 2), Some(2));
        let mut unordered = Lanes::new(ProcessingOrder::Unordered);
        let a = unordered.lane(Some(b"a"));
        assert_eq!(a, None);
        assert_eq!(unordered.admit(&a, 1), Some(1));
        assert_eq!(unordered.admit(&a, 2), Some(2));
    }

    proptest! {
        /// Whatever the interleaving of arrivals and completions, each key's messages start
        /// in arrival order, one at a time, and every message starts exactly once.
        #[test]
        fn each_key_starts_in_order_one_at_a_time(
            steps in prop::collection::vec((any::<bool>(), 0..4u8), 1..200),
        ) {
            let mut lanes = Lanes::new(ProcessingOrder::Key);
            let mut next_id = 0u32;
            let mut running: Vec<(u8, u32)> = Vec::new();
            let mut started: Vec<(u8, u32)> = Vec::new();
            let mut arrived: Vec<(u8, u32)> = Vec::new();
            for (arrive, key) in steps {
                if arrive || running.is_empty() {
                    let lane = lanes.lane(Some(&[key]));
                    arrived.push((key, next_id));
                    if let Some(id) = lanes.admit(&lane, next_id) {
                        prop_assert!(!running.iter().any(|(k, _)| *k == key));
                        running.push((key, id));
                        started.push((key, id));
                    }
                    next_id += 1;
                } else {
                    let (k, _) = running.remove(usize::from(key) % running.len());
                    if let Some(id) = lanes.done(&lanes.lane(Some(&[k]))) {
                        running.push((k, id));
                        started.push((k, id));
                    }
                }
                prop_assert_eq!(lanes.running(), running.len());
            }
            for key in 0..4u8 {
                let order = |v: &[(u8, u32)]| v.iter().filter(|(k, _)| *k == key).map(|(_, i)| *i).collect::<Vec<_>>();
                let s = order(&started);
                let a = order(&arrived);
                prop_assert_eq!(&s[..], &a[..s.len()], "starts follow arrivals");
            }
        }
    }
}
