//! Webhook ingestion: Clockify deliveries (`/webhooks/clockify[/{EVENT}]`) and custom
//! sources (`/webhooks/custom/{source}`), verified, stored durably once, and published to
//! live listeners. The read API and the live stream are in `api`.

pub mod api;
pub mod custom;

use std::sync::{Arc, LazyLock};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clockify::token::Expiry;
use crate::error::ApiError;
use crate::http::{parse_json, read_body};
use crate::server::App;
use crate::store::{Ingested, Installation, InstallationStatus, NewEvent, format_event_id};

pub const SIGNATURE_HEADER: &str = "clockify-signature";
pub const EVENT_TYPE_HEADER: &str = "clockify-webhook-event-type";

/// The 50 event types Clockify's API accepts for webhooks.
pub static CLOCKIFY_EVENTS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    include_str!("../webhook-events.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
});

pub fn is_clockify_event(name: &str) -> bool {
    CLOCKIFY_EVENTS.contains(&name)
}

/// Headers whose values are secrets: never stored, logged or shown.
const SECRET_HEADERS: &[&str] = &[
    "clockify-signature",
    "x-addon-token",
    "x-addon-lifecycle-token",
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "webhook-signature",
];

/// The headers as stored: names kept, secret values replaced. Anything that looks like a
/// credential by name is redacted too.
pub fn redact_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let name = name.as_str().to_ascii_lowercase();
            let secret = SECRET_HEADERS.contains(&name.as_str())
                || [
                    "token",
                    "secret",
                    "signature",
                    "password",
                    "api-key",
                    "apikey",
                ]
                .iter()
                .any(|word| name.contains(word));
            let value = if secret {
                "[redacted]".to_string()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name, value)
        })
        .collect()
}

fn reject(source: &'static str, reason: &'static str, error: ApiError) -> ApiError {
    metrics::counter!("webhook_rejections_total", "source" => source, "reason" => reason)
        .increment(1);
    error
}

/// `webhooks_received_total{source, outcome}`, registered once (all four series, so each
/// shows from the first delivery on): a registry lookup per delivery showed in the ingest
/// profile.
fn received_counter(custom: bool, duplicate: bool) -> &'static metrics::Counter {
    static COUNTERS: LazyLock<[metrics::Counter; 4]> = LazyLock::new(|| {
        let counter = |source: &'static str, outcome: &'static str| metrics::counter!("webhooks_received_total", "source" => source, "outcome" => outcome);
        [
            counter("clockify", "stored"),
            counter("clockify", "duplicate"),
            counter("custom", "stored"),
            counter("custom", "duplicate"),
        ]
    });
    &COUNTERS[2 * usize::from(custom) + usize::from(duplicate)]
}

/// The reply to an accepted delivery.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Received {
    status: &'static str,
    webhook_id: String,
    duplicate: bool,
}

/// Stores an event (the store announces it to live listeners); the reply is sent only
/// after the commit.
pub(crate) async fn store_event(app: &App, new: NewEvent) -> Result<Json<Received>, ApiError> {
    let custom = new.source_id.is_some();
    let (id, duplicate) = match app.store.ingest(new).await? {
        Ingested::Stored(event) => (event.id, false),
        Ingested::Duplicate { original } => (original, true),
    };
    received_counter(custom, duplicate).increment(1);
    Ok(Json(Received {
        status: "received",
        webhook_id: format_event_id(&id),
        duplicate,
    }))
}

// The whole request is taken (not `HeaderMap` + `Body`) so the headers are moved, not copied.
pub async fn receive_for_event(
    State(app): State<App>,
    Path(event): Path<String>,
    request: Request,
) -> Result<Json<Received>, ApiError> {
    let (parts, body) = request.into_parts();
    receive_clockify(app, Some(event), parts.headers, body).await
}

pub async fn receive(State(app): State<App>, request: Request) -> Result<Json<Received>, ApiError> {
    let (parts, body) = request.into_parts();
    receive_clockify(app, None, parts.headers, body).await
}

async fn receive_clockify(
    app: App,
    path_event: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Received>, ApiError> {
    const SOURCE: &str = "clockify";
    let header_event = headers
        .get(EVENT_TYPE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let event_type = match (&path_event, header_event) {
        (Some(path), Some(header)) if path != header => {
            return Err(reject(
                SOURCE,
                "event_mismatch",
                ApiError::BadRequest(format!(
                    "the {EVENT_TYPE_HEADER} header says {header:?} but the path is for {path:?}"
                )),
            ));
        }
        (Some(path), _) => path.clone(),
        (None, Some(header)) => header.to_string(),
        (None, None) => {
            return Err(reject(
                SOURCE,
                "missing_event",
                ApiError::BadRequest(format!(
                    "the {EVENT_TYPE_HEADER} header is required on /webhooks/clockify (or post to /webhooks/clockify/{{EVENT}})"
                )),
            ));
        }
    };
    if !is_clockify_event(&event_type) {
        return Err(reject(
            SOURCE,
            "unknown_event",
            ApiError::BadRequest(format!("unknown event type {event_type:?}")),
        ));
    }
    let bytes = read_body(&headers, body, app.config.webhook_body_limit)
        .await
        .map_err(|e| reject(SOURCE, "body", e))?;
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let route_path = format!("/webhooks/clockify/{event_type}");
    let (installation, token_workspace) =
        authenticate_delivery(&app, signature, &route_path).await?;
    let payload_workspace =
        payload_workspace(&bytes).map_err(|e| reject(SOURCE, "invalid_json", e))?;
    // Not every payload has a top-level workspaceId (PLATFORM.md §5.2): check it when present.
    if let Some(ws) = payload_workspace
        && ws != token_workspace
    {
        return Err(reject(
            SOURCE,
            "workspace_mismatch",
            ApiError::Forbidden(
                "the payload's workspaceId differs from the signature's workspace".into(),
            ),
        ));
    }
    store_event(
        &app,
        NewEvent {
            workspace_id: installation.workspace_id.clone(),
            event_type,
            source: SOURCE.to_string(),
            source_id: None,
            headers: redact_headers(&headers),
            dedupe_key: Sha256::digest(&bytes).into(),
            body: bytes.to_vec(),
        },
    )
    .await
}

/// Checks `clockify-signature` (PLATFORM.md §5.2 rule 5): a webhook token stored for this
/// path (compared in constant time), or a valid Clockify JWT of an active installation.
/// Returns the installation and the workspace the signature vouches for.
async fn authenticate_delivery(
    app: &App,
    signature: Option<&str>,
    route_path: &str,
) -> Result<(Arc<Installation>, String), ApiError> {
    const SOURCE: &str = "clockify";
    let signature = signature
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            reject(
                SOURCE,
                "missing_signature",
                ApiError::Unauthorized(format!("the {SIGNATURE_HEADER} header is missing")),
            )
        })?;
    let active = |installation: Option<Arc<Installation>>,
                  ws: &str|
     -> Result<Arc<Installation>, ApiError> {
        let installation = installation.ok_or_else(|| {
            reject(
                SOURCE,
                "not_installed",
                ApiError::Forbidden(format!("workspace {ws} has not installed this add-on")),
            )
        })?;
        if installation.status != InstallationStatus::Active {
            return Err(reject(
                SOURCE,
                "inactive",
                ApiError::Forbidden(format!(
                    "the installation for workspace {ws} is {}",
                    installation.status.as_str()
                )),
            ));
        }
        Ok(installation)
    };

    // 1. A token stored for this installation and path.
    let digest = crate::store::token_digest(signature);
    if let Some(ws) = app.store.workspace_of_webhook_token(&digest).await? {
        let installation = active(app.store.installation(&ws).await?, &ws)?;
        let stored = installation
            .webhook_tokens
            .iter()
            .find(|t| t.digest == digest && t.path.ends_with(route_path));
        if let Some(stored) = stored {
            let plain = app.store.secrets().open_str(&stored.token)?;
            if bool::from(plain.as_bytes().ct_eq(signature.as_bytes())) {
                // A stored JWT still has to be unexpired.
                if looks_like_jwt(signature)
                    && let Err(e) = app
                        .tokens
                        .verify(Some(signature), Expiry::Optional, "webhook")
                    && e == crate::clockify::token::TokenError::Expired
                {
                    return Err(reject(
                        SOURCE,
                        "expired",
                        ApiError::Unauthorized(format!("{SIGNATURE_HEADER} refused: {e}")),
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
                ApiError::Unauthorized(format!("{SIGNATURE_HEADER} refused: {e}")),
            )
        })?;
    let ws = claims.workspace_id.clone().ok_or_else(|| {
        reject(
            SOURCE,
            "invalid_signature",
            ApiError::Unauthorized(format!(
                "{SIGNATURE_HEADER} refused: the token names no workspace"
            )),
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
            ApiError::Forbidden(
                "the signature belongs to another installation of this add-on".into(),
            ),
        ));
    }
    Ok((installation, ws))
}

/// Validates the JSON and returns its top-level `workspaceId`, without building the whole
/// document (deliveries are parsed on every request).
fn payload_workspace(bytes: &[u8]) -> Result<Option<String>, ApiError> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "workspaceId", default)]
        workspace_id: Option<Value>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(probe) => Ok(probe
            .workspace_id
            .and_then(|v| v.as_str().map(str::to_string))),
        // Valid JSON that is not an object has no workspaceId.
        Err(e) if e.is_data() => parse_json::<serde::de::IgnoredAny>(bytes).map(|_| None),
        Err(e) => Err(ApiError::BadRequest(format!("invalid JSON body: {e}"))),
    }
}

fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}
