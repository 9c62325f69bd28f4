//! Streaming a part: the source's GET body flows into the target's UploadPart as it
//! arrives, through a small channel, instead of being buffered whole.
//!
//! A task reads the GET body, hashes it (MD5) and counts it, and passes each chunk
//! on; the upload's body drains the channel. So a part holds only the channel's few
//! chunks in memory ([`STREAM_WINDOW`] is reserved for it from the budget), hashing
//! runs beside the upload, and nothing waits for a whole part to arrive before
//! sending it. Such a body cannot be replayed, so the SDK cannot retry the upload
//! itself: the caller retries the part by reading its range again.
//!
//! A streamed upload cannot carry Content-MD5 (the digest is known only at the end).
//! The part is verified instead by its ETag: S3 answers with the MD5 of what it
//! stored, which must equal the MD5 of what was read. The caller streams only where
//! the target's ETags are MD5s (not under SSE-KMS), and a part that fails the check
//! is uploaded again before the object is ever completed.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use md5::{Digest, Md5};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Bandwidth;
use crate::etag::ETag;

/// Bytes reserved from the memory budget for one streamed part: at most
/// [`CHANNEL_CHUNKS`] chunks wait in the channel, one more is being read and one
/// more written, and the HTTP client reads at most about 400 KiB at a time.
pub const STREAM_WINDOW: u64 = 2 * 1024 * 1024;
const CHANNEL_CHUNKS: usize = 2;

/// What the reading side saw, once the body has been read to its end.
pub struct ReadSummary {
    pub md5: ETag,
    pub length: u64,
}

/// Why the reading side stopped early.
pub enum ReadFailure {
    /// The upload stopped taking the body: the upload's own error says why.
    UploadStopped,
    /// The source's body failed.
    Source(String),
}

/// Starts reading `source` into a body for an upload of exactly `length` bytes,
/// each chunk let through by `bandwidth`'s cap ([`super::bandwidth`]).
pub fn tee(
    source: ByteStream,
    length: u64,
    bandwidth: Bandwidth,
) -> (ByteStream, JoinHandle<Result<ReadSummary, ReadFailure>>) {
    let (sender, receiver) = mpsc::channel(CHANNEL_CHUNKS);
    let reader = tokio::spawn(async move {
        let mut source = source;
        let mut md5 = Md5::new();
        let mut read = 0u64;
        while let Some(chunk) = source.next().await {
            match chunk {
                Ok(chunk) => {
                    bandwidth.take(chunk.len()).await;
                    md5.update(&chunk);
                    read += chunk.len() as u64;
                    if sender.send(Ok(chunk)).await.is_err() {
                        return Err(ReadFailure::UploadStopped);
                    }
                }
                Err(e) => {
                    let message = format!("reading the source body: {e}");
                    let _ = sender
                        .send(Err(std::io::Error::other(message.clone())))
                        .await;
                    return Err(ReadFailure::Source(message));
                }
            }
        }
        Ok(ReadSummary {
            md5: ETag::from_md5(&md5.finalize()),
            length: read,
        })
    });
    let body = ChannelBody { receiver, length };
    (
        ByteStream::new(aws_smithy_types::body::SdkBody::from_body_1_x(body)),
        reader,
    )
}

/// An HTTP body fed by the reading task, of a length known in advance.
struct ChannelBody {
    receiver: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    length: u64,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(ready!(self.receiver.poll_recv(cx)).map(|chunk| chunk.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.length)
    }
}
