//! The benchmark's server-bound limit: every object of a source bucket copied to a
//! target bucket by plain parallel GETs and PUTs (UploadPart for large objects),
//! with no client-side work: no hashing, no payload signing, no verification, no
//! metadata. What a copier cannot beat on the same servers.
//!
//! `rawcopy SOURCE_URL SOURCE_BUCKET TARGET_URL TARGET_BUCKET CONCURRENCY PART_MIB`,
//! with keys from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (the same on both sides).

use std::sync::Arc;

use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use futures::StreamExt;
use tokio::sync::Semaphore;

fn client(endpoint: &str) -> Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            std::env::var("AWS_ACCESS_KEY_ID").expect("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY").expect("AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "rawcopy",
        ))
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    Client::from_conf(config)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, source_url, source_bucket, target_url, target_bucket, concurrency, part_mib] =
        args.as_slice()
    else {
        eprintln!(
            "usage: rawcopy SOURCE_URL SOURCE_BUCKET TARGET_URL TARGET_BUCKET CONCURRENCY PART_MIB"
        );
        std::process::exit(2);
    };
    let (source, target) = (client(source_url), client(target_url));
    let concurrency: usize = concurrency.parse().expect("CONCURRENCY");
    let part: i64 = part_mib.parse::<i64>().expect("PART_MIB") * 1024 * 1024;
    let slots = Arc::new(Semaphore::new(concurrency));

    let mut objects: Vec<(String, i64)> = Vec::new();
    let mut pages = source
        .list_objects_v2()
        .bucket(source_bucket)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for o in page.expect("list the source").contents() {
            objects.push((
                o.key().unwrap_or_default().to_owned(),
                o.size().unwrap_or(0),
            ));
        }
    }

    futures::stream::iter(objects)
        .for_each_concurrent(concurrency, |(key, size)| {
            let (source, target, slots) = (&source, &target, &slots);
            async move {
                if size <= part {
                    let _slot = slots.acquire().await.unwrap();
                    let body = source
                        .get_object()
                        .bucket(source_bucket)
                        .key(&key)
                        .send()
                        .await
                        .unwrap();
                    let bytes = body.body.collect().await.unwrap().into_bytes();
                    target
                        .put_object()
                        .bucket(target_bucket)
                        .key(&key)
                        .body(ByteStream::from(bytes))
                        .customize()
                        .disable_payload_signing()
                        .send()
                        .await
                        .unwrap();
                    return;
                }
                let upload = target
                    .create_multipart_upload()
                    .bucket(target_bucket)
                    .key(&key)
                    .send()
                    .await
                    .unwrap();
                let id = upload.upload_id().unwrap().to_owned();
                let count = (size + part - 1) / part;
                let parts: Vec<CompletedPart> = futures::stream::iter(0..count)
                    .map(|i| {
                        let (key, id) = (&key, &id);
                        async move {
                            let _slot = slots.acquire().await.unwrap();
                            let range =
                                format!("bytes={}-{}", i * part, ((i + 1) * part).min(size) - 1);
                            let body = source
                                .get_object()
                                .bucket(source_bucket)
                                .key(key)
                                .range(range)
                                .send()
                                .await
                                .unwrap();
                            let bytes = body.body.collect().await.unwrap().into_bytes();
                            let out = target
                                .upload_part()
                                .bucket(target_bucket)
                                .key(key)
                                .upload_id(id)
                                .part_number(i as i32 + 1)
                                .body(ByteStream::from(bytes))
                                .customize()
                                .disable_payload_signing()
                                .send()
                                .await
                                .unwrap();
                            CompletedPart::builder()
                                .part_number(i as i32 + 1)
                                .e_tag(out.e_tag().unwrap())
                                .build()
                        }
                    })
                    .buffered(concurrency)
                    .collect()
                    .await;
                target
                    .complete_multipart_upload()
                    .bucket(target_bucket)
                    .key(&key)
                    .upload_id(&id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await
                    .unwrap();
            }
        })
        .await;
}
