//! The workspace's own state: settings, subscriptions (which event types reach the add-on),
//! the entity bootstrap and its cache, and the overview page.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{Admin, JsonBody, Params};
use crate::app::App;
use crate::audit::{self, Change};
use crate::auth::User;
use crate::overview::{DAY_MS, HOUR_MS};
use crate::store::{
    BootstrapProgress, RunStatus, StepStatus, SubscriptionReport, SubscriptionState,
};
use crate::telemetry::VERSION;
use crate::time::rfc3339;
use crate::{bootstrap, overview, settings, subscriptions};

// --- Settings ----------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct SettingsView {
    /// Every setting's current value, by id.
    settings: Map<String, Value>,
    /// The manifest's defaults, by id.
    defaults: Map<String, Value>,
}

fn settings_view(settings: Map<String, Value>) -> Json<SettingsView> {
    Json(SettingsView {
        settings,
        defaults: settings::manifest_defaults().clone(),
    })
}

#[utoipa::path(get, path = "/api/settings", tag = "workspace",
    responses((status = 200, body = SettingsView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn get_settings(user: User) -> Result<Json<SettingsView>, ApiError> {
    Ok(settings_view(settings::current(&user.installation)))
}

/// Changes settings (through Clockify's settings API, which keeps them); the body maps
/// setting ids to new values.
#[utoipa::path(patch, path = "/api/settings", tag = "workspace",
    request_body(content = Object, description = "Setting ids and their new values"),
    responses((status = 200, body = SettingsView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 503, description = "Clockify could not be reached or refused", body = ErrorBody)))]
pub async fn patch_settings(
    State(app): State<App>,
    Admin(user): Admin,
    JsonBody(changes): JsonBody<Map<String, Value>>,
) -> Result<Json<SettingsView>, ApiError> {
    let before = settings::current(&user.installation);
    let changed: Vec<String> = changes.keys().cloned().collect();
    let after = settings::patch(&app, &user, changes).await?;
    let pick = |all: &Map<String, Value>| -> Value {
        changed
            .iter()
            .map(|id| (id.clone(), all.get(id).cloned().unwrap_or(Value::Null)))
            .collect::<Map<_, _>>()
            .into()
    };
    audit::by_user(
        &app,
        &user,
        Change {
            action: "settings.update",
            target: None,
            before: Some(pick(&before)),
            after: Some(pick(&after)),
        },
    )
    .await;
    Ok(settings_view(after))
}

// --- Subscriptions ------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionEvent {
    event: String,
    /// `manifest`, `registered`, `pending`, `failed` or `not-subscribed`.
    state: &'static str,
    /// Why registration failed.
    reason: Option<String>,
    /// The webhook registered through Clockify's API.
    webhook_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionSummary {
    manifest: usize,
    registered: usize,
    pending: usize,
    failed: usize,
    not_subscribed: usize,
}

impl From<subscriptions::Summary> for SubscriptionSummary {
    fn from(s: subscriptions::Summary) -> Self {
        SubscriptionSummary {
            manifest: s.manifest,
            registered: s.registered,
            pending: s.pending,
            failed: s.failed,
            not_subscribed: s.not_subscribed,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookUsage {
    /// The workspace's webhooks as Clockify last counted them.
    workspace_webhooks: Option<u32>,
    /// Clockify's cap per workspace.
    cap: u32,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionsView {
    events: Vec<SubscriptionEvent>,
    summary: SubscriptionSummary,
    usage: WebhookUsage,
    synced_at: Option<String>,
    /// Why the last sync failed as a whole.
    error: Option<String>,
}

impl From<&SubscriptionReport> for SubscriptionsView {
    fn from(report: &SubscriptionReport) -> Self {
        let events = report
            .events
            .iter()
            .map(|(event, state)| {
                let (state, reason, webhook_id) = match state {
                    SubscriptionState::Manifest => ("manifest", None, None),
                    SubscriptionState::Registered { webhook_id } => {
                        ("registered", None, Some(webhook_id.clone()))
                    }
                    SubscriptionState::Pending => ("pending", None, None),
                    SubscriptionState::Failed(reason) => ("failed", Some(reason.clone()), None),
                    SubscriptionState::NotSubscribed => ("not-subscribed", None, None),
                };
                SubscriptionEvent {
                    event: event.clone(),
                    state,
                    reason,
                    webhook_id,
                }
            })
            .collect();
        SubscriptionsView {
            events,
            summary: subscriptions::summary(report).into(),
            usage: WebhookUsage {
                workspace_webhooks: report.workspace_webhooks,
                cap: subscriptions::WORKSPACE_WEBHOOK_CAP,
            },
            synced_at: (report.synced_at > 0).then(|| rfc3339(report.synced_at)),
            error: report.error.clone(),
        }
    }
}

#[utoipa::path(get, path = "/api/subscriptions", tag = "workspace",
    responses((status = 200, body = SubscriptionsView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn get_subscriptions(
    State(app): State<App>,
    user: User,
) -> Result<Json<SubscriptionsView>, ApiError> {
    let report = subscriptions::report(&app, &user.installation).await?;
    Ok(Json(SubscriptionsView::from(&report)))
}

/// Reconciles the workspace's webhooks with Clockify now.
#[utoipa::path(post, path = "/api/subscriptions/sync", tag = "workspace",
    responses((status = 200, body = SubscriptionsView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn sync_subscriptions(
    State(app): State<App>,
    Admin(user): Admin,
) -> Result<Json<SubscriptionsView>, ApiError> {
    let report = subscriptions::sync(&app, &user.workspace_id).await?;
    audit::by_user(
        &app,
        &user,
        Change {
            action: "subscriptions.sync",
            target: None,
            before: None,
            after: None,
        },
    )
    .await;
    Ok(Json(SubscriptionsView::from(&report)))
}

// --- Bootstrap ----------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapOperation {
    operation_id: String,
    entity_type: String,
    /// `pending`, `running`, `done` or `failed`.
    status: &'static str,
    pages: u32,
    items: u64,
    /// Stopped at the page ceiling (`bootstrap_max_pages`) with more to fetch.
    truncated: bool,
    error: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapView {
    /// `idle`, `running`, `done` or `done-with-errors`.
    status: &'static str,
    /// Operations finished (done or failed).
    done: usize,
    total: usize,
    /// Entities fetched.
    items: u64,
    /// Operations that stopped at the page ceiling with more to fetch.
    truncated: usize,
    started_at: Option<String>,
    finished_at: Option<String>,
    operations: Vec<BootstrapOperation>,
}

impl From<Option<&BootstrapProgress>> for BootstrapView {
    fn from(progress: Option<&BootstrapProgress>) -> Self {
        let status = bootstrap::status(progress);
        BootstrapView {
            status: status.state,
            done: status.done,
            total: status.total,
            items: status.items,
            truncated: status.truncated,
            started_at: progress.map(|p| rfc3339(p.started_at)),
            finished_at: progress.and_then(|p| p.finished_at).map(rfc3339),
            operations: progress
                .into_iter()
                .flat_map(|p| &p.steps)
                .map(|s| {
                    let (status, error) = match &s.status {
                        StepStatus::Pending => ("pending", None),
                        StepStatus::Running => ("running", None),
                        StepStatus::Done => ("done", None),
                        StepStatus::Failed(e) => ("failed", Some(e.clone())),
                    };
                    BootstrapOperation {
                        operation_id: s.operation_id.clone(),
                        entity_type: s.entity_type.clone(),
                        status,
                        pages: s.pages,
                        items: s.items,
                        truncated: s.truncated,
                        error,
                    }
                })
                .collect(),
        }
    }
}

#[utoipa::path(get, path = "/api/bootstrap", tag = "workspace",
    responses((status = 200, body = BootstrapView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn get_bootstrap(
    State(app): State<App>,
    user: User,
) -> Result<Json<BootstrapView>, ApiError> {
    let progress = app.store.bootstrap_progress(&user.workspace_id).await?;
    Ok(Json(BootstrapView::from(progress.as_ref())))
}

/// Starts the entity bootstrap again from the beginning (in the background).
#[utoipa::path(post, path = "/api/bootstrap", tag = "workspace",
    responses((status = 202, body = BootstrapView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn start_bootstrap(
    State(app): State<App>,
    Admin(user): Admin,
) -> Result<(StatusCode, Json<BootstrapView>), ApiError> {
    let progress = bootstrap::start(&app, &user.installation, true).await?;
    audit::by_user(
        &app,
        &user,
        Change {
            action: "bootstrap.start",
            target: None,
            before: None,
            after: None,
        },
    )
    .await;
    Ok((
        StatusCode::ACCEPTED,
        Json(BootstrapView::from(Some(&progress))),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EntityParams {
    /// An entity type (`projects`, `users`, `projects/tasks`, …).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    entity_type: Option<String>,
    /// Text in the id or name.
    q: Option<String>,
    /// 1 to 1000 (default 100).
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntityView {
    #[serde(rename = "type")]
    entity_type: String,
    id: String,
    name: Option<String>,
    fetched_at: String,
    /// The item as Clockify returned it.
    data: Value,
}

#[derive(Serialize, ToSchema)]
pub struct EntityList {
    items: Vec<EntityView>,
    /// Entities per type, as counted by the bootstrap.
    counts: BTreeMap<String, u64>,
}

/// The workspace's entity cache (filled by the bootstrap, kept current by webhook events).
/// Admins only: it is what the add-on's token read (every member's profile, rates …), more
/// than a member's own Clockify role shows them (docs/security.md).
#[utoipa::path(get, path = "/api/entities", tag = "workspace", params(EntityParams),
    responses((status = 200, body = EntityList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn entities(
    State(app): State<App>,
    Admin(user): Admin,
    Params(query): Params<EntityParams>,
) -> Result<Json<EntityList>, ApiError> {
    let needle = query.q.unwrap_or_default().to_lowercase();
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let items = app
        .store
        .entities(
            &user.workspace_id,
            query.entity_type.as_deref().filter(|t| !t.is_empty()),
            move |e| {
                needle.is_empty()
                    || e.id.to_lowercase().contains(&needle)
                    || e.name
                        .as_deref()
                        .is_some_and(|n| n.to_lowercase().contains(&needle))
            },
            limit,
        )
        .await?;
    let progress = app.store.bootstrap_progress(&user.workspace_id).await?;
    Ok(Json(EntityList {
        items: items
            .into_iter()
            .map(|e| EntityView {
                data: serde_json::from_str::<Value>(&e.data).unwrap_or(Value::Null),
                entity_type: e.entity_type,
                id: e.id,
                name: e.name,
                fetched_at: rfc3339(e.fetched_at),
            })
            .collect(),
        counts: bootstrap::counts_by_type(progress.as_ref()),
    }))
}

// --- Overview -----------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstallationView {
    /// `ACTIVE` or `INACTIVE`.
    status: &'static str,
    installed_at: String,
    generation: u64,
}

#[derive(Serialize, ToSchema)]
pub struct HourCount {
    /// The start of the hour.
    hour: String,
    count: u64,
}

#[derive(Serialize, ToSchema)]
pub struct DayCount {
    /// The start of the 24 hours.
    day: String,
    count: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventCounts {
    last24h: u64,
    last7d: u64,
    last_event_at: Option<String>,
    /// The last 24 hours, oldest first.
    hourly: Vec<HourCount>,
    /// The last 7 days (rolling 24-hour windows), oldest first.
    daily: Vec<DayCount>,
    /// The counts stopped after a bounded scan; then they are lower bounds.
    truncated: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunCounts {
    succeeded24h: u64,
    failed24h: u64,
    skipped24h: u64,
    /// Queued or running now (among the last day's).
    pending: u64,
}

#[derive(Serialize, ToSchema)]
pub struct BootstrapSummary {
    status: &'static str,
    done: usize,
    total: usize,
    items: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    role: Option<String>,
    is_admin: bool,
    language: Option<String>,
    theme: Option<String>,
}

/// The newest scheduled snapshot (`--snapshot-dir`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotView {
    taken_at: String,
    bytes: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverviewView {
    workspace_id: String,
    installation: InstallationView,
    events: EventCounts,
    subscriptions: SubscriptionSummary,
    flow_runs: RunCounts,
    bootstrap: BootstrapSummary,
    data_file_bytes: u64,
    /// Null when snapshots are off or none was taken yet.
    last_snapshot: Option<SnapshotView>,
    version: &'static str,
    user: UserView,
}

#[utoipa::path(get, path = "/api/overview", tag = "workspace",
    responses((status = 200, body = OverviewView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn overview(State(app): State<App>, user: User) -> Result<Json<OverviewView>, ApiError> {
    let o = overview::gather(&app, &user).await?;
    let last24 = &o.hours[o.hours.len() - 24..];
    let start = o.end_ms - 7 * DAY_MS;
    let runs = |status| o.runs_last_day.get(&status).copied().unwrap_or(0);
    let installation = &user.installation;
    let claims = &user.claims;
    Ok(Json(OverviewView {
        workspace_id: user.workspace_id.clone(),
        installation: InstallationView {
            status: installation.status.as_str(),
            installed_at: rfc3339(installation.installed_at),
            generation: installation.generation,
        },
        events: EventCounts {
            last24h: last24.iter().sum(),
            last7d: o.hours.iter().sum(),
            last_event_at: o.last_event_at.map(rfc3339),
            hourly: last24
                .iter()
                .enumerate()
                .map(|(i, n)| HourCount {
                    hour: rfc3339(o.end_ms - (24 - i as i64) * HOUR_MS),
                    count: *n,
                })
                .collect(),
            daily: o
                .hours
                .chunks(24)
                .enumerate()
                .map(|(i, day)| DayCount {
                    day: rfc3339(start + i as i64 * DAY_MS),
                    count: day.iter().sum(),
                })
                .collect(),
            truncated: o.truncated,
        },
        subscriptions: o.subscriptions.into(),
        flow_runs: RunCounts {
            succeeded24h: runs(RunStatus::Succeeded),
            failed24h: runs(RunStatus::Failed),
            skipped24h: runs(RunStatus::Skipped),
            pending: runs(RunStatus::Queued) + runs(RunStatus::Running),
        },
        bootstrap: BootstrapSummary {
            status: o.bootstrap.state,
            done: o.bootstrap.done,
            total: o.bootstrap.total,
            items: o.bootstrap.items,
        },
        data_file_bytes: o.data_file_bytes,
        last_snapshot: o.last_snapshot.as_ref().map(|s| SnapshotView {
            taken_at: rfc3339(s.taken_at),
            bytes: s.bytes,
        }),
        version: VERSION,
        user: UserView {
            role: claims.workspace_role.clone(),
            is_admin: user.is_admin(),
            language: claims.language.clone(),
            theme: claims.theme.clone(),
        },
    }))
}
