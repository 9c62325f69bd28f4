//! Changes that leave the bytes (and a single-part object's ETag) as they were: an
//! object rewritten in place with new metadata, and tags edited. They must reach
//! the target, inside the target's partition, without moving the bytes again.

mod common;

use aws_sdk_s3::types::{MetadataDirective, Tag, Tagging};
use common::{bytes_of, Etag, Partitions, SOURCE_BUCKET, TARGET_BUCKET};

const KEY: &str = "docs/page.html";

async fn put_page(p: &Partitions) {
    p.source_s3
        .put_object()
        .bucket(SOURCE_BUCKET)
        .key(KEY)
        .content_type("text/plain")
        .metadata("owner", "alice")
        .body(bytes_of(4096, 90).into())
        .send()
        .await
        .expect("put the page");
}

#[tokio::test]
async fn a_metadata_only_rewrite_reaches_the_target_without_moving_bytes() {
    let p = Partitions::start().await;
    put_page(&p).await;
    assert_eq!(p.sync_one(KEY, &[]).await["outcome"], "copied");
    let etag_before = p.source_etag(KEY).await;

    // `aws s3 cp s3://b/k s3://b/k --metadata-directive REPLACE --content-type text/html`
    p.source_s3
        .copy_object()
        .bucket(SOURCE_BUCKET)
        .key(KEY)
        .copy_source(format!("{SOURCE_BUCKET}/{KEY}"))
        .metadata_directive(MetadataDirective::Replace)
        .content_type("text/html")
        .cache_control("max-age=60")
        .metadata("owner", "bob")
        .send()
        .await
        .expect("rewrite the source's metadata");
    assert_eq!(p.source_etag(KEY).await, etag_before, "the ETag is kept");

    let line = p.sync_one(KEY, &[]).await;
    assert_eq!(line["outcome"], "metadata_updated", "{line}");
    assert_eq!(line["bytes_sent"], 0, "no bytes crossed: {line}");
    let head = p
        .target_s3
        .head_object()
        .bucket(TARGET_BUCKET)
        .key(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("text/html"));
    assert_eq!(head.cache_control(), Some("max-age=60"));
    let metadata = head.metadata().unwrap();
    assert_eq!(metadata.get("owner").map(String::as_str), Some("bob"));
    assert_eq!(
        metadata.get("xpsync-source-etag"),
        Some(&etag_before),
        "the copy still records the source's version"
    );
    p.assert_copied_intact(KEY, &bytes_of(4096, 90), Etag::Same)
        .await;

    let again = p.sync_one(KEY, &[]).await;
    assert_eq!(again["outcome"], "unchanged", "{again}");
}

#[tokio::test]
async fn tag_edits_reach_the_target_and_removed_tags_are_removed() {
    let p = Partitions::start().await;
    put_page(&p).await;
    assert_eq!(p.sync_one(KEY, &[]).await["outcome"], "copied");
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build().unwrap();

    p.source_s3
        .put_object_tagging()
        .bucket(SOURCE_BUCKET)
        .key(KEY)
        .tagging(
            Tagging::builder()
                .tag_set(tag("team", "web"))
                .tag_set(tag("tier", "gold"))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let line = p.sync_one(KEY, &[]).await;
    assert_eq!(line["outcome"], "metadata_updated", "{line}");
    let expected = [("team", "web"), ("tier", "gold")].map(|(k, v)| (k.to_owned(), v.to_owned()));
    assert_eq!(target_tags(&p).await, expected);

    p.source_s3
        .delete_object_tagging()
        .bucket(SOURCE_BUCKET)
        .key(KEY)
        .send()
        .await
        .unwrap();
    let line = p.sync_one(KEY, &[]).await;
    assert_eq!(line["outcome"], "metadata_updated", "{line}");
    assert!(target_tags(&p).await.is_empty());
    assert_eq!(p.sync_one(KEY, &[]).await["outcome"], "unchanged");
}

async fn target_tags(p: &Partitions) -> Vec<(String, String)> {
    let mut tags: Vec<(String, String)> = p
        .target_s3
        .get_object_tagging()
        .bucket(TARGET_BUCKET)
        .key(KEY)
        .send()
        .await
        .unwrap()
        .tag_set()
        .iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect();
    tags.sort();
    tags
}
