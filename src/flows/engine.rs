//! Executes queued flow runs. Runs arrive from the store right after the commit that queued
//! them (and, at start, from the queue table: what a restart resumes). Each workspace runs a
//! bounded number at once, through the shared rate-limited client. Every action's outcome is
//! committed before the next action starts; an action that succeeded is never sent again.
//! A non-idempotent action is marked `sending` durably before its call, so after a crash its
//! outcome is known to be unknown and it is not repeated; idempotent ones (GET/PUT/DELETE)
//! may be resent, so they skip that write.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::catalog;
use super::conditions::{self, RuleOutcome};
use super::model::AUTOMATIC_PATH_PARAMS;
use super::template::Context;
use crate::clockify::client::{Acting, ApiClient, ApiRequest, RetryPolicy};
use crate::server::App;
use crate::store::{
    ActionRun, ActionStatus, Flow, FlowAction, Installation, InstallationStatus, QueuedRun, Run,
    RunId, RunOrigin, RunStatus, StoreError, StoredEvent,
};

/// How long in-flight runs get to finish their current action at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Methods that may be sent twice with the same effect.
pub fn idempotent(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS")
}

enum Job {
    /// Just committed: the run (and usually its event) is in memory.
    Live(Box<QueuedRun>),
    /// Found on the queue at start.
    Stored { id: RunId, workspace_id: String },
}

/// Starts the engine; the task ends after shutdown once in-flight runs stopped.
pub fn start(app: App) -> tokio::task::JoinHandle<()> {
    tokio::spawn(dispatch(app))
}

async fn dispatch(app: App) {
    let Some(mut receiver) = app.store.take_queued_runs() else {
        tracing::error!("the flow engine was started twice");
        return;
    };
    let mut shutdown = app.shutdown.subscribe();
    let mut limits: HashMap<String, Arc<Semaphore>> = HashMap::new();
    let mut tasks = JoinSet::new();
    // Runs found on the queue at start; one committed meanwhile also arrives live, once.
    let mut recovered: HashSet<RunId> = HashSet::new();
    match app.store.queued_runs().await {
        Ok(queued) => {
            metrics::gauge!("flow_queue_depth").set(queued.len() as f64);
            if !queued.is_empty() {
                tracing::info!(runs = queued.len(), "resuming queued flow runs");
            }
            for (id, workspace_id) in queued {
                recovered.insert(id);
                let limit = limiter(&app, &mut limits, &workspace_id);
                tasks.spawn(run_job(
                    app.clone(),
                    limit,
                    Job::Stored { id, workspace_id },
                ));
            }
        }
        Err(err) => tracing::error!(error = %err, "cannot read the flow run queue"),
    }
    loop {
        tokio::select! {
            received = receiver.recv() => match received {
                Some(queued) => {
                    if recovered.remove(&queued.run.id) {
                        continue;
                    }
                    let limit = limiter(&app, &mut limits, &queued.run.workspace_id);
                    tasks.spawn(run_job(app.clone(), limit, Job::Live(Box::new(queued))));
                }
                None => break,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("flow runs still in flight at shutdown resume on the next start");
        tasks.abort_all();
    }
}

fn limiter(
    app: &App,
    limits: &mut HashMap<String, Arc<Semaphore>>,
    workspace_id: &str,
) -> Arc<Semaphore> {
    limits
        .entry(workspace_id.to_string())
        .or_insert_with(|| Arc::new(Semaphore::new(app.config.flow_workspace_concurrency)))
        .clone()
}

async fn run_job(app: App, limit: Arc<Semaphore>, job: Job) {
    let mut shutdown = app.shutdown.subscribe();
    let permit = tokio::select! {
        permit = limit.acquire_owned() => permit.expect("semaphore never closes"),
        _ = shutdown.wait_for(|stop| *stop) => return,
    };
    let id = match &job {
        Job::Live(queued) => queued.run.id,
        Job::Stored { id, .. } => *id,
    };
    app.store.set_run_active(id, true);
    if let Err(err) = execute(&app, job).await {
        // The run stays queued and is retried at the next start.
        tracing::error!(error = %err, run = %crate::store::format_id(&id), "flow run could not be recorded");
    }
    app.store.set_run_active(id, false);
    drop(permit);
}

/// The event body a run works on.
async fn event_body(
    app: &App,
    run: &Run,
    event: Option<Arc<StoredEvent>>,
) -> Result<Option<Value>, StoreError> {
    let bytes = match (&run.inline_event, event, run.event_id) {
        (Some(inline), _, _) => inline.clone(),
        (None, Some(event), _) => event.body.clone(),
        (None, None, Some(id)) => match app.store.event(&run.workspace_id, id).await? {
            Some(event) => event.body,
            None => return Ok(None),
        },
        (None, None, None) => return Ok(None),
    };
    Ok(Some(parse_body(&bytes)))
}

/// JSON when it is JSON, else the text.
fn parse_body(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

pub fn context_for(installation: &Installation, event: &Value, event_type: &str) -> Context {
    Context::new(
        event,
        event_type,
        &installation.workspace_id,
        &installation.addon_id,
        installation.as_user.as_deref(),
    )
}

/// An action rendered into a request: what is sent, and what is shown and stored.
pub struct Rendered {
    pub request: ApiRequest,
    pub url: String,
    pub body_text: Option<String>,
}

/// Renders an action's templates and builds its request for `installation`.
pub fn render_action(
    action: &FlowAction,
    context: &Context,
    installation: &Installation,
    retry: RetryPolicy,
) -> Result<Rendered, String> {
    let operation = catalog::catalog()
        .operation(&action.operation_id)
        .ok_or_else(|| format!("unknown operation {}", action.operation_id))?;
    let render_pairs = |pairs: &[(String, crate::store::Json)], at: &str| {
        let mut out = Map::new();
        for (name, value) in pairs {
            let rendered = context
                .render(&value.0, &format!("{at}.{name}"))
                .map_err(|e| e.to_string())?;
            out.insert(name.clone(), rendered);
        }
        Ok::<_, String>(out)
    };
    let mut path_params = render_pairs(&action.path_params, "pathParams")?;
    // The installation's own workspace, always: a flow can only act where it lives.
    for name in AUTOMATIC_PATH_PARAMS {
        let takes_it = operation
            .parameters
            .iter()
            .any(|p| p.name == name && p.location == catalog::ParamLocation::Path);
        if takes_it {
            path_params.insert(name.to_string(), json!(installation.workspace_id));
        }
    }
    let query = render_pairs(&action.query, "query")?;
    let body = match &action.body {
        Some(body) => Some(context.render(&body.0, "body").map_err(|e| e.to_string())?),
        None => None,
    };
    let built = operation
        .build_request(&path_params, &query)
        .map_err(|problems| problems.join("; "))?;
    let body_text = body.as_ref().map(|b| b.to_string());
    let request = ApiRequest {
        operation_id: operation.id.clone(),
        server: operation.server,
        method: operation.method.clone(),
        path: built.path,
        query: built.query,
        body: body_text.as_ref().map(|b| b.clone().into_bytes()),
        acting: Acting::Addon,
        retry,
    };
    let url = ApiClient::url(installation, &request).map_err(|e| e.to_string())?;
    Ok(Rendered {
        request,
        url,
        body_text,
    })
}

fn retry_policy(flow: &Flow) -> RetryPolicy {
    RetryPolicy {
        max_attempts: flow.retry.max_attempts.max(1),
        base_backoff_ms: flow.retry.backoff_ms,
        retry_non_idempotent: false,
    }
}

/// Why a response counts as a failure, with Clockify's message when it gave one.
fn failure_text(status: u16, body: &Value) -> String {
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    format!("Clockify answered HTTP {status}{message}")
}

/// The result of an action as later templates see it.
fn action_result_body(record: &ActionRun) -> Value {
    record
        .response_body
        .as_deref()
        .map(parse_body)
        .unwrap_or(Value::Null)
}

async fn execute(app: &App, job: Job) -> Result<(), StoreError> {
    let (mut run, event, committed) = match job {
        Job::Live(queued) => {
            let queued = *queued;
            (queued.run, queued.event, queued.committed)
        }
        Job::Stored { id, workspace_id } => match app.store.run(&workspace_id, id).await? {
            Some(run) if !run.status.is_final() => (run, None, None),
            Some(_) => return Ok(()),
            None => return app.store.dequeue_run(id).await,
        },
    };
    let not_started = run.status == RunStatus::Queued && run.actions.is_empty();
    if not_started && run.origin != RunOrigin::Test {
        match app.store.flow_now(&run.flow.id) {
            None => {
                return finish(app, run, RunStatus::Skipped, Some("the flow was deleted")).await;
            }
            Some(flow) if !flow.enabled => {
                return finish(app, run, RunStatus::Skipped, Some("the flow was disabled")).await;
            }
            Some(_) => {}
        }
    }
    let Some(event) = event_body(app, &run, event).await? else {
        return finish(
            app,
            run,
            RunStatus::Failed,
            Some("the event is no longer stored"),
        )
        .await;
    };
    let installation = match app.store.installation(&run.workspace_id).await? {
        Some(i) if i.status == InstallationStatus::Active => i,
        Some(i) => {
            let why = format!("the add-on is {} in this workspace", i.status.as_str());
            return finish(app, run, RunStatus::Failed, Some(&why)).await;
        }
        None => {
            return finish(
                app,
                run,
                RunStatus::Failed,
                Some("the add-on is not installed"),
            )
            .await;
        }
    };
    if run.status == RunStatus::Queued {
        let (matched, outcomes) = conditions::evaluate(&run.flow.conditions, &event);
        if !matched {
            let why = skipped_reason(&run.flow, &outcomes);
            return finish(app, run, RunStatus::Skipped, Some(&why)).await;
        }
        run.status = RunStatus::Running;
        run.started_at = Some(now_ms());
    }
    let mut context = context_for(&installation, &event, &run.event_type);
    let retry = retry_policy(&run.flow);
    let mut first_send = committed;
    let mut shutdown = app.shutdown.subscribe();
    let actions = run.flow.actions.clone();
    for (i, action) in actions.iter().enumerate() {
        if let Some(record) = run.actions.get(i) {
            match record.status {
                ActionStatus::Succeeded => {
                    context.add_action(
                        &action.name,
                        record.response_status,
                        &action_result_body(record),
                    );
                    continue;
                }
                ActionStatus::Sending if idempotent(&record.method) => {
                    // Interrupted mid-call; sending it again has the same effect.
                    run.actions.truncate(i);
                }
                ActionStatus::Sending => {
                    let record = &mut run.actions[i];
                    record.status = ActionStatus::Failed;
                    record.error = Some(
                        "outcome unknown after restart: the call may or may not have taken effect, so it was not repeated"
                            .into(),
                    );
                    let why = format!("{}: outcome unknown after restart", action.name);
                    metrics::counter!("flow_actions_total", "operation" => action.operation_id.clone(), "outcome" => "unknown").increment(1);
                    return finish(app, run, RunStatus::Failed, Some(&why)).await;
                }
                ActionStatus::Failed => {
                    let why = format!(
                        "{}: {}",
                        action.name,
                        record.error.clone().unwrap_or_default()
                    );
                    return finish(app, run, RunStatus::Failed, Some(&why)).await;
                }
            }
        }
        if *shutdown.borrow_and_update() {
            // Earlier outcomes are committed; the next start resumes at this action.
            return Ok(());
        }
        let started = now_ms();
        let rendered = match render_action(action, &context, &installation, retry) {
            Ok(rendered) => rendered,
            Err(error) => {
                run.actions.push(ActionRun {
                    name: action.name.clone(),
                    operation_id: action.operation_id.clone(),
                    method: String::new(),
                    url: String::new(),
                    query: Vec::new(),
                    body: None,
                    status: ActionStatus::Failed,
                    response_status: None,
                    response_body: None,
                    response_truncated: false,
                    duration_ms: 0,
                    attempts: 0,
                    error: Some(error.clone()),
                    started_at: started,
                });
                metrics::counter!("flow_actions_total", "operation" => action.operation_id.clone(), "outcome" => "invalid").increment(1);
                let why = format!("{}: {error}", action.name);
                return finish(app, run, RunStatus::Failed, Some(&why)).await;
            }
        };
        run.actions.push(ActionRun {
            name: action.name.clone(),
            operation_id: action.operation_id.clone(),
            method: rendered.request.method.clone(),
            url: rendered.url.clone(),
            query: rendered.request.query.clone(),
            body: rendered.body_text.clone(),
            status: ActionStatus::Sending,
            response_status: None,
            response_body: None,
            response_truncated: false,
            duration_ms: 0,
            attempts: 0,
            error: None,
            started_at: started,
        });
        if !idempotent(&rendered.request.method) {
            app.store.save_run(run.clone()).await?;
        }
        if let Some(committed) = first_send.take() {
            metrics::histogram!("flow_commit_to_first_send_seconds")
                .record(committed.elapsed().as_secs_f64());
        }
        let call_started = Instant::now();
        let outcome = app
            .clockify
            .send(&installation, app.store.secrets(), rendered.request)
            .await;
        let record = run.actions.last_mut().expect("just pushed");
        record.duration_ms = call_started.elapsed().as_millis() as u64;
        let failure = match outcome {
            Ok(response) => {
                record.attempts = response.attempts;
                record.response_status = Some(response.status);
                let limit = app.config.flow_response_limit;
                record.response_truncated = response.body.len() > limit;
                let body = parse_body(&response.body);
                let mut kept = response.body;
                kept.truncate(limit);
                record.response_body = Some(kept);
                if (200..300).contains(&response.status) {
                    record.status = ActionStatus::Succeeded;
                    context.add_action(&action.name, Some(response.status), &body);
                    None
                } else {
                    Some(failure_text(response.status, &body))
                }
            }
            Err(err) => {
                record.attempts = match &err {
                    crate::clockify::client::ClientError::Transport { attempts, .. } => *attempts,
                    _ => 0,
                };
                Some(err.to_string())
            }
        };
        let outcome_label = match (&failure, record.response_status) {
            (None, _) => "succeeded".to_string(),
            (Some(_), Some(status)) => format!("{}xx", status / 100),
            (Some(_), None) => "error".to_string(),
        };
        metrics::counter!("flow_actions_total", "operation" => action.operation_id.clone(), "outcome" => outcome_label).increment(1);
        if let Some(error) = failure {
            record.status = ActionStatus::Failed;
            record.error = Some(error.clone());
            let why = format!("{}: {error}", action.name);
            return finish(app, run, RunStatus::Failed, Some(&why)).await;
        }
        if i + 1 < actions.len() {
            app.store.save_run(run.clone()).await?;
        }
    }
    finish(app, run, RunStatus::Succeeded, None).await
}

fn skipped_reason(flow: &Flow, outcomes: &[RuleOutcome]) -> String {
    let failed: Vec<String> = flow
        .conditions
        .rules
        .iter()
        .zip(outcomes)
        .filter(|(_, o)| !o.passed)
        .map(|(rule, o)| {
            let actual = o
                .actual
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_else(|| "absent".into());
            format!(
                "{} {} {} (actual {actual})",
                rule.path,
                rule.op.as_str(),
                rule.value.0
            )
        })
        .collect();
    format!("conditions not met: {}", failed.join("; "))
}

async fn finish(
    app: &App,
    mut run: Run,
    status: RunStatus,
    error: Option<&str>,
) -> Result<(), StoreError> {
    run.status = status;
    run.error = error.map(str::to_string);
    run.finished_at = Some(now_ms());
    if run.started_at.is_none() && status != RunStatus::Skipped {
        run.started_at = run.finished_at;
    }
    let flow_id = run.flow.id;
    let finished = app
        .store
        .finish_run(run, app.config.flow_auto_disable_after)
        .await?;
    metrics::counter!("flow_runs_total", "status" => status.as_str()).increment(1);
    if let Some(flow) = finished.disabled {
        metrics::counter!("flow_auto_disabled_total").increment(1);
        tracing::warn!(
            flow = %crate::store::format_id(&flow_id),
            workspace_id = %flow.workspace_id,
            reason = flow.disabled_reason.as_deref().unwrap_or(""),
            "flow disabled after repeated failures"
        );
    }
    Ok(())
}

/// Shared with the dry run: conditions as JSON.
pub fn conditions_json(flow: &Flow, event: &Value) -> (bool, Vec<Value>) {
    let (matched, outcomes) = conditions::evaluate(&flow.conditions, event);
    let details = flow
        .conditions
        .rules
        .iter()
        .zip(&outcomes)
        .map(|(rule, outcome)| outcome.to_json(rule))
        .collect();
    (matched, details)
}

/// Ids of runs known to be executing; used to show `running`.
pub fn displayed_status(app: &App, run: &Run) -> RunStatus {
    if run.status == RunStatus::Queued && app.store.is_run_active(&run.id) {
        RunStatus::Running
    } else {
        run.status
    }
}
