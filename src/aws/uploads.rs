//! A side's incomplete multipart uploads, as ListMultipartUploads pages them.

use super::S3Side;
use crate::error::S3Error;

impl S3Side {
    /// Every incomplete multipart upload under `prefix`, all pages.
    pub async fn uploads(
        &self,
        prefix: &str,
    ) -> Result<Vec<aws_sdk_s3::types::MultipartUpload>, S3Error> {
        self.uploads_until(prefix, false).await
    }

    /// The incomplete multipart uploads of exactly `key`. S3 lists by prefix, in key
    /// order, and a key sorts before every longer key it begins: the listing stops
    /// at the first page that reaches another key, however many uploads lie under
    /// `key` as a prefix.
    pub async fn uploads_of(
        &self,
        key: &str,
    ) -> Result<Vec<aws_sdk_s3::types::MultipartUpload>, S3Error> {
        let mut found = self.uploads_until(key, true).await?;
        found.retain(|upload| upload.key() == Some(key));
        Ok(found)
    }

    /// Uploads under `prefix`, all pages, or, with `exact`, until a page lists a
    /// key other than `prefix`.
    async fn uploads_until(
        &self,
        prefix: &str,
        exact: bool,
    ) -> Result<Vec<aws_sdk_s3::types::MultipartUpload>, S3Error> {
        let mut found = Vec::new();
        let (mut key_marker, mut upload_id_marker) = (None, None);
        loop {
            let request = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(upload_id_marker.take());
            let page = self.observe("ListMultipartUploads", request.send().await)?;
            found.extend(page.uploads().iter().cloned());
            key_marker = page.next_key_marker().map(str::to_owned);
            upload_id_marker = page.next_upload_id_marker().map(str::to_owned);
            let past = exact && page.uploads().iter().any(|u| u.key() != Some(prefix));
            if past || page.is_truncated() != Some(true) || key_marker.is_none() {
                return Ok(found);
            }
        }
    }
}
