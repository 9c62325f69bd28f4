//! A split's version tag: the marker parts ([`MARKER_PARTS`]: 9,999 and 10,000)
//! that tell which source version an upload copies, and the room a split's plan
//! leaves for them.

use crate::etag::ETag;
use crate::transfer::md5_of;
use crate::transfer::plan::{PartPlan, MARKER_PART, MARKER_PARTS};

/// Marker part `number` of version `etag` ([`MARKER_PARTS`]): its body and
/// Content-MD5. Its size derives from the ETag too, so that where the target's
/// ETags are opaque (SSE-KMS) a marker still tells versions apart by 16 bits of
/// size and 32 of its listed CRC32C; the two markers, each tagged with its own
/// number, by 96.
pub(super) fn marker(etag: &ETag, number: usize) -> (Vec<u8>, String) {
    let tag = if number == MARKER_PART {
        format!("xpsync-source-etag:{etag}")
    } else {
        format!("xpsync-source-etag-{number}:{etag}")
    };
    let digest = ETag::of_bytes(tag.as_bytes());
    let spread = u16::from_str_radix(&digest.as_str()[..4], 16).unwrap_or(0) as usize;
    let mut body = tag.into_bytes();
    body.resize(1024 + spread, b' ');
    let (content_md5, _) = md5_of(&body);
    (body, content_md5)
}

/// `plan`, or, where it reaches the marker parts (a source uploaded in 9,999 or
/// exactly 10,000 parts, a uniform cut that lands there), a uniform cut in at most
/// 9,998 parts: parts [`MARKER_PARTS`] are the version's tag, and an upload
/// without them could never be checked complete.
pub(super) fn with_room_for_the_tag(
    plan: PartPlan,
    size: u64,
    min_part: u64,
) -> Result<PartPlan, String> {
    let first_marker = MARKER_PARTS[0];
    if plan.len() < first_marker {
        return Ok(plan);
    }
    PartPlan::uniform_within(size, min_part, first_marker as u64 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_of_9999_or_10000_parts_is_re_cut_to_leave_the_tags_parts_free() {
        const MIB: u64 = 1024 * 1024;
        for count in [9_999, 10_000] {
            let source = PartPlan::from_layout(vec![8 * MIB; count]);
            let size = count as u64 * 8 * MIB;
            let plan = with_room_for_the_tag(source, size, 8 * MIB).unwrap();
            assert!(plan.len() <= 9_998, "{count}: {} parts", plan.len());
            assert!(!plan.preserved);
            assert_eq!(plan.sizes().iter().sum::<u64>(), size);
        }
        let fewer = PartPlan::from_layout(vec![8 * MIB; 9_998]);
        let kept = with_room_for_the_tag(fewer.clone(), 9_998 * 8 * MIB, 8 * MIB).unwrap();
        assert_eq!(kept, fewer, "9,998 parts leave parts 9,999 and 10,000 free");
        let five_tib = 5 * 1024 * 1024 * MIB;
        let uniform = PartPlan::uniform(five_tib, 8 * MIB).unwrap();
        let plan = with_room_for_the_tag(uniform, five_tib, 8 * MIB).unwrap();
        assert!(plan.len() <= 9_998 && plan.largest_part() <= 5 * 1024 * MIB);
    }

    #[test]
    fn markers_tell_versions_apart_by_content_and_by_size() {
        let (a, _) = marker(
            &ETag::new("9e107d9d372bb6826bd81d3542a419d6-3"),
            MARKER_PART,
        );
        let (b, _) = marker(
            &ETag::new("e4d909c290d0fb1ca068ffaddf22cbd0-3"),
            MARKER_PART,
        );
        assert!(a.starts_with(b"xpsync-source-etag:9e107d9d372bb6826bd81d3542a419d6-3"));
        assert_ne!(a, b);
        assert_ne!(
            a.len(),
            b.len(),
            "the size alone tells them apart under KMS"
        );
        assert!((1024..1024 + 65536).contains(&a.len()));
        let version = ETag::new("9e107d9d372bb6826bd81d3542a419d6-3");
        let (first, _) = marker(&version, MARKER_PARTS[0]);
        let (last, _) = marker(&version, MARKER_PART);
        assert_ne!(first, last, "each marker is tagged with its own number");
    }
}
