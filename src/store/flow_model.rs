//! The flow model as stored: flows, their per-flow counters and their runs, each a versioned
//! record. The flow engine and the HTTP layer work with these types; how they are validated,
//! executed and shown lives in `crate::flows` and `crate::api`.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::event_record::StoredEvent;
use super::schema::{EventId, FlowId, RunId, decode, encode, new_id};

/// The trigger source of Clockify's own webhooks; any other source is a custom source id.
pub const CLOCKIFY_SOURCE: &str = "clockify";

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

pub(super) fn decode_flow(bytes: &[u8]) -> Result<Flow, StoreError> {
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

pub(super) fn decode_stats(bytes: &[u8]) -> Result<FlowStats, StoreError> {
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
    /// `POST /api/runs/{id}/retry`: the same flow and event again after a failure.
    /// (Appended: postcard numbers variants, so older records keep decoding.)
    Retry,
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

pub(super) fn decode_run(bytes: &[u8]) -> Result<Run, StoreError> {
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

pub(super) fn encode_flow(flow: &Flow) -> Vec<u8> {
    encode(&FlowRecordRef::V1(flow))
}

pub(super) fn encode_stats(stats: FlowStats) -> Vec<u8> {
    encode(&FlowStatsRecord::V1(stats))
}

pub(super) fn encode_run(run: &Run) -> Vec<u8> {
    encode(&RunRecordRef::V1(run))
}

/// The same encodings as the records, from borrows.
#[derive(Serialize)]
enum FlowRecordRef<'a> {
    V1(&'a Flow),
}

#[derive(Serialize)]
enum RunRecordRef<'a> {
    V1(&'a Run),
}
