//! Operations endpoints: liveness, readiness (the store can read and write), Prometheus
//! metrics, and the manifest Clockify installs the add-on from.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use crate::app::App;
use crate::telemetry::{VERSION, current_request_id};

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `failing` when the data file is unusable and cannot recover by itself
    /// (damaged, or it cannot be reopened): restart or restore.
    status: &'static str,
    version: &'static str,
    /// Why it is failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    /// `ready` or `unavailable`.
    status: &'static str,
    /// Why the store is not usable (when unavailable).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
}

/// Liveness: the process answers and its data file is usable or will be again by itself
/// (a full disk is not a liveness failure: the server recovers when space returns). Also at
/// `/health`.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(app): State<App>) -> Response {
    match app.store.status().alive {
        Ok(()) => Json(Health {
            status: "ok",
            version: VERSION,
            error: None,
        })
        .into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "failing",
                version: VERSION,
                error: Some(reason),
            }),
        )
            .into_response(),
    }
}

/// Readiness: the data file is usable (not full, damaged or being reopened), a read and a
/// durable write succeed and the file is in place (also at `/ready`).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn ready(State(app): State<App>) -> Response {
    match app.store.probe().await {
        Ok(()) => Json(Readiness {
            status: "ready",
            error: None,
            request_id: None,
        })
        .into_response(),
        Err(reason) => {
            let request_id = current_request_id();
            tracing::warn!(%reason, %request_id, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Readiness {
                    status: "unavailable",
                    error: Some(reason),
                    request_id: Some(request_id),
                }),
            )
                .into_response()
        }
    }
}

/// Prometheus metrics (text format); with `--metrics-token`, only with
/// `Authorization: Bearer <token>`.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, body = ErrorBody)))]
pub async fn metrics(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(expected) = &app.config.metrics_token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(ApiError::Unauthorized(
                "metrics need Authorization: Bearer <metrics token>".into(),
            ));
        }
    }
    metrics::gauge!("data_file_size_bytes").set(app.store.file_size() as f64);
    metrics::gauge!("uptime_seconds").set(app.started.elapsed().as_secs_f64());
    crate::overview::record_scrape_gauges(&app).await;
    app.metrics.run_upkeep();
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response())
}

/// The add-on manifest, with the configured base URL and key (also at `/manifest.json`).
#[utoipa::path(get, path = "/manifest", tag = "operations",
    responses((status = 200, description = "The manifest (schema 1.3)", content_type = "application/json")))]
pub async fn manifest(State(app): State<App>) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        app.manifest.clone(),
    )
}
