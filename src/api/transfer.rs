//! `/api/config`: the workspace's configuration (flows, custom sources, destinations,
//! settings) as one
//! document, exported and imported by admins. The work is `crate::transfer`.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{Admin, JsonBody};
use crate::app::App;
use crate::audit::{self, Change};
use crate::transfer::{self, ConfigDocument, ImportReport};

fn document_json(document: &ConfigDocument) -> Json<Value> {
    Json(serde_json::to_value(document).expect("documents serialize"))
}

/// The configuration document without secrets: `{format, version, settings, sources, flows,
/// destinations}` (destinations' header values masked).
#[utoipa::path(get, path = "/api/config/export", tag = "workspace",
    responses((status = 200, description = "The configuration document", body = Object),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn export(State(app): State<App>, Admin(user): Admin) -> Result<Json<Value>, ApiError> {
    let document = transfer::export(&app, &user.workspace_id, None).await?;
    Ok(document_json(&document))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportBody {
    /// At least 12 characters; the sources' and destinations' secrets and the destinations'
    /// header values are encrypted with a key derived from it (Argon2id, XChaCha20-Poly1305)
    /// and travel in the document's `secrets`.
    passphrase: String,
}

/// The configuration document with the current secrets (sources, destinations and their
/// header values), encrypted with a passphrase.
#[utoipa::path(post, path = "/api/config/export", tag = "workspace", request_body = ExportBody,
    responses((status = 200, description = "The configuration document with `secrets`", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub async fn export_with_secrets(
    State(app): State<App>,
    Admin(user): Admin,
    JsonBody(body): JsonBody<ExportBody>,
) -> Result<Json<Value>, ApiError> {
    let document = transfer::export(&app, &user.workspace_id, Some(&body.passphrase)).await?;
    audit::by_user(
        &app,
        &user,
        Change {
            action: "config.export-secrets",
            target: None,
            before: None,
            after: None,
        },
    )
    .await;
    Ok(document_json(&document))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportBody {
    /// A document from an export.
    #[schema(value_type = Object)]
    document: Value,
    /// The export's passphrase, when the document carries `secrets`.
    #[serde(default)]
    passphrase: Option<String>,
    /// Only check the document and say what would change.
    #[serde(default)]
    dry_run: bool,
}

/// A source id that was taken by another workspace, and the one it was given here.
#[derive(Serialize, ToSchema)]
pub struct Remapped {
    from: String,
    to: String,
}

/// A source created without a secret in the document, and the secret it was given (shown
/// this once).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewSecret {
    source_id: String,
    secret: String,
}

/// A destination created without a secret in the document, and the secret it was given
/// (shown this once; its receiver must be told).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewDestinationSecret {
    destination_id: String,
    secret: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportResult {
    dry_run: bool,
    flows_created: Vec<String>,
    flows_replaced: Vec<String>,
    sources_created: Vec<String>,
    sources_updated: Vec<String>,
    sources_remapped: Vec<Remapped>,
    new_secrets: Vec<NewSecret>,
    destinations_created: Vec<String>,
    destinations_replaced: Vec<String>,
    new_destination_secrets: Vec<NewDestinationSecret>,
    /// Settings changed through Clockify's settings API.
    settings_changed: Vec<String>,
}

impl From<ImportReport> for ImportResult {
    fn from(report: ImportReport) -> Self {
        ImportResult {
            dry_run: report.dry_run,
            flows_created: report.flows_created,
            flows_replaced: report.flows_replaced,
            sources_created: report.sources_created,
            sources_updated: report.sources_updated,
            sources_remapped: report
                .sources_remapped
                .into_iter()
                .map(|(from, to)| Remapped { from, to })
                .collect(),
            new_secrets: report
                .new_secrets
                .into_iter()
                .map(|(source_id, secret)| NewSecret { source_id, secret })
                .collect(),
            destinations_created: report.destinations_created,
            destinations_replaced: report.destinations_replaced,
            new_destination_secrets: report
                .new_destination_secrets
                .into_iter()
                .map(|(destination_id, secret)| NewDestinationSecret {
                    destination_id,
                    secret,
                })
                .collect(),
            settings_changed: report.settings_changed,
        }
    }
}

/// Checks the whole document (every problem listed, nothing changed when there is one),
/// then applies it: settings through Clockify, then every flow, source and destination in
/// one transaction. Those not in the document are left as they are. Version 1 documents
/// (without destinations) are read too.
#[utoipa::path(post, path = "/api/config/import", tag = "workspace", request_body = ImportBody,
    responses((status = 200, body = ImportResult), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 503, description = "Clockify refused the settings; nothing was changed", body = ErrorBody)))]
pub async fn import(
    State(app): State<App>,
    Admin(user): Admin,
    JsonBody(body): JsonBody<ImportBody>,
) -> Result<Json<ImportResult>, ApiError> {
    let document = transfer::parse_document(&body.document)?;
    let report = transfer::import(
        &app,
        &user.workspace_id,
        &document,
        body.passphrase.as_deref(),
        body.dry_run,
        Some(&user),
    )
    .await?;
    if !report.dry_run {
        audit::by_user(
            &app,
            &user,
            Change {
                action: "config.import",
                target: None,
                before: None,
                after: Some(transfer::audit_summary(&report)),
            },
        )
        .await;
    }
    Ok(Json(ImportResult::from(report)))
}
