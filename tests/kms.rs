//! SSE-KMS on either side, as S3 does it: opaque ETags ([`KmsProxy`]) for every
//! write under KMS, whether asked for (`target.sse = "aws:kms"`) or the bucket's
//! default. Every kind of copy (a single PUT, a re-cut object, a layout-preserving
//! one) must succeed, be found unchanged the next time, and leave `verify` clean;
//! and a corrupted read must still fail, so the checks are not simply gone.

mod common;

use common::faults::{FaultProxy, Faults};
use common::kms::KmsProxy;
use common::s3::{put, put_multipart, s3_client, sdk_config};
use common::{
    bytes_of, Etag, Partitions, Run, MIB, SMALL_PARTS, SOURCE_BUCKET, SOURCE_KEY_ID, SOURCE_REGION,
    SOURCE_SECRET_KEY,
};

const KEYS: [&str; 3] = ["kms/single-put", "kms/re-cut", "kms/layout-kept"];

/// One object of each kind on the source, written through `s3`; their bytes.
async fn put_each_kind(s3: &aws_sdk_s3::Client) -> Vec<Vec<u8>> {
    let single = bytes_of(MIB, 70);
    put(s3, SOURCE_BUCKET, KEYS[0], single.clone()).await;
    let re_cut = bytes_of(12 * MIB, 71);
    put(s3, SOURCE_BUCKET, KEYS[1], re_cut.clone()).await;
    let kept = put_multipart(s3, SOURCE_BUCKET, KEYS[2], &[5 * MIB, 5 * MIB, 2 * MIB], 72).await;
    vec![single, re_cut, kept]
}

/// Syncs every kind twice and verifies, with `env`: copied, then unchanged, then
/// clean, every byte intact and every copy's ETag as `etag` says.
async fn copies_verify_and_stay_unchanged(
    p: &Partitions,
    env: &[(&str, &str)],
    bodies: &[Vec<u8>],
    etag: Etag,
) {
    let (lines, run) = p.sync(&KEYS, env).await;
    assert!(run.success(), "{run}");
    for ((key, body), line) in KEYS.iter().zip(bodies).zip(&lines) {
        assert_eq!(line["outcome"], "copied", "{line}");
        p.assert_copied_intact(key, body, etag).await;
    }
    let (again, run) = p.sync(&KEYS, env).await;
    assert!(run.success(), "{run}");
    for line in &again {
        assert_eq!(line["outcome"], "unchanged", "{line}");
    }
    let mut verify = p.xpsync(&["verify"]);
    verify.envs(env.iter().copied());
    let run = Run::of(&mut verify).await;
    assert!(run.success(), "verify is not clean: {run}");
    assert!(
        p.target_uploads().await.is_empty(),
        "an upload was left behind"
    );
}

#[tokio::test]
async fn a_target_asked_for_sse_kms_gets_every_kind_of_copy_verified() {
    let p = Partitions::start().await;
    let kms = KmsProxy::start(&p.target.endpoint).await;
    let bodies = put_each_kind(&p.source_s3).await;
    let mut env = SMALL_PARTS.to_vec();
    env.push(("XPSYNC_TARGET__ENDPOINT_URL", kms.endpoint.as_str()));
    env.push(("XPSYNC_TARGET__SSE", "aws:kms"));

    // The copies' ETags are opaque; each records the source's.
    copies_verify_and_stay_unchanged(&p, &env, &bodies, Etag::Recorded).await;
    assert!(kms.issued() >= 3, "the proxy made no ETag opaque");
}

#[tokio::test]
async fn a_target_bucket_encrypting_with_kms_by_default_gets_every_kind_of_copy_verified() {
    let p = Partitions::start().await;
    let kms = KmsProxy::bucket_default(&p.target.endpoint).await;
    let bodies = put_each_kind(&p.source_s3).await;
    let mut env = SMALL_PARTS.to_vec();
    env.push(("XPSYNC_TARGET__ENDPOINT_URL", kms.endpoint.as_str()));

    copies_verify_and_stay_unchanged(&p, &env, &bodies, Etag::Recorded).await;
    assert!(kms.issued() >= 3, "the proxy made no ETag opaque");
}

#[tokio::test]
async fn a_source_under_sse_kms_is_copied_verified_and_then_unchanged() {
    let p = Partitions::start().await;
    let kms = KmsProxy::bucket_default(&p.source.endpoint).await;
    let conf = sdk_config(
        &kms.endpoint,
        SOURCE_REGION,
        SOURCE_KEY_ID,
        SOURCE_SECRET_KEY,
    );
    let bodies = put_each_kind(&s3_client(&conf, &kms.endpoint)).await;
    let mut env = SMALL_PARTS.to_vec();
    env.push(("XPSYNC_SOURCE__ENDPOINT_URL", kms.endpoint.as_str()));

    // The source's ETags xpsync saw are opaque; the harness reads moto's.
    copies_verify_and_stay_unchanged(&p, &env, &bodies, Etag::Opaque).await;
    assert!(kms.issued() >= 3, "the proxy made no ETag opaque");
}

#[tokio::test]
async fn corrupted_reads_still_fail_the_copy_to_a_kms_target() {
    let p = Partitions::start().await;
    let single = bytes_of(MIB, 73);
    p.put_source(KEYS[0], single).await;
    p.put_source_multipart(KEYS[2], &[5 * MIB, 5 * MIB, 2 * MIB], 74)
        .await;
    // Every object GET from the source has a byte flipped; the target checks
    // Content-MD5 as S3 does, and gives KMS ETags as S3 does.
    let corrupt = FaultProxy::start(
        &p.source.endpoint,
        Faults {
            corrupt_get: Some(1),
            ..Faults::default()
        },
    )
    .await;
    let kms = KmsProxy::bucket_default(&p.target.endpoint).await;
    let checking = FaultProxy::start(
        &kms.endpoint,
        Faults {
            check_content_md5: true,
            ..Faults::default()
        },
    )
    .await;
    let mut env = SMALL_PARTS.to_vec();
    env.push(("XPSYNC_SOURCE__ENDPOINT_URL", corrupt.endpoint.as_str()));
    env.push(("XPSYNC_TARGET__ENDPOINT_URL", checking.endpoint.as_str()));

    let keys = [KEYS[0], KEYS[2]];
    let (lines, run) = p.sync(&keys, &env).await;

    assert_eq!(run.code(), Some(1), "{run}");
    assert!(corrupt.injected() > 0, "nothing was corrupted");
    for (key, line) in keys.iter().zip(&lines) {
        assert_eq!(line["outcome"], "failed", "{line}");
        assert_eq!(p.target_bytes(key).await, None, "{key} reached the target");
    }
    assert!(
        p.target_uploads().await.is_empty(),
        "an upload was left behind"
    );
}
