//! The S3 client's retry policy, against a scripted HTTP server on 127.0.0.1 that counts the
//! requests it gets: transient answers (503) are retried, auth and not-found answers are not.

// A failed unwrap is the test failure report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use backupstore::target::{self, ConnectOptions, Credentials, TargetError, TargetUrl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const EMPTY_LISTING: &str = r#"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>bkt</Name><Prefix>p/</Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><Delimiter>/</Delimiter><IsTruncated>false</IsTruncated></ListBucketResult>"#;

fn s3_error(code: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{code}</Message><Resource>/bkt</Resource></Error>"#
    )
}

/// Serve HTTP on a free port; request number `n` (from 0) gets `answer(n)` = (status, body).
async fn scripted_server(
    answer: impl Fn(usize) -> (u16, String) + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let (status, body) = answer(n);
                let response = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (endpoint, count)
}

async fn check(endpoint: &str) -> (TargetUrl, Result<(), TargetError>) {
    let url = TargetUrl::parse("s3://bkt@us-east-1/p/").unwrap();
    let credentials = Credentials::from_map([
        ("AWS_ACCESS_KEY_ID", "id"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
        ("AWS_ENDPOINTS", endpoint),
    ])
    .unwrap();
    let (store, root) = target::connect(&url, &credentials, &ConnectOptions::default())
        .await
        .unwrap();
    let result = target::check_access(&url, store.as_ref(), &root).await;
    (url, result)
}

#[tokio::test]
async fn transient_errors_are_retried_until_success() {
    let (endpoint, count) = scripted_server(|n| {
        if n < 2 {
            (503, s3_error("ServiceUnavailable"))
        } else {
            (200, EMPTY_LISTING.to_string())
        }
    })
    .await;
    let (_, result) = check(&endpoint).await;
    result.unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn persistent_transient_errors_give_up_after_the_retry_budget() {
    let (endpoint, count) = scripted_server(|_| (503, s3_error("ServiceUnavailable"))).await;
    let (url, result) = check(&endpoint).await;
    let err = result.unwrap_err();
    assert!(
        matches!(&err, TargetError::Store { target, .. } if target == url.as_str()),
        "{err:?}"
    );
    assert_eq!(count.load(Ordering::SeqCst), target::s3::MAX_RETRIES + 1);
}

#[tokio::test]
async fn auth_errors_fail_on_the_first_answer() {
    let (endpoint, count) = scripted_server(|_| (403, s3_error("SignatureDoesNotMatch"))).await;
    let (_, result) = check(&endpoint).await;
    let err = result.unwrap_err();
    assert!(matches!(err, TargetError::AccessDenied { .. }), "{err:?}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_missing_bucket_fails_on_the_first_answer() {
    let (endpoint, count) = scripted_server(|_| (404, s3_error("NoSuchBucket"))).await;
    let (_, result) = check(&endpoint).await;
    let err = result.unwrap_err();
    assert!(matches!(err, TargetError::BucketNotFound { .. }), "{err:?}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
}
