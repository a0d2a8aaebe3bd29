//! Deliveries: Clockify's webhooks (`POST /webhooks/clockify[/{EVENT}]`) and custom sources'
//! events (`POST /webhooks/custom/{source}`). The handlers read the request; verification and
//! storage are `crate::ingest`. The reply is sent only after the event is durable.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, header};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::read_body;
use crate::app::App;
use crate::ingest::{self, Received, clockify, custom};
use crate::store::format_event_id;

/// The reply to an accepted delivery.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryReceived {
    /// Always `received`.
    #[schema(example = "received")]
    status: &'static str,
    /// The stored event (for a duplicate: the event it repeats).
    webhook_id: String,
    /// Whether the same delivery was already stored (within the dedupe window).
    duplicate: bool,
}

impl From<Received> for DeliveryReceived {
    fn from(received: Received) -> Self {
        DeliveryReceived {
            status: "received",
            webhook_id: format_event_id(&received.event_id),
            duplicate: received.duplicate,
        }
    }
}

/// The request headers as stored with the event, secrets redacted.
fn stored_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    ingest::redact_headers(headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A Clockify delivery for one event type (the path names it; the install payload ties each
/// webhook token to its path).
#[utoipa::path(post, path = "/webhooks/clockify/{event}", tag = "deliveries",
    params(("event" = String, Path, description = "A Clockify webhook event type, e.g. NEW_TIME_ENTRY")),
    request_body(content = serde_json::Value, description = "The event payload exactly as Clockify sends it"),
    responses(
        (status = 200, description = "Stored durably (or recognised as a duplicate)", body = DeliveryReceived),
        (status = 400, description = "Unknown event type, mismatching header, invalid JSON", body = ErrorBody),
        (status = 401, description = "Missing or invalid clockify-signature", body = ErrorBody),
        (status = 403, description = "Not installed, inactive, or another workspace's payload", body = ErrorBody),
        (status = 413, description = "Body over the webhook limit", body = ErrorBody),
        (status = 503, description = "The store cannot write right now (reopening after an error, damaged, shutting down); nothing was stored; see Retry-After", body = ErrorBody),
        (status = 507, description = "The disk holding the data file is full; nothing was stored; see Retry-After", body = ErrorBody),
    ))]
// The whole request is taken (not `HeaderMap` + `Body`) so the headers are moved, not copied.
pub async fn receive_for_event(
    State(app): State<App>,
    Path(event): Path<String>,
    request: Request,
) -> Result<Json<DeliveryReceived>, ApiError> {
    let (parts, body) = request.into_parts();
    receive_clockify(app, Some(event), parts.headers, body).await
}

/// A Clockify delivery whose `clockify-webhook-event-type` header names the event.
#[utoipa::path(post, path = "/webhooks/clockify", tag = "deliveries",
    request_body(content = serde_json::Value, description = "The event payload exactly as Clockify sends it"),
    responses(
        (status = 200, description = "Stored durably (or recognised as a duplicate)", body = DeliveryReceived),
        (status = 400, description = "Missing or unknown event type, invalid JSON", body = ErrorBody),
        (status = 401, description = "Missing or invalid clockify-signature", body = ErrorBody),
        (status = 403, description = "Not installed, inactive, or another workspace's payload", body = ErrorBody),
        (status = 413, description = "Body over the webhook limit", body = ErrorBody),
        (status = 503, description = "The store cannot write right now (reopening after an error, damaged, shutting down); nothing was stored; see Retry-After", body = ErrorBody),
        (status = 507, description = "The disk holding the data file is full; nothing was stored; see Retry-After", body = ErrorBody),
    ))]
pub async fn receive(
    State(app): State<App>,
    request: Request,
) -> Result<Json<DeliveryReceived>, ApiError> {
    let (parts, body) = request.into_parts();
    receive_clockify(app, None, parts.headers, body).await
}

async fn receive_clockify(
    app: App,
    path_event: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<DeliveryReceived>, ApiError> {
    let event_type = clockify::event_type(
        path_event.as_deref(),
        header(&headers, clockify::EVENT_TYPE_HEADER),
    )?;
    let bytes = read_body(&headers, body, app.config.webhook_body_limit)
        .await
        .inspect_err(|_| clockify::body_unreadable())?;
    let received = clockify::receive(
        &app,
        event_type,
        header(&headers, clockify::SIGNATURE_HEADER),
        stored_headers(&headers),
        &bytes,
    )
    .await?;
    Ok(Json(received.into()))
}

/// An event from one of the workspace's custom sources, signed the Standard Webhooks way
/// (`webhook-id`, `webhook-timestamp`, `webhook-signature`) or sent with
/// `Authorization: Bearer <secret>`. Any JSON; its event type is `type` or `eventType` in the
/// body, else the `X-Event-Type` header, else `CUSTOM`.
#[utoipa::path(post, path = "/webhooks/custom/{source}", tag = "deliveries",
    params(("source" = String, Path, description = "The source's id")),
    request_body(content = serde_json::Value, description = "Any JSON"),
    responses(
        (status = 200, description = "Stored durably (or recognised as a duplicate)", body = DeliveryReceived),
        (status = 400, description = "Invalid JSON or event type", body = ErrorBody),
        (status = 401, description = "Missing or wrong signature or secret", body = ErrorBody),
        (status = 403, description = "The add-on is not active in the source's workspace", body = ErrorBody),
        (status = 404, description = "No such source", body = ErrorBody),
        (status = 413, description = "Body over the webhook limit", body = ErrorBody),
        (status = 503, description = "The store cannot write right now (reopening after an error, damaged, shutting down); nothing was stored; see Retry-After", body = ErrorBody),
        (status = 507, description = "The disk holding the data file is full; nothing was stored; see Retry-After", body = ErrorBody),
    ))]
pub async fn receive_custom(
    State(app): State<App>,
    Path(source_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<DeliveryReceived>, ApiError> {
    let source = custom::find_source(&app, &source_id).await?;
    let bytes = read_body(&headers, body, app.config.webhook_body_limit)
        .await
        .inspect_err(|_| custom::body_unreadable())?;
    let credentials = custom::Credentials {
        webhook_id: header(&headers, "webhook-id"),
        webhook_timestamp: header(&headers, "webhook-timestamp"),
        webhook_signature: header(&headers, "webhook-signature"),
        bearer: header(&headers, header::AUTHORIZATION.as_str())
            .and_then(|v| v.strip_prefix("Bearer ")),
        event_type: header(&headers, "x-event-type"),
    };
    let received =
        custom::receive(&app, source, &credentials, stored_headers(&headers), &bytes).await?;
    Ok(Json(received.into()))
}
