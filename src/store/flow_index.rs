//! Enabled flows in memory, by (workspace, source, event type), so ingestion queues runs
//! inside the event's own transaction without a read; and the queueing itself.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use super::error::StoreError;
use super::event_record::StoredEvent;
use super::flow_model::{
    CLOCKIFY_SOURCE, Flow, QueuedRun, Run, RunOrigin, STUDIO_SOURCE, decode_flow, encode_run,
};
use super::schema::{
    FLOW_RUN_QUEUE, FLOW_RUNS, FLOW_RUNS_BY_EVENT, FLOW_RUNS_BY_FLOW, FLOWS, FlowId, by_event_key,
    by_flow_key, run_key,
};

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
        let index = FlowIndex::default();
        let rtx = db.begin_read()?;
        let table = rtx.open_table(FLOWS)?;
        for entry in table.iter()? {
            let (_, v) = entry?;
            index.put(decode_flow(v.value())?);
        }
        Ok(index)
    }

    /// Takes over the contents of `fresh` (after the file was reopened).
    pub(crate) fn replace_with(&self, fresh: FlowIndex) {
        *self.inner.write().expect("flow index lock") =
            fresh.inner.into_inner().expect("flow index lock");
    }

    pub(super) fn put(&self, flow: Flow) {
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

    pub(super) fn remove(&self, id: &FlowId) {
        let mut inner = self.inner.write().expect("flow index lock");
        inner.unlink(id);
        inner.flows.remove(id);
    }

    pub(super) fn remove_workspace(&self, ws: &str) {
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

    /// Enabled flows whose trigger matches, oldest flow first. None for the studio source:
    /// no flow can name it, and even one that did must not run on a notification about a
    /// failing flow (runs and replays both come here).
    pub(crate) fn matching(&self, ws: &str, source: &str, event_type: &str) -> Vec<Arc<Flow>> {
        let inner = self.inner.read().expect("flow index lock");
        if inner.triggers.is_empty() || source == STUDIO_SOURCE {
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

pub(super) fn insert_run(wtx: &WriteTransaction, run: &Run) -> Result<(), StoreError> {
    let ws = &run.workspace_id;
    wtx.open_table(FLOW_RUNS)?
        .insert(run_key(ws, &run.id).as_slice(), encode_run(run).as_slice())?;
    wtx.open_table(FLOW_RUNS_BY_FLOW)?.insert(
        by_flow_key(ws, &run.flow.id, &run.id).as_slice(),
        [].as_slice(),
    )?;
    wtx.open_table(FLOW_RUN_QUEUE)?
        .insert(run.id.as_slice(), ws.as_bytes())?;
    Ok(())
}
