//! Who is calling the UI JSON API: a verified Clockify user token (30-minute life) of an
//! installed workspace. Every query is scoped to that workspace; writes need the OWNER or
//! WORKSPACE_ADMIN role. The HTTP extractors that call this live in `api::extract`.

use std::sync::Arc;

use crate::app::App;
use crate::clockify::token::{Claims, EXPIRY_LEEWAY_SECS, Expiry, TokenError};
use crate::store::{Installation, InstallationStatus, StoreError};

/// The header every UI API call carries the user token in.
pub const USER_TOKEN_HEADER: &str = "x-addon-token";

/// A verified user of an installed workspace. Every query is scoped to `workspace_id`.
pub struct User {
    pub claims: Arc<Claims>,
    pub workspace_id: String,
    pub installation: Arc<Installation>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("X-Addon-Token refused: {0}")]
    Token(TokenError),
    #[error("X-Addon-Token refused: the token names no workspace")]
    NoWorkspace,
    #[error("workspace {0} has not installed this add-on")]
    NotInstalled(String),
    #[error("the add-on was uninstalled from workspace {0}")]
    Uninstalled(String),
    #[error("the token belongs to an earlier installation of this add-on")]
    OtherInstallation,
    #[error("this needs the OWNER or WORKSPACE_ADMIN role in the workspace")]
    NotAdmin,
    /// The live stream's ticket does not open it; says why.
    #[error("stream refused: {0}; get a ticket from POST /api/webhooks/stream-ticket")]
    Ticket(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl User {
    pub fn is_admin(&self) -> bool {
        self.claims.is_admin()
    }

    pub fn require_admin(&self) -> Result<(), AuthError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(AuthError::NotAdmin)
        }
    }
}

/// Verifies a user token and its workspace's installation.
pub async fn user_from_token(app: &App, token: Option<&str>) -> Result<User, AuthError> {
    let claims = app
        .tokens
        .verify(token, Expiry::Required, "user")
        .map_err(AuthError::Token)?;
    user_from_claims(app, claims).await
}

/// The user a stream ticket was issued to (see [`crate::tickets`]): the ticket works once,
/// within its time, while the token it was issued for is unexpired and the workspace's
/// installation still admits the user.
pub async fn user_from_ticket(app: &App, ticket: Option<&str>) -> Result<User, AuthError> {
    let ticket = ticket.ok_or(AuthError::Ticket("no X-Addon-Token header and no ticket"))?;
    let ticket = app
        .stream_tickets
        .redeem(ticket)
        .ok_or(AuthError::Ticket("the ticket is unknown, used or expired"))?;
    let now = jiff::Timestamp::now().as_second().max(0) as u64;
    if ticket
        .claims
        .exp
        .is_some_and(|exp| exp.saturating_add(EXPIRY_LEEWAY_SECS) < now)
    {
        return Err(AuthError::Ticket(
            "the token the ticket was issued for has expired",
        ));
    }
    let user = user_from_claims(app, ticket.claims).await?;
    if user.workspace_id != ticket.workspace_id {
        return Err(AuthError::Ticket("the ticket is for another workspace"));
    }
    Ok(user)
}

/// The user of already verified claims, if their workspace's installation still admits them.
async fn user_from_claims(app: &App, claims: Arc<Claims>) -> Result<User, AuthError> {
    let workspace_id = claims.workspace_id.clone().ok_or(AuthError::NoWorkspace)?;
    let installation = app
        .store
        .installation(&workspace_id)
        .await?
        .ok_or_else(|| AuthError::NotInstalled(workspace_id.clone()))?;
    if installation.status == InstallationStatus::Deleted {
        return Err(AuthError::Uninstalled(workspace_id));
    }
    if claims
        .addon_id
        .as_deref()
        .is_some_and(|a| a != installation.addon_id)
    {
        return Err(AuthError::OtherInstallation);
    }
    Ok(User {
        claims,
        workspace_id,
        installation,
    })
}
