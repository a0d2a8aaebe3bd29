//! Receiving every event type: the manifest carries at most 10 webhooks, so the other
//! subscribed events are registered through Clockify's webhooks API (one webhook per event,
//! URL `{base-url}/webhooks/clockify/{EVENT}`), and kept reconciled: list what exists,
//! create what is missing, never duplicate, delete ours that are no longer wanted. Each
//! registered webhook's token is stored with the installation so deliveries verify.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::clockify::client::{Acting, ApiRequest, ApiResponse, RetryPolicy, ServerFamily};
use crate::ingest::CLOCKIFY_EVENTS;
use crate::store::{
    Installation, InstallationStatus, StoreError, SubscriptionReport, SubscriptionState,
    WebhookToken,
};

/// Clockify's documented cap of webhooks per workspace (PLATFORM.md §9).
pub const WORKSPACE_WEBHOOK_CAP: u32 = 100;
const SETTING: &str = "subscribed_events";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RemoteWebhook {
    id: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    webhook_event: String,
    #[serde(default)]
    auth_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RemoteWebhooks {
    #[serde(default)]
    webhooks: Vec<RemoteWebhook>,
    #[serde(default)]
    workspace_webhook_count: Option<u32>,
}

/// The event types this workspace wants (setting; default: all of them).
fn wanted_events(installation: &Installation) -> Vec<String> {
    match installation.settings.list(SETTING) {
        Some(list) => CLOCKIFY_EVENTS
            .iter()
            .filter(|e| list.iter().any(|w| w == *e))
            .map(|e| e.to_string())
            .collect(),
        None => CLOCKIFY_EVENTS.iter().map(|e| e.to_string()).collect(),
    }
}

fn event_url(app: &App, event: &str) -> String {
    format!("{}/webhooks/clockify/{event}", app.config.base_url)
}

fn event_path(event: &str) -> String {
    format!("/webhooks/clockify/{event}")
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("workspace {0} has no active installation")]
    NotActive(String),
    #[error("the installation changed during the sync; try again")]
    Stale,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The report before any sync: manifest events covered, API ones pending.
fn initial_report(installation: &Installation) -> SubscriptionReport {
    let wanted: HashSet<String> = wanted_events(installation).into_iter().collect();
    let manifest: HashSet<String> = crate::manifest::manifest_events().into_iter().collect();
    let events = CLOCKIFY_EVENTS
        .iter()
        .map(|e| {
            let state = if !wanted.contains(*e) {
                SubscriptionState::NotSubscribed
            } else if manifest.contains(*e) {
                SubscriptionState::Manifest
            } else {
                SubscriptionState::Pending
            };
            (e.to_string(), state)
        })
        .collect();
    SubscriptionReport {
        events,
        workspace_webhooks: None,
        synced_at: 0,
        error: None,
    }
}

fn call(operation: &str, method: &str, path: String, body: Option<Value>) -> ApiRequest {
    ApiRequest {
        operation_id: operation.to_string(),
        server: ServerFamily::Backend,
        method: method.to_string(),
        path,
        query: Vec::new(),
        body: body.map(|b| serde_json::to_vec(&b).expect("JSON values serialize")),
        acting: Acting::Addon,
        retry: RetryPolicy::default(),
    }
}

/// The `message` of a Clockify error body, else the status.
fn reason(response: &ApiResponse) -> String {
    let message = serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string));
    match message {
        Some(m) => format!("HTTP {}: {m}", response.status),
        None => format!("HTTP {}", response.status),
    }
}

fn is_cap_error(response: &ApiResponse) -> bool {
    let text = String::from_utf8_lossy(&response.body).to_lowercase();
    matches!(response.status, 400 | 403 | 409 | 422)
        && ["limit", "maximum", "exceed", "too many webhooks"]
            .iter()
            .any(|w| text.contains(w))
}

/// Reconciles the workspace's webhooks with its subscription list and stores the report.
pub async fn sync(app: &App, ws: &str) -> Result<SubscriptionReport, SyncError> {
    let lock = app.sync_locks.lock_for(ws);
    let _guard = lock.lock().await;
    let installation = app
        .store
        .installation(ws)
        .await?
        .filter(|i| i.status == InstallationStatus::Active && i.auth_token.is_some())
        .map(|i| Installation::clone(&i))
        .ok_or_else(|| SyncError::NotActive(ws.to_string()))?;
    let mut report = initial_report(&installation);
    let secrets = app.store.secrets().clone();
    let send = |request: ApiRequest| {
        let installation = installation.clone();
        let secrets = secrets.clone();
        async move {
            app.clockify
                .send(&installation, &secrets, request)
                .await
                .map_err(|e| e.to_string())
        }
    };

    let listed = send(call(
        "getWebhooks",
        "GET",
        format!("/v1/workspaces/{ws}/webhooks"),
        None,
    ))
    .await;
    let remote: RemoteWebhooks = match &listed {
        Ok(r) if (200..300).contains(&r.status) => {
            serde_json::from_slice(&r.body).unwrap_or(RemoteWebhooks {
                webhooks: Vec::new(),
                workspace_webhook_count: None,
            })
        }
        Ok(r) => {
            return finish(
                app,
                ws,
                report,
                installation,
                Vec::new(),
                Some(format!("listing webhooks failed: {}", reason(r))),
            )
            .await;
        }
        Err(e) => {
            return finish(
                app,
                ws,
                report,
                installation,
                Vec::new(),
                Some(format!("listing webhooks failed: {e}")),
            )
            .await;
        }
    };
    report.workspace_webhooks = remote.workspace_webhook_count;
    let prefix = format!("{}/webhooks/clockify/", app.config.base_url);
    let known: HashMap<String, WebhookToken> = installation
        .webhook_tokens
        .iter()
        .filter_map(|t| t.webhook_id.clone().map(|id| (id, t.clone())))
        .collect();
    let wanted_api: HashSet<String> = report
        .events
        .iter()
        .filter(|(_, s)| *s == SubscriptionState::Pending)
        .map(|(e, _)| e.clone())
        .collect();

    // Ours: webhooks pointing at this server. Keep one per wanted event, delete the rest.
    let mut kept: HashMap<String, RemoteWebhook> = HashMap::new();
    let mut deleted = 0u32;
    let ours: Vec<RemoteWebhook> = remote
        .webhooks
        .into_iter()
        .filter(|w| w.url.starts_with(&prefix))
        .collect();
    // Prefer webhooks whose token we hold.
    let (mut preferred, others): (Vec<_>, Vec<_>) =
        ours.into_iter().partition(|w| known.contains_key(&w.id));
    preferred.extend(others);
    for webhook in preferred {
        let wanted = wanted_api.contains(&webhook.webhook_event)
            && webhook.url == event_url(app, &webhook.webhook_event);
        if wanted && !kept.contains_key(&webhook.webhook_event) {
            kept.insert(webhook.webhook_event.clone(), webhook);
            continue;
        }
        let path = format!("/v1/workspaces/{ws}/webhooks/{}", webhook.id);
        match send(call("deleteWebhook", "DELETE", path, None)).await {
            Ok(r) if (200..300).contains(&r.status) || r.status == 404 => deleted += 1,
            Ok(r) => {
                tracing::warn!(workspace_id = ws, webhook = %webhook.id, reason = %reason(&r), "could not delete a webhook")
            }
            Err(e) => {
                tracing::warn!(workspace_id = ws, webhook = %webhook.id, error = %e, "could not delete a webhook")
            }
        }
    }

    let mut tokens: Vec<WebhookToken> = Vec::new();
    let mut cap_reached: Option<String> = None;
    for (event, state) in report.events.iter_mut() {
        if *state != SubscriptionState::Pending {
            continue;
        }
        if let Some(webhook) = kept.get(event.as_str()) {
            // Registered already; make sure we can verify its deliveries.
            let token = match (known.get(&webhook.id), &webhook.auth_token) {
                (Some(known), _) => Some(known.clone()),
                (None, Some(token)) => Some(WebhookToken::registered(
                    event_path(event),
                    token,
                    webhook.id.clone(),
                    &secrets,
                )),
                (None, None) => {
                    let path = format!("/v1/workspaces/{ws}/webhooks/{}/token", webhook.id);
                    match send(call("generateNewToken", "PATCH", path, None)).await {
                        Ok(r) if (200..300).contains(&r.status) => {
                            serde_json::from_slice::<RemoteWebhook>(&r.body)
                                .ok()
                                .and_then(|w| w.auth_token)
                                .map(|t| {
                                    WebhookToken::registered(
                                        event_path(event),
                                        &t,
                                        webhook.id.clone(),
                                        &secrets,
                                    )
                                })
                        }
                        _ => None,
                    }
                }
            };
            match token {
                Some(token) => {
                    tokens.push(token);
                    *state = SubscriptionState::Registered {
                        webhook_id: webhook.id.clone(),
                    };
                }
                None => {
                    *state = SubscriptionState::Failed(
                        "registered, but its token could not be obtained".into(),
                    )
                }
            }
            continue;
        }
        if let Some(cap) = &cap_reached {
            *state = SubscriptionState::Failed(cap.clone());
            continue;
        }
        let name: String = format!("Studio {event}").chars().take(30).collect();
        let body = json!({
            "name": name,
            "url": event_url(app, event),
            "webhookEvent": event,
            "triggerSource": [ws],
            "triggerSourceType": "WORKSPACE_ID",
        });
        match send(call(
            "createWebhook",
            "POST",
            format!("/v1/workspaces/{ws}/webhooks"),
            Some(body),
        ))
        .await
        {
            Ok(r) if (200..300).contains(&r.status) => {
                match serde_json::from_slice::<RemoteWebhook>(&r.body) {
                    Ok(created) => {
                        match &created.auth_token {
                            Some(token) => tokens.push(WebhookToken::registered(
                                event_path(event),
                                token,
                                created.id.clone(),
                                &secrets,
                            )),
                            None => {
                                tracing::warn!(workspace_id = ws, event = %event, "created webhook came without a token")
                            }
                        }
                        *state = SubscriptionState::Registered {
                            webhook_id: created.id,
                        };
                        report.workspace_webhooks = report.workspace_webhooks.map(|n| n + 1);
                    }
                    Err(e) => {
                        *state = SubscriptionState::Failed(format!(
                            "unexpected answer to createWebhook: {e}"
                        ))
                    }
                }
            }
            Ok(r) if is_cap_error(&r) => {
                let cap = format!("webhook limit reached ({})", reason(&r));
                *state = SubscriptionState::Failed(cap.clone());
                cap_reached = Some(cap);
            }
            Ok(r) => *state = SubscriptionState::Failed(reason(&r)),
            Err(e) => *state = SubscriptionState::Failed(e),
        }
    }
    report.workspace_webhooks = report.workspace_webhooks.map(|n| n.saturating_sub(deleted));
    finish(app, ws, report, installation, tokens, cap_reached).await
}

/// Stores the registered webhooks' tokens (only if the installation is still the one the
/// sync started with) and the report.
async fn finish(
    app: &App,
    ws: &str,
    mut report: SubscriptionReport,
    installation: Installation,
    tokens: Vec<WebhookToken>,
    error: Option<String>,
) -> Result<SubscriptionReport, SyncError> {
    report.synced_at = jiff::Timestamp::now().as_millisecond();
    report.error = error;
    let listing_failed = report
        .error
        .as_deref()
        .is_some_and(|e| e.starts_with("listing"));
    if !listing_failed {
        let generation = installation.generation;
        let stale = app
            .store
            .update_installation(ws, move |current| {
                let Some(mut current) = current.filter(|c| c.generation == generation) else {
                    return Err(());
                };
                current.webhook_tokens.retain(|t| t.webhook_id.is_none());
                current.webhook_tokens.extend(tokens);
                Ok((Some(current), ()))
            })
            .await?
            .is_err();
        if stale {
            return Err(SyncError::Stale);
        }
    }
    app.store
        .put_subscription_report(ws, report.clone())
        .await?;
    let failed = report
        .events
        .iter()
        .filter(|(_, s)| matches!(s, SubscriptionState::Failed(_)))
        .count();
    tracing::info!(workspace_id = ws, failed, "subscriptions synced");
    let outcome = if failed > 0 || report.error.is_some() {
        "failed"
    } else {
        "ok"
    };
    metrics::counter!("subscription_syncs_total", "outcome" => outcome).increment(1);
    let error = report.error.clone().or_else(|| {
        report.events.iter().find_map(|(event, s)| match s {
            SubscriptionState::Failed(e) => Some(format!("{event}: {e}")),
            _ => None,
        })
    });
    crate::notify::sync_outcome(app, ws, outcome == "failed", error.as_deref()).await;
    Ok(report)
}

/// Starts a sync in the background (install, settings change, periodic).
pub fn spawn_sync(app: &App, ws: &str) {
    let (task, ws) = (app.clone(), ws.to_string());
    app.spawn(async move {
        if let Err(err) = sync(&task, &ws).await {
            tracing::warn!(workspace_id = %ws, error = %err, "subscription sync failed");
        }
    });
}

/// After DELETED: remove the webhooks we registered, with the token the installation had
/// (it may already be dead; 401/404 are expected and fine).
pub fn spawn_cleanup(app: &App, installation: Installation) {
    let task = app.clone();
    app.spawn(async move {
        let app = task;
        let ws = installation.workspace_id.clone();
        for token in installation
            .webhook_tokens
            .iter()
            .filter_map(|t| t.webhook_id.clone())
        {
            let request = call(
                "deleteWebhook",
                "DELETE",
                format!("/v1/workspaces/{ws}/webhooks/{token}"),
                None,
            );
            match app
                .clockify
                .send(&installation, app.store.secrets(), request)
                .await
            {
                Ok(r) => {
                    tracing::info!(workspace_id = %ws, status = r.status, "removed a registered webhook after uninstall")
                }
                Err(e) => {
                    tracing::info!(workspace_id = %ws, error = %e, "could not remove a registered webhook after uninstall")
                }
            }
        }
    });
}

/// Periodic reconciliation of every active installation (re-creates webhooks removed in
/// Clockify, registers newly wanted events).
pub async fn run_periodic(app: App) {
    let mut shutdown = app.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(app.config.subscription_sync_interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let installations = match app.store.installations().await {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list installations for the periodic sync");
                continue;
            }
        };
        for installation in installations
            .into_iter()
            .filter(|i| i.status == InstallationStatus::Active)
        {
            if let Err(err) = sync(&app, &installation.workspace_id).await {
                tracing::warn!(workspace_id = %installation.workspace_id, error = %err, "periodic subscription sync failed");
            }
        }
    }
}

/// How many events are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub manifest: usize,
    pub registered: usize,
    pub pending: usize,
    pub failed: usize,
    pub not_subscribed: usize,
}

pub fn summary(report: &SubscriptionReport) -> Summary {
    let mut summary = Summary::default();
    for (_, state) in &report.events {
        match state {
            SubscriptionState::Manifest => summary.manifest += 1,
            SubscriptionState::Registered { .. } => summary.registered += 1,
            SubscriptionState::Pending => summary.pending += 1,
            SubscriptionState::Failed(_) => summary.failed += 1,
            SubscriptionState::NotSubscribed => summary.not_subscribed += 1,
        }
    }
    summary
}

/// The last sync's report, or what is expected before the first.
pub async fn report(
    app: &App,
    installation: &Installation,
) -> Result<SubscriptionReport, StoreError> {
    Ok(
        match app
            .store
            .subscription_report(&installation.workspace_id)
            .await?
        {
            Some(report) => report,
            None => initial_report(installation),
        },
    )
}
