//! `/metrics`, `/healthz` and `/readyz` over HTTP (axum).

use std::net::SocketAddr;

use axum::{
    Router, extract::State, http::StatusCode, http::header, response::IntoResponse, routing::get,
};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::readiness::Readiness;

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    readiness: Readiness,
}

pub fn router(metrics: Metrics, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz_handler))
        .with_state(AppState { metrics, readiness })
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        state.metrics.render(),
    )
}

async fn readyz_handler(State(state): State<AppState>) -> impl IntoResponse {
    let waiting = state.readiness.waiting();
    if waiting.is_empty() {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        let mut body = String::from("not ready, waiting for:\n");
        for item in waiting {
            body.push_str("- ");
            body.push_str(&item);
            body.push('\n');
        }
        (StatusCode::SERVICE_UNAVAILABLE, body)
    }
}

/// Serve until `shutdown` fires. Binding errors are returned at once (a port in use is a
/// configuration problem the user must see at start).
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot serve metrics and health on {addr} (--http-addr / BULWARK_HTTP_ADDR): {e}"
        )
    })?;
    let app = router(metrics, readiness);
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "HTTP server failed");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(app: Router, path: &str) -> (StatusCode, String, Option<String>) {
        let request = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .expect("request");
        let response = app.oneshot(request).await.expect("router answers");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (
            status,
            String::from_utf8_lossy(&body).into_owned(),
            content_type,
        )
    }

    #[tokio::test]
    async fn readyz_lists_what_it_waits_for_until_nothing_is_left() {
        let readiness = Readiness::default();
        let metrics = Metrics::new().expect("metrics");
        readiness.wait_for(
            "crd volumes.bulwark.io",
            "not installed: run with --install-crds",
        );
        readiness.wait_for("cache volumes", "not primed yet");
        let app = router(metrics, readiness.clone());
        let (status, body, _) = get(app.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.contains("crd volumes.bulwark.io: not installed: run with --install-crds"),
            "{body}"
        );
        assert!(body.contains("cache volumes: not primed yet"), "{body}");
        readiness.done("crd volumes.bulwark.io");
        let (_, body, _) = get(app.clone(), "/readyz").await;
        assert!(
            !body.contains("crd volumes") && body.contains("cache volumes"),
            "{body}"
        );
        readiness.done("cache volumes");
        assert_eq!(get(app.clone(), "/readyz").await.0, StatusCode::OK);
        assert_eq!(get(app, "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text_with_the_bulwark_prefix() {
        let metrics = Metrics::new().expect("metrics");
        metrics.reconciled("backuptarget", 0.02, Ok(()));
        metrics.reconciled(
            "backuptarget",
            0.5,
            Err(crate::metrics::ErrorCategory::Store),
        );
        let (status, body, content_type) =
            get(router(metrics, Readiness::default()), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type.as_deref(), Some(prometheus::TEXT_FORMAT));
        assert!(
            body.contains(
                "bulwark_reconcile_total{controller=\"backuptarget\",result=\"success\"} 1"
            ),
            "{body}"
        );
        assert!(
            body.contains(
                "bulwark_reconcile_errors_total{category=\"store\",controller=\"backuptarget\"} 1"
            ),
            "{body}"
        );
        assert!(
            body.contains(
                "bulwark_reconcile_duration_seconds_count{controller=\"backuptarget\"} 2"
            ),
            "{body}"
        );
        assert!(body.contains("bulwark_build_info{version="), "{body}");
        assert!(
            body.lines()
                .filter(|l| !l.starts_with('#'))
                .all(|l| l.starts_with("bulwark_")),
            "{body}"
        );
    }
}
