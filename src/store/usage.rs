//! How much of the file each workspace uses, and the file as a whole: for the operator's
//! `workspaces` and `stats` commands.

use std::path::Path;

use redb::{ReadTransaction, ReadableDatabase, ReadableTable, TableHandle};

use super::db::{Store, builder, check_schema};
use super::erase::{Owner, WORKSPACE_TABLES, table_of};
use super::error::StoreError;
use super::schema::{
    EVENTS_LABEL, FLOWS, TABLES, events_tables, millis_of_id, named_table, prefix_end,
    workspace_prefix,
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
        let own = *owner == Owner::OwnTable;
        if *owner != Owner::Prefix && !own {
            continue;
        }
        let name = table_of(*table, *owner, ws);
        let handle = match rtx.open_table(named_table(&name)) {
            Ok(handle) => handle,
            Err(redb::TableError::TableDoesNotExist(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        // An own table's rows are all the workspace's.
        let range = if own {
            handle.iter()?
        } else {
            handle.range::<&[u8]>(prefix.as_slice()..end.as_slice())?
        };
        let mut rows = 0u64;
        for entry in range {
            let (k, v) = entry?;
            usage.bytes += (k.value().len() + v.value().len()) as u64;
            rows += 1;
        }
        if own {
            usage.events = rows;
            if let Some(entry) = handle.last()? {
                if let Ok(id) = <[u8; 16]>::try_from(entry.0.value()) {
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
    // Adds what `name`'s table holds to `usage`; returns the table, if there is one.
    let add = |usage: &mut TableUsage, name: &str| match rtx.open_table(named_table(name)) {
        Ok(handle) => {
            let stats = handle.stats()?;
            usage.rows += handle.len()?;
            usage.pages += stats.leaf_pages() + stats.branch_pages();
            usage.stored_bytes += stats.stored_bytes();
            usage.metadata_bytes += stats.metadata_bytes();
            usage.fragmented_bytes += stats.fragmented_bytes();
            Ok(Some(handle))
        }
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(StoreError::from(e)),
    };
    let mut tables = Vec::new();
    for table in TABLES {
        let mut usage = TableUsage {
            name: table.name().to_string(),
            ..TableUsage::default()
        };
        add(&mut usage, table.name())?;
        tables.push(usage);
    }
    // The per-workspace events tables, as one.
    let mut events = TableUsage {
        name: EVENTS_LABEL.to_string(),
        ..TableUsage::default()
    };
    let mut oldest: Option<i64> = None;
    let bad = || StoreError::Decode("malformed event key".into());
    let names = rtx.list_tables()?.map(|t| t.name().to_string());
    for (name, _) in events_tables(names) {
        let Some(handle) = add(&mut events, &name)? else {
            continue;
        };
        if let Some(entry) = handle.first()? {
            let id = <[u8; 16]>::try_from(entry.0.value()).map_err(|_| bad())?;
            let at = millis_of_id(&id);
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
        }
    }
    tables.insert(3.min(tables.len()), events);
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
