//! What a failed request means, decided once, on the ground floor.
//!
//! Every SDK error is turned into an [`S3Error`] or an [`SqsError`] whose
//! [`ErrorKind`] is read from the error's code and HTTP status, never from its
//! message text. Everything above (part retries, the reconcile loop, the daemon's
//! acknowledgement and breaker) decides by that kind alone.
//!
//! This module depends on nothing else of xpsync's, so every other module may use it.

use std::fmt;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// Which partition a request goes to; named in every error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a failure means for whoever must decide what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The keys were rejected (unknown, badly signed, expired), or a bare 403 that
    /// names no reason: systemic, affects every object.
    Auth,
    /// The keys were accepted, but may not do this (`AccessDenied`): one object's
    /// verdict where the same operation passes on other keys
    /// ([`S3Error::per_object`]), else possibly a policy refusing it on every key,
    /// which counts toward the breaker like a systemic failure.
    Denied,
    /// The bucket (or queue) does not exist: systemic.
    BucketMissing,
    /// The key does not exist (or the upload is gone).
    NotFound,
    /// `If-Match` failed: the source changed.
    PreconditionFailed,
    /// Throttling, 5xx, timeouts, broken connections: try again later.
    Transient,
    /// The request itself is wrong for this object; retrying will not help.
    Permanent,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Auth,
        ErrorKind::Denied,
        ErrorKind::BucketMissing,
        ErrorKind::NotFound,
        ErrorKind::PreconditionFailed,
        ErrorKind::Transient,
        ErrorKind::Permanent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Auth => "auth",
            ErrorKind::Denied => "denied",
            ErrorKind::BucketMissing => "bucket_missing",
            ErrorKind::NotFound => "not_found",
            ErrorKind::PreconditionFailed => "precondition_failed",
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
        }
    }

    /// Whether the failure concerns the whole side rather than one object.
    pub fn is_systemic(self) -> bool {
        matches!(self, ErrorKind::Auth | ErrorKind::BucketMissing)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An S3 request failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{side} S3 {operation} failed: {message}")]
pub struct S3Error {
    pub side: Side,
    pub operation: &'static str,
    pub kind: ErrorKind,
    pub message: String,
    /// S3's error code, when its answer had a body naming one.
    pub code: Option<String>,
    /// The HTTP status of S3's answer, when there was one.
    pub status: Option<u16>,
    /// The failure is known to concern this object alone: an `AccessDenied` while
    /// the same operation passes on other keys, or a GET refused after the key's
    /// HEAD passed (a KMS key the keys may not use).
    pub per_object: bool,
}

impl S3Error {
    /// An error found by xpsync itself rather than returned by S3.
    pub fn new(
        side: Side,
        operation: &'static str,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> Self {
        Self {
            side,
            operation,
            kind,
            message: message.into(),
            code: None,
            status: None,
            per_object: false,
        }
    }

    /// Whether this is one object's verdict, final: a listed per-object code, or a
    /// refusal known to concern this object alone. Such a key is dead-lettered once,
    /// with S3's words, and never counts toward the breaker.
    pub fn is_verdict(&self) -> bool {
        self.kind == ErrorKind::Permanent || (self.kind == ErrorKind::Denied && self.per_object)
    }

    /// Whether S3 said the keys themselves are wrong (unknown, badly signed,
    /// expired), rather than that they may not do this: only then is a secret
    /// worth re-reading. A HEAD's 403 names no code, so it does not say.
    pub fn keys_rejected(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken" | "InvalidToken")
        )
    }

    /// Whether the server will not do this one operation, whatever the moment: a
    /// policy that does not allow it (AccessDenied, keys accepted), or a server that
    /// does not implement it (some S3-compatible ones). Not expired or wrong keys,
    /// which are systemic and pass.
    pub fn operation_refused(&self) -> bool {
        matches!(self.kind, ErrorKind::Denied | ErrorKind::Permanent)
    }

    /// Classifies an SDK error by its code and HTTP status.
    pub fn from_sdk<E>(side: Side, operation: &'static str, err: SdkError<E>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_owned);
        let kind = s3_kind(&err, code.as_deref(), status);
        Self {
            side,
            operation,
            kind,
            message: describe(&err, code.clone(), status),
            code,
            status,
            per_object: false,
        }
    }
}

/// S3 error codes that concern one object and will not change on a retry: a
/// message whose key fails with one of them is dead-lettered at once, with why.
pub const PER_OBJECT_PERMANENT: [&str; 6] = [
    "KeyTooLongError",
    "MetadataTooLarge",
    "EntityTooLarge",
    "InvalidObjectState",
    "InvalidStorageClass",
    "InvalidTag",
];

fn s3_kind<E>(err: &SdkError<E>, code: Option<&str>, status: Option<u16>) -> ErrorKind {
    match (err, code, status) {
        (_, Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken"), _)
        | (_, Some("InvalidToken" | "AllAccessDisabled"), _)
        | (_, None, Some(401 | 403)) => ErrorKind::Auth,
        (_, Some("AccessDenied"), _) => ErrorKind::Denied,
        (_, Some("NoSuchBucket"), _) => ErrorKind::BucketMissing,
        (_, Some("NoSuchKey" | "NotFound" | "NoSuchUpload"), _) | (_, None, Some(404)) => {
            ErrorKind::NotFound
        }
        (_, Some("PreconditionFailed"), _) | (_, _, Some(412)) => ErrorKind::PreconditionFailed,
        (_, Some("NotImplemented"), _) | (_, None, Some(501)) => ErrorKind::Permanent,
        // BadDigest: the body did not match its Content-MD5, so it changed on the way.
        (_, Some("SlowDown" | "RequestTimeout" | "InternalError" | "BadDigest"), _) => {
            ErrorKind::Transient
        }
        (_, _, Some(408 | 429 | 500..=599)) => ErrorKind::Transient,
        // What is wrong with this one object, and will be wrong every time.
        (_, Some(code), _) if PER_OBJECT_PERMANENT.contains(&code) => ErrorKind::Permanent,
        (SdkError::ConstructionFailure(_), _, _) => ErrorKind::Permanent,
        // Any other answer of S3's, known or not, may be passing, or may be a
        // systemic fault not foreseen here: retried, and dead-lettered only by SQS's
        // maxReceiveCount, never at once.
        // Timeouts, dispatch failures, unreadable responses: the network.
        _ => ErrorKind::Transient,
    }
}

/// A message naming the code and S3's words, or the status where there are none
/// (a HEAD's error has no body).
fn describe<E>(err: &SdkError<E>, code: Option<String>, status: Option<u16>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match (code, err.message()) {
        (Some(code), Some(msg)) => format!("{code}: {msg}"),
        (Some(code), None) => code,
        (None, _) => match status {
            Some(403) => "403 Forbidden (access denied or keys rejected)".into(),
            Some(404) => "404 Not Found".into(),
            Some(s) => format!("HTTP {s}: {}", DisplayErrorContext(err)),
            None => DisplayErrorContext(err).to_string(),
        },
    }
}

/// An SQS request failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("SQS {operation} failed: {message}")]
pub struct SqsError {
    pub operation: &'static str,
    pub kind: ErrorKind,
    pub message: String,
}

impl SqsError {
    /// An error found by xpsync itself (a missing dead-letter queue, a bad policy).
    pub fn new(operation: &'static str, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            operation,
            kind,
            message: message.into(),
        }
    }

    /// Classifies an SDK error by its code and HTTP status.
    pub fn from_sdk<E>(operation: &'static str, err: SdkError<E>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_owned);
        let kind = match (&err, code.as_deref(), status) {
            (
                _,
                Some(
                    "InvalidClientTokenId"
                    | "SignatureDoesNotMatch"
                    | "ExpiredToken"
                    | "AccessDenied"
                    | "AccessDeniedException"
                    | "UnrecognizedClientException"
                    | "InvalidSecurity",
                ),
                _,
            )
            | (_, None, Some(401 | 403)) => ErrorKind::Auth,
            (
                _,
                Some(
                    "AWS.SimpleQueueService.NonExistentQueue"
                    | "QueueDoesNotExist"
                    | "NonExistentQueue",
                ),
                _,
            ) => ErrorKind::BucketMissing,
            (_, Some("ReceiptHandleIsInvalid" | "InvalidReceiptHandle"), _) => ErrorKind::NotFound,
            (_, _, Some(408 | 429 | 500..=599)) => ErrorKind::Transient,
            (_, Some("ThrottlingException" | "RequestThrottled" | "ServiceUnavailable"), _) => {
                ErrorKind::Transient
            }
            (SdkError::ServiceError(_) | SdkError::ConstructionFailure(_), _, _) => {
                ErrorKind::Permanent
            }
            _ => ErrorKind::Transient,
        };
        Self {
            operation,
            kind,
            message: describe(&err, code, status),
        }
    }
}
