//! Awkward keys, metadata, tags, and the target's own settings (prefix, storage
//! class, encryption), and deletes.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ServerSideEncryption, StorageClass, Tag, Tagging};
use common::faults::{FaultProxy, Faults};
use common::{bytes_of, Etag, Partitions, Run, SOURCE_BUCKET, TARGET_BUCKET};

#[tokio::test]
async fn awkward_keys_are_copied_exactly_as_named() {
    let p = Partitions::start().await;
    let long_key = format!("long/{}", "k".repeat(1024 - 5));
    assert_eq!(long_key.len(), 1024);
    let keys = [
        "with space.txt",
        "plus+sign.txt",
        "percent%20and%2B.txt",
        "中文/文件.txt",
        "emoji/🚀📦.bin",
        long_key.as_str(),
        "a//b",
        "trailing/",
        "question?and#hash&amp=.txt",
    ];
    for (i, key) in keys.iter().enumerate() {
        p.put_source(key, bytes_of(10 + i, i as u64)).await;
    }

    let (lines, run) = p.sync(&keys, &[]).await;

    assert!(run.success(), "{run}");
    for (i, (key, line)) in keys.iter().zip(&lines).enumerate() {
        assert_eq!(line["key"], *key);
        assert_eq!(line["outcome"], "copied", "{line}");
        p.assert_copied_intact(key, &bytes_of(10 + i, i as u64), Etag::Same)
            .await;
    }
    let verify = common::Run::of(&mut p.xpsync(&["verify"])).await;
    assert!(verify.success(), "{verify}");
}

#[tokio::test]
async fn metadata_and_tags_round_trip() {
    let p = Partitions::start().await;
    put_described(&p, "meta.json").await;

    p.sync_one("meta.json", &[]).await;

    assert_described(&p, "meta.json").await;
}

/// `backfill --mode copy` reads a small object's description from its GET, not a
/// HEAD: nothing is lost on the way.
#[tokio::test]
async fn metadata_and_tags_round_trip_through_a_backfill_that_sends_no_head() {
    let p = Partitions::start().await;
    let source = FaultProxy::start(&p.source.endpoint, Faults::default()).await;
    let target = FaultProxy::start(&p.target.endpoint, Faults::default()).await;
    put_described(&p, "meta.json").await;

    let mut backfill = p.xpsync(&["backfill", "--mode", "copy"]);
    backfill
        .env("XPSYNC_SOURCE__ENDPOINT_URL", &source.endpoint)
        .env("XPSYNC_TARGET__ENDPOINT_URL", &target.endpoint);
    let run = Run::of(&mut backfill).await;

    assert!(run.success(), "{run}");
    // The GET describes the object; the one source HEAD is the last-writer check
    // after the write.
    assert_eq!(source.requests("HEAD"), 1, "{run}");
    assert_eq!(target.requests("HEAD"), 0, "{run}");
    assert_described(&p, "meta.json").await;
}

/// Puts `key` with every kind of metadata and two tags.
async fn put_described(p: &Partitions, key: &str) {
    p.source_s3
        .put_object()
        .bucket(SOURCE_BUCKET)
        .key(key)
        .body(ByteStream::from(b"{}".to_vec()))
        .content_type("application/json")
        .content_encoding("identity")
        .content_language("zh-CN")
        .content_disposition("attachment; filename=\"meta.json\"")
        .cache_control("max-age=60")
        .metadata("owner", "platform-team")
        .metadata("purpose", "round trip")
        .tagging("team=platform&cost center=42")
        .send()
        .await
        .unwrap();
}

/// Checks that the target's `key` carries what [`put_described`] gave the source's.
async fn assert_described(p: &Partitions, key: &str) {
    let head = p
        .target_s3
        .head_object()
        .bucket(TARGET_BUCKET)
        .key(key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/json"));
    assert_eq!(head.content_encoding(), Some("identity"));
    assert_eq!(head.content_language(), Some("zh-CN"));
    assert_eq!(
        head.content_disposition(),
        Some("attachment; filename=\"meta.json\"")
    );
    assert_eq!(head.cache_control(), Some("max-age=60"));
    let metadata = head.metadata().unwrap();
    assert_eq!(
        metadata.get("owner").map(String::as_str),
        Some("platform-team")
    );
    assert_eq!(
        metadata.get("purpose").map(String::as_str),
        Some("round trip")
    );
    let tags = p
        .target_s3
        .get_object_tagging()
        .bucket(TARGET_BUCKET)
        .key(key)
        .send()
        .await
        .unwrap();
    let mut tags: Vec<(String, String)> = tags
        .tag_set()
        .iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        [
            ("cost center".to_owned(), "42".to_owned()),
            ("team".to_owned(), "platform".to_owned())
        ]
    );
}

#[tokio::test]
async fn metadata_and_tags_are_left_behind_when_turned_off() {
    let p = Partitions::start().await;
    p.source_s3
        .put_object()
        .bucket(SOURCE_BUCKET)
        .key("plain")
        .body(ByteStream::from(b"x".to_vec()))
        .metadata("owner", "someone")
        .send()
        .await
        .unwrap();
    p.source_s3
        .put_object_tagging()
        .bucket(SOURCE_BUCKET)
        .key("plain")
        .tagging(
            Tagging::builder()
                .tag_set(Tag::builder().key("k").value("v").build().unwrap())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    p.sync_one(
        "plain",
        &[
            ("XPSYNC_REPLICATE__METADATA", "false"),
            ("XPSYNC_REPLICATE__TAGS", "false"),
        ],
    )
    .await;

    let head = p
        .target_s3
        .head_object()
        .bucket(TARGET_BUCKET)
        .key("plain")
        .send()
        .await
        .unwrap();
    assert!(!head.metadata().unwrap().contains_key("owner"));
    let tags = p
        .target_s3
        .get_object_tagging()
        .bucket(TARGET_BUCKET)
        .key("plain")
        .send()
        .await
        .unwrap();
    assert!(tags.tag_set().is_empty());
}

#[tokio::test]
async fn the_target_key_prefix_storage_class_and_encryption_are_applied() {
    let p = Partitions::start().await;
    let etag = p.put_source("dir/obj", bytes_of(64, 1)).await;
    let env = [
        ("XPSYNC_TARGET__KEY_PREFIX", "replica/"),
        ("XPSYNC_TARGET__STORAGE_CLASS", "STANDARD_IA"),
        ("XPSYNC_TARGET__SSE", "AES256"),
    ];

    let first = p.sync_one("dir/obj", &env).await;
    let second = p.sync_one("dir/obj", &env).await;

    assert_eq!(first["outcome"], "copied");
    assert_eq!(second["outcome"], "unchanged");
    assert_eq!(p.target_etag("dir/obj").await, None);
    let head = p
        .target_s3
        .head_object()
        .bucket(TARGET_BUCKET)
        .key("replica/dir/obj")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.e_tag().map(|e| e.trim_matches('"')),
        Some(etag.as_str())
    );
    assert_eq!(head.storage_class(), Some(&StorageClass::StandardIa));
    assert_eq!(
        head.server_side_encryption(),
        Some(&ServerSideEncryption::Aes256)
    );
}

#[tokio::test]
async fn a_key_gone_from_the_source_is_deleted_only_when_deletes_are_on() {
    let p = Partitions::start().await;
    for key in ["kept", "removed"] {
        p.put_source(key, bytes_of(10, 1)).await;
        p.sync_one(key, &[]).await;
        p.source_s3
            .delete_object()
            .bucket(SOURCE_BUCKET)
            .key(key)
            .send()
            .await
            .unwrap();
    }

    let kept = p.sync_one("kept", &[]).await;
    let removed = p
        .sync_one("removed", &[("XPSYNC_REPLICATE__DELETES", "true")])
        .await;
    let again = p
        .sync_one("removed", &[("XPSYNC_REPLICATE__DELETES", "true")])
        .await;

    assert_eq!(kept["outcome"], "absent");
    assert!(p.target_etag("kept").await.is_some());
    assert_eq!(removed["outcome"], "deleted");
    assert!(p.target_etag("removed").await.is_none());
    assert_eq!(again["outcome"], "absent");
}

#[tokio::test]
async fn excluded_keys_are_filtered_and_not_copied() {
    let p = Partitions::start().await;
    p.put_source("logs/tmp/x", bytes_of(10, 1)).await;
    p.put_source("logs/keep", bytes_of(10, 2)).await;
    let env = [
        ("XPSYNC_REPLICATE__INCLUDE_PREFIXES", "[\"logs/\"]"),
        ("XPSYNC_REPLICATE__EXCLUDE_PREFIXES", "[\"logs/tmp/\"]"),
    ];

    let (lines, run) = p.sync(&["logs/tmp/x", "logs/keep"], &env).await;

    assert!(run.success(), "{run}");
    assert_eq!(lines[0]["outcome"], "filtered");
    assert_eq!(lines[1]["outcome"], "copied");
    assert!(p.target_etag("logs/tmp/x").await.is_none());
}
