//! Clockify lifecycle hooks: INSTALLED, STATUS_CHANGED, SETTINGS_UPDATED, DELETED
//! (PLATFORM.md §3). Each is verified with `X-Addon-Lifecycle-Token`, bound to the body's
//! workspace and add-on, and applied atomically to the stored installation.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::clockify::token::{Claims, Expiry};
use crate::error::ApiError;
use crate::http::{parse_json, read_body};
use crate::server::App;
use crate::store::{Installation, InstallationStatus, SettingValue, WebhookToken};

pub const LIFECYCLE_TOKEN_HEADER: &str = "x-addon-lifecycle-token";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InstalledPayload {
    addon_id: String,
    auth_token: String,
    workspace_id: String,
    api_url: String,
    as_user: Option<String>,
    addon_user_id: Option<String>,
    #[serde(default)]
    webhooks: Vec<InstalledWebhook>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InstalledWebhook {
    path: String,
    auth_token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusPayload {
    addon_id: String,
    workspace_id: String,
    status: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SettingsPayload {
    addon_id: String,
    workspace_id: String,
    settings: Vec<SettingEntry>,
}

#[derive(Deserialize)]
struct SettingEntry {
    id: String,
    value: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeletedPayload {
    addon_id: String,
    workspace_id: String,
}

/// A refusal decided while looking at the stored installation.
enum Refusal {
    Unknown(String),
    OtherInstallation(String),
    Deleted(String),
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Unknown(ws) => {
                ApiError::NotFound(format!("workspace {ws} has no installation of this add-on"))
            }
            Refusal::OtherInstallation(ws) => ApiError::Forbidden(format!(
                "the message is for another installation than the one stored for workspace {ws}"
            )),
            Refusal::Deleted(ws) => {
                ApiError::Forbidden(format!("the installation for workspace {ws} was deleted"))
            }
        }
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Verifies the lifecycle token, reads the body, and binds the claims to the body's ids.
async fn verified<T: serde::de::DeserializeOwned>(
    app: &App,
    kind: &'static str,
    headers: &HeaderMap,
    body: Body,
    ids: impl Fn(&T) -> (&str, &str),
) -> Result<(T, std::sync::Arc<Claims>), ApiError> {
    let bytes = read_body(headers, body, app.config.api_body_limit).await?;
    let token = headers
        .get(LIFECYCLE_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok());
    let claims = app
        .tokens
        .verify(token, Expiry::Optional, "lifecycle")
        .map_err(|e| {
            count(kind, "unauthorized");
            ApiError::Unauthorized(format!("X-Addon-Lifecycle-Token refused: {e}"))
        })?;
    let payload: T = parse_json(&bytes).inspect_err(|_| count(kind, "invalid"))?;
    let (workspace_id, addon_id) = ids(&payload);
    bind(&claims, workspace_id, addon_id).inspect_err(|_| count(kind, "forbidden"))?;
    Ok((payload, claims))
}

/// Claims that are present must name the body's workspace and installation.
fn bind(claims: &Claims, workspace_id: &str, addon_id: &str) -> Result<(), ApiError> {
    if claims
        .workspace_id
        .as_deref()
        .is_some_and(|w| w != workspace_id)
    {
        return Err(ApiError::Forbidden(
            "the token was issued for another workspace".into(),
        ));
    }
    if claims.addon_id.as_deref().is_some_and(|a| a != addon_id) {
        return Err(ApiError::Forbidden(
            "the token was issued for another installation".into(),
        ));
    }
    Ok(())
}

fn count(kind: &'static str, outcome: &'static str) {
    metrics::counter!("lifecycle_events_total", "type" => kind, "outcome" => outcome).increment(1);
}

/// Webhook paths arrive as a manifest path or a full URL; keep the path.
fn webhook_path(path_or_url: &str) -> String {
    let rest = path_or_url
        .strip_prefix("https://")
        .or_else(|| path_or_url.strip_prefix("http://"));
    let path = match rest {
        Some(rest) => rest.find('/').map(|i| &rest[i..]).unwrap_or("/"),
        None => path_or_url,
    };
    let path = path.split(['?', '#']).next().unwrap_or(path);
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

pub async fn installed(
    State(app): State<App>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    const KIND: &str = "INSTALLED";
    let (payload, _) = verified::<InstalledPayload>(&app, KIND, &headers, body, |p| {
        (&p.workspace_id, &p.addon_id)
    })
    .await?;
    // The installation token is itself a Clockify token: verify it and take its URL claims.
    let token_claims = app
        .tokens
        .verify(Some(&payload.auth_token), Expiry::Optional, "installation")
        .map_err(|e| {
            count(KIND, "invalid");
            ApiError::BadRequest(format!("authToken is not a valid installation token: {e}"))
        })?;
    bind(&token_claims, &payload.workspace_id, &payload.addon_id)
        .inspect_err(|_| count(KIND, "forbidden"))?;

    let secrets = app.store.secrets().clone();
    let now = now_ms();
    let workspace_id = payload.workspace_id.clone();
    let generation = app
        .store
        .update_installation(&workspace_id, move |current| {
            if let Some(current) = &current
                && current.status != InstallationStatus::Deleted
                && current.addon_id == payload.addon_id
                && current
                    .auth_token
                    .as_ref()
                    .and_then(|t| secrets.open_str(t).ok())
                    .is_some_and(|t| t == payload.auth_token)
            {
                // The same INSTALLED again: nothing changes.
                return Ok::<_, Refusal>((None, current.generation));
            }
            let generation = current.as_ref().map_or(1, |c| c.generation + 1);
            let installation = Installation {
                workspace_id: payload.workspace_id.clone(),
                addon_id: payload.addon_id.clone(),
                auth_token: Some(secrets.seal_str(&payload.auth_token)),
                api_url: payload.api_url.trim_end_matches('/').to_string(),
                backend_url: token_claims.backend_url.clone(),
                reports_url: token_claims.reports_url.clone(),
                locations_url: token_claims.locations_url.clone(),
                screenshots_url: token_claims.screenshots_url.clone(),
                pto_url: token_claims.pto_url.clone(),
                as_user: payload.as_user.clone(),
                addon_user_id: payload.addon_user_id.clone(),
                status: InstallationStatus::Active,
                settings: Default::default(),
                webhook_tokens: payload
                    .webhooks
                    .iter()
                    .map(|w| WebhookToken::new(webhook_path(&w.path), &w.auth_token, &secrets))
                    .collect(),
                installed_at: now,
                updated_at: now,
                deleted_at: None,
                generation,
            };
            Ok((Some(installation), generation))
        })
        .await?
        .map_err(ApiError::from)?;
    count(KIND, "ok");
    tracing::info!(workspace_id = %workspace_id, generation, "installed");
    crate::subscriptions::spawn_sync(&app, &workspace_id);
    if let Some(installation) = app.store.installation(&workspace_id).await?
        && installation
            .settings
            .flag("bootstrap_on_install")
            .unwrap_or(true)
        && let Err(err) = crate::bootstrap::start(&app, &installation, false).await
    {
        let request_id = crate::http::current_request_id();
        tracing::warn!(workspace_id = %workspace_id, error = %err, %request_id, "bootstrap did not start");
    }
    Ok(Json(
        json!({"status": "installed", "workspaceId": workspace_id, "generation": generation}),
    ))
}

/// Applies `change` to an existing, matching, not-deleted installation. `change` returns
/// whether it modified anything (unchanged installations are not rewritten).
async fn modify(
    app: &App,
    workspace_id: &str,
    addon_id: &str,
    change: impl FnOnce(&mut Installation) -> bool + Send + 'static,
) -> Result<Installation, ApiError> {
    let ws = workspace_id.to_string();
    let addon_id = addon_id.to_string();
    let now = now_ms();
    let result = app
        .store
        .update_installation(workspace_id, move |current| {
            let mut installation = current.ok_or_else(|| Refusal::Unknown(ws.clone()))?;
            if installation.addon_id != addon_id {
                return Err(Refusal::OtherInstallation(ws));
            }
            if installation.status == InstallationStatus::Deleted {
                return Err(Refusal::Deleted(ws));
            }
            if change(&mut installation) {
                installation.updated_at = now;
                Ok((Some(installation.clone()), installation))
            } else {
                Ok((None, installation))
            }
        })
        .await?;
    result.map_err(ApiError::from)
}

pub async fn status_changed(
    State(app): State<App>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    const KIND: &str = "STATUS_CHANGED";
    let (payload, _) = verified::<StatusPayload>(&app, KIND, &headers, body, |p| {
        (&p.workspace_id, &p.addon_id)
    })
    .await?;
    let status = match payload.status.as_str() {
        "ACTIVE" => InstallationStatus::Active,
        "INACTIVE" => InstallationStatus::Inactive,
        other => {
            count(KIND, "invalid");
            return Err(ApiError::BadRequest(format!(
                "status must be ACTIVE or INACTIVE, not {other:?}"
            )));
        }
    };
    let installation = modify(&app, &payload.workspace_id, &payload.addon_id, move |i| {
        let changed = i.status != status;
        i.status = status;
        changed
    })
    .await
    .inspect_err(|_| count(KIND, "refused"))?;
    count(KIND, "ok");
    tracing::info!(workspace_id = %installation.workspace_id, status = status.as_str(), "status changed");
    Ok(Json(
        json!({"status": installation.status.as_str(), "workspaceId": installation.workspace_id}),
    ))
}

pub async fn settings_updated(
    State(app): State<App>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    const KIND: &str = "SETTINGS_UPDATED";
    let (payload, _) = verified::<SettingsPayload>(&app, KIND, &headers, body, |p| {
        (&p.workspace_id, &p.addon_id)
    })
    .await?;
    let mut values = Vec::with_capacity(payload.settings.len());
    for entry in &payload.settings {
        let value = SettingValue::from_json(&entry.value).ok_or_else(|| {
            count(KIND, "invalid");
            ApiError::BadRequest(format!(
                "setting {:?} has a value of an unsupported type",
                entry.id
            ))
        })?;
        values.push((entry.id.clone(), value));
    }
    let installation = modify(&app, &payload.workspace_id, &payload.addon_id, move |i| {
        // Merge by id: whether Clockify sends every setting or only changed ones is not
        // documented, and a merge is right for both.
        let before = i.settings.clone();
        for (id, value) in values {
            match i.settings.values.iter_mut().find(|(k, _)| *k == id) {
                Some(slot) => slot.1 = value,
                None => i.settings.values.push((id, value)),
            }
        }
        i.settings != before
    })
    .await
    .inspect_err(|_| count(KIND, "refused"))?;
    count(KIND, "ok");
    tracing::info!(workspace_id = %installation.workspace_id, "settings updated");
    crate::subscriptions::spawn_sync(&app, &installation.workspace_id);
    Ok(Json(
        json!({"status": "settings-updated", "workspaceId": installation.workspace_id}),
    ))
}

pub async fn deleted(
    State(app): State<App>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    const KIND: &str = "DELETED";
    let (payload, _) = verified::<DeletedPayload>(&app, KIND, &headers, body, |p| {
        (&p.workspace_id, &p.addon_id)
    })
    .await?;
    let ws = payload.workspace_id.clone();
    let addon_id = payload.addon_id.clone();
    let now = now_ms();
    let before = app
        .store
        .update_installation(&payload.workspace_id, move |current| {
            let mut installation = current.ok_or_else(|| Refusal::Unknown(ws.clone()))?;
            if installation.addon_id != addon_id {
                return Err(Refusal::OtherInstallation(ws));
            }
            if installation.status == InstallationStatus::Deleted {
                return Ok((None, None)); // a repeated DELETED is harmless
            }
            let before = installation.clone();
            // Tokens die with the installation: erase them now, not at retention time.
            installation.status = InstallationStatus::Deleted;
            installation.auth_token = None;
            installation.webhook_tokens.clear();
            installation.deleted_at = Some(now);
            installation.updated_at = now;
            Ok((Some(installation), Some(before)))
        })
        .await?
        .map_err(ApiError::from)
        .inspect_err(|_| count(KIND, "refused"))?;
    count(KIND, "ok");
    // Best effort, with the token as it was (only in memory, only for this cleanup).
    if let Some(before) = before {
        crate::subscriptions::spawn_cleanup(&app, before);
    }
    tracing::info!(workspace_id = %payload.workspace_id, "deleted");
    Ok(Json(
        json!({"status": "deleted", "workspaceId": payload.workspace_id}),
    ))
}

#[cfg(test)]
mod tests {
    use super::webhook_path;

    #[test]
    fn webhook_paths_are_normalised() {
        assert_eq!(
            webhook_path("/webhooks/clockify/NEW_TAG"),
            "/webhooks/clockify/NEW_TAG"
        );
        assert_eq!(
            webhook_path("https://studio.example.com/webhooks/clockify/NEW_TAG?x=1"),
            "/webhooks/clockify/NEW_TAG"
        );
        assert_eq!(webhook_path("webhooks/x"), "/webhooks/x");
    }
}
