//! Clockify's own webhooks: the event type (from the path and/or the
//! `clockify-webhook-event-type` header), the `clockify-signature` (a stored webhook token or
//! a valid Clockify JWT of an active installation), and the payload's workspace.

use std::sync::Arc;

use subtle::ConstantTimeEq;

use super::{IngestError, Received, RejectKind, is_clockify_event, reject, store_event};
use crate::app::App;
use crate::clockify::token::Expiry;
use crate::store::{Dedupe, Installation, InstallationStatus, NewEvent, token_digest};

pub const SIGNATURE_HEADER: &str = "clockify-signature";
pub const EVENT_TYPE_HEADER: &str = "clockify-webhook-event-type";
const SOURCE: &str = "clockify";

/// The event type of a delivery: the path's, which the header (when sent) must agree with,
/// or the header's on the bare `/webhooks/clockify`. Checked before the body is read.
pub fn event_type(
    path_event: Option<&str>,
    header_event: Option<&str>,
) -> Result<String, IngestError> {
    let header_event = header_event.map(str::trim);
    let event_type = match (path_event, header_event) {
        (Some(path), Some(header)) if path != header => {
            return Err(reject(
                SOURCE,
                "event_mismatch",
                RejectKind::Invalid,
                format!(
                    "the {EVENT_TYPE_HEADER} header says {header:?} but the path is for {path:?}"
                ),
            ));
        }
        (Some(path), _) => path.to_string(),
        (None, Some(header)) => header.to_string(),
        (None, None) => {
            return Err(reject(
                SOURCE,
                "missing_event",
                RejectKind::Invalid,
                format!(
                    "the {EVENT_TYPE_HEADER} header is required on /webhooks/clockify (or post to /webhooks/clockify/{{EVENT}})"
                ),
            ));
        }
    };
    if !is_clockify_event(&event_type) {
        return Err(reject(
            SOURCE,
            "unknown_event",
            RejectKind::Invalid,
            format!("unknown event type {event_type:?}"),
        ));
    }
    Ok(event_type)
}

/// Counts a delivery whose body could not be read (too large, cut off).
pub fn body_unreadable() {
    super::count_rejection(SOURCE, "body");
}

/// Verifies and stores one delivery of `event_type` (see [`event_type`]). `headers` are the
/// request's, already redacted.
pub async fn receive(
    app: &App,
    event_type: String,
    signature: Option<&str>,
    headers: Vec<(String, String)>,
    body: &[u8],
) -> Result<Received, IngestError> {
    let route_path = format!("/webhooks/clockify/{event_type}");
    let (installation, token_workspace) =
        authenticate_delivery(app, signature, &route_path).await?;
    let payload_workspace = payload_workspace(body)?;
    // Not every payload has a top-level workspaceId (PLATFORM.md §5.2): check it when present.
    if let Some(ws) = payload_workspace
        && ws != token_workspace
    {
        return Err(reject(
            SOURCE,
            "workspace_mismatch",
            RejectKind::Forbidden,
            "the payload's workspaceId differs from the signature's workspace",
        ));
    }
    Ok(store_event(
        app,
        NewEvent {
            workspace_id: installation.workspace_id.clone(),
            event_type,
            source: SOURCE.to_string(),
            source_id: None,
            headers,
            dedupe: Dedupe::Body,
            entities: crate::events::entity_ids(&installation.workspace_id, body),
            body: body.to_vec(),
        },
    )
    .await?)
}

/// An installation that may receive deliveries.
fn active(
    installation: Option<Arc<Installation>>,
    ws: &str,
) -> Result<Arc<Installation>, IngestError> {
    let installation = installation.ok_or_else(|| {
        reject(
            SOURCE,
            "not_installed",
            RejectKind::Forbidden,
            format!("workspace {ws} has not installed this add-on"),
        )
    })?;
    if installation.status != InstallationStatus::Active {
        return Err(reject(
            SOURCE,
            "inactive",
            RejectKind::Forbidden,
            format!(
                "the installation for workspace {ws} is {}",
                installation.status.as_str()
            ),
        ));
    }
    Ok(installation)
}

/// Checks `clockify-signature` (PLATFORM.md §5.2 rule 5): a webhook token stored for this
/// path (compared in constant time), or a valid Clockify JWT of an active installation.
/// Returns the installation and the workspace the signature vouches for.
async fn authenticate_delivery(
    app: &App,
    signature: Option<&str>,
    route_path: &str,
) -> Result<(Arc<Installation>, String), IngestError> {
    let signature = signature
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            reject(
                SOURCE,
                "missing_signature",
                RejectKind::Unauthenticated,
                format!("the {SIGNATURE_HEADER} header is missing"),
            )
        })?;

    // 1. A token stored for this installation and path.
    let digest = token_digest(signature);
    if let Some(ws) = app.store.workspace_of_webhook_token(&digest).await? {
        let installation = active(app.store.installation(&ws).await?, &ws)?;
        let stored = installation
            .webhook_tokens
            .iter()
            .find(|t| t.digest == digest && t.path.ends_with(route_path));
        if let Some(stored) = stored {
            let plain = app.store.secrets().open_str(&stored.token)?;
            if bool::from(plain.as_bytes().ct_eq(signature.as_bytes())) {
                // A stored JWT still has to be within its times (exp, nbf, iat).
                if looks_like_jwt(signature)
                    && let Err(e) = app
                        .tokens
                        .verify(Some(signature), Expiry::Optional, "webhook")
                    && e.is_time()
                {
                    return Err(reject(
                        SOURCE,
                        e.reason(),
                        RejectKind::Unauthenticated,
                        format!("{SIGNATURE_HEADER} refused: {e}"),
                    ));
                }
                return Ok((installation, ws));
            }
        }
    }

    // 2. A valid Clockify JWT naming an active installation.
    let claims = app
        .tokens
        .verify(Some(signature), Expiry::Optional, "webhook")
        .map_err(|e| {
            reject(
                SOURCE,
                "invalid_signature",
                RejectKind::Unauthenticated,
                format!("{SIGNATURE_HEADER} refused: {e}"),
            )
        })?;
    let ws = claims.workspace_id.clone().ok_or_else(|| {
        reject(
            SOURCE,
            "invalid_signature",
            RejectKind::Unauthenticated,
            format!("{SIGNATURE_HEADER} refused: the token names no workspace"),
        )
    })?;
    let installation = active(app.store.installation(&ws).await?, &ws)?;
    if claims
        .addon_id
        .as_deref()
        .is_some_and(|a| a != installation.addon_id)
    {
        return Err(reject(
            SOURCE,
            "other_installation",
            RejectKind::Forbidden,
            "the signature belongs to another installation of this add-on",
        ));
    }
    Ok((installation, ws))
}

/// The top-level `workspaceId` of a strictly checked body (see [`super::strict`]): a body
/// two parsers could read differently is refused, never guessed at.
fn payload_workspace(bytes: &[u8]) -> Result<Option<String>, IngestError> {
    super::strict::delivery_workspace(bytes)
        .map_err(|e| reject(SOURCE, e.reason(), RejectKind::Invalid, e.to_string()))
}

fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}
