//! xpsync keeps an S3 bucket in one AWS partition in sync with a bucket in another,
//! where S3 Replication cannot reach. See the README for the architecture.

pub mod archive;
pub mod aws;
pub mod checksum;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod error;
pub mod etag;
pub mod event;
pub mod fleet;
pub mod health;
pub mod http;
pub mod keylocks;
pub mod metrics;
pub mod object;
pub mod ops;
pub mod protection;
pub mod queue;
pub mod reconcile;
pub mod retry;
pub mod transfer;
