//! The add-on's structured settings as the UI reads and writes them. Clockify stores the
//! values (its own settings form edits the same ones); writes go through Clockify's settings
//! API and then into the stored snapshot, so the two never disagree.

use std::sync::LazyLock;

use serde_json::{Map, Value, json};

use crate::app::App;
use crate::auth::User;
use crate::clockify::client::{Acting, ApiRequest, RetryPolicy, ServerFamily};
use crate::ingest::is_clockify_event;
use crate::problem::Problem;
use crate::store::{Installation, SettingValue, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid settings")]
    Invalid(Vec<Problem>),
    /// Clockify could not be reached or refused the change; nothing was stored.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Setting ids and defaults from the manifest's structured settings. They come from the
/// template alone (the base URL and key are not involved), so they are read once.
pub fn manifest_defaults() -> &'static Map<String, Value> {
    static DEFAULTS: LazyLock<Map<String, Value>> = LazyLock::new(read_defaults);
    &DEFAULTS
}

fn read_defaults() -> Map<String, Value> {
    let manifest = crate::manifest::template();
    let mut defaults = Map::new();
    for tab in manifest["settings"]["tabs"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let groups = tab["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["settings"].as_array().into_iter().flatten());
        for setting in tab["settings"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(groups)
        {
            if let Some(id) = setting["id"].as_str() {
                defaults.insert(id.to_string(), setting["value"].clone());
            }
        }
    }
    defaults
}

/// Checks one value against what the setting means; returns the problem, if any.
fn check(id: &str, value: &Value) -> Option<String> {
    let whole = |min: u64, max: u64| match value.as_u64() {
        Some(n) if (min..=max).contains(&n) => None,
        _ => Some(format!("{id} must be a whole number from {min} to {max}")),
    };
    match id {
        "max_rps" => whole(1, crate::config::MAX_RPS_CAP as u64),
        "webhook_retention_days" | "flow_run_retention_days" => whole(0, 3650),
        "bootstrap_time_entry_days" => whole(1, 365),
        "bootstrap_max_pages" => whole(1, crate::config::MAX_BOOTSTRAP_PAGES as u64),
        "entity_refresh_hours" => whole(0, 24 * 365),
        "bootstrap_on_install" | "bootstrap_time_entries" | "bootstrap_heavy_endpoints" => {
            (!value.is_boolean()).then(|| format!("{id} must be true or false"))
        }
        "subscribed_events" => match value.as_array() {
            Some(items) if !items.is_empty() => items
                .iter()
                .find(|e| !e.as_str().is_some_and(is_clockify_event))
                .map(|e| format!("subscribed_events: {e} is not a Clockify event type")),
            _ => Some("subscribed_events must be a non-empty list of event types".into()),
        },
        _ => None,
    }
}

/// Every setting's current value: the stored one, else the manifest's default.
pub fn current(installation: &Installation) -> Map<String, Value> {
    let mut current = manifest_defaults().clone();
    for (id, value) in &installation.settings.values {
        current.insert(id.clone(), value.to_json());
    }
    current
}

/// Every problem of `changes` (unknown ids, values out of range), each at `prefix` + the id.
pub fn problems(changes: &Map<String, Value>, prefix: &str) -> Vec<Problem> {
    let defaults = manifest_defaults();
    let mut problems = Vec::new();
    for (id, value) in changes {
        if !defaults.contains_key(id) {
            problems.push(Problem::new(
                format!("{prefix}{id}"),
                format!("{id} is not a setting of this add-on"),
            ));
        } else if let Some(problem) = check(id, value) {
            problems.push(Problem::new(format!("{prefix}{id}"), problem));
        }
    }
    problems
}

/// Checks `changes`, writes them through Clockify's settings API, then into the stored
/// snapshot; returns every setting's value afterwards.
pub async fn patch(
    app: &App,
    user: &User,
    changes: Map<String, Value>,
) -> Result<Map<String, Value>, SettingsError> {
    let mut problems = problems(&changes, "");
    if changes.is_empty() {
        problems.push(Problem::new("", "nothing to change"));
    }
    if !problems.is_empty() {
        return Err(SettingsError::Invalid(problems));
    }
    let ws = user.workspace_id.clone();
    let payload: Vec<Value> = changes
        .iter()
        .map(|(id, value)| json!({"id": id, "value": value}))
        .collect();
    let request = ApiRequest {
        operation_id: "updateAddonSettings".into(),
        server: ServerFamily::Backend,
        method: "PATCH".into(),
        path: format!("/addon/workspaces/{ws}/settings"),
        query: Vec::new(),
        body: Some(serde_json::to_vec(&payload).expect("JSON")),
        acting: Acting::Addon,
        retry: RetryPolicy::default(),
    };
    let response = app
        .clockify
        .send(&user.installation, app.store.secrets(), request)
        .await
        .map_err(|e| {
            SettingsError::Unavailable(format!("Clockify's settings API could not be reached: {e}"))
        })?;
    if !(200..300).contains(&response.status) {
        return Err(SettingsError::Unavailable(format!(
            "Clockify refused the settings (HTTP {}): {}",
            response.status,
            String::from_utf8_lossy(&response.body)
                .chars()
                .take(300)
                .collect::<String>()
        )));
    }
    let values: Vec<(String, SettingValue)> = changes
        .iter()
        .filter_map(|(id, v)| SettingValue::from_json(v).map(|v| (id.clone(), v)))
        .collect();
    let generation = user.installation.generation;
    app.store
        .update_installation(&ws, move |current| {
            let mut installation = current.filter(|c| c.generation == generation).ok_or(())?;
            for (id, value) in values {
                match installation
                    .settings
                    .values
                    .iter_mut()
                    .find(|(k, _)| *k == id)
                {
                    Some(slot) => slot.1 = value,
                    None => installation.settings.values.push((id, value)),
                }
            }
            Ok((Some(installation), ()))
        })
        .await?
        .map_err(|()| {
            SettingsError::Unavailable("the installation changed meanwhile; reload".into())
        })?;
    if changes.contains_key("subscribed_events") {
        crate::subscriptions::spawn_sync(app, &ws);
    }
    match app.store.installation(&ws).await? {
        Some(installation) => Ok(current(&installation)),
        None => Ok(manifest_defaults().clone()),
    }
}
