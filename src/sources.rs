//! Custom sources: other systems that post events, each with a secret of its own. Creating
//! one shows its secret once (only the sealed form is kept); rotating keeps the previous
//! secret working for a grace period. Receiving their events is `ingest::custom`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::app::App;
use crate::store::{Source, SourceSecret, StoreError};
use crate::time::now_ms;

/// Standard Webhooks' prefix of a secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// How long a rotated-out secret keeps working.
pub const ROTATION_GRACE_MS: i64 = 24 * 60 * 60 * 1000;
const MAX_NAME_CHARS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("name must be 1 to {MAX_NAME_CHARS} characters")]
    InvalidName,
    #[error("no source {0} in this workspace")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The Standard Webhooks signature (without its `v1,`) of `id.timestamp.body` under a
/// `whsec_…` secret: base64 of HMAC-SHA256 keyed with the secret's bytes. `None` when the
/// secret is not base64. Custom sources verify with it; destinations sign with it.
pub fn standard_webhooks_signature(
    secret: &str,
    id: &str,
    timestamp: &str,
    body: &[u8],
) -> Option<String> {
    use hmac::{Hmac, Mac};
    let key = STANDARD
        .decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret))
        .ok()?;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(STANDARD.encode(mac.finalize().into_bytes()))
}

/// A new secret: `whsec_` and 32 random bytes in base64 (sources and destinations).
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("operating system random source");
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// Where a source's events are posted.
pub fn ingest_url(app: &App, id: &str) -> String {
    format!("{}/webhooks/custom/{id}", app.config.base_url)
}

/// When the rotated-out secret stops working, if one still does.
pub fn previous_secret_valid_until(source: &Source) -> Option<i64> {
    source.secrets.iter().filter_map(|s| s.valid_until).max()
}

/// Creates a source; returns it with its secret in plain text (the only time it is shown).
pub async fn create(app: &App, ws: &str, name: &str) -> Result<(Source, String), SourceError> {
    let name = name.trim().to_string();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(SourceError::InvalidName);
    }
    let secret = new_secret();
    let source = Source {
        id: uuid::Uuid::now_v7().simple().to_string(),
        workspace_id: ws.to_string(),
        name,
        secrets: vec![SourceSecret {
            secret: app.store.secrets().seal_str(&secret),
            valid_until: None,
        }],
        created_at: now_ms(),
        rotated_at: None,
    };
    app.store.put_source(source.clone()).await?;
    Ok((source, secret))
}

/// Gives a source a new secret; the current one keeps working for [`ROTATION_GRACE_MS`],
/// older ones end now. Returns the source and the new secret in plain text.
pub async fn rotate(app: &App, ws: &str, id: &str) -> Result<(Source, String), SourceError> {
    let secret = new_secret();
    let sealed = app.store.secrets().seal_str(&secret);
    let now = now_ms();
    let updated = app
        .store
        .update_source(ws, id, move |source| {
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
        .ok_or_else(|| SourceError::NotFound(id.to_string()))?;
    Ok((updated, secret))
}

pub async fn delete(app: &App, ws: &str, id: &str) -> Result<(), SourceError> {
    if app.store.delete_source(ws, id).await? {
        Ok(())
    } else {
        Err(SourceError::NotFound(id.to_string()))
    }
}
