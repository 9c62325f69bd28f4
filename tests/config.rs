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
    assert!(run.stdout.contains("max_parts = 64"), "{run}");
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
    ] {
        assert!(
            run.stderr.contains(expected),
            "missing {expected:?} in\n{run}"
        );
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

#[tokio::test]
async fn every_other_invalid_value_has_its_own_message() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("XPSYNC_TARGET__REGION", "")], "target.region is required"),
        (&[("XPSYNC_TARGET__BUCKET", "a/b")], "target.bucket is \"a/b\", which is not a valid bucket name"),
        (&[("XPSYNC_TARGET__ENDPOINT_URL", "ftp://host")], "target.endpoint_url is \"ftp://host\", but must be an http:// or https:// URL"),
        (&[("XPSYNC_QUEUE__DEAD_LETTER_URL", "nope")], "queue.dead_letter_url is \"nope\", which is not a URL"),
        (&[("XPSYNC_QUEUE__ENDPOINT_URL", "nope")], "queue.endpoint_url is \"nope\", which is not a URL"),
        (&[("XPSYNC_QUEUE__RANGE_URL", "nope")], "queue.range_url is \"nope\", which is not a URL"),
        (&[("XPSYNC_QUEUE__URL", "https://sqs.cn-north-1.amazonaws.com.cn/1/q"), ("XPSYNC_QUEUE__RANGE_URL", "https://sqs.cn-north-1.amazonaws.com.cn/1/q")], "queue.range_url is \"https://sqs.cn-north-1.amazonaws.com.cn/1/q\", but must be a queue of its own: not the main queue nor the dead-letter queue"),
        (&[("XPSYNC_QUEUE__WAIT_TIME", "30s")], "queue.wait_time is 30s, but SQS long-polls for at most 20s"),
        (&[("XPSYNC_QUEUE__VISIBILITY_TIMEOUT", "5s")], "queue.visibility_timeout is 5s, but must be between 10s and 12h"),
        (&[("XPSYNC_QUEUE__VISIBILITY_TIMEOUT", "13h")], "queue.visibility_timeout is 13h, but must be between 10s and 12h"),
        (&[("XPSYNC_TRANSFER__MAX_OBJECTS", "0")], "transfer.max_objects must be at least 1"),
        (&[("XPSYNC_TRANSFER__PART_SIZE", "6GiB"), ("XPSYNC_TRANSFER__MEMORY_LIMIT", "8GiB")], "transfer.part_size is 6.0 GiB, but S3 parts must be at most 5GiB"),
        (&[("XPSYNC_TRANSFER__MULTIPART_THRESHOLD", "6GiB"), ("XPSYNC_TRANSFER__MEMORY_LIMIT", "8GiB")], "transfer.multipart_threshold is 6.0 GiB, but a single PUT holds at most 5GiB"),
        (&[("XPSYNC_TARGET__SSE", "aes")], "target.sse is \"aes\", but must be \"\", \"AES256\" or \"aws:kms\""),
        (&[("XPSYNC_TARGET__SSE_KMS_KEY_ID", "k")], "target.sse_kms_key_id is set, but target.sse is not \"aws:kms\""),
        (&[("XPSYNC_TARGET__STORAGE_CLASS", "glacier")], "target.storage_class is \"glacier\", but storage classes are written like STANDARD_IA"),
        (&[("XPSYNC_REPLICATE__INCLUDE_PREFIXES", "[\"\"]")], "replicate.include_prefixes holds an empty prefix, which would match every key"),
        (&[("XPSYNC_REPLICATE__EXCLUDE_PREFIXES", "[\"\"]")], "replicate.exclude_prefixes holds an empty prefix"),
        (&[("XPSYNC_SERVER__LISTEN", "localhost")], "server.listen is \"localhost\", but must be an address like 0.0.0.0:9464"),
        (&[("XPSYNC_SHUTDOWN__GRACE_PERIOD", "2m")], "shutdown.grace_period is 2m, but ECS kills a task at most 120s after SIGTERM"),
        (&[("XPSYNC_LOG__FORMAT", "xml")], "log.format is \"xml\", but must be \"json\" or \"text\""),
        (&[("XPSYNC_LOG__LEVEL", "loud=[")], "log.level is \"loud=[\", but must be a level"),
        (&[("XPSYNC_TARGET__CREDENTIALS__REFRESH_INTERVAL", "1s")], "target.credentials needs either secret_id, or access_key_id and secret_access_key"),
        (&[("XPSYNC_TARGET__CREDENTIALS__SECRET_ID", "s"), ("XPSYNC_TARGET__CREDENTIALS__REFRESH_INTERVAL", "1s")], "target.credentials.refresh_interval is 1s, but must be at least 1m"),
        (&[("XPSYNC_TARGET__CREDENTIALS__SECRET_ID", "s"), ("XPSYNC_TARGET__CREDENTIALS__ACCESS_KEY_ID", "a")], "target.credentials gives both secret_id and static keys: choose one"),
        (&[("XPSYNC_TARGET__CREDENTIALS__ACCESS_KEY_ID", "a")], "target.credentials.access_key_id is set without secret_access_key"),
        (&[("XPSYNC_TARGET__CREDENTIALS__SECRET_ACCESS_KEY", "s")], "target.credentials.secret_access_key is set without access_key_id"),
        (&[("XPSYNC_TARGET__CREDENTIALS__SECRET_ID", "s"), ("XPSYNC_TARGET__CREDENTIALS__SESSION_TOKEN", "t")], "target.credentials.session_token is only used with access_key_id"),
        (&[("XPSYNC_TARGET__CREDENTIALS__ACCESS_KEY_ID", "a"), ("XPSYNC_TARGET__CREDENTIALS__SECRET_ACCESS_KEY", "s"), ("XPSYNC_TARGET__CREDENTIALS__SECRET_REGION", "r")], "target.credentials: secret_region and secret_endpoint_url are only used with secret_id"),
        (&[("XPSYNC_TARGET__CREDENTIALS__SECRET_ID", "s"), ("XPSYNC_TARGET__CREDENTIALS__SECRET_ENDPOINT_URL", "x")], "target.credentials.secret_endpoint_url is \"x\", which is not a URL"),
    ];
    for (env, expected) in cases {
        let run = check_config(VALID, env).await;
        assert_eq!(run.code(), Some(2), "{env:?}: {run}");
        assert!(
            run.stderr.contains(expected),
            "{env:?}: expected {expected:?} in\n{run}"
        );
    }
}

#[tokio::test]
async fn run_needs_a_queue_url() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xpsync.toml");
    std::fs::write(&path, VALID).unwrap();
    let mut command = xpsync_bare(dir.path(), &["run", "--config"]);
    command.arg(&path);
    let run = Run::of(&mut command).await;
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(run.stderr.contains("queue.url is required"), "{run}");
}

#[tokio::test]
async fn a_small_memory_limit_alone_is_a_valid_configuration() {
    // Below the 64 MiB multipart threshold: whatever does not fit the budget whole
    // is streamed or copied in parts, so one setting is enough for a small task.
    let text = r#"
[source]
region = "cn-northwest-1"
bucket = "source-bucket"

[target]
region = "us-west-2"
bucket = "target-bucket"

[transfer]
memory_limit = "32MiB"
"#;
    let run = check_config(text, &[]).await;

    assert!(run.success(), "{run}");
}
