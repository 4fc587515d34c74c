//! Unauthenticated operations routes for orchestrators.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;

/// 200 while the process runs.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// 200 when a config is loaded and the service is not draining.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if state.is_draining() {
        return Err(ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "the service is shutting down",
            )
        });
    }
    let templates = state.service.config().templates.len();
    Ok(Json(json!({"status": "ready", "templates": templates})))
}

/// Prometheus text exposition.
pub async fn metrics() -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::telemetry::metrics_handle().render(),
    )
}
