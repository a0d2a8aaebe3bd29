//! `/api/flows`: flow definitions (read for every user, written by admins), dry and test
//! runs, and `POST /api/webhooks/{id}/replay`. The work is `crate::flows::service`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::extract::{Admin, JsonBody};
use super::runs::{RunDetail, RunSummary, SentRequestView};
use super::types::Deleted;
use crate::app::App;
use crate::audit::{self, Change};
use crate::auth::User;
use crate::flows::model;
use crate::flows::service::{self, FlowState, Masks, TestRequest};
use crate::flows::views::{self, Candidate};
use crate::problem::{self, Problem};
use crate::store::{Flow, FlowAction, FlowsPause, Json as Stored, PauseMode, format_id};
use crate::time::rfc3339;

/// Where a flow's events come from and which trigger it.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct TriggerView {
    /// `clockify`, or a custom source's id.
    source: String,
    /// Event types (Clockify's, or the custom source's own).
    events: Vec<String>,
}

/// One condition: `path` is an RFC 9535 JSONPath into the event body.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RuleView {
    path: String,
    /// `eq`, `ne`, `gt`, `gte`, `lt`, `lte`, `contains`, `not_contains`, `in`, `not_in`,
    /// `exists`, `not_exists`, `matches`, `empty` or `not_empty`.
    op: String,
    value: Value,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ConditionsView {
    /// `all` (default) or `any`.
    mode: String,
    rules: Vec<RuleView>,
}

/// One action: a catalog operation with its parameters and body as templates (`kind`
/// absent or `clockify`), or an HTTP request (`kind: "http"`: `method`, `url`, `headers`,
/// `body`) sent under the outbound rules of destinations.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionView {
    /// Unique in the flow; later actions read its result as `actions.<name>`.
    name: String,
    /// `clockify` (default) or `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    /// The catalog operation (Clockify actions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    operation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path_params: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    query: Option<Map<String, Value>>,
    /// `GET`, `DELETE`, `POST`, `PUT` or `PATCH` (HTTP actions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    /// `https://…` (plain http only for hosts allowed by `--allow-destination-host`; no
    /// internal address unless allowed so); templates may follow the host (HTTP actions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    /// Header values are stored encrypted and always shown as `********`; sent back
    /// unchanged, a value is kept (HTTP actions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    headers: Option<Map<String, Value>>,
    /// JSON whose strings may be templates; for an HTTP action, a body that is one string is
    /// sent as that text, any other as JSON.
    body: Option<Value>,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryView {
    max_attempts: u32,
    backoff_ms: u64,
}

/// What a user edits of a flow (the body of create and update; the same fields come back in
/// every flow). Saving checks it all and lists every problem.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowDefinition {
    /// 1 to 100 characters.
    name: String,
    /// New flows start enabled; an update keeps the current state unless it says.
    enabled: bool,
    trigger: TriggerView,
    conditions: ConditionsView,
    /// 1 to 20 actions, run in order.
    actions: Vec<ActionView>,
    retry: RetryView,
}

fn pairs(pairs: &[(String, Stored)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

impl From<&FlowAction> for ActionView {
    fn from(action: &FlowAction) -> Self {
        let body = action.body.as_ref().map(|b| b.0.clone());
        match &action.http {
            None => ActionView {
                name: action.name.clone(),
                kind: None,
                operation_id: Some(action.operation_id.clone()),
                path_params: Some(pairs(&action.path_params)),
                query: Some(pairs(&action.query)),
                method: None,
                url: None,
                headers: None,
                body,
            },
            Some(call) => ActionView {
                name: action.name.clone(),
                kind: Some("http".into()),
                operation_id: None,
                path_params: None,
                query: None,
                method: Some(call.method.clone()),
                url: Some(call.url.clone()),
                headers: Some(model::masked_headers(call)),
                body,
            },
        }
    }
}

impl From<&Flow> for FlowDefinition {
    fn from(flow: &Flow) -> Self {
        FlowDefinition {
            name: flow.name.clone(),
            enabled: flow.enabled,
            trigger: TriggerView {
                source: flow.trigger.source.clone(),
                events: flow.trigger.events.clone(),
            },
            conditions: ConditionsView {
                mode: if flow.conditions.any { "any" } else { "all" }.into(),
                rules: flow
                    .conditions
                    .rules
                    .iter()
                    .map(|r| RuleView {
                        path: r.path.clone(),
                        op: r.op.as_str().into(),
                        value: r.value.0.clone(),
                    })
                    .collect(),
            },
            actions: flow.actions.iter().map(ActionView::from).collect(),
            retry: RetryView {
                max_attempts: flow.retry.max_attempts,
                backoff_ms: flow.retry.backoff_ms,
            },
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct RunCountsView {
    succeeded: u64,
    failed: u64,
    skipped: u64,
}

/// A flow as stored, with its counters and last run.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowView {
    id: String,
    #[serde(flatten)]
    definition: FlowDefinition,
    /// Why the flow was turned off automatically.
    disabled_reason: Option<String>,
    created_at: String,
    updated_at: String,
    last_run: Option<RunSummary>,
    /// Runs kept, by outcome.
    counts: RunCountsView,
    /// What may go wrong with this definition although it is valid, e.g. an action that
    /// changes the kind of entity the trigger is about (the flow may trigger itself). Saving
    /// goes ahead; the UI shows them.
    warnings: Vec<Problem>,
}

fn flow_view(app: &App, state: &FlowState) -> FlowView {
    let flow = &state.flow;
    let warnings = model::warnings(&flow.trigger, &flow.actions, app.config.flow_loop_limit);
    FlowView {
        id: format_id(&flow.id),
        definition: FlowDefinition::from(flow),
        disabled_reason: flow.disabled_reason.clone(),
        created_at: rfc3339(flow.created_at),
        updated_at: rfc3339(flow.updated_at),
        last_run: state.last_run.as_ref().map(|r| RunSummary::new(app, r)),
        counts: RunCountsView {
            succeeded: state.stats.succeeded,
            failed: state.stats.failed,
            skipped: state.stats.skipped,
        },
        warnings: problem::from_texts(warnings),
    }
}

/// What the audit log keeps of a flow: its id and definition.
fn audited(flow: &Flow) -> Value {
    let mut summary = model::definition(flow);
    summary["id"] = Value::from(format_id(&flow.id));
    summary
}

/// Records a change of a flow by the request's user.
async fn record(app: &App, user: &User, action: &str, before: Option<&Flow>, after: Option<&Flow>) {
    let target = |f: &Flow| format_id(&f.id);
    audit::thing_changed(app, user, action, (before, after), target, audited).await;
}

async fn described(app: &App, flow: Flow) -> Result<Json<FlowView>, ApiError> {
    let state = service::state(app, flow).await?;
    Ok(Json(flow_view(app, &state)))
}

#[derive(Serialize, ToSchema)]
pub struct FlowList {
    flows: Vec<FlowView>,
    /// Set while every flow of the workspace is paused.
    pause: Option<PauseView>,
}

/// A pause of every flow of the workspace.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PauseView {
    reason: String,
    /// `queue`: runs wait and start on resume; `skip`: runs are recorded as skipped.
    mode: &'static str,
    since: String,
    /// The user id of the admin who paused.
    by: Option<String>,
}

impl From<&FlowsPause> for PauseView {
    fn from(pause: &FlowsPause) -> Self {
        PauseView {
            reason: pause.reason.clone(),
            mode: match pause.mode {
                PauseMode::Queue => "queue",
                PauseMode::Skip => "skip",
            },
            since: rfc3339(pause.since),
            by: pause.by.clone(),
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct PauseBody {
    /// Shown with the flows while paused; 1 to 200 characters.
    reason: String,
    /// `queue` (runs wait, default) or `skip` (runs are recorded as skipped).
    #[serde(default)]
    mode: Option<String>,
}

/// Pauses every flow of the workspace; events keep being stored.
#[utoipa::path(post, path = "/api/flows/pause", tag = "flows", request_body = PauseBody,
    responses((status = 200, body = PauseView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn pause(
    State(app): State<App>,
    Admin(user): Admin,
    JsonBody(body): JsonBody<PauseBody>,
) -> Result<Json<PauseView>, ApiError> {
    let before = app.store.flows_pause(&user.workspace_id);
    let mode = body.mode.as_deref().unwrap_or("queue");
    let pause = service::pause(&app, &user, &body.reason, mode).await?;
    let view = PauseView::from(&pause);
    audit::by_user(
        &app,
        &user,
        Change {
            action: "flows.pause",
            target: None,
            before: before
                .as_ref()
                .map(|p| serde_json::to_value(PauseView::from(p)).expect("JSON")),
            after: Some(serde_json::to_value(&view).expect("JSON")),
        },
    )
    .await;
    Ok(Json(view))
}

/// Ends the pause: runs held in the queue start.
#[utoipa::path(post, path = "/api/flows/resume", tag = "flows",
    responses((status = 200, body = FlowList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn resume(
    State(app): State<App>,
    Admin(user): Admin,
) -> Result<Json<FlowList>, ApiError> {
    let before = app.store.flows_pause(&user.workspace_id);
    service::resume(&app, &user.workspace_id).await?;
    if let Some(before) = &before {
        audit::by_user(
            &app,
            &user,
            Change {
                action: "flows.resume",
                target: None,
                before: Some(serde_json::to_value(PauseView::from(before)).expect("JSON")),
                after: None,
            },
        )
        .await;
    }
    flow_list(&app, &user).await.map(Json)
}

#[utoipa::path(get, path = "/api/flows", tag = "flows",
    responses((status = 200, body = FlowList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(State(app): State<App>, user: User) -> Result<Json<FlowList>, ApiError> {
    flow_list(&app, &user).await.map(Json)
}

/// Every flow of the workspace, with the workspace's pause.
async fn flow_list(app: &App, user: &User) -> Result<FlowList, ApiError> {
    let mut flows = Vec::new();
    for flow in service::list(app, &user.workspace_id).await? {
        let state = service::state(app, flow).await?;
        flows.push(flow_view(app, &state));
    }
    let pause = app.store.flows_pause(&user.workspace_id);
    Ok(FlowList {
        flows,
        pause: pause.as_ref().map(PauseView::from),
    })
}

#[utoipa::path(post, path = "/api/flows", tag = "flows", request_body = FlowDefinition,
    responses((status = 201, body = FlowView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn create(
    State(app): State<App>,
    Admin(user): Admin,
    JsonBody(input): JsonBody<Value>,
) -> Result<(StatusCode, Json<FlowView>), ApiError> {
    let flow = service::create(&app, &user.workspace_id, &input).await?;
    record(&app, &user, "flow.create", None, Some(&flow)).await;
    Ok((StatusCode::CREATED, described(&app, flow).await?))
}

#[utoipa::path(get, path = "/api/flows/{id}", tag = "flows", params(("id" = String, Path)),
    responses((status = 200, body = FlowView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn read(
    State(app): State<App>,
    user: User,
    Path(id): Path<String>,
) -> Result<Json<FlowView>, ApiError> {
    let flow = service::get(&app, &user.workspace_id, &id).await?;
    described(&app, flow).await
}

#[utoipa::path(put, path = "/api/flows/{id}", tag = "flows", params(("id" = String, Path)),
    request_body = FlowDefinition,
    responses((status = 200, body = FlowView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn update(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<Value>,
) -> Result<Json<FlowView>, ApiError> {
    let before = service::get(&app, &user.workspace_id, &id).await?;
    let flow = service::update(&app, &user.workspace_id, &id, &input).await?;
    record(&app, &user, "flow.update", Some(&before), Some(&flow)).await;
    described(&app, flow).await
}

#[utoipa::path(post, path = "/api/flows/{id}/enable", tag = "flows", params(("id" = String, Path)),
    responses((status = 200, body = FlowView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn enable(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
) -> Result<Json<FlowView>, ApiError> {
    let before = service::get(&app, &user.workspace_id, &id).await?;
    let flow = service::set_enabled(&app, &user.workspace_id, &id, true).await?;
    record(&app, &user, "flow.enable", Some(&before), Some(&flow)).await;
    described(&app, flow).await
}

#[utoipa::path(post, path = "/api/flows/{id}/disable", tag = "flows", params(("id" = String, Path)),
    responses((status = 200, body = FlowView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn disable(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
) -> Result<Json<FlowView>, ApiError> {
    let before = service::get(&app, &user.workspace_id, &id).await?;
    let flow = service::set_enabled(&app, &user.workspace_id, &id, false).await?;
    record(&app, &user, "flow.disable", Some(&before), Some(&flow)).await;
    described(&app, flow).await
}

#[utoipa::path(delete, path = "/api/flows/{id}", tag = "flows", params(("id" = String, Path)),
    responses((status = 200, body = Deleted), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
) -> Result<Json<Deleted>, ApiError> {
    let before = service::get(&app, &user.workspace_id, &id).await?;
    service::delete(&app, &user.workspace_id, &id).await?;
    record(&app, &user, "flow.delete", Some(&before), None).await;
    Ok(Json(Deleted::new(id)))
}

/// The event of a test: a stored one (`webhookId`) or one given inline (`event`, and
/// `eventType`, by default the flow's first trigger event).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestBody {
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    webhook_id: Value,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    event: Value,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    event_type: Value,
    /// `true` (admins only) to really run the flow, recorded as a test run; else a dry run.
    #[serde(default)]
    #[schema(value_type = Option<bool>)]
    execute: Value,
    /// An editor's unsaved definition to try instead of the stored one: checked exactly like
    /// a save, never stored. Required by `POST /api/flows/test`.
    #[serde(default)]
    #[schema(value_type = Option<FlowDefinition>)]
    flow: Value,
}

/// One condition of a test and how the event fared.
#[derive(Serialize, ToSchema)]
pub struct RuleResult {
    path: String,
    op: &'static str,
    value: Value,
    /// The value the path selected (null: absent).
    actual: Option<Value>,
    passed: bool,
    /// Why the rule could not be evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// One action of a dry run: the request it would send, or why it cannot be built.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DryActionView {
    name: String,
    /// `http` for an HTTP request action (absent for Clockify operations).
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    /// Empty for an HTTP action.
    operation_id: String,
    request: Option<SentRequestView>,
    error: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestResult {
    /// The trigger matched and the conditions passed.
    matched: bool,
    trigger_matched: bool,
    conditions_passed: bool,
    conditions: Vec<RuleResult>,
    actions: Vec<DryActionView>,
    /// The test run (with `execute: true`), as far as it got within 20 s.
    run: Option<RunDetail>,
}

/// A dry run (conditions and rendered requests, nothing sent), or with `execute: true` a
/// real run recorded as a test run.
#[utoipa::path(post, path = "/api/flows/{id}/test", tag = "flows", params(("id" = String, Path)),
    request_body = TestBody,
    responses((status = 200, body = TestResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn test(
    State(app): State<App>,
    user: User,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<TestBody>,
) -> Result<Json<TestResult>, ApiError> {
    let stored = service::get(&app, &user.workspace_id, &id).await?;
    let flow = match &body.flow {
        Value::Null => stored,
        definition => {
            // A real run sends the headers: each must have its value.
            let masks = if body.execute == Value::Bool(true) {
                Masks::Required
            } else {
                Masks::Placeholder
            };
            views::unsaved(&app, &user.workspace_id, definition, Some(&stored), masks).await?
        }
    };
    tested(&app, &user, &flow, body).await
}

/// The dry run (or test run) of `flow`, shaped for the response.
async fn tested(
    app: &App,
    user: &User,
    flow: &Flow,
    body: TestBody,
) -> Result<Json<TestResult>, ApiError> {
    let tested = service::test(
        app,
        user,
        flow,
        TestRequest {
            webhook_id: body.webhook_id,
            event: body.event,
            event_type: body.event_type,
            execute: body.execute,
        },
    )
    .await?;
    Ok(Json(TestResult {
        matched: tested.trigger_matched && tested.conditions_passed,
        trigger_matched: tested.trigger_matched,
        conditions_passed: tested.conditions_passed,
        conditions: tested
            .conditions
            .into_iter()
            .map(|(rule, outcome)| RuleResult {
                path: rule.path.clone(),
                op: rule.op.as_str(),
                value: rule.value.0.clone(),
                actual: outcome.actual,
                passed: outcome.passed,
                error: outcome.error,
            })
            .collect(),
        actions: tested
            .actions
            .into_iter()
            .map(|dry| {
                let (request, error) = match dry.rendered {
                    Ok(rendered) => (Some(SentRequestView::from_rendered(&rendered)), None),
                    Err(error) => (None, Some(error)),
                };
                DryActionView {
                    name: dry.action.name.clone(),
                    kind: dry.action.http.as_ref().map(|_| "http"),
                    operation_id: dry.action.operation_id.clone(),
                    request,
                    error,
                }
            })
            .collect(),
        run: tested.run.as_ref().map(|r| RunDetail::new(app, r)),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct ReplayResult {
    /// One new run per enabled flow the event triggers.
    runs: Vec<RunSummary>,
}

/// New runs of every enabled flow the stored event triggers, marked as replays.
#[utoipa::path(post, path = "/api/webhooks/{id}/replay", tag = "flows", params(("id" = String, Path)),
    responses((status = 200, body = ReplayResult), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn replay(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
) -> Result<Json<ReplayResult>, ApiError> {
    let runs = service::replay(&app, &user.workspace_id, &id).await?;
    let started: Vec<String> = runs.iter().map(|r| format_id(&r.id)).collect();
    audit::by_user(
        &app,
        &user,
        Change {
            action: "event.replay",
            target: Some(id.clone()),
            before: None,
            after: Some(serde_json::json!({ "runs": started })),
        },
    )
    .await;
    Ok(Json(ReplayResult {
        runs: runs.iter().map(|r| RunSummary::new(&app, r)).collect(),
    }))
}

/// The dry run of a definition that was never saved (`flow` is required; `execute` is not
/// allowed: save the flow to run it for real). Nothing is stored and nothing is called.
#[utoipa::path(post, path = "/api/flows/test", tag = "flows", request_body = TestBody,
    responses((status = 200, body = TestResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn test_unsaved(
    State(app): State<App>,
    user: User,
    JsonBody(body): JsonBody<TestBody>,
) -> Result<Json<TestResult>, ApiError> {
    if body.execute == Value::Bool(true) {
        return Err(ApiError::BadRequest(
            "save the flow before running its actions for real".into(),
        ));
    }
    if body.flow.is_null() {
        return Err(ApiError::BadRequest(
            "flow (the definition to try) is required".into(),
        ));
    }
    let flow = views::unsaved(
        &app,
        &user.workspace_id,
        &body.flow,
        None,
        Masks::Placeholder,
    )
    .await?;
    tested(&app, &user, &flow, body).await
}

/// Which stored events a definition would run for.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CandidatesBody {
    /// The definition as the editor has it (checked like a save, never stored).
    #[schema(value_type = FlowDefinition)]
    flow: Value,
    /// Stored event ids, at most 50.
    webhook_ids: Vec<String>,
}

/// Whether the flow would run for one stored event (`error` when there is no such event).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CandidateView {
    webhook_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_type: Option<String>,
    /// Trigger matched and conditions passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    matched: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trigger_matched: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    conditions_passed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CandidateList {
    candidates: Vec<CandidateView>,
}

/// For each of up to 50 stored events, whether a definition (saved or not) would run.
#[utoipa::path(post, path = "/api/flows/candidates", tag = "flows", request_body = CandidatesBody,
    responses((status = 200, body = CandidateList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn candidates(
    State(app): State<App>,
    user: User,
    JsonBody(body): JsonBody<CandidatesBody>,
) -> Result<Json<CandidateList>, ApiError> {
    let flow = views::unsaved(
        &app,
        &user.workspace_id,
        &body.flow,
        None,
        Masks::Placeholder,
    )
    .await?;
    let found = views::candidates(&app, &user.workspace_id, &flow, &body.webhook_ids).await?;
    let candidates = found
        .into_iter()
        .map(|c| match c {
            Candidate::Missing { id } => CandidateView {
                webhook_id: id,
                event_type: None,
                matched: None,
                trigger_matched: None,
                conditions_passed: None,
                error: Some("no such event".into()),
            },
            Candidate::Checked {
                id,
                event_type,
                trigger_matched,
                conditions_passed,
            } => CandidateView {
                webhook_id: id,
                event_type: Some(event_type),
                matched: Some(trigger_matched && conditions_passed),
                trigger_matched: Some(trigger_matched),
                conditions_passed: Some(conditions_passed),
                error: None,
            },
        })
        .collect();
    Ok(Json(CandidateList { candidates }))
}
