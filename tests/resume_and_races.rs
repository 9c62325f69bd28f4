//! Interrupted uploads are resumed (or aborted when they cannot be), and a source
//! overwritten mid-copy ends as its new version.

mod common;

use std::time::{Duration, Instant};

use aws_sdk_s3::config::RequestChecksumCalculation;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumAlgorithm;
use common::{bytes_of, Etag, Partitions, MIB, MINUTE, SMALL_PARTS, SOURCE_BUCKET, TARGET_BUCKET};

/// Starts an upload of `key` on the target, as an interrupted xpsync would have
/// left it (created with CRC32C, `target.checksum`'s default, each part carrying
/// its CRC32C), with the given parts.
async fn interrupted_upload(p: &Partitions, key: &str, parts: &[(i32, Vec<u8>)]) -> String {
    upload_with(p, key, parts, Some(ChecksumAlgorithm::Crc32C)).await
}

/// Starts an upload of `key` on the target with the given parts, created with
/// `checksum` (and its parts carrying it), or with none.
async fn upload_with(
    p: &Partitions,
    key: &str,
    parts: &[(i32, Vec<u8>)],
    checksum: Option<ChecksumAlgorithm>,
) -> String {
    let upload = p
        .target_s3
        .create_multipart_upload()
        .bucket(TARGET_BUCKET)
        .key(key)
        .set_checksum_algorithm(checksum.clone())
        .send()
        .await
        .unwrap();
    let id = upload.upload_id().unwrap().to_owned();
    for (number, body) in parts {
        p.target_s3
            .upload_part()
            .bucket(TARGET_BUCKET)
            .key(key)
            .upload_id(&id)
            .part_number(*number)
            .set_checksum_algorithm(checksum.clone())
            .body(ByteStream::from(body.clone()))
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::default()
                    .request_checksum_calculation(RequestChecksumCalculation::WhenSupported),
            )
            .send()
            .await
            .unwrap();
    }
    id
}

#[tokio::test]
async fn an_interrupted_upload_of_the_same_layout_is_resumed() {
    let p = Partitions::start().await;
    let body = p
        .put_source_multipart("resumable", &[5 * MIB, 5 * MIB, 5 * MIB, 5 * MIB], 1)
        .await;
    interrupted_upload(
        &p,
        "resumable",
        &[
            (1, body[..5 * MIB].to_vec()),
            (2, body[5 * MIB..10 * MIB].to_vec()),
        ],
    )
    .await;

    let line = p.sync_one("resumable", &[]).await;

    assert_eq!(line["outcome"], "copied");
    assert_eq!(line["parts_reused"], 2);
    assert_eq!(
        line["bytes_sent"],
        10 * MIB,
        "only the missing parts are sent"
    );
    p.assert_copied_intact("resumable", &body, Etag::Same).await;
}

/// An upload begun without a checksum (by a release before parts carried one) is
/// not resumed: S3 refuses parts, or a completion, whose checksum the upload was
/// not created with. It is aborted and the object copied afresh, intact.
#[tokio::test]
async fn an_upload_created_with_another_checksum_is_started_afresh() {
    let p = Partitions::start().await;
    let body = p
        .put_source_multipart("older", &[5 * MIB, 5 * MIB, 5 * MIB], 3)
        .await;
    let part = (1, body[..5 * MIB].to_vec());
    upload_with(&p, "older", &[part], None).await;

    let line = p.sync_one("older", &[]).await;

    assert_eq!(line["outcome"], "copied", "{line}");
    assert_eq!(line["parts_reused"], 0, "{line}");
    assert_eq!(line["bytes_sent"], 15 * MIB, "{line}");
    assert!(
        p.target_uploads().await.is_empty(),
        "the old upload is aborted"
    );
    p.assert_copied_intact("older", &body, Etag::Same).await;
}

#[tokio::test]
async fn an_interrupted_upload_of_an_older_version_is_aborted_not_reused() {
    let p = Partitions::start().await;
    let body = p
        .put_source_multipart("overwritten", &[5 * MIB, 5 * MIB], 2)
        .await;
    // A part of an older version, with the same size as the new version's.
    interrupted_upload(&p, "overwritten", &[(1, bytes_of(5 * MIB, 99))]).await;

    let line = p.sync_one("overwritten", &[]).await;

    assert_eq!(line["parts_reused"], 0);
    // The stale upload is aborted.
    p.assert_copied_intact("overwritten", &body, Etag::Same)
        .await;
}

#[tokio::test]
async fn a_re_cut_object_keeps_only_the_earlier_parts_that_match_the_source() {
    let p = Partitions::start().await;
    let body = bytes_of(15 * MIB, 7);
    p.put_source("recut", body.clone()).await;
    interrupted_upload(
        &p,
        "recut",
        &[(1, body[..5 * MIB].to_vec()), (2, bytes_of(5 * MIB, 98))],
    )
    .await;

    let line = p.sync_one("recut", &SMALL_PARTS).await;

    assert_eq!(
        line["parts_reused"], 1,
        "part 1 matches; part 2 is of another version"
    );
    assert_eq!(line["bytes_sent"], 10 * MIB);
    p.assert_copied_intact("recut", &body, Etag::Recorded).await;
}

#[tokio::test]
async fn an_upload_of_another_layout_is_aborted_not_reused() {
    let p = Partitions::start().await;
    let body = p
        .put_source_multipart("relaid", &[5 * MIB, 5 * MIB, 1000], 3)
        .await;
    interrupted_upload(&p, "relaid", &[(1, body[..6 * MIB].to_vec())]).await;

    let line = p.sync_one("relaid", &[]).await;

    assert_eq!(line["parts_reused"], 0);
    p.assert_copied_intact("relaid", &body, Etag::Same).await;
}

#[tokio::test]
async fn a_source_overwritten_mid_copy_ends_as_the_new_version() {
    let p = Partitions::start().await;
    p.put_source_multipart("moving", &[5 * MIB; 16], 4).await;
    let mut sync = p.xpsync(&["sync", "moving"]);
    sync.env("XPSYNC_TRANSFER__MAX_PARTS", "1");
    let child = sync
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Overwrite the source once the first part of the old version has landed.
    let deadline = Instant::now() + MINUTE;
    loop {
        assert!(Instant::now() < deadline, "the copy never started");
        if p.target_upload_parts().await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let newer = p
        .put_source_multipart("moving", &[5 * MIB, 5 * MIB, 3], 5)
        .await;

    let output = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("the source changed during the copy"),
        "the copy must have met the new version mid-way:\n{stderr}"
    );
    // The old version's upload is aborted.
    p.assert_copied_intact("moving", &newer, Etag::Same).await;
}

#[tokio::test]
async fn a_resumed_upload_begun_for_another_version_ends_with_the_new_description() {
    let p = Partitions::start().await;
    let key = "recut/report.bin";
    let put = |body: Vec<u8>, content_type: &'static str| {
        p.source_s3
            .put_object()
            .bucket(SOURCE_BUCKET)
            .key(key)
            .content_type(content_type)
            .metadata("version", content_type)
            .body(body.into())
            .send()
    };
    // V1 was being copied (re-cut into 5 MiB parts) when the worker died: its upload
    // carries V1's description and recorded ETag, and its first two parts.
    let v1 = bytes_of(12 * MIB, 31);
    let v1_etag = put(v1.clone(), "text/plain")
        .await
        .unwrap()
        .e_tag()
        .unwrap()
        .to_owned();
    let upload = p
        .target_s3
        .create_multipart_upload()
        .bucket(TARGET_BUCKET)
        .key(key)
        .content_type("text/plain")
        .metadata("version", "text/plain")
        .metadata("xpsync-source-etag", v1_etag.trim_matches('"'))
        .send()
        .await
        .unwrap();
    let id = upload.upload_id().unwrap();
    for (number, range) in [(1, 0..5 * MIB), (2, 5 * MIB..10 * MIB)] {
        p.target_s3
            .upload_part()
            .bucket(TARGET_BUCKET)
            .key(key)
            .upload_id(id)
            .part_number(number)
            .body(ByteStream::from(v1[range].to_vec()))
            .send()
            .await
            .unwrap();
    }
    // Then V2, of the same size, other bytes and another description.
    let v2 = bytes_of(12 * MIB, 32);
    let v2_etag = put(v2.clone(), "text/html")
        .await
        .unwrap()
        .e_tag()
        .unwrap()
        .to_owned();
    let env = SMALL_PARTS;

    let line = p.sync_one(key, &env).await;

    assert_eq!(line["outcome"], "copied", "{line}");
    p.assert_copied_intact(key, &v2, Etag::Recorded).await;
    let head = p
        .target_s3
        .head_object()
        .bucket(TARGET_BUCKET)
        .key(key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("text/html"));
    let metadata = head.metadata().unwrap();
    assert_eq!(metadata["version"], "text/html");
    assert_eq!(metadata["xpsync-source-etag"], v2_etag.trim_matches('"'));
    assert_eq!(p.sync_one(key, &env).await["outcome"], "unchanged");
    assert!(p.target_uploads().await.is_empty());
}
