//! The test harness: two emulated AWS partitions, and xpsync run against them.
//!
//! [`Partitions::start`] starts two moto servers on free loopback ports:
//!
//! - the **source** partition (`cn-northwest-1`): the source bucket, and the Secrets
//!   Manager secret holding the target's keys;
//! - the **target** partition (`us-west-2`): the target bucket, and an IAM user
//!   holding exactly `deploy/iam/target-policy.json`. Once set up, the target
//!   enforces signatures and IAM policies (moto's `reset-auth`), so every request
//!   xpsync makes there must be signed with the secret's keys and allowed by that
//!   policy.
//!
//! The servers are killed when the [`Partitions`] value is dropped.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod emulator;
pub mod faults;
pub mod kms;
pub mod pipeline;
pub mod proxy;
pub mod routes;
pub mod s3;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use emulator::Emulator;
use s3::{create_bucket, etag_of, iam_user, put, put_multipart, s3_client, sdk_config};

pub const SOURCE_REGION: &str = "cn-northwest-1";
pub const TARGET_REGION: &str = "us-west-2";
pub const SOURCE_BUCKET: &str = "xpsync-source";
pub const TARGET_BUCKET: &str = "xpsync-target";
pub const SECRET_ID: &str = "s3-cross-partition-sync-credentials";

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * KIB;
/// The unit of the tests' time-outs.
pub const MINUTE: Duration = Duration::from_secs(60);

/// Objects over 5 MiB are copied in parts of 5 MiB, S3's smallest: small
/// objects exercise every multipart path.
pub const SMALL_PARTS: [(&str, &str); 2] = [
    ("XPSYNC_TRANSFER__MULTIPART_THRESHOLD", "5MiB"),
    ("XPSYNC_TRANSFER__PART_SIZE", "5MiB"),
];

/// Keys the harness and xpsync's default chain use on the source partition, which
/// does not check them.
pub const SOURCE_KEY_ID: &str = "AKIASOURCEHARNESS";
pub const SOURCE_SECRET_KEY: &str = "source-harness-secret";

/// Keys of an IAM user on the target partition.
#[derive(Clone, Debug)]
pub struct Keys {
    pub id: String,
    pub secret: String,
}

/// Both partitions, set up and ready.
pub struct Partitions {
    pub source: Emulator,
    pub target: Emulator,
    /// The source partition, as the harness sees it.
    pub source_s3: aws_sdk_s3::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    /// The target partition, with an administrator's keys (not xpsync's).
    pub target_s3: aws_sdk_s3::Client,
    /// The keys of xpsync's IAM user, also stored in the secret.
    pub writer: Keys,
    /// The keys of the target's administrator.
    pub admin: Keys,
    /// The keys of the users of [`Partitions::start_with_target_buckets`].
    pub writers: Vec<Keys>,
    pub dir: tempfile::TempDir,
}

impl Partitions {
    pub async fn start() -> Self {
        Self::start_with_source_env(&[]).await
    }

    /// As [`Partitions::start`], the source's emulator started with moto settings
    /// from `env`.
    pub async fn start_with_source_env(env: &[(&str, &str)]) -> Self {
        Self::start_full(env, &[]).await
    }

    /// As [`Partitions::start`], with more target buckets, each with an IAM user of
    /// its own holding `deploy/iam/target-policy.json` for it alone, set up before
    /// the target enforces signatures: each `(bucket, user)` in
    /// [`Partitions::writers`].
    pub async fn start_with_target_buckets(buckets: &[(&str, &str)]) -> Self {
        Self::start_full(&[], buckets).await
    }

    async fn start_full(env: &[(&str, &str)], target_buckets: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (source, target) = std::thread::scope(|s| {
            let source = s.spawn(|| Emulator::start_with(&dir.path().join("source-moto.log"), env));
            let target = Emulator::start(&dir.path().join("target-moto.log"));
            (source.join().expect("source emulator"), target)
        });

        let source_conf = sdk_config(
            &source.endpoint,
            SOURCE_REGION,
            SOURCE_KEY_ID,
            SOURCE_SECRET_KEY,
        );
        let source_s3 = s3_client(&source_conf, &source.endpoint);
        let secrets = aws_sdk_secretsmanager::Client::new(&source_conf);
        create_bucket(&source_s3, SOURCE_BUCKET, SOURCE_REGION).await;

        // The target's IAM setup runs before authentication is enforced.
        let bootstrap = sdk_config(
            &target.endpoint,
            TARGET_REGION,
            "AKIABOOTSTRAP",
            "bootstrap",
        );
        let iam = aws_sdk_iam::Client::new(&bootstrap);
        let admin = iam_user(
            &iam,
            "harness-admin",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
        )
        .await;
        let writer = iam_user(&iam, "xpsync-target-writer", &target_policy(TARGET_BUCKET)).await;
        let bootstrap_s3 = s3_client(&bootstrap, &target.endpoint);
        create_bucket(&bootstrap_s3, TARGET_BUCKET, TARGET_REGION).await;
        let mut writers = Vec::new();
        for (bucket, user) in target_buckets {
            create_bucket(&bootstrap_s3, bucket, TARGET_REGION).await;
            writers.push(iam_user(&iam, user, &target_policy(bucket)).await);
        }
        ureq::post(format!("{}/moto-api/reset-auth", target.endpoint))
            .send("0")
            .expect("enforce authentication on the target");
        let target_conf = sdk_config(&target.endpoint, TARGET_REGION, &admin.id, &admin.secret);
        let target_s3 = s3_client(&target_conf, &target.endpoint);

        let partitions = Self {
            source,
            target,
            source_s3,
            secrets,
            target_s3,
            writer,
            writers,
            admin,
            dir,
        };
        let writer = partitions.writer.clone();
        partitions
            .put_secret(SECRET_ID, &secret_json(&writer))
            .await;
        partitions.write_config("xpsync.toml", "");
        partitions
    }

    /// Another bucket of the source partition.
    pub async fn create_source_bucket(&self, bucket: &str) {
        create_bucket(&self.source_s3, bucket, SOURCE_REGION).await;
    }

    /// Creates or replaces a secret in the source partition.
    pub async fn put_secret(&self, id: &str, value: &str) {
        let created = self
            .secrets
            .create_secret()
            .name(id)
            .secret_string(value)
            .send()
            .await;
        if created.is_err() {
            self.secrets
                .put_secret_value()
                .secret_id(id)
                .secret_string(value)
                .send()
                .await
                .expect("update the secret");
        }
    }

    /// The base configuration, followed by `extra` TOML.
    pub fn config_text(&self, extra: &str) -> String {
        format!(
            r#"[source]
region = "{SOURCE_REGION}"
bucket = "{SOURCE_BUCKET}"
endpoint_url = "{source}"

[target]
region = "{TARGET_REGION}"
bucket = "{TARGET_BUCKET}"
endpoint_url = "{target}"

[target.credentials]
secret_id = "{SECRET_ID}"
secret_endpoint_url = "{source}"

[log]
format = "text"
level = "info"
{extra}"#,
            source = self.source.endpoint,
            target = self.target.endpoint,
        )
    }

    /// Writes a configuration file into the test's directory.
    pub fn write_config(&self, name: &str, extra: &str) -> PathBuf {
        self.write_file(name, &self.config_text(extra))
    }

    /// Writes a file into the test's directory.
    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write a file");
        path
    }

    /// `xpsync ARGS --config xpsync.toml`, with the source partition's keys as the
    /// default AWS chain and nothing of the test's own environment.
    pub fn xpsync(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = xpsync_bare(self.dir.path(), args);
        command
            .arg("--config")
            .arg(self.dir.path().join("xpsync.toml"))
            .env("AWS_ACCESS_KEY_ID", SOURCE_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SOURCE_SECRET_KEY);
        command
    }

    /// Runs `xpsync sync KEYS...` and returns its JSON lines and exit status.
    pub async fn sync(&self, keys: &[&str], env: &[(&str, &str)]) -> (Vec<Value>, Run) {
        let mut args = vec!["sync"];
        args.extend_from_slice(keys);
        let mut command = self.xpsync(&args);
        command.envs(env.iter().copied());
        let run = Run::of(&mut command).await;
        (run.json_lines(), run)
    }

    /// Runs `xpsync sync KEY` and returns its one JSON line, asserting success.
    pub async fn sync_one(&self, key: &str, env: &[(&str, &str)]) -> Value {
        let (mut lines, run) = self.sync(&[key], env).await;
        assert!(run.success(), "sync {key:?} failed: {run}");
        assert_eq!(lines.len(), 1, "{run}");
        lines.remove(0)
    }

    pub async fn put_source(&self, key: &str, body: Vec<u8>) -> String {
        put(&self.source_s3, SOURCE_BUCKET, key, body).await
    }

    /// Stores `key` on the source as a multipart object with parts of these sizes;
    /// returns its bytes.
    pub async fn put_source_multipart(
        &self,
        key: &str,
        part_sizes: &[usize],
        seed: u64,
    ) -> Vec<u8> {
        put_multipart(&self.source_s3, SOURCE_BUCKET, key, part_sizes, seed).await
    }

    /// The source object's bytes.
    pub async fn source_bytes(&self, key: &str) -> Vec<u8> {
        s3::bytes(&self.source_s3, SOURCE_BUCKET, key)
            .await
            .expect("the source object exists")
    }

    pub async fn source_etag(&self, key: &str) -> String {
        etag_of(&self.source_s3, SOURCE_BUCKET, key)
            .await
            .expect("the source object exists")
    }

    pub async fn target_etag(&self, key: &str) -> Option<String> {
        etag_of(&self.target_s3, TARGET_BUCKET, key).await
    }

    /// The target object's bytes, or None if it does not exist.
    pub async fn target_bytes(&self, key: &str) -> Option<Vec<u8>> {
        s3::bytes(&self.target_s3, TARGET_BUCKET, key).await
    }

    /// Asserts that the target holds `key` as a finished copy of the source's
    /// `body`: the same bytes, an ETag that names the source's version as `etag`
    /// says, and no incomplete upload of the key left behind.
    pub async fn assert_copied_intact(&self, key: &str, body: &[u8], etag: Etag) {
        if let Err(e) = self.copied_intact(key, body, etag).await {
            panic!("{e}");
        }
    }

    /// As [`Partitions::assert_copied_intact`]: why the copy is not intact, if
    /// it is not.
    pub async fn copied_intact(&self, key: &str, body: &[u8], etag: Etag) -> Result<(), String> {
        let copy = self
            .target_bytes(key)
            .await
            .ok_or_else(|| format!("{key:?} is not on the target"))?;
        if let Some(at) = first_difference(&copy, body) {
            return Err(format!(
                "{key:?} is not intact: the target's {} bytes differ from the source's {} from byte {at} on",
                copy.len(),
                body.len()
            ));
        }
        let source = self.source_etag(key).await;
        let target = self.target_etag(key).await.unwrap_or_default();
        match etag {
            Etag::Same if target != source => {
                return Err(format!(
                    "{key:?}: the copy's ETag {target} is not the source's {source}"
                ));
            }
            Etag::Recorded => {
                let recorded = self.recorded_etag(key).await;
                if recorded.as_deref() != Some(source.as_str()) {
                    return Err(format!(
                        "{key:?}: the copy (ETag {target}) records {recorded:?} as the source's ETag, not {source}"
                    ));
                }
            }
            Etag::Same | Etag::Opaque => {}
        }
        let left: Vec<String> = self
            .target_uploads()
            .await
            .into_iter()
            .filter(|(k, _)| k == key)
            .map(|(_, id)| id)
            .collect();
        if !left.is_empty() {
            return Err(format!(
                "{key:?}: incomplete uploads left on the target: {left:?}"
            ));
        }
        Ok(())
    }

    /// The source ETag the target's copy of `key` records (`xpsync-source-etag`).
    pub async fn recorded_etag(&self, key: &str) -> Option<String> {
        let head = self
            .target_s3
            .head_object()
            .bucket(TARGET_BUCKET)
            .key(key)
            .send()
            .await
            .ok()?;
        head.metadata()?.get("xpsync-source-etag").cloned()
    }

    /// Parts of the object uploaded so far to the target's incomplete uploads: the
    /// most any holds (0 if none), not counting a split's version markers (parts
    /// 9,999 and 10,000; no test's plan reaches them). An upload aborted or
    /// completed between the two listings (a duplicate split giving way) counts 0.
    pub async fn target_upload_parts(&self) -> usize {
        let mut most = 0;
        for (key, id) in self.target_uploads().await {
            let listed = self
                .target_s3
                .list_parts()
                .bucket(TARGET_BUCKET)
                .key(key)
                .upload_id(id)
                .send()
                .await;
            if let Ok(parts) = listed {
                let data = parts
                    .parts()
                    .iter()
                    .filter(|part| part.part_number().is_some_and(|n| n < 9_999))
                    .count();
                most = most.max(data);
            }
        }
        most
    }

    /// Incomplete multipart uploads on the target, as (key, upload id).
    pub async fn target_uploads(&self) -> Vec<(String, String)> {
        let out = self
            .target_s3
            .list_multipart_uploads()
            .bucket(TARGET_BUCKET)
            .send()
            .await
            .expect("list target uploads");
        out.uploads()
            .iter()
            .map(|u| {
                (
                    u.key().unwrap_or_default().to_owned(),
                    u.upload_id().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

/// How a finished copy's ETag names the source's version
/// ([`Partitions::assert_copied_intact`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Etag {
    /// It is the source's ETag: one PUT, or the source's part layout kept.
    Same,
    /// Another (the object re-cut into other parts); the copy records the
    /// source's in `xpsync-source-etag`.
    Recorded,
    /// Opaque, as S3 gives under SSE-KMS: only the bytes can be compared.
    Opaque,
}

/// Where two byte strings first differ (the shorter one's end if one is a
/// prefix of the other), or None if they are the same.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(at) => Some(at),
        None if a.len() != b.len() => Some(a.len().min(b.len())),
        None => None,
    }
}

/// The xpsync binary with a clean environment: no XPSYNC_* or AWS_* of the test's
/// own, no instance metadata, no profile files.
pub fn xpsync_bare(dir: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(xpsync_binary());
    command.args(args).kill_on_drop(true);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("XPSYNC_") || name.starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    let empty = dir.join("empty-aws-profile");
    std::fs::write(&empty, "").expect("write an empty AWS profile");
    command
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", &empty)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty);
    command
}

/// The binary under test: Cargo names it for tests; an example finds it beside
/// its own directory (target/debug/examples/.. → target/debug/xpsync).
fn xpsync_binary() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_xpsync") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the current executable");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("an examples directory")
        .join("xpsync");
    assert!(
        path.exists(),
        "{} is missing: build it first",
        path.display()
    );
    path
}

/// A finished process.
pub struct Run {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub async fn of(command: &mut tokio::process::Command) -> Self {
        let output = command.output().await.expect("run xpsync");
        Self {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Its output, one JSON value a line.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{self}")))
            .collect()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// The secret's JSON for `keys`.
pub fn secret_json(keys: &Keys) -> String {
    serde_json::json!({"access_key_id": keys.id, "secret_access_key": keys.secret}).to_string()
}

/// `deploy/iam/target-policy.json` for `bucket` in the `aws` partition.
pub fn target_policy(bucket: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/iam/target-policy.json");
    std::fs::read_to_string(path)
        .expect("read deploy/iam/target-policy.json")
        .replace("${Partition}", "aws")
        .replace("${TargetBucket}", bucket)
}

/// Deterministic, incompressible test bytes.
pub fn bytes_of(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}
