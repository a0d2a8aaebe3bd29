//! `GET /api/overview`: the workspace at a glance for the UI's first page, gathered from
//! the store and from the subscription and bootstrap modules' own reports.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::auth::User;
use crate::error::ApiError;
use crate::ops::VERSION;
use crate::server::App;
use crate::store::{EventQuery, RunStatus};

const HOUR_MS: i64 = 60 * 60 * 1000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Rows examined per read transaction, so a busy workspace never holds one for long.
const PAGE_SCAN: usize = 10_000;
/// Rows examined at most for the counts; beyond this they are reported as lower bounds.
const MAX_SCAN: usize = 200_000;

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Per-hour counts over the last 7 × 24 hours, bucket 0 the oldest.
#[derive(Default)]
struct Buckets {
    hours: Vec<u64>,
    scanned: usize,
}

pub async fn get(State(app): State<App>, user: User) -> Result<Json<Value>, ApiError> {
    // Buckets end with the current hour, so "hourly" lines up with clock hours in every
    // whole-hour time zone and "daily" is seven rolling 24-hour windows.
    let now = jiff::Timestamp::now().as_millisecond();
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
            },
            |_| true,
        )
        .await?;
    let hours = std::mem::take(&mut buckets.lock().expect("overview buckets lock").hours);
    let last24: &[u64] = &hours[hours.len() - 24..];
    let hourly: Vec<Value> = last24
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"hour": rfc3339(end - (24 - i as i64) * HOUR_MS), "count": n}))
        .collect();
    let daily: Vec<Value> = hours
        .chunks(24)
        .enumerate()
        .map(|(i, day)| {
            json!({"day": rfc3339(start + i as i64 * DAY_MS), "count": day.iter().sum::<u64>()})
        })
        .collect();
    let subscriptions = subscription_summary(&app, &user).await?;
    let bootstrap = bootstrap_summary(&app, &user).await?;
    let runs = app
        .store
        .run_counts_since(&user.workspace_id, now - DAY_MS)
        .await?;
    let run_count = |status| runs.get(&status).copied().unwrap_or(0);
    let installation = &user.installation;
    let claims = &user.claims;
    Ok(Json(json!({
        "workspaceId": user.workspace_id,
        "installation": {
            "status": installation.status.as_str(),
            "installedAt": rfc3339(installation.installed_at),
            "generation": installation.generation,
        },
        "events": {
            "last24h": last24.iter().sum::<u64>(),
            "last7d": hours.iter().sum::<u64>(),
            "lastEventAt": newest.items.first().map(|e| rfc3339(e.received_at)),
            "hourly": hourly,
            "daily": daily,
            // The counts stop at MAX_SCAN rows; then they are lower bounds.
            "truncated": truncated,
        },
        "subscriptions": subscriptions,
        "flowRuns": {
            "succeeded24h": run_count(RunStatus::Succeeded),
            "failed24h": run_count(RunStatus::Failed),
            "skipped24h": run_count(RunStatus::Skipped),
            "pending": run_count(RunStatus::Queued) + run_count(RunStatus::Running),
        },
        "bootstrap": bootstrap,
        "dataFileBytes": app.store.file_size(),
        "version": VERSION,
        "user": {
            "role": claims.workspace_role,
            "isAdmin": user.is_admin(),
            "language": claims.language,
            "theme": claims.theme,
        },
    })))
}

/// The same user again, for asking another module's handler (they take it by value).
fn same_user(user: &User) -> User {
    User {
        claims: user.claims.clone(),
        workspace_id: user.workspace_id.clone(),
        installation: user.installation.clone(),
    }
}

/// Counts per subscription state, as `GET /api/subscriptions` reports them.
async fn subscription_summary(app: &App, user: &User) -> Result<Value, ApiError> {
    let Json(report) = crate::subscriptions::get(State(app.clone()), same_user(user)).await?;
    Ok(report.get("summary").cloned().unwrap_or(Value::Null))
}

/// Status and progress of the entity bootstrap, as `GET /api/bootstrap` reports them.
async fn bootstrap_summary(app: &App, user: &User) -> Result<Value, ApiError> {
    let Json(status) = crate::bootstrap::get(State(app.clone()), same_user(user)).await?;
    Ok(json!({
        "status": status["status"],
        "done": status["done"],
        "total": status["total"],
        "items": status["items"],
    }))
}
