//! `/api/sources`: the workspace's custom sources (list for every user; create, rotate and
//! delete for admins). A secret appears only in the answer that creates it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{Admin, JsonBody};
use super::types::Deleted;
use crate::app::App;
use crate::audit;
use crate::auth::User;
use crate::sources;
use crate::store::Source;
use crate::time::rfc3339;

/// A custom source as the API shows it (never its secret, except once: see `secret`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceView {
    id: String,
    name: String,
    /// Where the source posts its events.
    ingest_url: String,
    created_at: String,
    rotated_at: Option<String>,
    /// Until when the secret replaced by the last rotation still works.
    previous_secret_valid_until: Option<String>,
    /// The secret (`whsec_…`): only in the answers to create and rotate.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

/// What the audit log keeps of a source (never a secret).
fn audited(source: &Source) -> serde_json::Value {
    serde_json::json!({"id": source.id, "name": source.name})
}

async fn record(
    app: &App,
    user: &User,
    action: &str,
    before: Option<&Source>,
    after: Option<&Source>,
) {
    let target = |s: &Source| s.id.clone();
    audit::thing_changed(app, user, action, (before, after), target, audited).await;
}

impl SourceView {
    fn new(app: &App, source: &Source, secret: Option<String>) -> SourceView {
        SourceView {
            id: source.id.clone(),
            name: source.name.clone(),
            ingest_url: sources::ingest_url(app, &source.id),
            created_at: rfc3339(source.created_at),
            rotated_at: source.rotated_at.map(rfc3339),
            previous_secret_valid_until: sources::previous_secret_valid_until(source).map(rfc3339),
            secret,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SourceList {
    sources: Vec<SourceView>,
}

#[derive(Deserialize, ToSchema)]
pub struct CreateSource {
    /// 1 to 100 characters.
    name: String,
}

#[utoipa::path(get, path = "/api/sources", tag = "sources",
    responses((status = 200, body = SourceList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(State(app): State<App>, user: User) -> Result<Json<SourceList>, ApiError> {
    let sources = app.store.sources(&user.workspace_id).await?;
    Ok(Json(SourceList {
        sources: sources
            .iter()
            .map(|s| SourceView::new(&app, s, None))
            .collect(),
    }))
}

#[utoipa::path(post, path = "/api/sources", tag = "sources", request_body = CreateSource,
    responses((status = 201, description = "Created; the only answer that shows the secret", body = SourceView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub async fn create(
    State(app): State<App>,
    Admin(user): Admin,
    JsonBody(request): JsonBody<CreateSource>,
) -> Result<(StatusCode, Json<SourceView>), ApiError> {
    let (source, secret) = sources::create(&app, &user.workspace_id, &request.name).await?;
    record(&app, &user, "source.create", None, Some(&source)).await;
    Ok((
        StatusCode::CREATED,
        Json(SourceView::new(&app, &source, Some(secret))),
    ))
}

#[utoipa::path(delete, path = "/api/sources/{id}", tag = "sources",
    params(("id" = String, Path)),
    responses((status = 200, body = Deleted), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let before = app
        .store
        .source(&id)
        .await?
        .filter(|s| s.workspace_id == user.workspace_id);
    sources::delete(&app, &user.workspace_id, &id).await?;
    record(&app, &user, "source.delete", before.as_ref(), None).await;
    Ok(Json(Deleted::new(id)))
}

/// A new secret; the one it replaces keeps working for 24 hours.
#[utoipa::path(post, path = "/api/sources/{id}/rotate", tag = "sources",
    params(("id" = String, Path)),
    responses((status = 200, description = "Rotated; the only answer that shows the new secret", body = SourceView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn rotate(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
) -> Result<Json<SourceView>, ApiError> {
    let (source, secret) = sources::rotate(&app, &user.workspace_id, &id).await?;
    record(&app, &user, "source.rotate", Some(&source), Some(&source)).await;
    Ok(Json(SourceView::new(&app, &source, Some(secret))))
}
