//! The flow model as stored: flows, their per-flow counters and their runs, each a versioned
//! record. The flow engine and the HTTP layer work with these types; how they are validated,
//! executed and shown lives in `crate::flows` and `crate::api`.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::event_record::StoredEvent;
use super::schema::{EventId, FlowId, RunId, decode, encode, new_id};
use super::secrets::Sealed;

/// The trigger source of Clockify's own webhooks; any other source is a custom source id.
pub const CLOCKIFY_SOURCE: &str = "clockify";

/// The source of the server's own notifications (a flow disabled, syncs failing), stored as
/// events so that destinations can forward them. Reserved: custom source ids are made as
/// 32-hex uuids, and imports refuse it. Never a flow trigger (a notification about a failing
/// flow must not run flows), and forwarded only by destinations that name it.
pub const STUDIO_SOURCE: &str = "studio";

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
    /// The body template: JSON whose strings may be templates (an "HTTP request" action
    /// whose body is one string sends the rendered text as it is).
    pub body: Option<Json>,
    /// Set for an "HTTP request" action (then `operation_id` and the parameters are empty).
    pub http: Option<HttpCall>,
}

/// What an "HTTP request" action calls: any URL the outbound rules of destinations allow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpCall {
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: String,
    /// A URL whose path and query may hold templates; the scheme and host may not.
    pub url: String,
    /// Request headers; values sealed like every stored secret.
    pub headers: Vec<(String, Sealed)>,
}

impl FlowAction {
    /// A Clockify operation (no HTTP call): what every action was before "HTTP request".
    pub fn clockify(
        name: String,
        operation_id: String,
        path_params: Vec<(String, Json)>,
        query: Vec<(String, Json)>,
        body: Option<Json>,
    ) -> FlowAction {
        FlowAction {
            name,
            operation_id,
            path_params,
            query,
            body,
            http: None,
        }
    }
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

/// `V1`: actions were Clockify operations only. `V2`: actions may be "HTTP request"s.
#[derive(Serialize, Deserialize)]
enum FlowRecord {
    V1(v1::Flow),
    V2(Flow),
}

pub(super) fn decode_flow(bytes: &[u8]) -> Result<Flow, StoreError> {
    match decode::<FlowRecord>(bytes)? {
        FlowRecord::V1(flow) => Ok(flow.into()),
        FlowRecord::V2(flow) => Ok(flow),
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

/// `V1` runs hold a `V1` flow; `V2` runs a flow whose actions may be "HTTP request"s.
#[derive(Serialize, Deserialize)]
enum RunRecord {
    V1(v1::Run),
    V2(Run),
}

pub(super) fn decode_run(bytes: &[u8]) -> Result<Run, StoreError> {
    match decode::<RunRecord>(bytes)? {
        RunRecord::V1(run) => Ok(run.into()),
        RunRecord::V2(run) => Ok(run),
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
    encode(&FlowRecordRef::V2(flow))
}

pub(super) fn encode_stats(stats: FlowStats) -> Vec<u8> {
    encode(&FlowStatsRecord::V1(stats))
}

pub(super) fn encode_run(run: &Run) -> Vec<u8> {
    encode(&RunRecordRef::V2(run))
}

/// The same encodings as the records, from borrows.
#[derive(Serialize)]
enum FlowRecordRef<'a> {
    #[allow(dead_code)]
    V1(&'a v1::Flow),
    V2(&'a Flow),
}

#[derive(Serialize)]
enum RunRecordRef<'a> {
    #[allow(dead_code)]
    V1(&'a v1::Run),
    V2(&'a Run),
}

/// The layouts of `V1` records (schemas up to 7), read into the current types.
mod v1 {
    use serde::{Deserialize, Serialize};

    use super::{ActionRun, Conditions, FlowRetry, Json, RunOrigin, RunStatus, Trigger};
    use crate::store::schema::{EventId, FlowId, RunId};

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct FlowAction {
        pub name: String,
        pub operation_id: String,
        pub path_params: Vec<(String, Json)>,
        pub query: Vec<(String, Json)>,
        pub body: Option<Json>,
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

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct Run {
        pub id: RunId,
        pub workspace_id: String,
        pub flow: Flow,
        pub event_id: Option<EventId>,
        pub event_type: String,
        pub inline_event: Option<Vec<u8>>,
        pub origin: RunOrigin,
        pub status: RunStatus,
        pub created_at: i64,
        pub started_at: Option<i64>,
        pub finished_at: Option<i64>,
        pub error: Option<String>,
        pub actions: Vec<ActionRun>,
    }

    impl From<Flow> for super::Flow {
        fn from(flow: Flow) -> Self {
            super::Flow {
                id: flow.id,
                workspace_id: flow.workspace_id,
                name: flow.name,
                enabled: flow.enabled,
                disabled_reason: flow.disabled_reason,
                trigger: flow.trigger,
                conditions: flow.conditions,
                actions: flow
                    .actions
                    .into_iter()
                    .map(|a| {
                        super::FlowAction::clockify(
                            a.name,
                            a.operation_id,
                            a.path_params,
                            a.query,
                            a.body,
                        )
                    })
                    .collect(),
                retry: flow.retry,
                created_at: flow.created_at,
                updated_at: flow.updated_at,
            }
        }
    }

    impl From<Run> for super::Run {
        fn from(run: Run) -> Self {
            super::Run {
                id: run.id,
                workspace_id: run.workspace_id,
                flow: run.flow.into(),
                event_id: run.event_id,
                event_type: run.event_type,
                inline_event: run.inline_event,
                origin: run.origin,
                status: run.status,
                created_at: run.created_at,
                started_at: run.started_at,
                finished_at: run.finished_at,
                error: run.error,
                actions: run.actions,
            }
        }
    }
}

impl Flow {
    /// An enabled flow of `workspace_id` on one Clockify event type, with no conditions and
    /// no actions (for unit tests elsewhere in the crate).
    #[cfg(test)]
    pub(crate) fn for_tests(workspace_id: &str, event_type: &str) -> Flow {
        Flow {
            id: [1; 16],
            workspace_id: workspace_id.to_string(),
            name: "f".into(),
            enabled: true,
            disabled_reason: None,
            trigger: Trigger {
                source: CLOCKIFY_SOURCE.into(),
                events: vec![event_type.into()],
            },
            conditions: Conditions {
                any: false,
                rules: vec![],
            },
            actions: vec![],
            retry: FlowRetry {
                max_attempts: 1,
                backoff_ms: 0,
            },
            created_at: 0,
            updated_at: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_flow() -> v1::Flow {
        v1::Flow {
            id: [4; 16],
            workspace_id: "ws".into(),
            name: "old".into(),
            enabled: true,
            disabled_reason: None,
            trigger: Trigger {
                source: CLOCKIFY_SOURCE.into(),
                events: vec!["NEW_TAG".into()],
            },
            conditions: Conditions {
                any: false,
                rules: vec![],
            },
            actions: vec![v1::FlowAction {
                name: "tag".into(),
                operation_id: "getTag".into(),
                path_params: vec![("id".into(), Json(serde_json::json!("{{ event.id }}")))],
                query: vec![],
                body: None,
            }],
            retry: FlowRetry {
                max_attempts: 3,
                backoff_ms: 500,
            },
            created_at: 1,
            updated_at: 2,
        }
    }

    /// Flows and runs written before "HTTP request" actions (`V1`, schemas up to 7) still
    /// read, as Clockify actions; what is written now reads back as written.
    #[test]
    fn v1_flow_and_run_records_still_read() {
        let old = v1_flow();
        let flow = decode_flow(&encode(&FlowRecordRef::V1(&old))).unwrap();
        assert_eq!(flow.name, "old");
        assert_eq!(flow.actions.len(), 1);
        assert_eq!(flow.actions[0].operation_id, "getTag");
        assert_eq!(flow.actions[0].path_params, old.actions[0].path_params);
        assert!(flow.actions[0].http.is_none());
        assert_eq!(decode_flow(&encode_flow(&flow)).unwrap(), flow);

        let run = v1::Run {
            id: [5; 16],
            workspace_id: "ws".into(),
            flow: old,
            event_id: Some([6; 16]),
            event_type: "NEW_TAG".into(),
            inline_event: None,
            origin: RunOrigin::Retry,
            status: RunStatus::Queued,
            created_at: 3,
            started_at: None,
            finished_at: None,
            error: None,
            actions: vec![],
        };
        let read = decode_run(&encode(&RunRecordRef::V1(&run))).unwrap();
        assert_eq!(read.flow, flow);
        assert_eq!(
            (read.id, read.origin, read.event_id),
            (run.id, run.origin, run.event_id)
        );
        assert_eq!(decode_run(&encode_run(&read)).unwrap(), read);

        let mut with_http = flow.clone();
        with_http.actions.push(FlowAction {
            name: "hook".into(),
            operation_id: String::new(),
            path_params: vec![],
            query: vec![],
            body: Some(Json(serde_json::json!({"id": "{{ event.id }}"}))),
            http: Some(HttpCall {
                method: "POST".into(),
                url: "https://example.com/hook".into(),
                headers: vec![("X-Key".into(), Sealed::from_bytes(vec![1, 2, 3]))],
            }),
        });
        assert_eq!(decode_flow(&encode_flow(&with_http)).unwrap(), with_http);
    }
}
