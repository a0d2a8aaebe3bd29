//! The audit log: one record per change an admin (or an operator command) made, kept per
//! workspace in time order (`[ws][UUIDv7]`), read newest first with filters, deleted by
//! retention like flow runs and erased with the workspace.

use serde::{Deserialize, Serialize};

use super::db::Store;
use super::error::StoreError;
use super::schema::{
    AUDIT, decode, encode, id_floor_for_millis, prefix_end, remove_ids_before, with_suffix,
    workspace_prefix, workspaces_of,
};

/// One recorded change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// UUIDv7: the time it was recorded, and the cursor of the list.
    pub id: [u8; 16],
    /// Unix milliseconds.
    pub at: i64,
    /// The Clockify user id from the token (`None` for an operator command).
    pub user_id: Option<String>,
    /// The user's name as the entity cache knows it, else `None`.
    pub user_name: Option<String>,
    /// The request the change came with (`X-Request-Id`), or the operator command's name.
    pub request_id: String,
    /// What was done, as `resource.verb` (`flow.update`, `source.rotate`, …).
    pub action: String,
    /// The id of what was changed, when it has one.
    pub target: Option<String>,
    /// Short JSON summaries of the thing before and after the change (secrets never appear).
    pub before: Option<String>,
    pub after: Option<String>,
}

#[derive(Serialize, Deserialize)]
enum AuditRecord {
    V1(AuditEntry),
}

fn decode_entry(bytes: &[u8]) -> Result<AuditEntry, StoreError> {
    match decode::<AuditRecord>(bytes)? {
        AuditRecord::V1(entry) => Ok(entry),
    }
}

fn bad_key() -> StoreError {
    StoreError::Decode("malformed audit key".into())
}

/// Which entries a list returns; every filter is optional.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Exact action, or a prefix ending in `.` (`flow.` for every flow change).
    pub action: Option<String>,
    pub user_id: Option<String>,
    pub target: Option<String>,
    /// Unix ms, inclusive.
    pub since: Option<i64>,
    /// Unix ms, exclusive.
    pub until: Option<i64>,
    /// Only entries older than this one (the previous page's cursor).
    pub before: Option<[u8; 16]>,
    pub limit: usize,
}

impl AuditQuery {
    fn keeps(&self, entry: &AuditEntry) -> bool {
        let action_ok = match &self.action {
            None => true,
            Some(a) if a.ends_with('.') => entry.action.starts_with(a.as_str()),
            Some(a) => &entry.action == a,
        };
        action_ok
            && self
                .user_id
                .as_ref()
                .is_none_or(|u| entry.user_id.as_ref() == Some(u))
            && self
                .target
                .as_ref()
                .is_none_or(|t| entry.target.as_ref() == Some(t))
    }
}

/// A newest-first page and the cursor of the next one.
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub next_cursor: Option<[u8; 16]>,
}

/// Entries scanned at most per page, so a filter that matches nothing stays cheap.
const SCAN_LIMIT: usize = 10_000;

impl Store {
    /// Appends an entry to the workspace's log (nothing when the workspace is not installed:
    /// an erasure may have just removed it).
    pub async fn append_audit(&self, ws: &str, entry: AuditEntry) -> Result<(), StoreError> {
        let ws = ws.to_string();
        self.write(move |wtx| {
            if !super::schema::installed(wtx, &ws)? {
                return Ok(());
            }
            let key = with_suffix(&workspace_prefix(&ws), &entry.id);
            wtx.open_table(AUDIT)?
                .insert(key.as_slice(), encode(&AuditRecord::V1(entry)).as_slice())?;
            Ok(())
        })
        .await
    }

    /// Newest first, filtered; scans at most [`SCAN_LIMIT`] entries per page (the cursor
    /// then continues where the scan stopped).
    pub async fn audit(&self, ws: &str, query: AuditQuery) -> Result<AuditPage, StoreError> {
        let prefix = workspace_prefix(ws);
        self.read(move |rtx| {
            let table = rtx.open_table(AUDIT)?;
            let start = match query.since {
                Some(ms) => with_suffix(&prefix, &id_floor_for_millis(ms)),
                None => prefix.clone(),
            };
            let mut end = match query.until {
                Some(ms) => with_suffix(&prefix, &id_floor_for_millis(ms)),
                None => prefix_end(&prefix),
            };
            if let Some(before) = query.before {
                end = end.min(with_suffix(&prefix, &before));
            }
            let mut entries = Vec::new();
            let mut next_cursor = None;
            if start >= end {
                return Ok(AuditPage {
                    entries,
                    next_cursor,
                });
            }
            let limit = query.limit.max(1);
            let mut last_scanned = None;
            for (scanned, entry) in table
                .range::<&[u8]>(start.as_slice()..end.as_slice())?
                .rev()
                .enumerate()
            {
                if scanned >= SCAN_LIMIT {
                    next_cursor = last_scanned;
                    break;
                }
                let (_, v) = entry?;
                let entry = decode_entry(v.value())?;
                last_scanned = Some(entry.id);
                if query.keeps(&entry) {
                    if entries.len() == limit {
                        next_cursor = entries.last().map(|e: &AuditEntry| e.id);
                        break;
                    }
                    entries.push(entry);
                }
            }
            Ok(AuditPage {
                entries,
                next_cursor,
            })
        })
        .await
    }

    /// Workspaces with audit entries (for retention).
    pub async fn audit_workspaces(&self) -> Result<Vec<String>, StoreError> {
        self.read(|rtx| workspaces_of(&rtx.open_table(AUDIT)?, bad_key))
            .await
    }

    /// Deletes up to `max` entries recorded before `cutoff_ms`; returns how many.
    pub async fn delete_audit_before(
        &self,
        ws: &str,
        cutoff_ms: i64,
        max: usize,
    ) -> Result<usize, StoreError> {
        let prefix = workspace_prefix(ws);
        self.write(move |wtx| remove_ids_before(wtx, AUDIT, &prefix, cutoff_ms, max, bad_key))
            .await
    }
}
