//! Part plans: how an object is cut into parts.
//!
//! A [`PartPlan`] is the list of byte ranges an object is copied in. It is either the
//! source's own layout (so the target's composite ETag equals the source's), or a
//! uniform cut: at least `transfer.part_size`, and large enough for S3's 10,000-part
//! maximum to cover the object.

use std::ops::Range;

use crate::config::{MAX_PARTS, MAX_PART_SIZE, MIN_PART_SIZE};

/// The part number that tags a fleet split's upload with the version it copies
/// ([`crate::fleet::ledger`]); never completed, and no part of any plan's object.
/// An upload is of a version once it carries this part; it is also the part a
/// range still at work writes again.
pub const MARKER_PART: usize = 10_000;

/// The part numbers a split's upload carries as version markers (96 bits of the
/// version under KMS, where one gives 48). A split plans at most 9,998 parts; an
/// upload begun by a release before this one may carry part 10,000 alone, and a
/// plan of 9,999 parts, whose part 9,999 is data.
pub const MARKER_PARTS: [usize; 2] = [9_999, MARKER_PART];

/// Whether part `number` of an upload whose plan has `planned` parts is a version
/// marker: one of [`MARKER_PARTS`], beyond the plan (an earlier release's plan may
/// use part 9,999 for data).
pub fn is_marker(number: usize, planned: usize) -> bool {
    number > planned && MARKER_PARTS.contains(&number)
}

const MIB: u64 = 1024 * 1024;

/// How an object is cut into parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartPlan {
    sizes: Vec<u64>,
    /// Whether this is the source's own layout.
    pub preserved: bool,
}

impl PartPlan {
    /// The source's own part sizes.
    pub fn from_layout(sizes: Vec<u64>) -> Self {
        Self {
            sizes,
            preserved: true,
        }
    }

    /// Equal parts of at least `min_part_size` (the last smaller), as few as S3's
    /// 10,000-part limit allows. Fails only for an object S3 could not hold.
    pub fn uniform(size: u64, min_part_size: u64) -> Result<Self, String> {
        Self::uniform_within(size, min_part_size, MAX_PARTS)
    }

    /// As [`PartPlan::uniform`], in at most `max_parts` parts (a fleet split keeps
    /// parts [`MARKER_PARTS`] for its version tag).
    pub fn uniform_within(size: u64, min_part_size: u64, max_parts: u64) -> Result<Self, String> {
        let part_size = part_size_within(size, min_part_size, max_parts)?;
        let count = size.div_ceil(part_size).max(1);
        let sizes = (0..count)
            .map(|i| (size - i * part_size).min(part_size))
            .collect();
        Ok(Self {
            sizes,
            preserved: false,
        })
    }

    /// Every part's size, in order.
    pub fn sizes(&self) -> &[u64] {
        &self.sizes
    }

    pub fn len(&self) -> usize {
        self.sizes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sizes.is_empty()
    }

    /// The size of part `number` (1-based).
    pub fn part_size(&self, number: usize) -> Option<u64> {
        self.sizes.get(number.checked_sub(1)?).copied()
    }

    /// The largest part.
    pub fn largest_part(&self) -> u64 {
        self.sizes.iter().copied().max().unwrap_or(0)
    }

    /// Every part as (1-based number, byte range).
    pub fn parts(&self) -> impl Iterator<Item = (usize, Range<u64>)> + '_ {
        self.sizes
            .iter()
            .enumerate()
            .scan(0u64, |start, (i, &len)| {
                let range = *start..*start + len;
                *start += len;
                Some((i + 1, range))
            })
    }
}

/// The part size for a uniform cut of `size` bytes: at least `min_part_size`,
/// rounded up to whole MiB when it must grow to keep within 10,000 parts.
pub fn uniform_part_size(size: u64, min_part_size: u64) -> Result<u64, String> {
    part_size_within(size, min_part_size, MAX_PARTS)
}

fn part_size_within(size: u64, min_part_size: u64, max_parts: u64) -> Result<u64, String> {
    let min_part_size = min_part_size.max(MIN_PART_SIZE);
    let needed = size.div_ceil(max_parts);
    let part_size = if needed <= min_part_size {
        min_part_size
    } else {
        needed.div_ceil(MIB) * MIB
    };
    if part_size > MAX_PART_SIZE {
        return Err(format!(
            "an object of {size} bytes cannot be cut into {max_parts} parts of at most 5 GiB"
        ));
    }
    Ok(part_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_is_a_marker_part_beyond_the_plan() {
        assert!(is_marker(10_000, 12));
        assert!(is_marker(9_999, 9_998));
        assert!(
            !is_marker(9_999, 9_999),
            "a plan of 9,999 parts uses part 9,999"
        );
        assert!(
            !is_marker(13, 12),
            "another part beyond the plan is no marker"
        );
        assert!(!is_marker(5, 12));
    }

    const GIB: u64 = 1024 * MIB;
    const TIB: u64 = 1024 * GIB;

    fn check_plan(size: u64, min: u64) -> PartPlan {
        let plan = PartPlan::uniform(size, min).unwrap();
        assert!(
            plan.len() as u64 <= MAX_PARTS,
            "{size}: {} parts",
            plan.len()
        );
        let mut expected_start = 0;
        for (n, range) in plan.parts() {
            assert_eq!(range.start, expected_start, "parts must be contiguous");
            let len = range.end - range.start;
            assert!(len <= MAX_PART_SIZE);
            if n < plan.len() {
                assert!(len >= MIN_PART_SIZE, "part {n} of {size} is {len} bytes");
            }
            expected_start = range.end;
        }
        assert_eq!(expected_start, size, "parts must cover the object");
        plan
    }

    #[test]
    fn a_small_object_uses_the_configured_part_size() {
        let plan = check_plan(40 * MIB, 16 * MIB);
        assert_eq!(plan.len(), 3);
        assert_eq!(plan.part_size(1), Some(16 * MIB));
        assert_eq!(plan.part_size(3), Some(8 * MIB));
        assert!(!plan.preserved);
    }

    #[test]
    fn exactly_ten_thousand_parts_of_the_configured_size() {
        let plan = check_plan(10_000 * 16 * MIB, 16 * MIB);
        assert_eq!(plan.len(), 10_000);
        assert_eq!(plan.largest_part(), 16 * MIB);
    }

    #[test]
    fn one_byte_more_than_ten_thousand_parts_grows_the_part_size() {
        let plan = check_plan(10_000 * 16 * MIB + 1, 16 * MIB);
        assert_eq!(plan.largest_part(), 17 * MIB);
        assert!(plan.len() <= 10_000);
    }

    #[test]
    fn the_largest_s3_object_fits_in_ten_thousand_parts() {
        let plan = check_plan(5 * TIB, 5 * MIB);
        assert!(plan.len() <= 10_000);
        assert_eq!(plan.largest_part(), 525 * MIB);
    }

    #[test]
    fn awkward_sizes_are_covered() {
        for size in [
            1,
            5 * MIB - 1,
            5 * MIB,
            5 * MIB + 1,
            160 * GIB + 7,
            999 * GIB + 123,
        ] {
            check_plan(size, 5 * MIB);
        }
    }

    #[test]
    fn an_object_beyond_s3s_limit_is_refused() {
        assert!(PartPlan::uniform(10_000 * MAX_PART_SIZE + 1, 5 * MIB).is_err());
    }

    #[test]
    fn preserved_layout_keeps_uneven_parts() {
        let plan = PartPlan::from_layout(vec![7 * MIB, 5 * MIB, 9 * MIB, 1]);
        let ranges: Vec<_> = plan.parts().map(|(_, r)| r).collect();
        assert_eq!(ranges[1], 7 * MIB..12 * MIB);
        assert_eq!(ranges[3], 21 * MIB..21 * MIB + 1);
        assert!(plan.preserved);
    }
}
