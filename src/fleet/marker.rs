//! A split's version tag: the marker part ([`MARKER_PART`]) that tells which source
//! version an upload copies (a second, part 9,999, is read where an upload has
//! it: [`crate::transfer::plan::MARKER_PARTS`]), and the room a split's plan
//! leaves for it.

use crate::etag::ETag;
use crate::transfer::md5_of;
use crate::transfer::plan::{PartPlan, MARKER_PART};

/// Marker part `number` of version `etag`
/// ([`crate::transfer::plan::MARKER_PARTS`]): its body and Content-MD5. Its size
/// derives from the ETag too, so that where the target's ETags are opaque
/// (SSE-KMS) a marker still tells versions apart by 16 bits of size and 32 of its
/// listed CRC32C.
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

/// `plan`, or, where it fills every part number up to S3's 10,000 (a source
/// uploaded in exactly 10,000 parts, a uniform cut that lands there), a uniform cut
/// in at most 9,999 parts: part [`MARKER_PART`] is the version's tag, and an upload
/// without it could never be checked complete.
pub(super) fn with_room_for_the_tag(
    plan: PartPlan,
    size: u64,
    min_part: u64,
) -> Result<PartPlan, String> {
    if plan.len() < MARKER_PART {
        return Ok(plan);
    }
    PartPlan::uniform_within(size, min_part, MARKER_PART as u64 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_of_exactly_ten_thousand_parts_is_re_cut_to_leave_the_tags_part_free() {
        const MIB: u64 = 1024 * 1024;
        let source = PartPlan::from_layout(vec![8 * MIB; 10_000]);
        let size = 80_000 * MIB;
        let plan = with_room_for_the_tag(source, size, 8 * MIB).unwrap();
        assert!(plan.len() < MARKER_PART, "{} parts", plan.len());
        assert!(!plan.preserved);
        assert_eq!(plan.sizes().iter().sum::<u64>(), size);
        let fewer = PartPlan::from_layout(vec![8 * MIB; 9_999]);
        let kept = with_room_for_the_tag(fewer.clone(), 9_999 * 8 * MIB, 8 * MIB).unwrap();
        assert_eq!(kept, fewer, "9,999 parts leave part 10,000 free");
        let five_tib = 5 * 1024 * 1024 * MIB;
        let uniform = PartPlan::uniform(five_tib, 8 * MIB).unwrap();
        let plan = with_room_for_the_tag(uniform, five_tib, 8 * MIB).unwrap();
        assert!(plan.len() < MARKER_PART && plan.largest_part() <= 5 * 1024 * MIB);
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
    }
}
