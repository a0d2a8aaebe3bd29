//! How much of the file each workspace uses, and the file as a whole: for the operator's
//! `workspaces` and `stats` commands.

use std::path::Path;

use redb::{ReadTransaction, ReadableDatabase, TableHandle};

use super::db::{Store, builder, check_schema};
use super::erase::{Owner, WORKSPACE_TABLES};
use super::error::StoreError;
use super::schema::{
    EVENTS, FLOWS, TABLES, millis_of_id, prefix_end, workspace_prefix, workspaces_of,
};

/// One workspace's share of the file.
#[derive(Clone, Debug, Default)]
pub struct WorkspaceUsage {
    /// Bytes of its keys and values in the per-workspace tables keyed by workspace.
    pub bytes: u64,
    pub events: u64,
    pub last_event_at: Option<i64>,
    pub flows: u64,
}

fn usage(rtx: &ReadTransaction, ws: &str) -> Result<WorkspaceUsage, StoreError> {
    let prefix = workspace_prefix(ws);
    let end = prefix_end(&prefix);
    let mut usage = WorkspaceUsage::default();
    for (table, owner) in WORKSPACE_TABLES {
        if *owner != Owner::Prefix {
            continue;
        }
        let handle = match rtx.open_table(*table) {
            Ok(handle) => handle,
            Err(redb::TableError::TableDoesNotExist(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut rows = 0u64;
        for entry in handle.range::<&[u8]>(prefix.as_slice()..end.as_slice())? {
            let (k, v) = entry?;
            usage.bytes += (k.value().len() + v.value().len()) as u64;
            rows += 1;
        }
        if table.name() == EVENTS.name() {
            usage.events = rows;
            let newest = handle
                .range::<&[u8]>(prefix.as_slice()..end.as_slice())?
                .next_back();
            if let Some(entry) = newest {
                let key = entry?.0.value().to_vec();
                if let Ok(id) = <[u8; 16]>::try_from(&key[prefix.len()..]) {
                    usage.last_event_at = Some(millis_of_id(&id));
                }
            }
        } else if table.name() == FLOWS.name() {
            usage.flows = rows;
        }
    }
    Ok(usage)
}

impl Store {
    /// What `ws` stores (a full read of its rows: for operator commands, not requests).
    pub async fn workspace_usage(&self, ws: &str) -> Result<WorkspaceUsage, StoreError> {
        let ws = ws.to_string();
        self.read(move |rtx| usage(rtx, &ws)).await
    }
}

/// The whole file: rows per table, page use (when no server holds the file) and the oldest
/// event.
#[derive(Debug, Default)]
pub struct FileStats {
    pub file_size: u64,
    pub schema_version: u32,
    pub tables: Vec<TableUsage>,
    /// `None` while a server holds the file (page statistics need exclusive access).
    pub pages: Option<PageStats>,
    pub oldest_event_at: Option<i64>,
}

#[derive(Debug, Default)]
pub struct PageStats {
    pub page_size: u64,
    pub allocated_pages: u64,
    pub leaf_pages: u64,
    pub branch_pages: u64,
    pub stored_bytes: u64,
    pub metadata_bytes: u64,
    pub fragmented_bytes: u64,
}

/// One table's rows and what they cost on disk.
#[derive(Debug, Default, Clone)]
pub struct TableUsage {
    pub name: String,
    pub rows: u64,
    /// Leaf and branch pages of its tree.
    pub pages: u64,
    /// Bytes of its keys and values.
    pub stored_bytes: u64,
    /// Bytes of page headers and offsets.
    pub metadata_bytes: u64,
    /// Unused bytes inside its pages.
    pub fragmented_bytes: u64,
}

/// Rows per table, and the oldest event's time.
type Counted = (Vec<TableUsage>, Option<i64>);

fn table_counts_and_oldest(db: &impl ReadableDatabase) -> Result<Counted, StoreError> {
    use redb::ReadableTableMetadata;
    let rtx = db.begin_read()?;
    let mut tables = Vec::new();
    for table in TABLES {
        let mut usage = TableUsage {
            name: table.name().to_string(),
            ..TableUsage::default()
        };
        match rtx.open_table(*table) {
            Ok(handle) => {
                let stats = handle.stats()?;
                usage.rows = handle.len()?;
                usage.pages = stats.leaf_pages() + stats.branch_pages();
                usage.stored_bytes = stats.stored_bytes();
                usage.metadata_bytes = stats.metadata_bytes();
                usage.fragmented_bytes = stats.fragmented_bytes();
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
        tables.push(usage);
    }
    let events = rtx.open_table(EVENTS)?;
    let mut oldest: Option<i64> = None;
    let bad = || StoreError::Decode("malformed event key".into());
    for ws in workspaces_of(&events, bad)? {
        let prefix = workspace_prefix(&ws);
        let end = prefix_end(&prefix);
        if let Some(entry) = events
            .range::<&[u8]>(prefix.as_slice()..end.as_slice())?
            .next()
        {
            let key = entry?.0.value().to_vec();
            let id = <[u8; 16]>::try_from(&key[prefix.len()..]).map_err(|_| bad())?;
            let at = millis_of_id(&id);
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
        }
    }
    Ok((tables, oldest))
}

/// Statistics of the data file at `path`.
pub fn file_stats(path: &Path) -> Result<FileStats, StoreError> {
    if !path.exists() {
        return Err(StoreError::Storage(format!(
            "{} does not exist",
            path.display()
        )));
    }
    let file_size = std::fs::metadata(path)?.len();
    match builder().open(path) {
        Ok(db) => {
            let schema_version = check_schema(&db)?;
            let (tables, oldest_event_at) = table_counts_and_oldest(&db)?;
            let wtx = db.begin_write()?;
            let stats = wtx.stats()?;
            wtx.abort()?;
            Ok(FileStats {
                file_size,
                schema_version,
                tables,
                pages: Some(PageStats {
                    page_size: stats.page_size() as u64,
                    allocated_pages: stats.allocated_pages(),
                    leaf_pages: stats.leaf_pages(),
                    branch_pages: stats.branch_pages(),
                    stored_bytes: stats.stored_bytes(),
                    metadata_bytes: stats.metadata_bytes(),
                    fragmented_bytes: stats.fragmented_bytes(),
                }),
                oldest_event_at,
            })
        }
        Err(redb::DatabaseError::DatabaseAlreadyOpen)
        | Err(redb::DatabaseError::LockProtocolMismatch) => {
            let db = builder().open_read_only(path)?;
            let schema_version = check_schema(&db)?;
            let (tables, oldest_event_at) = table_counts_and_oldest(&db)?;
            Ok(FileStats {
                file_size,
                schema_version,
                tables,
                pages: None,
                oldest_event_at,
            })
        }
        Err(other) => Err(other.into()),
    }
}
