//! The operator's notification hook (`--notify-url`): a signed JSON message when a flow is
//! disabled after repeated failures, or when a workspace's subscription sync has failed
//! [`SYNC_FAILURES_TO_NOTIFY`] times in a row. Messages are signed the Standard Webhooks way
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `id.timestamp.body`) with the secret in `--notify-secret-file`, sent in the background
//! with a few retries, and never hold up the work that caused them.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::app::App;

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

/// Sends `{type, workspaceId, at, data}` to the hook, if one is configured.
pub fn send(app: &App, kind: &'static str, workspace_id: &str, data: Value) {
    let Some(url) = app.config.notify_url.clone() else {
        return;
    };
    let secret = app.config.notify_secret.clone().unwrap_or_default();
    let message = json!({
        "type": kind,
        "workspaceId": workspace_id,
        "at": crate::time::rfc3339(crate::time::now_ms()),
        "data": data,
    });
    let body = serde_json::to_vec(&message).expect("JSON");
    let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
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

/// Counts a workspace's sync outcome; sends a message when failures reach the threshold.
pub fn sync_outcome(app: &App, workspace_id: &str, failed: bool, error: Option<&str>) {
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
            "subscriptions.sync_failing",
            workspace_id,
            json!({"consecutiveFailures": failures, "error": error}),
        );
    }
}
