//! Reading stored events back: newest-first pages with filters, one event in full, erase,
//! and a live Server-Sent Events stream with `Last-Event-ID` resume.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::auth::{Admin, StreamUser, User};
use crate::error::ApiError;
use crate::server::App;
use crate::store::{EventId, EventQuery, StoredEvent, format_event_id, parse_event_id};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;
/// Rows one listing may examine before it returns a cursor to continue from.
const SCAN_LIMIT: usize = 20_000;
const PREVIEW_CHARS: usize = 160;
/// Events replayed at most on an SSE (re)connection.
const RESUME_LIMIT: usize = 1_000;
const HEARTBEAT: Duration = Duration::from_secs(15);

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(PREVIEW_CHARS * 4)]);
    let collapsed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = collapsed.chars().take(PREVIEW_CHARS).collect();
    if collapsed.chars().count() > PREVIEW_CHARS {
        out.push('…');
    }
    out
}

pub fn summary(event: &StoredEvent) -> Value {
    json!({
        "id": format_event_id(&event.id),
        "eventType": event.event_type,
        "source": event.source,
        "sourceId": event.source_id,
        "receivedAt": rfc3339(event.received_at),
        "duplicates": event.duplicates,
        "size": event.body.len(),
        "preview": preview(&event.body),
    })
}

fn detail(event: &StoredEvent) -> Value {
    let mut value = summary(event);
    let object = value.as_object_mut().expect("summary is an object");
    object.remove("preview");
    let body = serde_json::from_slice::<Value>(&event.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&event.body).into_owned()));
    object.insert("body".into(), body);
    object.insert(
        "headers".into(),
        Value::Array(event.headers.iter().map(|(k, v)| json!([k, v])).collect()),
    );
    value
}

/// The `q` filter: `field=value` (exact, case-insensitive), `field:value` (contains) on a
/// dotted path into the JSON body, or else a case-insensitive substring of the body.
#[derive(Clone)]
enum TextFilter {
    Substring(String),
    Field {
        path: Vec<String>,
        value: String,
        exact: bool,
    },
}

impl TextFilter {
    fn parse(q: &str) -> TextFilter {
        let split = q.find(['=', ':']).filter(|&i| {
            i > 0
                && q[..i]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
        });
        match split {
            Some(i) => TextFilter::Field {
                path: q[..i].split('.').map(str::to_string).collect(),
                value: q[i + 1..].trim().to_lowercase(),
                exact: q.as_bytes()[i] == b'=',
            },
            None => TextFilter::Substring(q.to_lowercase()),
        }
    }

    fn matches(&self, body: &[u8]) -> bool {
        match self {
            TextFilter::Substring(needle) => String::from_utf8_lossy(body)
                .to_lowercase()
                .contains(needle.as_str()),
            TextFilter::Field { path, value, exact } => {
                let Ok(json) = serde_json::from_slice::<Value>(body) else {
                    return false;
                };
                let mut found = Vec::new();
                collect_at(&json, path, &mut found);
                found.iter().any(|v| {
                    let text = match v {
                        Value::String(s) => s.to_lowercase(),
                        other => other.to_string().to_lowercase(),
                    };
                    if *exact {
                        text == *value
                    } else {
                        text.contains(value.as_str())
                    }
                })
            }
        }
    }
}

/// Values at a dotted path; arrays are searched element-wise (`tags.name`) or by index.
fn collect_at<'a>(value: &'a Value, path: &[String], out: &mut Vec<&'a Value>) {
    let Some((head, rest)) = path.split_first() else {
        out.push(value);
        return;
    };
    match value {
        Value::Object(map) => {
            if let Some(next) = map.get(head) {
                collect_at(next, rest, out);
            }
        }
        Value::Array(items) => match head.parse::<usize>() {
            Ok(index) => {
                if let Some(next) = items.get(index) {
                    collect_at(next, rest, out);
                }
            }
            Err(_) => items.iter().for_each(|item| collect_at(item, path, out)),
        },
        _ => {}
    }
}

fn parse_time(name: &str, value: &str) -> Result<i64, ApiError> {
    value
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "{name} must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z"
            ))
        })
}

/// `GET /api/webhooks?cursor&limit&event&source&from&to&q`.
pub async fn list(
    State(app): State<App>,
    user: User,
    uri: axum::http::Uri,
) -> Result<Json<Value>, ApiError> {
    let mut query = EventQuery {
        before: None,
        from_ms: None,
        to_ms: None,
        event_types: Vec::new(),
        limit: DEFAULT_LIMIT,
        scan_limit: SCAN_LIMIT,
    };
    let mut source: Option<String> = None;
    let mut text: Option<TextFilter> = None;
    let mut problems = Vec::new();
    for (key, value) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        let value = value.trim().to_string();
        match key.as_ref() {
            "cursor" if !value.is_empty() => match parse_event_id(&value) {
                Some(id) => query.before = Some(id),
                None => problems.push("cursor is not an event id".to_string()),
            },
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => query.limit = n,
                _ => problems.push(format!("limit must be 1 to {MAX_LIMIT}")),
            },
            "event" => query.event_types.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            ),
            "source" if !value.is_empty() => source = Some(value),
            "from" if !value.is_empty() => match parse_time("from", &value) {
                Ok(ms) => query.from_ms = Some(ms),
                Err(e) => problems.push(e.to_string()),
            },
            "to" if !value.is_empty() => match parse_time("to", &value) {
                Ok(ms) => query.to_ms = Some(ms),
                Err(e) => problems.push(e.to_string()),
            },
            "q" if !value.is_empty() => text = Some(TextFilter::parse(&value)),
            _ => {}
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::Invalid {
            summary: "invalid query parameters".into(),
            problems,
        });
    }
    let page = app
        .store
        .list_events(&user.workspace_id, query, move |event| {
            source
                .as_deref()
                .is_none_or(|s| event.source == s || event.source_id.as_deref() == Some(s))
                && text.as_ref().is_none_or(|t| t.matches(&event.body))
        })
        .await?;
    Ok(Json(json!({
        "items": page.items.iter().map(summary).collect::<Vec<_>>(),
        "nextCursor": page.next_cursor.as_ref().map(format_event_id),
    })))
}

fn event_id(text: &str) -> Result<EventId, ApiError> {
    parse_event_id(text).ok_or_else(|| ApiError::NotFound(format!("no event {text}")))
}

pub async fn get(
    State(app): State<App>,
    user: User,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let event = app
        .store
        .event(&user.workspace_id, event_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no event {id}")))?;
    Ok(Json(detail(&event)))
}

/// The body exactly as received (for copying, and to prove nothing was altered).
pub async fn raw(
    State(app): State<App>,
    user: User,
    Path(id): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let event = app
        .store
        .event(&user.workspace_id, event_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no event {id}")))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        event.body,
    )
        .into_response())
}

pub async fn delete(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if app
        .store
        .delete_event(&user.workspace_id, event_id(&id)?)
        .await?
    {
        Ok(Json(json!({"deleted": true, "id": id})))
    } else {
        Err(ApiError::NotFound(format!("no event {id}")))
    }
}

fn sse_event(event: &StoredEvent) -> SseEvent {
    SseEvent::default()
        .id(format_event_id(&event.id))
        .event("webhook")
        .data(summary(event).to_string())
}

struct StreamState {
    app: App,
    workspace_id: String,
    receiver: tokio::sync::broadcast::Receiver<Arc<StoredEvent>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    backlog: std::collections::VecDeque<StoredEvent>,
    last_sent: Option<EventId>,
}

/// `GET /api/webhooks/stream`: new events of the token's workspace as they are committed.
/// On reconnect, `Last-Event-ID` (or `?lastEventId=`) replays what was missed first.
pub async fn stream(
    State(app): State<App>,
    StreamUser(user): StreamUser,
    headers: HeaderMap,
    uri: axum::http::Uri,
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
