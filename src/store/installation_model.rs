//! Installations as stored: one record per workspace, replaced on reinstall (with a bumped
//! generation), with the workspace's settings and the webhook tokens to verify deliveries.

use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::schema::{decode, encode, token_digest};
use super::secrets::{Sealed, SecretBox};

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
    pub fn new(path: String, token: &str, secrets: &SecretBox) -> WebhookToken {
        WebhookToken {
            path,
            token: secrets.seal_str(token),
            digest: token_digest(token),
            webhook_id: None,
        }
    }

    pub fn registered(
        path: String,
        token: &str,
        webhook_id: String,
        secrets: &SecretBox,
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

pub(super) fn decode_installation(bytes: &[u8]) -> Result<Installation, StoreError> {
    match decode::<InstallationRecord>(bytes)? {
        InstallationRecord::V1(installation) => Ok(installation),
    }
}

pub(super) fn encode_installation(installation: &Installation) -> Vec<u8> {
    encode(&InstallationRecordRef::V1(installation))
}

/// The same encoding as [`InstallationRecord`], from a borrow.
#[derive(Serialize)]
enum InstallationRecordRef<'a> {
    V1(&'a Installation),
}
