//! Authentication of the UI JSON API: a Clockify user token (`X-Addon-Token`, 30-minute
//! life) scoped to its workspace. Writes need the OWNER or WORKSPACE_ADMIN role.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::clockify::token::{Claims, Expiry};
use crate::error::ApiError;
use crate::server::App;
use crate::store::{Installation, InstallationStatus};

pub const USER_TOKEN_HEADER: &str = "x-addon-token";

/// A verified user of an installed workspace. Every query is scoped to `workspace_id`.
pub struct User {
    pub claims: Arc<Claims>,
    pub workspace_id: String,
    pub installation: std::sync::Arc<Installation>,
}

impl User {
    pub fn is_admin(&self) -> bool {
        self.claims.is_admin()
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this needs the OWNER or WORKSPACE_ADMIN role in the workspace".into(),
            ))
        }
    }
}

/// A [`User`] with the OWNER or WORKSPACE_ADMIN role.
pub struct Admin(pub User);

/// A [`User`] whose token may also come from the `auth_token` query parameter (for
/// EventSource, which cannot set headers).
pub struct StreamUser(pub User);

async fn authenticate(parts: &Parts, app: &App, allow_query: bool) -> Result<User, ApiError> {
    let header = parts
        .headers
        .get(USER_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok());
    let query_token = if allow_query && header.is_none() {
        parts.uri.query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "auth_token")
                .map(|(_, v)| v.into_owned())
        })
    } else {
        None
    };
    user_from_token(app, header.or(query_token.as_deref())).await
}

/// Verifies a user token and its workspace's installation (also used by the `/ui` page).
pub async fn user_from_token(app: &App, token: Option<&str>) -> Result<User, ApiError> {
    let claims = app
        .tokens
        .verify(token, Expiry::Required, "user")
        .map_err(|e| ApiError::Unauthorized(format!("X-Addon-Token refused: {e}")))?;
    let workspace_id = claims.workspace_id.clone().ok_or_else(|| {
        ApiError::Unauthorized("X-Addon-Token refused: the token names no workspace".into())
    })?;
    let installation = app
        .store
        .installation(&workspace_id)
        .await?
        .ok_or_else(|| {
            ApiError::Forbidden(format!(
                "workspace {workspace_id} has not installed this add-on"
            ))
        })?;
    if installation.status == InstallationStatus::Deleted {
        return Err(ApiError::Forbidden(format!(
            "the add-on was uninstalled from workspace {workspace_id}"
        )));
    }
    if claims
        .addon_id
        .as_deref()
        .is_some_and(|a| a != installation.addon_id)
    {
        return Err(ApiError::Forbidden(
            "the token belongs to an earlier installation of this add-on".into(),
        ));
    }
    Ok(User {
        claims,
        workspace_id,
        installation,
    })
}

impl FromRequestParts<App> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        authenticate(parts, app, false).await
    }
}

impl FromRequestParts<App> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let user = authenticate(parts, app, false).await?;
        user.require_admin()?;
        Ok(Admin(user))
    }
}

impl FromRequestParts<App> for StreamUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        authenticate(parts, app, true).await.map(StreamUser)
    }
}
