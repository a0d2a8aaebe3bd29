//! Flows and their runs through the store: definitions, per-flow counters, the run log and
//! the durable run queue. Runs for a committed event are enqueued inside the event's own
//! write transaction (see `events::insert_event` and `flow_index`), so a crash can never
//! lose one.

use std::collections::HashMap;
use std::sync::Arc;

use redb::{ReadableTable, WriteTransaction};

use super::db::Store;
use super::error::StoreError;
use super::flow_index::insert_run;
use super::flow_model::{
    Flow, FlowStats, QueuedRun, Run, RunOrigin, RunStatus, decode_flow, decode_run, decode_stats,
    encode_flow, encode_run, encode_stats,
};
use super::schema::{
    FLOW_RUN_QUEUE, FLOW_RUN_STARTS, FLOW_RUNS, FLOW_RUNS_BY_EVENT, FLOW_RUNS_BY_FLOW, FLOW_STATS,
    FLOWS, FlowId, RunId, by_event_key, by_flow_key, flow_key, id_floor_for_millis, ids_before,
    prefix_end, run_key, with_suffix, workspace_prefix, workspaces_of,
};

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
        .insert(key, encode_stats(stats).as_slice())?;
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
    // A retry takes over its event's entry (see `enqueue_retry`).
    let indexed = matches!(run.origin, RunOrigin::Event | RunOrigin::Retry);
    if let Some(event) = run.event_id.filter(|_| indexed) {
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
    wtx.open_table(FLOW_RUN_STARTS)?.remove(id.as_slice())?;
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

/// When a failing flow turns itself off: after `after` failed runs in a row (0 = never),
/// with `reason` as its `disabled_reason`.
pub struct AutoDisable {
    pub after: u32,
    pub reason: String,
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
                        table.insert(key.as_slice(), encode_flow(&flow).as_slice())?;
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

    /// Queues a retry of `failed` and, when the event's arrival started `failed`, points the
    /// event's entry for that flow at the retry, so the event shows its latest outcome.
    pub async fn enqueue_retry(&self, retry: Run, failed: RunId) -> Result<(), StoreError> {
        let dispatch = self.run_dispatch.clone();
        self.write_then(
            move |wtx| {
                insert_run(wtx, &retry)?;
                if let Some(event) = retry.event_id {
                    let key = by_event_key(&retry.workspace_id, &event, &retry.flow.id);
                    let mut by_event = wtx.open_table(FLOW_RUNS_BY_EVENT)?;
                    let points_at_failed = by_event
                        .get(key.as_slice())?
                        .is_some_and(|v| v.value() == failed);
                    if points_at_failed {
                        by_event.insert(key.as_slice(), retry.id.as_slice())?;
                    }
                }
                Ok(vec![QueuedRun {
                    run: retry,
                    event: None,
                    committed: None,
                }])
            },
            move |queued| dispatch.committed(queued, None),
        )
        .await
        .map(drop)
    }

    /// Records progress of an unfinished run.
    pub async fn save_run(&self, run: Run) -> Result<(), StoreError> {
        self.write(move |wtx| {
            let mut runs = wtx.open_table(FLOW_RUNS)?;
            let key = run_key(&run.workspace_id, &run.id);
            // A run erased while it ran (its workspace was purged) is not written back.
            if runs.get(key.as_slice())?.is_some() {
                runs.insert(key.as_slice(), encode_run(&run).as_slice())?;
            }
            Ok(())
        })
        .await
    }

    /// Records a finished run, takes it off the queue and updates its flow's counters; a
    /// streak of `auto_disable.after` failures (0 = never) disables the flow, in the same
    /// commit, with `auto_disable.reason`.
    pub async fn finish_run(
        &self,
        run: Run,
        auto_disable: AutoDisable,
    ) -> Result<Finished, StoreError> {
        debug_assert!(run.status.is_final());
        let index = self.flow_index.clone();
        let dispatch = self.run_dispatch.clone();
        let run_id = run.id;
        self.write_then(
            move |wtx| {
                let ws = run.workspace_id.clone();
                let dequeued = wtx
                    .open_table(FLOW_RUN_QUEUE)?
                    .remove(run.id.as_slice())?
                    .is_some();
                wtx.open_table(FLOW_RUN_STARTS)?.remove(run.id.as_slice())?;
                {
                    let mut runs = wtx.open_table(FLOW_RUNS)?;
                    let key = run_key(&ws, &run.id);
                    if runs.get(key.as_slice())?.is_none() {
                        // Erased while it ran (its workspace was purged): write nothing back.
                        return Ok((Finished { disabled: None }, dequeued));
                    }
                    runs.insert(key.as_slice(), encode_run(&run).as_slice())?;
                }
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
                let AutoDisable { after, reason } = auto_disable;
                if after > 0 && stats.consecutive_failures >= after && flow.enabled {
                    flow.enabled = false;
                    flow.disabled_reason = Some(reason);
                    flow.updated_at = jiff::Timestamp::now().as_millisecond();
                    wtx.open_table(FLOWS)?
                        .insert(fkey.as_slice(), encode_flow(&flow).as_slice())?;
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

    /// Counts one more start of a run, durably, before anything of it is evaluated; returns
    /// how many earlier starts did not end (the process died while the run was executing).
    /// A start ends with [`Store::finish_run`] or [`Store::forget_run_starts`].
    pub async fn note_run_start(&self, id: RunId) -> Result<u32, StoreError> {
        self.write(move |wtx| {
            let mut table = wtx.open_table(FLOW_RUN_STARTS)?;
            let earlier = table
                .get(id.as_slice())?
                .and_then(|v| <[u8; 4]>::try_from(v.value()).ok())
                .map_or(0, u32::from_le_bytes);
            table.insert(
                id.as_slice(),
                earlier.saturating_add(1).to_le_bytes().as_slice(),
            )?;
            Ok(earlier)
        })
        .await
    }

    /// Forgets the starts of runs that stopped without finishing but cleanly (a shutdown):
    /// only starts the process did not survive count against a run.
    pub async fn forget_run_starts(&self, ids: Vec<RunId>) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.write(move |wtx| {
            let mut table = wtx.open_table(FLOW_RUN_STARTS)?;
            for id in &ids {
                table.remove(id.as_slice())?;
            }
            Ok(())
        })
        .await
    }

    /// Announces the id of every run that finishes from now on.
    pub fn subscribe_finished_runs(&self) -> tokio::sync::broadcast::Receiver<RunId> {
        self.run_dispatch.finished.subscribe()
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
}

fn bad_key() -> StoreError {
    StoreError::Decode("malformed run key".into())
}
