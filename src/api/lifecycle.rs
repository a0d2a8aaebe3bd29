//! Clockify's lifecycle hooks (`/lifecycle/*`). The handlers take the token and the body;
//! verification and the change to the installation are `crate::lifecycle`.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::ApiBytes;
use crate::app::App;
use crate::lifecycle::{self, LIFECYCLE_TOKEN_HEADER};

/// The answer to a lifecycle message.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleDone {
    /// `installed`, `deleted`, `settings-updated`, or the new status (`ACTIVE`/`INACTIVE`).
    status: String,
    workspace_id: String,
    /// The installation's generation (INSTALLED only): a reinstall makes a new one.
    #[serde(skip_serializing_if = "Option::is_none")]
    generation: Option<u64>,
}

fn token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(LIFECYCLE_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
}

fn done(status: impl Into<String>, workspace_id: String) -> Json<LifecycleDone> {
    Json(LifecycleDone {
        status: status.into(),
        workspace_id,
        generation: None,
    })
}

#[utoipa::path(post, path = "/lifecycle/installed", tag = "lifecycle",
    request_body(content = serde_json::Value, description = "Clockify's INSTALLED payload"),
    responses((status = 200, body = LifecycleDone), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn installed(
    State(app): State<App>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Json<LifecycleDone>, ApiError> {
    let installed = lifecycle::installed(&app, token(&headers), &body).await?;
    Ok(Json(LifecycleDone {
        status: "installed".into(),
        workspace_id: installed.workspace_id,
        generation: Some(installed.generation),
    }))
}

#[utoipa::path(post, path = "/lifecycle/status-changed", tag = "lifecycle",
    request_body(content = serde_json::Value, description = "Clockify's STATUS_CHANGED payload"),
    responses((status = 200, body = LifecycleDone), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub async fn status_changed(
    State(app): State<App>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Json<LifecycleDone>, ApiError> {
    let installation = lifecycle::status_changed(&app, token(&headers), &body).await?;
    Ok(done(
        installation.status.as_str(),
        installation.workspace_id,
    ))
}

#[utoipa::path(post, path = "/lifecycle/settings-updated", tag = "lifecycle",
    request_body(content = serde_json::Value, description = "Clockify's SETTINGS_UPDATED payload"),
    responses((status = 200, body = LifecycleDone), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub async fn settings_updated(
    State(app): State<App>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Json<LifecycleDone>, ApiError> {
    let installation = lifecycle::settings_updated(&app, token(&headers), &body).await?;
    Ok(done("settings-updated", installation.workspace_id))
}

/// DELETED (also served at `/lifecycle/uninstalled`).
#[utoipa::path(post, path = "/lifecycle/deleted", tag = "lifecycle",
    request_body(content = serde_json::Value, description = "Clockify's DELETED payload"),
    responses((status = 200, body = LifecycleDone), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub async fn deleted(
    State(app): State<App>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Json<LifecycleDone>, ApiError> {
    let workspace_id = lifecycle::deleted(&app, token(&headers), &body).await?;
    Ok(done("deleted", workspace_id))
}
