//! The two partitions' S3 clients, their credentials, and what their errors mean.
//!
//! Each side (source, target) gets its own client: its own region, optional
//! endpoint (then path-style addressing), and its own credentials, because keys of
//! one partition are not valid in the other. Credentials come from the default AWS
//! chain, from static keys, or from a Secrets Manager secret ([`SecretCredentials`]),
//! which is re-read every `refresh_interval` and at once after S3 rejects the keys.
//!
//! S3 clients ask for checksums only when S3 requires them (DESIGN §8): xpsync sends
//! Content-MD5 itself on every upload, so the SDK's default CRC trailers would only
//! cost CPU here, and many S3-compatible servers reject them.
//!
//! Every S3 request's outcome passes through [`S3Side::observe`], which counts it and
//! turns an SDK error into an [`S3Error`] ([`crate::error`]).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::{error::CredentialsError, future, ProvideCredentials};
use aws_credential_types::Credentials;
use aws_sdk_s3::config::{IdentityCache, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use tokio::sync::Mutex;

use crate::config::{Config, CredentialsConfig, SideView, TimeoutsConfig};
pub use crate::error::Side;
use crate::error::{ErrorKind, S3Error};
use crate::metrics::{self, RefreshResult};

mod customer_key;
mod uploads;
pub use customer_key::CustomerKey;
pub(crate) use customer_key::{
    maybe_wanted_by_head, missing as customer_key_missing, wanted_by_get,
};

/// One side's S3 access.
#[derive(Clone, Debug)]
pub struct S3Side {
    pub side: Side,
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
    /// Set when keys come from a secret, so a rejection can force a re-read.
    secret: Option<SecretCredentials>,
    /// When each operation last passed on this side.
    passes: Arc<Passes>,
}

/// How long an operation that passed on some key makes its refusal on another
/// key that key's own verdict ([`S3Error::per_object`]).
const PASSED_RECENTLY: Duration = Duration::from_secs(600);

/// When each operation last passed: an `AccessDenied` of an operation that passes
/// on other keys concerns the refused object alone (a prefix-scoped deny, another
/// owner's object), while one that passes nowhere may be a policy refusing it on
/// every key.
#[derive(Debug, Default)]
struct Passes(std::sync::Mutex<std::collections::HashMap<&'static str, Instant>>);

impl Passes {
    fn passed(&self, operation: &'static str) {
        let mut passes = self.0.lock().expect("never poisoned");
        passes.insert(operation, Instant::now());
    }

    fn passed_recently(&self, operation: &str) -> bool {
        let passes = self.0.lock().expect("never poisoned");
        passes
            .get(operation)
            .is_some_and(|at| at.elapsed() < PASSED_RECENTLY)
    }
}

impl S3Side {
    /// Records one request's outcome in `xpsync_s3_requests_total`, turning SDK
    /// errors into [`S3Error`]s.
    pub fn observe<T, E>(
        &self,
        operation: &'static str,
        result: Result<T, SdkError<E>>,
    ) -> Result<T, S3Error>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut result = result.map_err(|e| S3Error::from_sdk(self.side, operation, e));
        if let (Err(e), Some(secret)) = (&mut result, &self.secret) {
            // No keys could be had: the request was never signed. That concerns every
            // object of this side, whatever the SDK made of it.
            if let Some(outage) = secret.outage() {
                e.kind = ErrorKind::Auth;
                e.message = format!(
                    "cannot read secret {:?} for new keys: {outage}",
                    secret.inner.secret_id
                );
            }
        }
        match &mut result {
            Ok(_) => self.passes.passed(operation),
            Err(e) if e.kind == ErrorKind::Denied => {
                e.per_object = self.passes.passed_recently(operation);
            }
            Err(_) => {}
        }
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind.as_str(),
        };
        metrics::S3_REQUESTS
            .with_label_values(&[self.side.as_str(), operation, outcome])
            .inc();
        if let Err(e) = &result {
            if e.keys_rejected() {
                self.credentials_rejected();
            }
        }
        result
    }

    /// Whether `operation` passed on this side lately, on any key.
    pub fn passed_recently(&self, operation: &str) -> bool {
        self.passes.passed_recently(operation)
    }

    /// The customer-provided key that reads this side's SSE-C objects, from its
    /// credentials secret (`sse_customer_key`); None without one.
    pub async fn customer_key(&self) -> Option<CustomerKey> {
        let secret = self.secret.as_ref()?;
        let _ = secret.load().await;
        let key = secret.inner.customer_key.lock().expect("never poisoned");
        key.clone()
    }

    /// S3 rejected this side's keys: re-read the secret before the next request.
    pub fn credentials_rejected(&self) {
        if let Some(secret) = &self.secret {
            secret.invalidate();
        }
    }
}

/// Credentials could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error("{side} credentials: secret {secret_id:?}: {message}")]
    Secret {
        side: Side,
        secret_id: String,
        message: String,
    },
}

/// Builds the source and target clients, fetching secrets once so that a missing
/// or malformed secret is reported before any work starts.
pub async fn connect(config: &Config) -> Result<(S3Side, S3Side), AwsError> {
    let secret_region = &config.source.region;
    let timeouts = &config.timeouts;
    let source = s3_side(Side::Source, config.source.view(), secret_region, timeouts).await?;
    let target = s3_side(Side::Target, config.target.view(), secret_region, timeouts).await?;
    Ok((source, target))
}

async fn s3_side(
    side: Side,
    view: SideView<'_>,
    default_secret_region: &str,
    timeouts: &TimeoutsConfig,
) -> Result<S3Side, AwsError> {
    let SideView {
        region,
        bucket,
        endpoint_url,
        credentials,
        request_payer,
        ..
    } = view;
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .timeout_config(timeouts.sdk())
        .stalled_stream_protection(timeouts.stalled_streams());
    let mut secret = None;
    if let Some(c) = credentials {
        if let Some(secret_id) = &c.secret_id {
            let provider = SecretCredentials::new(side, c, default_secret_region, timeouts).await;
            provider.load().await.map_err(|e| AwsError::Secret {
                side,
                secret_id: secret_id.clone(),
                message: e,
            })?;
            loader = loader.credentials_provider(provider.clone());
            secret = Some(provider);
        } else if let (Some(id), Some(key)) = (&c.access_key_id, &c.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id,
                key.expose(),
                c.session_token.as_ref().map(|t| t.expose().to_owned()),
                None,
                "xpsync-static",
            ));
        }
    }
    let sdk = loader.load().await;
    let mut builder = aws_sdk_s3::config::Builder::from(&sdk)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if let Some(url) = endpoint_url {
        builder = builder.endpoint_url(url).force_path_style(true);
    }
    if request_payer {
        builder = builder.interceptor(RequesterPays);
    }
    if secret.is_some() {
        // SecretCredentials caches and refreshes itself; the SDK's cache would
        // keep rejected keys until their expiry.
        builder = builder.identity_cache(IdentityCache::no_cache());
    }
    Ok(S3Side {
        side,
        client: aws_sdk_s3::Client::from_conf(builder.build()),
        bucket: bucket.to_owned(),
        secret,
        passes: Arc::default(),
    })
}

/// Says on every request that the requester pays (`source.request_payer`): a
/// requester-pays bucket refuses requests that do not (403 AccessDenied).
#[derive(Debug)]
struct RequesterPays;

impl aws_sdk_s3::config::Intercept for RequesterPays {
    fn name(&self) -> &'static str {
        "RequesterPays"
    }

    fn modify_before_signing(
        &self,
        context: &mut aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut<'_>,
        _: &aws_sdk_s3::config::RuntimeComponents,
        _: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let headers = context.request_mut().headers_mut();
        headers.insert("x-amz-request-payer", "requester");
        Ok(())
    }
}

/// The spellings in use for a credentials secret's fields: the Data Transfer Hub's
/// (DESIGN §2), the CloudFormation-built Lambda stack's, and the AWS CLI's.
const ACCESS_KEY_ID_FIELDS: [&str; 3] = ["access_key_id", "AccessKeyId", "aws_access_key_id"];
const SECRET_ACCESS_KEY_FIELDS: [&str; 3] = [
    "secret_access_key",
    "SecretAccessKey",
    "aws_secret_access_key",
];
const SESSION_TOKEN_FIELDS: [&str; 3] = ["session_token", "SessionToken", "aws_session_token"];

/// The keys a secret's JSON holds, under any spelling in use. An error names the
/// fields the secret has, never their values.
fn secret_keys(text: &str) -> Result<Credentials, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|_| {
        "the secret is not a JSON object with \"access_key_id\" and \"secret_access_key\" strings"
            .to_owned()
    })?;
    let fields = value.as_object().ok_or(
        "the secret is not a JSON object with \"access_key_id\" and \"secret_access_key\" strings",
    )?;
    let pick = |names: &[&str]| {
        names
            .iter()
            .find_map(|name| fields.get(*name).and_then(serde_json::Value::as_str))
            .filter(|value| !value.is_empty())
    };
    match (pick(&ACCESS_KEY_ID_FIELDS), pick(&SECRET_ACCESS_KEY_FIELDS)) {
        (Some(id), Some(secret)) => Ok(Credentials::new(
            id,
            secret,
            pick(&SESSION_TOKEN_FIELDS).map(str::to_owned),
            None,
            "xpsync-secret",
        )),
        _ => {
            let names: Vec<&str> = fields.keys().map(String::as_str).collect();
            Err(format!(
                "the secret is not a JSON object with \"access_key_id\" and \"secret_access_key\" strings \
                 (or AccessKeyId/SecretAccessKey, or aws_access_key_id/aws_secret_access_key), not empty; \
                 its fields are: {}",
                names.join(", ")
            ))
        }
    }
}

/// Credentials read from a Secrets Manager secret, cached for `refresh_interval`
/// and re-read at once after [`SecretCredentials::invalidate`].
#[derive(Clone)]
pub struct SecretCredentials {
    inner: Arc<SecretInner>,
}

struct SecretInner {
    side: Side,
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
    refresh_interval: Duration,
    /// The keys last read and when; the lock makes reads single-flight.
    cached: Mutex<Option<(Credentials, Instant)>>,
    /// S3 rejected the cached keys: they are not to be used again.
    stale: AtomicBool,
    /// The SSE-C key the secret holds too, as last read.
    customer_key: std::sync::Mutex<Option<CustomerKey>>,
    /// The last read's failure and when, while no usable keys are held: reads are
    /// not retried more often than [`SECRET_RETRY`], and requests say why.
    failed: std::sync::Mutex<Option<(Instant, String)>>,
}

/// How soon a secret that could not be read is read again.
const SECRET_RETRY: Duration = Duration::from_secs(5);

impl fmt::Debug for SecretCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretCredentials")
            .field("side", &self.inner.side)
            .field("secret_id", &self.inner.secret_id)
            .finish_non_exhaustive()
    }
}

impl SecretCredentials {
    async fn new(
        side: Side,
        c: &CredentialsConfig,
        default_region: &str,
        timeouts: &TimeoutsConfig,
    ) -> Self {
        let region = c
            .secret_region
            .clone()
            .unwrap_or_else(|| default_region.to_owned());
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region))
            .timeout_config(timeouts.sdk());
        if let Some(url) = &c.secret_endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let sdk = loader.load().await;
        Self {
            inner: Arc::new(SecretInner {
                side,
                client: aws_sdk_secretsmanager::Client::new(&sdk),
                secret_id: c.secret_id.clone().unwrap_or_default(),
                refresh_interval: c.refresh_interval,
                cached: Mutex::new(None),
                stale: AtomicBool::new(false),
                customer_key: std::sync::Mutex::new(None),
                failed: std::sync::Mutex::new(None),
            }),
        }
    }

    /// The next request re-reads the secret.
    pub fn invalidate(&self) {
        self.inner.stale.store(true, Ordering::SeqCst);
    }

    /// Why no keys can be had now, while that is so.
    pub fn outage(&self) -> Option<String> {
        let failed = self.inner.failed.lock().expect("never poisoned");
        failed.as_ref().map(|(_, why)| why.clone())
    }

    /// The keys to sign with. One read of the secret at a time (the lock); keys
    /// past `refresh_interval` are re-read, but kept in use while the secret cannot
    /// be read and S3 has not rejected them; a failed read is retried no more
    /// often than every [`SECRET_RETRY`].
    async fn load(&self) -> Result<Credentials, String> {
        let inner = &self.inner;
        let mut cached = inner.cached.lock().await;
        let stale = inner.stale.load(Ordering::SeqCst);
        let usable = cached.as_ref().filter(|_| !stale).map(|(c, _)| c.clone());
        if let Some((credentials, read_at)) = cached.as_ref() {
            if !stale && read_at.elapsed() < inner.refresh_interval {
                return Ok(credentials.clone());
            }
        }
        let recent_failure = {
            let failed = inner.failed.lock().expect("never poisoned");
            failed
                .as_ref()
                .filter(|(at, _)| at.elapsed() < SECRET_RETRY)
                .map(|(_, why)| why.clone())
        };
        if let Some(why) = recent_failure {
            return usable.ok_or(why);
        }
        // Clear the flag before reading, so a rejection seen while we read
        // forces yet another read.
        inner.stale.store(false, Ordering::SeqCst);
        match self.fetch().await {
            Ok(credentials) => {
                RefreshResult::Ok.count();
                *cached = Some((credentials.clone(), Instant::now()));
                *inner.failed.lock().expect("never poisoned") = None;
                Ok(credentials)
            }
            Err(message) => {
                RefreshResult::Error.count();
                match usable {
                    Some(credentials) => {
                        tracing::warn!(side = %inner.side, secret_id = %inner.secret_id, error = %message, "could not re-read the credentials secret; the keys read before stay in use until they are rejected");
                        // Not an outage yet: keys are at hand. Try again later.
                        *inner.failed.lock().expect("never poisoned") = None;
                        if let Some((_, read_at)) = cached.as_mut() {
                            *read_at = Instant::now()
                                .checked_sub(inner.refresh_interval.saturating_sub(SECRET_RETRY))
                                .unwrap_or_else(Instant::now);
                        }
                        Ok(credentials)
                    }
                    None => {
                        tracing::error!(side = %inner.side, secret_id = %inner.secret_id, error = %message, "cannot read the credentials secret, and no usable keys are held");
                        *inner.failed.lock().expect("never poisoned") =
                            Some((Instant::now(), message.clone()));
                        if stale {
                            inner.stale.store(true, Ordering::SeqCst);
                        }
                        Err(message)
                    }
                }
            }
        }
    }

    async fn fetch(&self) -> Result<Credentials, String> {
        let inner = &self.inner;
        let output = inner
            .client
            .get_secret_value()
            .secret_id(&inner.secret_id)
            .send()
            .await
            .map_err(|e| match (e.code(), e.message()) {
                (Some(code), Some(msg)) => format!("{code}: {msg}"),
                (Some(code), None) => code.to_owned(),
                _ => DisplayErrorContext(&e).to_string(),
            })?;
        let text = output
            .secret_string()
            .ok_or("the secret has no SecretString (a binary secret is not supported)")?;
        // Never echo the secret's text: a parse error may quote it.
        let credentials = secret_keys(text)?;
        *inner.customer_key.lock().expect("never poisoned") = customer_key::from_secret(text)?;
        Ok(credentials)
    }
}

impl ProvideCredentials for SecretCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            self.load().await.map_err(|message| -> CredentialsError {
                CredentialsError::provider_error(format!(
                    "{} credentials: secret {:?}: {message}",
                    self.inner.side, self.inner.secret_id
                ))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_in_use_is_read() {
        for text in [
            r#"{"access_key_id": "AKIA1", "secret_access_key": "s1"}"#,
            r#"{"AccessKeyId": "AKIA1", "SecretAccessKey": "s1"}"#,
            r#"{"aws_access_key_id": "AKIA1", "aws_secret_access_key": "s1"}"#,
        ] {
            let keys = secret_keys(text).unwrap();
            assert_eq!(
                (keys.access_key_id(), keys.secret_access_key()),
                ("AKIA1", "s1")
            );
        }
        let with_token = r#"{"AccessKeyId": "A", "SecretAccessKey": "s", "SessionToken": "t"}"#;
        assert_eq!(secret_keys(with_token).unwrap().session_token(), Some("t"));
    }

    #[test]
    fn a_secret_of_other_fields_is_named_by_its_fields_not_its_values() {
        let error = secret_keys(r#"{"user": "x", "password": "hunter2"}"#).unwrap_err();
        assert!(error.contains("its fields are: password, user"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        let empty = secret_keys(r#"{"access_key_id": "", "secret_access_key": "s"}"#);
        assert!(empty.is_err());
    }
}
