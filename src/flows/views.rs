//! What the sidebar's flow editor and runs view ask beyond definitions: an unsaved
//! definition checked like a save (for dry runs, never stored), which stored events it
//! matches, runs across every flow of a workspace, and retrying a failed run.

use serde_json::Value;

use super::conditions;
use super::service::{FlowError, Masks, spec};
use crate::app::App;
use crate::store::{
    EventId, Flow, Run, RunListPage, RunOrigin, RunQuery, RunStatus, parse_event_id, parse_id,
};
use crate::time::now_ms;

/// Stored events one matching request may check.
pub const MAX_CANDIDATES: usize = 50;

/// A flow built from an editor's definition, checked exactly as a save checks it but never
/// stored. It takes the id, state and times (and masked header values) of `stored` when it
/// stands in for one. With `Masks::Placeholder` a masked header value with nothing to keep
/// stays the mask (fine for what is only tried, never sent).
pub async fn unsaved(
    app: &App,
    ws: &str,
    definition: &Value,
    stored: Option<&Flow>,
    masks: Masks,
) -> Result<Flow, FlowError> {
    if !definition.is_object() {
        return Err(FlowError::BadRequest(
            "flow must be a flow definition (an object)".into(),
        ));
    }
    let spec = spec(app, ws, definition, stored, masks).await?;
    let now = now_ms();
    Ok(Flow {
        id: stored.map_or([0; 16], |f| f.id),
        workspace_id: ws.to_string(),
        name: spec.name,
        enabled: stored.is_some_and(|f| f.enabled),
        disabled_reason: None,
        trigger: spec.trigger,
        conditions: spec.conditions,
        actions: spec.actions,
        retry: spec.retry,
        created_at: stored.map_or(now, |f| f.created_at),
        updated_at: now,
    })
}

/// Whether `flow` would run for one stored event.
pub enum Candidate {
    Missing {
        id: String,
    },
    Checked {
        id: String,
        event_type: String,
        trigger_matched: bool,
        conditions_passed: bool,
    },
}

/// For each of these stored events (at most [`MAX_CANDIDATES`]), whether `flow` would run.
pub async fn candidates(
    app: &App,
    ws: &str,
    flow: &Flow,
    ids: &[String],
) -> Result<Vec<Candidate>, FlowError> {
    if ids.len() > MAX_CANDIDATES {
        return Err(FlowError::BadRequest(format!(
            "webhookIds: at most {MAX_CANDIDATES} events at a time"
        )));
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let stored = match parse_event_id(id) {
            Some(event_id) => app.store.event(ws, event_id).await?,
            None => None,
        };
        let Some(stored) = stored else {
            out.push(Candidate::Missing { id: id.clone() });
            continue;
        };
        let body = serde_json::from_slice(&stored.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&stored.body).into_owned()));
        // Past a bound the run would fail without acting: not a candidate.
        let conditions_passed =
            conditions::evaluate(&flow.conditions, &body).is_ok_and(|(passed, _)| passed);
        out.push(Candidate::Checked {
            id: id.clone(),
            trigger_matched: flow.trigger.events.contains(&stored.event_type),
            event_type: stored.event_type,
            conditions_passed,
        });
    }
    Ok(out)
}

/// Runs of every flow in `ws`, newest first, as `query` filters them.
pub async fn workspace_runs(
    app: &App,
    ws: &str,
    query: RunQuery,
) -> Result<RunListPage, FlowError> {
    Ok(app.store.workspace_runs(ws, query).await?)
}

/// A new run of a failed run's flow (as it is now) on the same event, recorded as a retry.
pub async fn retry(app: &App, ws: &str, id: &str) -> Result<Run, FlowError> {
    let run_id = parse_id(id).ok_or_else(|| FlowError::RunNotFound(id.to_string()))?;
    let failed = app
        .store
        .run(ws, run_id)
        .await?
        .ok_or_else(|| FlowError::RunNotFound(id.to_string()))?;
    if failed.status != RunStatus::Failed {
        return Err(FlowError::BadRequest(format!(
            "only a failed run can be retried; this one {}",
            failed.status.as_str()
        )));
    }
    if failed.origin == RunOrigin::Test {
        return Err(FlowError::BadRequest(
            "a test run is not retried: run the test again from the flow editor".into(),
        ));
    }
    let flow = app
        .store
        .flow(ws, failed.flow.id)
        .await?
        .ok_or_else(|| FlowError::NotFound(crate::store::format_id(&failed.flow.id)))?;
    if !flow.enabled {
        return Err(FlowError::BadRequest(
            "the flow is disabled: enable it, then retry".into(),
        ));
    }
    if let Some(event) = failed.event_id
        && app.store.event(ws, event).await?.is_none()
    {
        return Err(FlowError::EventNotFound(format!(
            "{} (erased or past retention)",
            crate::store::format_event_id(&event)
        )));
    }
    let mut run = Run::new(
        &flow,
        failed.event_id,
        &failed.event_type,
        RunOrigin::Retry,
        now_ms(),
    );
    run.inline_event = failed.inline_event.clone();
    app.store.enqueue_retry(run.clone(), failed.id).await?;
    metrics::counter!("flow_retries_total").increment(1);
    Ok(run)
}

/// The runs each event's arrival started (the latest retry of each), by event.
pub async fn started_by_events(
    app: &App,
    ws: &str,
    events: Vec<EventId>,
) -> Result<std::collections::HashMap<EventId, Vec<Run>>, FlowError> {
    Ok(app.store.runs_started_by_events(ws, events).await?)
}
