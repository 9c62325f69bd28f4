//! Copying objects of every shape between the emulated partitions with `xpsync sync`.

mod common;

use common::{bytes_of, Partitions, MIB};

#[tokio::test]
async fn a_small_object_is_copied_with_one_put_and_verified() {
    let p = Partitions::start().await;
    let body = bytes_of(1000, 1);
    let etag = p.put_source("small.bin", body.clone()).await;

    let line = p.sync_one("small.bin", &[]).await;

    assert_eq!(line["outcome"], "copied");
    assert_eq!(line["bytes"], 1000);
    assert_eq!(line["etag"], etag.as_str());
    assert_eq!(p.target_bytes("small.bin").await, Some(body));
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
    assert_eq!(p.target_etag("uniform.bin").await, Some(source_etag));
    assert_eq!(p.target_bytes("uniform.bin").await, Some(body));
}
