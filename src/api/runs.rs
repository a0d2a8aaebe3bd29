//! Flow runs: `GET /api/flows/{id}/runs` (newest first), `GET /api/runs/{id}` (one run with
//! every action's request and response), `GET /api/runs` (every flow's, filtered) and
//! `POST /api/runs/{id}/retry`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{Admin, time_param};
use crate::app::App;
use crate::auth::User;
use crate::flows::engine::{Call, Rendered};
use crate::flows::{service, views};
use crate::problem::Problem;
use crate::store::{
    ActionRun, Run, RunOrigin, RunQuery, RunStatus, format_event_id, format_id, parse_id,
};
use crate::time::rfc3339;

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;

/// A run in a list.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    id: String,
    flow_id: String,
    flow_name: String,
    /// The event that triggered it (null for a test on an inline event).
    webhook_id: Option<String>,
    event_type: String,
    /// `queued`, `running`, `succeeded`, `failed` or `skipped`.
    status: &'static str,
    /// Made by `POST /api/webhooks/{id}/replay`.
    replay: bool,
    /// Made by `POST /api/flows/{id}/test` with `execute: true`.
    test: bool,
    /// Made by `POST /api/runs/{id}/retry`.
    retry: bool,
    /// From start to finish (null until it finished).
    duration_ms: Option<i64>,
    created_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    error: Option<String>,
}

impl RunSummary {
    pub fn new(app: &App, run: &Run) -> RunSummary {
        RunSummary {
            id: format_id(&run.id),
            flow_id: format_id(&run.flow.id),
            flow_name: run.flow.name.clone(),
            webhook_id: run.event_id.as_ref().map(format_event_id),
            event_type: run.event_type.clone(),
            status: service::displayed_status(app, run).as_str(),
            replay: run.origin == RunOrigin::Replay,
            test: run.origin == RunOrigin::Test,
            retry: run.origin == RunOrigin::Retry,
            duration_ms: run.started_at.zip(run.finished_at).map(|(s, f)| f - s),
            created_at: rfc3339(run.created_at),
            started_at: run.started_at.map(rfc3339),
            finished_at: run.finished_at.map(rfc3339),
            error: run.error.clone(),
        }
    }
}

/// A request an action sent (or, in a dry run, would send); never the token.
#[derive(Serialize, ToSchema)]
pub struct SentRequestView {
    method: String,
    url: String,
    /// Query parameters by name; a repeated name is a list.
    query: Map<String, Value>,
    /// The JSON body (a string when it is not JSON).
    body: Option<Value>,
    /// An HTTP action's header names, values masked (they are secrets).
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<Map<String, Value>>,
}

/// Header names with masked values.
fn masked(names: &[String]) -> Map<String, Value> {
    names
        .iter()
        .map(|n| (n.clone(), Value::from(crate::destinations::MASK)))
        .collect()
}

/// Query pairs as an object; a repeated name becomes a list.
fn query_object(pairs: &[(String, String)]) -> Map<String, Value> {
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
    out
}

fn text_or_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

impl SentRequestView {
    pub fn from_rendered(rendered: &Rendered) -> SentRequestView {
        SentRequestView {
            method: rendered.method.clone(),
            url: rendered.url.clone(),
            query: query_object(&rendered.query),
            body: rendered.body_text.as_deref().map(text_or_json),
            headers: matches!(rendered.call, Call::Http { .. })
                .then(|| masked(&rendered.header_names)),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ActionResponseView {
    status: u16,
    /// JSON when it is JSON (and not cut), else the text; null when hidden.
    body: Value,
    /// The body was longer than the kept limit and was cut.
    truncated: bool,
    /// The body is withheld: the action read it with the add-on's token, and the caller is
    /// not an admin (docs/security.md).
    hidden: bool,
}

/// One action of a run.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionRunView {
    name: String,
    /// `http` for an HTTP request action (absent for Clockify operations).
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    /// Empty for an HTTP action.
    operation_id: String,
    /// `sending`, `succeeded` or `failed`.
    status: &'static str,
    request: SentRequestView,
    response: Option<ActionResponseView>,
    duration_ms: u64,
    attempts: u32,
    error: Option<String>,
    started_at: String,
}

impl From<&ActionRun> for ActionRunView {
    fn from(action: &ActionRun) -> Self {
        let response = action.response_status.map(|status| {
            let bytes = action.response_body.as_deref().unwrap_or_default();
            let text = String::from_utf8_lossy(bytes);
            let body = if text.is_empty() {
                Value::Null
            } else if action.response_truncated {
                Value::String(text.into_owned())
            } else {
                text_or_json(&text)
            };
            ActionResponseView {
                status,
                body,
                truncated: action.response_truncated,
                hidden: false,
            }
        });
        ActionRunView {
            name: action.name.clone(),
            kind: None,
            operation_id: action.operation_id.clone(),
            status: action.status.as_str(),
            request: SentRequestView {
                method: action.method.clone(),
                url: action.url.clone(),
                query: query_object(&action.query),
                body: action.body.as_deref().map(text_or_json),
                headers: None,
            },
            response,
            duration_ms: action.duration_ms,
            attempts: action.attempts,
            error: action.error.clone(),
            started_at: rfc3339(action.started_at),
        }
    }
}

/// One run in full.
#[derive(Serialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    summary: RunSummary,
    actions: Vec<ActionRunView>,
}

impl RunDetail {
    pub fn new(app: &App, run: &Run) -> RunDetail {
        RunDetail {
            summary: RunSummary::new(app, run),
            actions: run
                .actions
                .iter()
                .map(|record| {
                    let mut view = ActionRunView::from(record);
                    // An HTTP action's header names, from the flow the run followed.
                    let call = run
                        .flow
                        .actions
                        .iter()
                        .find(|a| a.name == record.name)
                        .and_then(|a| a.http.as_ref());
                    if let Some(call) = call
                        && !record.method.is_empty()
                    {
                        let names: Vec<String> =
                            call.headers.iter().map(|(n, _)| n.clone()).collect();
                        view.request.headers = Some(masked(&names));
                        view.kind = Some("http");
                    }
                    view
                })
                .collect(),
        }
    }

    /// Actions call Clockify with the add-on's token, which reads more than a member may see:
    /// their answers are for owners and admins (docs/security.md).
    fn hide_responses(&mut self) {
        for response in self.actions.iter_mut().filter_map(|a| a.response.as_mut()) {
            response.body = Value::Null;
            response.hidden = true;
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunList {
    items: Vec<RunSummary>,
    /// Where the next page starts (pass as `cursor`); null when there is no more.
    next_cursor: Option<String>,
}

/// Paging of run lists.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct RunListParams {
    /// 1 to 200 (default 50).
    limit: Option<u32>,
    /// The previous page's `nextCursor`.
    cursor: Option<String>,
}

fn limit_and_cursor(uri: &Uri) -> Result<(usize, Option<[u8; 16]>), ApiError> {
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

/// A flow's runs, newest first.
#[utoipa::path(get, path = "/api/flows/{id}/runs", tag = "flows",
    params(("id" = String, Path), RunListParams),
    responses((status = 200, body = RunList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn flow_runs(
    State(app): State<App>,
    user: User,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<RunList>, ApiError> {
    let (limit, cursor) = limit_and_cursor(&uri)?;
    let page = service::runs(&app, &user.workspace_id, &id, cursor, limit).await?;
    Ok(Json(RunList {
        items: page
            .items
            .iter()
            .map(|r| RunSummary::new(&app, r))
            .collect(),
        next_cursor: page.next_cursor.as_ref().map(format_id),
    }))
}

#[utoipa::path(get, path = "/api/runs/{id}", tag = "flows", params(("id" = String, Path)),
    responses((status = 200, body = RunDetail), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn run(
    State(app): State<App>,
    user: User,
    Path(id): Path<String>,
) -> Result<Json<RunDetail>, ApiError> {
    let run = service::run(&app, &user.workspace_id, &id).await?;
    let mut detail = RunDetail::new(&app, &run);
    if !user.is_admin() {
        detail.hide_responses();
    }
    Ok(Json(detail))
}

/// Runs one `GET /api/runs` may examine before it returns a cursor to continue from.
const RUN_SCAN_LIMIT: usize = 5_000;

/// The filters of `GET /api/runs`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct RunFilterParams {
    /// Only this flow's runs.
    flow: Option<String>,
    /// `queued`, `running`, `succeeded`, `failed` or `skipped`, comma-separated.
    status: Option<String>,
    /// Created at or after this RFC 3339 time.
    from: Option<String>,
    /// Created at or before this RFC 3339 time.
    to: Option<String>,
    /// The previous page's `nextCursor`.
    cursor: Option<String>,
    /// 1 to 200 (default 50).
    limit: Option<u32>,
}

/// Statuses as the API names them; `running` is a queued run the engine is executing.
const STATUSES: [&str; 5] = ["queued", "running", "succeeded", "failed", "skipped"];

/// Reads the query of `GET /api/runs`, reporting every bad parameter; also the statuses
/// asked for by name (`queued` and `running` share a stored status).
fn run_filter(query: &str) -> Result<(RunQuery, Vec<&'static str>), Vec<Problem>> {
    let mut filter = RunQuery {
        limit: DEFAULT_LIMIT,
        scan_limit: RUN_SCAN_LIMIT,
        ..RunQuery::default()
    };
    let mut wanted: Vec<&'static str> = Vec::new();
    let mut problems = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match key.as_ref() {
            "flow" => match parse_id(value) {
                Some(id) => filter.flow = Some(id),
                None => problems.push(Problem::new("flow", format!("no flow {value}"))),
            },
            "status" => {
                for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    match STATUSES.iter().find(|s| s.eq_ignore_ascii_case(part)) {
                        Some(status) => wanted.push(status),
                        None => problems.push(Problem::new(
                            "status",
                            format!("status must be one of {} (not {part})", STATUSES.join(", ")),
                        )),
                    }
                }
            }
            "from" => match time_param("from", value) {
                Ok(ms) => filter.from_ms = Some(ms),
                Err(p) => problems.push(p),
            },
            "to" => match time_param("to", value) {
                Ok(ms) => filter.to_ms = Some(ms),
                Err(p) => problems.push(p),
            },
            "cursor" => match parse_id(value) {
                Some(id) => filter.before = Some(id),
                None => problems.push(Problem::new("cursor", "cursor is not a run id")),
            },
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => filter.limit = n,
                _ => problems.push(Problem::new(
                    "limit",
                    format!("limit must be 1 to {MAX_LIMIT}"),
                )),
            },
            _ => {}
        }
    }
    filter.statuses = wanted
        .iter()
        .map(|s| match *s {
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "skipped" => RunStatus::Skipped,
            _ => RunStatus::Queued,
        })
        .collect();
    if problems.is_empty() {
        Ok((filter, wanted))
    } else {
        Err(problems)
    }
}

/// Runs of every flow of the workspace, newest first. A page cut short by the scan limit
/// still carries a cursor.
#[utoipa::path(get, path = "/api/runs", tag = "flows", params(RunFilterParams),
    responses((status = 200, body = RunList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(State(app): State<App>, user: User, uri: Uri) -> Result<Json<RunList>, ApiError> {
    let (filter, wanted) = run_filter(uri.query().unwrap_or(""))
        .map_err(|problems| ApiError::invalid("invalid query parameters", problems))?;
    let page = views::workspace_runs(&app, &user.workspace_id, filter).await?;
    let items = page
        .items
        .iter()
        .map(|r| RunSummary::new(&app, r))
        .filter(|r| wanted.is_empty() || wanted.contains(&r.status))
        .collect();
    Ok(Json(RunList {
        items,
        next_cursor: page.next_cursor.as_ref().map(format_id),
    }))
}

/// A new run of a failed run's flow (as it is now) on the same event, recorded as a retry.
#[utoipa::path(post, path = "/api/runs/{id}/retry", tag = "flows", params(("id" = String, Path)),
    responses((status = 202, body = RunSummary), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn retry(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<RunSummary>), ApiError> {
    let run = views::retry(&app, &user.workspace_id, &id).await?;
    crate::audit::by_user(
        &app,
        &user,
        crate::audit::Change {
            action: "run.retry",
            target: Some(id.clone()),
            before: None,
            after: Some(serde_json::json!({ "run": format_id(&run.id) })),
        },
    )
    .await;
    Ok((StatusCode::ACCEPTED, Json(RunSummary::new(&app, &run))))
}
