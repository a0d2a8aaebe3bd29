//! Keeping the entity cache current. Webhook events about cached kinds of entity (projects,
//! clients, tags, tasks, users, groups, expenses, invoices) are applied to it after their
//! commit by a task that follows the live event channel, batched, so ingestion never waits for
//! it. And every `entity_refresh_hours` each workspace's cache is fetched again (a bootstrap),
//! which drops the entities the refresh did not see.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::app::App;
use crate::store::{Entity, EntityChange, InstallationStatus, StoreError, StoredEvent};

/// Changes waiting to be written; more are dropped (and counted): the next refresh repairs.
const QUEUE: usize = 10_000;
/// Changes written per transaction at most.
const BATCH: usize = 512;
/// The longest the refresh check sleeps.
const MAX_TICK: Duration = Duration::from_secs(600);

/// What an event does to the cache: the entity type (as the bootstrap names it) and whether
/// the entity is gone. Time entries are not cached by default and are left out.
pub fn effect(event_type: &str) -> Option<(&'static str, bool)> {
    let effect = match event_type {
        "NEW_PROJECT" | "PROJECT_UPDATED" => ("projects", false),
        "PROJECT_DELETED" => ("projects", true),
        "NEW_CLIENT" | "CLIENT_UPDATED" => ("clients", false),
        "CLIENT_DELETED" => ("clients", true),
        "NEW_TAG" | "TAG_UPDATED" => ("tags", false),
        "TAG_DELETED" => ("tags", true),
        "NEW_TASK" | "TASK_UPDATED" => ("projects/tasks", false),
        "TASK_DELETED" => ("projects/tasks", true),
        "USER_JOINED_WORKSPACE"
        | "USER_UPDATED"
        | "USER_EMAIL_CHANGED"
        | "USER_ACTIVATED_ON_WORKSPACE"
        | "USER_DEACTIVATED_ON_WORKSPACE" => ("users", false),
        "USER_DELETED_FROM_WORKSPACE" => ("users", true),
        "USER_GROUP_CREATED" | "USER_GROUP_UPDATED" => ("user-groups", false),
        "USER_GROUP_DELETED" => ("user-groups", true),
        "EXPENSE_CREATED" | "EXPENSE_UPDATED" | "EXPENSE_RESTORED" => ("expenses", false),
        "EXPENSE_DELETED" => ("expenses", true),
        "NEW_INVOICE" | "INVOICE_UPDATED" => ("invoices", false),
        _ => return None,
    };
    Some(effect)
}

/// The cache change a stored Clockify event makes, if any (the entity is the event's body).
pub fn change_for(event: &StoredEvent) -> Option<EntityChange> {
    if event.source_id.is_some() {
        return None;
    }
    let (entity_type, deleted) = effect(&event.event_type)?;
    let body: Value = serde_json::from_slice(&event.body).ok()?;
    let id = body.get("id")?.as_str()?.to_string();
    if deleted {
        return Some(EntityChange::Delete {
            entity_type: entity_type.to_string(),
            id,
        });
    }
    Some(EntityChange::Upsert(crate::bootstrap::to_entity(
        entity_type,
        &body,
        id,
        event.received_at,
    )))
}

/// An update over a cached entity: its fields replace the cached ones, the rest stay (some
/// events carry only a few fields, e.g. USER_EMAIL_CHANGED).
pub fn merge(cached: &Entity, update: Entity) -> Entity {
    let data = match (
        serde_json::from_str::<Value>(&cached.data),
        serde_json::from_str::<Value>(&update.data),
    ) {
        (Ok(Value::Object(mut old)), Ok(Value::Object(new))) => {
            old.extend(new);
            Value::Object(old).to_string()
        }
        _ => update.data,
    };
    let entity = Entity { data, ..update };
    Entity {
        name: entity.name.or_else(|| cached.name.clone()),
        ..entity
    }
}

/// Follows committed events and applies those that change the cache. Runs until shutdown.
pub async fn run_applier(app: App) {
    let (queue, pending) = mpsc::channel::<(String, EntityChange)>(QUEUE);
    let writer = tokio::spawn(write_changes(app.clone(), pending));
    let mut events = app.store.subscribe();
    let mut shutdown = app.shutdown.subscribe();
    let mut last_warned: Option<Instant> = None;
    loop {
        let received = tokio::select! {
            received = events.recv() => received,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        match received {
            Ok(event) => {
                let Some(change) = change_for(&event) else {
                    continue;
                };
                if queue
                    .try_send((event.workspace_id.clone(), change))
                    .is_err()
                {
                    metrics::counter!("entity_cache_events_missed_total").increment(1);
                }
            }
            Err(RecvError::Lagged(missed)) => {
                // Ingestion outran this task; the periodic refresh repairs what was missed.
                metrics::counter!("entity_cache_events_missed_total").increment(missed);
                if last_warned.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(missed, "entity cache fell behind the event log");
                    last_warned = Some(Instant::now());
                }
            }
            Err(RecvError::Closed) => break,
        }
    }
    drop(queue);
    let _ = writer.await;
}

/// Writes queued changes, a batch per workspace per transaction.
async fn write_changes(app: App, mut pending: mpsc::Receiver<(String, EntityChange)>) {
    let mut batch = Vec::with_capacity(BATCH);
    while pending.recv_many(&mut batch, BATCH).await > 0 {
        let mut by_workspace: HashMap<String, Vec<EntityChange>> = HashMap::new();
        for (ws, change) in batch.drain(..) {
            by_workspace.entry(ws).or_default().push(change);
        }
        for (ws, changes) in by_workspace {
            match app.store.apply_entity_changes(&ws, changes, merge).await {
                Ok(n) => metrics::counter!("entity_cache_event_changes_total").increment(n as u64),
                Err(err) => {
                    tracing::warn!(workspace_id = %ws, error = %err, "could not apply events to the entity cache")
                }
            }
        }
    }
}

/// How old a workspace's cache may get: its setting, else the configured default.
fn refresh_every(app: &App, installation: &crate::store::Installation) -> Duration {
    installation
        .settings
        .whole_number("entity_refresh_hours")
        .map(|hours| Duration::from_secs(u64::from(hours) * 3600))
        .unwrap_or(app.config.entity_refresh)
}

/// Starts a new bootstrap for every active workspace whose last one finished longer ago than
/// its refresh period. Runs until shutdown.
pub async fn run_refresh(app: App) {
    let tick = match app.config.entity_refresh {
        d if d.is_zero() => MAX_TICK,
        d => (d / 4).clamp(Duration::from_millis(100), MAX_TICK),
    };
    let mut shutdown = app.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if let Err(err) = refresh_due(&app).await {
            tracing::warn!(error = %err, "entity cache refresh check failed");
        }
    }
}

async fn refresh_due(app: &App) -> Result<(), StoreError> {
    let now = jiff::Timestamp::now().as_millisecond();
    for installation in app.store.installations().await? {
        let every = refresh_every(app, &installation);
        if installation.status != InstallationStatus::Active || every.is_zero() {
            continue;
        }
        let ws = &installation.workspace_id;
        let Some(progress) = app.store.bootstrap_progress(ws).await? else {
            continue; // never fetched (bootstrap_on_install off): nothing to refresh
        };
        let due = progress
            .finished_at
            .is_some_and(|at| now - at >= every.as_millis() as i64);
        if !progress.running && due {
            tracing::info!(workspace_id = %ws, "refreshing the entity cache");
            crate::bootstrap::start(app, &installation, true).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(data: &str, name: Option<&str>) -> Entity {
        Entity {
            entity_type: "users".into(),
            id: "u1".into(),
            name: name.map(str::to_string),
            fetched_at: 1,
            data: data.into(),
        }
    }

    #[test]
    fn an_update_keeps_the_fields_it_does_not_carry() {
        let cached = entity(
            r#"{"id":"u1","name":"Ann","email":"a@x","status":"ACTIVE"}"#,
            Some("Ann"),
        );
        let update = entity(r#"{"id":"u1","email":"b@x","oldEmail":"a@x"}"#, Some("b@x"));
        let merged = merge(&cached, update);
        let data: Value = serde_json::from_str(&merged.data).unwrap();
        assert_eq!(data["name"], "Ann");
        assert_eq!(data["email"], "b@x");
        assert_eq!(data["status"], "ACTIVE");
    }

    #[test]
    fn every_event_kind_maps_to_a_bootstrap_entity_type() {
        for event in crate::ingest::CLOCKIFY_EVENTS.iter() {
            if let Some((entity_type, _)) = effect(event) {
                assert!(!entity_type.is_empty(), "{event}");
            }
        }
        assert_eq!(effect("TASK_DELETED"), Some(("projects/tasks", true)));
        assert_eq!(effect("NEW_TIME_ENTRY"), None);
    }
}
