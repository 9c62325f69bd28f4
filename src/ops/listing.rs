//! Listing a side as a stream, and merging two sorted listings.
//!
//! S3 lists keys in ascending UTF-8 byte order, a page of at most 1,000 at a time.
//! [`list`] turns the pages into a stream of [`Entry`]s, so a bucket of ten million
//! keys is never held in memory; [`merge`] walks the source and target streams side
//! by side, like the merge step of a merge sort, pairing entries of the same key.
//! The target's `key_prefix` is stripped from its keys first, which keeps the order.

use futures::stream::{self, BoxStream, Stream, StreamExt, TryStreamExt};

use crate::aws::S3Side;
use crate::error::S3Error;
use crate::etag::ETag;

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key, without the side's key prefix.
    pub key: String,
    pub size: u64,
    /// None where the server lists none.
    pub etag: Option<ETag>,
    /// When it was last written, in seconds since the epoch, if listed.
    pub modified: Option<i64>,
}

/// A key as found on the two sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pair {
    SourceOnly(Entry),
    TargetOnly(Entry),
    Both(Entry, Entry),
}

/// Every object of `side` under `key_prefix` + `prefix`, with `key_prefix` removed.
pub fn list<'a>(
    side: &'a S3Side,
    key_prefix: &'a str,
    prefix: &'a str,
) -> impl Stream<Item = Result<Entry, S3Error>> + Send + 'a {
    let pages = side
        .client
        .list_objects_v2()
        .bucket(&side.bucket)
        .prefix(format!("{key_prefix}{prefix}"))
        .into_paginator()
        .send();
    stream::unfold(pages, |mut pages| async move {
        let page = pages.next().await?;
        Some((page, pages))
    })
    .map(move |page| side.observe("ListObjectsV2", page))
    .map_ok(move |page| {
        let entries: Vec<Result<Entry, S3Error>> = page
            .contents()
            .iter()
            .filter_map(|object| {
                let key = object.key()?.strip_prefix(key_prefix)?;
                Some(Ok(Entry {
                    key: key.to_owned(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    etag: ETag::parse(object.e_tag()),
                    modified: object.last_modified().map(|t| t.secs()),
                }))
            })
            .collect();
        stream::iter(entries)
    })
    .try_flatten()
}

/// Pairs two key-ordered listings by key.
pub fn merge<'a, E: Send + Sync + 'a>(
    source: impl Stream<Item = Result<Entry, E>> + Send + 'a,
    target: impl Stream<Item = Result<Entry, E>> + Send + 'a,
) -> BoxStream<'a, Result<Pair, E>> {
    let state = (source.boxed().peekable(), target.boxed().peekable());
    stream::unfold(state, |(mut source, mut target)| async move {
        let next = {
            let s = std::pin::Pin::new(&mut source).peek().await;
            let t = std::pin::Pin::new(&mut target).peek().await;
            match (s, t) {
                (None, None) => return None,
                (Some(Err(_)), _) => Take::Source,
                (_, Some(Err(_))) => Take::Target,
                (Some(Ok(_)), None) => Take::Source,
                (None, Some(Ok(_))) => Take::Target,
                (Some(Ok(s)), Some(Ok(t))) => match s.key.as_bytes().cmp(t.key.as_bytes()) {
                    std::cmp::Ordering::Less => Take::Source,
                    std::cmp::Ordering::Greater => Take::Target,
                    std::cmp::Ordering::Equal => Take::Both,
                },
            }
        };
        let pair = match next {
            Take::Source => source.next().await?.map(Pair::SourceOnly),
            Take::Target => target.next().await?.map(Pair::TargetOnly),
            Take::Both => match (source.next().await?, target.next().await?) {
                (Ok(s), Ok(t)) => Ok(Pair::Both(s, t)),
                (Err(e), _) | (_, Err(e)) => Err(e),
            },
        };
        Some((pair, (source, target)))
    })
    .boxed()
}

enum Take {
    Source,
    Target,
    Both,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str) -> Result<Entry, ()> {
        Ok(Entry {
            key: key.into(),
            size: 1,
            etag: Some(ETag::new("e")),
            modified: None,
        })
    }

    #[tokio::test]
    async fn merge_pairs_equal_keys_and_keeps_byte_order() {
        let source = stream::iter(vec![entry("a"), entry("b"), entry("d"), entry("é")]);
        let target = stream::iter(vec![entry("b"), entry("c"), entry("z")]);
        let pairs: Vec<_> = merge(source, target).map(Result::unwrap).collect().await;
        let shape: Vec<String> = pairs
            .iter()
            .map(|p| match p {
                Pair::SourceOnly(e) => format!("-{}", e.key),
                Pair::TargetOnly(e) => format!("+{}", e.key),
                Pair::Both(s, _) => format!("={}", s.key),
            })
            .collect();
        assert_eq!(shape, ["-a", "=b", "+c", "-d", "+z", "-é"]);
    }

    #[tokio::test]
    async fn merge_passes_errors_through() {
        let source = stream::iter(vec![entry("a"), Err(())]);
        let target = stream::iter(vec![entry("b")]);
        let results: Vec<_> = merge(source, target).collect().await;
        assert!(results.iter().any(Result::is_err));
    }
}
