//! `[timeouts]`: how long a request may go unanswered, and the SDK settings made of it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long a request may go unanswered: a server that accepts a request and never
/// answers costs a retry, never a held message.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// To open a connection. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// From a request sent to its answer's first byte, for requests without a
    /// body. An upload gets this plus its length at 128 KiB/s (a 5 GiB part on a
    /// slow link legitimately takes long); an SQS receive gets it plus
    /// `queue.wait_time`. Default: 60s.
    #[serde(with = "humantime_serde")]
    pub first_byte: Duration,
    /// How long a body (read or sent) may make no progress before the transfer is
    /// cut and retried (the SDK's stalled-stream protection). Default: 30s.
    #[serde(with = "humantime_serde")]
    pub between_reads: Duration,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(60),
            between_reads: Duration::from_secs(30),
        }
    }
}

impl TimeoutsConfig {
    /// The slowest rate an upload is allowed before its answer is given up on.
    pub const SLOWEST_UPLOAD: u64 = 128 * 1024;

    /// The SDK's timeouts for requests without a body.
    pub fn sdk(&self) -> aws_config::timeout::TimeoutConfig {
        self.sdk_with_first_byte(self.first_byte)
    }

    /// The SDK's timeouts, with time to first byte `first_byte`.
    pub fn sdk_with_first_byte(&self, first_byte: Duration) -> aws_config::timeout::TimeoutConfig {
        aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(self.connect)
            .read_timeout(first_byte)
            .build()
    }

    /// Time to the answer's first byte for an upload of `length` bytes.
    pub fn upload_first_byte(&self, length: u64) -> Duration {
        self.first_byte + Duration::from_secs(length / Self::SLOWEST_UPLOAD)
    }

    /// The SDK's stalled-stream protection: a body making no progress for
    /// `between_reads` is cut.
    pub fn stalled_streams(
        &self,
    ) -> aws_config::stalled_stream_protection::StalledStreamProtectionConfig {
        aws_config::stalled_stream_protection::StalledStreamProtectionConfig::enabled()
            .grace_period(self.between_reads)
            .build()
    }
}
