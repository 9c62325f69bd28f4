//! Copying objects of every shape between the emulated partitions with `xpsync sync`.

mod common;

use common::{bytes_of, Etag, Partitions, MIB, SMALL_PARTS};

#[tokio::test]
async fn a_small_object_is_copied_with_one_put_and_verified() {
    let p = Partitions::start().await;
    let body = bytes_of(1000, 1);
    let etag = p.put_source("small.bin", body.clone()).await;

    let line = p.sync_one("small.bin", &[]).await;

    assert_eq!(line["outcome"], "copied");
    assert_eq!(line["method"], "put");
    assert_eq!(line["bytes"], 1000);
    assert_eq!(line["etag"], etag.as_str());
    p.assert_copied_intact("small.bin", &body, Etag::Same).await;
}

#[tokio::test]
async fn an_empty_object_is_copied() {
    let p = Partitions::start().await;
    p.put_source("empty", Vec::new()).await;

    let line = p.sync_one("empty", &[]).await;

    assert_eq!(line["outcome"], "copied");
    assert_eq!(line["bytes"], 0);
    p.assert_copied_intact("empty", &[], Etag::Same).await;
}

#[tokio::test]
async fn an_object_exactly_at_the_threshold_is_one_put_and_one_byte_more_is_multipart() {
    let p = Partitions::start().await;
    let at = bytes_of(5 * MIB, 3);
    let above = bytes_of(5 * MIB + 1, 4);
    p.put_source("at", at.clone()).await;
    p.put_source("above", above.clone()).await;

    let (lines, run) = p.sync(&["at", "above"], &SMALL_PARTS).await;
    assert!(run.success(), "{run}");

    assert_eq!(lines[0]["method"], "put");
    p.assert_copied_intact("at", &at, Etag::Same).await;
    assert_eq!(lines[1]["method"], "multipart");
    assert!(p.target_etag("above").await.unwrap().ends_with("-2"));
    p.assert_copied_intact("above", &above, Etag::Recorded)
        .await;
}

#[tokio::test]
async fn a_multipart_source_keeps_its_uniform_part_layout_and_etag() {
    let p = Partitions::start().await;
    let body = p
        .put_source_multipart("uniform.bin", &[5 * MIB, 5 * MIB, 5 * MIB, 2 * MIB], 2)
        .await;
    let source_etag = p.source_etag("uniform.bin").await;
    assert!(source_etag.ends_with("-4"));

    let line = p.sync_one("uniform.bin", &[]).await;

    assert_eq!(line["outcome"], "copied");
    assert_eq!(line["method"], "multipart");
    p.assert_copied_intact("uniform.bin", &body, Etag::Same)
        .await;
}

#[tokio::test]
async fn a_multipart_source_with_uneven_parts_keeps_its_etag() {
    let p = Partitions::start().await;
    let body = p
        .put_source_multipart("uneven.bin", &[7 * MIB, 5 * MIB, 9 * MIB, 1], 5)
        .await;

    let line = p.sync_one("uneven.bin", &[]).await;

    assert_eq!(line["outcome"], "copied");
    p.assert_copied_intact("uneven.bin", &body, Etag::Same)
        .await;
}

#[tokio::test]
async fn a_small_object_stored_in_one_multipart_part_keeps_its_etag() {
    let p = Partitions::start().await;
    let body = p.put_source_multipart("one-part", &[1000], 6).await;
    let source_etag = p.source_etag("one-part").await;
    assert!(source_etag.ends_with("-1"));

    let line = p.sync_one("one-part", &[]).await;

    assert_eq!(line["method"], "multipart");
    p.assert_copied_intact("one-part", &body, Etag::Same).await;
}

#[tokio::test]
async fn without_preserve_part_layout_a_multipart_source_is_re_cut_and_still_recognised() {
    let p = Partitions::start().await;
    p.put_source_multipart("recut", &[7 * MIB, 6 * MIB], 7)
        .await;
    let source_etag = p.source_etag("recut").await;
    let mut env = SMALL_PARTS.to_vec();
    env.push(("XPSYNC_TRANSFER__PRESERVE_PART_LAYOUT", "false"));

    let first = p.sync_one("recut", &env).await;
    let second = p.sync_one("recut", &env).await;

    assert_eq!(first["outcome"], "copied");
    let target_etag = p.target_etag("recut").await.unwrap();
    assert!(
        target_etag.ends_with("-3"),
        "13 MiB in 5 MiB parts: {target_etag}"
    );
    assert_ne!(target_etag, source_etag);
    assert_eq!(
        second["outcome"], "unchanged",
        "the recorded source ETag must be used"
    );
}

#[tokio::test]
async fn a_single_part_object_above_the_threshold_is_re_cut_and_a_second_run_moves_no_bytes() {
    let p = Partitions::start().await;
    let body = bytes_of(12 * MIB, 8);
    p.put_source("big-single", body.clone()).await;

    let first = p.sync_one("big-single", &SMALL_PARTS).await;
    let second = p.sync_one("big-single", &SMALL_PARTS).await;

    assert_eq!(first["outcome"], "copied");
    assert_eq!(first["bytes_sent"], 12 * MIB);
    p.assert_copied_intact("big-single", &body, Etag::Recorded)
        .await;
    assert_eq!(second["outcome"], "unchanged");
    assert_eq!(second["bytes_sent"], 0);
}

#[tokio::test]
async fn a_second_run_over_unchanged_objects_moves_no_bytes() {
    let p = Partitions::start().await;
    p.put_source("a", bytes_of(100, 9)).await;
    p.put_source_multipart("b", &[5 * MIB, 10], 10).await;

    let (first, _) = p.sync(&["a", "b"], &[]).await;
    let (second, run) = p.sync(&["a", "b"], &[]).await;

    assert!(run.success(), "{run}");
    assert!(first.iter().all(|l| l["outcome"] == "copied"));
    for line in second {
        assert_eq!(line["outcome"], "unchanged", "{line}");
        assert_eq!(line["bytes_sent"], 0, "{line}");
    }
}

#[tokio::test]
async fn a_changed_source_object_is_copied_again() {
    let p = Partitions::start().await;
    p.put_source("changing", bytes_of(100, 11)).await;
    p.sync_one("changing", &[]).await;
    let newer = bytes_of(100, 12);
    p.put_source("changing", newer.clone()).await;

    let line = p.sync_one("changing", &[]).await;

    assert_eq!(line["outcome"], "copied");
    p.assert_copied_intact("changing", &newer, Etag::Same).await;
}
