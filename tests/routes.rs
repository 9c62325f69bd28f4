//! Routes (#24): many bucket pairs served by one fleet through one queue. Each
//! route's target has its own IAM user, whose policy is
//! `deploy/iam/target-policy.json` for its own bucket alone, so a route that
//! wrote with another route's keys would be refused by the target.

mod common;

use common::pipeline::{eventually, Daemon, Pipeline};
use common::routes::{routes_env, two_routes, MEDIA_SOURCE, MEDIA_TARGET};
use common::s3::{bytes, put, s3_client, sdk_config};
use common::{bytes_of, Partitions, Run, MIB, MINUTE, SOURCE_BUCKET, TARGET_BUCKET, TARGET_REGION};

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn target_object(p: &Partitions, bucket: &str, key: &str) -> Option<Vec<u8>> {
    bytes(&p.target_s3, bucket, key).await
}

/// Each route's keys land in its own bucket, under its own prefix, written with
/// its own keys, and in no other bucket; an event of a bucket no route reads is
/// dead-lettered, saying so.
#[tokio::test]
async fn two_routes_through_one_queue_land_each_in_its_own_bucket() {
    let (p, media_writer) = two_routes().await;
    let pipeline = Pipeline::wire(&p).await;
    pipeline.wire_bucket(&p, MEDIA_SOURCE).await;
    p.create_source_bucket("xpsync-unrouted").await;
    pipeline.wire_bucket(&p, "xpsync-unrouted").await;

    // The target's IAM keeps the routes apart: each writer only its own bucket.
    for (keys, other_bucket) in [(&p.writer, MEDIA_TARGET), (&media_writer, TARGET_BUCKET)] {
        let conf = sdk_config(&p.target.endpoint, TARGET_REGION, &keys.id, &keys.secret);
        let written = s3_client(&conf, &p.target.endpoint)
            .put_object()
            .bucket(other_bucket)
            .key("probe")
            .body(b"x".to_vec().into())
            .send()
            .await;
        assert!(written.is_err(), "{} may not write {other_bucket}", keys.id);
    }

    let env = routes_env(&p);
    let daemon = Daemon::start(&p, "worker", &env_refs(&env)).await;
    let log_body = bytes_of(3000, 1);
    let media_body = bytes_of(5000, 2);
    put(&p.source_s3, SOURCE_BUCKET, "app/one.log", log_body.clone()).await;
    put(
        &p.source_s3,
        MEDIA_SOURCE,
        "video/one.mp4",
        media_body.clone(),
    )
    .await;
    put(
        &p.source_s3,
        "xpsync-unrouted",
        "stray.bin",
        bytes_of(10, 3),
    )
    .await;

    eventually(MINUTE, "both keys land", || async {
        target_object(&p, TARGET_BUCKET, "cn/app/one.log")
            .await
            .is_some()
            && target_object(&p, MEDIA_TARGET, "video/one.mp4")
                .await
                .is_some()
    })
    .await;
    assert_eq!(
        target_object(&p, TARGET_BUCKET, "cn/app/one.log").await,
        Some(log_body)
    );
    assert_eq!(
        target_object(&p, MEDIA_TARGET, "video/one.mp4").await,
        Some(media_body)
    );
    for (bucket, key) in [
        (TARGET_BUCKET, "video/one.mp4"),
        (TARGET_BUCKET, "cn/video/one.mp4"),
        (MEDIA_TARGET, "app/one.log"),
        (MEDIA_TARGET, "cn/app/one.log"),
        (TARGET_BUCKET, "app/one.log"),
    ] {
        assert_eq!(target_object(&p, bucket, key).await, None, "{bucket}/{key}");
    }

    eventually(MINUTE, "the unrouted event is dead-lettered", || async {
        !pipeline.dead_letters().await.is_empty()
    })
    .await;
    let letters = pipeline.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let why = letters[0]
        .message_attributes()
        .and_then(|a| a.get("xpsync-reason"))
        .and_then(|v| v.string_value())
        .unwrap_or_default()
        .to_owned();
    assert!(
        why.contains("bucket \"xpsync-unrouted\", which no route reads"),
        "{why}"
    );
    let copied = |route: &str| {
        daemon.metric(&format!(
            "xpsync_objects_total{{result=\"copied\",route=\"{route}\"}}"
        ))
    };
    assert_eq!(copied("logs"), 1.0);
    assert_eq!(copied("media"), 1.0);
    assert_eq!(
        daemon.metric("xpsync_bytes_copied_total{route=\"media\"}"),
        5000.0
    );
}

/// A configuration whose routes overlap does not start, and says which.
#[tokio::test]
async fn overlapping_routes_are_refused_at_startup() {
    let p = Partitions::start().await;
    let routes = format!(
        r#"[{{name = "a", source = {{bucket = "{SOURCE_BUCKET}", prefix = "x/"}}, target = {{bucket = "one"}}}}, {{name = "b", source = {{bucket = "{SOURCE_BUCKET}", prefix = "x/"}}, target = {{bucket = "two"}}}}]"#
    );
    for command in [&["check-config"][..], &["run"]] {
        let run = Run::of(
            p.xpsync(command)
                .env("XPSYNC_SOURCE__BUCKET", "")
                .env("XPSYNC_TARGET__BUCKET", "")
                .env("XPSYNC_ROUTE", &routes),
        )
        .await;
        assert_eq!(run.code(), Some(2), "{run}");
        assert!(
            run.stderr
                .contains("routes \"a\" and \"b\" both take the keys of bucket \"xpsync-source\" under \"x/\""),
            "{run}"
        );
    }
}

/// `backfill` without `--route` covers every route; `verify --route` looks at one.
#[tokio::test]
async fn backfill_covers_every_route_and_verify_takes_one() {
    let (p, _) = two_routes().await;
    let env = routes_env(&p);
    put(&p.source_s3, SOURCE_BUCKET, "app/a.log", bytes_of(100, 4)).await;
    put(&p.source_s3, MEDIA_SOURCE, "b.mp4", bytes_of(200, 5)).await;

    let run = Run::of(
        p.xpsync(&["backfill", "--mode", "copy"])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str()))),
    )
    .await;
    assert!(run.success(), "{run}");
    let summaries: Vec<_> = run
        .json_lines()
        .into_iter()
        .filter(|l| l.get("summary").is_some())
        .map(|l| l["route"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(summaries, ["logs", "media"], "{run}");
    assert!(target_object(&p, TARGET_BUCKET, "cn/app/a.log")
        .await
        .is_some());
    assert!(target_object(&p, MEDIA_TARGET, "b.mp4").await.is_some());

    // A drift in the media route only: verify of logs is clean, of media not.
    put(&p.source_s3, MEDIA_SOURCE, "c.mp4", bytes_of(300, 6)).await;
    let verify = |route: Option<&'static str>| {
        let mut args = vec!["verify"];
        if let Some(route) = route {
            args.extend(["--route", route]);
        }
        let mut command = p.xpsync(&args);
        command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        command
    };
    let logs = Run::of(&mut verify(Some("logs"))).await;
    assert!(logs.success(), "{logs}");
    let media = Run::of(&mut verify(Some("media"))).await;
    assert_eq!(media.code(), Some(1), "{media}");
    assert!(media.stdout.contains("\"key\":\"c.mp4\""), "{media}");
    assert!(!media.stdout.contains("a.log"), "{media}");
    let all = Run::of(&mut verify(None)).await;
    assert_eq!(all.code(), Some(1), "{all}");
    let nope = Run::of(&mut verify(Some("nope"))).await;
    assert_eq!(nope.code(), Some(2), "{nope}");
    assert!(nope.stderr.contains("no route is named \"nope\""), "{nope}");

    // `sync` of a key needs its route named when there are several.
    let run = Run::of(
        p.xpsync(&["sync", "c.mp4"])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str()))),
    )
    .await;
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(run.stderr.contains("say which with --route NAME"), "{run}");
    let run = Run::of(
        p.xpsync(&["sync", "--route", "media", "c.mp4"])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str()))),
    )
    .await;
    assert!(run.success(), "{run}");
    assert!(target_object(&p, MEDIA_TARGET, "c.mp4").await.is_some());
}

/// Weights share `transfer.max_bandwidth` between routes (#24): under a 2 MiB/s
/// cap, `logs` weighing 3 and `media` weighing 1 read at 1.5 and 0.5 MiB/s.
#[tokio::test]
async fn weights_share_the_bandwidth_cap_between_routes() {
    let (p, _) = two_routes().await;
    let mut env = routes_env(&p);
    for (_, value) in env.iter_mut().filter(|(name, _)| *name == "XPSYNC_ROUTE") {
        *value = value
            .replace(r#"name = "logs""#, r#"name = "logs", weight = 3"#)
            .replace(r#"name = "media""#, r#"name = "media", weight = 1"#);
    }
    env.push(("XPSYNC_TRANSFER__MAX_BANDWIDTH", "2MiB".into()));
    put(
        &p.source_s3,
        SOURCE_BUCKET,
        "w/logs.bin",
        bytes_of(9 * MIB, 7),
    )
    .await;
    put(
        &p.source_s3,
        MEDIA_SOURCE,
        "w/media.bin",
        bytes_of(3 * MIB, 8),
    )
    .await;

    // Each takes some 6 s at its share, 1.5 s or 4.5 s at the whole cap.
    for (route, key, mib, share) in [
        ("logs", "w/logs.bin", 9.0, 1.5),
        ("media", "w/media.bin", 3.0, 0.5),
    ] {
        let started = std::time::Instant::now();
        let run = Run::of(
            p.xpsync(&["sync", "--route", route, key])
                .envs(env.iter().map(|(k, v)| (*k, v.as_str()))),
        )
        .await;
        let took = started.elapsed().as_secs_f64();
        assert!(run.success(), "{run}");
        let rate = mib / took;
        assert!(
            (0.85 * share..=1.1 * share).contains(&rate),
            "route {route}: {rate:.2} MiB/s in {took:.1} s, its share {share} MiB/s"
        );
    }
}
