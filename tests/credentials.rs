//! Credentials: the target's keys come from the secret, wrong or missing keys fail
//! clearly, and the secret is re-read when S3 rejects the keys it gave.

mod common;

use std::sync::Arc;

use common::{bytes_of, secret_json, Keys, Partitions, Run, SECRET_ID};
use xpsync::config::{Config, Needs};
use xpsync::reconcile::{Hint, Outcome, Reconciler, Tags};

#[tokio::test]
async fn wrong_target_keys_fail_with_an_error_naming_the_target() {
    let p = Partitions::start().await;
    p.put_source("k", bytes_of(10, 1)).await;
    let wrong = Keys {
        id: "AKIAWRONGWRONGWRONG1".into(),
        secret: "not-the-right-secret".into(),
    };
    p.put_secret(SECRET_ID, &secret_json(&wrong)).await;

    let (lines, run) = p.sync(&["k"], &[]).await;

    assert_eq!(run.code(), Some(1), "{run}");
    assert_eq!(lines[0]["outcome"], "failed");
    let error = lines[0]["error"].as_str().unwrap();
    // A HEAD's 403 has no body to say more; the side and the status say enough.
    assert!(
        error.starts_with("target S3 HeadObject failed: 403"),
        "{error}"
    );
    assert!(p.target_etag("k").await.is_none());
}

#[tokio::test]
async fn a_missing_secret_is_a_clear_error() {
    let p = Partitions::start().await;
    p.write_file(
        "xpsync.toml",
        &p.config_text("").replace(SECRET_ID, "no-such-secret"),
    );

    let run = Run::of(&mut p.xpsync(&["sync", "k"])).await;

    assert_eq!(run.code(), Some(2), "{run}");
    assert!(
        run.stderr
            .contains("target credentials: secret \"no-such-secret\": ResourceNotFoundException"),
        "{run}"
    );
}

#[tokio::test]
async fn a_secret_without_keys_is_a_clear_error_that_does_not_echo_it() {
    let p = Partitions::start().await;
    p.put_secret(
        SECRET_ID,
        r#"{"user": "x", "password": "hunter2-do-not-print"}"#,
    )
    .await;

    let run = Run::of(&mut p.xpsync(&["sync", "k"])).await;

    assert_eq!(run.code(), Some(2), "{run}");
    assert!(
        run.stderr
            .contains("is not a JSON object with \"access_key_id\""),
        "{run}"
    );
    assert!(!run.stderr.contains("hunter2-do-not-print"), "{run}");
}

#[tokio::test]
async fn the_target_policy_is_enough_and_the_secrets_keys_are_the_ones_used() {
    let p = Partitions::start().await;
    p.put_source("proof", bytes_of(10, 1)).await;
    // The same run with the writer's keys given statically works; a user holding
    // no policy is refused: so the target really checks keys and policies.
    let nobody = {
        let admin = common::s3::sdk_config(
            &p.target.endpoint,
            common::TARGET_REGION,
            &p.admin.id,
            &p.admin.secret,
        );
        let iam = aws_sdk_iam::Client::new(&admin);
        iam.create_user().user_name("nobody").send().await.unwrap();
        let key = iam
            .create_access_key()
            .user_name("nobody")
            .send()
            .await
            .unwrap();
        let key = key.access_key().unwrap();
        Keys {
            id: key.access_key_id().to_owned(),
            secret: key.secret_access_key().to_owned(),
        }
    };
    p.put_secret(SECRET_ID, &secret_json(&nobody)).await;
    let (refused, _) = p.sync(&["proof"], &[]).await;
    p.put_secret(SECRET_ID, &secret_json(&p.writer)).await;
    let (allowed, run) = p.sync(&["proof"], &[]).await;

    assert_eq!(refused[0]["outcome"], "failed");
    assert!(
        refused[0]["error"].as_str().unwrap().contains("403"),
        "{}",
        refused[0]
    );
    assert!(run.success(), "{run}");
    assert_eq!(allowed[0]["outcome"], "copied");
}

#[tokio::test]
async fn keys_rejected_by_the_target_make_the_secret_be_read_again() {
    let p = Partitions::start().await;
    p.put_source("rotated", bytes_of(10, 1)).await;
    let stale = Keys {
        id: "AKIAROTATEDAWAY00001".into(),
        secret: "rotated-away".into(),
    };
    p.put_secret(SECRET_ID, &secret_json(&stale)).await;
    // The secret is read with the default chain: in this process, the environment.
    std::env::set_var("AWS_ACCESS_KEY_ID", common::SOURCE_KEY_ID);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", common::SOURCE_SECRET_KEY);
    let config =
        Config::load_valid(Some(&p.dir.path().join("xpsync.toml")), Needs::Buckets).unwrap();
    let (source, target) = xpsync::aws::connect(&config).await.unwrap();
    let reconciler = Reconciler::new(source, target, Arc::new(config));

    let before = reconciler
        .reconcile("rotated", Hint::Nothing, Tags::Skip)
        .await;
    p.put_secret(SECRET_ID, &secret_json(&p.writer)).await;
    let after = reconciler
        .reconcile("rotated", Hint::Nothing, Tags::Skip)
        .await;

    assert_eq!(before.outcome(), Outcome::Failed);
    let error = before.error().unwrap();
    assert!(error.is_systemic(), "{error}");
    assert_eq!(after.outcome(), Outcome::Copied, "{:?}", after.error());
}
