//! Clients of an emulated partition, and the S3 and IAM calls the harness makes
//! with them.

use aws_credential_types::Credentials;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use super::{bytes_of, Keys};

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

pub async fn create_bucket(s3: &aws_sdk_s3::Client, bucket: &str, region: &str) {
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

/// Creates an IAM user holding `policy`, and returns its keys.
pub async fn iam_user(iam: &aws_sdk_iam::Client, name: &str, policy: &str) -> Keys {
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

/// Stores `body` as `key`; returns its ETag.
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

/// The object's bytes, or None if it does not exist.
pub async fn bytes(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let out = s3.get_object().bucket(bucket).key(key).send().await.ok()?;
    Some(out.body.collect().await.expect("read the body").to_vec())
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
