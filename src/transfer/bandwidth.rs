//! `transfer.max_bandwidth`: a cap on the bytes this worker reads from the source,
//! every copy and part together. A token bucket topped up ten times a second lets
//! each chunk of a body through once it holds the chunk's bytes, so the rate is
//! smooth (at most a tenth of a second's worth goes at once) and no object is
//! paused whole. Reading slower, each copy also writes slower: the cap holds on the
//! link whichever way the bytes cross it. The time copies wait is counted
//! (`xpsync_bandwidth_limited_seconds_total`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use leaky_bucket::RateLimiter;

use crate::metrics;

/// Times a second the bucket is topped up.
const REFILLS_PER_SECOND: u64 = 10;

/// The cap, shared by every copy of the process; none when unset.
#[derive(Clone, Debug, Default)]
pub struct Bandwidth(Option<Arc<RateLimiter>>);

impl Bandwidth {
    /// A cap of `bytes_per_second`; None: no cap.
    pub fn new(bytes_per_second: Option<u64>) -> Self {
        Self(bytes_per_second.map(|rate| {
            let refill = (rate / REFILLS_PER_SECOND).max(1) as usize;
            let limiter = RateLimiter::builder()
                .initial(refill)
                .refill(refill)
                .max(refill)
                .interval(Duration::from_millis(1000 / REFILLS_PER_SECOND))
                .build();
            Arc::new(limiter)
        }))
    }

    /// Whether a cap is set.
    pub fn capped(&self) -> bool {
        self.0.is_some()
    }

    /// Waits until `bytes` more may be read.
    pub async fn take(&self, bytes: usize) {
        let Some(limiter) = &self.0 else { return };
        let started = Instant::now();
        limiter.acquire(bytes).await;
        metrics::BANDWIDTH_LIMITED.inc_by(started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bytes_go_at_the_cap_a_tenth_of_a_second_at_a_time() {
        let cap = Bandwidth::new(Some(1024 * 1024));
        let started = tokio::time::Instant::now();
        for _ in 0..40 {
            cap.take(64 * 1024).await; // 2.5 MiB in all
        }
        let took = started.elapsed();
        // A tenth of a second's worth at once, then 1 MiB a second.
        assert!(took >= Duration::from_millis(2_300), "{took:?}");
        assert!(took <= Duration::from_millis(2_600), "{took:?}");
        assert!(!Bandwidth::new(None).capped());
    }
}
