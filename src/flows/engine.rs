//! Executes queued flow runs. Runs arrive from the store right after the commit that queued
//! them (and, at start, from the queue table: what a restart resumes). Each workspace runs a
//! bounded number at once, through the shared rate-limited client. Every action's outcome is
//! committed before the next action starts; an action that succeeded is never sent again.
//! A non-idempotent action is marked `sending` durably before its call, so after a crash its
//! outcome is known to be unknown and it is not repeated; idempotent ones (GET/PUT/DELETE)
//! may be resent, so they skip that write.
//!
//! Every start of a run is counted durably before anything of it is evaluated, and the count
//! is cleared when the run ends or stops cleanly. A run found with a count left by a process
//! that died is a suspect: suspects run one at a time, so that a run that kills the process
//! is the only one in flight when it does; one that was in flight at [`MAX_UNCLEAN_STARTS`]
//! such deaths is quarantined (failed with the reason) instead of started again. A flow that
//! runs more than `--flow-loop-limit` times a minute for the same entity is disabled as a loop.

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde_json::{Map, Value, json};
use tokio::task::JoinSet;

use crate::time::now_ms;

use super::conditions::{self, RuleOutcome};
use super::model::AUTOMATIC_PATH_PARAMS;
use super::template::Context;
use crate::app::App;
use crate::clockify::catalog;
use crate::clockify::client::{Acting, ApiClient, ApiRequest, RetryPolicy};
use crate::config::FLOW_LOOP_WINDOW;
use crate::destinations::outbound::{AllowedHosts, Outbound, check_url};
use crate::store::{
    ActionRun, ActionStatus, AutoDisable, Flow, FlowAction, FlowId, HttpCall, Installation,
    InstallationStatus, PauseMode, QueuedRun, Run, RunId, RunOrigin, RunStatus, Sealed, StoreError,
    StoredEvent,
};

/// How long in-flight runs get to finish their current action at shutdown (within the
/// server's own drain; what is cut off resumes at the next start).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Deaths of the process while a run was executing before the run is quarantined. One is not
/// enough: a power cut or a `kill -9` is not the run's fault.
pub const MAX_UNCLEAN_STARTS: u32 = 2;

/// Methods that may be sent twice with the same effect.
pub fn idempotent(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS")
}

/// Waiting runs (beyond their workspace's concurrency) that may keep their run and event in
/// memory; later ones keep only their id and are read back when their turn comes. They are
/// all in the queue table already, so a backlog (Clockify slow or rate-limiting while events
/// keep coming) costs memory per run, not per event body.
const MAX_WAITING_IN_MEMORY: usize = 1_000;

enum Job {
    /// Just committed: the run (and usually its event) is in memory.
    Live(Box<QueuedRun>),
    /// Found on the queue at start, or waiting behind [`MAX_WAITING_IN_MEMORY`] others.
    Stored {
        id: RunId,
        workspace_id: String,
        committed: Option<Instant>,
    },
}

impl Job {
    fn run_id(&self) -> RunId {
        match self {
            Job::Live(queued) => queued.run.id,
            Job::Stored { id, .. } => *id,
        }
    }

    fn workspace_id(&self) -> &str {
        match self {
            Job::Live(queued) => &queued.run.workspace_id,
            Job::Stored { workspace_id, .. } => workspace_id,
        }
    }

    fn in_memory(&self) -> bool {
        matches!(self, Job::Live(_))
    }

    /// The same run, to be read back from the store when it starts.
    fn stored(self) -> Job {
        match self {
            Job::Live(queued) => Job::Stored {
                id: queued.run.id,
                workspace_id: queued.run.workspace_id,
                committed: queued.committed,
            },
            stored => stored,
        }
    }
}

/// Runs waiting for one of their workspace's `--flow-workspace-concurrency` slots, oldest first.
#[derive(Default)]
struct Backlog {
    workspaces: HashMap<String, Slots>,
    waiting: usize,
    waiting_in_memory: usize,
}

#[derive(Default)]
struct Slots {
    running: usize,
    waiting: VecDeque<Job>,
}

impl Backlog {
    /// Returns the job if it may start now; else it waits its turn.
    fn arrive(&mut self, job: Job, concurrency: usize) -> Option<Job> {
        let slots = self
            .workspaces
            .entry(job.workspace_id().to_string())
            .or_default();
        if slots.running < concurrency {
            slots.running += 1;
            return Some(job);
        }
        let job = if self.waiting_in_memory < MAX_WAITING_IN_MEMORY {
            job
        } else {
            job.stored()
        };
        self.waiting_in_memory += usize::from(job.in_memory());
        self.waiting += 1;
        slots.waiting.push_back(job);
        None
    }

    /// A run of `workspace_id` ended: returns the next one to start there, if any.
    fn finished(&mut self, workspace_id: &str) -> Option<Job> {
        let slots = self.workspaces.get_mut(workspace_id)?;
        match slots.waiting.pop_front() {
            Some(job) => {
                self.waiting -= 1;
                self.waiting_in_memory -= usize::from(job.in_memory());
                Some(job)
            }
            None => {
                slots.running = slots.running.saturating_sub(1);
                if slots.running == 0 {
                    self.workspaces.remove(workspace_id);
                }
                None
            }
        }
    }
}

/// Whether the workspace's flows are paused with runs held back in the queue.
fn held(app: &App, workspace_id: &str) -> bool {
    app.store
        .flows_pause(workspace_id)
        .is_some_and(|p| p.mode == PauseMode::Queue)
}

/// Runs held back by a workspace pause (their ids only; they stay in the queue table).
type Parked = HashMap<String, Vec<Job>>;

/// Starts `job` (which holds one of its workspace's slots), or parks it while its workspace
/// is paused and gives the slot to the next waiting run.
fn launch(app: &App, backlog: &mut Backlog, running: &mut Running, parked: &mut Parked, job: Job) {
    let mut next = Some(job);
    while let Some(job) = next.take() {
        if held(app, job.workspace_id()) {
            let ws = job.workspace_id().to_string();
            parked.entry(ws.clone()).or_default().push(job.stored());
            next = backlog.finished(&ws);
        } else {
            running.start(app, job);
        }
    }
}

/// The engine; ends after shutdown once in-flight runs stopped (or were cut off).
pub async fn run(app: App) {
    let Some(mut receiver) = app.store.take_queued_runs() else {
        tracing::error!("the flow engine was started twice");
        return;
    };
    let mut shutdown = app.shutdown.subscribe();
    let concurrency = app.config.flow_workspace_concurrency;
    let mut backlog = Backlog::default();
    let mut running = Running::new(app.config.flow_loop_limit);
    // Runs found on the queue at start; one committed meanwhile also arrives live, once.
    let mut recovered: HashSet<RunId> = HashSet::new();
    let mut parked = Parked::new();
    let mut pause_changes = app.store.pause_changes();
    match app.store.queued_runs().await {
        Ok(queued) => {
            metrics::gauge!("flow_queue_depth").set(queued.len() as f64);
            if !queued.is_empty() {
                tracing::info!(runs = queued.len(), "resuming queued flow runs");
            }
            for (id, workspace_id) in queued {
                recovered.insert(id);
                let job = Job::Stored {
                    id,
                    workspace_id,
                    committed: None,
                };
                if let Some(job) = backlog.arrive(job, concurrency) {
                    launch(&app, &mut backlog, &mut running, &mut parked, job);
                }
            }
        }
        Err(err) => tracing::error!(error = %err, "cannot read the flow run queue"),
    }
    let waiting = metrics::gauge!("flow_runs_waiting");
    loop {
        waiting.set(backlog.waiting as f64);
        tokio::select! {
            received = receiver.recv() => match received {
                Some(queued) => {
                    if recovered.remove(&queued.run.id) {
                        continue;
                    }
                    if let Some(job) = backlog.arrive(Job::Live(Box::new(queued)), concurrency) {
                        launch(&app, &mut backlog, &mut running, &mut parked, job);
                    }
                }
                None => break,
            },
            Some(workspace_id) = running.next_ended(), if !running.tasks.is_empty() => {
                if let Some(next) = backlog.finished(&workspace_id) {
                    launch(&app, &mut backlog, &mut running, &mut parked, next);
                }
            }
            Ok(()) = pause_changes.changed() => {
                // A pause ended (or now skips): its held runs go through as if just queued.
                let released: Vec<String> =
                    parked.keys().filter(|ws| !held(&app, ws)).cloned().collect();
                for ws in released {
                    for job in parked.remove(&ws).unwrap_or_default() {
                        if let Some(job) = backlog.arrive(job, concurrency) {
                            launch(&app, &mut backlog, &mut running, &mut parked, job);
                        }
                    }
                }
            }
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    // Waiting runs stay in the queue table for the next start.
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while running.tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("flow runs still in flight at shutdown resume on the next start");
        running.tasks.abort_all();
        // Cut off by the shutdown, not by a crash: their starts do not count against them.
        let cut_off: Vec<RunId> = app
            .active_runs
            .lock()
            .expect("active runs lock")
            .iter()
            .copied()
            .collect();
        if let Err(err) = app.store.forget_run_starts(cut_off).await {
            tracing::warn!(error = %err, "cannot record that flow runs stopped cleanly");
        }
    }
}

/// What run tasks share: the lane suspects take one at a time, and the loop detector.
struct Shared {
    suspects: tokio::sync::Mutex<()>,
    loops: Mutex<LoopDetector>,
}

/// The runs executing, each with its workspace: a task that panicked still frees its slot.
struct Running {
    tasks: JoinSet<()>,
    workspaces: HashMap<tokio::task::Id, String>,
    shared: Arc<Shared>,
}

impl Running {
    fn new(loop_limit: u32) -> Running {
        Running {
            tasks: JoinSet::new(),
            workspaces: HashMap::new(),
            shared: Arc::new(Shared {
                suspects: tokio::sync::Mutex::new(()),
                loops: Mutex::new(LoopDetector::new(loop_limit, FLOW_LOOP_WINDOW)),
            }),
        }
    }

    fn start(&mut self, app: &App, job: Job) {
        let workspace_id = job.workspace_id().to_string();
        let handle = self
            .tasks
            .spawn(run_job(app.clone(), job, self.shared.clone()));
        self.workspaces.insert(handle.id(), workspace_id);
    }

    /// Waits for a run to end and returns its workspace.
    async fn next_ended(&mut self) -> Option<String> {
        let id = match self.tasks.join_next_with_id().await? {
            Ok((id, ())) => id,
            Err(err) => err.id(),
        };
        self.workspaces.remove(&id)
    }
}

/// How far `execute` took a run.
enum Ended {
    /// Finished (succeeded, failed or skipped), or never started.
    Finished,
    /// Stopped for the shutdown; the next start resumes it.
    Interrupted,
}

async fn run_job(app: App, job: Job, shared: Arc<Shared>) {
    let id = job.run_id();
    let workspace_id = job.workspace_id().to_string();
    set_active(&app, id, true);
    let outcome = AssertUnwindSafe(execute(&app, job, &shared))
        .catch_unwind()
        .await;
    let clean_stop = match outcome {
        Ok(Ok(Ended::Finished)) => false,
        Ok(Ok(Ended::Interrupted)) => true,
        Ok(Err(err)) => {
            // The run stays queued and is retried at the next start.
            tracing::error!(error = %err, run = %crate::store::format_id(&id), "flow run could not be recorded");
            true
        }
        Err(panic) => {
            // The panic hook logged where; the run fails instead of being retried.
            let why = format!(
                "the flow engine failed while running it: {}",
                crate::store::panic_text(&*panic)
            );
            fail_stored_run(&app, &workspace_id, id, &why).await;
            false
        }
    };
    if clean_stop && let Err(err) = app.store.forget_run_starts(vec![id]).await {
        tracing::warn!(error = %err, "cannot record that a flow run stopped cleanly");
    }
    set_active(&app, id, false);
}

/// Fails a run as stored (after a panic left no run in hand).
async fn fail_stored_run(app: &App, ws: &str, id: RunId, why: &str) {
    match app.store.run(ws, id).await {
        Ok(Some(run)) if !run.status.is_final() => {
            if let Err(err) = finish(app, run, RunStatus::Failed, Some(why)).await {
                tracing::error!(error = %err, "cannot record a failed flow run");
            }
        }
        Ok(_) => {}
        Err(err) => tracing::error!(error = %err, "cannot read a failed flow run"),
    }
}

/// Runs of one flow for one entity within a window: more than the limit is a loop (the
/// flow's own actions trigger it again).
struct LoopDetector {
    limit: u32,
    window: Duration,
    runs: HashMap<(FlowId, String), VecDeque<Instant>>,
}

/// Entities tracked before stale ones are dropped.
const LOOP_DETECTOR_CAPACITY: usize = 10_000;

impl LoopDetector {
    fn new(limit: u32, window: Duration) -> LoopDetector {
        LoopDetector {
            limit,
            window,
            runs: HashMap::new(),
        }
    }

    /// Counts a run of `flow` for `entity`; true when it is one too many.
    fn run(&mut self, flow: FlowId, entity: &str, now: Instant) -> bool {
        if self.limit == 0 {
            return false;
        }
        let window = self.window;
        if self.runs.len() >= LOOP_DETECTOR_CAPACITY {
            self.runs.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < window)
            });
        }
        let times = self.runs.entry((flow, entity.to_string())).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            times.pop_front();
        }
        times.push_back(now);
        times.len() > self.limit as usize
    }
}

/// The entity an event is about (its `id`), for loop detection.
fn entity_of(event: &Value) -> Option<String> {
    match event.get("id")? {
        Value::String(id) if !id.is_empty() => Some(id.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Notes whether a run is being executed (shown as `running` by [`displayed_status`]).
fn set_active(app: &App, id: RunId, active: bool) {
    let mut running = app.active_runs.lock().expect("active runs lock");
    if active {
        running.insert(id);
    } else {
        running.remove(&id);
    }
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
    pub method: String,
    pub url: String,
    pub query: Vec<(String, String)>,
    pub body_text: Option<String>,
    /// Header names of an "HTTP request" (their values are secrets: never shown).
    pub header_names: Vec<String>,
    pub call: Call,
}

/// Where a rendered action goes.
pub enum Call {
    Clockify(ApiRequest),
    /// An "HTTP request" action, through the destinations' outbound rules.
    Http {
        /// The action's headers, opened only when sent.
        sealed: Vec<(String, Sealed)>,
        /// Headers that are no secret (the body's content type unless the action sets one).
        plain: Vec<(String, String)>,
        body: Option<Vec<u8>>,
    },
}

/// Renders an action's templates and builds its request for `installation`. An "HTTP
/// request" URL is checked against the outbound rules again once rendered.
pub fn render_action(
    action: &FlowAction,
    context: &Context,
    installation: &Installation,
    retry: RetryPolicy,
    allowed: &AllowedHosts,
) -> Result<Rendered, String> {
    if let Some(call) = &action.http {
        return render_http(action, call, context, allowed);
    }
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
        method: request.method.clone(),
        url,
        query: request.query.clone(),
        body_text,
        header_names: Vec::new(),
        call: Call::Clockify(request),
    })
}

/// An "HTTP request": the URL and body rendered; a body that renders to one string is sent
/// as that text, any other as JSON.
fn render_http(
    action: &FlowAction,
    call: &HttpCall,
    context: &Context,
    allowed: &AllowedHosts,
) -> Result<Rendered, String> {
    let url = match context
        .render(&Value::String(call.url.clone()), "url")
        .map_err(|e| e.to_string())?
    {
        Value::String(url) => url,
        other => other.to_string(),
    };
    check_url(&url, allowed).map_err(|why| format!("url {url}: {why}"))?;
    let body = match &action.body {
        Some(body) => Some(context.render(&body.0, "body").map_err(|e| e.to_string())?),
        None => None,
    };
    let (body_text, content_type) = match body {
        None => (None, None),
        Some(Value::String(text)) => (Some(text), Some("text/plain; charset=utf-8")),
        Some(value) => (Some(value.to_string()), Some("application/json")),
    };
    let mut header_names: Vec<String> = call.headers.iter().map(|(n, _)| n.clone()).collect();
    let mut plain = Vec::new();
    if let Some(content_type) = content_type
        && !header_names
            .iter()
            .any(|n| n.eq_ignore_ascii_case("content-type"))
    {
        header_names.push("content-type".into());
        plain.push(("content-type".to_string(), content_type.to_string()));
    }
    Ok(Rendered {
        method: call.method.clone(),
        url,
        query: Vec::new(),
        body_text: body_text.clone(),
        header_names,
        call: Call::Http {
            sealed: call.headers.clone(),
            plain,
            body: body_text.map(String::into_bytes),
        },
    })
}

/// The `operation` label of an action's metrics.
fn metric_label(action: &FlowAction) -> String {
    if action.http.is_some() {
        "http".into()
    } else {
        action.operation_id.clone()
    }
}

/// One "HTTP request" as sent.
struct HttpRequest<'a> {
    method: &'a str,
    url: &'a str,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    /// Bytes of the answer kept.
    keep: usize,
}

/// Longest wait between two attempts of an "HTTP request", `Retry-After` included.
const MAX_HTTP_RETRY_WAIT: Duration = Duration::from_secs(60);

/// Sends an "HTTP request" action with the flow's retries, as the Clockify client does: a
/// 429 is retried for every method (it was not processed); 5xx and transport errors only
/// for idempotent methods, since a POST may have taken effect. `Retry-After` is honoured.
/// `Ok`: status, kept body, whether it was cut, attempts; `Err`: why no answer, attempts.
async fn send_http(
    outbound: &Outbound,
    request: HttpRequest<'_>,
    retry: RetryPolicy,
) -> Result<(u16, Vec<u8>, bool, u32), (String, u32)> {
    let again = idempotent(request.method);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let outcome = outbound
            .send(
                request.method,
                request.url,
                request.headers.clone(),
                request.body.clone(),
                request.keep,
            )
            .await;
        let (retryable, retry_after) = match &outcome {
            Ok(answer) => (
                answer.status == 429 || (again && answer.status >= 500),
                answer.retry_after,
            ),
            Err(_) => (again, None),
        };
        if !retryable || attempts >= retry.max_attempts {
            return outcome
                .map(|answer| (answer.status, answer.body, answer.truncated, attempts))
                .map_err(|error| (error, attempts));
        }
        let backoff = Duration::from_millis(
            retry
                .base_backoff_ms
                .saturating_mul(1 << (attempts - 1).min(16)),
        );
        tokio::time::sleep(retry_after.unwrap_or(backoff).min(MAX_HTTP_RETRY_WAIT)).await;
    }
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

async fn execute(app: &App, job: Job, shared: &Shared) -> Result<Ended, StoreError> {
    let (mut run, event, committed) = match job {
        Job::Live(queued) => {
            let queued = *queued;
            (queued.run, queued.event, queued.committed)
        }
        Job::Stored {
            id,
            workspace_id,
            committed,
        } => match app.store.run(&workspace_id, id).await? {
            Some(run) if !run.status.is_final() => (run, None, committed),
            Some(_) => return Ok(Ended::Finished),
            None => return app.store.dequeue_run(id).await.map(|()| Ended::Finished),
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
        if let Some(pause) = app
            .store
            .flows_pause(&run.workspace_id)
            .filter(|p| p.mode == PauseMode::Skip)
        {
            let reason = format!("the workspace's flows are paused: {}", pause.reason);
            return finish(app, run, RunStatus::Skipped, Some(&reason)).await;
        }
    }
    // Counted before anything of the run is evaluated (see the module docs).
    let unclean = app.store.note_run_start(run.id).await?;
    if unclean >= MAX_UNCLEAN_STARTS {
        metrics::counter!("flow_runs_quarantined_total").increment(1);
        let why = format!(
            "quarantined: the server stopped abnormally (crash, kill or power loss) {unclean} times while this run was executing, so it is not started again; check the flow's conditions and templates, then replay the event"
        );
        tracing::warn!(run = %crate::store::format_id(&run.id), flow = %crate::store::format_id(&run.flow.id), "flow run quarantined");
        return finish(app, run, RunStatus::Failed, Some(&why)).await;
    }
    // A suspect runs alone: if it kills the process again, it was the only one in flight.
    let _alone = if unclean > 0 {
        Some(shared.suspects.lock().await)
    } else {
        None
    };
    let Some(event) = event_body(app, &run, event).await? else {
        return finish(
            app,
            run,
            RunStatus::Failed,
            Some("the event is no longer stored"),
        )
        .await;
    };
    if let Err(why) = conditions::measure(&event) {
        return finish(app, run, RunStatus::Failed, Some(&why)).await;
    }
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
        let (matched, outcomes) = match conditions::evaluate(&run.flow.conditions, &event) {
            Ok(evaluated) => evaluated,
            Err(why) => {
                let why = format!("conditions not evaluated: {why}");
                return finish(app, run, RunStatus::Failed, Some(&why)).await;
            }
        };
        if !matched {
            let why = skipped_reason(&run.flow, &outcomes);
            return finish(app, run, RunStatus::Skipped, Some(&why)).await;
        }
        if run.origin == RunOrigin::Event
            && let Some(entity) = entity_of(&event)
        {
            let looping = shared.loops.lock().expect("loop detector lock").run(
                run.flow.id,
                &entity,
                Instant::now(),
            );
            if looping {
                let why = format!(
                    "disabled automatically: it ran more than {} times within {} s for the same {} ({entity}); its own actions probably trigger it again",
                    app.config.flow_loop_limit,
                    FLOW_LOOP_WINDOW.as_secs(),
                    super::model::entity_name(&run.event_type).unwrap_or("entity"),
                );
                disable_flow(app, &run.flow, &why).await?;
                return finish(app, run, RunStatus::Skipped, Some(&why)).await;
            }
        }
        run.status = RunStatus::Running;
        run.started_at = Some(now_ms());
    }
    let mut context = context_for(&installation, &event, &run.event_type);
    let retry = retry_policy(&run.flow);
    let allowed = AllowedHosts::new(&app.config.allow_destination_hosts);
    let mut outbound: Option<Outbound> = None;
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
                    metrics::counter!("flow_actions_total", "operation" => metric_label(action), "outcome" => "unknown").increment(1);
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
            return Ok(Ended::Interrupted);
        }
        let started = now_ms();
        let rendered = match render_action(action, &context, &installation, retry, &allowed) {
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
                metrics::counter!("flow_actions_total", "operation" => metric_label(action), "outcome" => "invalid").increment(1);
                let why = format!("{}: {error}", action.name);
                return finish(app, run, RunStatus::Failed, Some(&why)).await;
            }
        };
        run.actions.push(ActionRun {
            name: action.name.clone(),
            operation_id: action.operation_id.clone(),
            method: rendered.method.clone(),
            url: rendered.url.clone(),
            query: rendered.query.clone(),
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
        if !idempotent(&rendered.method) {
            app.store.save_run(run.clone()).await?;
        }
        if let Some(committed) = first_send.take() {
            metrics::histogram!("flow_commit_to_first_send_seconds")
                .record(committed.elapsed().as_secs_f64());
        }
        let call_started = Instant::now();
        let limit = app.config.flow_response_limit;
        let outcome = match rendered.call {
            Call::Clockify(request) => app
                .clockify
                .send(&installation, app.store.secrets(), request)
                .await
                .map(|response| {
                    let truncated = response.body.len() > limit;
                    let mut body = response.body;
                    body.truncate(limit);
                    (response.status, body, truncated, response.attempts)
                })
                .map_err(|err| {
                    let attempts = match &err {
                        crate::clockify::client::ClientError::Transport { attempts, .. } => {
                            *attempts
                        }
                        _ => 0,
                    };
                    (err.to_string(), attempts)
                }),
            Call::Http {
                sealed,
                plain,
                body,
            } => {
                let outbound = outbound.get_or_insert_with(|| Outbound::new(&app.config));
                let mut headers = plain;
                for (name, value) in &sealed {
                    headers.push((name.clone(), app.store.secrets().open_str(value)?));
                }
                let request = HttpRequest {
                    method: &rendered.method,
                    url: &rendered.url,
                    headers,
                    body,
                    keep: limit,
                };
                send_http(outbound, request, retry).await
            }
        };
        let record = run.actions.last_mut().expect("just pushed");
        record.duration_ms = call_started.elapsed().as_millis() as u64;
        let failure = match outcome {
            Ok((status, kept, truncated, attempts)) => {
                record.attempts = attempts;
                record.response_status = Some(status);
                record.response_truncated = truncated;
                let body = parse_body(&kept);
                record.response_body = Some(kept);
                if (200..300).contains(&status) {
                    record.status = ActionStatus::Succeeded;
                    context.add_action(&action.name, Some(status), &body);
                    None
                } else if action.http.is_some() {
                    Some(format!("the receiver answered HTTP {status}"))
                } else {
                    Some(failure_text(status, &body))
                }
            }
            Err((error, attempts)) => {
                record.attempts = attempts;
                Some(error)
            }
        };
        let outcome_label = match (&failure, record.response_status) {
            (None, _) => "succeeded".to_string(),
            (Some(_), Some(status)) => format!("{}xx", status / 100),
            (Some(_), None) => "error".to_string(),
        };
        metrics::counter!("flow_actions_total", "operation" => metric_label(action), "outcome" => outcome_label).increment(1);
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

/// Turns a flow off with `reason` (unless it was changed meanwhile: then it is left alone).
async fn disable_flow(app: &App, flow: &Flow, reason: &str) -> Result<(), StoreError> {
    let (id, version, reason) = (flow.id, flow.updated_at, reason.to_string());
    let disabled = app
        .store
        .update_flow(&flow.workspace_id, id, move |current| {
            let mut flow = current
                .filter(|f| f.enabled && f.updated_at == version)
                .ok_or(())?;
            flow.enabled = false;
            flow.disabled_reason = Some(reason);
            flow.updated_at = now_ms();
            Ok::<_, ()>(flow)
        })
        .await?;
    if disabled.is_ok() {
        metrics::counter!("flow_loops_stopped_total").increment(1);
        tracing::warn!(flow = %crate::store::format_id(&id), workspace_id = %flow.workspace_id, "flow disabled: it triggers itself");
    }
    Ok(())
}

async fn finish(
    app: &App,
    mut run: Run,
    status: RunStatus,
    error: Option<&str>,
) -> Result<Ended, StoreError> {
    run.status = status;
    run.error = error.map(str::to_string);
    run.finished_at = Some(now_ms());
    if run.started_at.is_none() && status != RunStatus::Skipped {
        run.started_at = run.finished_at;
    }
    let flow_id = run.flow.id;
    let after = app.config.flow_auto_disable_after;
    let auto_disable = AutoDisable {
        after,
        reason: format!(
            "disabled automatically: the last {after} runs failed (last error: {})",
            run.error.as_deref().unwrap_or("unknown")
        ),
    };
    let finished = app.store.finish_run(run, auto_disable).await?;
    metrics::counter!("flow_runs_total", "status" => status.as_str()).increment(1);
    if let Some(flow) = finished.disabled {
        metrics::counter!("flow_auto_disabled_total").increment(1);
        tracing::warn!(
            flow = %crate::store::format_id(&flow_id),
            workspace_id = %flow.workspace_id,
            reason = flow.disabled_reason.as_deref().unwrap_or(""),
            "flow disabled after repeated failures"
        );
        crate::notify::send(
            app,
            crate::notify::Kind::FlowAutoDisabled,
            &flow.workspace_id,
            serde_json::json!({
                "flowId": crate::store::format_id(&flow_id),
                "flowName": flow.name,
                "reason": flow.disabled_reason,
            }),
        )
        .await;
    }
    Ok(Ended::Finished)
}

/// A run's status as shown: a queued run the engine is executing shows as `running`.
pub fn displayed_status(app: &App, run: &Run) -> RunStatus {
    let active = || {
        app.active_runs
            .lock()
            .expect("active runs lock")
            .contains(&run.id)
    };
    if run.status == RunStatus::Queued && active() {
        RunStatus::Running
    } else {
        run.status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Flow;

    fn live(workspace_id: &str) -> Job {
        let flow = Flow::for_tests(workspace_id, "NEW_TIME_ENTRY");
        let run = Run::new(&flow, None, "NEW_TIME_ENTRY", RunOrigin::Event, 0);
        Job::Live(Box::new(QueuedRun {
            run,
            event: None,
            committed: None,
        }))
    }

    /// Each workspace runs up to its concurrency, the rest wait in order, and a slot freed
    /// goes to the next run of the same workspace.
    #[test]
    fn runs_wait_per_workspace_in_order() {
        let mut backlog = Backlog::default();
        let a: Vec<Job> = (0..4).map(|_| live("ws-a")).collect();
        let ids: Vec<RunId> = a.iter().map(Job::run_id).collect();
        let mut started = vec![];
        for job in a {
            started.extend(backlog.arrive(job, 2).map(|j| j.run_id()));
        }
        assert_eq!(started, ids[..2]);
        assert!(
            backlog.arrive(live("ws-b"), 2).is_some(),
            "another workspace"
        );
        assert_eq!(backlog.waiting, 2);
        assert_eq!(backlog.finished("ws-a").map(|j| j.run_id()), Some(ids[2]));
        assert_eq!(backlog.finished("ws-a").map(|j| j.run_id()), Some(ids[3]));
        assert_eq!(backlog.waiting, 0);
        assert!(backlog.finished("ws-a").is_none());
        assert!(backlog.finished("ws-a").is_none());
        assert!(
            !backlog.workspaces.contains_key("ws-a"),
            "an idle workspace is forgotten"
        );
        assert!(backlog.arrive(live("ws-a"), 2).is_some());
        assert!(backlog.arrive(live("ws-a"), 2).is_some());
        assert!(backlog.arrive(live("ws-a"), 2).is_none());
    }

    /// Past the limit, waiting runs keep only their id; they still start in order.
    #[test]
    fn a_long_backlog_keeps_only_ids() {
        let mut backlog = Backlog::default();
        assert!(backlog.arrive(live("ws"), 1).is_some());
        let mut ids = vec![];
        for _ in 0..MAX_WAITING_IN_MEMORY + 10 {
            let job = live("ws");
            ids.push(job.run_id());
            assert!(backlog.arrive(job, 1).is_none());
        }
        assert_eq!(backlog.waiting, MAX_WAITING_IN_MEMORY + 10);
        assert_eq!(backlog.waiting_in_memory, MAX_WAITING_IN_MEMORY);
        for (n, id) in ids.iter().enumerate() {
            let next = backlog.finished("ws").expect("the next run");
            assert_eq!(next.run_id(), *id);
            assert_eq!(next.in_memory(), n < MAX_WAITING_IN_MEMORY, "run {n}");
            assert_eq!(next.workspace_id(), "ws");
        }
        assert_eq!((backlog.waiting, backlog.waiting_in_memory), (0, 0));
    }

    #[test]
    fn loops_are_counted_per_flow_and_entity_within_the_window() {
        let mut detector = LoopDetector::new(3, Duration::from_secs(60));
        let start = Instant::now();
        for _ in 0..3 {
            assert!(!detector.run([1; 16], "te", start));
        }
        assert!(
            detector.run([1; 16], "te", start),
            "the fourth run is a loop"
        );
        assert!(!detector.run([2; 16], "te", start), "another flow");
        assert!(!detector.run([1; 16], "te-2", start), "another entity");
        let later = start + Duration::from_secs(61);
        assert!(!detector.run([1; 16], "te", later), "the window moved on");
        let mut never = LoopDetector::new(0, Duration::from_secs(60));
        assert!((0..100).all(|_| !never.run([1; 16], "te", start)));
        assert_eq!(entity_of(&json!({"id": "te-1"})), Some("te-1".into()));
        assert_eq!(entity_of(&json!({"name": "x"})), None);
    }
}
