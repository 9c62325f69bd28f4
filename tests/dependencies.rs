//! Dependencies failing under a running daemon: Secrets Manager going away, and
//! the keys it held being rotated while it is away. The daemon must keep copying
//! while it holds good keys, pause (not drain the queue into the DLQ) when it has
//! none, say why on `/readyz`, and resume by itself.

mod common;

use std::time::Duration;

use common::faults::{FaultProxy, Faults};
use common::pipeline::{eventually, Daemon, Pipeline};
use common::{bytes_of, sdk_config, secret_json, Keys, Partitions, SECRET_ID, TARGET_REGION};

const MINUTE: Duration = Duration::from_secs(60);

/// Gives xpsync's IAM user on the target new keys and deletes the old ones.
async fn rotate_writer_keys(p: &Partitions) -> Keys {
    let conf = sdk_config(
        &p.target.endpoint,
        TARGET_REGION,
        &p.admin.id,
        &p.admin.secret,
    );
    let iam = aws_sdk_iam::Client::new(&conf);
    let user = "xpsync-target-writer";
    let created = iam
        .create_access_key()
        .user_name(user)
        .send()
        .await
        .unwrap();
    let key = created.access_key().unwrap();
    iam.delete_access_key()
        .user_name(user)
        .access_key_id(&p.writer.id)
        .send()
        .await
        .unwrap();
    Keys {
        id: key.access_key_id().to_owned(),
        secret: key.secret_access_key().to_owned(),
    }
}

#[tokio::test]
async fn a_secrets_manager_outage_pauses_the_daemon_instead_of_draining_the_queue() {
    let p = Partitions::start().await;
    let pipeline = Pipeline::wire(&p).await;
    let secrets = FaultProxy::start(&p.source.endpoint, Faults::default()).await;
    let env = [
        (
            "XPSYNC_TARGET__CREDENTIALS__SECRET_ENDPOINT_URL",
            secrets.endpoint.as_str(),
        ),
        ("XPSYNC_TARGET__CREDENTIALS__REFRESH_INTERVAL", "1m"),
    ];
    let daemon = Daemon::start(&p, "daemon", &env).await;
    let keys_read = std::time::Instant::now();
    let copied = |key: &'static str| {
        let p = &p;
        move || async move { p.target_etag(key).await.is_some() }
    };
    p.put_source("before", bytes_of(100, 1)).await;
    eventually(MINUTE, "the first object is copied", copied("before")).await;

    // Secrets Manager goes away; the keys read before are still good, and stay in
    // use past their refresh interval.
    secrets.set_down(true);
    tokio::time::sleep(
        (keys_read + Duration::from_secs(62)).saturating_duration_since(std::time::Instant::now()),
    )
    .await;
    p.put_source("during", bytes_of(100, 2)).await;
    eventually(MINUTE, "copies go on with the keys held", copied("during")).await;

    // Then the keys are rotated away while the secret cannot be read.
    let rotated = rotate_writer_keys(&p).await;
    p.put_secret(SECRET_ID, &secret_json(&rotated)).await;
    for key in ["after-1", "after-2", "after-3", "after-4"] {
        p.put_source(key, bytes_of(100, 3)).await;
    }
    eventually(MINUTE, "the daemon pauses, saying why", || async {
        let (status, body) = daemon.get("/readyz");
        status == 503 && body.contains("cannot read secret")
    })
    .await;
    assert!(p.target_etag("after-1").await.is_none());
    assert!(
        pipeline.dead_letters().await.is_empty(),
        "the outage pushed messages into the DLQ"
    );

    // The secret comes back, holding the new keys: the daemon resumes.
    secrets.set_down(false);
    for key in ["after-1", "after-2", "after-3", "after-4"] {
        eventually(3 * MINUTE, "the backlog is copied", copied(key)).await;
    }
    assert_eq!(daemon.get("/readyz").0, 200);
    assert!(
        pipeline.dead_letters().await.is_empty(),
        "{}",
        daemon.logs()
    );
}
