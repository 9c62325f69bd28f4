//! Settings of real buckets the copy must respect: a requester-pays source, a
//! website redirect on the object, a target key longer than S3 allows.

mod common;

use common::faults::{FaultProxy, Faults};
use common::{bytes_of, Etag, Partitions, SOURCE_BUCKET, TARGET_BUCKET};

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
