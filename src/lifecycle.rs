//! Clockify lifecycle messages: INSTALLED, STATUS_CHANGED, SETTINGS_UPDATED, DELETED
//! (PLATFORM.md §3). Each is verified with its `X-Addon-Lifecycle-Token`, bound to the body's
//! workspace and add-on, and applied atomically to the stored installation.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::app::App;
use crate::clockify::token::{Claims, Expiry, TokenError};
use crate::store::{Installation, InstallationStatus, SettingValue, StoreError, WebhookToken};
use crate::telemetry::current_request_id;
use crate::time::now_ms;

/// The header lifecycle messages carry their token in.
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

/// Why a lifecycle message was refused. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("X-Addon-Lifecycle-Token refused: {0}")]
    Token(TokenError),
    /// The body (or a value in it) is not what the message must carry.
    #[error("{0}")]
    Invalid(String),
    /// The token or the body names another workspace or installation.
    #[error("{0}")]
    Forbidden(String),
    #[error("workspace {0} has no installation of this add-on")]
    Unknown(String),
    #[error("the message is for another installation than the one stored for workspace {0}")]
    OtherInstallation(String),
    #[error("the installation for workspace {0} was deleted")]
    Deleted(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What INSTALLED did.
pub struct Installed {
    pub workspace_id: String,
    pub generation: u64,
}

/// Verifies the lifecycle token, parses the body, and binds the claims to the body's ids.
fn verified<T: serde::de::DeserializeOwned>(
    app: &App,
    kind: &'static str,
    token: Option<&str>,
    body: &[u8],
    ids: impl Fn(&T) -> (&str, &str),
) -> Result<(T, Arc<Claims>), LifecycleError> {
    let claims = app
        .tokens
        .verify(token, Expiry::Optional, "lifecycle")
        .map_err(|e| {
            count(kind, "unauthorized");
            LifecycleError::Token(e)
        })?;
    let payload: T = serde_json::from_slice(body).map_err(|e| {
        count(kind, "invalid");
        LifecycleError::Invalid(format!("invalid JSON body: {e}"))
    })?;
    let (workspace_id, addon_id) = ids(&payload);
    bind(&claims, workspace_id, addon_id).inspect_err(|_| count(kind, "forbidden"))?;
    Ok((payload, claims))
}

/// Claims that are present must name the body's workspace and installation.
fn bind(claims: &Claims, workspace_id: &str, addon_id: &str) -> Result<(), LifecycleError> {
    if claims
        .workspace_id
        .as_deref()
        .is_some_and(|w| w != workspace_id)
    {
        return Err(LifecycleError::Forbidden(
            "the token was issued for another workspace".into(),
        ));
    }
    if claims.addon_id.as_deref().is_some_and(|a| a != addon_id) {
        return Err(LifecycleError::Forbidden(
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

/// INSTALLED: stores the installation (a new generation unless it is a repeat of the
/// current one), then starts the subscription sync and, unless turned off, the bootstrap.
pub async fn installed(
    app: &App,
    token: Option<&str>,
    body: &[u8],
) -> Result<Installed, LifecycleError> {
    const KIND: &str = "INSTALLED";
    let (payload, _) =
        verified::<InstalledPayload>(app, KIND, token, body, |p| (&p.workspace_id, &p.addon_id))?;
    // The installation token is itself a Clockify token: verify it and take its URL claims.
    let token_claims = app
        .tokens
        .verify(Some(&payload.auth_token), Expiry::Optional, "installation")
        .map_err(|e| {
            count(KIND, "invalid");
            LifecycleError::Invalid(format!("authToken is not a valid installation token: {e}"))
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
                return Ok::<_, LifecycleError>((None, current.generation));
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
        .await??;
    count(KIND, "ok");
    tracing::info!(workspace_id = %workspace_id, generation, "installed");
    crate::subscriptions::spawn_sync(app, &workspace_id);
    if let Some(installation) = app.store.installation(&workspace_id).await?
        && installation
            .settings
            .flag("bootstrap_on_install")
            .unwrap_or(true)
        && let Err(err) = crate::bootstrap::start(app, &installation, false).await
    {
        let request_id = current_request_id();
        tracing::warn!(workspace_id = %workspace_id, error = %err, %request_id, "bootstrap did not start");
    }
    Ok(Installed {
        workspace_id,
        generation,
    })
}

/// Applies `change` to an existing, matching, not-deleted installation. `change` returns
/// whether it modified anything (unchanged installations are not rewritten).
async fn modify(
    app: &App,
    workspace_id: &str,
    addon_id: &str,
    change: impl FnOnce(&mut Installation) -> bool + Send + 'static,
) -> Result<Installation, LifecycleError> {
    let ws = workspace_id.to_string();
    let addon_id = addon_id.to_string();
    let now = now_ms();
    app.store
        .update_installation(workspace_id, move |current| {
            let mut installation = current.ok_or_else(|| LifecycleError::Unknown(ws.clone()))?;
            if installation.addon_id != addon_id {
                return Err(LifecycleError::OtherInstallation(ws));
            }
            if installation.status == InstallationStatus::Deleted {
                return Err(LifecycleError::Deleted(ws));
            }
            if change(&mut installation) {
                installation.updated_at = now;
                Ok((Some(installation.clone()), installation))
            } else {
                Ok((None, installation))
            }
        })
        .await?
}

/// STATUS_CHANGED: ACTIVE or INACTIVE.
pub async fn status_changed(
    app: &App,
    token: Option<&str>,
    body: &[u8],
) -> Result<Installation, LifecycleError> {
    const KIND: &str = "STATUS_CHANGED";
    let (payload, _) =
        verified::<StatusPayload>(app, KIND, token, body, |p| (&p.workspace_id, &p.addon_id))?;
    let status = match payload.status.as_str() {
        "ACTIVE" => InstallationStatus::Active,
        "INACTIVE" => InstallationStatus::Inactive,
        other => {
            count(KIND, "invalid");
            return Err(LifecycleError::Invalid(format!(
                "status must be ACTIVE or INACTIVE, not {other:?}"
            )));
        }
    };
    let installation = modify(app, &payload.workspace_id, &payload.addon_id, move |i| {
        let changed = i.status != status;
        i.status = status;
        changed
    })
    .await
    .inspect_err(|_| count(KIND, "refused"))?;
    count(KIND, "ok");
    tracing::info!(workspace_id = %installation.workspace_id, status = status.as_str(), "status changed");
    Ok(installation)
}

/// SETTINGS_UPDATED: merges the values by id, then reconciles subscriptions.
pub async fn settings_updated(
    app: &App,
    token: Option<&str>,
    body: &[u8],
) -> Result<Installation, LifecycleError> {
    const KIND: &str = "SETTINGS_UPDATED";
    let (payload, _) =
        verified::<SettingsPayload>(app, KIND, token, body, |p| (&p.workspace_id, &p.addon_id))?;
    let mut values = Vec::with_capacity(payload.settings.len());
    for entry in &payload.settings {
        let value = SettingValue::from_json(&entry.value).ok_or_else(|| {
            count(KIND, "invalid");
            LifecycleError::Invalid(format!(
                "setting {:?} has a value of an unsupported type",
                entry.id
            ))
        })?;
        values.push((entry.id.clone(), value));
    }
    let installation = modify(app, &payload.workspace_id, &payload.addon_id, move |i| {
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
    crate::subscriptions::spawn_sync(app, &installation.workspace_id);
    Ok(installation)
}

/// DELETED: the installation's tokens are erased now; its data stays until retention.
/// A repeated DELETED is harmless. Returns the workspace id.
pub async fn deleted(
    app: &App,
    token: Option<&str>,
    body: &[u8],
) -> Result<String, LifecycleError> {
    const KIND: &str = "DELETED";
    let (payload, _) =
        verified::<DeletedPayload>(app, KIND, token, body, |p| (&p.workspace_id, &p.addon_id))?;
    let ws = payload.workspace_id.clone();
    let addon_id = payload.addon_id.clone();
    let now = now_ms();
    let before = app
        .store
        .update_installation(&payload.workspace_id, move |current| {
            let mut installation = current.ok_or_else(|| LifecycleError::Unknown(ws.clone()))?;
            if installation.addon_id != addon_id {
                return Err(LifecycleError::OtherInstallation(ws));
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
        .inspect_err(|_| count(KIND, "refused"))?;
    count(KIND, "ok");
    // Best effort, with the token as it was (only in memory, only for this cleanup).
    if let Some(before) = before {
        crate::subscriptions::spawn_cleanup(app, before);
    }
    tracing::info!(workspace_id = %payload.workspace_id, "deleted");
    Ok(payload.workspace_id)
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
