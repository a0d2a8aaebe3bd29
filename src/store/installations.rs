//! Installations: one record per workspace, replaced on reinstall (with a bumped generation).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::{INSTALLATIONS, Sealed, Store, StoreError, WEBHOOK_TOKENS, decode, encode};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstallationStatus {
    Active,
    Inactive,
    Deleted,
}

impl InstallationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InstallationStatus::Active => "ACTIVE",
            InstallationStatus::Inactive => "INACTIVE",
            InstallationStatus::Deleted => "DELETED",
        }
    }
}

/// A structured-settings value as Clockify sends it (PLATFORM.md §2.5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SettingValue {
    Text(String),
    Number(f64),
    Bool(bool),
    List(Vec<String>),
}

impl SettingValue {
    pub fn from_json(value: &serde_json::Value) -> Option<SettingValue> {
        match value {
            serde_json::Value::String(s) => Some(SettingValue::Text(s.clone())),
            serde_json::Value::Number(n) => n.as_f64().map(SettingValue::Number),
            serde_json::Value::Bool(b) => Some(SettingValue::Bool(*b)),
            serde_json::Value::Array(items) => Some(SettingValue::List(
                items
                    .iter()
                    .map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect(),
            )),
            _ => None,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            SettingValue::Text(s) => serde_json::Value::from(s.clone()),
            SettingValue::Number(n) => serde_json::Value::from(*n),
            SettingValue::Bool(b) => serde_json::Value::from(*b),
            SettingValue::List(items) => serde_json::Value::from(items.clone()),
        }
    }

    fn as_number(&self) -> Option<f64> {
        match self {
            SettingValue::Number(n) => Some(*n),
            SettingValue::Text(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    fn as_bool(&self) -> Option<bool> {
        match self {
            SettingValue::Bool(b) => Some(*b),
            SettingValue::Text(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

/// The add-on's structured settings for one workspace, as last reported by SETTINGS_UPDATED.
/// Ids are those of `manifest.json`; unknown ids are kept so nothing is lost.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceSettings {
    pub values: Vec<(String, SettingValue)>,
}

impl WorkspaceSettings {
    pub fn get(&self, id: &str) -> Option<&SettingValue> {
        self.values.iter().find(|(k, _)| k == id).map(|(_, v)| v)
    }

    /// A whole number of days/requests; negative or fractional values are rejected.
    pub fn whole_number(&self, id: &str) -> Option<u32> {
        let n = self.get(id)?.as_number()?;
        (n >= 0.0 && n.fract() == 0.0 && n <= u32::MAX as f64).then_some(n as u32)
    }

    pub fn flag(&self, id: &str) -> Option<bool> {
        self.get(id)?.as_bool()
    }

    pub fn list(&self, id: &str) -> Option<&[String]> {
        match self.get(id)? {
            SettingValue::List(items) => Some(items),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Installation {
    pub workspace_id: String,
    pub addon_id: String,
    /// The installation token (sealed); erased when the installation is DELETED.
    pub auth_token: Option<Sealed>,
    pub api_url: String,
    pub backend_url: Option<String>,
    pub reports_url: Option<String>,
    pub locations_url: Option<String>,
    pub screenshots_url: Option<String>,
    pub pto_url: Option<String>,
    pub as_user: Option<String>,
    pub addon_user_id: Option<String>,
    pub status: InstallationStatus,
    pub settings: WorkspaceSettings,
    /// Webhook tokens from the install payload, keyed by the path they were issued for.
    pub webhook_tokens: Vec<WebhookToken>,
    /// Unix milliseconds.
    pub installed_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
    /// Bumped on every (re)install, so work for an older installation can tell it is stale.
    pub generation: u64,
}

/// A token Clockify sends in `clockify-signature` for one webhook path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WebhookToken {
    pub path: String,
    pub token: Sealed,
    /// SHA-256 of the token: finds the workspace of an opaque (non-JWT) signature.
    pub digest: [u8; 32],
    /// Set for webhooks the add-on registered through the API (None: from the install payload).
    pub webhook_id: Option<String>,
}

impl WebhookToken {
    pub fn new(path: String, token: &str, secrets: &super::SecretBox) -> WebhookToken {
        WebhookToken {
            path,
            token: secrets.seal_str(token),
            digest: super::token_digest(token),
            webhook_id: None,
        }
    }

    pub fn registered(
        path: String,
        token: &str,
        webhook_id: String,
        secrets: &super::SecretBox,
    ) -> WebhookToken {
        WebhookToken {
            webhook_id: Some(webhook_id),
            ..WebhookToken::new(path, token, secrets)
        }
    }
}

/// On-disk form; the variant is the record version.
#[derive(Serialize, Deserialize)]
enum InstallationRecord {
    V1(Installation),
}

fn decode_installation(bytes: &[u8]) -> Result<Installation, StoreError> {
    match decode::<InstallationRecord>(bytes)? {
        InstallationRecord::V1(installation) => Ok(installation),
    }
}

/// In-memory mirror of the installations table and the webhook-token index.
#[derive(Default)]
pub(crate) struct InstallationCache {
    /// Shared, not copied, per request: every delivery and API call looks one up.
    installations: RwLock<HashMap<String, Arc<Installation>>>,
    tokens: RwLock<HashMap<[u8; 32], String>>,
}

impl InstallationCache {
    pub(crate) fn load(db: &Database) -> Result<InstallationCache, StoreError> {
        let cache = InstallationCache::default();
        let rtx = db.begin_read()?;
        let table = rtx.open_table(INSTALLATIONS)?;
        for entry in table.iter()? {
            let (_, v) = entry?;
            cache.put(decode_installation(v.value())?);
        }
        Ok(cache)
    }

    fn put(&self, installation: Installation) {
        let ws = installation.workspace_id.clone();
        let mut tokens = self.tokens.write().expect("token cache lock");
        tokens.retain(|_, owner| *owner != ws);
        for token in &installation.webhook_tokens {
            tokens.insert(token.digest, ws.clone());
        }
        drop(tokens);
        self.installations
            .write()
            .expect("installation cache lock")
            .insert(ws, Arc::new(installation));
    }

    fn remove(&self, ws: &str) {
        self.tokens
            .write()
            .expect("token cache lock")
            .retain(|_, owner| owner != ws);
        self.installations
            .write()
            .expect("installation cache lock")
            .remove(ws);
    }
}

impl Store {
    pub async fn installation(
        &self,
        workspace_id: &str,
    ) -> Result<Option<Arc<Installation>>, StoreError> {
        Ok(self
            .cache
            .installations
            .read()
            .expect("installation cache lock")
            .get(workspace_id)
            .cloned())
    }

    pub async fn installations(&self) -> Result<Vec<Installation>, StoreError> {
        let mut all: Vec<Installation> = self
            .cache
            .installations
            .read()
            .expect("installation cache lock")
            .values()
            .map(|installation| Installation::clone(installation))
            .collect();
        all.sort_by(|a, b| a.workspace_id.cmp(&b.workspace_id));
        Ok(all)
    }

    /// Atomically reads the workspace's installation, lets `decide` compute the new one (or
    /// leave it, with `None`), and commits. `decide` runs on the writer thread: keep it short.
    /// Its own error leaves the file unchanged.
    pub async fn update_installation<R, E, F>(
        &self,
        workspace_id: &str,
        decide: F,
    ) -> Result<Result<R, E>, StoreError>
    where
        R: Send + 'static,
        E: Send + 'static,
        F: FnOnce(Option<Installation>) -> Result<(Option<Installation>, R), E> + Send + 'static,
    {
        let workspace_id = workspace_id.to_string();
        let cache = self.cache.clone();
        let (result, written) = self
            .write_then(
                move |wtx| {
                    let mut table = wtx.open_table(INSTALLATIONS)?;
                    let current = table
                        .get(workspace_id.as_bytes())?
                        .map(|v| decode_installation(v.value()))
                        .transpose()?;
                    let previous_digests: Vec<[u8; 32]> = current
                        .iter()
                        .flat_map(|i| i.webhook_tokens.iter().map(|t| t.digest))
                        .collect();
                    match decide(current) {
                        Err(e) => Ok((Err(e), None)),
                        Ok((None, result)) => Ok((Ok(result), None)),
                        Ok((Some(next), result)) => {
                            let bytes = encode(&InstallationRecord::V1(next.clone()));
                            table.insert(workspace_id.as_bytes(), bytes.as_slice())?;
                            // Keep the digest → workspace index in step with the stored tokens.
                            let mut index = wtx.open_table(WEBHOOK_TOKENS)?;
                            for old in previous_digests {
                                index.remove(old.as_slice())?;
                            }
                            for token in &next.webhook_tokens {
                                index.insert(token.digest.as_slice(), workspace_id.as_bytes())?;
                            }
                            Ok((Ok(result), Some(next)))
                        }
                    }
                },
                move |(_, written): &(Result<R, E>, Option<Installation>)| {
                    if let Some(next) = written {
                        cache.put(next.clone());
                    }
                },
            )
            .await?;
        drop(written);
        Ok(result)
    }

    /// The workspace a webhook token was issued for, found by the token's SHA-256
    /// ([`super::token_digest`]).
    pub async fn workspace_of_webhook_token(
        &self,
        digest: &[u8; 32],
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .cache
            .tokens
            .read()
            .expect("token cache lock")
            .get(digest)
            .cloned())
    }

    /// Removes an installation record (retention purge of a long-DELETED workspace).
    pub async fn remove_installation(&self, workspace_id: &str) -> Result<(), StoreError> {
        let ws = workspace_id.to_string();
        let cache = self.cache.clone();
        let removed_ws = ws.clone();
        self.write_then(
            move |wtx| {
                let mut table = wtx.open_table(INSTALLATIONS)?;
                let removed = table.remove(ws.as_bytes())?.map(|v| v.value().to_vec());
                if let Some(bytes) = removed {
                    let installation = decode_installation(&bytes)?;
                    let mut index = wtx.open_table(WEBHOOK_TOKENS)?;
                    for token in installation.webhook_tokens {
                        index.remove(token.digest.as_slice())?;
                    }
                }
                Ok(())
            },
            move |_| cache.remove(&removed_ws),
        )
        .await
    }
}
