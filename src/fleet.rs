//! One object shared by the whole fleet (DESIGN §10): the wing that splits it, copies
//! its ranges and completes it. A change to how splits work stays in here.
//!
//! An object of at least `transfer.split_threshold` is not copied by the worker that
//! receives its key. That worker *splits* it: it creates (or joins) the multipart
//! upload on the target, and sends one **range** message per run of parts and a
//! delayed **check** message. Any worker copies a range; the check, when it comes,
//! lists the upload's parts (S3's own ledger: no other state exists) and completes
//! the object, or sends the ranges still missing again.
//!
//! The wing has four rooms, and reaches the rest of xpsync through the same entry
//! points as everything else:
//!
//! - [`message`]: what travels between workers, one serde type ([`Native`]) for
//!   every native message, the key message included;
//! - [`ledger`]: the target's multipart upload as the split's ledger ([`Ledger`],
//!   borrowing the [`crate::transfer::Copier`]): split, copy a range, look at the
//!   upload, complete it. [`crate::reconcile::Reconciler`] calls it, so a split
//!   completion is told and checked as any copy is;
//! - [`worker`]: the daemon's side ([`Worker`]): sends a split's messages, copies a
//!   range, checks an upload, and says what becomes of the message in hand;
//! - [`ranges`]: how many range messages one worker holds at once, and [`share`]:
//!   the half of a range's parts not yet started that a worker hands out when the
//!   range queue runs dry;
//! - `marker` and `uploads`: the version tag of a split's upload, and the lookups
//!   of a key's uploads by it.

pub mod ledger;
mod marker;
pub mod message;
pub mod ranges;
pub mod share;
mod uploads;
pub mod worker;

pub use ledger::{CheckOutcome, Ledger, RangeOutcome};
pub use message::{parts_per_range, CheckWork, Native, RangeWork, Restart, Split, MAX_RESTARTS};
pub use ranges::Ranges;
pub use worker::{Step, Verdict, Worker};
