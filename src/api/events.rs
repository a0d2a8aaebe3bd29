//! `/api/webhooks`: reading stored events back: newest-first pages with filters, one event in
//! full, its raw body, erase, and a live Server-Sent Events stream with `Last-Event-ID`
//! resume.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{Admin, StreamUser, path_id};
use super::types::Deleted;
use crate::app::App;
use crate::auth::User;
use crate::events::{self, EventFilter, TextFilter, preview};
use crate::problem::Problem;
use crate::store::{EventId, EventQuery, StoredEvent, format_event_id, parse_event_id};
use crate::time::{parse_rfc3339, rfc3339};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;
/// Rows one listing may examine before it returns a cursor to continue from.
const SCAN_LIMIT: usize = 20_000;
/// Events replayed at most on an SSE (re)connection.
const RESUME_LIMIT: usize = 1_000;
const HEARTBEAT: Duration = Duration::from_secs(15);

/// What every view of an event shows.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventFields {
    id: String,
    /// A Clockify event type, or a custom source's own.
    event_type: String,
    /// `clockify` or the custom source's name.
    source: String,
    /// The custom source's id (null for Clockify).
    source_id: Option<String>,
    received_at: String,
    /// Later deliveries recognised as this one.
    duplicates: u32,
    /// Body size in bytes.
    size: usize,
}

impl From<&StoredEvent> for EventFields {
    fn from(event: &StoredEvent) -> Self {
        EventFields {
            id: format_event_id(&event.id),
            event_type: event.event_type.clone(),
            source: event.source.clone(),
            source_id: event.source_id.clone(),
            received_at: rfc3339(event.received_at),
            duplicates: event.duplicates,
            size: event.body.len(),
        }
    }
}

/// An event in a list (and in the live stream).
#[derive(Serialize, ToSchema)]
pub struct EventSummary {
    #[serde(flatten)]
    fields: EventFields,
    /// The start of the body, whitespace collapsed.
    preview: String,
}

impl From<&StoredEvent> for EventSummary {
    fn from(event: &StoredEvent) -> Self {
        EventSummary {
            fields: EventFields::from(event),
            preview: preview(&event.body),
        }
    }
}

/// One event in full.
#[derive(Serialize, ToSchema)]
pub struct EventDetail {
    #[serde(flatten)]
    fields: EventFields,
    /// The body as JSON (a string when it is not JSON).
    body: Value,
    /// The request headers as stored, secrets redacted: `[name, value]` pairs.
    #[schema(value_type = Vec<Vec<String>>)]
    headers: Vec<(String, String)>,
}

impl From<&StoredEvent> for EventDetail {
    fn from(event: &StoredEvent) -> Self {
        EventDetail {
            fields: EventFields::from(event),
            body: serde_json::from_slice::<Value>(&event.body).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&event.body).into_owned())
            }),
            headers: event.headers.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventList {
    items: Vec<EventSummary>,
    /// Where the next page starts (pass as `cursor`); null when there is no more.
    next_cursor: Option<String>,
}

/// The filters of `GET /api/webhooks`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct EventListParams {
    /// The previous page's `nextCursor`.
    cursor: Option<String>,
    /// 1 to 200 (default 50).
    limit: Option<u32>,
    /// Event types, comma-separated (the parameter may repeat).
    event: Option<String>,
    /// `clockify`, or a custom source's name or id.
    source: Option<String>,
    /// Received at or after this RFC 3339 time.
    from: Option<String>,
    /// Received at or before this RFC 3339 time.
    to: Option<String>,
    /// `field=value` (exact), `field:value` (contains) on a dotted path into the body, or
    /// text the body contains; case-insensitive.
    q: Option<String>,
}

fn time_param(name: &str, value: &str) -> Result<i64, Problem> {
    parse_rfc3339(value).ok_or_else(|| {
        Problem::new(
            name,
            format!("{name} must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z"),
        )
    })
}

/// Reads the query string of `GET /api/webhooks`, reporting every bad parameter.
fn event_filter(query: &str) -> Result<EventFilter, Vec<Problem>> {
    let mut filter = EventFilter {
        query: EventQuery {
            before: None,
            from_ms: None,
            to_ms: None,
            event_types: Vec::new(),
            limit: DEFAULT_LIMIT,
            scan_limit: SCAN_LIMIT,
        },
        source: None,
        text: None,
    };
    let mut problems = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.trim().to_string();
        match key.as_ref() {
            "cursor" if !value.is_empty() => match parse_event_id(&value) {
                Some(id) => filter.query.before = Some(id),
                None => problems.push(Problem::new("cursor", "cursor is not an event id")),
            },
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => filter.query.limit = n,
                _ => problems.push(Problem::new(
                    "limit",
                    format!("limit must be 1 to {MAX_LIMIT}"),
                )),
            },
            "event" => filter.query.event_types.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            ),
            "source" if !value.is_empty() => filter.source = Some(value),
            "from" if !value.is_empty() => match time_param("from", &value) {
                Ok(ms) => filter.query.from_ms = Some(ms),
                Err(p) => problems.push(p),
            },
            "to" if !value.is_empty() => match time_param("to", &value) {
                Ok(ms) => filter.query.to_ms = Some(ms),
                Err(p) => problems.push(p),
            },
            "q" if !value.is_empty() => filter.text = Some(TextFilter::parse(&value)),
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(filter)
    } else {
        Err(problems)
    }
}

/// A newest-first page of the workspace's events.
#[utoipa::path(get, path = "/api/webhooks", tag = "events", params(EventListParams),
    responses((status = 200, body = EventList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(app): State<App>,
    user: User,
    uri: Uri,
) -> Result<Json<EventList>, ApiError> {
    let filter = event_filter(uri.query().unwrap_or(""))
        .map_err(|problems| ApiError::invalid("invalid query parameters", problems))?;
    let page = events::list(&app, &user.workspace_id, filter).await?;
    Ok(Json(EventList {
        items: page.items.iter().map(EventSummary::from).collect(),
        next_cursor: page.next_cursor.as_ref().map(format_event_id),
    }))
}

async fn find(app: &App, user: &User, id: &str) -> Result<StoredEvent, ApiError> {
    app.store
        .event(&user.workspace_id, path_id(id, "event")?)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no event {id}")))
}

#[utoipa::path(get, path = "/api/webhooks/{id}", tag = "events", params(("id" = String, Path)),
    responses((status = 200, body = EventDetail), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<App>,
    user: User,
    Path(id): Path<String>,
) -> Result<Json<EventDetail>, ApiError> {
    Ok(Json(EventDetail::from(&find(&app, &user, &id).await?)))
}

/// The body exactly as received (for copying, and to prove nothing was altered).
#[utoipa::path(get, path = "/api/webhooks/{id}/raw", tag = "events", params(("id" = String, Path)),
    responses((status = 200, description = "The body's bytes as received", content_type = "application/json"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn raw(
    State(app): State<App>,
    user: User,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let event = find(&app, &user, &id).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], event.body).into_response())
}

/// Erases one event (and its index and dedupe rows).
#[utoipa::path(delete, path = "/api/webhooks/{id}", tag = "events", params(("id" = String, Path)),
    responses((status = 200, body = Deleted), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    if app
        .store
        .delete_event(&user.workspace_id, path_id(&id, "event")?)
        .await?
    {
        Ok(Json(Deleted::new(id)))
    } else {
        Err(ApiError::NotFound(format!("no event {id}")))
    }
}

fn sse_event(event: &StoredEvent) -> SseEvent {
    let data = serde_json::to_string(&EventSummary::from(event)).expect("summaries serialize");
    SseEvent::default()
        .id(format_event_id(&event.id))
        .event("webhook")
        .data(data)
}

struct StreamState {
    app: App,
    workspace_id: String,
    receiver: tokio::sync::broadcast::Receiver<Arc<StoredEvent>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    backlog: std::collections::VecDeque<StoredEvent>,
    last_sent: Option<EventId>,
}

/// New events of the token's workspace as they are committed (Server-Sent Events, event name
/// `webhook`, data an event summary). On reconnect, `Last-Event-ID` (or `?lastEventId=`)
/// replays what was missed first.
#[utoipa::path(get, path = "/api/webhooks/stream", tag = "events",
    params(("lastEventId" = Option<String>, Query, description = "Resume after this event"),
        ("auth_token" = Option<String>, Query, description = "The user token, for EventSource (which cannot set headers)")),
    responses((status = 200, description = "An event stream", content_type = "text/event-stream"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn stream(
    State(app): State<App>,
    StreamUser(user): StreamUser,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let query_last = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "lastEventId")
        .map(|(_, v)| v.into_owned());
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(query_last)
        .and_then(|v| parse_event_id(v.trim()));
    // Subscribe before reading the backlog so nothing committed in between is missed.
    let receiver = app.store.subscribe();
    let backlog = match last {
        Some(after) => {
            app.store
                .events_after(&user.workspace_id, after, RESUME_LIMIT)
                .await?
        }
        None => Vec::new(),
    };
    let state = StreamState {
        shutdown: app.shutdown.subscribe(),
        app: app.clone(),
        workspace_id: user.workspace_id.clone(),
        receiver,
        backlog: backlog.into(),
        last_sent: last,
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.backlog.pop_front() {
                state.last_sent = Some(event.id);
                return Some((Ok(sse_event(&event)), state));
            }
            let received = tokio::select! {
                received = state.receiver.recv() => received,
                _ = state.shutdown.wait_for(|stop| *stop) => return None,
            };
            match received {
                Ok(event) => {
                    if event.workspace_id != state.workspace_id
                        || state.last_sent.is_some_and(|last| event.id <= last)
                    {
                        continue;
                    }
                    state.last_sent = Some(event.id);
                    return Some((Ok(sse_event(&event)), state));
                }
                Err(RecvError::Lagged(_)) => {
                    // Too slow for the live channel: catch up from the store instead.
                    let after = state.last_sent.unwrap_or([0; 16]);
                    match state
                        .app
                        .store
                        .events_after(&state.workspace_id, after, RESUME_LIMIT)
                        .await
                    {
                        Ok(events) => state.backlog = events.into(),
                        Err(err) => {
                            tracing::warn!(error = %err, "live stream catch-up failed");
                            return None;
                        }
                    }
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat")))
}
