//! The log of recent events (`RECENT_EVENTS`): for every stored event, appended in the event's
//! own transaction, what the in-memory views rebuild from after a restart: its dedupe row
//! (`dedupe.rs`) and its entity index rows (`entity_index.rs`), which both reach their tables
//! later and in bulk. Keys are event ids, which grow with time, so an append touches only the
//! table's last leaf; rows no view needs any more are trimmed from the front a few at a
//! time. Opening the store reads this table alone, whose length is bounded by how many rows
//! the views hold back (a few tens of thousands), never by the number of events.

use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::schema::{EventId, RECENT_EVENTS, decode, encode};
use super::writer::OpenTables;

/// What one recent event leaves for the views.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct RecentRow {
    pub(crate) workspace_id: String,
    /// The event's key in the dedupe table (`dedupe::table_key`).
    pub(crate) dedupe_key: Vec<u8>,
    /// The entity ids its body names, encoded as index keys (`entity_index::entity_key`).
    pub(crate) entities: Vec<Vec<u8>>,
}

/// Rows deleted from the front per trim (each ingest batch trims at most this many).
#[cfg(not(test))]
pub(crate) const TRIM_CHUNK: usize = 4096;
#[cfg(test)]
pub(crate) const TRIM_CHUNK: usize = 16;

pub(crate) fn append(
    tables: &mut OpenTables<'_>,
    id: &EventId,
    row: &RecentRow,
) -> Result<(), StoreError> {
    tables
        .get(RECENT_EVENTS)?
        .insert(id.as_slice(), encode(row).as_slice())?;
    Ok(())
}

/// Drops an erased event's row.
pub(crate) fn remove(wtx: &WriteTransaction, id: &EventId) -> Result<(), StoreError> {
    wtx.open_table(RECENT_EVENTS)?.remove(id.as_slice())?;
    Ok(())
}

/// Deletes up to `max` rows of events older than `before`; returns how many.
pub(crate) fn trim(
    tables: &mut OpenTables<'_>,
    before: &EventId,
    max: usize,
) -> Result<usize, StoreError> {
    let table = tables.get(RECENT_EVENTS)?;
    let mut ids = Vec::new();
    for entry in table.range::<&[u8]>(..before.as_slice())?.take(max) {
        ids.push(entry?.0.value().to_vec());
    }
    for id in &ids {
        table.remove(id.as_slice())?;
    }
    Ok(ids.len())
}

/// Calls `each` with every row, oldest first (what [`super::db::Store::open`] rebuilds the
/// views from), decoding one at a time: the whole log decoded at once would be tens of MB
/// that the process keeps after its start.
pub(crate) fn for_each(
    db: &Database,
    mut each: impl FnMut(EventId, RecentRow),
) -> Result<(), StoreError> {
    let rtx = db.begin_read()?;
    let table = rtx.open_table(RECENT_EVENTS)?;
    for entry in table.iter()? {
        let (k, v) = entry?;
        let id: EventId = k
            .value()
            .try_into()
            .map_err(|_| StoreError::Decode("malformed recent event key".into()))?;
        each(id, decode(v.value())?);
    }
    Ok(())
}
