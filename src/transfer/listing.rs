//! What the target lists of its multipart uploads: a key's uploads (and the
//! checksum each was created with), an upload's parts.

use std::collections::BTreeMap;

use aws_sdk_s3::operation::list_parts::ListPartsOutput;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumType};

use super::part::Uploaded;
use super::{Copier, TransferError};
use crate::checksum::UploadChecksum;
use crate::checksum_values;
use crate::error::S3Error;
use crate::etag::ETag;

/// An incomplete upload, as ListMultipartUploads lists it.
pub(crate) struct Listed {
    pub id: String,
    pub checksum: CreatedWith,
}

/// The checksum an upload was created with, as listed.
pub(crate) struct CreatedWith {
    algorithm: Option<ChecksumAlgorithm>,
    kind: Option<ChecksumType>,
}

impl CreatedWith {
    /// Whether an upload so created takes parts and a completion with `checksum`:
    /// the same algorithm (S3 lists none for an upload created without), and the
    /// same type where one is listed.
    pub(crate) fn matches(&self, checksum: Option<&UploadChecksum>) -> bool {
        match (&self.algorithm, checksum) {
            (None, None) => true,
            (Some(algorithm), Some(c)) => {
                c.algorithm == *algorithm && self.kind.as_ref().is_none_or(|kind| *kind == c.kind())
            }
            _ => false,
        }
    }
}

/// Uploads of exactly `target_key`, in the order S3 lists them as initiated (ties
/// by upload id; one without a time last).
pub(crate) async fn list_uploads(
    copier: &Copier,
    target_key: &str,
) -> Result<Vec<Listed>, TransferError> {
    let uploads = copier.target.uploads_of(target_key).await?;
    let mut uploads: Vec<((i64, u32), String, CreatedWith)> = uploads
        .iter()
        .filter_map(|upload| {
            let initiated = upload
                .initiated()
                .map_or((i64::MAX, 0), |t| (t.secs(), t.subsec_nanos()));
            let checksum = CreatedWith {
                algorithm: upload.checksum_algorithm().cloned(),
                kind: upload.checksum_type().cloned(),
            };
            Some((initiated, upload.upload_id()?.to_owned(), checksum))
        })
        .collect();
    uploads.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let listed = uploads
        .into_iter()
        .map(|(_, id, checksum)| Listed { id, checksum });
    Ok(listed.collect())
}

/// The parts of an upload: number → (size, as the target holds it).
pub(crate) async fn list_parts(
    copier: &Copier,
    target_key: &str,
    upload_id: &str,
) -> Result<BTreeMap<usize, (u64, Uploaded)>, TransferError> {
    let target = &copier.target;
    let mut pages = target
        .client
        .list_parts()
        .bucket(&target.bucket)
        .key(target_key)
        .upload_id(upload_id)
        .into_paginator()
        .send();
    let mut parts = BTreeMap::new();
    while let Some(page) = pages.next().await {
        let page = target.observe("ListParts", page)?;
        for part in page.parts() {
            if let (Some(number), Some(etag)) = (part.part_number(), ETag::parse(part.e_tag())) {
                let size = part.size().unwrap_or(0).max(0) as u64;
                let checksum = checksum_values!(part).first();
                parts.insert(number as usize, (size, Uploaded { etag, checksum }));
            }
        }
    }
    Ok(parts)
}

/// The parts among `numbers` that an upload holds, with their sizes: one page of
/// ListParts per 1,000 numbers, from the first.
pub(crate) async fn sizes_in(
    copier: &Copier,
    target_key: &str,
    upload_id: &str,
    numbers: std::ops::RangeInclusive<usize>,
) -> Result<BTreeMap<usize, u64>, TransferError> {
    let (first, last) = (*numbers.start(), *numbers.end());
    let mut sizes = BTreeMap::new();
    let mut marker = first - 1;
    while marker < last {
        let page = parts_after(copier, (target_key, upload_id), marker, last).await?;
        for part in page.parts() {
            let number = part.part_number().unwrap_or(0).max(0) as usize;
            if (first..=last).contains(&number) {
                sizes.insert(number, part.size().unwrap_or(0).max(0) as u64);
            }
        }
        let next = page.next_part_number_marker().and_then(|m| m.parse().ok());
        match next {
            Some(next) if page.is_truncated() == Some(true) && next > marker => marker = next,
            _ => break,
        }
    }
    Ok(sizes)
}

/// One page of an upload's parts numbered above `marker`, up to `last` at most.
async fn parts_after(
    copier: &Copier,
    (target_key, upload_id): (&str, &str),
    marker: usize,
    last: usize,
) -> Result<ListPartsOutput, S3Error> {
    let target = &copier.target;
    let request = target
        .client
        .list_parts()
        .bucket(&target.bucket)
        .key(target_key)
        .upload_id(upload_id)
        .part_number_marker(marker.to_string())
        .max_parts(last.saturating_sub(marker).clamp(1, 1000) as i32);
    target.observe("ListParts", request.send().await)
}

/// The sizes of parts `numbers` of an upload if every one of them is there; None
/// at the first one missing, without listing the pages beyond it. An empty range
/// asks nothing.
pub(crate) async fn parts_present(
    copier: &Copier,
    target_key: &str,
    upload_id: &str,
    numbers: std::ops::RangeInclusive<usize>,
) -> Result<Option<Vec<u64>>, TransferError> {
    let (first, last) = (*numbers.start(), *numbers.end());
    let mut sizes = Vec::with_capacity(numbers.count());
    let mut next = first;
    while next <= last {
        let page = parts_after(copier, (target_key, upload_id), next - 1, last).await?;
        if page.parts().is_empty() {
            return Ok(None);
        }
        for part in page.parts() {
            if next > last {
                break;
            }
            // Listed in order: any other number than the next means it is missing.
            if part.part_number().map(|n| n as usize) != Some(next) {
                return Ok(None);
            }
            sizes.push(part.size().unwrap_or(0).max(0) as u64);
            next += 1;
        }
    }
    Ok(Some(sizes))
}
