//! Operator commands over the same machinery as the daemon: streamed listings of
//! both sides ([`listing`]) compared key by key ([`compare`]), reported by
//! [`verify`] and acted on by [`backfill`]; copies made in another part layout
//! recognised by their bytes ([`adopt`]); and the dead-letter queue ([`dlq`]).

pub mod adopt;
pub mod backfill;
pub mod compare;
pub mod dlq;
pub mod listing;
pub mod progress;
pub mod verify;

use std::sync::Arc;

use crate::aws::{self, AwsError, S3Side};
use crate::config::Config;
use crate::reconcile::Reconciler;

/// What `verify`, `backfill` and `adopt` work on: both sides, connected, and the
/// configuration.
#[derive(Debug, Clone)]
pub struct Ops {
    pub source: S3Side,
    pub target: S3Side,
    pub config: Arc<Config>,
}

impl Ops {
    /// Connects both sides as `config` says.
    pub async fn connect(config: Config) -> Result<Self, AwsError> {
        let (source, target) = aws::connect(&config).await?;
        Ok(Self {
            source,
            target,
            config: Arc::new(config),
        })
    }

    /// A reconciler between the two sides that copies whole (never splits).
    pub fn reconciler(&self) -> Reconciler {
        Reconciler::new(
            self.source.clone(),
            self.target.clone(),
            Arc::clone(&self.config),
        )
    }

    /// The target key of source key `key`.
    pub fn target_key(&self, key: &str) -> String {
        format!("{}{key}", self.config.target.key_prefix)
    }
}
