//! Backoff, written once.
//!
//! Every pause before trying again, whether a part, a key, a receive, a breaker
//! probe or a failed message's return to the queue, grows the same way: `first`,
//! doubled per attempt, capped at `max`. [`Policy::run`] is the loop for work that
//! is retried in place a bounded number of times while its error is passing.

use std::future::Future;
use std::time::Duration;

use crate::error::ErrorKind;

/// The pause before retry `attempt` (1-based): `first`, doubled per attempt, at most `max`.
pub fn backoff(attempt: u32, first: Duration, max: Duration) -> Duration {
    first
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)))
        .min(max)
}

/// How often and how patiently work is retried in place.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Tries in all, the first included.
    pub attempts: u32,
    pub first: Duration,
    pub max: Duration,
}

impl Policy {
    /// One part's GET and upload: a streamed body cannot be replayed by the SDK, so
    /// a passing failure is retried here, by reading the bytes again.
    pub const PART: Policy = Policy {
        attempts: 4,
        first: Duration::from_millis(200),
        max: Duration::from_millis(3200),
    };

    /// Runs `attempt` until it succeeds, fails for a reason that is not passing
    /// ([`ErrorKind::Transient`]), or has been tried [`Policy::attempts`] times.
    pub async fn run<T, E, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Kind + std::fmt::Display,
    {
        let mut tried = 1;
        loop {
            match attempt().await {
                Err(e) if e.kind() == ErrorKind::Transient && tried < self.attempts => {
                    tracing::warn!(what, attempt = tried, error = %e, "failed; retrying");
                    tokio::time::sleep(backoff(tried, self.first, self.max)).await;
                    tried += 1;
                }
                result => return result,
            }
        }
    }
}

/// An error that knows its [`ErrorKind`].
pub trait Kind {
    fn kind(&self) -> ErrorKind;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let (s1, s900) = (Duration::from_secs(10), Duration::from_secs(900));
        assert_eq!(backoff(1, s1, s900), Duration::from_secs(10));
        assert_eq!(backoff(2, s1, s900), Duration::from_secs(20));
        assert_eq!(backoff(4, s1, s900), Duration::from_secs(80));
        assert_eq!(backoff(9, s1, s900), s900);
        assert_eq!(backoff(u32::MAX, s1, s900), s900);
        assert_eq!(backoff(0, s1, s900), s1);
    }
}
