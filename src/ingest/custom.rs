//! Events from other systems (custom sources), authenticated per source with a secret: a
//! Standard Webhooks signature (`webhook-id`, `webhook-timestamp`, `webhook-signature`) or
//! `Authorization: Bearer <secret>`. Sources themselves are managed in `crate::sources`.

use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{IngestError, Received, RejectKind, reject, store_event};
use crate::app::App;
use crate::sources::standard_webhooks_signature;
use crate::store::{Dedupe, InstallationStatus, NewEvent, Source};
use crate::time::now_ms;

/// Standard Webhooks: signatures older or newer than this are refused.
const TIMESTAMP_TOLERANCE_SECS: i64 = 5 * 60;
const MAX_EVENT_TYPE_LEN: usize = 100;
const SOURCE: &str = "custom";

/// What a custom-source delivery carries besides its body: the Standard Webhooks headers,
/// a bearer secret, and an `X-Event-Type`.
#[derive(Default)]
pub struct Credentials<'a> {
    pub webhook_id: Option<&'a str>,
    pub webhook_timestamp: Option<&'a str>,
    pub webhook_signature: Option<&'a str>,
    /// The value after `Bearer ` in `Authorization`.
    pub bearer: Option<&'a str>,
    pub event_type: Option<&'a str>,
}

/// The source a delivery is addressed to; looked up before the body is read.
pub async fn find_source(app: &App, source_id: &str) -> Result<Source, IngestError> {
    app.store.source(source_id).await?.ok_or_else(|| {
        reject(
            SOURCE,
            "unknown_source",
            RejectKind::NotFound,
            format!("no source {source_id}"),
        )
    })
}

/// Counts a delivery whose body could not be read (too large, cut off).
pub fn body_unreadable() {
    super::count_rejection(SOURCE, "body");
}

/// Verifies and stores one delivery to `source` (see [`find_source`]). `headers` are the
/// request's, already redacted.
pub async fn receive(
    app: &App,
    source: Source,
    credentials: &Credentials<'_>,
    headers: Vec<(String, String)>,
    body: &[u8],
) -> Result<Received, IngestError> {
    let now = now_ms();
    let secrets: Vec<String> = source
        .secrets
        .iter()
        .filter(|s| s.valid_until.is_none_or(|until| until > now))
        .map(|s| app.store.secrets().open_str(&s.secret))
        .collect::<Result<_, _>>()?;
    let webhook_id = verify(credentials, body, &secrets, now / 1000)
        .map_err(|e| reject(SOURCE, "invalid_signature", RejectKind::Unauthenticated, e))?;
    let installation = app.store.installation(&source.workspace_id).await?;
    if installation.is_none_or(|i| i.status != InstallationStatus::Active) {
        return Err(reject(
            SOURCE,
            "inactive",
            RejectKind::Forbidden,
            "the add-on is not active in this source's workspace",
        ));
    }
    let payload: Value = serde_json::from_slice(body).map_err(|e| {
        reject(
            SOURCE,
            "invalid_json",
            RejectKind::Invalid,
            format!("invalid JSON body: {e}"),
        )
    })?;
    let event_type = event_type_of(&payload, credentials.event_type)
        .map_err(|e| reject(SOURCE, "invalid_event_type", RejectKind::Invalid, e))?;
    // Standard Webhooks: the message id identifies redeliveries; otherwise the bytes do.
    let dedupe = match &webhook_id {
        Some(id) => Dedupe::Key(Sha256::digest(format!("webhook-id:{id}").as_bytes()).into()),
        None => Dedupe::Body,
    };
    Ok(store_event(
        app,
        NewEvent {
            workspace_id: source.workspace_id.clone(),
            event_type,
            source: source.name.clone(),
            source_id: Some(source.id.clone()),
            headers,
            entities: crate::events::entity_ids(&source.workspace_id, body),
            body: body.to_vec(),
            dedupe,
        },
    )
    .await?)
}

/// `type` / `eventType` in the body, else `X-Event-Type`, else `CUSTOM`.
fn event_type_of(payload: &Value, header: Option<&str>) -> Result<String, String> {
    let named = payload
        .get("type")
        .or_else(|| payload.get("eventType"))
        .and_then(Value::as_str)
        .or(header);
    let name = named.map(str::trim).filter(|n| !n.is_empty());
    match name {
        None => Ok("CUSTOM".to_string()),
        Some(n) if n.len() > MAX_EVENT_TYPE_LEN || n.chars().any(char::is_control) => Err(format!(
            "the event type must be at most {MAX_EVENT_TYPE_LEN} printable characters"
        )),
        Some(n) => Ok(n.to_string()),
    }
}

/// Verifies a Standard Webhooks signature or a bearer secret against any valid secret.
/// Returns the `webhook-id` when the request was signed. Public for the fuzz targets.
pub fn verify(
    credentials: &Credentials<'_>,
    body: &[u8],
    secrets: &[String],
    now_secs: i64,
) -> Result<Option<String>, String> {
    if let Some(signatures) = credentials.webhook_signature {
        let id = credentials
            .webhook_id
            .ok_or("webhook-id header is missing")?;
        let timestamp = credentials
            .webhook_timestamp
            .ok_or("webhook-timestamp header is missing")?;
        let ts: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| "webhook-timestamp is not a number")?;
        // abs_diff: the distance from i64::MIN or MAX to now does not fit an i64.
        if now_secs.abs_diff(ts) > TIMESTAMP_TOLERANCE_SECS.unsigned_abs() {
            return Err("webhook-timestamp is more than 5 minutes away from now".into());
        }
        for secret in secrets {
            let expected = standard_webhooks_signature(secret, id, timestamp, body)
                .ok_or("stored secret is not base64")?;
            for candidate in signatures.split_whitespace() {
                if let Some(sig) = candidate.strip_prefix("v1,")
                    && bool::from(sig.as_bytes().ct_eq(expected.as_bytes()))
                {
                    return Ok(Some(id.to_string()));
                }
            }
        }
        return Err("webhook-signature does not match the source's secret".into());
    }
    if let Some(bearer) = credentials.bearer {
        if secrets
            .iter()
            .any(|s| bool::from(s.as_bytes().ct_eq(bearer.trim().as_bytes())))
        {
            return Ok(credentials.webhook_id.map(str::to_string));
        }
        return Err("the bearer secret does not match the source's secret".into());
    }
    Err("sign the request (webhook-id, webhook-timestamp, webhook-signature) or send Authorization: Bearer <secret>".into())
}
