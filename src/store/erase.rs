//! Everything a workspace owns, table by table: counted for `check --workspace`, and erased
//! in bounded batches by the purge of a long-uninstalled workspace and by `erase-workspace`
//! (through the running server or on the file directly; both run [`erase_batch`]).

use redb::{ReadTransaction, ReadableDatabase, ReadableTable, TableHandle, WriteTransaction};

use super::db::{Store, open_unheld};
use super::error::StoreError;
use super::installation_model::{InstallationStatus, decode_installation, encode_installation};
use super::recent::RecentRow;
use super::schema::{
    AUDIT, BOOTSTRAP, DELIVERIES, DELIVERIES_BY_DESTINATION, DELIVERY_QUEUE, DESTINATIONS,
    ENTITIES, ENTITY_EVENTS, EVENT_DEDUPE, EVENTS_BY_TYPE, EXECUTIONS, FLOW_PAUSES, FLOW_RUN_QUEUE,
    FLOW_RUN_STARTS, FLOW_RUNS, FLOW_RUNS_BY_EVENT, FLOW_RUNS_BY_FLOW, FLOW_STATS, FLOWS,
    INSTALLATIONS, RECENT_EVENTS, SOURCES, SOURCES_BY_WORKSPACE, SUBSCRIPTIONS, Table,
    WEBHOOK_TOKENS, decode, delete_if_empty, events_table_name, named_table, prefix_end,
    workspace_prefix,
};
use super::sources::source_workspace;
use super::writer::begin_durable;

/// How a table's rows name the workspace they belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Keys start with `[len][workspace]` ([`workspace_prefix`]).
    Prefix,
    /// The key is the workspace id.
    Key,
    /// The value is the workspace id.
    Value,
    /// A source record, which names its workspace.
    Source,
    /// The key is the id of a queued run (`flow_run_starts`): the workspace of that run.
    QueuedRun,
    /// A row of the log of recent events, which names its workspace.
    Recent,
    /// Every row of the workspace's own table (its events: `schema::events_table_name`); the
    /// table listed stands for all of them (its name labels the counts).
    OwnTable,
}

/// The label of the events tables in [`WORKSPACE_TABLES`] and the counts.
const EVENTS: Table = redb::TableDefinition::new(super::schema::EVENTS_LABEL);

/// The table holding `ws`'s rows of the [`WORKSPACE_TABLES`] entry `table`.
pub(crate) fn table_of(table: Table, owner: Owner, ws: &str) -> String {
    match owner {
        Owner::OwnTable => events_table_name(ws),
        _ => table.name().to_string(),
    }
}

/// Every per-workspace table, in the order erasure empties them: what refers to other rows
/// first, the installation (whose absence ends every later write) last.
pub(crate) const WORKSPACE_TABLES: &[(Table, Owner)] = &[
    (FLOW_RUN_STARTS, Owner::QueuedRun),
    (FLOW_RUN_QUEUE, Owner::Value),
    (DELIVERY_QUEUE, Owner::Value),
    (DELIVERIES_BY_DESTINATION, Owner::Prefix),
    (DELIVERIES, Owner::Prefix),
    (DESTINATIONS, Owner::Prefix),
    (FLOW_RUNS_BY_EVENT, Owner::Prefix),
    (FLOW_RUNS_BY_FLOW, Owner::Prefix),
    (FLOW_RUNS, Owner::Prefix),
    (FLOW_STATS, Owner::Prefix),
    (FLOWS, Owner::Prefix),
    (EVENTS_BY_TYPE, Owner::Prefix),
    (ENTITY_EVENTS, Owner::Prefix),
    (RECENT_EVENTS, Owner::Recent),
    (EVENT_DEDUPE, Owner::Prefix),
    (EVENTS, Owner::OwnTable),
    (SOURCES, Owner::Source),
    (SOURCES_BY_WORKSPACE, Owner::Prefix),
    (SUBSCRIPTIONS, Owner::Key),
    (ENTITIES, Owner::Prefix),
    (BOOTSTRAP, Owner::Key),
    (EXECUTIONS, Owner::Prefix),
    (AUDIT, Owner::Prefix),
    (FLOW_PAUSES, Owner::Key),
    (WEBHOOK_TOKENS, Owner::Value),
    (INSTALLATIONS, Owner::Key),
];

/// Rows per table, in [`WORKSPACE_TABLES`] order.
pub type TableCounts = Vec<(String, u64)>;

fn zero_counts() -> TableCounts {
    WORKSPACE_TABLES
        .iter()
        .map(|(table, _)| (table.name().to_string(), 0))
        .collect()
}

/// A workspace id as a key part must be 1 to 255 bytes (see `keys::push_part`).
pub fn check_workspace_id(ws: &str) -> Result<(), StoreError> {
    if ws.is_empty() || ws.len() > 255 || ws.chars().any(char::is_control) {
        return Err(StoreError::Storage(format!(
            "{ws:?} is not a workspace id (1 to 255 printable bytes)"
        )));
    }
    Ok(())
}

/// The keys of up to `max` rows of `ws` in `table`; `queued` are the ids of the workspace's
/// queued runs.
fn owned_keys(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    owner: Owner,
    ws: &str,
    max: usize,
    queued: &[Vec<u8>],
) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut keys = Vec::new();
    match owner {
        Owner::QueuedRun => {
            for id in queued {
                if keys.len() >= max {
                    break;
                }
                if table.get(id.as_slice())?.is_some() {
                    keys.push(id.clone());
                }
            }
        }
        Owner::Prefix => {
            let prefix = workspace_prefix(ws);
            let end = prefix_end(&prefix);
            for entry in table.range::<&[u8]>(prefix.as_slice()..end.as_slice())? {
                if keys.len() >= max {
                    break;
                }
                keys.push(entry?.0.value().to_vec());
            }
        }
        Owner::OwnTable => {
            for entry in table.iter()?.take(max) {
                keys.push(entry?.0.value().to_vec());
            }
        }
        Owner::Key => {
            if max > 0 && table.get(ws.as_bytes())?.is_some() {
                keys.push(ws.as_bytes().to_vec());
            }
        }
        // Small tables (one row per source, queued run, webhook token or event not yet in
        // the dedupe and entity tables): a full scan.
        Owner::Value | Owner::Source | Owner::Recent => {
            for entry in table.iter()? {
                if keys.len() >= max {
                    break;
                }
                let (k, v) = entry?;
                let belongs = match owner {
                    Owner::Value => v.value() == ws.as_bytes(),
                    Owner::Recent => decode::<RecentRow>(v.value())?.workspace_id == ws,
                    _ => source_workspace(v.value())? == ws,
                };
                if belongs {
                    keys.push(k.value().to_vec());
                }
            }
        }
    }
    Ok(keys)
}

/// Per table, how many rows `ws` owns.
pub(crate) fn count_workspace(rtx: &ReadTransaction, ws: &str) -> Result<TableCounts, StoreError> {
    let queued = match rtx.open_table(FLOW_RUN_QUEUE) {
        Ok(queue) => owned_keys(&queue, Owner::Value, ws, usize::MAX, &[])?,
        Err(redb::TableError::TableDoesNotExist(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mut counts = zero_counts();
    for ((table, owner), slot) in WORKSPACE_TABLES.iter().zip(counts.iter_mut()) {
        let name = table_of(*table, *owner, ws);
        let handle = match rtx.open_table(named_table(&name)) {
            Ok(handle) => handle,
            Err(redb::TableError::TableDoesNotExist(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        slot.1 = owned_keys(&handle, *owner, ws, usize::MAX, &queued)?.len() as u64;
    }
    Ok(counts)
}

/// Removes up to `max` rows of `ws`, tables in [`WORKSPACE_TABLES`] order; returns how many
/// per table. The installation, when it is not DELETED yet, is first turned DELETED with its
/// tokens erased (as an uninstall does), so nothing new arrives for the workspace meanwhile.
pub(crate) fn erase_batch(
    wtx: &WriteTransaction,
    ws: &str,
    max: usize,
) -> Result<TableCounts, StoreError> {
    let tokens = mark_deleted(wtx, ws)?;
    let mut counts = zero_counts();
    if let Some(slot) = counts
        .iter_mut()
        .find(|(name, _)| name == WEBHOOK_TOKENS.name())
    {
        slot.1 = tokens;
    }
    // Read before any row is removed: `flow_run_starts` rows belong to these runs.
    let queued = owned_keys(
        &wtx.open_table(FLOW_RUN_QUEUE)?,
        Owner::Value,
        ws,
        usize::MAX,
        &[],
    )?;
    let mut left = max;
    for ((table, owner), slot) in WORKSPACE_TABLES.iter().zip(counts.iter_mut()) {
        if left == 0 {
            break;
        }
        let name = table_of(*table, *owner, ws);
        let mut handle = wtx.open_table(named_table(&name))?;
        let keys = owned_keys(&handle, *owner, ws, left, &queued)?;
        for key in &keys {
            handle.remove(key.as_slice())?;
        }
        slot.1 += keys.len() as u64;
        left -= keys.len();
        if *owner == Owner::OwnTable {
            delete_if_empty(wtx, handle, &name)?;
        }
    }
    Ok(counts)
}

/// Makes the installation of `ws` DELETED, tokens erased; returns how many token index rows
/// that removed.
fn mark_deleted(wtx: &WriteTransaction, ws: &str) -> Result<u64, StoreError> {
    let mut table = wtx.open_table(INSTALLATIONS)?;
    let current = table
        .get(ws.as_bytes())?
        .map(|v| decode_installation(v.value()))
        .transpose()?;
    let Some(mut installation) = current.filter(|i| i.status != InstallationStatus::Deleted) else {
        return Ok(0);
    };
    let now = jiff::Timestamp::now().as_millisecond();
    let mut index = wtx.open_table(WEBHOOK_TOKENS)?;
    let mut removed = 0;
    for token in &installation.webhook_tokens {
        removed += u64::from(index.remove(token.digest.as_slice())?.is_some());
    }
    installation.status = InstallationStatus::Deleted;
    installation.auth_token = None;
    installation.webhook_tokens.clear();
    installation.deleted_at = Some(now);
    installation.updated_at = now;
    table.insert(ws.as_bytes(), encode_installation(&installation).as_slice())?;
    Ok(removed)
}

fn add(total: &mut TableCounts, batch: &TableCounts) -> u64 {
    let mut removed = 0;
    for ((_, sum), (_, n)) in total.iter_mut().zip(batch) {
        *sum += n;
        removed += n;
    }
    removed
}

impl Store {
    /// Per table, the rows `ws` owns.
    pub async fn workspace_rows(&self, ws: &str) -> Result<TableCounts, StoreError> {
        check_workspace_id(ws)?;
        let ws = ws.to_string();
        self.read(move |rtx| count_workspace(rtx, &ws)).await
    }

    /// Erases every row of `ws`, `batch` rows per write so ingestion keeps going meanwhile,
    /// keeping the in-memory views (installations, flows, waiting dedupe and entity index rows)
    /// in step.
    /// Returns the rows removed per table.
    pub async fn erase_workspace(&self, ws: &str, batch: usize) -> Result<TableCounts, StoreError> {
        check_workspace_id(ws)?;
        let mut total = zero_counts();
        loop {
            let (cache, flow_index, dedupe, destinations, pauses, index) = (
                self.cache.clone(),
                self.flow_index.clone(),
                self.dedupe.clone(),
                self.destination_index.clone(),
                self.pauses.clone(),
                self.entity_index.clone(),
            );
            let (name, after) = (ws.to_string(), ws.to_string());
            let removed = self
                .write_then(
                    move |wtx| {
                        // Rows still waiting in memory would be written back later.
                        dedupe.forget_workspace(&name);
                        index.forget_workspace(&name);
                        let counts = erase_batch(wtx, &name, batch)?;
                        let installation = wtx
                            .open_table(INSTALLATIONS)?
                            .get(name.as_bytes())?
                            .map(|v| decode_installation(v.value()))
                            .transpose()?;
                        Ok((counts, installation))
                    },
                    move |(_, installation)| {
                        flow_index.remove_workspace(&after);
                        destinations.remove_workspace(&after);
                        pauses.forget(&after);
                        match installation {
                            Some(installation) => cache.put(installation.clone()),
                            None => cache.remove(&after),
                        }
                    },
                )
                .await?;
            if add(&mut total, &removed.0) == 0 {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }
}

/// What [`erase_workspace_file`] found or removed.
pub struct FileErasure {
    pub counts: TableCounts,
}

/// `erase-workspace` on a file no server holds: the same batches as [`Store::erase_workspace`]
/// (or, with `dry_run`, only the counts). Fails with [`StoreError::InUse`] when a server
/// holds the file.
pub fn erase_workspace_file(
    path: &std::path::Path,
    ws: &str,
    dry_run: bool,
    batch: usize,
) -> Result<FileErasure, StoreError> {
    check_workspace_id(ws)?;
    let db = open_unheld(path)?;
    if dry_run {
        return Ok(FileErasure {
            counts: count_workspace(&db.begin_read()?, ws)?,
        });
    }
    let mut total = zero_counts();
    loop {
        let wtx = begin_durable(&db)?;
        let removed = erase_batch(&wtx, ws, batch)?;
        wtx.commit()?;
        if add(&mut total, &removed) == 0 {
            return Ok(FileErasure { counts: total });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table added to the file must say how its rows name their workspace.
    #[test]
    fn every_table_but_meta_is_per_workspace() {
        let listed: Vec<&str> = WORKSPACE_TABLES.iter().map(|(t, _)| t.name()).collect();
        for table in super::super::schema::TABLES {
            let name = table.name();
            assert!(
                name == "meta" || listed.contains(&name),
                "{name} is missing from WORKSPACE_TABLES"
            );
        }
        assert_eq!(listed.last(), Some(&"installations"));
    }
}
