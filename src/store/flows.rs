//! Flows and their runs: definitions, per-flow statistics, the run log, and the durable run
//! queue. Runs for a committed event are enqueued inside the event's own write transaction
//! (see `events::insert_event`), so a crash can never lose one. Enabled flows are mirrored in
//! memory, indexed by (workspace, source, event type), so ingestion finds them without a read.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::events::{EventId, StoredEvent};
use super::keys::{
    id_floor_for_millis, ids_before, prefix_end, with_suffix, workspace_prefix, workspaces_of,
};
use super::{Store, StoreError, decode, encode};

/// `[ws][flow id]` → flow record.
pub(crate) const FLOWS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("flows");
/// `[ws][flow id]` → run counters of the flow.
pub(crate) const FLOW_STATS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("flow_stats");
/// `[ws][run id]` → run record.
pub(crate) const FLOW_RUNS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("flow_runs");
/// `[ws][flow id][run id]` → empty.
pub(crate) const FLOW_RUNS_BY_FLOW: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("flow_runs_by_flow");
/// `[ws][event id][flow id]` → run id: the one run an event produces per flow.
pub(crate) const FLOW_RUNS_BY_EVENT: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("flow_runs_by_event");
/// `[run id]` → workspace id: runs not finished yet, oldest first.
pub(crate) const FLOW_RUN_QUEUE: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("flow_run_queue");

/// The trigger source of Clockify's own webhooks; any other source is a custom source id.
pub const CLOCKIFY_SOURCE: &str = "clockify";

pub type FlowId = [u8; 16];
pub type RunId = [u8; 16];

pub fn format_id(id: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*id).to_string()
}

pub fn parse_id(text: &str) -> Option<[u8; 16]> {
    uuid::Uuid::parse_str(text).ok().map(|u| *u.as_bytes())
}

pub fn new_id() -> [u8; 16] {
    *uuid::Uuid::now_v7().as_bytes()
}

/// A JSON value inside a postcard record. postcard cannot decode self-describing data, so
/// the value is kept as JSON text.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Json(pub serde_json::Value);

impl Serialize for Json {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        let text = String::deserialize(deserializer)?;
        serde_json::from_str(&text)
            .map(Json)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    Contains,
    NotContains,
    In,
    NotIn,
    Exists,
    NotExists,
    Matches,
    Empty,
    NotEmpty,
}

impl Op {
    pub const ALL: [Op; 15] = [
        Op::Eq,
        Op::Ne,
        Op::Gt,
        Op::Gte,
        Op::Lt,
        Op::Lte,
        Op::Contains,
        Op::NotContains,
        Op::In,
        Op::NotIn,
        Op::Exists,
        Op::NotExists,
        Op::Matches,
        Op::Empty,
        Op::NotEmpty,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Ne => "ne",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::Contains => "contains",
            Op::NotContains => "not_contains",
            Op::In => "in",
            Op::NotIn => "not_in",
            Op::Exists => "exists",
            Op::NotExists => "not_exists",
            Op::Matches => "matches",
            Op::Empty => "empty",
            Op::NotEmpty => "not_empty",
        }
    }

    pub fn parse(text: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == text)
    }

    /// Operators that test presence or emptiness and take no value.
    pub fn takes_value(self) -> bool {
        !matches!(self, Op::Exists | Op::NotExists | Op::Empty | Op::NotEmpty)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// RFC 9535 JSONPath into the event body.
    pub path: String,
    pub op: Op,
    pub value: Json,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conditions {
    /// `any` instead of `all`.
    pub any: bool,
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// [`CLOCKIFY_SOURCE`] or a custom source id.
    pub source: String,
    pub events: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowAction {
    /// Unique within the flow; later actions refer to it as `actions.<name>`.
    pub name: String,
    pub operation_id: String,
    pub path_params: Vec<(String, Json)>,
    pub query: Vec<(String, Json)>,
    pub body: Option<Json>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRetry {
    pub max_attempts: u32,
    pub backoff_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Flow {
    pub id: FlowId,
    pub workspace_id: String,
    pub name: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub trigger: Trigger,
    pub conditions: Conditions,
    pub actions: Vec<FlowAction>,
    pub retry: FlowRetry,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Serialize, Deserialize)]
enum FlowRecord {
    V1(Flow),
}

fn decode_flow(bytes: &[u8]) -> Result<Flow, StoreError> {
    match decode::<FlowRecord>(bytes)? {
        FlowRecord::V1(flow) => Ok(flow),
    }
}

/// Run counters of one flow: runs kept (retention subtracts what it deletes) and the current
/// streak of failures, which disables the flow when it reaches the configured limit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowStats {
    pub succeeded: u64,
    pub failed: u64,
    pub skipped: u64,
    pub consecutive_failures: u32,
    pub last_run: Option<RunId>,
}

#[derive(Serialize, Deserialize)]
enum FlowStatsRecord {
    V1(FlowStats),
}

fn decode_stats(bytes: &[u8]) -> Result<FlowStats, StoreError> {
    match decode::<FlowStatsRecord>(bytes)? {
        FlowStatsRecord::V1(stats) => Ok(stats),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Skipped,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Skipped => "skipped",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Skipped
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionStatus {
    /// Durably marked before a non-idempotent call: if the process dies now, the outcome is
    /// unknown and the call is not repeated.
    Sending,
    Succeeded,
    Failed,
}

impl ActionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::Sending => "sending",
            ActionStatus::Succeeded => "succeeded",
            ActionStatus::Failed => "failed",
        }
    }
}

/// One action of a run: the request as sent (never the token) and what came back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRun {
    pub name: String,
    pub operation_id: String,
    pub method: String,
    pub url: String,
    pub query: Vec<(String, String)>,
    /// The JSON body sent, as text.
    pub body: Option<String>,
    pub status: ActionStatus,
    pub response_status: Option<u16>,
    /// The response body, cut at the configured size.
    pub response_body: Option<Vec<u8>>,
    pub response_truncated: bool,
    pub duration_ms: u64,
    pub attempts: u32,
    pub error: Option<String>,
    pub started_at: i64,
}

/// Where a run came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunOrigin {
    /// A committed event matched the flow's trigger.
    Event,
    /// `POST /api/webhooks/{id}/replay`.
    Replay,
    /// `POST /api/flows/{id}/test` with `execute: true`.
    Test,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: RunId,
    pub workspace_id: String,
    /// The flow as it was when the run was queued: a run resumed after a restart follows the
    /// same actions it started with.
    pub flow: Flow,
    pub event_id: Option<EventId>,
    pub event_type: String,
    /// The event body of a test run given inline (not stored as an event).
    pub inline_event: Option<Vec<u8>>,
    pub origin: RunOrigin,
    pub status: RunStatus,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
    pub actions: Vec<ActionRun>,
}

impl Run {
    pub fn new(
        flow: &Flow,
        event_id: Option<EventId>,
        event_type: &str,
        origin: RunOrigin,
        now_ms: i64,
    ) -> Run {
        Run {
            id: new_id(),
            workspace_id: flow.workspace_id.clone(),
            flow: flow.clone(),
            event_id,
            event_type: event_type.to_string(),
            inline_event: None,
            origin,
            status: RunStatus::Queued,
            created_at: now_ms,
            started_at: None,
            finished_at: None,
            error: None,
            actions: Vec::new(),
        }
    }
}

#[derive(Serialize, Deserialize)]
enum RunRecord {
    V1(Run),
}

fn decode_run(bytes: &[u8]) -> Result<Run, StoreError> {
    match decode::<RunRecord>(bytes)? {
        RunRecord::V1(run) => Ok(run),
    }
}

/// A run committed to the queue, handed to the flow engine right after the commit.
pub struct QueuedRun {
    pub run: Run,
    /// The triggering event when it is at hand (saves the engine a read).
    pub event: Option<Arc<StoredEvent>>,
    /// When the commit that queued the run completed (for the commit → send metric).
    pub committed: Option<Instant>,
}

fn flow_key(ws: &str, id: &FlowId) -> Vec<u8> {
    with_suffix(&workspace_prefix(ws), id)
}

fn run_key(ws: &str, id: &RunId) -> Vec<u8> {
    with_suffix(&workspace_prefix(ws), id)
}

fn by_flow_key(ws: &str, flow: &FlowId, run: &RunId) -> Vec<u8> {
    let mut key = flow_key(ws, flow);
    key.extend_from_slice(run);
    key
}

fn by_event_key(ws: &str, event: &EventId, flow: &FlowId) -> Vec<u8> {
    let mut key = with_suffix(&workspace_prefix(ws), event);
    key.extend_from_slice(flow);
    key
}

type TriggerKey = (String, String, String);

/// All flows in memory, and the enabled ones by (workspace, source, event type).
#[derive(Default)]
pub(crate) struct FlowIndex {
    inner: RwLock<FlowIndexInner>,
}

#[derive(Default)]
struct FlowIndexInner {
    flows: HashMap<FlowId, Arc<Flow>>,
    triggers: HashMap<TriggerKey, Vec<FlowId>>,
}

impl FlowIndex {
    pub(crate) fn load(db: &redb::Database) -> Result<FlowIndex, StoreError> {
        use redb::ReadableDatabase;
        let index = FlowIndex::default();
        let rtx = db.begin_read()?;
        let table = rtx.open_table(FLOWS)?;
        for entry in table.iter()? {
            let (_, v) = entry?;
            index.put(decode_flow(v.value())?);
        }
        Ok(index)
    }

    fn put(&self, flow: Flow) {
        let mut inner = self.inner.write().expect("flow index lock");
        inner.unlink(&flow.id);
        if flow.enabled {
            for event in &flow.trigger.events {
                let key = (
                    flow.workspace_id.clone(),
                    flow.trigger.source.clone(),
                    event.clone(),
                );
                let ids = inner.triggers.entry(key).or_default();
                if !ids.contains(&flow.id) {
                    ids.push(flow.id);
                }
            }
        }
        inner.flows.insert(flow.id, Arc::new(flow));
    }

    fn remove(&self, id: &FlowId) {
        let mut inner = self.inner.write().expect("flow index lock");
        inner.unlink(id);
        inner.flows.remove(id);
    }

    fn remove_workspace(&self, ws: &str) {
        let mut inner = self.inner.write().expect("flow index lock");
        let ids: Vec<FlowId> = inner
            .flows
            .values()
            .filter(|f| f.workspace_id == ws)
            .map(|f| f.id)
            .collect();
        for id in ids {
            inner.unlink(&id);
            inner.flows.remove(&id);
        }
    }

    /// Enabled flows whose trigger matches, oldest flow first.
    pub(crate) fn matching(&self, ws: &str, source: &str, event_type: &str) -> Vec<Arc<Flow>> {
        let inner = self.inner.read().expect("flow index lock");
        if inner.triggers.is_empty() {
            return Vec::new();
        }
        let key = (ws.to_string(), source.to_string(), event_type.to_string());
        let mut flows: Vec<Arc<Flow>> = inner
            .triggers
            .get(&key)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| inner.flows.get(id).cloned())
                    .collect()
            })
            .unwrap_or_default();
        flows.sort_by_key(|f| f.id);
        flows
    }

    pub(crate) fn get(&self, id: &FlowId) -> Option<Arc<Flow>> {
        self.inner
            .read()
            .expect("flow index lock")
            .flows
            .get(id)
            .cloned()
    }
}

impl FlowIndexInner {
    fn unlink(&mut self, id: &FlowId) {
        let Some(old) = self.flows.get(id).cloned() else {
            return;
        };
        for event in &old.trigger.events {
            let key = (
                old.workspace_id.clone(),
                old.trigger.source.clone(),
                event.clone(),
            );
            if let Some(ids) = self.triggers.get_mut(&key) {
                ids.retain(|x| x != id);
                if ids.is_empty() {
                    self.triggers.remove(&key);
                }
            }
        }
    }
}

/// Hands committed runs to the engine and announces finished ones.
pub(crate) struct RunDispatch {
    sender: tokio::sync::mpsc::UnboundedSender<QueuedRun>,
    receiver: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<QueuedRun>>>,
    finished: tokio::sync::broadcast::Sender<RunId>,
    /// Runs being executed right now (their stored status may still say queued: idempotent
    /// first actions are not preceded by a write).
    running: std::sync::Mutex<std::collections::HashSet<RunId>>,
}

impl RunDispatch {
    pub(crate) fn new() -> RunDispatch {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        RunDispatch {
            sender,
            receiver: std::sync::Mutex::new(Some(receiver)),
            finished: tokio::sync::broadcast::channel(1024).0,
            running: Default::default(),
        }
    }

    /// Called after the commit that queued `runs`.
    pub(crate) fn committed(&self, runs: &[QueuedRun], event: Option<&Arc<StoredEvent>>) {
        let now = Instant::now();
        for queued in runs {
            // A closed receiver means no engine runs (e.g. shutting down): the queue table
            // still holds the run for the next start.
            let _ = self.sender.send(QueuedRun {
                run: queued.run.clone(),
                event: event.cloned().or_else(|| queued.event.clone()),
                committed: Some(now),
            });
        }
        if !runs.is_empty() {
            metrics::gauge!("flow_queue_depth").increment(runs.len() as f64);
        }
    }
}

/// Inside the event's write transaction: queues one run per enabled flow whose trigger
/// matches the event. `(flow, event)` keys the run, so an event never runs a flow twice.
pub(crate) fn enqueue_for_event(
    wtx: &WriteTransaction,
    index: &FlowIndex,
    event: &StoredEvent,
    out: &mut Vec<QueuedRun>,
) -> Result<(), StoreError> {
    let source = event.source_id.as_deref().unwrap_or(CLOCKIFY_SOURCE);
    let flows = index.matching(&event.workspace_id, source, &event.event_type);
    if flows.is_empty() {
        return Ok(());
    }
    let mut by_event = wtx.open_table(FLOW_RUNS_BY_EVENT)?;
    for flow in flows {
        let key = by_event_key(&event.workspace_id, &event.id, &flow.id);
        if by_event.get(key.as_slice())?.is_some() {
            continue;
        }
        let run = Run::new(
            &flow,
            Some(event.id),
            &event.event_type,
            RunOrigin::Event,
            event.received_at,
        );
        by_event.insert(key.as_slice(), run.id.as_slice())?;
        insert_run(wtx, &run)?;
        out.push(QueuedRun {
            run,
            event: None,
            committed: None,
        });
    }
    Ok(())
}

fn insert_run(wtx: &WriteTransaction, run: &Run) -> Result<(), StoreError> {
    let ws = &run.workspace_id;
    wtx.open_table(FLOW_RUNS)?.insert(
        run_key(ws, &run.id).as_slice(),
        encode(&RunRecord::V1(run.clone())).as_slice(),
    )?;
    wtx.open_table(FLOW_RUNS_BY_FLOW)?.insert(
        by_flow_key(ws, &run.flow.id, &run.id).as_slice(),
        [].as_slice(),
    )?;
    wtx.open_table(FLOW_RUN_QUEUE)?
        .insert(run.id.as_slice(), ws.as_bytes())?;
    Ok(())
}

fn read_stats(wtx: &WriteTransaction, key: &[u8]) -> Result<FlowStats, StoreError> {
    let table = wtx.open_table(FLOW_STATS)?;
    let found = table.get(key)?;
    found
        .map(|v| decode_stats(v.value()))
        .transpose()
        .map(Option::unwrap_or_default)
}

fn write_stats(wtx: &WriteTransaction, key: &[u8], stats: FlowStats) -> Result<(), StoreError> {
    wtx.open_table(FLOW_STATS)?
        .insert(key, encode(&FlowStatsRecord::V1(stats)).as_slice())?;
    Ok(())
}

/// Removes one run and its index rows; returns it when it existed.
fn remove_run(wtx: &WriteTransaction, ws: &str, id: &RunId) -> Result<Option<Run>, StoreError> {
    let removed = wtx
        .open_table(FLOW_RUNS)?
        .remove(run_key(ws, id).as_slice())?
        .map(|v| v.value().to_vec());
    let Some(bytes) = removed else {
        return Ok(None);
    };
    let run = decode_run(&bytes)?;
    wtx.open_table(FLOW_RUNS_BY_FLOW)?
        .remove(by_flow_key(ws, &run.flow.id, id).as_slice())?;
    if let Some(event) = run.event_id.filter(|_| run.origin == RunOrigin::Event) {
        let mut by_event = wtx.open_table(FLOW_RUNS_BY_EVENT)?;
        let key = by_event_key(ws, &event, &run.flow.id);
        let points_here = by_event
            .get(key.as_slice())?
            .is_some_and(|v| v.value() == id);
        if points_here {
            by_event.remove(key.as_slice())?;
        }
    }
    wtx.open_table(FLOW_RUN_QUEUE)?.remove(id.as_slice())?;
    if run.origin != RunOrigin::Test {
        let skey = flow_key(ws, &run.flow.id);
        let exists = wtx.open_table(FLOW_STATS)?.get(skey.as_slice())?.is_some();
        if exists {
            let mut stats = read_stats(wtx, &skey)?;
            match run.status {
                RunStatus::Succeeded => stats.succeeded = stats.succeeded.saturating_sub(1),
                RunStatus::Failed => stats.failed = stats.failed.saturating_sub(1),
                RunStatus::Skipped => stats.skipped = stats.skipped.saturating_sub(1),
                _ => {}
            }
            write_stats(wtx, &skey, stats)?;
        }
    }
    Ok(Some(run))
}

/// A page of a flow's runs, newest first.
pub struct RunPage {
    pub items: Vec<Run>,
    pub next_cursor: Option<RunId>,
}

/// What finishing a run changed besides the run itself.
pub struct Finished {
    /// The flow, when this run's failure streak disabled it.
    pub disabled: Option<Flow>,
}

impl Store {
    pub async fn flows(&self, ws: &str) -> Result<Vec<Flow>, StoreError> {
        let ws = ws.to_string();
        self.read(move |rtx| {
            let table = rtx.open_table(FLOWS)?;
            let prefix = workspace_prefix(&ws);
            let end = prefix_end(&prefix);
            let mut out = Vec::new();
            for entry in table.range::<&[u8]>(prefix.as_slice()..end.as_slice())? {
                let (_, v) = entry?;
                out.push(decode_flow(v.value())?);
            }
            Ok(out)
        })
        .await
    }

    pub async fn flow(&self, ws: &str, id: FlowId) -> Result<Option<Flow>, StoreError> {
        self.read_record(FLOWS, flow_key(ws, &id), decode_flow)
            .await
    }

    /// Enabled flows whose trigger matches an event of `source` (`clockify` or a custom
    /// source id) and `event_type` in `ws`.
    pub fn flows_triggered_by(&self, ws: &str, source: &str, event_type: &str) -> Vec<Arc<Flow>> {
        self.flow_index.matching(ws, source, event_type)
    }

    /// The flow as the engine sees it right now (in memory; `None` once deleted).
    pub fn flow_now(&self, id: &FlowId) -> Option<Arc<Flow>> {
        self.flow_index.get(id)
    }

    /// Inserts or replaces a flow; `change` sees the stored one (if any) and returns the flow
    /// to write, or `Err` to leave everything as it was.
    pub async fn update_flow<E: Send + 'static>(
        &self,
        ws: &str,
        id: FlowId,
        change: impl FnOnce(Option<Flow>) -> Result<Flow, E> + Send + 'static,
    ) -> Result<Result<Flow, E>, StoreError> {
        let key = flow_key(ws, &id);
        let index = self.flow_index.clone();
        self.write_then(
            move |wtx| {
                let mut table = wtx.open_table(FLOWS)?;
                let current = table
                    .get(key.as_slice())?
                    .map(|v| decode_flow(v.value()))
                    .transpose()?;
                let was_enabled = current.as_ref().is_some_and(|f| f.enabled);
                match change(current) {
                    Err(e) => Ok(Err(e)),
                    Ok(flow) => {
                        table.insert(
                            key.as_slice(),
                            encode(&FlowRecord::V1(flow.clone())).as_slice(),
                        )?;
                        drop(table);
                        if flow.enabled && !was_enabled {
                            // A fresh start: old failures must not disable it again at once.
                            let mut stats = read_stats(wtx, &key)?;
                            if stats.consecutive_failures > 0 {
                                stats.consecutive_failures = 0;
                                write_stats(wtx, &key, stats)?;
                            }
                        }
                        Ok(Ok(flow))
                    }
                }
            },
            move |result: &Result<Flow, E>| {
                if let Ok(flow) = result {
                    index.put(flow.clone());
                }
            },
        )
        .await
    }

    /// Deletes a flow and its counters (its runs stay until retention); returns whether it
    /// existed in `ws`.
    pub async fn delete_flow(&self, ws: &str, id: FlowId) -> Result<bool, StoreError> {
        let key = flow_key(ws, &id);
        let index = self.flow_index.clone();
        self.write_then(
            move |wtx| {
                let existed = wtx.open_table(FLOWS)?.remove(key.as_slice())?.is_some();
                wtx.open_table(FLOW_STATS)?.remove(key.as_slice())?;
                Ok(existed)
            },
            move |existed| {
                if *existed {
                    index.remove(&id);
                }
            },
        )
        .await
    }

    pub async fn flow_stats(&self, ws: &str, id: FlowId) -> Result<FlowStats, StoreError> {
        let key = flow_key(ws, &id);
        self.read(move |rtx| {
            let table = rtx.open_table(FLOW_STATS)?;
            let found = table.get(key.as_slice())?;
            found
                .map(|v| decode_stats(v.value()))
                .transpose()
                .map(Option::unwrap_or_default)
        })
        .await
    }

    pub async fn run(&self, ws: &str, id: RunId) -> Result<Option<Run>, StoreError> {
        self.read_record(FLOW_RUNS, run_key(ws, &id), decode_run)
            .await
    }

    /// Newest-first runs of a flow, strictly older than `before` when given.
    pub async fn flow_runs(
        &self,
        ws: &str,
        flow: FlowId,
        before: Option<RunId>,
        limit: usize,
    ) -> Result<RunPage, StoreError> {
        let ws = ws.to_string();
        self.read(move |rtx| {
            let index = rtx.open_table(FLOW_RUNS_BY_FLOW)?;
            let runs = rtx.open_table(FLOW_RUNS)?;
            let prefix = flow_key(&ws, &flow);
            let end = match before {
                Some(before) => with_suffix(&prefix, &before),
                None => prefix_end(&prefix),
            };
            let mut items = Vec::new();
            let mut more = false;
            for entry in index
                .range::<&[u8]>(prefix.as_slice()..end.as_slice())?
                .rev()
            {
                let (k, _) = entry?;
                if items.len() == limit {
                    more = true;
                    break;
                }
                let id: RunId = k.value()[prefix.len()..]
                    .try_into()
                    .map_err(|_| StoreError::Decode("malformed run key".into()))?;
                if let Some(v) = runs.get(run_key(&ws, &id).as_slice())? {
                    items.push(decode_run(v.value())?);
                }
            }
            let next_cursor = if more {
                items.last().map(|r: &Run| r.id)
            } else {
                None
            };
            Ok(RunPage { items, next_cursor })
        })
        .await
    }

    /// Queues runs made outside ingestion (replays, executed tests) and hands them to the
    /// engine after the commit.
    pub async fn enqueue_runs(&self, runs: Vec<Run>) -> Result<(), StoreError> {
        let dispatch = self.run_dispatch.clone();
        self.write_then(
            move |wtx| {
                for run in &runs {
                    insert_run(wtx, run)?;
                }
                Ok(runs
                    .into_iter()
                    .map(|run| QueuedRun {
                        run,
                        event: None,
                        committed: None,
                    })
                    .collect::<Vec<_>>())
            },
            move |queued| dispatch.committed(queued, None),
        )
        .await
        .map(drop)
    }

    /// Records progress of an unfinished run.
    pub async fn save_run(&self, run: Run) -> Result<(), StoreError> {
        self.write(move |wtx| {
            wtx.open_table(FLOW_RUNS)?.insert(
                run_key(&run.workspace_id, &run.id).as_slice(),
                encode(&RunRecord::V1(run)).as_slice(),
            )?;
            Ok(())
        })
        .await
    }

    /// Records a finished run, takes it off the queue and updates its flow's counters; a
    /// streak of `disable_after` failures (0 = never) disables the flow, in the same commit.
    pub async fn finish_run(&self, run: Run, disable_after: u32) -> Result<Finished, StoreError> {
        debug_assert!(run.status.is_final());
        let index = self.flow_index.clone();
        let dispatch = self.run_dispatch.clone();
        let run_id = run.id;
        self.write_then(
            move |wtx| {
                let ws = run.workspace_id.clone();
                wtx.open_table(FLOW_RUNS)?.insert(
                    run_key(&ws, &run.id).as_slice(),
                    encode(&RunRecord::V1(run.clone())).as_slice(),
                )?;
                let dequeued = wtx
                    .open_table(FLOW_RUN_QUEUE)?
                    .remove(run.id.as_slice())?
                    .is_some();
                if run.origin == RunOrigin::Test {
                    return Ok((Finished { disabled: None }, dequeued));
                }
                let fkey = flow_key(&ws, &run.flow.id);
                let flow = wtx
                    .open_table(FLOWS)?
                    .get(fkey.as_slice())?
                    .map(|v| decode_flow(v.value()))
                    .transpose()?;
                let Some(mut flow) = flow else {
                    // Deleted meanwhile: nothing to count against.
                    return Ok((Finished { disabled: None }, dequeued));
                };
                let mut stats = read_stats(wtx, &fkey)?;
                stats.last_run = Some(run.id);
                match run.status {
                    RunStatus::Succeeded => {
                        stats.succeeded += 1;
                        stats.consecutive_failures = 0;
                    }
                    RunStatus::Failed => {
                        stats.failed += 1;
                        stats.consecutive_failures += 1;
                    }
                    _ => stats.skipped += 1,
                }
                let mut disabled = None;
                if disable_after > 0 && stats.consecutive_failures >= disable_after && flow.enabled
                {
                    flow.enabled = false;
                    flow.disabled_reason = Some(format!(
                        "disabled automatically: the last {disable_after} runs failed (last error: {})",
                        run.error.as_deref().unwrap_or("unknown")
                    ));
                    flow.updated_at = jiff::Timestamp::now().as_millisecond();
                    wtx.open_table(FLOWS)?.insert(
                        fkey.as_slice(),
                        encode(&FlowRecord::V1(flow.clone())).as_slice(),
                    )?;
                    disabled = Some(flow);
                }
                write_stats(wtx, &fkey, stats)?;
                Ok((Finished { disabled }, dequeued))
            },
            move |(finished, dequeued)| {
                if let Some(flow) = &finished.disabled {
                    index.put(flow.clone());
                }
                if *dequeued {
                    metrics::gauge!("flow_queue_depth").decrement(1.0);
                }
                let _ = dispatch.finished.send(run_id);
            },
        )
        .await
        .map(|(finished, _)| finished)
    }

    /// Announces the id of every run that finishes from now on.
    pub fn subscribe_finished_runs(&self) -> tokio::sync::broadcast::Receiver<RunId> {
        self.run_dispatch.finished.subscribe()
    }

    /// Notes whether the engine is executing a run (shown as `running` by the API).
    pub fn set_run_active(&self, id: RunId, active: bool) {
        let mut running = self.run_dispatch.running.lock().expect("running runs lock");
        if active {
            running.insert(id);
        } else {
            running.remove(&id);
        }
    }

    pub fn is_run_active(&self, id: &RunId) -> bool {
        self.run_dispatch
            .running
            .lock()
            .expect("running runs lock")
            .contains(id)
    }

    /// Drops a queue entry whose run record is gone.
    pub async fn dequeue_run(&self, id: RunId) -> Result<(), StoreError> {
        self.write(move |wtx| {
            wtx.open_table(FLOW_RUN_QUEUE)?.remove(id.as_slice())?;
            Ok(())
        })
        .await
    }

    /// Takes the stream of committed runs (once: the flow engine owns it).
    pub fn take_queued_runs(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<QueuedRun>> {
        self.run_dispatch
            .receiver
            .lock()
            .expect("run receiver")
            .take()
    }

    /// Every run on the queue, oldest first (what a restart resumes).
    pub async fn queued_runs(&self) -> Result<Vec<(RunId, String)>, StoreError> {
        self.read(|rtx| {
            let queue = rtx.open_table(FLOW_RUN_QUEUE)?;
            let mut out = Vec::new();
            for entry in queue.iter()? {
                let (k, v) = entry?;
                let id: RunId = k
                    .value()
                    .try_into()
                    .map_err(|_| StoreError::Decode("malformed queue key".into()))?;
                let ws = String::from_utf8_lossy(v.value()).into_owned();
                out.push((id, ws));
            }
            Ok(out)
        })
        .await
    }

    /// Counts runs of `ws` by final status since `since_ms` (for overviews).
    pub async fn run_counts_since(
        &self,
        ws: &str,
        since_ms: i64,
    ) -> Result<HashMap<RunStatus, u64>, StoreError> {
        let ws = ws.to_string();
        self.read(move |rtx| {
            let runs = rtx.open_table(FLOW_RUNS)?;
            let prefix = workspace_prefix(&ws);
            let start = with_suffix(&prefix, &id_floor_for_millis(since_ms));
            let end = prefix_end(&prefix);
            let mut counts = HashMap::new();
            for entry in runs.range::<&[u8]>(start.as_slice()..end.as_slice())? {
                let (_, v) = entry?;
                *counts.entry(decode_run(v.value())?.status).or_insert(0) += 1;
            }
            Ok(counts)
        })
        .await
    }

    /// Deletes up to `max` of the workspace's runs queued before `cutoff_ms` (all with
    /// `i64::MAX`); returns how many were deleted.
    pub async fn delete_runs_before(
        &self,
        ws: &str,
        cutoff_ms: i64,
        max: usize,
    ) -> Result<usize, StoreError> {
        let ws = ws.to_string();
        self.write(move |wtx| {
            let prefix = workspace_prefix(&ws);
            let ids = ids_before(
                &wtx.open_table(FLOW_RUNS)?,
                &prefix,
                cutoff_ms,
                max,
                bad_key,
            )?;
            for id in &ids {
                remove_run(wtx, &ws, id)?;
            }
            Ok(ids.len())
        })
        .await
    }

    /// Workspaces that have stored runs (for retention).
    pub async fn run_workspaces(&self) -> Result<Vec<String>, StoreError> {
        self.read(|rtx| workspaces_of(&rtx.open_table(FLOW_RUNS)?, bad_key))
            .await
    }

    /// Deletes every flow of a workspace (purge of an uninstalled workspace).
    pub async fn delete_workspace_flows(&self, ws: &str) -> Result<usize, StoreError> {
        let ws = ws.to_string();
        let index = self.flow_index.clone();
        let purged = ws.clone();
        self.write_then(
            move |wtx| {
                let prefix = workspace_prefix(&ws);
                let end = prefix_end(&prefix);
                let mut n = 0;
                for (i, table) in [FLOWS, FLOW_STATS].into_iter().enumerate() {
                    let mut t = wtx.open_table(table)?;
                    let keys: Vec<Vec<u8>> = t
                        .range::<&[u8]>(prefix.as_slice()..end.as_slice())?
                        .map(|e| e.map(|(k, _)| k.value().to_vec()))
                        .collect::<Result<_, _>>()?;
                    if i == 0 {
                        n = keys.len();
                    }
                    for key in keys {
                        t.remove(key.as_slice())?;
                    }
                }
                Ok(n)
            },
            move |_| index.remove_workspace(&purged),
        )
        .await
    }
}

fn bad_key() -> StoreError {
    StoreError::Decode("malformed run key".into())
}
