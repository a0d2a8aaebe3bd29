//! Operations endpoints: liveness, readiness (the store can read and write) and metrics.

use std::sync::OnceLock;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::server::App;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How often recorded histogram samples are folded into their buckets (the exporter's own
/// default).
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The process-wide Prometheus recorder (metrics macros are global, so there is one).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ])
                .expect("static buckets are valid");
            let handle = builder.install_recorder().unwrap_or_else(|_| {
                // Another recorder was installed first (only possible when embedded); keep a
                // private one so /metrics still answers.
                PrometheusBuilder::new().build_recorder().handle()
            });
            metrics::gauge!("build_info", "version" => VERSION).set(1.0);
            handle
        })
        .clone()
}

/// Folds histogram samples into their buckets every [`METRICS_UPKEEP_INTERVAL`] until
/// shutdown. The recorder keeps each sample until then; with upkeep left to `/metrics`
/// scrapes, a server nobody scrapes would hold one per request and commit for ever.
pub async fn run_metrics_upkeep(app: App) {
    let mut shutdown = app.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(METRICS_UPKEEP_INTERVAL) => app.metrics.run_upkeep(),
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "version": VERSION}))
}

pub async fn ready(State(app): State<App>) -> Response {
    match app.store.probe().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(reason) => {
            let request_id = crate::http::current_request_id();
            tracing::warn!(%reason, %request_id, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "error": reason, "requestId": request_id})),
            )
                .into_response()
        }
    }
}

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
