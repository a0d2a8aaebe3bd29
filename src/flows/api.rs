//! The flows JSON API (docs/API.md "Flows"): definitions, runs, dry runs and test runs, and
//! replays of stored events.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::engine::{self, context_for, render_action};
use super::model::{self, FlowSpec, Known, flow_json};
use crate::auth::{Admin, User};
use crate::error::ApiError;
use crate::http::{parse_json, read_body};
use crate::server::App;
use crate::store::{
    ActionRun, CLOCKIFY_SOURCE, Flow, FlowId, Run, RunOrigin, format_event_id, format_id, new_id,
    parse_event_id, parse_id,
};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;
/// How long `test` with `execute: true` waits for its run before answering with it as is.
const TEST_RUN_WAIT: Duration = Duration::from_secs(20);

pub fn routes() -> Router<App> {
    Router::new()
        .route("/api/flows", get(list).post(create))
        .route("/api/flows/{id}", get(read).put(update).delete(remove))
        .route("/api/flows/{id}/enable", post(enable))
        .route("/api/flows/{id}/disable", post(disable))
        .route("/api/flows/{id}/test", post(test))
        .route("/api/flows/{id}/runs", get(runs))
        .route("/api/runs/{id}", get(run))
        .route("/api/webhooks/{id}/replay", post(replay))
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn flow_id(text: &str) -> Result<FlowId, ApiError> {
    parse_id(text).ok_or_else(|| ApiError::NotFound(format!("no flow {text}")))
}

async fn json_body(app: &App, headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let bytes = read_body(headers, body, app.config.api_body_limit).await?;
    parse_json(&bytes)
}

/// Reads and checks a flow body, looking up its custom source first.
async fn spec(app: &App, ws: &str, input: &Value) -> Result<FlowSpec, ApiError> {
    let custom_source = match model::trigger_source(input) {
        Some(source) if source != CLOCKIFY_SOURCE => Some(
            app.store
                .source(source)
                .await?
                .is_some_and(|s| s.workspace_id == ws),
        ),
        _ => None,
    };
    model::parse(input, &Known { custom_source }).map_err(|problems| ApiError::Invalid {
        summary: format!("the flow has {} problem(s)", problems.len()),
        problems,
    })
}

fn summary_json(app: &App, run: &Run) -> Value {
    json!({
        "id": format_id(&run.id),
        "flowId": format_id(&run.flow.id),
        "flowName": run.flow.name,
        "webhookId": run.event_id.as_ref().map(format_event_id),
        "eventType": run.event_type,
        "status": engine::displayed_status(app, run).as_str(),
        "replay": run.origin == RunOrigin::Replay,
        "test": run.origin == RunOrigin::Test,
        "createdAt": rfc3339(run.created_at),
        "startedAt": run.started_at.map(rfc3339),
        "finishedAt": run.finished_at.map(rfc3339),
        "error": run.error,
    })
}

/// Query pairs as an object; a repeated name becomes a list.
fn query_json(pairs: &[(String, String)]) -> Value {
    let mut out = Map::new();
    for (k, v) in pairs {
        match out.get_mut(k) {
            None => {
                out.insert(k.clone(), json!(v));
            }
            Some(Value::Array(items)) => items.push(json!(v)),
            Some(existing) => {
                let first = existing.take();
                *existing = json!([first, v]);
            }
        }
    }
    Value::Object(out)
}

fn text_or_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

fn action_json(action: &ActionRun) -> Value {
    let response = action.response_status.map(|status| {
        let bytes = action.response_body.as_deref().unwrap_or_default();
        let text = String::from_utf8_lossy(bytes);
        let body = if action.response_truncated || text.is_empty() {
            if text.is_empty() {
                Value::Null
            } else {
                Value::String(text.into_owned())
            }
        } else {
            text_or_json(&text)
        };
        json!({"status": status, "body": body, "truncated": action.response_truncated})
    });
    json!({
        "name": action.name,
        "operationId": action.operation_id,
        "status": action.status.as_str(),
        "request": {
            "method": action.method,
            "url": action.url,
            "query": query_json(&action.query),
            "body": action.body.as_deref().map(text_or_json),
        },
        "response": response,
        "durationMs": action.duration_ms,
        "attempts": action.attempts,
        "error": action.error,
        "startedAt": rfc3339(action.started_at),
    })
}

fn run_json(app: &App, run: &Run) -> Value {
    let mut value = summary_json(app, run);
    value["actions"] = Value::Array(run.actions.iter().map(action_json).collect());
    value
}

async fn described(app: &App, flow: &Flow) -> Result<Value, ApiError> {
    let stats = app.store.flow_stats(&flow.workspace_id, flow.id).await?;
    let last_run = match stats.last_run {
        Some(id) => app.store.run(&flow.workspace_id, id).await?,
        None => None,
    };
    let mut value = flow_json(flow);
    value["lastRun"] = last_run.map_or(Value::Null, |r| summary_json(app, &r));
    value["counts"] = json!({
        "succeeded": stats.succeeded,
        "failed": stats.failed,
        "skipped": stats.skipped,
    });
    Ok(value)
}

pub async fn list(State(app): State<App>, user: User) -> Result<Json<Value>, ApiError> {
    let flows = app.store.flows(&user.workspace_id).await?;
    let mut items = Vec::with_capacity(flows.len());
    for flow in &flows {
        items.push(described(&app, flow).await?);
    }
    Ok(Json(json!({"flows": items})))
}

pub async fn create(
    State(app): State<App>,
    Admin(user): Admin,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let input = json_body(&app, &headers, body).await?;
    let spec = spec(&app, &user.workspace_id, &input).await?;
    let now = now_ms();
    let flow = Flow {
        id: new_id(),
        workspace_id: user.workspace_id.clone(),
        name: spec.name,
        enabled: spec.enabled.unwrap_or(true),
        disabled_reason: None,
        trigger: spec.trigger,
        conditions: spec.conditions,
        actions: spec.actions,
        retry: spec.retry,
        created_at: now,
        updated_at: now,
    };
    let saved = app
        .store
        .update_flow(&user.workspace_id, flow.id, move |_| Ok::<_, ()>(flow))
        .await?
        .map_err(|()| ApiError::internal("flow create refused"))?;
    metrics::counter!("flow_changes_total", "change" => "created").increment(1);
    Ok((StatusCode::CREATED, Json(described(&app, &saved).await?)))
}

pub async fn read(
    State(app): State<App>,
    user: User,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let flow = app
        .store
        .flow(&user.workspace_id, flow_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no flow {id}")))?;
    Ok(Json(described(&app, &flow).await?))
}

/// Applies `change` to a stored flow of the workspace; 404 when there is none.
async fn change_flow(
    app: &App,
    ws: &str,
    id: &str,
    change: impl FnOnce(&mut Flow) + Send + 'static,
) -> Result<Json<Value>, ApiError> {
    let flow_id = flow_id(id)?;
    let saved = app
        .store
        .update_flow(ws, flow_id, move |current| {
            let mut flow = current.ok_or(())?;
            change(&mut flow);
            flow.updated_at = now_ms();
            Ok(flow)
        })
        .await?
        .map_err(|()| ApiError::NotFound(format!("no flow {id}")))?;
    Ok(Json(described(app, &saved).await?))
}

pub async fn update(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let input = json_body(&app, &headers, body).await?;
    let spec = spec(&app, &user.workspace_id, &input).await?;
    let response = change_flow(&app, &user.workspace_id, &id, move |flow| {
        let enabled = spec.enabled.unwrap_or(flow.enabled);
        if enabled {
            flow.disabled_reason = None;
        }
        flow.enabled = enabled;
        flow.name = spec.name;
        flow.trigger = spec.trigger;
        flow.conditions = spec.conditions;
        flow.actions = spec.actions;
        flow.retry = spec.retry;
    })
    .await?;
    metrics::counter!("flow_changes_total", "change" => "updated").increment(1);
    Ok(response)
}

pub async fn enable(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    change_flow(&app, &user.workspace_id, &id, |flow| {
        flow.enabled = true;
        flow.disabled_reason = None;
    })
    .await
}

pub async fn disable(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    change_flow(&app, &user.workspace_id, &id, |flow| {
        flow.enabled = false;
        flow.disabled_reason = None;
    })
    .await
}

pub async fn remove(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if app
        .store
        .delete_flow(&user.workspace_id, flow_id(&id)?)
        .await?
    {
        metrics::counter!("flow_changes_total", "change" => "deleted").increment(1);
        Ok(Json(json!({"deleted": true, "id": id})))
    } else {
        Err(ApiError::NotFound(format!("no flow {id}")))
    }
}

fn limit_and_cursor(uri: &axum::http::Uri) -> Result<(usize, Option<[u8; 16]>), ApiError> {
    let mut limit = DEFAULT_LIMIT;
    let mut cursor = None;
    for (key, value) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "limit" => match value.trim().parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => limit = n,
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "limit must be 1 to {MAX_LIMIT}"
                    )));
                }
            },
            "cursor" if !value.trim().is_empty() => {
                cursor = Some(
                    parse_id(value.trim())
                        .ok_or_else(|| ApiError::BadRequest("cursor is not a run id".into()))?,
                );
            }
            _ => {}
        }
    }
    Ok((limit, cursor))
}

pub async fn runs(
    State(app): State<App>,
    user: User,
    Path(id): Path<String>,
    uri: axum::http::Uri,
) -> Result<Json<Value>, ApiError> {
    let flow = flow_id(&id)?;
    let (limit, cursor) = limit_and_cursor(&uri)?;
    let page = app
        .store
        .flow_runs(&user.workspace_id, flow, cursor, limit)
        .await?;
    if page.items.is_empty()
        && cursor.is_none()
        && app.store.flow(&user.workspace_id, flow).await?.is_none()
    {
        return Err(ApiError::NotFound(format!("no flow {id}")));
    }
    Ok(Json(json!({
        "items": page.items.iter().map(|r| summary_json(&app, r)).collect::<Vec<_>>(),
        "nextCursor": page.next_cursor.as_ref().map(format_id),
    })))
}

pub async fn run(
    State(app): State<App>,
    user: User,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let run_id = parse_id(&id).ok_or_else(|| ApiError::NotFound(format!("no run {id}")))?;
    let run = app
        .store
        .run(&user.workspace_id, run_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no run {id}")))?;
    Ok(Json(run_json(&app, &run)))
}

/// `POST /api/flows/{id}/test`: a dry run (conditions and rendered requests, nothing sent),
/// or with `execute: true` a real run recorded as a test run.
pub async fn test(
    State(app): State<App>,
    user: User,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let input = json_body(&app, &headers, body).await?;
    let flow = app
        .store
        .flow(&user.workspace_id, flow_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no flow {id}")))?;
    let execute = match &input["execute"] {
        Value::Null => false,
        Value::Bool(b) => *b,
        _ => return Err(ApiError::BadRequest("execute must be true or false".into())),
    };
    if execute {
        user.require_admin()?;
    }
    // The event: a stored one, or one given inline.
    let (event_id, event_type, event, inline) = match (&input["webhookId"], &input["event"]) {
        (Value::String(webhook), Value::Null) => {
            let stored = match parse_event_id(webhook) {
                Some(event_id) => app.store.event(&user.workspace_id, event_id).await?,
                None => None,
            }
            .ok_or_else(|| ApiError::NotFound(format!("no event {webhook}")))?;
            let body = serde_json::from_slice(&stored.body).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&stored.body).into_owned())
            });
            (Some(stored.id), stored.event_type, body, None)
        }
        (Value::Null, event) if !event.is_null() => {
            let event_type = match &input["eventType"] {
                Value::String(t) if !t.is_empty() => t.clone(),
                Value::Null => flow.trigger.events.first().cloned().unwrap_or_default(),
                _ => return Err(ApiError::BadRequest("eventType must be a string".into())),
            };
            (None, event_type, event.clone(), Some(event.to_string()))
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give either webhookId (a stored event) or event (and eventType)".into(),
            ));
        }
    };
    let trigger_matched = flow.trigger.events.contains(&event_type);
    let (conditions_passed, conditions) = engine::conditions_json(&flow, &event);
    let mut context = context_for(&user.installation, &event, &event_type);
    let retry = crate::clockify::client::RetryPolicy::default();
    let mut actions = Vec::new();
    for action in &flow.actions {
        let entry = match render_action(action, &context, &user.installation, retry) {
            Ok(rendered) => json!({
                "name": action.name,
                "operationId": action.operation_id,
                "request": {
                    "method": rendered.request.method,
                    "url": rendered.url,
                    "query": query_json(&rendered.request.query),
                    "body": rendered.body_text.as_deref().map(text_or_json),
                },
                "error": null,
            }),
            Err(error) => json!({
                "name": action.name,
                "operationId": action.operation_id,
                "request": null,
                "error": error,
            }),
        };
        actions.push(entry);
        context.add_unavailable_action(&action.name);
    }
    let run = if execute {
        let mut run = Run::new(&flow, event_id, &event_type, RunOrigin::Test, now_ms());
        run.inline_event = inline.map(String::into_bytes);
        let run_id = run.id;
        let mut finished = app.store.subscribe_finished_runs();
        app.store.enqueue_runs(vec![run]).await?;
        let _ = tokio::time::timeout(TEST_RUN_WAIT, async {
            loop {
                match finished.recv().await {
                    Ok(id) if id == run_id => break,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // A lagged receiver may have missed it: look.
                        if let Ok(Some(r)) = app.store.run(&user.workspace_id, run_id).await
                            && r.status.is_final()
                        {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        })
        .await;
        app.store
            .run(&user.workspace_id, run_id)
            .await?
            .map(|r| run_json(&app, &r))
    } else {
        None
    };
    Ok(Json(json!({
        "matched": trigger_matched && conditions_passed,
        "triggerMatched": trigger_matched,
        "conditionsPassed": conditions_passed,
        "conditions": conditions,
        "actions": actions,
        "run": run,
    })))
}

/// `POST /api/webhooks/{id}/replay`: new runs of every enabled flow the stored event
/// triggers, marked as replays.
pub async fn replay(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let event = match parse_event_id(&id) {
        Some(event_id) => app.store.event(&user.workspace_id, event_id).await?,
        None => None,
    }
    .ok_or_else(|| ApiError::NotFound(format!("no event {id}")))?;
    let source = event.source_id.as_deref().unwrap_or(CLOCKIFY_SOURCE);
    let now = now_ms();
    let runs: Vec<Run> = app
        .store
        .flows_triggered_by(&user.workspace_id, source, &event.event_type)
        .iter()
        .map(|flow| {
            Run::new(
                flow,
                Some(event.id),
                &event.event_type,
                RunOrigin::Replay,
                now,
            )
        })
        .collect();
    let summaries: Vec<Value> = runs.iter().map(|r| summary_json(&app, r)).collect();
    if !runs.is_empty() {
        app.store.enqueue_runs(runs).await?;
    }
    metrics::counter!("flow_replays_total").increment(1);
    Ok(Json(json!({"runs": summaries})))
}
