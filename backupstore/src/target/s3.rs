//! S3 targets: one `AmazonS3` client per target, configured from the credential keys.
//!
//! Retries: `object_store` retries connection errors, timeouts of idempotent requests, 5xx,
//! 429 and 408 with exponential backoff, and never retries other 4xx answers. So a wrong key
//! (403) or a missing bucket (404) fails on the first answer, and a flaky server is ridden out
//! for up to [`RETRY_TIMEOUT`].

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::{BackoffConfig, Certificate, ClientOptions, ObjectStore, RetryConfig};

use super::TargetError;
use super::credentials::{AWS_CERT, Credentials};

/// Attempts after the first one for a transient failure.
pub const MAX_RETRIES: usize = 6;
/// No retry starts later than this after the first attempt.
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(90);
/// Region used when the URL names none (`s3://bucket/path/`); S3-compatible servers ignore it.
pub const DEFAULT_REGION: &str = "us-east-1";

/// The retry policy of S3 clients (exposed so tests can check it is the one applied).
pub fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            base: 2.0,
        },
        max_retries: MAX_RETRIES,
        retry_timeout: RETRY_TIMEOUT,
    }
}

/// Install rustls' ring provider as the process default, once. reqwest is built without a
/// provider (kube already brings ring; a second one, aws-lc, would make rustls refuse to pick).
pub fn install_crypto_provider() {
    // An error only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Build the client for `bucket`. Path-style addressing is used with a custom endpoint unless
/// `VIRTUAL_HOSTED_STYLE=true`; on AWS itself (no endpoint) virtual-hosted style is the default.
pub fn build(
    bucket: &str,
    region: Option<&str>,
    credentials: &Credentials,
) -> Result<Arc<dyn ObjectStore>, TargetError> {
    install_crypto_provider();
    credentials.require_for("s3")?;
    let endpoint = credentials.endpoint.as_deref();
    let plain_http = endpoint.is_some_and(|e| e.starts_with("http://"));

    let mut options = ClientOptions::new()
        .with_allow_http(plain_http)
        .with_connect_timeout(Duration::from_secs(10))
        // A 16 MiB block over a slow link can take a while; the retry layer covers stalls.
        .with_timeout(Duration::from_secs(300));
    if let Some(bundle) = &credentials.ca_bundle {
        let certificates = Certificate::from_pem_bundle(bundle.as_bytes()).map_err(|source| {
            TargetError::InvalidCredential {
                key: AWS_CERT,
                reason: source.to_string(),
            }
        })?;
        for certificate in certificates {
            options = options.with_root_certificate(certificate);
        }
    }
    let proxy = if plain_http {
        credentials.http_proxy.as_ref()
    } else {
        credentials.https_proxy.as_ref()
    };
    if let Some(proxy) = proxy {
        options = options.with_proxy_url(proxy);
        if let Some(no_proxy) = &credentials.no_proxy {
            options = options.with_proxy_excludes(no_proxy);
        }
    }

    let virtual_hosted = credentials
        .virtual_hosted_style
        .unwrap_or(endpoint.is_none());
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(region.unwrap_or(DEFAULT_REGION))
        .with_virtual_hosted_style_request(virtual_hosted)
        .with_allow_http(plain_http)
        .with_retry(retry_config())
        .with_client_options(options);
    if let Some(id) = &credentials.access_key_id {
        builder = builder.with_access_key_id(id);
    }
    if let Some(secret) = &credentials.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    if let Some(endpoint) = endpoint {
        // With virtual-hosted style, object_store expects the endpoint to include the bucket.
        let endpoint = if virtual_hosted {
            with_bucket_host(endpoint, bucket)
        } else {
            endpoint.to_string()
        };
        builder = builder.with_endpoint(endpoint);
    }
    let store = builder.build().map_err(|source| TargetError::Client {
        reason: source.to_string(),
    })?;
    Ok(Arc::new(store))
}

/// `https://minio.example:9000` → `https://bucket.minio.example:9000`.
fn with_bucket_host(endpoint: &str, bucket: &str) -> String {
    match endpoint.split_once("://") {
        Some((scheme, rest)) if !rest.starts_with(&format!("{bucket}.")) => {
            format!("{scheme}://{bucket}.{rest}")
        }
        _ => endpoint.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests {
    use super::*;

    #[test]
    fn virtual_hosted_endpoints_carry_the_bucket() {
        assert_eq!(
            with_bucket_host("https://minio.example:9000", "bk"),
            "https://bk.minio.example:9000"
        );
        assert_eq!(
            with_bucket_host("https://bk.minio.example", "bk"),
            "https://bk.minio.example"
        );
    }

    #[test]
    fn s3_clients_need_both_keys() {
        let err = build("bucket", None, &Credentials::default()).unwrap_err();
        assert!(err.to_string().contains("AWS_ACCESS_KEY_ID"), "{err}");
    }

    #[test]
    fn a_bad_ca_bundle_names_aws_cert() {
        let creds = Credentials::from_map([
            ("AWS_ACCESS_KEY_ID", "a"),
            ("AWS_SECRET_ACCESS_KEY", "b"),
            ("AWS_ENDPOINTS", "https://s3.local"),
            (
                "AWS_CERT",
                "-----BEGIN CERTIFICATE-----\n!!!notbase64!!!\n-----END CERTIFICATE-----\n",
            ),
        ])
        .unwrap();
        let err = build("bucket", None, &creds).unwrap_err();
        assert!(err.to_string().contains("AWS_CERT"), "{err}");
    }
}
