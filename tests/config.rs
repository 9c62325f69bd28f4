//! `xpsync check-config` and the errors of bad configuration.

mod common;

use common::{xpsync_bare, Run};

const VALID: &str = r#"
[source]
region = "cn-northwest-1"
bucket = "source-bucket"

[target]
region = "us-west-2"
bucket = "target-bucket"
"#;

async fn check_config(text: &str, env: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xpsync.toml");
    std::fs::write(&path, text).unwrap();
    let mut command = xpsync_bare(dir.path(), &["check-config", "--config"]);
    command.arg(&path).envs(env.iter().copied());
    Run::of(&mut command).await
}

#[tokio::test]
async fn the_example_configuration_is_valid() {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/xpsync.example.toml"
    ))
    .unwrap();

    let run = check_config(&example, &[]).await;

    assert!(run.success(), "{run}");
    assert!(
        run.stdout
            .contains("secret_id = \"s3-cross-partition-sync-credentials\""),
        "{run}"
    );
    assert!(run.stdout.contains("max_parts = 32"), "{run}");
}

#[tokio::test]
async fn the_environment_overrides_the_file_and_needs_no_file() {
    let run = check_config(VALID, &[("XPSYNC_TARGET__BUCKET", "from-the-environment")]).await;
    assert!(run.success(), "{run}");
    assert!(
        run.stdout.contains("bucket = \"from-the-environment\""),
        "{run}"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut command = xpsync_bare(dir.path(), &["check-config"]);
    command.envs([
        ("XPSYNC_SOURCE__REGION", "cn-north-1"),
        ("XPSYNC_SOURCE__BUCKET", "env-source"),
        ("XPSYNC_TARGET__REGION", "eu-west-1"),
        ("XPSYNC_TARGET__BUCKET", "env-target"),
        ("XPSYNC_TRANSFER__PART_SIZE", "32MiB"),
        ("XPSYNC_TRANSFER__MAX_OBJECTS", "4"),
    ]);
    let run = Run::of(&mut command).await;
    assert!(run.success(), "{run}");
    assert!(run.stdout.contains("bucket = \"env-source\""), "{run}");
    assert!(run.stdout.contains("max_objects = 4"), "{run}");
    assert!(run.stdout.contains("part_size = \"32.0 MiB\""), "{run}");
}

#[tokio::test]
async fn an_unknown_key_is_an_error_naming_it() {
    let run = check_config(&format!("{VALID}\n[transfer]\nmax_object = 4\n"), &[]).await;
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(
        run.stderr
            .contains("transfer.max_object: unknown field: found `max_object`"),
        "{run}"
    );

    let run = check_config(VALID, &[("XPSYNC_TRANSFER__BOGUS", "1")]).await;
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(
        run.stderr.contains("transfer.bogus: unknown field"),
        "{run}"
    );
    assert!(
        run.stderr
            .contains("environment variable XPSYNC_TRANSFER__BOGUS"),
        "{run}"
    );
}

#[tokio::test]
async fn every_problem_is_reported_at_once_one_line_each() {
    let text = r#"
[source]
region = "cn-northwest-1"
endpoint_url = "not a url"

[target]
region = "us-west-2"
bucket = "target-bucket"

[transfer]
part_size = "1MiB"
max_parts = 0
memory_limit = "8MiB"
multipart_threshold = "16MiB"
"#;
    let run = check_config(text, &[]).await;

    assert_eq!(run.code(), Some(2), "{run}");
    for expected in [
        "  - source.bucket is required",
        "  - source.endpoint_url is \"not a url\", which is not a URL",
        "  - transfer.max_parts must be at least 1",
        "  - transfer.part_size is 1.0 MiB, but S3 parts must be at least 5MiB",
        "  - transfer.memory_limit (8.0 MiB) is smaller than transfer.multipart_threshold (16.0 MiB)",
    ] {
        assert!(run.stderr.contains(expected), "missing {expected:?} in\n{run}");
    }
}

#[tokio::test]
async fn a_memory_limit_smaller_than_one_part_is_refused() {
    let run = check_config(
        VALID,
        &[
            ("XPSYNC_TRANSFER__PART_SIZE", "64MiB"),
            ("XPSYNC_TRANSFER__MEMORY_LIMIT", "32MiB"),
        ],
    )
    .await;
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(
        run.stderr
            .contains("transfer.memory_limit (32.0 MiB) is smaller than one part"),
        "{run}"
    );
}

#[tokio::test]
async fn a_malformed_size_or_duration_names_its_key() {
    let run = check_config(VALID, &[("XPSYNC_TRANSFER__PART_SIZE", "16 furlongs")]).await;
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(
        run.stderr
            .contains("transfer.part_size: invalid value string \"16 furlongs\""),
        "{run}"
    );
    assert!(run.stderr.contains("XPSYNC_TRANSFER__PART_SIZE"), "{run}");

    let run = check_config(VALID, &[("XPSYNC_SHUTDOWN__GRACE_PERIOD", "soon")]).await;
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(
        run.stderr.contains("shutdown.grace_period: invalid value"),
        "{run}"
    );
}

#[tokio::test]
async fn a_missing_configuration_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = xpsync_bare(
        dir.path(),
        &["check-config", "--config", "/nonexistent/xpsync.toml"],
    );
    let run = Run::of(&mut command).await;
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(
        run.stderr
            .contains("/nonexistent/xpsync.toml does not exist"),
        "{run}"
    );
}

#[tokio::test]
async fn check_config_redacts_secrets() {
    let text = format!(
        "{VALID}\n[target.credentials]\naccess_key_id = \"AKIAEXAMPLE\"\nsecret_access_key = \"wJalrXUtnFEMI-very-secret\"\nsession_token = \"token-very-secret\"\n"
    );
    let run = check_config(&text, &[]).await;
    assert!(run.success(), "{run}");
    assert!(
        run.stdout.contains("secret_access_key = \"<redacted>\""),
        "{run}"
    );
    assert!(!run.stdout.contains("very-secret"), "{run}");
    assert!(!run.stderr.contains("very-secret"), "{run}");
}
