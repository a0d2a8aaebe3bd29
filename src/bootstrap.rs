//! Entity bootstrap: fills the workspace context cache (users, clients, projects, tags,
//! tasks, …) from the eligible GET operations of the catalog, page by page, through the
//! shared rate-limited client. Progress is stored with each page, so a restart resumes
//! where it stopped and finished operations are not fetched again.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::app::App;
use crate::clockify::catalog::{Operation, ParamLocation, ServerFamily, catalog};
use crate::clockify::client::{Acting, ApiRequest, ClientError, RetryPolicy};
use crate::store::{
    BootstrapProgress, BootstrapStep, Entity, Installation, InstallationStatus, StepStatus,
    StoreError,
};
use crate::time::now_ms;

/// Cached entities deleted per write when a refresh expires the ones it did not see again.
const EXPIRE_BATCH: usize = 1024;
/// Fetched first, in this order; everything else eligible follows.
const CORE: &[&str] = &[
    "getWorkspaceOfUser",
    "getLoggedUser",
    "getUsersOfWorkspace",
    "getClients",
    "getProjects",
    "getTags",
    "getTasks",
    "ofWorkspace",
    "getUserGroups",
];
/// Never run: the add-on token is not accepted (DESIGN), or they only echo our own state.
const EXCLUDED: &[&str] = &["getWorkspacesOfUser", "getWebhooks", "getAddonWebhooks"];

/// A planned step: an operation and, for child operations, the entity type of its parents.
struct Plan {
    operation: &'static Operation,
    entity_type: String,
    parent: Option<(
        String, /* path param */
        String, /* parent entity type */
    )>,
}

fn settings_flag(installation: &Installation, id: &str, default: bool) -> bool {
    installation.settings.flag(id).unwrap_or(default)
}

/// Pages fetched at most per operation, all parents together (workspace setting
/// `bootstrap_max_pages`, else `--bootstrap-max-pages`); a step stopped by it is truncated.
fn max_pages(app: &App, installation: &Installation) -> u32 {
    installation
        .settings
        .whole_number("bootstrap_max_pages")
        .unwrap_or(app.config.bootstrap_max_pages)
        .max(1)
}

/// `clients`, `projects/tasks`, `time-off/policies`, `workspace`, `user`.
fn entity_type(operation: &Operation) -> String {
    match operation.path.as_str() {
        "/v1/user" => return "user".into(),
        "/v1/workspaces/{workspaceId}" => return "workspace".into(),
        _ => {}
    }
    let rest = operation
        .path
        .trim_start_matches("/v1/workspaces/{workspaceId}/")
        .trim_start_matches("/v1/");
    rest.split('/')
        .filter(|s| !s.starts_with('{'))
        .collect::<Vec<_>>()
        .join("/")
}

fn is_time_entries(operation: &Operation) -> bool {
    operation.path.contains("time-entries")
}

/// The entity type whose ids fill `param` in a child path like `/projects/{projectId}/tasks`.
fn parent_type(path: &str, param: &str) -> Option<String> {
    let marker = format!("/{{{param}}}");
    let before = &path[..path.find(&marker)?];
    let rest = before.trim_start_matches("/v1/workspaces/{workspaceId}/");
    let mut segments: Vec<String> = rest.split('/').map(str::to_string).collect();
    let last = segments.pop()?;
    // `user` → `users`, `policy` → `policies`: the list the parent ids came from.
    let plural = if last.ends_with('s') {
        last
    } else if let Some(stem) = last.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{last}s")
    };
    segments.push(plural);
    Some(segments.join("/"))
}

/// The eligible operations for this installation, core entities first, children last.
fn plan(installation: &Installation) -> Vec<Plan> {
    let time_entries = settings_flag(installation, "bootstrap_time_entries", false);
    let heavy = settings_flag(installation, "bootstrap_heavy_endpoints", false);
    let mut plans: Vec<Plan> = Vec::new();
    for operation in catalog().operations() {
        if operation.method != "GET" || operation.deprecated || !operation.addon_token {
            continue;
        }
        if EXCLUDED.contains(&operation.id.as_str())
            || (is_time_entries(operation) && !time_entries)
        {
            continue;
        }
        if operation.server == ServerFamily::Pto
            || (operation.server == ServerFamily::Reports && !heavy)
        {
            continue;
        }
        // Required query parameters must be ones we can fill (a default, or paging).
        let unfillable = operation.parameters.iter().any(|p| {
            p.location == ParamLocation::Query
                && p.required
                && p.default.is_none()
                && p.schema_type.as_deref() != Some("boolean")
        });
        if unfillable {
            continue;
        }
        let extra: Vec<&str> = operation
            .parameters
            .iter()
            .filter(|p| p.location == ParamLocation::Path && p.name != "workspaceId")
            .map(|p| p.name.as_str())
            .collect();
        let parent = match extra.as_slice() {
            [] => None,
            // A child list (`/projects/{projectId}/tasks`), never a single-item read.
            [param] if !operation.path.ends_with('}') => {
                match parent_type(&operation.path, param) {
                    Some(parent) => Some((param.to_string(), parent)),
                    None => continue,
                }
            }
            _ => continue,
        };
        plans.push(Plan {
            operation,
            entity_type: entity_type(operation),
            parent,
        });
    }
    // Children only where their parents are fetched too.
    let top: Vec<String> = plans
        .iter()
        .filter(|p| p.parent.is_none())
        .map(|p| p.entity_type.clone())
        .collect();
    plans.retain(|p| {
        p.parent
            .as_ref()
            .is_none_or(|(_, parent)| top.contains(parent))
    });
    let rank = |p: &Plan| {
        let core = CORE
            .iter()
            .position(|id| *id == p.operation.id)
            .unwrap_or(CORE.len());
        (
            p.parent.is_some() && core == CORE.len(),
            core,
            p.operation.id.clone(),
        )
    };
    plans.sort_by_key(rank);
    plans
}

fn new_progress(plans: &[Plan]) -> BootstrapProgress {
    BootstrapProgress {
        running: true,
        started_at: now_ms(),
        finished_at: None,
        steps: plans
            .iter()
            .map(|p| BootstrapStep {
                operation_id: p.operation.id.clone(),
                entity_type: p.entity_type.clone(),
                status: StepStatus::Pending,
                parents_done: 0,
                next_page: 1,
                pages: 0,
                items: 0,
                truncated: false,
            })
            .collect(),
    }
}

/// The page size to ask for: the spec's maximum, else its default, else 50.
fn page_size(operation: &Operation) -> Option<(String, u64)> {
    let param = operation.parameters.iter().find(|p| {
        p.location == ParamLocation::Query && (p.name == "page-size" || p.name == "pageSize")
    })?;
    let size = param
        .maximum
        .map(|m| m as u64)
        .or_else(|| param.default.as_ref().and_then(Value::as_u64))
        .unwrap_or(50)
        .clamp(1, 5000);
    Some((param.name.clone(), size))
}

/// The items of a response: an array, the first array field of an object, or the object.
fn items_of(body: &Value) -> Vec<Value> {
    match body {
        Value::Array(items) => items.clone(),
        Value::Object(map) => match map.values().find(|v| v.is_array()) {
            Some(Value::Array(items)) => items.clone(),
            _ => vec![body.clone()],
        },
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

/// A cache entry for `item` (an API list item or a webhook event's entity).
pub(crate) fn to_entity(entity_type: &str, item: &Value, fallback_id: String, now: i64) -> Entity {
    let text = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_string);
    Entity {
        entity_type: entity_type.to_string(),
        id: text("id").unwrap_or(fallback_id),
        name: text("name")
            .or_else(|| text("email"))
            .or_else(|| text("description")),
        fetched_at: now,
        data: item.to_string(),
    }
}

/// Starts (or restarts) a bootstrap in the background unless one is running.
pub async fn start(
    app: &App,
    installation: &Installation,
    restart: bool,
) -> Result<BootstrapProgress, StoreError> {
    let ws = installation.workspace_id.clone();
    let existing = app.store.bootstrap_progress(&ws).await?;
    let progress = match existing {
        Some(p) if p.running && !restart => p,
        _ => {
            let progress = new_progress(&plan(installation));
            app.store.start_bootstrap(&ws, progress.clone()).await?;
            progress
        }
    };
    spawn(app, &ws);
    Ok(progress)
}

/// Runs the stored plan of `ws` to the end (idempotent: a second runner for the same
/// workspace waits for the first through the lock).
pub fn spawn(app: &App, ws: &str) {
    let (task, ws) = (app.clone(), ws.to_string());
    app.spawn(async move {
        // A runner for a superseded plan notices and stops; this one then takes over.
        let lock = task.bootstrap_locks.lock_for(&ws);
        let _guard = lock.lock().await;
        if let Err(err) = run(&task, &ws).await {
            tracing::warn!(workspace_id = %ws, error = %err, "bootstrap stopped");
        }
    });
}

async fn run(app: &App, ws: &str) -> Result<(), StoreError> {
    let Some(mut progress) = app.store.bootstrap_progress(ws).await? else {
        return Ok(());
    };
    if !progress.running {
        return Ok(());
    }
    let shutdown = app.shutdown.subscribe();
    let days = |i: &Installation| {
        i.settings
            .whole_number("bootstrap_time_entry_days")
            .unwrap_or(30)
    };
    for index in 0..progress.steps.len() {
        if matches!(
            progress.steps[index].status,
            StepStatus::Done | StepStatus::Failed(_)
        ) {
            continue;
        }
        let Some(installation) = app
            .store
            .installation(ws)
            .await?
            .filter(|i| i.status == InstallationStatus::Active)
        else {
            return Ok(());
        };

        let Some(operation) = catalog().operation(&progress.steps[index].operation_id) else {
            progress.steps[index].status =
                StepStatus::Failed("operation no longer in the catalog".into());
            continue;
        };
        let parent = plan(&installation)
            .into_iter()
            .find(|p| p.operation.id == operation.id)
            .and_then(|p| p.parent);
        let parents: Vec<Option<String>> = match &parent {
            None => vec![None],
            Some((_, parent_type)) => app
                .store
                .entity_ids(ws, parent_type)
                .await?
                .into_iter()
                .map(Some)
                .collect(),
        };
        progress.steps[index].status = StepStatus::Running;
        let paging = page_size(operation);
        let ceiling = max_pages(app, &installation);
        'parents: while (progress.steps[index].parents_done as usize) < parents.len() {
            let parent_id = parents[progress.steps[index].parents_done as usize].clone();
            loop {
                if *shutdown.borrow() {
                    // Progress is stored; the next start resumes here.
                    return Ok(());
                }
                if superseded(app, ws, progress.started_at).await? {
                    return Ok(());
                }
                let step = &progress.steps[index];
                if step.pages >= ceiling {
                    // More to fetch, but the ceiling is reached: say so rather than pass
                    // the step off as complete.
                    progress.steps[index].truncated = true;
                    break 'parents;
                }
                let mut path_params = Map::new();
                if operation
                    .parameter("workspaceId", ParamLocation::Path)
                    .is_some()
                {
                    path_params.insert("workspaceId".into(), json!(ws));
                }
                if let (Some((param, _)), Some(id)) = (&parent, &parent_id) {
                    path_params.insert(param.clone(), json!(id));
                }
                let mut query = Map::new();
                for p in &operation.parameters {
                    if p.location == ParamLocation::Query && p.required {
                        query.insert(p.name.clone(), p.default.clone().unwrap_or(json!(false)));
                    }
                }
                if let Some((name, size)) = &paging {
                    query.insert("page".into(), json!(step.next_page));
                    query.insert(name.clone(), json!(size));
                }
                if is_time_entries(operation)
                    && operation.parameter("start", ParamLocation::Query).is_some()
                {
                    let since = jiff::Timestamp::now()
                        - jiff::SignedDuration::from_hours(24 * days(&installation) as i64);
                    query.insert(
                        "start".into(),
                        json!(since.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    );
                }
                let built = match operation.build_request(&path_params, &query) {
                    Ok(built) => built,
                    Err(problems) => {
                        progress.steps[index].status = StepStatus::Failed(problems.join("; "));
                        break 'parents;
                    }
                };
                let request = ApiRequest {
                    operation_id: operation.id.clone(),
                    server: operation.server,
                    method: "GET".into(),
                    path: built.path,
                    query: built.query,
                    body: None,
                    acting: Acting::Addon,
                    retry: RetryPolicy::default(),
                };
                let outcome = app
                    .clockify
                    .send(&installation, app.store.secrets(), request)
                    .await;

                let response = match outcome {
                    Ok(r) if (200..300).contains(&r.status) => r,
                    Ok(r) => {
                        progress.steps[index].status =
                            StepStatus::Failed(format!("HTTP {}", r.status));
                        break 'parents;
                    }
                    Err(e) => {
                        progress.steps[index].status = StepStatus::Failed(e.to_string());
                        // A refused host or a missing token fails every call alike: stop here.
                        if matches!(
                            e,
                            ClientError::HostNotAllowed(_)
                                | ClientError::NoToken
                                | ClientError::NoBaseUrl(_)
                        ) {
                            progress.finished_at = Some(now_ms());
                            finish(app, ws, progress).await?;
                            return Ok(());
                        }
                        break 'parents;
                    }
                };
                let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
                let items = items_of(&body);
                let now = now_ms();
                let step = &mut progress.steps[index];
                let entities: Vec<Entity> = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let fallback = format!(
                            "{}-{}-{i}",
                            parent_id.clone().unwrap_or_default(),
                            step.next_page
                        );
                        to_entity(&step.entity_type, item, fallback, now)
                    })
                    .collect();
                step.pages += 1;
                step.items += entities.len() as u64;
                let short = paging
                    .as_ref()
                    .is_none_or(|(_, size)| (items.len() as u64) < *size);
                if short {
                    step.parents_done += 1;
                    step.next_page = 1;
                } else {
                    step.next_page += 1;
                }
                if !app
                    .store
                    .put_entities(ws, entities, progress.clone())
                    .await?
                {
                    return Ok(()); // replaced by a new plan, or the workspace was erased
                }
                if short {
                    break;
                }
            }
        }
        let step = &mut progress.steps[index];
        if step.status == StepStatus::Running {
            step.status = StepStatus::Done;
            if !step.truncated {
                // Everything there is was seen: what was not is gone from Clockify.
                let entity_type = step.entity_type.clone();
                expire(app, ws, &entity_type, progress.started_at).await?;
            }
        }
        if !app
            .store
            .put_entities(ws, Vec::new(), progress.clone())
            .await?
        {
            return Ok(());
        }
    }
    progress.finished_at = Some(now_ms());
    finish(app, ws, progress).await?;
    tracing::info!(workspace_id = ws, "bootstrap finished");
    Ok(())
}

/// Stores the plan as finished (if it is still the stored one).
async fn finish(app: &App, ws: &str, mut progress: BootstrapProgress) -> Result<(), StoreError> {
    progress.running = false;
    app.store.put_entities(ws, Vec::new(), progress).await?;
    Ok(())
}

/// Deletes the cached entities of `entity_type` that this run (started at `started_at`) did
/// not fetch again and no webhook event touched since.
async fn expire(app: &App, ws: &str, entity_type: &str, started_at: i64) -> Result<(), StoreError> {
    loop {
        let n = app
            .store
            .expire_entities(ws, entity_type, started_at, EXPIRE_BATCH)
            .await?;
        if n > 0 {
            metrics::counter!("entity_cache_expired_total").increment(n as u64);
        }
        if n < EXPIRE_BATCH {
            return Ok(());
        }
    }
}

/// Whether `POST /api/bootstrap` replaced the plan this runner works on.
async fn superseded(app: &App, ws: &str, started_at: i64) -> Result<bool, StoreError> {
    let stored = app.store.bootstrap_progress(ws).await?;
    Ok(stored.is_none_or(|p| p.started_at != started_at || !p.running))
}

/// Resumes bootstraps that were running when the server stopped.
pub async fn resume_all(app: App) {
    // Let the server come up first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    match app.store.unfinished_bootstraps().await {
        Ok(workspaces) => workspaces.iter().for_each(|ws| spawn(&app, ws)),
        Err(e) => tracing::warn!(error = %e, "cannot resume bootstraps"),
    }
}

/// Where a bootstrap stands: `idle` (never ran), `running`, `done` or `done-with-errors`,
/// with the steps finished (done or failed) of all, and the entities fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub state: &'static str,
    pub done: usize,
    pub total: usize,
    pub items: u64,
    /// Steps that stopped at the page ceiling (`bootstrap_max_pages`) with more to fetch.
    pub truncated: usize,
}

pub fn status(progress: Option<&BootstrapProgress>) -> Status {
    let Some(p) = progress else {
        return Status {
            state: "idle",
            done: 0,
            total: 0,
            items: 0,
            truncated: 0,
        };
    };
    let done = p
        .steps
        .iter()
        .filter(|s| matches!(s.status, StepStatus::Done | StepStatus::Failed(_)))
        .count();
    let failed = p
        .steps
        .iter()
        .any(|s| matches!(s.status, StepStatus::Failed(_)));
    let state = if p.running {
        "running"
    } else if failed {
        "done-with-errors"
    } else {
        "done"
    };
    Status {
        state,
        done,
        total: p.steps.len(),
        items: p.steps.iter().map(|s| s.items).sum(),
        truncated: p.steps.iter().filter(|s| s.truncated).count(),
    }
}

/// Entities of the cache per type, as counted by the bootstrap's steps.
pub fn counts_by_type(
    progress: Option<&BootstrapProgress>,
) -> std::collections::BTreeMap<String, u64> {
    let mut counts = std::collections::BTreeMap::new();
    for step in progress.into_iter().flat_map(|p| &p.steps) {
        *counts.entry(step.entity_type.clone()).or_insert(0) += step.items;
    }
    counts
}
