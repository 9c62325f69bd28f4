//! Settings of real buckets the copy must respect: a requester-pays source, a
//! website redirect on the object, a target key longer than S3 allows, objects
//! encrypted with a customer-provided key (SSE-C).

mod common;

use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use common::faults::{FaultProxy, Faults};
use common::{
    bytes_of, Etag, Partitions, MIB, SMALL_PARTS, SOURCE_BUCKET, SOURCE_KEY_ID, SOURCE_SECRET_KEY,
    TARGET_BUCKET,
};
use serde_json::json;

#[tokio::test]
async fn a_requester_pays_source_is_read_when_source_request_payer_is_set() {
    let p = Partitions::start().await;
    let source = FaultProxy::start(
        &p.source.endpoint,
        Faults {
            requester_pays: true,
            ..Faults::default()
        },
    )
    .await;
    let body = bytes_of(2048, 1);
    p.put_source("paid/a.bin", body.clone()).await;
    let env = [("XPSYNC_SOURCE__ENDPOINT_URL", source.endpoint.as_str())];

    let (refused, run) = p.sync(&["paid/a.bin"], &env).await;
    assert_eq!(run.code(), Some(1), "{run}");
    assert_eq!(
        refused[0]["outcome"], "failed",
        "without it S3 refuses: {run}"
    );

    let env = [env[0], ("XPSYNC_SOURCE__REQUEST_PAYER", "true")];
    let line = p.sync_one("paid/a.bin", &env).await;
    assert_eq!(line["outcome"], "copied", "{line}");
    p.assert_copied_intact("paid/a.bin", &body, Etag::Same)
        .await;
}

#[tokio::test]
async fn a_website_redirect_is_replicated() {
    let p = Partitions::start().await;
    p.source_s3
        .put_object()
        .bucket(SOURCE_BUCKET)
        .key("site/old.html")
        .website_redirect_location("/new.html")
        .body(bytes_of(10, 2).into())
        .send()
        .await
        .expect("put an object with a redirect");

    let line = p.sync_one("site/old.html", &[]).await;
    assert_eq!(line["outcome"], "copied", "{line}");
    let head = p
        .target_s3
        .head_object()
        .bucket(TARGET_BUCKET)
        .key("site/old.html")
        .send()
        .await
        .expect("the copy");
    assert_eq!(head.website_redirect_location(), Some("/new.html"));
    let again = p.sync_one("site/old.html", &[]).await;
    assert_eq!(again["outcome"], "unchanged", "{again}");
}

#[tokio::test]
async fn a_target_key_longer_than_s3_allows_is_the_keys_verdict_before_any_request() {
    let p = Partitions::start().await;
    let key = format!("long/{}", "k".repeat(1000));
    p.put_source(&key, bytes_of(10, 3)).await;
    let prefix = "a-target-prefix-that-makes-it-too-long/";
    let (lines, run) = p
        .sync(&[&key], &[("XPSYNC_TARGET__KEY_PREFIX", prefix)])
        .await;
    assert_eq!(run.code(), Some(1), "{run}");
    assert_eq!(lines[0]["outcome"], "failed", "{run}");
    let error = lines[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("1044 bytes, over S3's 1024"), "{run}");
}

/// A customer-provided key (SSE-C): base64 of the 32 bytes, and of their MD5.
fn customer_key(byte: u8) -> (String, String) {
    use base64::Engine as _;
    use md5::{Digest, Md5};
    let engine = base64::engine::general_purpose::STANDARD;
    let raw = [byte; 32];
    (engine.encode(raw), engine.encode(Md5::digest(raw)))
}

/// Stores `key` on the source encrypted with a customer-provided key: one PUT, or
/// parts of these sizes.
async fn put_sse_c(
    p: &Partitions,
    key: &str,
    body: &[u8],
    parts: &[usize],
    with: &(String, String),
) {
    let s3 = &p.source_s3;
    if parts.is_empty() {
        s3.put_object()
            .bucket(SOURCE_BUCKET)
            .key(key)
            .sse_customer_algorithm("AES256")
            .sse_customer_key(&with.0)
            .sse_customer_key_md5(&with.1)
            .body(body.to_vec().into())
            .send()
            .await
            .expect("put an SSE-C object");
        return;
    }
    let upload = s3
        .create_multipart_upload()
        .bucket(SOURCE_BUCKET)
        .key(key)
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&with.0)
        .sse_customer_key_md5(&with.1)
        .send()
        .await
        .expect("create an SSE-C upload");
    let id = upload.upload_id().expect("an upload id");
    let (mut completed, mut start) = (Vec::new(), 0);
    for (i, size) in parts.iter().enumerate() {
        let part = s3
            .upload_part()
            .bucket(SOURCE_BUCKET)
            .key(key)
            .upload_id(id)
            .part_number(i as i32 + 1)
            .sse_customer_algorithm("AES256")
            .sse_customer_key(&with.0)
            .sse_customer_key_md5(&with.1)
            .body(body[start..start + size].to_vec().into())
            .send()
            .await
            .expect("upload an SSE-C part");
        start += size;
        completed.push(
            CompletedPart::builder()
                .part_number(i as i32 + 1)
                .set_e_tag(part.e_tag().map(str::to_owned))
                .build(),
        );
    }
    s3.complete_multipart_upload()
        .bucket(SOURCE_BUCKET)
        .key(key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await
        .expect("complete the SSE-C upload");
}

#[tokio::test]
async fn sse_c_objects_are_read_with_the_key_in_the_sources_secret_and_are_a_verdict_without() {
    let p = Partitions::start().await;
    let ours = customer_key(7);
    let small = bytes_of(4096, 4);
    put_sse_c(&p, "sse-c/small", &small, &[], &ours).await;
    let large = bytes_of(12 * MIB, 5);
    put_sse_c(
        &p,
        "sse-c/large",
        &large,
        &[5 * MIB, 5 * MIB, 2 * MIB],
        &ours,
    )
    .await;
    let plain = bytes_of(4096, 6);
    p.put_source("sse-c/plain", plain.clone()).await;
    put_sse_c(&p, "sse-c/another-key", &small, &[], &customer_key(8)).await;
    let keys = [
        "sse-c/small",
        "sse-c/large",
        "sse-c/plain",
        "sse-c/another-key",
    ];

    // No key configured: each SSE-C object is its own verdict, in one step (the
    // daemon dead-letters a verdict once); the plain one is copied.
    let (lines, run) = p.sync(&keys, &SMALL_PARTS).await;
    assert_eq!(run.code(), Some(1), "{run}");
    for line in &lines {
        let error = line["error"].as_str().unwrap_or_default();
        match line["key"].as_str() {
            Some("sse-c/plain") => assert_eq!(line["outcome"], "copied", "{line}"),
            _ => {
                assert_eq!(line["outcome"], "failed", "{line}");
                assert!(error.contains("sse_c_key_missing: "), "{line}");
                assert!(
                    error.contains("Server Side Encryption"),
                    "S3's words: {line}"
                );
            }
        }
    }

    // The key in the source's secret, beside its access keys: read with it.
    let secret = json!({
        "access_key_id": SOURCE_KEY_ID,
        "secret_access_key": SOURCE_SECRET_KEY,
        "sse_customer_key": ours.0,
    });
    p.put_secret("xpsync-source-keys", &secret.to_string())
        .await;
    let mut env = SMALL_PARTS.to_vec();
    env.push((
        "XPSYNC_SOURCE__CREDENTIALS__SECRET_ID",
        "xpsync-source-keys",
    ));
    env.push((
        "XPSYNC_SOURCE__CREDENTIALS__SECRET_ENDPOINT_URL",
        p.source.endpoint.as_str(),
    ));
    let (lines, run) = p.sync(&keys, &env).await;
    assert_eq!(run.code(), Some(1), "{run}");
    for line in &lines {
        match line["key"].as_str() {
            Some("sse-c/another-key") => {
                assert_eq!(line["outcome"], "failed", "{line}");
                let error = line["error"].as_str().unwrap_or_default();
                assert!(error.contains("does not read this SSE-C object"), "{line}");
                assert!(
                    error.contains("MD5 hash of the key did not match"),
                    "S3's words: {line}"
                );
            }
            Some("sse-c/plain") => assert_eq!(line["outcome"], "unchanged", "{line}"),
            _ => assert_eq!(line["outcome"], "copied", "{line}"),
        }
    }
    // The copies hold the bytes; the harness reads no SSE-C source without its key.
    assert!(p.target_bytes("sse-c/small").await == Some(small), "small");
    assert!(p.target_bytes("sse-c/large").await == Some(large), "large");
    assert!(!run.stderr.contains(&ours.0), "the key is never logged");
}
