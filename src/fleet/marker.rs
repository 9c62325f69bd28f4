//! A split's version tag: the marker parts ([`MARKER_PARTS`]) that tell which source
//! version an upload copies, and the room a split's plan leaves for them.

use crate::etag::ETag;
use crate::transfer::md5_of;
use crate::transfer::plan::{PartPlan, MARKER_PART, MARKER_PARTS};

/// Marker part `number` of version `etag`: its body and Content-MD5. Its size
/// derives from the ETag too, so that where the target's ETags are opaque
/// (SSE-KMS) each marker still tells versions apart by 16 bits of size and 32 of
/// its listed CRC32C: 96 bits for the two. Part 10,000's body is the one earlier
/// releases wrote alone.
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

/// `plan`, or, where it reaches the part numbers of the version's tag (a source
/// uploaded in 9,999 or 10,000 parts, a uniform cut that lands there), a uniform
/// cut in at most 9,998 parts: parts [`MARKER_PARTS`] are the version's tag, and an
/// upload without them could never be checked complete.
pub(super) fn with_room_for_the_tag(
    plan: PartPlan,
    size: u64,
    min_part: u64,
) -> Result<PartPlan, String> {
    let first = MARKER_PARTS[0];
    if plan.len() < first {
        return Ok(plan);
    }
    PartPlan::uniform_within(size, min_part, first as u64 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_of_exactly_ten_thousand_parts_is_re_cut_to_leave_the_tags_parts_free() {
        const MIB: u64 = 1024 * 1024;
        for count in [10_000, 9_999] {
            let source = PartPlan::from_layout(vec![8 * MIB; count]);
            let size = count as u64 * 8 * MIB;
            let plan = with_room_for_the_tag(source, size, 8 * MIB).unwrap();
            assert!(plan.len() < MARKER_PARTS[0], "{} parts", plan.len());
            assert!(!plan.preserved);
            assert_eq!(plan.sizes().iter().sum::<u64>(), size);
        }
        let fewer = PartPlan::from_layout(vec![8 * MIB; 9_998]);
        let kept = with_room_for_the_tag(fewer.clone(), 9_998 * 8 * MIB, 8 * MIB).unwrap();
        assert_eq!(kept, fewer, "9,998 parts leave parts 9,999 and 10,000 free");
        let five_tib = 5 * 1024 * 1024 * MIB;
        let uniform = PartPlan::uniform(five_tib, 8 * MIB).unwrap();
        let plan = with_room_for_the_tag(uniform, five_tib, 8 * MIB).unwrap();
        assert!(plan.len() < MARKER_PARTS[0] && plan.largest_part() <= 5 * 1024 * MIB);
    }

    #[test]
    fn markers_tell_versions_apart_by_content_and_by_size() {
        let v1 = ETag::new("9e107d9d372bb6826bd81d3542a419d6-3");
        let v2 = ETag::new("e4d909c290d0fb1ca068ffaddf22cbd0-3");
        let (a, _) = marker(&v1, MARKER_PART);
        let (b, _) = marker(&v2, MARKER_PART);
        assert!(a.starts_with(b"xpsync-source-etag:9e107d9d372bb6826bd81d3542a419d6-3"));
        assert_ne!(a, b);
        assert_ne!(
            a.len(),
            b.len(),
            "the size alone tells them apart under KMS"
        );
        assert!((1024..1024 + 65536).contains(&a.len()));
        // The second marker is another body, of another size: its 48 bits are
        // drawn apart from the first's.
        let (a2, _) = marker(&v1, MARKER_PARTS[0]);
        assert_ne!(a2, a);
        assert!(a2.starts_with(b"xpsync-source-etag-9999:"));
        assert_ne!(a2.len(), a.len());
    }
}
