//! The S3 backend: any S3-compatible object store (AWS S3, MinIO, SeaweedFS, …) through the
//! `object_store` crate, configured by the standard AWS environment variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`). Conditional writes
//! map to `If-None-Match: *` and `If-Match: <etag>`, conditional reads to `If-None-Match: <etag>`.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, RetryConfig, UpdateVersion, WriteMultipart,
};
use tokio::io::AsyncReadExt;

use super::{
    check_key, ByteStream, Listed, Object, ObjectVersion, Result, Storage, StorageError, Write,
};

/// Files above this go up as a multipart upload, in parts of this size.
const PART_BYTES: usize = 16 << 20;

/// A bucket (and a prefix in it) on an S3-compatible store.
#[derive(Debug)]
pub struct S3 {
    store: AmazonS3,
    bucket: String,
    prefix: String,
}

impl S3 {
    /// `s3://BUCKET[/PREFIX]`, with endpoint and credentials from the environment.
    pub fn from_env(url: &str) -> anyhow::Result<S3> {
        S3::from_env_and(url, &[])
    }

    /// Like [`S3::from_env`], with `settings` (AWS variable names and values) over the environment.
    pub fn from_env_and(url: &str, settings: &[(String, String)]) -> anyhow::Result<S3> {
        let rest = url
            .strip_prefix("s3://")
            .expect("caller checked the scheme");
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            anyhow::bail!("{url}: name a bucket, as in s3://BUCKET/PREFIX");
        }
        let prefix = prefix.trim_matches('/').to_owned();
        if !prefix.is_empty() {
            check_key(&prefix)
                .map_err(|_| anyhow::anyhow!("{url}: the prefix is not a valid key"))?;
        }
        // Installing twice is refused; whichever call came first set ring, which is what we want.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::from_env();
        let mut allow_http = std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v == "true");
        let mut region_set = std::env::var_os("AWS_REGION").is_some()
            || std::env::var_os("AWS_DEFAULT_REGION").is_some();
        for (name, value) in settings {
            match name.as_str() {
                "AWS_ALLOW_HTTP" => allow_http = value == "true",
                other => {
                    region_set |= other == "AWS_REGION";
                    let key = other
                        .to_ascii_lowercase()
                        .parse()
                        .map_err(|e| anyhow::anyhow!("{other}: {e}"))?;
                    builder = builder.with_config(key, value);
                }
            }
        }
        let mut builder = builder
            .with_bucket_name(bucket)
            // Static stability: an unreachable store must fail a sync quickly (and the next one
            // retries), not hold a request for minutes.
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(50),
                    max_backoff: Duration::from_secs(1),
                    base: 2.0,
                },
                max_retries: 3,
                retry_timeout: Duration::from_secs(10),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(2))
                    // Whole requests, including a part of a multipart upload or a large download.
                    .with_timeout(Duration::from_secs(300))
                    .with_allow_http(allow_http),
            );
        if !region_set {
            builder = builder.with_region("us-east-1");
        }
        let store = builder
            .build()
            .map_err(|e| anyhow::anyhow!("configuring the S3 store {url}: {e}"))?;
        Ok(S3 {
            store,
            bucket: bucket.to_owned(),
            prefix,
        })
    }

    fn path(&self, key: &str) -> Result<ObjectPath> {
        check_key(key)?;
        let full = if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        };
        ObjectPath::parse(&full).map_err(|e| StorageError::Other(super::Failure::new(key, e)))
    }

    fn key_of(&self, path: &ObjectPath) -> String {
        let full = path.as_ref();
        match self.prefix.as_str() {
            "" => full.to_owned(),
            p => full
                .strip_prefix(p)
                .and_then(|k| k.strip_prefix('/'))
                .unwrap_or(full)
                .to_owned(),
        }
    }
}

/// Sorts `object_store`'s errors into ours: the kinds callers branch on, and "unavailable" for
/// anything that says the store could not be reached or failed on its side.
fn classify(key: &str, e: object_store::Error) -> StorageError {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => StorageError::NotFound(key.to_owned()),
        E::AlreadyExists { .. } => StorageError::AlreadyExists(key.to_owned()),
        E::Precondition { .. } => StorageError::Precondition(key.to_owned()),
        other => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&other);
            let mut unreachable = false;
            while let Some(err) = source {
                if err
                    .downcast_ref::<object_store::client::HttpError>()
                    .is_some()
                {
                    unreachable = true;
                }
                source = err.source();
            }
            let message = other.to_string();
            // 5xx, throttling (429) and request timeouts (408) pass: the same request may succeed later.
            let transient = ["status code: 5", "status code: 429", "status code: 408"]
                .iter()
                .any(|s| message.contains(s));
            let failure = super::Failure::new(key, other);
            if unreachable || transient {
                StorageError::Unavailable(failure)
            } else {
                StorageError::Other(failure)
            }
        }
    }
}

fn version_of(e_tag: Option<String>, key: &str) -> Result<ObjectVersion> {
    e_tag.map(ObjectVersion).ok_or_else(|| {
        StorageError::Other(super::Failure::new(
            key,
            "the store gave no ETag; conditional writes need one",
        ))
    })
}

#[async_trait::async_trait]
impl Storage for S3 {
    async fn get(&self, key: &str) -> Result<Object> {
        let result = self
            .store
            .get(&self.path(key)?)
            .await
            .map_err(|e| classify(key, e))?;
        let version = version_of(result.meta.e_tag.clone(), key)?;
        let bytes = result.bytes().await.map_err(|e| classify(key, e))?;
        Ok(Object { bytes, version })
    }

    async fn get_if_changed(&self, key: &str, version: &ObjectVersion) -> Result<Option<Object>> {
        let options = GetOptions::new().with_if_none_match(Some(version.0.clone()));
        match self.store.get_opts(&self.path(key)?, options).await {
            Ok(result) => {
                let version = version_of(result.meta.e_tag.clone(), key)?;
                let bytes = result.bytes().await.map_err(|e| classify(key, e))?;
                Ok(Some(Object { bytes, version }))
            }
            Err(object_store::Error::NotModified { .. }) => Ok(None),
            Err(e) => Err(classify(key, e)),
        }
    }

    async fn get_stream(&self, key: &str) -> Result<ByteStream> {
        let result = self
            .store
            .get(&self.path(key)?)
            .await
            .map_err(|e| classify(key, e))?;
        let key = key.to_owned();
        Ok(result
            .into_stream()
            .map_err(move |e| classify(&key, e))
            .boxed())
    }

    async fn put(&self, key: &str, bytes: Bytes, mode: Write) -> Result<ObjectVersion> {
        let mode = match mode {
            Write::Overwrite => PutMode::Overwrite,
            Write::Create => PutMode::Create,
            Write::Replace(v) => PutMode::Update(UpdateVersion {
                e_tag: Some(v.0),
                version: None,
            }),
        };
        let options = PutOptions {
            mode,
            ..Default::default()
        };
        let result = self
            .store
            .put_opts(&self.path(key)?, PutPayload::from_bytes(bytes), options)
            .await
            .map_err(|e| classify(key, e))?;
        version_of(result.e_tag, key)
    }

    async fn put_file(&self, key: &str, file: &Path) -> Result<()> {
        let disk = |e: std::io::Error| {
            StorageError::Disk(super::Failure::new(file.display().to_string(), e))
        };
        let mut source = tokio::fs::File::open(file).await.map_err(disk)?;
        let size = source.metadata().await.map_err(disk)?.len();
        let path = self.path(key)?;
        if size <= PART_BYTES as u64 {
            let mut bytes = Vec::with_capacity(size as usize);
            source.read_to_end(&mut bytes).await.map_err(disk)?;
            self.store
                .put(&path, PutPayload::from(bytes))
                .await
                .map_err(|e| classify(key, e))?;
            return Ok(());
        }
        // Streamed in parts: at most a few parts in memory at once, whatever the file's size.
        let upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| classify(key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buf = vec![0u8; 1 << 20];
        let copied: Result<()> = async {
            loop {
                writer
                    .wait_for_capacity(2)
                    .await
                    .map_err(|e| classify(key, e))?;
                let n = source.read(&mut buf).await.map_err(disk)?;
                if n == 0 {
                    return Ok(());
                }
                writer.write(&buf[..n]);
            }
        }
        .await;
        match copied {
            Ok(()) => writer
                .finish()
                .await
                .map(|_| ())
                .map_err(|e| classify(key, e)),
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        // object_store lists whole path segments; a prefix that ends inside a name is filtered here.
        let (folder, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let base = if folder.is_empty() {
            (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()))
        } else {
            Some(self.path(folder)?)
        };
        let mut found: Vec<Listed> = self
            .store
            .list(base.as_ref())
            .map_err(|e| classify(prefix, e))
            .try_filter_map(|meta| {
                let key = self.key_of(&meta.location);
                let listed = key.starts_with(prefix).then(|| Listed {
                    key,
                    size: meta.size,
                    modified: meta.last_modified.into(),
                });
                async move { Ok(listed) }
            })
            .try_collect()
            .await?;
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>> {
        let (folder, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let base = if folder.is_empty() {
            (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()))
        } else {
            Some(self.path(folder)?)
        };
        // `start-after` on S3: the listing begins there, and the stream is dropped once the page
        // is full, so no later page of the listing is asked for.
        let listing = match start_after {
            Some(after) if !after.is_empty() => {
                let offset = self.path(after.trim_end_matches('/'))?;
                self.store.list_with_offset(base.as_ref(), &offset)
            }
            _ => self.store.list(base.as_ref()),
        };
        let mut listing = listing.map_err(|e| classify(prefix, e));
        let mut found = Vec::new();
        while found.len() < limit {
            let Some(meta) = listing.try_next().await? else {
                break;
            };
            let key = self.key_of(&meta.location);
            if key.starts_with(prefix) && start_after.is_none_or(|a| key.as_str() > a) {
                found.push(Listed {
                    key,
                    size: meta.size,
                    modified: meta.last_modified.into(),
                });
            }
        }
        // Backends may answer out of order; a page is in key order.
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        match self.store.head(&self.path(key)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(classify(key, e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&self.path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(classify(key, e)),
        }
    }

    fn describe(&self) -> String {
        match self.prefix.as_str() {
            "" => format!("s3://{}", self.bucket),
            p => format!("s3://{}/{p}", self.bucket),
        }
    }
}
