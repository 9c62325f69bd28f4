//! How many range messages (DESIGN §10) one worker holds at once.
//!
//! A range waits for part slots in the worker that received it, its message hidden
//! from every other worker. So a worker holds no more ranges than its
//! `transfer.max_parts` copies at once (`max_parts` ÷ parts per range, at least
//! one), and one more, which lists its upload meanwhile and starts as part slots
//! free: while it holds that many it receives no range (and, without a range
//! queue, nothing at all: see [`crate::daemon`]), and a range received beyond
//! them (a batch of ten can bring several) is sent again for another worker and its
//! own message deleted, rather than released, which would count a receive against
//! the queue's `maxReceiveCount`. No range message is then held much longer than one
//! range takes, and a worker killed loses at most the ranges it was copying. When
//! the range queue runs dry, the parts of a range in hand that wait for part
//! slots are shared with a worker that waits ([`super::share`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::share::Unstarted;
use crate::queue::MAX_BATCH;

#[derive(Debug)]
pub struct Ranges {
    max_parts: usize,
    in_hand: AtomicUsize,
    /// Parts in the last range received: ranges are sized alike.
    parts_per_range: AtomicUsize,
    freed: Notify,
    /// The ranges at work here, whose parts not yet started may be shared
    /// ([`super::share`]).
    at_work: Mutex<Vec<Weak<Unstarted>>>,
}

/// A range in hand; dropping it frees its place.
#[derive(Debug)]
pub struct RangeSlot(Arc<Ranges>);

impl Drop for RangeSlot {
    fn drop(&mut self) {
        self.0.in_hand.fetch_sub(1, Ordering::SeqCst);
        self.0.freed.notify_one();
    }
}

impl Ranges {
    pub fn new(max_parts: usize) -> Arc<Self> {
        Arc::new(Self {
            max_parts: max_parts.max(1),
            in_hand: AtomicUsize::new(0),
            parts_per_range: AtomicUsize::new(1),
            freed: Notify::new(),
            at_work: Mutex::new(Vec::new()),
        })
    }

    /// Range `range` is at work here until it is dropped.
    pub fn at_work(&self, range: &Arc<Unstarted>) {
        let mut at_work = self.at_work.lock().expect("not poisoned");
        at_work.retain(|r| r.strong_count() > 0);
        at_work.push(Arc::downgrade(range));
    }

    /// The range at work here with the most parts not yet started.
    pub fn fullest(&self) -> Option<Arc<Unstarted>> {
        let at_work = self.at_work.lock().expect("not poisoned");
        at_work
            .iter()
            .filter_map(Weak::upgrade)
            .max_by_key(|range| range.left())
    }

    /// The ranges this worker's parts copy at once, and one more: that one lists its
    /// upload and its parts while the others copy, and its parts take the part
    /// slots as theirs free, so a worker never waits between ranges.
    fn capacity(&self) -> usize {
        let per = self.parts_per_range.load(Ordering::SeqCst).max(1);
        self.max_parts.div_ceil(per) + 1
    }

    /// How many messages the next receive may take: the ranges still to fit, by the
    /// size of the last range received (ranges are sized alike; before any, one
    /// part each), at most a batch.
    pub fn room(&self) -> usize {
        let held = self.in_hand.load(Ordering::SeqCst);
        self.capacity().saturating_sub(held).min(MAX_BATCH)
    }

    /// Waits until a range is let go, or `most` has passed.
    pub async fn wait_for_room(&self, most: Duration) {
        let _ = tokio::time::timeout(most, self.freed.notified()).await;
    }

    /// Takes a place for a range of `parts` parts; None if the worker holds all it
    /// can copy.
    pub fn take(self: &Arc<Self>, parts: usize) -> Option<RangeSlot> {
        self.parts_per_range.store(parts.max(1), Ordering::SeqCst);
        let capacity = self.capacity();
        self.in_hand
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                (held < capacity).then_some(held + 1)
            })
            .ok()
            .map(|_| RangeSlot(Arc::clone(self)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_holds_the_ranges_its_parts_copy_at_once_and_one_more() {
        let ranges = Ranges::new(4);
        assert_eq!(ranges.room(), 5, "nothing known yet: ranges of one part");
        let first = ranges
            .take(16)
            .expect("one range of 16 parts fits 4 part slots");
        let next = ranges.take(16).expect("and one more, ready to start");
        assert!(ranges.take(16).is_none(), "a third does not");
        assert_eq!(ranges.room(), 0);
        drop(first);
        assert_eq!(ranges.room(), 1, "the size of the ranges is known now");
        drop(next);
        assert_eq!(ranges.room(), 2);

        let ranges = Ranges::new(64);
        assert_eq!(ranges.room(), MAX_BATCH, "at most a batch");
        let held: Vec<_> = (0..5).map(|_| ranges.take(16).expect("fits")).collect();
        assert!(ranges.take(16).is_none());
        drop(held);
        let one = ranges.take(16).unwrap();
        assert_eq!(ranges.room(), 4);
        drop(one);
    }
}
