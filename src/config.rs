//! The settings: their shape, their defaults, and their validation.
//!
//! Settings come from an optional TOML file, then from `XPSYNC_<TABLE>__<KEY>`
//! environment variables layered on top (so an ECS task definition needs no file).
//! Every struct denies unknown keys, so a misspelt setting is an error naming it,
//! never a silently ignored line. [`Config::validate`] then checks what serde cannot
//! (ranges, URLs, combinations) and reports every problem at once, one line each.
//!
//! Secrets ([`Secret`]) never print: their `Debug` and `Serialize` say `<redacted>`,
//! which is what `xpsync check-config` relies on.

use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

mod load;
mod route;
mod secret;
mod timeouts;
mod validate;

pub use route::{route_of, RouteConfig, RouteScope};
pub use secret::{Archived, PartChecksum, RestoreTier, Secret, Sse, MAX_RESTORE_DAYS};
pub use timeouts::TimeoutsConfig;

/// S3's smallest part (all but the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// S3's largest part count.
pub const MAX_PARTS: u64 = 10_000;
/// SQS's ceiling on a message's total invisibility.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

/// The whole configuration, one table per concern.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where objects come from.
    #[serde(default)]
    pub source: SourceConfig,
    /// Where objects go.
    #[serde(default)]
    pub target: TargetConfig,
    /// The SQS queue of S3 events (needed by `run` and `dlq` only).
    #[serde(default)]
    pub queue: QueueConfig,
    /// Concurrency and memory of copies.
    #[serde(default)]
    pub transfer: TransferConfig,
    /// What is replicated besides the bytes.
    #[serde(default)]
    pub replicate: ReplicateConfig,
    /// The HTTP server for health and metrics.
    #[serde(default)]
    pub server: ServerConfig,
    /// Behaviour on SIGTERM.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// How long a request may go unanswered, on every client.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Metrics as CloudWatch embedded metric format on stdout (`run` only).
    #[serde(default)]
    pub cloudwatch: CloudWatchConfig,
    /// Bucket pairs one fleet serves, in place of `source.bucket`/`target.bucket`.
    #[serde(default, rename = "route", skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// Which route this is ([`Config::routes`]); never read from a file.
    #[serde(skip)]
    pub scope: RouteScope,
}

/// The side objects are read from.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    /// AWS region of the bucket, e.g. `cn-northwest-1`. Required.
    #[serde(default)]
    pub region: String,
    /// Bucket name. Required.
    #[serde(default)]
    pub bucket: String,
    /// S3-compatible endpoint or emulator; path-style addressing is then used.
    /// Default: the region's AWS endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// Credentials; omitted: the default AWS chain (ECS task role, env, profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsConfig>,
    /// The bucket is requester-pays: every request says this side pays
    /// (`x-amz-request-payer: requester`). Default: false.
    #[serde(default)]
    pub request_payer: bool,
}

/// The side objects are written to.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TargetConfig {
    /// AWS region of the bucket, e.g. `us-west-2`. Required.
    #[serde(default)]
    pub region: String,
    /// Bucket name. Required.
    #[serde(default)]
    pub bucket: String,
    /// S3-compatible endpoint or emulator; path-style addressing is then used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// Prepended to every key written on the target. Default: empty.
    #[serde(default)]
    pub key_prefix: String,
    /// Storage class of written objects, e.g. `STANDARD_IA`. Default: the bucket's.
    #[serde(default)]
    pub storage_class: String,
    /// Server-side encryption: `""` (the bucket's default), `AES256` or `aws:kms`.
    #[serde(default)]
    pub sse: Sse,
    /// KMS key for `sse = "aws:kms"`; empty: the account's S3 key.
    #[serde(default)]
    pub sse_kms_key_id: String,
    /// The checksum every uploaded part carries: `crc32c` or `none` (for
    /// S3-compatible servers that refuse additional checksums). Default: crc32c.
    #[serde(default)]
    pub checksum: PartChecksum,
    /// Credentials; omitted: the default AWS chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsConfig>,
}

/// What the source and target tables share, borrowed: how to reach one side.
#[derive(Debug, Clone, Copy)]
pub struct SideView<'a> {
    /// `source` or `target`, as the table is named.
    pub name: &'static str,
    pub region: &'a str,
    pub bucket: &'a str,
    pub endpoint_url: Option<&'a str>,
    pub credentials: Option<&'a CredentialsConfig>,
    /// Requests say the requester pays.
    pub request_payer: bool,
}

impl SourceConfig {
    pub fn view(&self) -> SideView<'_> {
        SideView {
            name: "source",
            region: &self.region,
            bucket: &self.bucket,
            endpoint_url: self.endpoint_url.as_deref(),
            credentials: self.credentials.as_ref(),
            request_payer: self.request_payer,
        }
    }
}

impl TargetConfig {
    pub fn view(&self) -> SideView<'_> {
        SideView {
            name: "target",
            region: &self.region,
            bucket: &self.bucket,
            endpoint_url: self.endpoint_url.as_deref(),
            credentials: self.credentials.as_ref(),
            request_payer: false,
        }
    }
}

/// Where one side's keys come from: a Secrets Manager secret or static keys.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CredentialsConfig {
    /// Secrets Manager secret holding `{"access_key_id", "secret_access_key", "session_token"?}`,
    /// read with the default AWS chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_id: Option<String>,
    /// Region of the secret. Default: the source region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_region: Option<String>,
    /// Secrets Manager endpoint (an emulator). Default: the region's AWS endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_endpoint_url: Option<String>,
    /// How often the secret is re-read for rotation; it is also re-read after an
    /// authentication failure. Default: 1h.
    #[serde(default = "default_refresh_interval", with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// Static access key id (local use), instead of `secret_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// Static secret access key, with `access_key_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<Secret>,
    /// Static session token, with `access_key_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<Secret>,
}

/// The event queue.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// SQS queue URL. Required by `run` and `dlq`.
    #[serde(default)]
    pub url: String,
    /// Dead-letter queue URL. Default: read from the queue's RedrivePolicy.
    #[serde(default)]
    pub dead_letter_url: String,
    /// The fleet's range queue (DESIGN §10): a worker busy with ranges still
    /// receives keys. Default: none, ranges travel on the main queue.
    #[serde(default)]
    pub range_url: String,
    /// SQS endpoint (an emulator). Default: the queue region's AWS endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// Long-poll wait, at most 20s. Default: 20s.
    #[serde(with = "humantime_serde")]
    pub wait_time: Duration,
    /// Visibility given to received messages; a heartbeat extends it while a copy
    /// runs. Default: 5m.
    #[serde(with = "humantime_serde")]
    pub visibility_timeout: Duration,
}

/// Concurrency and memory of copies.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransferConfig {
    /// Objects reconciled at once by one worker. Default: 16.
    pub max_objects: usize,
    /// Part transfers at once, across all objects. Default: 64 (a cross-border
    /// flow carries a few MiB/s: it takes many to fill the link).
    pub max_parts: usize,
    /// Object bytes buffered at once, all transfers together. Default: 512MiB.
    pub memory_limit: ByteSize,
    /// Objects larger than this, or stored by the source in parts, are copied in
    /// parts. Default: 64MiB.
    pub multipart_threshold: ByteSize,
    /// Part size for objects the source stored in a single PUT. Default: 16MiB.
    pub part_size: ByteSize,
    /// Copy multipart objects part for part, so the target's ETag equals the
    /// source's. Default: true.
    pub preserve_part_layout: bool,
    /// Stream each part from its GET into its UploadPart, verified by the part's
    /// ETag, instead of buffering it whole to send it with Content-MD5. Turn off
    /// for a target whose part ETags are not MD5s. Default: true.
    pub stream_parts: bool,
    /// Objects at least this large are copied by the whole fleet, in ranges of
    /// parts (`xpsync run` only; DESIGN §10); 0: never. Default: 2GiB.
    pub split_threshold: ByteSize,
    /// The bytes one range message covers (whole parts, at least one). Default: 256MiB.
    pub split_range_size: ByteSize,
    /// How long after a split (and after each look) its upload is looked at, to
    /// complete it or send missing ranges again; at most 15m. Default: 2m.
    #[serde(with = "humantime_serde")]
    pub split_check_delay: Duration,
    /// Bytes per second this worker reads from the source, every copy together
    /// (a token bucket); unset: no cap. Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bandwidth: Option<ByteSize>,
}

/// What is replicated besides the bytes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicateConfig {
    /// A key gone from the source is deleted from the target. Default: false.
    pub deletes: bool,
    /// Content-Type, -Encoding, -Language, -Disposition, Cache-Control, Expires
    /// and user metadata. Default: true.
    pub metadata: bool,
    /// Object tags. Default: true.
    pub tags: bool,
    /// Only keys under one of these prefixes are replicated. Default: all keys.
    pub include_prefixes: Vec<String>,
    /// Keys under one of these prefixes are not replicated. Default: none.
    pub exclude_prefixes: Vec<String>,
    /// Archived sources (Glacier, Deep Archive, Intelligent-Tiering archive tiers,
    /// not restored): `skip` (counted as `archived`) or `restore`. Default: skip.
    pub archived: Archived,
    /// With `archived = "restore"`: the retrieval tier. Default: Bulk.
    pub restore_tier: RestoreTier,
    /// With `archived = "restore"`: days the restored copy stays readable (not for
    /// Intelligent-Tiering, whose restored objects stay). Default: 1.
    pub restore_days: u32,
}

/// The HTTP server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of `/healthz`, `/readyz` and `/metrics`. Default: 0.0.0.0:9464.
    pub listen: String,
}

/// Behaviour on SIGTERM.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Time in-flight copies get to finish; keep it below ECS's stopTimeout.
    /// Default: 25s.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
}

/// The daemon's metrics for CloudWatch: embedded metric format (EMF) lines on
/// stdout, which awslogs hands to CloudWatch Logs, which makes them metrics.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CloudWatchConfig {
    /// Print them. Default: false.
    pub emf: bool,
    /// How often. Default: 60s.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The metrics' namespace. Default: xpsync.
    pub namespace: String,
    /// The `Stack` dimension of every metric, telling deployments apart (the
    /// template sets its stack name). Default: empty.
    pub stack: String,
}

impl Default for CloudWatchConfig {
    fn default() -> Self {
        Self {
            emf: false,
            interval: Duration::from_secs(60),
            namespace: "xpsync".into(),
            stack: String::new(),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter directive.
    /// Default: info.
    pub level: String,
    /// `json` (for CloudWatch) or `text`. Default: json.
    pub format: String,
}

fn default_refresh_interval() -> Duration {
    Duration::from_secs(3600)
}

impl Default for CredentialsConfig {
    fn default() -> Self {
        Self {
            secret_id: None,
            secret_region: None,
            secret_endpoint_url: None,
            refresh_interval: default_refresh_interval(),
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            dead_letter_url: String::new(),
            range_url: String::new(),
            endpoint_url: None,
            wait_time: Duration::from_secs(20),
            visibility_timeout: Duration::from_secs(300),
        }
    }
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            max_objects: 16,
            max_parts: 64,
            memory_limit: ByteSize::mib(512),
            multipart_threshold: ByteSize::mib(64),
            part_size: ByteSize::mib(16),
            preserve_part_layout: true,
            stream_parts: true,
            split_threshold: ByteSize::gib(2),
            split_range_size: ByteSize::mib(256),
            split_check_delay: Duration::from_secs(120),
            max_bandwidth: None,
        }
    }
}

impl Default for ReplicateConfig {
    fn default() -> Self {
        Self {
            deletes: false,
            metadata: true,
            tags: true,
            include_prefixes: Vec::new(),
            exclude_prefixes: Vec::new(),
            archived: Archived::Skip,
            restore_tier: RestoreTier::Bulk,
            restore_days: 1,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9464".into(),
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            grace_period: Duration::from_secs(25),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "json".into(),
        }
    }
}

/// The configuration could not be read, or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(String),
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// What a command needs configured: `run` needs the buckets and the queue, `dlq`
/// only the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Buckets,
    BucketsAndQueue,
    Queue,
}

impl Config {
    /// Whether `key` (a source key) is replicated at all.
    pub fn is_replicated(&self, key: &str) -> bool {
        let r = &self.replicate;
        self.scope.takes(key)
            && (r.include_prefixes.is_empty()
                || r.include_prefixes.iter().any(|p| key.starts_with(p)))
            && !r.exclude_prefixes.iter().any(|p| key.starts_with(p))
    }

    /// The configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string(self).expect("the configuration always serializes")
    }
}

#[cfg(test)]
mod tests;
