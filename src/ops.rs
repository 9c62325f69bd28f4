//! Operator commands over the same machinery as the daemon: listing both sides and
//! comparing them ([`listing`]), and reporting differences ([`verify`]).

pub mod listing;
pub mod verify;
