//! Background retention: deletes events, flow runs, explorer executions and audit entries older than each workspace's retention
//! settings in small batches (each its own short write, so ingestion is never stalled), and
//! purges the data of installations DELETED for longer than the retention period.

use std::time::{Duration, Instant};

use crate::app::App;
use crate::store::{Installation, InstallationStatus, StoreError};

/// Rows deleted per write transaction: small, so that a batch adds little to the commit that
/// ingestion waits for.
const BATCH: usize = 128;
/// Pause after each batch, relative to the time it took (see [`pause_after`]).
const PAUSE_FACTOR: f64 = 4.0;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Runs [`run_once`] every `config.retention_interval` until shutdown.
pub async fn run(app: App) {
    let mut shutdown = app.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(app.config.retention_interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if let Err(err) = run_once(&app).await {
            tracing::warn!(error = %err, "retention pass failed");
        }
    }
}

fn retention_days(app: &App, installation: Option<&Installation>) -> u32 {
    installation
        .and_then(|i| i.settings.whole_number("webhook_retention_days"))
        .unwrap_or(app.config.webhook_retention_days)
}

fn run_retention_days(app: &App, installation: Option<&Installation>) -> u32 {
    installation
        .and_then(|i| i.settings.whole_number("flow_run_retention_days"))
        .unwrap_or(app.config.flow_run_retention_days)
}

/// What a retention sweep deletes; events follow the webhook retention, the rest the run
/// retention.
#[derive(Clone, Copy)]
enum Kind {
    Event,
    FlowRun,
    /// Finished destination deliveries (pending ones stay until they finish).
    Delivery,
    /// Explorer executions.
    Execution,
    /// Audit-log entries: a record of changes, kept like runs.
    Audit,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Event => "event",
            Kind::FlowRun => "flow_run",
            Kind::Delivery => "delivery",
            Kind::Execution => "execution",
            Kind::Audit => "audit",
        }
    }

    fn days(self, app: &App, installation: Option<&Installation>) -> u32 {
        match self {
            Kind::Event => retention_days(app, installation),
            _ => run_retention_days(app, installation),
        }
    }

    /// The workspaces with rows of this kind.
    async fn workspaces(self, app: &App) -> Result<Vec<String>, StoreError> {
        match self {
            Kind::Event => app.store.event_workspaces().await,
            Kind::FlowRun => app.store.run_workspaces().await,
            Kind::Delivery => app.store.delivery_workspaces().await,
            Kind::Execution => app.store.execution_workspaces().await,
            Kind::Audit => app.store.audit_workspaces().await,
        }
    }

    async fn delete_before(
        self,
        app: &App,
        ws: &str,
        cutoff: i64,
        now: i64,
    ) -> Result<usize, StoreError> {
        match self {
            Kind::Event => app.store.delete_events_before(ws, cutoff, now, BATCH).await,
            Kind::FlowRun => app.store.delete_runs_before(ws, cutoff, BATCH).await,
            Kind::Delivery => app.store.delete_deliveries_before(ws, cutoff, BATCH).await,
            Kind::Execution => app.store.delete_executions_before(ws, cutoff, BATCH).await,
            Kind::Audit => app.store.delete_audit_before(ws, cutoff, BATCH).await,
        }
    }
}

/// Deletes the rows of `kind` older than each workspace's retention, a batch per write;
/// returns how many.
async fn sweep(app: &App, now: i64, kind: Kind) -> Result<usize, StoreError> {
    let mut deleted = 0;
    for ws in kind.workspaces(app).await? {
        let installation = app.store.installation(&ws).await?;
        let days = kind.days(app, installation.as_deref());
        if days == 0 {
            continue;
        }
        let cutoff = now - days as i64 * DAY_MS;
        deleted += drain(Some(kind.label()), BATCH, || {
            kind.delete_before(app, &ws, cutoff, now)
        })
        .await?;
        if let Kind::Event = kind {
            // What indexes the events that went (not the other kinds: flow runs are kept a
            // shorter time than the events they came from). The last batch by type drops
            // the table the events left empty.
            drain(None, TYPE_ROWS_BATCH, || {
                app.store
                    .delete_type_rows_before(&ws, cutoff, TYPE_ROWS_BATCH)
            })
            .await?;
            // The entity index drops its rows a bucket at a time, once the whole bucket expired.
            drain(None, BATCH, || {
                app.store.delete_entity_rows_before(&ws, cutoff, BATCH)
            })
            .await?;
        }
    }
    Ok(deleted)
}

/// Rows of the index by type deleted per write: a type's old rows are side by side, so a
/// batch changes a few leaves.
const TYPE_ROWS_BATCH: usize = 512;

/// Runs `step` (which deletes up to `max` rows) until it deletes fewer, pausing after each
/// batch; counts the rows under `counted` in `retention_deleted_total`; returns how many.
async fn drain<F, Step>(
    counted: Option<&'static str>,
    max: usize,
    mut step: F,
) -> Result<usize, StoreError>
where
    F: FnMut() -> Step,
    Step: std::future::Future<Output = Result<usize, StoreError>>,
{
    let mut deleted = 0;
    loop {
        let started = Instant::now();
        let n = step().await?;
        deleted += n;
        if let Some(kind) = counted {
            metrics::counter!("retention_deleted_total", "kind" => kind).increment(n as u64);
        }
        if n < max {
            return Ok(deleted);
        }
        pause_after(started).await;
    }
}

/// Rows of the dedupe table examined per step, and steps per pass: a pass goes through at
/// most this many rows, from where the previous one stopped, so one pass stays short and the
/// whole table is still gone through every few passes.
const DEDUPE_STEP: usize = 2048;
const DEDUPE_STEPS_PER_PASS: usize = 128;

/// Deletes dedupe rows past the dedupe window. An event deleted more than two windows after
/// it arrived leaves its row (looking it up would cost a random read per event), so without
/// this the table would keep a row for every event ever received.
async fn sweep_dedupe(app: &App, now: i64) -> Result<(), StoreError> {
    for _ in 0..DEDUPE_STEPS_PER_PASS {
        let started = Instant::now();
        let (deleted, wrapped) = app.store.sweep_expired_dedupe(now, DEDUPE_STEP).await?;
        metrics::counter!("retention_deleted_total", "kind" => "dedupe_row")
            .increment(deleted as u64);
        if wrapped {
            break;
        }
        pause_after(started).await;
    }
    Ok(())
}

/// Waits [`PAUSE_FACTOR`] times as long as the batch begun at `started` took, so that
/// deleting a backlog (a million expired events after a retention change) takes at most a
/// fifth of the writer's time and ingestion keeps its latency; when the machine is idle the
/// batches are quick and so are the pauses.
async fn pause_after(started: Instant) {
    let pause = started.elapsed().mul_f64(PAUSE_FACTOR);
    tokio::time::sleep(pause.max(Duration::from_millis(1))).await;
}

/// One pass over every workspace; returns how many events were deleted.
pub async fn run_once(app: &App) -> Result<usize, StoreError> {
    let now = jiff::Timestamp::now().as_millisecond()
        + app.config.retention_clock_skew.as_millis() as i64;
    let mut deleted = sweep(app, now, Kind::Event).await?;
    for kind in [Kind::FlowRun, Kind::Delivery, Kind::Execution, Kind::Audit] {
        sweep(app, now, kind).await?;
    }
    sweep_dedupe(app, now).await?;
    for installation in app.store.installations().await? {
        let days = retention_days(app, Some(&installation));
        let expired = installation.status == InstallationStatus::Deleted
            && days > 0
            && installation
                .deleted_at
                .is_some_and(|at| at + days as i64 * DAY_MS < now);
        if expired {
            deleted += purge_workspace(app, &installation.workspace_id).await?;
        }
    }
    Ok(deleted)
}

/// Deletes everything kept for a workspace (every table, the installation last) in batches
/// of [`BATCH`] rows; returns how many events went.
async fn purge_workspace(app: &App, ws: &str) -> Result<usize, StoreError> {
    let removed = app.store.erase_workspace(ws, BATCH).await?;
    let rows = |table: &str| {
        removed
            .iter()
            .find(|(name, _)| name == table)
            .map_or(0, |(_, n)| *n)
    };
    let events = rows("events");
    metrics::counter!("retention_deleted_total", "kind" => "event").increment(events);
    metrics::counter!("retention_deleted_total", "kind" => "flow_run").increment(rows("flow_runs"));
    metrics::counter!("retention_deleted_total", "kind" => "execution")
        .increment(rows("executions"));
    metrics::counter!("retention_deleted_total", "kind" => "installation")
        .increment(rows("installations"));
    tracing::info!(
        workspace_id = ws,
        events,
        rows = removed.iter().map(|(_, n)| n).sum::<u64>(),
        "purged a deleted installation"
    );
    Ok(events as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::{Dedupe, Flow, Ingested, NewEvent, Run, RunOrigin};

    /// Flow runs are kept 30 days and events 90 (the defaults): the sweep of month-old runs
    /// leaves the entity index of month-old events alone (it used to drop every bucket older
    /// than the runs' cutoff in each workspace with runs); the sweep of the events takes
    /// their index rows, by type and by entity, and then their table.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sweep_of_flow_runs_leaves_the_events_index_alone() {
        let dir = tempfile::tempdir().unwrap();
        let app = App::open(Config::for_data_dir(dir.path())).unwrap();
        // Enough entity index rows to fill buckets (they are small in unit tests).
        for n in 0..200 {
            let ingested = app
                .store
                .ingest(NewEvent {
                    workspace_id: "ws".into(),
                    event_type: if n % 2 == 0 { "NEW_TAG" } else { "NEW_CLIENT" }.into(),
                    source: "clockify".into(),
                    source_id: None,
                    headers: vec![],
                    body: format!("{{\"n\":{n}}}").into_bytes(),
                    dedupe: Dedupe::Body,
                    entities: vec![format!("e{n}"), "user".into()],
                })
                .await
                .unwrap();
            assert!(matches!(ingested, Ingested::Stored(_)), "{ingested:?}");
        }
        let flow = Flow::for_tests("ws", "NEW_TAG");
        let now = jiff::Timestamp::now().as_millisecond();
        let run = Run::new(&flow, None, "NEW_TAG", RunOrigin::Event, now);
        app.store.enqueue_runs(vec![run]).await.unwrap();
        let history = || async {
            let page = app.store.entity_events("ws", "user", None, 500).await;
            page.unwrap().items.len()
        };
        assert_eq!(history().await, 200);

        assert_eq!(
            sweep(&app, now + 31 * DAY_MS, Kind::FlowRun).await.unwrap(),
            1
        );
        assert_eq!(
            history().await,
            200,
            "the events' history outlives the runs"
        );
        assert_eq!(app.store.stored_event_types("ws").await.unwrap().len(), 2);

        assert_eq!(
            sweep(&app, now + 91 * DAY_MS, Kind::Event).await.unwrap(),
            200
        );
        assert_eq!(history().await, 0);
        assert!(app.store.stored_event_types("ws").await.unwrap().is_empty());
        assert!(app.store.event_workspaces().await.unwrap().is_empty());
    }
}
