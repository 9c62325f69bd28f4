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
