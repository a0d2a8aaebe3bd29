//! `/api/destinations` and `/api/deliveries`: the workspace's own endpoints that receive its
//! events (admins only: URLs and headers may carry credentials), their deliveries with every
//! attempt, a test send, manual retry and recovery. The work is `crate::destinations`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{Admin, JsonBody, Params, time_param};
use super::flows::ConditionsView;
use super::types::Deleted;
use crate::app::App;
use crate::audit::{self, Change};
use crate::auth::User;
use crate::destinations::outbound::Exchange;
use crate::destinations::{self, DeliveryFilter, Health, Spec};
use crate::store::{Delivery, DeliveryAttempt, Destination, format_id};
use crate::time::{now_ms, rfc3339};

/// Which events a destination receives.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct FilterView {
    /// `clockify`, `studio` (the server's notifications: a flow disabled, syncs failing), a
    /// custom source's id, or null for every received event (all sources but `studio`).
    #[serde(default)]
    source: Option<String>,
    /// Event types; empty for all.
    #[serde(default)]
    events: Vec<String>,
    /// JSONPath conditions on the event body, as in flows; null for none.
    #[serde(default)]
    #[schema(value_type = Option<ConditionsView>)]
    conditions: Value,
}

/// What an admin sends to create or replace a destination.
#[derive(Deserialize, ToSchema)]
pub struct DestinationBody {
    /// 1 to 100 characters.
    name: String,
    /// `https://…`; plain `http` and internal addresses only for hosts allowed by
    /// `--allow-destination-host`.
    url: String,
    /// New destinations start enabled; a replacement keeps the current state unless it says.
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    filter: Option<FilterView>,
    /// A flow template rendering the body (e.g. `{"text": "{{ event.description }}"}`);
    /// null sends the event body unchanged.
    #[serde(default)]
    template: Option<String>,
    /// Extra headers sent with every attempt; values are stored encrypted and shown masked
    /// (`********`; sending the mask back keeps the stored value).
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

impl From<DestinationBody> for Spec {
    fn from(body: DestinationBody) -> Spec {
        let filter = body.filter.unwrap_or(FilterView {
            source: None,
            events: Vec::new(),
            conditions: Value::Null,
        });
        Spec {
            name: body.name,
            url: body.url,
            enabled: body.enabled,
            source: filter.source,
            events: filter.events,
            conditions: filter.conditions,
            template: body.template,
            headers: body.headers,
        }
    }
}

/// A destination as the API shows it (header values masked; the secret only once).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DestinationView {
    id: String,
    name: String,
    url: String,
    enabled: bool,
    /// Why it was disabled automatically (410 Gone, failing too long).
    disabled_reason: Option<String>,
    filter: FilterView,
    template: Option<String>,
    /// Header names with masked values.
    headers: BTreeMap<String, String>,
    /// Since when every attempt failed (null when healthy).
    failing_since: Option<String>,
    created_at: String,
    updated_at: String,
    rotated_at: Option<String>,
    /// Until when the secret replaced by the last rotation still signs (beside the new one).
    previous_secret_valid_until: Option<String>,
    health: HealthView,
    /// The signing secret (`whsec_…`): only in the answers to create and rotate.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

/// A destination's health at a glance.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthView {
    /// Deliveries waiting to be sent or retried (the delivery engine's count, refreshed
    /// about every second).
    pending: u64,
    /// When the oldest of them was queued.
    oldest_pending_at: Option<String>,
    /// The newest attempt among the destination's 20 newest deliveries; null when none.
    last_attempt: Option<AttemptView>,
}

impl HealthView {
    fn new(health: &Health) -> HealthView {
        HealthView {
            pending: health.pending,
            oldest_pending_at: health.oldest_pending_at.map(rfc3339),
            last_attempt: health.last_attempt.as_ref().map(AttemptView::new),
        }
    }
}

impl DestinationView {
    fn new(destination: &Destination, health: &Health, secret: Option<String>) -> DestinationView {
        DestinationView {
            id: format_id(&destination.id),
            name: destination.name.clone(),
            url: destination.url.clone(),
            enabled: destination.enabled,
            disabled_reason: destination.disabled_reason.clone(),
            filter: FilterView {
                source: destination.filter.source.clone(),
                events: destination.filter.events.clone(),
                conditions: destinations::conditions_json(&destination.filter.conditions),
            },
            template: destination.template.clone(),
            headers: destinations::masked_headers(destination),
            failing_since: destination.failing_since.map(rfc3339),
            created_at: rfc3339(destination.created_at),
            updated_at: rfc3339(destination.updated_at),
            rotated_at: destination.rotated_at.map(rfc3339),
            previous_secret_valid_until: destinations::previous_secret_valid_until(
                destination,
                now_ms(),
            )
            .map(rfc3339),
            health: HealthView::new(health),
            secret,
        }
    }
}

/// What the audit log keeps of a destination: what an admin edits, with the header names but
/// never their values or the signing secret (a URL cannot carry credentials).
fn audited(destination: &Destination) -> Value {
    serde_json::json!({
        "id": format_id(&destination.id),
        "name": destination.name,
        "url": destination.url,
        "enabled": destination.enabled,
        "disabledReason": destination.disabled_reason,
        "filter": destinations::filter_json(&destination.filter),
        "template": destination.template,
        "headers": destination.headers.iter().map(|(name, _)| name).collect::<Vec<_>>(),
    })
}

/// Records a change of a destination by the request's user.
async fn record(
    app: &App,
    user: &User,
    action: &str,
    before: Option<&Destination>,
    after: Option<&Destination>,
) {
    let target = |d: &Destination| format_id(&d.id);
    audit::thing_changed(app, user, action, (before, after), target, audited).await;
}

#[derive(Serialize, ToSchema)]
pub struct DestinationList {
    destinations: Vec<DestinationView>,
}

/// A new signing secret.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotatedSecret {
    /// The new secret (`whsec_…`), shown only here.
    secret: String,
    /// Until when the previous secret still signs beside it.
    previous_secret_valid_until: Option<String>,
}

/// One attempt of a delivery.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    at: String,
    /// The receiver's HTTP status; null when no answer came.
    status: Option<u16>,
    latency_ms: u64,
    /// The first KB of the answer, or what went wrong.
    response: String,
}

impl AttemptView {
    fn new(attempt: &DeliveryAttempt) -> AttemptView {
        AttemptView {
            at: rfc3339(attempt.at),
            status: attempt.status,
            latency_ms: attempt.latency_ms,
            response: attempt.response.clone(),
        }
    }
}

/// One event on its way to one destination.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    /// Also the `webhook-id` header of every attempt.
    id: String,
    destination_id: String,
    /// The stored event (`GET /api/webhooks/{id}`).
    webhook_id: String,
    event_type: String,
    /// `pending`, `delivered` or `failed`.
    status: &'static str,
    attempts: Vec<AttemptView>,
    /// When the next attempt is due (pending deliveries).
    next_attempt_at: Option<String>,
    /// Why it failed for good.
    error: Option<String>,
    created_at: String,
}

impl DeliveryView {
    fn new(delivery: &Delivery) -> DeliveryView {
        let pending = delivery.status == crate::store::DeliveryStatus::Pending;
        DeliveryView {
            id: format_id(&delivery.id),
            destination_id: format_id(&delivery.destination_id),
            webhook_id: format_id(&delivery.event_id),
            event_type: delivery.event_type.clone(),
            status: delivery.status.as_str(),
            attempts: delivery.attempts.iter().map(AttemptView::new).collect(),
            next_attempt_at: pending.then(|| rfc3339(delivery.next_at)),
            error: delivery.error.clone(),
            created_at: rfc3339(delivery.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryList {
    items: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; null on the last.
    next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// `pending`, `delivered` or `failed`.
    status: Option<String>,
    /// Only the deliveries of this stored event.
    #[serde(rename = "webhookId")]
    #[param(rename = "webhookId")]
    webhook_id: Option<String>,
    /// 1 to 200 (default 50).
    limit: Option<usize>,
    /// The previous page's `nextCursor`.
    cursor: Option<String>,
}

/// The outcome of a test send.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestOutcome {
    /// The receiver's HTTP status; null when no answer came.
    status: Option<u16>,
    /// Whether the receiver answered 2xx.
    ok: bool,
    latency_ms: u64,
    /// The first KB of the answer, or what went wrong.
    response: String,
}

impl TestOutcome {
    fn new(exchange: Exchange) -> TestOutcome {
        TestOutcome {
            ok: exchange.status.is_some_and(|s| (200..300).contains(&s)),
            status: exchange.status,
            latency_ms: exchange.latency_ms,
            response: exchange.response,
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct RecoverBody {
    /// RFC 3339: failed deliveries created since then are sent again.
    since: String,
}

#[derive(Serialize, ToSchema)]
pub struct Recovered {
    /// How many failed deliveries were queued again.
    requeued: usize,
}

#[utoipa::path(get, path = "/api/destinations", tag = "destinations",
    responses((status = 200, body = DestinationList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(app): State<App>,
    Admin(user): Admin,
) -> Result<Json<DestinationList>, ApiError> {
    let all = destinations::list_with_health(&app, &user.workspace_id).await?;
    Ok(Json(DestinationList {
        destinations: all
            .iter()
            .map(|(d, health)| DestinationView::new(d, health, None))
            .collect(),
    }))
}

#[utoipa::path(post, path = "/api/destinations", tag = "destinations", request_body = DestinationBody,
    responses((status = 201, description = "Created; the only answer that shows the secret", body = DestinationView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub async fn create(
    State(app): State<App>,
    Admin(user): Admin,
    JsonBody(body): JsonBody<DestinationBody>,
) -> Result<(StatusCode, Json<DestinationView>), ApiError> {
    let (destination, secret) = destinations::create(&app, &user.workspace_id, body.into()).await?;
    record(&app, &user, "destination.create", None, Some(&destination)).await;
    Ok((
        StatusCode::CREATED,
        Json(DestinationView::new(
            &destination,
            &Health::default(),
            Some(secret),
        )),
    ))
}

#[utoipa::path(get, path = "/api/destinations/{id}", tag = "destinations", params(("id" = String, Path)),
    responses((status = 200, body = DestinationView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
) -> Result<Json<DestinationView>, ApiError> {
    let destination = destinations::get(&app, &user.workspace_id, &id).await?;
    let health = destinations::health(&app, &destination).await?;
    Ok(Json(DestinationView::new(&destination, &health, None)))
}

/// Replaces what an admin edits; enabling a disabled destination clears its failure state.
#[utoipa::path(put, path = "/api/destinations/{id}", tag = "destinations", params(("id" = String, Path)),
    request_body = DestinationBody,
    responses((status = 200, body = DestinationView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<DestinationBody>,
) -> Result<Json<DestinationView>, ApiError> {
    let before = destinations::get(&app, &user.workspace_id, &id).await?;
    let destination = destinations::update(&app, &user.workspace_id, &id, body.into()).await?;
    record(
        &app,
        &user,
        "destination.update",
        Some(&before),
        Some(&destination),
    )
    .await;
    let health = destinations::health(&app, &destination).await?;
    Ok(Json(DestinationView::new(&destination, &health, None)))
}

/// Deletes the destination with its deliveries (pending ones are not sent).
#[utoipa::path(delete, path = "/api/destinations/{id}", tag = "destinations", params(("id" = String, Path)),
    responses((status = 200, body = Deleted), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let before = destinations::get(&app, &user.workspace_id, &id).await?;
    destinations::delete(&app, &user.workspace_id, &id).await?;
    record(&app, &user, "destination.delete", Some(&before), None).await;
    Ok(Json(Deleted::new(id)))
}

/// A new signing secret; the previous one keeps signing beside it for 24 hours.
#[utoipa::path(post, path = "/api/destinations/{id}/rotate-secret", tag = "destinations", params(("id" = String, Path)),
    responses((status = 200, description = "The only answer that shows the new secret", body = RotatedSecret),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn rotate_secret(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
) -> Result<Json<RotatedSecret>, ApiError> {
    let before = destinations::get(&app, &user.workspace_id, &id).await?;
    let (destination, secret) = destinations::rotate_secret(&app, &user.workspace_id, &id).await?;
    // The summaries carry no secret: what changed is `rotatedAt`.
    audit::by_user(
        &app,
        &user,
        Change {
            action: "destination.rotate",
            target: Some(format_id(&destination.id)),
            before: Some(serde_json::json!({"rotatedAt": before.rotated_at.map(rfc3339)})),
            after: Some(serde_json::json!({"rotatedAt": destination.rotated_at.map(rfc3339)})),
        },
    )
    .await;
    Ok(Json(RotatedSecret {
        secret,
        previous_secret_valid_until: destinations::previous_secret_valid_until(
            &destination,
            now_ms(),
        )
        .map(rfc3339),
    }))
}

/// Sends a signed test event now (not stored, not retried) and shows the receiver's answer.
#[utoipa::path(post, path = "/api/destinations/{id}/test", tag = "destinations", params(("id" = String, Path)),
    responses((status = 200, body = TestOutcome), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn test(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
) -> Result<Json<TestOutcome>, ApiError> {
    let exchange = destinations::send_test(&app, &user.workspace_id, &id).await?;
    Ok(Json(TestOutcome::new(exchange)))
}

/// The destination's deliveries, newest first, with every attempt.
#[utoipa::path(get, path = "/api/destinations/{id}/deliveries", tag = "destinations",
    params(("id" = String, Path), DeliveryParams),
    responses((status = 200, body = DeliveryList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn deliveries(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
    Params(params): Params<DeliveryParams>,
) -> Result<Json<DeliveryList>, ApiError> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be 1 to 200".into()));
    }
    let filter = DeliveryFilter {
        status: params.status.as_deref(),
        event: params.webhook_id.as_deref(),
        cursor: params.cursor.as_deref(),
        limit,
    };
    let page = destinations::deliveries(&app, &user.workspace_id, &id, filter).await?;
    Ok(Json(DeliveryList {
        items: page.items.iter().map(DeliveryView::new).collect(),
        next_cursor: page.next_cursor.as_ref().map(format_id),
    }))
}

/// Sends a delivery again now (one more attempt; a pending one is simply made due).
#[utoipa::path(post, path = "/api/deliveries/{id}/retry", tag = "destinations", params(("id" = String, Path)),
    responses((status = 202, body = DeliveryView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn retry(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<DeliveryView>), ApiError> {
    let before = destinations::delivery(&app, &user.workspace_id, &id).await?;
    let delivery = destinations::retry(&app, &user.workspace_id, &id).await?;
    let summary = |d: &Delivery| {
        serde_json::json!({
            "destinationId": format_id(&d.destination_id),
            "webhookId": format_id(&d.event_id),
            "status": d.status.as_str(),
            "attempts": d.attempts.len(),
        })
    };
    audit::by_user(
        &app,
        &user,
        Change {
            action: "delivery.retry",
            target: Some(format_id(&delivery.id)),
            before: Some(summary(&before)),
            after: Some(summary(&delivery)),
        },
    )
    .await;
    Ok((StatusCode::ACCEPTED, Json(DeliveryView::new(&delivery))))
}

/// Sends again every failed delivery of the destination created since `since`.
#[utoipa::path(post, path = "/api/destinations/{id}/recover", tag = "destinations", params(("id" = String, Path)),
    request_body = RecoverBody,
    responses((status = 202, body = Recovered), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn recover(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RecoverBody>,
) -> Result<(StatusCode, Json<Recovered>), ApiError> {
    let since = time_param("since", &body.since)
        .map_err(|problem| ApiError::invalid(problem.message.clone(), vec![problem]))?;
    let requeued = destinations::recover(&app, &user.workspace_id, &id, since).await?;
    audit::by_user(
        &app,
        &user,
        Change {
            action: "destination.recover",
            target: crate::store::parse_id(&id).map(|key| format_id(&key)),
            before: None,
            after: Some(serde_json::json!({"since": rfc3339(since), "requeued": requeued})),
        },
    )
    .await;
    Ok((StatusCode::ACCEPTED, Json(Recovered { requeued })))
}
