//! The memory budget: object bytes buffered at once, across every transfer.
//!
//! Before a GET is sent, the bytes it will hold in memory are reserved here, and the
//! reservation is released when the upload has finished (or failed): a buffered
//! part or object reserves its whole size, which is held between the read and the
//! upload; a streamed part or PUT reserves its window ([`super::stream::STREAM_WINDOW`]),
//! the most its channel holds at once. So however many objects and parts are in
//! flight, the object bytes in memory never exceed `transfer.memory_limit`. Waiters are served first come, first served (tokio's
//! semaphore is fair), so a large part is not starved by small ones.
//!
//! Permits are counted in KiB so that a 5 GiB part fits the semaphore's `u32`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics;

const UNIT: u64 = 1024;

/// A byte budget shared by all transfers of one process.
#[derive(Clone, Debug)]
pub struct MemoryBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    permits: Arc<Semaphore>,
    limit: u64,
    reserved: AtomicU64,
    peak: AtomicU64,
}

/// Bytes held from the budget; released on drop.
#[derive(Debug)]
pub struct Reservation {
    bytes: u64,
    budget: Arc<Inner>,
    _permit: OwnedSemaphorePermit,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> Self {
        let units = limit / UNIT;
        Self {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(units as usize)),
                limit,
                reserved: AtomicU64::new(0),
                peak: AtomicU64::new(0),
            }),
        }
    }

    /// The configured limit in bytes.
    pub fn limit(&self) -> u64 {
        self.inner.limit
    }

    /// Whether a reservation of `bytes` can ever be granted.
    pub fn fits(&self, bytes: u64) -> bool {
        bytes.div_ceil(UNIT) <= self.inner.limit / UNIT
    }

    /// Waits until `bytes` can be held. The caller checks [`MemoryBudget::fits`] first:
    /// a reservation larger than the whole budget would wait forever.
    /// The error of parts that must be held whole (a KMS target: each is sent with
    /// Content-MD5) but, at `part` bytes, would not fit the budget.
    pub fn too_large_to_buffer(&self, part: u64) -> crate::transfer::TransferError {
        crate::transfer::TransferError::Unsupported(format!(
            "the object needs parts of {part} bytes held whole (the target's ETags are opaque, so each part \
             is sent with Content-MD5), more than transfer.memory_limit ({} bytes): raise transfer.memory_limit",
            self.limit()
        ))
    }

    pub async fn reserve(&self, bytes: u64) -> Reservation {
        debug_assert!(self.fits(bytes), "reservation larger than the budget");
        let units = u32::try_from(bytes.div_ceil(UNIT)).expect("a part is at most 5 GiB");
        let permit = Arc::clone(&self.inner.permits)
            .acquire_many_owned(units)
            .await
            .expect("the budget's semaphore is never closed");
        let now = self.inner.reserved.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.inner.peak.fetch_max(now, Ordering::SeqCst);
        metrics::MEMORY_RESERVED.add(bytes as i64);
        Reservation {
            bytes,
            budget: Arc::clone(&self.inner),
            _permit: permit,
        }
    }

    /// Bytes reserved now.
    pub fn reserved(&self) -> u64 {
        self.inner.reserved.load(Ordering::SeqCst)
    }

    /// The most bytes ever reserved at once.
    pub fn peak(&self) -> u64 {
        self.inner.peak.load(Ordering::SeqCst)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.reserved.fetch_sub(self.bytes, Ordering::SeqCst);
        metrics::MEMORY_RESERVED.sub(self.bytes as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn reservations_beyond_the_limit_wait_for_a_release() {
        let budget = MemoryBudget::new(10 * UNIT);
        let first = budget.reserve(6 * UNIT).await;
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(6 * UNIT).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "12 KiB were granted from a 10 KiB budget"
        );
        assert_eq!(budget.reserved(), 6 * UNIT);
        drop(first);
        let second = waiting.await.unwrap();
        assert_eq!(budget.reserved(), 6 * UNIT);
        assert_eq!(budget.peak(), 6 * UNIT);
        drop(second);
        assert_eq!(budget.reserved(), 0);
    }

    #[test]
    fn fits_rejects_a_part_larger_than_the_budget() {
        let budget = MemoryBudget::new(16 * 1024 * 1024);
        assert!(budget.fits(16 * 1024 * 1024));
        assert!(!budget.fits(16 * 1024 * 1024 + 1));
    }
}
