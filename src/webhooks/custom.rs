//! Custom sources: events from other systems, authenticated per source with a secret,
//! either as a Standard Webhooks signature or as `Authorization: Bearer <secret>`.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{redact_headers, reject, store_event};
use crate::auth::{Admin, User};
use crate::error::ApiError;
use crate::http::{parse_json, read_body};
use crate::server::App;
use crate::store::{InstallationStatus, NewEvent, Source, SourceSecret};

/// Standard Webhooks: signatures older or newer than this are refused.
const TIMESTAMP_TOLERANCE_SECS: i64 = 5 * 60;
/// How long a rotated-out secret keeps working.
const ROTATION_GRACE_MS: i64 = 24 * 60 * 60 * 1000;
const SECRET_PREFIX: &str = "whsec_";
const MAX_EVENT_TYPE_LEN: usize = 100;

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("operating system random source");
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

fn ingest_url(app: &App, id: &str) -> String {
    format!("{}/webhooks/custom/{id}", app.config.base_url)
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn describe(app: &App, source: &Source) -> Value {
    let previous_until = source.secrets.iter().filter_map(|s| s.valid_until).max();
    json!({
        "id": source.id,
        "name": source.name,
        "ingestUrl": ingest_url(app, &source.id),
        "createdAt": rfc3339(source.created_at),
        "rotatedAt": source.rotated_at.map(rfc3339),
        "previousSecretValidUntil": previous_until.map(rfc3339),
    })
}

#[derive(Deserialize)]
pub struct CreateSource {
    name: String,
}

pub async fn create(
    State(app): State<App>,
    Admin(user): Admin,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let bytes = read_body(&headers, body, app.config.api_body_limit).await?;
    let request: CreateSource = parse_json(&bytes)?;
    let name = request.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::BadRequest(
            "name must be 1 to 100 characters".into(),
        ));
    }
    let secret = new_secret();
    let source = Source {
        id: uuid::Uuid::now_v7().simple().to_string(),
        workspace_id: user.workspace_id.clone(),
        name,
        secrets: vec![SourceSecret {
            secret: app.store.secrets().seal_str(&secret),
            valid_until: None,
        }],
        created_at: now_ms(),
        rotated_at: None,
    };
    app.store.put_source(source.clone()).await?;
    let mut body = describe(&app, &source);
    // Shown once: only the sealed form is kept.
    body["secret"] = json!(secret);
    Ok((StatusCode::CREATED, Json(body)))
}

pub async fn list(State(app): State<App>, user: User) -> Result<Json<Value>, ApiError> {
    let sources = app.store.sources(&user.workspace_id).await?;
    let items: Vec<Value> = sources.iter().map(|s| describe(&app, s)).collect();
    Ok(Json(json!({"sources": items})))
}

pub async fn delete(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if app.store.delete_source(&user.workspace_id, &id).await? {
        Ok(Json(json!({"deleted": true, "id": id})))
    } else {
        Err(ApiError::NotFound(format!(
            "no source {id} in this workspace"
        )))
    }
}

pub async fn rotate(
    State(app): State<App>,
    Admin(user): Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let secret = new_secret();
    let sealed = app.store.secrets().seal_str(&secret);
    let now = now_ms();
    let updated = app
        .store
        .update_source(&user.workspace_id, &id, move |source| {
            // The current secret keeps working for the grace period; older ones end now.
            let mut secrets = vec![SourceSecret {
                secret: sealed,
                valid_until: None,
            }];
            if let Some(current) = source.secrets.iter().find(|s| s.valid_until.is_none()) {
                secrets.push(SourceSecret {
                    secret: current.secret.clone(),
                    valid_until: Some(now + ROTATION_GRACE_MS),
                });
            }
            source.secrets = secrets;
            source.rotated_at = Some(now);
        })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no source {id} in this workspace")))?;
    let mut body = describe(&app, &updated);
    body["secret"] = json!(secret);
    Ok(Json(body))
}

/// `POST /webhooks/custom/{source}`.
pub async fn receive(
    State(app): State<App>,
    Path(source_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<super::Received>, ApiError> {
    const SOURCE: &str = "custom";
    let source = app.store.source(&source_id).await?.ok_or_else(|| {
        reject(
            SOURCE,
            "unknown_source",
            ApiError::NotFound(format!("no source {source_id}")),
        )
    })?;
    let bytes = read_body(&headers, body, app.config.webhook_body_limit)
        .await
        .map_err(|e| reject(SOURCE, "body", e))?;
    let now = now_ms();
    let secrets: Vec<String> = source
        .secrets
        .iter()
        .filter(|s| s.valid_until.is_none_or(|until| until > now))
        .map(|s| app.store.secrets().open_str(&s.secret))
        .collect::<Result<_, _>>()?;
    let webhook_id = verify_request(&headers, &bytes, &secrets, now / 1000)
        .map_err(|e| reject(SOURCE, "invalid_signature", ApiError::Unauthorized(e)))?;
    let installation = app.store.installation(&source.workspace_id).await?;
    if installation.is_none_or(|i| i.status != InstallationStatus::Active) {
        return Err(reject(
            SOURCE,
            "inactive",
            ApiError::Forbidden("the add-on is not active in this source's workspace".into()),
        ));
    }
    let payload: Value = parse_json(&bytes).map_err(|e| reject(SOURCE, "invalid_json", e))?;
    let event_type = event_type_of(&payload, &headers)
        .map_err(|e| reject(SOURCE, "invalid_event_type", ApiError::BadRequest(e)))?;
    // Standard Webhooks: the message id identifies redeliveries; otherwise the bytes do.
    let dedupe_key: [u8; 32] = match &webhook_id {
        Some(id) => Sha256::digest(format!("webhook-id:{id}").as_bytes()).into(),
        None => Sha256::digest(&bytes).into(),
    };
    store_event(
        &app,
        NewEvent {
            workspace_id: source.workspace_id.clone(),
            event_type,
            source: source.name.clone(),
            source_id: Some(source.id.clone()),
            headers: redact_headers(&headers),
            body: bytes.to_vec(),
            dedupe_key,
        },
    )
    .await
}

/// `type` / `eventType` in the body, else `X-Event-Type`, else `CUSTOM`.
fn event_type_of(payload: &Value, headers: &HeaderMap) -> Result<String, String> {
    let named = payload
        .get("type")
        .or_else(|| payload.get("eventType"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            headers
                .get("x-event-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        });
    let name = named
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    match name {
        None => Ok("CUSTOM".to_string()),
        Some(n) if n.len() > MAX_EVENT_TYPE_LEN || n.chars().any(char::is_control) => Err(format!(
            "the event type must be at most {MAX_EVENT_TYPE_LEN} printable characters"
        )),
        Some(n) => Ok(n),
    }
}

/// Verifies a Standard Webhooks signature or a bearer secret against any valid secret.
/// Returns the `webhook-id` when the request was signed.
fn verify_request(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[String],
    now_secs: i64,
) -> Result<Option<String>, String> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(signatures) = get("webhook-signature") {
        let id = get("webhook-id").ok_or("webhook-id header is missing")?;
        let timestamp = get("webhook-timestamp").ok_or("webhook-timestamp header is missing")?;
        let ts: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| "webhook-timestamp is not a number")?;
        if (now_secs - ts).abs() > TIMESTAMP_TOLERANCE_SECS {
            return Err("webhook-timestamp is more than 5 minutes away from now".into());
        }
        let mut signed = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
        signed.extend_from_slice(id.as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(timestamp.as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(body);
        for secret in secrets {
            let key = STANDARD
                .decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret))
                .map_err(|_| "stored secret is not base64")?;
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
            mac.update(&signed);
            let expected = STANDARD.encode(mac.finalize().into_bytes());
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
    if let Some(bearer) =
        get(header::AUTHORIZATION.as_str()).and_then(|v| v.strip_prefix("Bearer "))
    {
        if secrets
            .iter()
            .any(|s| bool::from(s.as_bytes().ct_eq(bearer.trim().as_bytes())))
        {
            return Ok(get("webhook-id").map(str::to_string));
        }
        return Err("the bearer secret does not match the source's secret".into());
    }
    Err("sign the request (webhook-id, webhook-timestamp, webhook-signature) or send Authorization: Bearer <secret>".into())
}
