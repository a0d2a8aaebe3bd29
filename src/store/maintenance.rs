//! Offline and side-by-side work on a data file: `check` (integrity, schema version, counts
//! per table) and `backup` (a consistent copy taken inside one read transaction).

use std::path::Path;

use redb::{Builder, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableHandle};

use super::db::{builder, check_schema};
use super::erase::{TableCounts, check_workspace_id, count_workspace};
use super::error::StoreError;
use super::schema::TABLES;

/// What `check` found in a data file.
#[derive(Debug)]
pub struct CheckReport {
    pub schema_version: u32,
    /// `None` when the server holds the file: the full integrity check needs exclusive access,
    /// so only a full read of every table was done.
    pub integrity_verified: Option<bool>,
    pub tables: Vec<(String, u64)>,
    /// With a workspace asked for: its rows per table.
    pub workspace: Option<TableCounts>,
    pub file_size: u64,
}

/// Opens the file without the encryption key and checks it: integrity (when no server holds
/// it), schema version, and a full read of every table; with `workspace`, also counts that
/// workspace's rows per table.
pub fn check(path: &Path, workspace: Option<&str>) -> Result<CheckReport, StoreError> {
    if let Some(ws) = workspace {
        check_workspace_id(ws)?;
    }
    if !path.exists() {
        return Err(StoreError::Storage(format!(
            "{} does not exist",
            path.display()
        )));
    }
    let file_size = std::fs::metadata(path)?.len();
    match builder().open(path) {
        Ok(mut db) => {
            let integrity = db.check_integrity()?;
            let (schema_version, tables) = scan(&db)?;
            Ok(CheckReport {
                schema_version,
                integrity_verified: Some(integrity),
                tables,
                workspace: workspace_counts(&db, workspace)?,
                file_size,
            })
        }
        Err(redb::DatabaseError::DatabaseAlreadyOpen)
        | Err(redb::DatabaseError::LockProtocolMismatch) => {
            let db = builder().open_read_only(path)?;
            let (schema_version, tables) = scan(&db)?;
            Ok(CheckReport {
                schema_version,
                integrity_verified: None,
                tables,
                workspace: workspace_counts(&db, workspace)?,
                file_size,
            })
        }
        Err(other) => Err(other.into()),
    }
}

fn workspace_counts(
    db: &impl ReadableDatabase,
    workspace: Option<&str>,
) -> Result<Option<TableCounts>, StoreError> {
    workspace
        .map(|ws| count_workspace(&db.begin_read()?, ws))
        .transpose()
}

/// Reads every entry of every table (so a damaged page surfaces) and checks the schema version.
fn scan(db: &impl ReadableDatabase) -> Result<(u32, Vec<(String, u64)>), StoreError> {
    let version = check_schema(db)?;
    let rtx = db.begin_read()?;
    let mut counts = Vec::new();
    for table in TABLES {
        let handle = match rtx.open_table(*table) {
            Ok(handle) => handle,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                counts.push((table.name().to_string(), 0));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut n = 0u64;
        for entry in handle.iter()? {
            let (k, v) = entry?;
            std::hint::black_box((k.value().len(), v.value().len()));
            n += 1;
        }
        debug_assert_eq!(n, handle.len()?);
        counts.push((table.name().to_string(), n));
    }
    Ok((version, counts))
}

/// Writes a consistent copy of the data file to `dest`: every table is copied inside one
/// read transaction, committed durably to a temporary file, then renamed into place. Works
/// while a server holds the file (it reads alongside the writer) and when none does.
pub fn backup(src: &Path, dest: &Path) -> Result<u64, StoreError> {
    if !src.exists() {
        return Err(StoreError::Storage(format!(
            "{} does not exist",
            src.display()
        )));
    }
    let tmp = dest.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    let copied = match builder().open_read_only(src) {
        Ok(db) => copy_tables(&db, &tmp)?,
        // A file left by a crash needs a repair, which only a writer may do; that is possible
        // exactly when no server holds it.
        Err(redb::DatabaseError::RepairAborted) | Err(redb::DatabaseError::Storage(_)) => {
            let db = builder().open(src)?;
            copy_tables(&db, &tmp)?
        }
        Err(other) => return Err(other.into()),
    };
    std::fs::rename(&tmp, dest)?;
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(copied)
}

fn copy_tables(src: &impl ReadableDatabase, tmp: &Path) -> Result<u64, StoreError> {
    let rtx = src.begin_read()?;
    let dest = Builder::new().create(tmp)?;
    let mut wtx = dest.begin_write()?;
    wtx.set_durability(redb::Durability::Immediate)?;
    let mut copied = 0u64;
    for table in TABLES {
        let source = match rtx.open_table(*table) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut target = wtx.open_table(*table)?;
        for entry in source.iter()? {
            let (k, v) = entry?;
            target.insert(k.value(), v.value())?;
            copied += 1;
        }
    }
    wtx.commit()?;
    drop(dest);
    Ok(copied)
}
