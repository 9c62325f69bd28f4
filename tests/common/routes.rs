//! Two routes (#24) on the harness's partitions: `logs`, the harness's own buckets
//! under `cn/` on the target, and `media`, buckets of its own with a target IAM
//! user and a secret of its own.

use super::{secret_json, Keys, Partitions, SOURCE_BUCKET, TARGET_BUCKET};

pub const MEDIA_SOURCE: &str = "xpsync-media";
pub const MEDIA_TARGET: &str = "xpsync-target-media";
pub const MEDIA_SECRET: &str = "xpsync-media-target-keys";

/// The two routes: `logs` (the harness's buckets, under `cn/` on the target, with
/// the harness's secret) and `media` (its own buckets and its own secret), as the
/// template passes them: inline TOML in `XPSYNC_ROUTE`, the one-pair buckets unset.
pub fn routes_env(p: &Partitions) -> Vec<(&'static str, String)> {
    let routes = format!(
        r#"[{{name = "logs", source = {{bucket = "{SOURCE_BUCKET}"}}, target = {{bucket = "{TARGET_BUCKET}", key_prefix = "cn/"}}}}, {{name = "media", source = {{bucket = "{MEDIA_SOURCE}"}}, target = {{bucket = "{MEDIA_TARGET}", credentials = {{secret_id = "{MEDIA_SECRET}", secret_endpoint_url = "{}"}}}}}}]"#,
        p.source.endpoint
    );
    vec![
        ("XPSYNC_SOURCE__BUCKET", String::new()),
        ("XPSYNC_TARGET__BUCKET", String::new()),
        ("XPSYNC_ROUTE", routes),
    ]
}

/// Both partitions with the media route's buckets, user and secret.
pub async fn two_routes() -> (Partitions, Keys) {
    let p = Partitions::start_with_target_buckets(&[(MEDIA_TARGET, "xpsync-media-writer")]).await;
    p.create_source_bucket(MEDIA_SOURCE).await;
    let media_writer = p.writers[0].clone();
    p.put_secret(MEDIA_SECRET, &secret_json(&media_writer))
        .await;
    (p, media_writer)
}
