//! The workspace at a glance (`GET /api/overview`): events per hour over the last week, the
//! newest event, flow runs of the last day, and the subscription and bootstrap summaries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::app::App;
use crate::auth::User;
use crate::store::{EventQuery, RunStatus, StoreError};
use crate::time::now_ms;
use crate::{bootstrap, subscriptions};

pub const HOUR_MS: i64 = 60 * 60 * 1000;
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// Rows examined per read transaction, so a busy workspace never holds one for long.
const PAGE_SCAN: usize = 10_000;
/// Rows examined at most for the counts; beyond this they are reported as lower bounds.
const MAX_SCAN: usize = 200_000;

/// Per-hour counts over the last 7 × 24 hours, bucket 0 the oldest.
#[derive(Default)]
struct Buckets {
    hours: Vec<u64>,
    scanned: usize,
}

pub struct Overview {
    /// The end of the newest hour bucket (the next whole hour, Unix ms).
    pub end_ms: i64,
    /// Events per hour, the oldest of 7 × 24 first.
    pub hours: Vec<u64>,
    /// The counts stop after a bounded scan; then they are lower bounds.
    pub truncated: bool,
    pub last_event_at: Option<i64>,
    pub runs_last_day: HashMap<RunStatus, u64>,
    pub subscriptions: subscriptions::Summary,
    pub bootstrap: bootstrap::Status,
    pub data_file_bytes: u64,
    /// The newest scheduled snapshot (`None`: snapshots off, or none taken yet).
    pub last_snapshot: Option<crate::snapshots::Snapshot>,
}

pub async fn gather(app: &App, user: &User) -> Result<Overview, StoreError> {
    // Buckets end with the current hour, so "hourly" lines up with clock hours in every
    // whole-hour time zone and "daily" is seven rolling 24-hour windows.
    let now = now_ms();
    let end = (now.div_euclid(HOUR_MS) + 1) * HOUR_MS;
    let start = end - 7 * DAY_MS;
    let buckets = Arc::new(Mutex::new(Buckets {
        hours: vec![0; 7 * 24],
        scanned: 0,
    }));
    let mut before = None;
    let mut truncated = false;
    loop {
        let counter = buckets.clone();
        let page = app
            .store
            .list_events(
                &user.workspace_id,
                EventQuery {
                    before,
                    from_ms: Some(start),
                    to_ms: None,
                    event_types: Vec::new(),
                    limit: usize::MAX,
                    scan_limit: PAGE_SCAN,
                    deadline: None,
                },
                // Counts without collecting: every row is rejected after it is tallied.
                move |event| {
                    let mut b = counter.lock().expect("overview buckets lock");
                    let index = (event.received_at - start).div_euclid(HOUR_MS);
                    if let Some(slot) = usize::try_from(index).ok().and_then(|i| b.hours.get_mut(i))
                    {
                        *slot += 1;
                    }
                    b.scanned += 1;
                    false
                },
            )
            .await?;
        match page.next_cursor {
            None => break,
            Some(cursor) => {
                if buckets.lock().expect("overview buckets lock").scanned >= MAX_SCAN {
                    truncated = true;
                    break;
                }
                before = Some(cursor);
            }
        }
    }
    let newest = app
        .store
        .list_events(
            &user.workspace_id,
            EventQuery {
                before: None,
                from_ms: None,
                to_ms: None,
                event_types: Vec::new(),
                limit: 1,
                scan_limit: 1,
                deadline: None,
            },
            |_| true,
        )
        .await?;
    let hours = std::mem::take(&mut buckets.lock().expect("overview buckets lock").hours);
    let report = subscriptions::report(app, &user.installation).await?;
    let progress = app.store.bootstrap_progress(&user.workspace_id).await?;
    Ok(Overview {
        end_ms: end,
        hours,
        truncated,
        last_event_at: newest.items.first().map(|e| e.received_at),
        runs_last_day: app
            .store
            .run_counts_since(&user.workspace_id, now - DAY_MS)
            .await?,
        subscriptions: subscriptions::summary(&report),
        bootstrap: bootstrap::status(progress.as_ref()),
        data_file_bytes: app.store.file_size(),
        last_snapshot: crate::snapshots::latest(app),
    })
}

/// One installation as the operator's `workspaces` command lists it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSummary {
    pub workspace_id: String,
    /// `ACTIVE`, `INACTIVE` or `DELETED`.
    pub status: String,
    pub events: u64,
    /// RFC 3339.
    pub last_event_at: Option<String>,
    pub flows: u64,
    /// Bytes of its rows, and that as a share of all workspaces' rows (0 to 1).
    pub data_bytes: u64,
    pub data_share: f64,
}

/// Every installation, with what it stores (reads every row: an operator command).
pub async fn workspaces(app: &App) -> Result<Vec<WorkspaceSummary>, StoreError> {
    let mut out = Vec::new();
    for installation in app.store.installations().await? {
        let usage = app
            .store
            .workspace_usage(&installation.workspace_id)
            .await?;
        out.push(WorkspaceSummary {
            workspace_id: installation.workspace_id.clone(),
            status: installation.status.as_str().to_string(),
            events: usage.events,
            last_event_at: usage.last_event_at.map(crate::time::rfc3339),
            flows: usage.flows,
            data_bytes: usage.bytes,
            data_share: 0.0,
        });
    }
    let total: u64 = out.iter().map(|w| w.data_bytes).sum();
    for summary in &mut out {
        if total > 0 {
            summary.data_share = summary.data_bytes as f64 / total as f64;
        }
    }
    out.sort_by(|a, b| a.workspace_id.cmp(&b.workspace_id));
    Ok(out)
}

/// Gauges computed when Prometheus scrapes, for the shipped alert rules
/// (`prometheus/alerts.yml`): installations by status, readiness (the same probe as
/// `/readyz`), the data disk's free and total bytes, and the snapshot interval.
pub async fn record_scrape_gauges(app: &App) {
    use crate::store::InstallationStatus;
    if let Ok(installations) = app.store.installations().await {
        for status in [
            InstallationStatus::Active,
            InstallationStatus::Inactive,
            InstallationStatus::Deleted,
        ] {
            let n = installations.iter().filter(|i| i.status == status).count();
            metrics::gauge!("installations", "status" => status.as_str()).set(n as f64);
        }
    }
    let ready = app.store.probe().await.is_ok();
    metrics::gauge!("ready").set(if ready { 1.0 } else { 0.0 });
    if let Ok(stat) = rustix::fs::statvfs(&app.config.data_dir) {
        let block = stat.f_frsize as f64;
        metrics::gauge!("data_disk_free_bytes").set(stat.f_bavail as f64 * block);
        metrics::gauge!("data_disk_size_bytes").set(stat.f_blocks as f64 * block);
    }
    if app.config.snapshot_dir.is_some() {
        metrics::gauge!("snapshot_interval_seconds").set(app.config.snapshot_every.as_secs_f64());
    }
}
