//! What the API asks of flows: saving definitions (every problem reported at once), turning
//! them on and off, their runs, dry and test runs, and replays of stored events. Execution
//! itself is the engine's.

use std::time::Duration;

use serde_json::Value;

use super::conditions::{self, RuleOutcome};
use super::engine::{self, Rendered, context_for, render_action};
use super::model::{self, FlowSpec, Known};
use crate::app::App;
use crate::auth::User;
use crate::clockify::client::RetryPolicy;
use crate::destinations::outbound::{AllowedHosts, MASK};
use crate::problem::{self, Problem};
use crate::store::{
    CLOCKIFY_SOURCE, Flow, FlowAction, FlowId, FlowStats, FlowsPause, PauseMode, Rule, Run, RunId,
    RunOrigin, RunPage, StoreError, new_id, parse_event_id, parse_id,
};
use crate::time::now_ms;

/// How long a test with `execute: true` waits for its run before answering with it as is.
const TEST_RUN_WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("no flow {0}")]
    NotFound(String),
    #[error("no run {0}")]
    RunNotFound(String),
    #[error("no event {0}")]
    EventNotFound(String),
    #[error("the flow has {} problem(s)", .0.len())]
    Invalid(Vec<Problem>),
    /// A request the flow API cannot act on (not a definition problem).
    #[error("{0}")]
    BadRequest(String),
    #[error("this needs the OWNER or WORKSPACE_ADMIN role in the workspace")]
    NotAdmin,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn flow_id(text: &str) -> Result<FlowId, FlowError> {
    parse_id(text).ok_or_else(|| FlowError::NotFound(text.to_string()))
}

/// How masked header values with nothing to keep are taken.
#[derive(Clone, Copy, PartialEq)]
pub enum Masks {
    /// A problem: what is stored (or run) must have every value.
    Required,
    /// Kept as the mask: for a definition that is only tried, never stored nor sent.
    Placeholder,
}

/// Reads and checks a flow body, looking up its custom source first, and seals the header
/// values of its "HTTP request" actions (a masked value keeps `current`'s).
pub(super) async fn spec(
    app: &App,
    ws: &str,
    input: &Value,
    current: Option<&Flow>,
    masks: Masks,
) -> Result<FlowSpec, FlowError> {
    let custom_source = match model::trigger_source(input) {
        Some(source) if source != CLOCKIFY_SOURCE => Some(
            app.store
                .source(source)
                .await?
                .is_some_and(|s| s.workspace_id == ws),
        ),
        _ => None,
    };
    let known = Known {
        custom_source,
        allowed_hosts: AllowedHosts::new(&app.config.allow_destination_hosts),
    };
    let mut spec = model::parse(input, &known)
        .map_err(|problems| FlowError::Invalid(problem::from_texts(problems)))?;
    let placeholder = (masks == Masks::Placeholder).then(|| MASK.to_string());
    spec.seal_headers(app.store.secrets(), current, |_, _| placeholder.clone())
        .map_err(|problems| FlowError::Invalid(problem::from_texts(problems)))?;
    Ok(spec)
}

pub async fn list(app: &App, ws: &str) -> Result<Vec<Flow>, FlowError> {
    Ok(app.store.flows(ws).await?)
}

pub async fn get(app: &App, ws: &str, id: &str) -> Result<Flow, FlowError> {
    app.store
        .flow(ws, flow_id(id)?)
        .await?
        .ok_or_else(|| FlowError::NotFound(id.to_string()))
}

/// A flow with its counters and last run, as lists and details show it.
pub struct FlowState {
    pub flow: Flow,
    pub stats: FlowStats,
    pub last_run: Option<Run>,
}

pub async fn state(app: &App, flow: Flow) -> Result<FlowState, FlowError> {
    let stats = app.store.flow_stats(&flow.workspace_id, flow.id).await?;
    let last_run = match stats.last_run {
        Some(id) => app.store.run(&flow.workspace_id, id).await?,
        None => None,
    };
    Ok(FlowState {
        flow,
        stats,
        last_run,
    })
}

pub async fn create(app: &App, ws: &str, input: &Value) -> Result<Flow, FlowError> {
    let spec = spec(app, ws, input, None, Masks::Required).await?;
    let now = now_ms();
    let flow = spec.into_flow(new_id(), ws, now, now);
    let saved = app
        .store
        .update_flow(ws, flow.id, move |_| Ok::<_, ()>(flow))
        .await?
        .map_err(|()| StoreError::Storage("flow create refused".into()))?;
    metrics::counter!("flow_changes_total", "change" => "created").increment(1);
    Ok(saved)
}

/// Applies `change` to a stored flow of the workspace.
async fn change(
    app: &App,
    ws: &str,
    id: &str,
    change: impl FnOnce(&mut Flow) + Send + 'static,
) -> Result<Flow, FlowError> {
    app.store
        .update_flow(ws, flow_id(id)?, move |current| {
            let mut flow = current.ok_or(())?;
            change(&mut flow);
            flow.updated_at = now_ms();
            Ok(flow)
        })
        .await?
        .map_err(|()| FlowError::NotFound(id.to_string()))
}

/// Replaces a flow's definition; `enabled` is kept unless the body says otherwise.
pub async fn update(app: &App, ws: &str, id: &str, input: &Value) -> Result<Flow, FlowError> {
    let current = get(app, ws, id).await?;
    let spec = spec(app, ws, input, Some(&current), Masks::Required).await?;
    let saved = change(app, ws, id, move |flow| {
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
    Ok(saved)
}

pub async fn set_enabled(app: &App, ws: &str, id: &str, enabled: bool) -> Result<Flow, FlowError> {
    change(app, ws, id, move |flow| {
        flow.enabled = enabled;
        flow.disabled_reason = None;
    })
    .await
}

pub async fn delete(app: &App, ws: &str, id: &str) -> Result<(), FlowError> {
    if app.store.delete_flow(ws, flow_id(id)?).await? {
        metrics::counter!("flow_changes_total", "change" => "deleted").increment(1);
        Ok(())
    } else {
        Err(FlowError::NotFound(id.to_string()))
    }
}

/// Pauses every flow of the workspace: new runs wait in the queue (`queue`) or are skipped
/// with the reason (`skip`) until [`resume`]. Events keep being stored either way.
pub async fn pause(
    app: &App,
    user: &User,
    reason: &str,
    mode: &str,
) -> Result<FlowsPause, FlowError> {
    let reason = reason.trim();
    let mut problems = Vec::new();
    if reason.is_empty() || reason.chars().count() > 200 {
        problems.push(Problem::new(
            "reason",
            "reason: required, 1 to 200 characters",
        ));
    }
    let mode = match mode {
        "queue" => PauseMode::Queue,
        "skip" => PauseMode::Skip,
        _ => {
            problems.push(Problem::new("mode", "mode must be \"queue\" or \"skip\""));
            PauseMode::Queue
        }
    };
    if !problems.is_empty() {
        return Err(FlowError::Invalid(problems));
    }
    let pause = FlowsPause {
        reason: reason.to_string(),
        mode,
        since: now_ms(),
        by: user.claims.user.clone(),
    };
    if !app
        .store
        .set_flows_pause(&user.workspace_id, Some(pause.clone()))
        .await?
    {
        return Err(FlowError::BadRequest(
            "the workspace is not installed".into(),
        ));
    }
    Ok(pause)
}

/// Ends the workspace's pause; runs held in the queue start.
pub async fn resume(app: &App, ws: &str) -> Result<(), FlowError> {
    app.store.set_flows_pause(ws, None).await?;
    Ok(())
}

/// A newest-first page of a flow's runs (of a deleted flow too, while its runs are kept).
pub async fn runs(
    app: &App,
    ws: &str,
    id: &str,
    cursor: Option<RunId>,
    limit: usize,
) -> Result<RunPage, FlowError> {
    let flow = flow_id(id)?;
    let page = app.store.flow_runs(ws, flow, cursor, limit).await?;
    if page.items.is_empty() && cursor.is_none() && app.store.flow(ws, flow).await?.is_none() {
        return Err(FlowError::NotFound(id.to_string()));
    }
    Ok(page)
}

pub async fn run(app: &App, ws: &str, id: &str) -> Result<Run, FlowError> {
    let run_id = parse_id(id).ok_or_else(|| FlowError::RunNotFound(id.to_string()))?;
    app.store
        .run(ws, run_id)
        .await?
        .ok_or_else(|| FlowError::RunNotFound(id.to_string()))
}

/// What `test` is asked: the fields as given (checked here, so the messages are the flow
/// API's own).
pub struct TestRequest {
    /// A stored event's id (a string), or null.
    pub webhook_id: Value,
    /// An event body given inline, or null.
    pub event: Value,
    /// The inline event's type (a string), or null for the flow's first trigger event.
    pub event_type: Value,
    /// `true` to really run the flow (recorded as a test run), else a dry run.
    pub execute: Value,
}

/// One action of a dry run: the request it would send, or why it cannot be built.
pub struct DryAction<'a> {
    pub action: &'a FlowAction,
    pub rendered: Result<Rendered, String>,
}

/// What a test found.
pub struct Tested<'a> {
    pub trigger_matched: bool,
    pub conditions_passed: bool,
    pub conditions: Vec<(&'a Rule, RuleOutcome)>,
    pub actions: Vec<DryAction<'a>>,
    /// The test run, when `execute` was asked (as far as it got within the wait).
    pub run: Option<Run>,
}

/// The event of a test: stored or inline.
struct TestEvent {
    id: Option<crate::store::EventId>,
    event_type: String,
    body: Value,
    inline: Option<String>,
}

async fn test_event(
    app: &App,
    ws: &str,
    flow: &Flow,
    request: &TestRequest,
) -> Result<TestEvent, FlowError> {
    match (&request.webhook_id, &request.event) {
        (Value::String(webhook), Value::Null) => {
            let stored = match parse_event_id(webhook) {
                Some(event_id) => app.store.event(ws, event_id).await?,
                None => None,
            }
            .ok_or_else(|| FlowError::EventNotFound(webhook.clone()))?;
            let body = serde_json::from_slice(&stored.body).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&stored.body).into_owned())
            });
            Ok(TestEvent {
                id: Some(stored.id),
                event_type: stored.event_type,
                body,
                inline: None,
            })
        }
        (Value::Null, event) if !event.is_null() => {
            let event_type = match &request.event_type {
                Value::String(t) if !t.is_empty() => t.clone(),
                Value::Null => flow.trigger.events.first().cloned().unwrap_or_default(),
                _ => return Err(FlowError::BadRequest("eventType must be a string".into())),
            };
            Ok(TestEvent {
                id: None,
                event_type,
                body: event.clone(),
                inline: Some(event.to_string()),
            })
        }
        _ => Err(FlowError::BadRequest(
            "give either webhookId (a stored event) or event (and eventType)".into(),
        )),
    }
}

/// A dry run of `flow` on an event (conditions and rendered requests, nothing sent), or
/// with `execute: true` (admins) a real run recorded as a test run.
pub async fn test<'a>(
    app: &App,
    user: &User,
    flow: &'a Flow,
    request: TestRequest,
) -> Result<Tested<'a>, FlowError> {
    let execute = match &request.execute {
        Value::Null => false,
        Value::Bool(b) => *b,
        _ => {
            return Err(FlowError::BadRequest(
                "execute must be true or false".into(),
            ));
        }
    };
    if execute && !user.is_admin() {
        return Err(FlowError::NotAdmin);
    }
    let event = test_event(app, &user.workspace_id, flow, &request).await?;
    let trigger_matched = flow.trigger.events.contains(&event.event_type);
    // The same bounds as a real run.
    let (conditions_passed, outcomes) = conditions::measure(&event.body)
        .and_then(|_| conditions::evaluate(&flow.conditions, &event.body))
        .map_err(|why| {
            FlowError::BadRequest(format!(
                "the conditions cannot be evaluated on this event: {why}"
            ))
        })?;
    let mut context = context_for(&user.installation, &event.body, &event.event_type);
    let retry = RetryPolicy::default();
    let allowed = AllowedHosts::new(&app.config.allow_destination_hosts);
    let mut actions = Vec::new();
    for action in &flow.actions {
        let rendered = render_action(action, &context, &user.installation, retry, &allowed);
        actions.push(DryAction { action, rendered });
        context.add_unavailable_action(&action.name);
    }
    let run = if execute {
        let mut run = Run::new(flow, event.id, &event.event_type, RunOrigin::Test, now_ms());
        run.inline_event = event.inline.map(String::into_bytes);
        Some(run_and_wait(app, &user.workspace_id, run).await?)
    } else {
        None
    }
    .flatten();
    Ok(Tested {
        trigger_matched,
        conditions_passed,
        conditions: flow.conditions.rules.iter().zip(outcomes).collect(),
        actions,
        run,
    })
}

/// Queues `run` and waits (bounded) for it to finish; returns it as it stands then.
async fn run_and_wait(app: &App, ws: &str, run: Run) -> Result<Option<Run>, FlowError> {
    let run_id = run.id;
    let mut finished = app.store.subscribe_finished_runs();
    app.store.enqueue_runs(vec![run]).await?;
    let _ = tokio::time::timeout(TEST_RUN_WAIT, async {
        loop {
            match finished.recv().await {
                Ok(id) if id == run_id => break,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // A lagged receiver may have missed it: look.
                    if let Ok(Some(r)) = app.store.run(ws, run_id).await
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
    Ok(app.store.run(ws, run_id).await?)
}

/// New runs of every enabled flow the stored event triggers, marked as replays.
pub async fn replay(app: &App, ws: &str, event_id: &str) -> Result<Vec<Run>, FlowError> {
    let event = match parse_event_id(event_id) {
        Some(id) => app.store.event(ws, id).await?,
        None => None,
    }
    .ok_or_else(|| FlowError::EventNotFound(event_id.to_string()))?;
    let source = event.source_id.as_deref().unwrap_or(CLOCKIFY_SOURCE);
    let now = now_ms();
    let runs: Vec<Run> = app
        .store
        .flows_triggered_by(ws, source, &event.event_type)
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
    if !runs.is_empty() {
        app.store.enqueue_runs(runs.clone()).await?;
    }
    metrics::counter!("flow_replays_total").increment(1);
    Ok(runs)
}

/// A run's status as shown (see [`engine::displayed_status`]).
pub fn displayed_status(app: &App, run: &Run) -> crate::store::RunStatus {
    engine::displayed_status(app, run)
}
