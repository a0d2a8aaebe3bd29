//! Notifications: a signed JSON message `{type, workspaceId, at, data}` when a flow is
//! disabled after repeated failures, or when a workspace's subscription sync has failed
//! [`SYNC_FAILURES_TO_NOTIFY`] times in a row. Each one goes two ways:
//!
//! - into the workspace's event log as an event of the built-in `studio` source
//!   ([`STUDIO_SOURCE`]), so that the destinations a workspace admin points at that source
//!   receive it durably, signed and retried like any forwarded event (the store queues their
//!   deliveries in the event's own transaction; flows never run on it);
//! - to the operator's hook (`--notify-url`), if configured: signed the Standard Webhooks way
//!   (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>` over
//!   `id.timestamp.body`) with the secret in `--notify-secret-file`, sent in the background
//!   with a few retries.
//!
//! Neither holds up nor fails the work that caused it: a failure is logged and counted.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::store::{Dedupe, InstallationStatus, NewEvent, STUDIO_SOURCE};

/// Consecutive failed syncs of one workspace that trigger a message (and every further
/// multiple of it, so a long outage is repeated, not flooded).
pub const SYNC_FAILURES_TO_NOTIFY: u32 = 3;
const ATTEMPTS: u32 = 3;
const TIMEOUT: Duration = Duration::from_secs(10);

/// The HMAC key of a secret: a `whsec_` secret's base64 bytes, else the text itself.
fn key_of(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|b| STANDARD.decode(b).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key_of(secret)).expect("HMAC takes any key");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// What a notification is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    FlowAutoDisabled,
    SyncFailing,
}

impl Kind {
    /// The message's `type` (as the operator's hook has always had it).
    pub fn message_type(self) -> &'static str {
        match self {
            Kind::FlowAutoDisabled => "flow.auto_disabled",
            Kind::SyncFailing => "subscriptions.sync_failing",
        }
    }

    /// The event type of the `studio` event, named like Clockify's event types.
    pub fn event_type(self) -> &'static str {
        match self {
            Kind::FlowAutoDisabled => "FLOW_AUTO_DISABLED",
            Kind::SyncFailing => "SUBSCRIPTION_SYNC_FAILING",
        }
    }
}

/// Stores the notification as a `studio` event of the workspace (while it is installed and
/// active, as custom sources require) and sends it to the operator's hook, if one is
/// configured.
pub async fn send(app: &App, kind: Kind, workspace_id: &str, data: Value) {
    let message = json!({
        "type": kind.message_type(),
        "workspaceId": workspace_id,
        "at": crate::time::rfc3339(crate::time::now_ms()),
        "data": data,
    });
    let body = serde_json::to_vec(&message).expect("JSON");
    let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
    if let Err(err) = store(app, kind, workspace_id, &id, &body).await {
        metrics::counter!("notifications_total", "type" => kind.message_type(), "outcome" => "not_stored")
            .increment(1);
        tracing::warn!(kind = kind.message_type(), workspace_id, error = %err, "notification not stored as an event");
    }
    to_hook(app, kind.message_type(), id, body);
}

async fn store(
    app: &App,
    kind: Kind,
    workspace_id: &str,
    id: &str,
    body: &[u8],
) -> Result<(), crate::store::StoreError> {
    let active = app
        .store
        .installation(workspace_id)
        .await?
        .is_some_and(|i| i.status == InstallationStatus::Active);
    if !active {
        return Ok(());
    }
    app.store
        .ingest(NewEvent {
            workspace_id: workspace_id.to_string(),
            event_type: kind.event_type().to_string(),
            source: STUDIO_SOURCE.to_string(),
            source_id: Some(STUDIO_SOURCE.to_string()),
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_vec(),
            // Every message is new; its id keeps it from deduplicating against another.
            dedupe: Dedupe::Key(Sha256::digest(format!("studio:{id}").as_bytes()).into()),
            entities: Vec::new(),
        })
        .await?;
    metrics::counter!("notifications_total", "type" => kind.message_type(), "outcome" => "stored")
        .increment(1);
    Ok(())
}

/// Sends the message to the operator's hook in the background, if one is configured.
fn to_hook(app: &App, kind: &'static str, id: String, body: Vec<u8>) {
    let Some(url) = app.config.notify_url.clone() else {
        return;
    };
    let secret = app.config.notify_secret.clone().unwrap_or_default();
    app.spawn(async move {
        for attempt in 1..=ATTEMPTS {
            let (url, secret, id, body) = (url.clone(), secret.clone(), id.clone(), body.clone());
            let sent = tokio::task::spawn_blocking(move || deliver(&url, &secret, &id, &body))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            match sent {
                Ok(()) => {
                    metrics::counter!("notifications_total", "type" => kind, "outcome" => "sent")
                        .increment(1);
                    return;
                }
                Err(err) if attempt == ATTEMPTS => {
                    metrics::counter!("notifications_total", "type" => kind, "outcome" => "failed")
                        .increment(1);
                    tracing::warn!(kind, error = %err, "notification not delivered");
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(u64::from(attempt) * 2)).await,
            }
        }
    });
}

fn deliver(url: &str, secret: &str, id: &str, body: &[u8]) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(TIMEOUT))
        .user_agent(format!("clockify-studio/{}", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let timestamp = jiff::Timestamp::now().as_second();
    let response = agent
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature(secret, id, timestamp, body))
        .send(body)
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("the hook answered HTTP {status}"))
    }
}

/// Counts a workspace's sync outcome; notifies when failures reach the threshold.
pub async fn sync_outcome(app: &App, workspace_id: &str, failed: bool, error: Option<&str>) {
    let failures = {
        let mut counts = app.sync_failures.lock().expect("sync failures lock");
        if failed {
            let n = counts.entry(workspace_id.to_string()).or_insert(0);
            *n += 1;
            *n
        } else {
            counts.remove(workspace_id);
            0
        }
    };
    if failures > 0 && failures % SYNC_FAILURES_TO_NOTIFY == 0 {
        send(
            app,
            Kind::SyncFailing,
            workspace_id,
            json!({"consecutiveFailures": failures, "error": error}),
        )
        .await;
    }
}
