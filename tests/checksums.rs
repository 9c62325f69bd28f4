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
use aws_sdk_s3::types::{ChecksumAlgorithm, ServerSideEncryption};
use common::faults::{FaultProxy, Faults};
use common::kms::KmsProxy;
use common::s3::{put, put_multipart, s3_client, sdk_config};
use common::{
    bytes_of, Etag, Partitions, MIB, SMALL_PARTS, SOURCE_BUCKET, TARGET_BUCKET, TARGET_REGION,
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
            .config_override(
                aws_sdk_s3::config::Builder::default()
                    .request_checksum_calculation(RequestChecksumCalculation::WhenSupported),
            )
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
