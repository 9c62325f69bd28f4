//! What a reconcile knows of a key before it looks, and whether it compares tags.

use crate::object::SourceObject;

/// What is known of a key before it is looked at.
#[derive(Debug, Default)]
pub enum Hint {
    /// Nothing: both sides are HEADed, at once.
    #[default]
    Nothing,
    /// A listing has just shown it on the source so (size, and the ETag if the
    /// listing gave one), and missing from the target. The first attempt sends no
    /// HEAD to the target, and none to the source either when the object can be read
    /// by one GET. Should the key have arrived on the target meanwhile, it is copied
    /// again, which is harmless.
    Listed(SourceObject),
    /// An S3 event described it so (size and ETag); the target is unknown. A small
    /// object stored in one part is then read by one GET (`If-Match` the event's
    /// ETag) sent at the same time as the target's HEAD, with no source HEAD: one
    /// round trip less per object. A stale event's GET fails its `If-Match`, and the
    /// key is reconciled from HEADs.
    Described(SourceObject),
}

/// Whether a reconcile compares the tags too (a HEAD does not show them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tags {
    /// Only the bytes and the description: a tag change alone goes unseen.
    Skip,
    /// The tags as well, brought up to the source's in place: for tag events and
    /// `xpsync sync`.
    Compare,
}
