//! The messages a split travels in: xpsync's native message with a `range` or
//! `check` member.
//!
//! ```json
//! {"xpsync": 1, "bucket": "b", "key": "k",
//!  "range": {"upload_id": "…", "etag": "…", "first_part": 1, "last_part": 4,
//!            "first_byte": 0, "part_sizes": [8388608, 8388608, 8388608, 8388608]}}
//! {"xpsync": 1, "bucket": "b", "key": "k",
//!  "check": {"upload_id": "…", "etag": "…", "part_sizes": [...], "parts_per_range": 4,
//!            "parts_present": 7}}
//! ```
//!
//! Beyond DESIGN §10's members, a range carries its parts' sizes and first byte and
//! a check the whole layout, so that no worker has to rediscover the layout the
//! splitter chose; `parts_present`, `stamp`, `stalled` and `resends` are how many
//! parts the previous check found, when the upload's marker part was last written
//! (a range still at work writes it again), for how many checks neither changed,
//! and how often missing ranges were sent again: missing ranges are sent again only
//! once neither has changed for several visibility timeouts (a killed worker's range
//! comes back by itself after one), and a split that makes no progress after a few
//! resends is started over, counted, and in the end dead-lettered, saying why.
//!
//! Members a worker does not know are ignored, so a newer release may add some
//! without older workers refusing its messages during a rolling deploy.

use serde::{Deserialize, Serialize};

use crate::etag::ETag;

/// What a splitter came to: the first check of the upload, and whether the upload
/// is another splitter's (of the same version), joined: that splitter sends its
/// ranges, so this one sends only a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub check: CheckWork,
    pub joined: bool,
}

/// A run of parts to copy into an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeWork {
    pub upload_id: String,
    /// The source version the upload copies.
    pub etag: ETag,
    /// Parts numbered from 1, inclusive.
    pub first_part: u32,
    pub last_part: u32,
    /// The first byte of `first_part` in the object.
    pub first_byte: u64,
    /// The sizes of `first_part..=last_part`.
    pub part_sizes: Vec<u64>,
    /// The target's part ETags are opaque (SSE-KMS): parts go with Content-MD5.
    #[serde(default)]
    pub target_kms: bool,
    /// How many parts the whole layout has, and the object's size: the worker whose
    /// range fills the upload sees it and has it checked at once (0: not known).
    #[serde(default)]
    pub layout_parts: u32,
    #[serde(default)]
    pub object_size: u64,
    /// The layout is the source's own (as [`CheckWork::preserved`]).
    #[serde(default)]
    pub preserved: bool,
    /// Parts per range of the whole split (the last range may hold fewer); 0 from
    /// a worker that did not say.
    #[serde(default)]
    pub parts_per_range: u32,
    /// Times the key was started over before this split ([`Restart`]).
    #[serde(default)]
    pub restarts: u32,
}

impl RangeWork {
    /// The check of an upload whose parts are all there: `sizes` are the listed
    /// parts' sizes in order. None unless they are the whole layout, every part
    /// present and the object's size in all.
    pub fn check_of_full(&self, sizes: Vec<u64>) -> Option<CheckWork> {
        let whole = self.layout_parts > 0
            && sizes.len() == self.layout_parts as usize
            && sizes.iter().sum::<u64>() == self.object_size;
        whole.then(|| CheckWork {
            upload_id: self.upload_id.clone(),
            etag: self.etag.clone(),
            // The split's own cut: this range may be the last, shorter one.
            parts_per_range: match self.parts_per_range {
                0 => self.part_sizes.len().max(1) as u32,
                per => per,
            },
            part_sizes: sizes,
            preserved: self.preserved,
            target_kms: self.target_kms,
            parts_present: None,
            stamp: None,
            stalled: 0,
            resends: 0,
            restarts: self.restarts,
        })
    }
}

/// A look at an upload's parts, to complete it or send what is missing again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckWork {
    pub upload_id: String,
    pub etag: ETag,
    /// Every part's size, in order: the layout the upload was split in.
    pub part_sizes: Vec<u64>,
    /// Parts per range message.
    pub parts_per_range: u32,
    /// The layout is the source's own: the composite ETag must be the source's.
    #[serde(default)]
    pub preserved: bool,
    /// The target's part ETags are opaque (SSE-KMS).
    #[serde(default)]
    pub target_kms: bool,
    /// Parts the previous check found; none at the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts_present: Option<u32>,
    /// When the previous check found the upload's marker part last written
    /// (milliseconds since the epoch): a range still at work writes it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<i64>,
    /// Checks in a row that found no new part and no new stamp.
    #[serde(default)]
    pub stalled: u32,
    /// Times the missing ranges were sent again.
    #[serde(default)]
    pub resends: u32,
    /// Times the key was started over before this split ([`Restart`]).
    #[serde(default)]
    pub restarts: u32,
}

impl CheckWork {
    /// The range message covering parts `first..=last` of this layout.
    pub fn range(&self, first: u32, last: u32) -> RangeWork {
        let before = (first - 1) as usize;
        RangeWork {
            upload_id: self.upload_id.clone(),
            etag: self.etag.clone(),
            first_part: first,
            last_part: last,
            first_byte: self.part_sizes[..before].iter().sum(),
            part_sizes: self.part_sizes[before..last as usize].to_vec(),
            target_kms: self.target_kms,
            layout_parts: self.part_sizes.len() as u32,
            object_size: self.part_sizes.iter().sum(),
            preserved: self.preserved,
            parts_per_range: self.parts_per_range,
            restarts: self.restarts,
        }
    }

    /// Every range of the layout, as (first part, last part).
    pub fn ranges(&self) -> Vec<(u32, u32)> {
        let count = self.part_sizes.len() as u32;
        let per = self.parts_per_range.max(1);
        (0..count.div_ceil(per))
            .map(|i| (i * per + 1, ((i + 1) * per).min(count)))
            .collect()
    }

    /// The ranges holding at least one of the parts `missing` (1-based numbers).
    pub fn ranges_of(&self, missing: &[u32]) -> Vec<(u32, u32)> {
        self.ranges()
            .into_iter()
            .filter(|(first, last)| missing.iter().any(|n| (first..=last).contains(&n)))
            .collect()
    }
}

/// How many parts of a layout make a range of at least `range_bytes`: ranges are
/// the unit one worker copies, sized to take minutes, not hours.
pub fn parts_per_range(part_sizes: &[u64], range_bytes: u64) -> u32 {
    let largest = part_sizes.iter().copied().max().unwrap_or(1).max(1);
    (range_bytes.div_ceil(largest)).clamp(1, 10_000) as u32
}

/// The version of the native message format this release writes and reads.
pub const FORMAT: u64 = 1;

/// xpsync's own message: a key to reconcile (what `backfill --mode enqueue` sends,
/// or an operator writes by hand), or a range or check of a split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Native {
    /// The format's version ([`FORMAT`]).
    pub xpsync: u64,
    pub bucket: String,
    /// The source key, not encoded.
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<RangeWork>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckWork>,
    /// A key message sent by a split given up: how often, and why last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
}

/// A key started over by the fleet: its split was given up (the source changed,
/// its upload vanished, its parts never all arrived) `count` times, the last
/// because of `why`. The [`MAX_RESTARTS`]th is dead-lettered instead: a split that
/// cannot succeed ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restart {
    pub count: u32,
    pub why: String,
}

/// How many times a key is started over by the fleet before it is dead-lettered.
pub const MAX_RESTARTS: u32 = 3;

impl Native {
    /// A message asking for `key` of `bucket` to be reconciled.
    pub fn key(bucket: &str, key: &str) -> Self {
        Self {
            xpsync: FORMAT,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            range: None,
            check: None,
            restart: None,
        }
    }

    /// `key` started over after `restarts` earlier restarts, because of `why`.
    pub fn restart(bucket: &str, key: &str, restarts: u32, why: &str) -> Self {
        let restart = Restart {
            count: restarts + 1,
            why: why.to_owned(),
        };
        Self {
            restart: Some(restart),
            ..Self::key(bucket, key)
        }
    }

    /// A range of a split of `key`.
    pub fn range(bucket: &str, key: &str, work: RangeWork) -> Self {
        Self {
            range: Some(work),
            ..Self::key(bucket, key)
        }
    }

    /// A check of a split of `key`.
    pub fn check(bucket: &str, key: &str, work: CheckWork) -> Self {
        Self {
            check: Some(work),
            ..Self::key(bucket, key)
        }
    }

    /// The message body.
    pub fn body(&self) -> String {
        serde_json::to_string(self).expect("native messages serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(sizes: Vec<u64>, per: u32) -> CheckWork {
        CheckWork {
            upload_id: "u".into(),
            etag: ETag::new("e"),
            part_sizes: sizes,
            parts_per_range: per,
            preserved: false,
            target_kms: false,
            parts_present: None,
            stamp: None,
            stalled: 0,
            resends: 0,
            restarts: 0,
        }
    }

    #[test]
    fn ranges_cover_every_part_once() {
        let c = check(vec![5; 10], 4);
        assert_eq!(c.ranges(), [(1, 4), (5, 8), (9, 10)]);
        assert_eq!(c.ranges_of(&[6, 10]), [(5, 8), (9, 10)]);
        let r = c.range(5, 8);
        assert_eq!((r.first_byte, r.part_sizes.len()), (20, 4));
    }

    #[test]
    fn a_range_holds_at_least_one_part() {
        assert_eq!(parts_per_range(&[5, 5, 5], 12), 3);
        assert_eq!(parts_per_range(&[100, 100], 10), 1);
        assert_eq!(parts_per_range(&[4, 4], 16), 4);
    }

    #[test]
    fn only_a_full_upload_makes_a_check_from_a_range() {
        let c = check(vec![5, 5, 3], 2);
        let r = c.range(3, 3);
        assert_eq!((r.layout_parts, r.object_size), (3, 13));
        let full = r.check_of_full(vec![5, 5, 3]).expect("every part is there");
        assert_eq!(full.part_sizes, [5, 5, 3]);
        assert_eq!(full.upload_id, "u");
        // The last range holds one part; the split's ranges hold two, and a resend
        // of the check's must be cut as the split was.
        assert_eq!(full.parts_per_range, 2);
        assert_eq!(full.ranges(), c.ranges());
        assert!(r.check_of_full(vec![5, 5]).is_none(), "a part missing");
        assert!(
            r.check_of_full(vec![5, 5, 4]).is_none(),
            "another size in all"
        );
        let unknown = RangeWork {
            layout_parts: 0,
            ..r
        };
        assert!(unknown.check_of_full(vec![5, 5, 3]).is_none());
    }

    #[test]
    fn messages_round_trip() {
        let c = check(vec![5, 5, 3], 1);
        let body = Native::check("b", "k", c.clone()).body();
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["xpsync"], 1);
        assert!(value.get("range").is_none());
        let back: Native = serde_json::from_str(&body).unwrap();
        assert_eq!(back.check, Some(c));
        assert_eq!(back.key, "k");
    }

    #[test]
    fn a_restarted_key_says_how_often_and_why() {
        let body = Native::restart("b", "k", 2, "its upload is gone").body();
        let back: Native = serde_json::from_str(&body).unwrap();
        let restart = Restart {
            count: 3,
            why: "its upload is gone".into(),
        };
        assert_eq!(back.restart, Some(restart));
        assert!(!Native::key("b", "k").body().contains("restart"));
        // A split carries the count on, to its ranges and its check.
        let c = CheckWork {
            restarts: 2,
            ..check(vec![5, 5], 1)
        };
        assert_eq!(c.range(2, 2).restarts, 2);
        assert_eq!(c.range(2, 2).check_of_full(vec![5, 5]).unwrap().restarts, 2);
    }

    #[test]
    fn members_a_worker_does_not_know_are_ignored() {
        let body = r#"{"xpsync": 1, "bucket": "b", "key": "k", "later": true,
            "check": {"upload_id": "u", "etag": "\"e\"", "part_sizes": [5],
                      "parts_per_range": 1, "added_in_a_later_release": 3}}"#;
        let message: Native = serde_json::from_str(body).unwrap();
        assert_eq!(message.check.unwrap().etag, ETag::new("e"));
    }
}
