//! `/healthz`, `/readyz` and `/metrics`, served with axum on `server.listen`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::health::{Health, Readiness};
use crate::metrics;

/// Serves until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(health);
    axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

/// Answering at all is the proof: the server stops when the daemon's loop ends.
async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, Json(json!({"alive": true})))
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    let readiness = health.readiness();
    let status = if readiness == Readiness::Ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let reason = match &readiness {
        Readiness::Starting => Some("starting".to_owned()),
        Readiness::Ready => None,
        Readiness::Paused(cause) => Some(format!("paused: {cause}")),
        Readiness::ShuttingDown => Some("shutting down".to_owned()),
    };
    (
        status,
        Json(json!({"ready": readiness == Readiness::Ready, "reason": reason})),
    )
}

async fn render_metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(),
    )
}
