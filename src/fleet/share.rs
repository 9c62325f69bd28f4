//! The parts of a range in hand that no part slot has taken yet, and the share of
//! them a worker hands out when the range queue runs dry (DESIGN §10).
//!
//! Ranges are cut alike, so the last ranges of a split would leave some workers
//! idle while others still copy theirs (eight ranges over three workers: one
//! idle for a whole range at the end), and a range over a slow connection would
//! hold its object back alone. So a worker whose receive on the range queue comes
//! back empty sends the upper half of the parts not yet started of the range it
//! holds with the most of them, as a range message of their own, for whichever
//! worker is waiting on the queue, when two or more are left. A part is started
//! once one of the worker's part slots is free for it, so the parts left wait for
//! this worker's slots, which are all busy: halving, the tail of a split shrinks
//! to a part or two per worker.
//!
//! The parts are taken under a lock, held while the message is sent (at most
//! [`crate::fleet::worker`]'s limit): no part of the share is started here
//! meanwhile, and a send that fails keeps them all. The range's own message still
//! names the whole range until it ends: a worker killed after sending a share, or
//! whose range fails and comes back, costs the share's parts twice, never loses
//! them.

use std::collections::VecDeque;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedSemaphorePermit};

use super::message::RangeWork;
use crate::transfer::part::part_slot;
use crate::transfer::Copier;

/// One part to copy: its number, and its bytes in the object.
pub type PartRange = (usize, Range<u64>);

/// A range in hand, and its parts not yet started.
#[derive(Debug)]
pub struct Unstarted {
    /// The range's source bucket and key, to send a share of it.
    pub bucket: String,
    pub key: String,
    work: RangeWork,
    parts: Mutex<VecDeque<PartRange>>,
}

impl Unstarted {
    /// Range `work` of `key`, none of its parts known yet ([`Self::fill`]).
    pub fn new(bucket: &str, key: &str, work: &RangeWork) -> Arc<Self> {
        Arc::new(Self {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            work: work.clone(),
            parts: Mutex::new(VecDeque::new()),
        })
    }

    /// The parts the range is to copy, in order.
    pub async fn fill(&self, parts: Vec<PartRange>) {
        *self.parts.lock().await = parts.into();
    }

    /// The next part to start, taken from the range for good.
    pub async fn next(&self) -> Option<PartRange> {
        self.parts.lock().await.pop_front()
    }

    /// The parts, each taken ([`Self::next`]) once one of `copier`'s part slots is
    /// free, with its slot: parts waiting for a slot are still the range's to
    /// share.
    pub fn parts<'c>(
        self: &Arc<Self>,
        copier: &'c Copier,
    ) -> impl futures::Stream<Item = (OwnedSemaphorePermit, PartRange)> + 'c {
        futures::stream::unfold(Arc::clone(self), move |range| async move {
            // A range with nothing left ends now, not once a slot frees.
            if range.parts.lock().await.is_empty() {
                return None;
            }
            let slot = part_slot(copier).await;
            let next = range.next().await?;
            Some(((slot, next), range))
        })
    }

    /// The range has ended (copied, or not): nothing is left to share.
    pub async fn close(&self) {
        self.parts.lock().await.clear();
    }

    /// Parts not yet started (0 while a share is being sent).
    pub fn left(&self) -> usize {
        self.parts.try_lock().map_or(0, |parts| parts.len())
    }

    /// If more than `more_than` parts are left, gives `send` the upper half of them
    /// as a range of their own; they are no longer this range's once it is sent.
    /// Whether a share was sent.
    pub async fn share<F, Sent>(&self, more_than: usize, send: F) -> bool
    where
        F: FnOnce(RangeWork) -> Sent,
        Sent: Future<Output = bool>,
    {
        let mut parts = self.parts.lock().await;
        let Some((from, share)) = upper_half(&self.work, &parts, more_than) else {
            return false;
        };
        if !send(share).await {
            return false;
        }
        parts.truncate(from);
        true
    }
}

/// Of the parts `left` of range `work`, where more than `more_than` are: the index
/// of the first of their upper half, and the range from it to the last part left
/// (parts between already in the upload are skipped by the worker that copies it;
/// parts after it, shared before, are another range's).
fn upper_half(
    work: &RangeWork,
    left: &VecDeque<PartRange>,
    more_than: usize,
) -> Option<(usize, RangeWork)> {
    if left.len() <= more_than.max(1) {
        return None;
    }
    let from = left.len() - left.len() / 2;
    let (first, bytes) = &left[from];
    let (last, _) = left.back()?;
    let offset = |number: usize| number.checked_sub(work.first_part as usize);
    let share = RangeWork {
        first_part: u32::try_from(*first).ok()?,
        last_part: u32::try_from(*last).ok()?,
        first_byte: bytes.start,
        part_sizes: work
            .part_sizes
            .get(offset(*first)?..=offset(*last)?)?
            .to_vec(),
        ..work.clone()
    };
    Some((from, share))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etag::ETag;

    fn range_of(sizes: &[u64], first_part: u32, first_byte: u64) -> RangeWork {
        RangeWork {
            upload_id: "u".into(),
            etag: ETag::new("e"),
            first_part,
            last_part: first_part + sizes.len() as u32 - 1,
            first_byte,
            part_sizes: sizes.to_vec(),
            target_kms: false,
            layout_parts: 40,
            object_size: 400,
            preserved: true,
            parts_per_range: sizes.len() as u32,
            restarts: 0,
        }
    }

    fn parts_of(work: &RangeWork) -> VecDeque<PartRange> {
        let mut start = work.first_byte;
        work.part_sizes
            .iter()
            .enumerate()
            .map(|(i, size)| {
                start += size;
                (work.first_part as usize + i, start - size..start)
            })
            .collect()
    }

    #[test]
    fn the_upper_half_of_the_parts_left_goes_as_a_range_to_the_end_of_this_one() {
        // Parts 11 to 20 of 10 bytes each; 11 and 12 started, 15 already there.
        let work = range_of(&[10; 10], 11, 100);
        let mut left = parts_of(&work);
        left.drain(..2);
        left.retain(|(n, _)| *n != 15);
        assert_eq!(left.len(), 7);
        let (from, share) = upper_half(&work, &left, 4).expect("7 left, more than 4");
        assert_eq!(from, 4, "keeps 13, 14, 16, 17; shares 18 to 20");
        assert_eq!((share.first_part, share.last_part), (18, 20));
        assert_eq!(share.first_byte, 170);
        assert_eq!(share.part_sizes, vec![10, 10, 10]);
        // Shared: what is left ends at 17, and a second share ends there too.
        left.truncate(from);
        let (_, again) = upper_half(&work, &left, 1).expect("4 left");
        assert_eq!((again.first_part, again.last_part), (16, 17));
        assert_eq!((again.first_byte, again.part_sizes.len()), (150, 2));
        assert_eq!(
            (share.upload_id.as_str(), share.layout_parts),
            ("u", 40),
            "the rest is the range's"
        );
        assert!(
            upper_half(&work, &left, 7).is_none(),
            "7 left, not more than 7"
        );
        let one = VecDeque::from([(20, 190..200)]);
        assert!(
            upper_half(&work, &one, 0).is_none(),
            "one part is never split"
        );
    }

    #[tokio::test]
    async fn a_share_is_the_ranges_no_more_once_sent_and_stays_if_the_send_fails() {
        let work = range_of(&[10; 8], 1, 0);
        let range = Unstarted::new("b", "k", &work);
        range.fill(parts_of(&work).into()).await;
        assert_eq!(range.next().await.map(|(n, _)| n), Some(1));
        assert!(!range.share(2, |_| async { false }).await);
        assert_eq!(range.left(), 7, "a failed send keeps every part");
        let mut sent = None;
        assert!(
            range
                .share(2, |share| {
                    sent = Some(share);
                    async { true }
                })
                .await
        );
        let sent = sent.expect("a share");
        assert_eq!((sent.first_part, sent.last_part), (6, 8));
        assert_eq!(range.left(), 4);
        let mut kept = Vec::new();
        while let Some((n, _)) = range.next().await {
            kept.push(n);
        }
        assert_eq!(kept, [2, 3, 4, 5]);
    }
}
