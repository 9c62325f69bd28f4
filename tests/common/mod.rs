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

pub mod faults;
pub mod kms;
pub mod pipeline;
pub mod proxy;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use serde_json::Value;

pub const SOURCE_REGION: &str = "cn-northwest-1";
pub const TARGET_REGION: &str = "us-west-2";
pub const SOURCE_BUCKET: &str = "xpsync-source";
pub const TARGET_BUCKET: &str = "xpsync-target";
pub const SECRET_ID: &str = "s3-cross-partition-sync-credentials";
pub const MIB: usize = 1024 * 1024;

/// Keys the harness and xpsync's default chain use on the source partition, which
/// does not check them.
pub const SOURCE_KEY_ID: &str = "AKIASOURCEHARNESS";
pub const SOURCE_SECRET_KEY: &str = "source-harness-secret";

/// One moto server.
pub struct Emulator {
    child: Child,
    pub endpoint: String,
}

impl Emulator {
    fn start(log: &Path) -> Self {
        let python = moto_python();
        let launcher = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/emulator/moto_server.py");
        for _ in 0..5 {
            let port = free_port();
            let log_file = std::fs::File::create(log).expect("create the emulator's log");
            let mut child = std::process::Command::new(&python)
                .arg(&launcher)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env_remove("AWS_CA_BUNDLE")
                .env("MOTO_ALLOW_NONEXISTENT_REGION", "true")
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
            let endpoint = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // lost the port to another process: try another
                }
                // Ours, not another test's server that took the port first: werkzeug
                // says it is running only once it has bound the port itself.
                let bound = std::fs::read_to_string(log)
                    .is_ok_and(|text| text.contains(&format!("Running on {endpoint}")));
                if bound
                    && ureq::get(format!("{endpoint}/moto-api/data.json"))
                        .call()
                        .is_ok()
                {
                    return Self { child, endpoint };
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("the emulator did not start; see {}", log.display());
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python of the project's virtual environment holding moto (scripts/setup-emulators).
pub fn moto_python() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_PYTHON") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME is set");
    let path = cache.join("xpsync/venv/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup-emulators first (or set MOTO_PYTHON)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

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
    pub dir: tempfile::TempDir,
}

impl Partitions {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (source, target) = std::thread::scope(|s| {
            let source = s.spawn(|| Emulator::start(&dir.path().join("source-moto.log")));
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
        create_bucket(
            &s3_client(&bootstrap, &target.endpoint),
            TARGET_BUCKET,
            TARGET_REGION,
        )
        .await;
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
        let lines = run
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{}", run.stderr)))
            .collect();
        (lines, run)
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
        let output = self
            .source_s3
            .get_object()
            .bucket(SOURCE_BUCKET)
            .key(key)
            .send()
            .await
            .expect("get a source object");
        output.body.collect().await.expect("its body").to_vec()
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
        let out = self
            .target_s3
            .get_object()
            .bucket(TARGET_BUCKET)
            .key(key)
            .send()
            .await
            .ok()?;
        Some(out.body.collect().await.expect("read the body").to_vec())
    }

    /// Parts uploaded so far to the target's incomplete uploads: the most any holds
    /// (0 if none). An upload aborted or completed between the two listings (a
    /// duplicate split giving way) counts 0.
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
                most = most.max(parts.parts().len());
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

pub fn sdk_config(endpoint: &str, region: &str, id: &str, secret: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(endpoint)
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(Credentials::new(
                id, secret, None, None, "harness",
            )),
        )
        .build()
}

pub fn s3_client(conf: &aws_config::SdkConfig, endpoint: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(conf)
        .endpoint_url(endpoint)
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

async fn create_bucket(s3: &aws_sdk_s3::Client, bucket: &str, region: &str) {
    use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
    s3.create_bucket()
        .bucket(bucket)
        .create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("create bucket {bucket}: {e:?}"));
}

async fn iam_user(iam: &aws_sdk_iam::Client, name: &str, policy: &str) -> Keys {
    iam.create_user()
        .user_name(name)
        .send()
        .await
        .expect("create an IAM user");
    iam.put_user_policy()
        .user_name(name)
        .policy_name(format!("{name}-policy"))
        .policy_document(policy)
        .send()
        .await
        .expect("attach the user's policy");
    let key = iam
        .create_access_key()
        .user_name(name)
        .send()
        .await
        .expect("create an access key");
    let key = key.access_key().expect("an access key");
    Keys {
        id: key.access_key_id().to_owned(),
        secret: key.secret_access_key().to_owned(),
    }
}

pub async fn put(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, body: Vec<u8>) -> String {
    let out = s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key:?}: {e:?}"));
    out.e_tag().unwrap_or_default().trim_matches('"').to_owned()
}

pub async fn etag_of(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<String> {
    let out = s3.head_object().bucket(bucket).key(key).send().await.ok()?;
    Some(out.e_tag().unwrap_or_default().trim_matches('"').to_owned())
}

/// Stores `key` in `bucket` as a multipart object with parts of these sizes;
/// returns its bytes.
pub async fn put_multipart(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    part_sizes: &[usize],
    seed: u64,
) -> Vec<u8> {
    put_multipart_with(s3, bucket, key, part_sizes, seed, &[]).await
}

/// As [`put_multipart`], with this user metadata.
pub async fn put_multipart_with(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    part_sizes: &[usize],
    seed: u64,
    metadata: &[(&str, &str)],
) -> Vec<u8> {
    let total: usize = part_sizes.iter().sum();
    let body = bytes_of(total, seed);
    put_parts(s3, bucket, key, &body, part_sizes, metadata).await;
    body
}

/// Stores `body` in `bucket` as `key`, a multipart object with parts of these
/// sizes and this user metadata.
pub async fn put_parts(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: &[u8],
    part_sizes: &[usize],
    metadata: &[(&str, &str)],
) {
    let metadata = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let upload = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .set_metadata(Some(metadata))
        .send()
        .await
        .expect("create an upload");
    let id = upload.upload_id().expect("an upload id");
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, size) in part_sizes.iter().enumerate() {
        let number = i as i32 + 1;
        let out = s3
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(id)
            .part_number(number)
            .body(ByteStream::from(body[start..start + size].to_vec()))
            .send()
            .await
            .expect("upload a part");
        start += size;
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .e_tag(out.e_tag().unwrap_or_default())
                .build(),
        );
    }
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .expect("complete an upload");
}
