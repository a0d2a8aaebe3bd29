//! `/api/webhooks`: reading stored events back: newest-first pages with filters, one event in
//! full, its raw body, erase, and a live Server-Sent Events stream with `Last-Event-ID`
//! resume.

use std::collections::BTreeMap;
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
use super::extract::{Admin, StreamUser, path_id, time_param};
use super::runs::RunSummary;
use super::types::Deleted;
use crate::app::App;
use crate::auth::User;
use crate::event_summary;
use crate::events::{self, EventFilter, TextFilter, preview};
use crate::flows::{service, views};
use crate::problem::Problem;
use crate::store::{
    EventId, EventQuery, Run, RunStatus, StoredEvent, format_event_id, millis_of_id, parse_event_id,
};
use crate::time::rfc3339;

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
    /// `clockify`, `studio` (the server's own notifications) or the custom source's name.
    source: String,
    /// The custom source's id, `studio` for the server's own notifications (null for
    /// Clockify).
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
    /// What the event is about in one line, read from the body ("Time entry 'Audit' by Ana,
    /// 2 h, Project X"); null when the body says nothing recognisable.
    summary: Option<String>,
    /// In listings: what the runs this event's arrival started came to (the latest retry of
    /// each); null when it started none.
    flows: Option<FlowOutcome>,
}

/// The runs an event's arrival started, by outcome.
#[derive(Serialize, ToSchema)]
pub struct FlowOutcome {
    /// `failed` if any failed, `running` while any is unfinished, else `succeeded` or
    /// `skipped`.
    outcome: &'static str,
    runs: usize,
    /// Runs by status.
    counts: BTreeMap<&'static str, usize>,
}

impl FlowOutcome {
    fn new(app: &App, runs: &[Run]) -> FlowOutcome {
        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        for run in runs {
            *counts
                .entry(service::displayed_status(app, run).as_str())
                .or_default() += 1;
        }
        let has = |s: RunStatus| counts.contains_key(s.as_str());
        let outcome = if has(RunStatus::Failed) {
            "failed"
        } else if has(RunStatus::Queued) || has(RunStatus::Running) {
            "running"
        } else if has(RunStatus::Succeeded) {
            "succeeded"
        } else {
            "skipped"
        };
        FlowOutcome {
            outcome,
            runs: runs.len(),
            counts,
        }
    }
}

impl From<&StoredEvent> for EventSummary {
    fn from(event: &StoredEvent) -> Self {
        EventSummary {
            fields: EventFields::from(event),
            preview: preview(&event.body),
            summary: event_summary::line(&event.event_type, &event.body),
            flows: None,
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
    /// Events examined for this page (a text or source search examines many per item).
    scanned: usize,
    /// When the oldest event examined was received (RFC 3339): with `nextCursor`, how far a
    /// search got within its time budget.
    scanned_to: Option<String>,
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
    /// text the body contains; case-insensitive. Scans for up to a second per request.
    q: Option<String>,
    /// An entity id (a time entry, user, project, task, client, tag …): the events whose body
    /// names it, newest first, from the entity index. Combines with `cursor` and `limit` only.
    entity: Option<String>,
}

/// `GET /api/webhooks?entity=`: the entity, if asked for, once no other filter is given.
fn entity_param(query: &str) -> Result<Option<String>, Vec<Problem>> {
    let mut entity = None;
    let mut others = false;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "entity" => entity = Some(value.trim().to_string()),
            "cursor" | "limit" => {}
            _ if !value.trim().is_empty() => others = true,
            _ => {}
        }
    }
    match entity {
        Some(e) if e.is_empty() || e.len() > 64 || e.chars().any(char::is_control) => {
            Err(vec![Problem::new(
                "entity",
                "entity must be an id of 1 to 64 printable characters",
            )])
        }
        Some(_) if others => Err(vec![Problem::new(
            "entity",
            "entity combines with cursor and limit only",
        )]),
        other => Ok(other),
    }
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
            deadline: None,
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
    let query = uri.query().unwrap_or("");
    let invalid = |problems| ApiError::invalid("invalid query parameters", problems);
    let entity = entity_param(query).map_err(invalid)?;
    let filter = event_filter(query).map_err(invalid)?;
    let page = match entity {
        Some(entity) => {
            events::entity_history(
                &app,
                &user.workspace_id,
                &entity,
                filter.query.before,
                filter.query.limit,
            )
            .await?
        }
        None => events::list(&app, &user.workspace_id, filter).await?,
    };
    let started = views::started_by_events(
        &app,
        &user.workspace_id,
        page.items.iter().map(|e| e.id).collect(),
    )
    .await?;
    let items = page
        .items
        .iter()
        .map(|event| {
            let mut summary = EventSummary::from(event);
            summary.flows = started
                .get(&event.id)
                .map(|runs| FlowOutcome::new(&app, runs));
            summary
        })
        .collect();
    Ok(Json(EventList {
        items,
        next_cursor: page.next_cursor.as_ref().map(format_event_id),
        scanned: page.scanned,
        scanned_to: page.scanned_to.map(|id| rfc3339(millis_of_id(&id))),
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
    if events::delete(&app, &user.workspace_id, path_id(&id, "event")?).await? {
        crate::audit::by_user(
            &app,
            &user,
            crate::audit::Change {
                action: "event.delete",
                target: Some(id.clone()),
                before: None,
                after: None,
            },
        )
        .await;
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

/// A single-use ticket that opens the live stream.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamTicket {
    /// Opaque; pass as `GET /api/webhooks/stream?ticket=…`.
    ticket: String,
    /// The ticket works once, until this time (60 s after it was issued).
    expires_at: String,
}

/// Trades the user token (in the header) for a single-use ticket, valid 60 s and bound to the
/// token's workspace and user, that opens the live stream: EventSource cannot send headers,
/// and a token in a URL would end up in proxy logs.
#[utoipa::path(post, path = "/api/webhooks/stream-ticket", tag = "events",
    responses((status = 200, body = StreamTicket),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn stream_ticket(State(app): State<App>, user: User) -> Json<StreamTicket> {
    let ticket = app
        .stream_tickets
        .issue(&user.workspace_id, user.claims.clone());
    let ttl = jiff::SignedDuration::try_from(crate::tickets::TICKET_TTL).unwrap_or_default();
    Json(StreamTicket {
        ticket,
        expires_at: (jiff::Timestamp::now() + ttl).to_string(),
    })
}

/// New events of the token's workspace as they are committed (Server-Sent Events, event name
/// `webhook`, data an event summary). Opened with a ticket from
/// `POST /api/webhooks/stream-ticket` (or the `X-Addon-Token` header). On reconnect,
/// `Last-Event-ID` (or `?lastEventId=`) replays what was missed first.
#[utoipa::path(get, path = "/api/webhooks/stream", tag = "events",
    params(("lastEventId" = Option<String>, Query, description = "Resume after this event"),
        ("ticket" = Option<String>, Query, description = "A single-use stream ticket (EventSource cannot set headers)")),
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

/// Events one export holds at most; a larger log is exported in time ranges.
pub const EXPORT_MAX: usize = 100_000;
const EXPORT_PAGE: usize = 200;

#[derive(Serialize, ToSchema)]
pub struct EventTypes {
    /// Every event type stored in the workspace, custom sources' own included.
    types: Vec<String>,
}

/// The event types stored in the workspace (for the type filter).
#[utoipa::path(get, path = "/api/webhooks/types", tag = "events",
    responses((status = 200, body = EventTypes), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn types(State(app): State<App>, user: User) -> Result<Json<EventTypes>, ApiError> {
    let types = app.store.stored_event_types(&user.workspace_id).await?;
    Ok(Json(EventTypes { types }))
}

#[derive(Serialize, ToSchema)]
pub struct StartedRuns {
    runs: Vec<RunSummary>,
}

/// The runs the event's arrival started (the latest retry of each).
#[utoipa::path(get, path = "/api/webhooks/{id}/runs", tag = "events", params(("id" = String, Path)),
    responses((status = 200, body = StartedRuns), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn runs(
    State(app): State<App>,
    user: User,
    Path(id): Path<String>,
) -> Result<Json<StartedRuns>, ApiError> {
    let event = find(&app, &user, &id).await?;
    let mut started = views::started_by_events(&app, &user.workspace_id, vec![event.id]).await?;
    let runs = started.remove(&event.id).unwrap_or_default();
    Ok(Json(StartedRuns {
        runs: runs.iter().map(|r| RunSummary::new(&app, r)).collect(),
    }))
}

/// The events matching the filters of `GET /api/webhooks` (without `limit`), newest first,
/// as NDJSON: one event in full per line, streamed page by page, at most 100,000.
#[utoipa::path(get, path = "/api/webhooks/export", tag = "events", params(EventListParams),
    responses((status = 200, description = "One event (as GET /api/webhooks/{id}) per line", content_type = "application/x-ndjson"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn export(State(app): State<App>, user: User, uri: Uri) -> Result<Response, ApiError> {
    let filter = event_filter(uri.query().unwrap_or(""))
        .map_err(|problems| ApiError::invalid("invalid query parameters", problems))?;
    let ws = user.workspace_id.clone();
    struct Cursor {
        before: Option<EventId>,
        sent: usize,
        done: bool,
    }
    let start = Cursor {
        before: filter.query.before,
        sent: 0,
        done: false,
    };
    let pages = futures_util::stream::unfold(start, move |mut cursor| {
        let app = app.clone();
        let ws = ws.clone();
        let page_filter = EventFilter {
            query: EventQuery {
                before: cursor.before,
                from_ms: filter.query.from_ms,
                to_ms: filter.query.to_ms,
                event_types: filter.query.event_types.clone(),
                limit: EXPORT_PAGE
                    .min(EXPORT_MAX.saturating_sub(cursor.sent))
                    .max(1),
                scan_limit: filter.query.scan_limit,
                deadline: None,
            },
            source: filter.source.clone(),
            text: filter.text.clone(),
        };
        async move {
            if cursor.done || cursor.sent >= EXPORT_MAX {
                return None;
            }
            let page = match events::list(&app, &ws, page_filter).await {
                Ok(page) => page,
                Err(err) => {
                    // The status is already sent: end the file early and say why in the log.
                    tracing::warn!(error = %err, "event export stopped");
                    return None;
                }
            };
            let mut chunk = Vec::with_capacity(page.items.len() * 512);
            for event in &page.items {
                serde_json::to_writer(&mut chunk, &EventDetail::from(event))
                    .expect("JSON to memory");
                chunk.push(b'\n');
            }
            cursor.sent += page.items.len();
            cursor.before = page.next_cursor;
            cursor.done = page.next_cursor.is_none();
            Some((Ok::<_, Infallible>(axum::body::Bytes::from(chunk)), cursor))
        }
    });
    let date = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let name = user
        .workspace_id
        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_");
    // Fused: the compression layer may poll once more after the end.
    let body = axum::body::Body::from_stream(futures_util::StreamExt::fuse(pages));
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"events-{name}-{date}.ndjson\""),
            ),
        ],
        body,
    )
        .into_response())
}
