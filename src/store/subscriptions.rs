//! The outcome of the last subscription sync per workspace (which event types reach us and
//! how). Tokens of registered webhooks live with the installation; this is the report.

use serde::{Deserialize, Serialize};

use super::db::Store;
use super::error::StoreError;
use super::schema::{SUBSCRIPTIONS, decode, encode};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SubscriptionState {
    /// Delivered through the manifest's own webhooks.
    Manifest,
    /// Registered through the API as this webhook.
    Registered {
        webhook_id: String,
    },
    /// Wanted but not registered yet.
    Pending,
    /// Registration failed; the reason is shown to admins.
    Failed(String),
    NotSubscribed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionReport {
    pub events: Vec<(String, SubscriptionState)>,
    /// The workspace's webhook count as Clockify reported it, when known.
    pub workspace_webhooks: Option<u32>,
    /// Unix ms of the sync.
    pub synced_at: i64,
    pub error: Option<String>,
}

#[derive(Serialize, Deserialize)]
enum ReportRecord {
    V1(SubscriptionReport),
}

/// Whether a value of `subscriptions` decodes.
pub(super) fn check_report_record(bytes: &[u8]) -> Result<(), StoreError> {
    decode::<ReportRecord>(bytes).map(drop)
}

impl Store {
    pub async fn subscription_report(
        &self,
        ws: &str,
    ) -> Result<Option<SubscriptionReport>, StoreError> {
        let ws = ws.to_string();
        self.read(move |rtx| {
            let table = rtx.open_table(SUBSCRIPTIONS)?;
            let found = table.get(ws.as_bytes())?;
            match found {
                None => Ok(None),
                Some(v) => match decode::<ReportRecord>(v.value())? {
                    ReportRecord::V1(report) => Ok(Some(report)),
                },
            }
        })
        .await
    }

    /// Stores the report, unless the workspace has no installation (any more).
    pub async fn put_subscription_report(
        &self,
        ws: &str,
        report: SubscriptionReport,
    ) -> Result<(), StoreError> {
        let ws = ws.to_string();
        self.write(move |wtx| {
            if !super::schema::installed(wtx, &ws)? {
                return Ok(());
            }
            let mut table = wtx.open_table(SUBSCRIPTIONS)?;
            table.insert(ws.as_bytes(), encode(&ReportRecord::V1(report)).as_slice())?;
            Ok(())
        })
        .await
    }
}
