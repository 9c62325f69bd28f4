//! Every write carries a checksum S3 verifies: Content-MD5, or a CRC32C (a trailer
//! for a streamed part). So an Object Lock target, which refuses writes without
//! one, takes every kind of copy; and a resumed upload to a KMS target, whose part
//! ETags are opaque, keeps the parts whose checksum matches the bytes read again.
//!
//! moto enforces neither Object Lock's rule nor KMS: the fault proxy refuses as S3
//! does, and the KMS proxy makes ETags opaque (RELIABILITY.md).

mod common;

use aws_sdk_s3::config::RequestChecksumCalculation;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart,
    ServerSideEncryption,
};
use common::faults::{FaultProxy, Faults};
use common::kms::KmsProxy;
use common::s3::{put, put_multipart, s3_client, sdk_config};
use common::{
    bytes_of, Etag, Partitions, Run, MIB, SMALL_PARTS, SOURCE_BUCKET, TARGET_BUCKET, TARGET_REGION,
};

#[tokio::test]
async fn an_object_lock_target_takes_every_kind_of_copy_streamed() {
    let p = Partitions::start().await;
    let target = FaultProxy::start(
        &p.target.endpoint,
        Faults {
            object_lock: true,
            ..Faults::default()
        },
    )
    .await;
    let single = bytes_of(MIB, 1);
    put(&p.source_s3, SOURCE_BUCKET, "lock/single", single.clone()).await;
    let re_cut = bytes_of(12 * MIB, 2);
    put(&p.source_s3, SOURCE_BUCKET, "lock/re-cut", re_cut.clone()).await;
    let kept = put_multipart(
        &p.source_s3,
        SOURCE_BUCKET,
        "lock/kept",
        &[5 * MIB, 5 * MIB, 2 * MIB],
        3,
    )
    .await;

    let mut env = SMALL_PARTS.to_vec();
    env.push(("XPSYNC_TARGET__ENDPOINT_URL", target.endpoint.as_str()));
    let (lines, run) = p
        .sync(&["lock/single", "lock/re-cut", "lock/kept"], &env)
        .await;
    assert!(run.success(), "{run}");
    for line in &lines {
        assert_eq!(line["outcome"], "copied", "{line}");
    }
    assert_eq!(lines[1]["method"], "multipart");
    assert_eq!(target.injected(), 0, "no write was refused: {run}");
    p.assert_copied_intact("lock/single", &single, Etag::Same)
        .await;
    p.assert_copied_intact("lock/re-cut", &re_cut, Etag::Recorded)
        .await;
    p.assert_copied_intact("lock/kept", &kept, Etag::Same).await;
}

#[tokio::test]
async fn a_resumed_upload_to_a_kms_target_keeps_the_parts_whose_checksum_matches() {
    let p = Partitions::start().await;
    let kms = KmsProxy::start(&p.target.endpoint).await;
    // In front of the KMS proxy: counts the parts that cross the border.
    let border = FaultProxy::start(&kms.endpoint, Faults::default()).await;
    let body = p
        .put_source_multipart("kms/resumable", &[5 * MIB, 5 * MIB, 5 * MIB, 5 * MIB], 4)
        .await;

    // As an interrupted xpsync leaves it: created with CRC32C, two parts in, under KMS.
    let conf = sdk_config(&kms.endpoint, TARGET_REGION, &p.admin.id, &p.admin.secret);
    let admin = s3_client(&conf, &kms.endpoint);
    let upload = admin
        .create_multipart_upload()
        .bucket(TARGET_BUCKET)
        .key("kms/resumable")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .checksum_algorithm(ChecksumAlgorithm::Crc32C)
        .metadata("xpsync-source-etag", p.source_etag("kms/resumable").await)
        .send()
        .await
        .expect("create an upload");
    let id = upload.upload_id().expect("an upload id");
    for (number, range) in [(1, 0..5 * MIB), (2, 5 * MIB..10 * MIB)] {
        admin
            .upload_part()
            .bucket(TARGET_BUCKET)
            .key("kms/resumable")
            .upload_id(id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .body(ByteStream::from(body[range].to_vec()))
            .customize()
            .config_override(computed())
            .send()
            .await
            .expect("upload a part");
    }
    assert!(kms.issued() >= 2, "the parts' ETags are opaque");

    let env = [
        ("XPSYNC_TARGET__ENDPOINT_URL", border.endpoint.as_str()),
        ("XPSYNC_TARGET__SSE", "aws:kms"),
    ];
    let line = p.sync_one("kms/resumable", &env).await;
    assert_eq!(line["outcome"], "copied", "{line}");
    assert_eq!(line["parts_reused"], 2, "{line}");
    assert_eq!(line["bytes_sent"], 10 * MIB, "{line}");
    assert_eq!(border.uploads(), 2, "only the two missing parts crossed");
    p.assert_copied_intact("kms/resumable", &body, Etag::Opaque)
        .await;
}

/// A request's configuration asking the SDK to compute its checksum, as a client
/// uploading with checksums does.
fn computed() -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default()
        .request_checksum_calculation(RequestChecksumCalculation::WhenSupported)
}

/// Stores `key` on the source with an additional checksum of `algorithm`: one PUT
/// when `parts` is empty, else an upload of these part sizes, created composite or
/// `full_object`. The SDK computes every value, as a client uploading with
/// checksums does.
async fn put_summed(
    p: &Partitions,
    key: &str,
    body: &[u8],
    parts: &[usize],
    algorithm: ChecksumAlgorithm,
    full_object: bool,
) {
    let s3 = &p.source_s3;
    if parts.is_empty() {
        s3.put_object()
            .bucket(SOURCE_BUCKET)
            .key(key)
            .checksum_algorithm(algorithm)
            .body(ByteStream::from(body.to_vec()))
            .customize()
            .config_override(computed())
            .send()
            .await
            .expect("put an object with a checksum");
        return;
    }
    let kind = match full_object {
        true => ChecksumType::FullObject,
        false => ChecksumType::Composite,
    };
    let upload = s3
        .create_multipart_upload()
        .bucket(SOURCE_BUCKET)
        .key(key)
        .checksum_algorithm(algorithm.clone())
        .checksum_type(kind.clone())
        .send()
        .await
        .expect("create an upload with a checksum");
    let id = upload.upload_id().expect("an upload id");
    let mut completed = Vec::new();
    let mut start = 0;
    for (i, size) in parts.iter().enumerate() {
        let number = i as i32 + 1;
        let part = s3
            .upload_part()
            .bucket(SOURCE_BUCKET)
            .key(key)
            .upload_id(id)
            .part_number(number)
            .checksum_algorithm(algorithm.clone())
            .body(ByteStream::from(body[start..start + size].to_vec()))
            .customize()
            .config_override(computed())
            .send()
            .await
            .expect("upload a part with a checksum");
        start += size;
        completed.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(part.e_tag().map(str::to_owned))
                .set_checksum_crc32_c(part.checksum_crc32_c().map(str::to_owned))
                .set_checksum_crc64_nvme(part.checksum_crc64_nvme().map(str::to_owned))
                .build(),
        );
    }
    s3.complete_multipart_upload()
        .bucket(SOURCE_BUCKET)
        .key(key)
        .upload_id(id)
        .checksum_type(kind)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await
        .expect("complete the upload");
}

/// The object's additional checksum as S3 answers it in checksum mode: the
/// algorithm's header, its value and the checksum type; None without one.
async fn checksum_of(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<String> {
    let head = s3
        .head_object()
        .bucket(bucket)
        .key(key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap_or_else(|e| panic!("HEAD {key}: {e:?}"));
    let kind = head.checksum_type().map(|t| t.as_str().to_owned());
    let found = [
        ("crc32", head.checksum_crc32()),
        ("crc32c", head.checksum_crc32_c()),
        ("crc64nvme", head.checksum_crc64_nvme()),
        ("sha1", head.checksum_sha1()),
        ("sha256", head.checksum_sha256()),
    ]
    .into_iter()
    .find_map(|(name, value)| Some(format!("{name} {} {kind:?}", value?)));
    found
}

#[tokio::test]
async fn a_source_checksum_is_carried_to_the_copy_and_checked() {
    let p = Partitions::start().await;
    let single = bytes_of(MIB, 11);
    put_summed(
        &p,
        "sum/single",
        &single,
        &[],
        ChecksumAlgorithm::Crc32C,
        false,
    )
    .await;
    let composite = bytes_of(12 * MIB, 12);
    let layout = [5 * MIB, 5 * MIB, 2 * MIB];
    put_summed(
        &p,
        "sum/composite",
        &composite,
        &layout,
        ChecksumAlgorithm::Crc32C,
        false,
    )
    .await;
    // Full-object, and re-cut by the copy (6 MiB parts into 5 MiB ones): the
    // checksum of the whole object does not depend on its parts.
    let full = bytes_of(12 * MIB, 13);
    let wide = [6 * MIB, 6 * MIB];
    put_summed(
        &p,
        "sum/full",
        &full,
        &wide,
        ChecksumAlgorithm::Crc64Nvme,
        true,
    )
    .await;
    let keys = ["sum/single", "sum/composite", "sum/full"];
    for key in keys {
        assert!(checksum_of(&p.source_s3, SOURCE_BUCKET, key)
            .await
            .is_some());
    }

    let mut env = SMALL_PARTS.to_vec();
    env.push(("XPSYNC_TRANSFER__PRESERVE_PART_LAYOUT", "true"));
    let (lines, run) = p.sync(&["sum/single", "sum/composite"], &env).await;
    assert!(run.success(), "{run}");
    assert!(lines.iter().all(|l| l["outcome"] == "copied"), "{run}");
    env[2] = ("XPSYNC_TRANSFER__PRESERVE_PART_LAYOUT", "false");
    let line = p.sync_one("sum/full", &env).await;
    assert_eq!(line["method"], "multipart", "{line}");

    for key in keys {
        let source = checksum_of(&p.source_s3, SOURCE_BUCKET, key).await;
        let target = checksum_of(&p.target_s3, TARGET_BUCKET, key).await;
        assert_eq!(
            target, source,
            "{key}: the copy's checksum is not the source's"
        );
    }
    p.assert_copied_intact("sum/single", &single, Etag::Same)
        .await;
    p.assert_copied_intact("sum/composite", &composite, Etag::Same)
        .await;
    p.assert_copied_intact("sum/full", &full, Etag::Recorded)
        .await;

    // `verify --deep` reads both checksums: a target copy forged to pass the ETag
    // comparison (the source's ETag recorded, the same size) but holding other
    // bytes, with their own CRC32C, is found different; without --deep it is not.
    let forged = bytes_of(MIB, 99);
    p.target_s3
        .put_object()
        .bucket(TARGET_BUCKET)
        .key("sum/single")
        .metadata("xpsync-source-etag", p.source_etag("sum/single").await)
        .checksum_algorithm(ChecksumAlgorithm::Crc32C)
        .body(ByteStream::from(forged))
        .customize()
        .config_override(computed())
        .send()
        .await
        .expect("forge a copy");
    let shallow = Run::of(&mut p.xpsync(&["verify", "--prefix", "sum/"])).await;
    assert!(shallow.success(), "{shallow}");
    let deep = Run::of(&mut p.xpsync(&["verify", "--deep", "--prefix", "sum/"])).await;
    assert!(!deep.success(), "{deep}");
    let lines = deep.json_lines();
    let different: Vec<_> = lines
        .iter()
        .filter(|l| l["status"] == "different")
        .collect();
    assert_eq!(different.len(), 1, "{deep}");
    assert_eq!(different[0]["key"], "sum/single");
    assert!(
        different[0]["error"].as_str().unwrap().contains("CRC32C"),
        "{deep}"
    );
}
