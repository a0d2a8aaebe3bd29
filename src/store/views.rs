//! Read-only views the sidebar UI needs across records: the event types a workspace has
//! stored, which flow runs an event started, and runs across all flows. Each is one read
//! transaction over existing tables and indexes (no new table).

use std::collections::HashMap;

use super::db::Store;
use super::error::StoreError;
use super::events::type_prefixes;
use super::flow_model::{Run, RunStatus, decode_run};
use super::schema::{
    EVENTS_BY_TYPE, EventId, FLOW_RUNS, FLOW_RUNS_BY_EVENT, FlowId, RunId, id_floor_for_millis,
    prefix_end, run_key, with_suffix, workspace_prefix,
};

fn bad_key() -> StoreError {
    StoreError::Decode("malformed index key".into())
}

/// Which runs to list across a workspace's flows (newest first).
#[derive(Clone, Debug, Default)]
pub struct RunQuery {
    /// Only runs strictly older than this one (the previous page's last id).
    pub before: Option<RunId>,
    pub flow: Option<FlowId>,
    /// Stored statuses to keep (`queued` also covers runs the engine is executing).
    pub statuses: Vec<RunStatus>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub limit: usize,
    /// Stop after examining this many runs and report a cursor to continue from.
    pub scan_limit: usize,
}

/// A page of runs with where the next one starts.
pub struct RunListPage {
    pub items: Vec<Run>,
    pub next_cursor: Option<RunId>,
}

impl Store {
    /// The distinct event types stored in `ws`, in key order. Skips from one type to the
    /// next in the by-type index instead of visiting every event.
    pub async fn stored_event_types(&self, ws: &str) -> Result<Vec<String>, StoreError> {
        let skip = workspace_prefix(ws).len() + 1;
        let ws = ws.to_string();
        self.read(move |rtx| {
            let prefixes = type_prefixes(&rtx.open_table(EVENTS_BY_TYPE)?, &ws)?;
            Ok(prefixes
                .iter()
                .map(|p| String::from_utf8_lossy(&p[skip..]).into_owned())
                .collect())
        })
        .await
    }

    /// For each event, the runs its arrival started (one per triggered flow), from the
    /// `[ws][event][flow] → run` index. Events that started none are left out.
    pub async fn runs_started_by_events(
        &self,
        ws: &str,
        events: Vec<EventId>,
    ) -> Result<HashMap<EventId, Vec<Run>>, StoreError> {
        let ws = ws.to_string();
        self.read(move |rtx| {
            let index = rtx.open_table(FLOW_RUNS_BY_EVENT)?;
            let runs = rtx.open_table(FLOW_RUNS)?;
            let mut out: HashMap<EventId, Vec<Run>> = HashMap::new();
            for event in events {
                let prefix = with_suffix(&workspace_prefix(&ws), &event);
                let end = prefix_end(&prefix);
                for entry in index.range::<&[u8]>(prefix.as_slice()..end.as_slice())? {
                    let (_, v) = entry?;
                    let run_id: RunId = v.value().try_into().map_err(|_| bad_key())?;
                    if let Some(record) = runs.get(run_key(&ws, &run_id).as_slice())? {
                        out.entry(event)
                            .or_default()
                            .push(decode_run(record.value())?);
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Runs of every flow in `ws`, newest first, filtered by flow, status and time. Run ids
    /// are UUIDv7, so the runs table is already in time order within a workspace.
    pub async fn workspace_runs(
        &self,
        ws: &str,
        query: RunQuery,
    ) -> Result<RunListPage, StoreError> {
        let ws = ws.to_string();
        self.read(move |rtx| {
            let runs = rtx.open_table(FLOW_RUNS)?;
            let prefix = workspace_prefix(&ws);
            let lower = id_floor_for_millis(query.from_ms.unwrap_or(0));
            let mut upper = query
                .to_ms
                .map(|to| id_floor_for_millis(to.saturating_add(1)))
                .unwrap_or([0xff; 16]);
            if let Some(before) = query.before {
                upper = upper.min(before);
            }
            let start = with_suffix(&prefix, &lower);
            let end = with_suffix(&prefix, &upper);
            let mut items = Vec::new();
            let mut last_seen: Option<RunId> = None;
            let mut stopped_early = false;
            let newest_first = runs.range::<&[u8]>(start.as_slice()..end.as_slice())?.rev();
            for (scanned, entry) in newest_first.enumerate() {
                if items.len() >= query.limit || scanned >= query.scan_limit {
                    stopped_early = true;
                    break;
                }
                let (k, v) = entry?;
                let id: RunId = k.value()[prefix.len()..]
                    .try_into()
                    .map_err(|_| bad_key())?;
                last_seen = Some(id);
                let run = decode_run(v.value())?;
                let keep = query.flow.is_none_or(|f| run.flow.id == f)
                    && (query.statuses.is_empty() || query.statuses.contains(&run.status));
                if keep {
                    items.push(run);
                }
            }
            let next_cursor = if !stopped_early {
                None
            } else if items.len() >= query.limit {
                items.last().map(|r| r.id)
            } else {
                last_seen
            };
            Ok(RunListPage { items, next_cursor })
        })
        .await
    }
}
