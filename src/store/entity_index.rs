//! The entity index: which events name an entity (a time entry, a user, a project …), newest
//! first (`GET /api/webhooks?entity=`). Which body fields name entities is the caller's
//! business (`crate::entities`); the store indexes the ids it is given.
//!
//! `ENTITY_EVENTS`: `[ws][bucket][entity][event id]` → the older event ids of the same entity
//! in the same bucket that the row stands for too (16 bytes each, ascending; empty for a row of
//! one event, which is how rows were written before the grouping). A bucket's ids of one
//! entity are cut into runs of at most [`GROUP_IDS`], each run one row keyed by its newest id,
//! so an entity named by many events costs a row per run rather than per event: fewer inserts
//! on the writer thread and fewer bytes of keys. An event names 2 to 10 entities,
//! each in its own part of the index, so writing its rows with it would dirty that many
//! leaves per event, a different one each on a big index: several times what the event itself
//! costs per commit. Instead the rows of recent events wait in memory (their durable copy is
//! the event's row in the log of recent events, `recent.rs`, written with the event) until
//! [`BUCKET_ROWS`] have gathered; then they are written as one bucket, in key order, a chunk
//! per ingest batch, which fills leaves one after the other. A lookup reads the waiting rows,
//! then the entity's range in each bucket, newest bucket first, and stops when the page is
//! full. Retention drops a workspace's rows a bucket at a time, once every event of the
//! bucket is past the workspace's retention; until then the rows of events deleted one by one
//! may remain, and lookups skip events that are gone.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::recent::{self, RecentRow};
use super::schema::{
    ENTITY_EVENTS, EventId, META, decode, encode, insert_sorted, millis_of_id, prefix_end,
    with_suffix, workspace_prefix,
};
use super::writer::OpenTables;

/// Rows gathered in memory before they are written as a bucket (about 50 bytes each).
#[cfg(not(test))]
pub(crate) const BUCKET_ROWS: usize = 128 * 1024;
#[cfg(test)]
pub(crate) const BUCKET_ROWS: usize = 64;
/// Rows of a bucket written per ingest batch.
#[cfg(not(test))]
const CHUNK: usize = 4096;
#[cfg(test)]
const CHUNK: usize = 16;
/// Event ids one entity-index row stands for at most (its value stays within a KB).
const GROUP_IDS: usize = 64;
/// `META` key: the buckets, oldest first.
pub(crate) const META_BUCKETS: &[u8] = b"entity_buckets";
/// Longest entity id indexed.
pub(crate) const MAX_ENTITY_LEN: usize = 64;

/// An entity id as the index keys it: a Clockify id (24 hex digits) as its 12 bytes, anything
/// else as its length and bytes. `None` for what is no id (empty, too long, control chars).
pub(crate) fn entity_key(id: &str) -> Option<Vec<u8>> {
    if id.len() == 24
        && let Ok(bytes) = hex::decode(id)
    {
        let mut key = Vec::with_capacity(13);
        key.push(1);
        key.extend_from_slice(&bytes);
        return Some(key);
    }
    if id.is_empty() || id.len() > MAX_ENTITY_LEN || id.chars().any(char::is_control) {
        return None;
    }
    let mut key = Vec::with_capacity(2 + id.len());
    key.extend_from_slice(&[2, id.len() as u8]);
    key.extend_from_slice(id.as_bytes());
    Some(key)
}

/// A bucket: its number (key order is time order) and the events its rows belong to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Bucket {
    seq: u32,
    first: EventId,
    last: EventId,
    /// Every row written (else it is being written: its rows are still in memory too).
    complete: bool,
}

fn bucket_prefix(ws: &str, seq: u32) -> Vec<u8> {
    with_suffix(&workspace_prefix(ws), &seq.to_be_bytes())
}

/// A row waiting in memory. Clockify ids are kept inline.
#[derive(Clone, Debug)]
struct Row {
    ws: u32,
    id: EventId,
    entity: Entity,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Entity {
    Hex([u8; 12]),
    Other(Box<[u8]>),
}

impl Entity {
    fn from_key(key: &[u8]) -> Option<Entity> {
        match key.split_first()? {
            (1, rest) => Some(Entity::Hex(rest.try_into().ok()?)),
            (2, _) => Some(Entity::Other(key.into())),
            _ => None,
        }
    }

    fn push_key(&self, out: &mut Vec<u8>) {
        match self {
            Entity::Hex(bytes) => {
                out.push(1);
                out.extend_from_slice(bytes);
            }
            Entity::Other(key) => out.extend_from_slice(key),
        }
    }
}

/// The rows being written as bucket `seq`, in key order.
struct Frozen {
    seq: u32,
    rows: Vec<Row>,
    written: usize,
}

#[derive(Default)]
struct Inner {
    workspaces: Vec<String>,
    workspace_ids: HashMap<String, u32>,
    /// Rows of committed events not in a bucket yet, in commit order.
    waiting: Vec<Row>,
    frozen: Option<Frozen>,
    buckets: Vec<Bucket>,
    /// Events erased, and workspaces forgotten, while their rows are in memory: skipped.
    erased: HashSet<EventId>,
    forgotten: HashSet<u32>,
    /// A step of the open transaction (one per batch).
    in_flight: bool,
    /// The newest event committed.
    last_committed: Option<EventId>,
}

impl Inner {
    fn intern(&mut self, ws: &str) -> u32 {
        if let Some(id) = self.workspace_ids.get(ws) {
            return *id;
        }
        let id = self.workspaces.len() as u32;
        self.workspaces.push(ws.to_string());
        self.workspace_ids.insert(ws.to_string(), id);
        id
    }

    fn add(&mut self, ws: &str, id: &EventId, entities: &[Vec<u8>]) {
        let ws = self.intern(ws);
        self.forgotten.remove(&ws);
        for key in entities {
            if let Some(entity) = Entity::from_key(key) {
                self.waiting.push(Row {
                    ws,
                    id: *id,
                    entity,
                });
            }
        }
    }

    /// The oldest event with rows in memory.
    fn oldest_in_memory(&self) -> Option<EventId> {
        let frozen = self
            .frozen
            .as_ref()
            .and_then(|f| self.buckets.iter().find(|b| b.seq == f.seq))
            .map(|b| b.first);
        frozen.or_else(|| self.waiting.first().map(|r| r.id))
    }

    fn skipped(&self, row: &Row) -> bool {
        self.erased.contains(&row.id) || self.forgotten.contains(&row.ws)
    }

    fn table_key(&self, row: &Row, seq: u32) -> Vec<u8> {
        let mut key = bucket_prefix(&self.workspaces[row.ws as usize], seq);
        row.entity.push_key(&mut key);
        key.extend_from_slice(&row.id);
        key
    }
}

#[derive(Default)]
pub(crate) struct EntityIndex {
    inner: Mutex<Inner>,
}

/// What a write step did, undone unless [`Step::committed`] is called.
pub(crate) struct Step {
    index: Arc<EntityIndex>,
    froze: bool,
    written_to: usize,
    completed: bool,
    committed: std::sync::atomic::AtomicBool,
}

impl Step {
    pub(crate) fn committed(&self) {
        self.committed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut inner = self.index.inner.lock().expect("entity index lock");
        inner.in_flight = false;
        if let Some(frozen) = &mut inner.frozen {
            frozen.written = self.written_to;
        }
        if self.completed {
            let frozen = inner.frozen.take().expect("a bucket being written");
            if let Some(bucket) = inner.buckets.iter_mut().find(|b| b.seq == frozen.seq) {
                bucket.complete = true;
                let last = bucket.last;
                inner.erased.retain(|id| *id > last);
            }
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if self.committed.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let mut inner = self.index.inner.lock().expect("entity index lock");
        inner.in_flight = false;
        if !self.froze {
            return;
        }
        // The transaction that froze the bucket was not committed: its rows wait again.
        if let Some(mut frozen) = inner.frozen.take() {
            inner.buckets.retain(|b| b.seq != frozen.seq);
            frozen.rows.sort_unstable_by_key(|r| r.id);
            frozen.rows.append(&mut inner.waiting);
            inner.waiting = frozen.rows;
        }
    }
}

/// Rebuilds the index of a restart, one row of the log of recent events at a time, in id
/// order: the buckets from `META`, and the rows of the recent events that no complete bucket
/// holds (a bucket left half-written is written again).
pub(crate) struct IndexLoader {
    inner: Inner,
    complete_until: Option<EventId>,
}

impl IndexLoader {
    pub(crate) fn new(rtx: &ReadTransaction) -> Result<IndexLoader, StoreError> {
        let buckets: Vec<Bucket> = rtx
            .open_table(META)?
            .get(META_BUCKETS)?
            .map(|v| decode(v.value()))
            .transpose()?
            .unwrap_or_default();
        let complete_until = buckets.iter().filter(|b| b.complete).map(|b| b.last).max();
        Ok(IndexLoader {
            inner: Inner {
                buckets,
                ..Inner::default()
            },
            complete_until,
        })
    }

    pub(crate) fn add(&mut self, id: &EventId, row: &RecentRow) {
        if self.complete_until.is_none_or(|last| *id > last) {
            self.inner.add(&row.workspace_id, id, &row.entities);
        }
        self.inner.last_committed = Some(*id);
    }

    pub(crate) fn finish(self) -> EntityIndex {
        let mut inner = self.inner;
        if let Some(open) = inner.buckets.iter().find(|b| !b.complete).cloned() {
            let (mut rows, rest): (Vec<Row>, Vec<Row>) = std::mem::take(&mut inner.waiting)
                .into_iter()
                .partition(|r| r.id <= open.last);
            inner.waiting = rest;
            sort_for_bucket(&inner.workspaces, &mut rows);
            inner.frozen = Some(Frozen {
                seq: open.seq,
                rows,
                written: 0,
            });
        }
        EntityIndex {
            inner: Mutex::new(inner),
        }
    }
}

impl EntityIndex {
    /// Takes over the buckets and waiting rows of `fresh` (after the file was reopened: a
    /// bucket step of the failed batch was undone with it).
    pub(crate) fn replace_with(&self, fresh: EntityIndex) {
        *self.inner.lock().expect("entity index lock") =
            fresh.inner.into_inner().expect("entity index lock");
    }

    /// After the commit of an event (with or without entities): its rows wait for the next
    /// bucket.
    pub(crate) fn committed(&self, ws: &str, id: &EventId, entities: &[Vec<u8>]) {
        let mut inner = self.inner.lock().expect("entity index lock");
        inner.last_committed = inner.last_committed.max(Some(*id));
        if !entities.is_empty() {
            inner.add(ws, id, entities);
        }
    }

    /// Inside an ingest batch, once per batch: freezes a full set of waiting rows as a new
    /// bucket, or writes the next chunk of the bucket being written; and trims the log of
    /// recent events of what neither this index nor the dedupe rows (the oldest waiting of
    /// which is `dedupe_oldest`) need. Call [`Step::committed`] after the commit.
    pub(crate) fn step(
        self: &Arc<Self>,
        tables: &mut OpenTables<'_>,
        dedupe_oldest: Option<EventId>,
    ) -> Result<Option<Step>, StoreError> {
        let mut inner = self.inner.lock().expect("entity index lock");
        if inner.in_flight {
            return Ok(None);
        }
        let mut froze = false;
        if inner.frozen.is_none() && inner.waiting.len() >= BUCKET_ROWS {
            // The next bucket's rows get their whole room at once: growing by doubling
            // would hold the old and the new buffer at the same time.
            let rows: Vec<Row> =
                std::mem::replace(&mut inner.waiting, Vec::with_capacity(BUCKET_ROWS + CHUNK))
                    .into_iter()
                    .filter(|r| !inner.skipped(r))
                    .collect();
            if let (Some(first), Some(last)) = (
                rows.iter().map(|r| r.id).min(),
                rows.iter().map(|r| r.id).max(),
            ) {
                let mut rows = rows;
                sort_for_bucket(&inner.workspaces, &mut rows);
                let seq = inner.buckets.last().map_or(1, |b| b.seq + 1);
                inner.buckets.push(Bucket {
                    seq,
                    first,
                    last,
                    complete: false,
                });
                inner.frozen = Some(Frozen {
                    seq,
                    rows,
                    written: 0,
                });
                froze = true;
            }
        }
        let chunk = inner.frozen.as_ref().map(|frozen| {
            let to = (frozen.written + CHUNK).min(frozen.rows.len());
            (frozen.seq, frozen.written, to, to == frozen.rows.len())
        });
        // What the log must keep: rows of events not committed yet (their ids are newer than
        // the last committed one), of waiting rows here, and of waiting dedupe rows.
        let keep_from = [
            inner.last_committed.map(|id| next_id(&id)),
            inner.oldest_in_memory(),
            dedupe_oldest,
        ]
        .into_iter()
        .flatten()
        .min()
        .filter(|_| inner.last_committed.is_some());
        inner.in_flight = true;
        // An error drops the step (after the lock is released), which undoes the freeze.
        let step = Step {
            index: self.clone(),
            froze,
            written_to: chunk.map_or(0, |c| c.2),
            completed: chunk.is_some_and(|c| c.3),
            committed: std::sync::atomic::AtomicBool::new(false),
        };
        let written = match chunk {
            Some((seq, from, to, completed)) => {
                write_chunk(&inner, tables, seq, from, to, completed)
            }
            None => Ok(()),
        };
        drop(inner);
        written?;
        if let Some(keep_from) = keep_from {
            recent::trim(tables, &keep_from, recent::TRIM_CHUNK)?;
        }
        Ok(Some(step))
    }

    /// Up to `limit` + 1 ids of the events of `ws` that name `entity`, newest first, older
    /// than `before`, and the read transaction they were found in. Reads memory first, then
    /// a read transaction begun after, so that a bucket finishing in between is seen in one
    /// or the other.
    pub(crate) fn events_of(
        &self,
        db: &Database,
        ws: &str,
        entity: &[u8],
        before: Option<EventId>,
        limit: usize,
    ) -> Result<(Vec<EventId>, ReadTransaction), StoreError> {
        let Some(wanted) = Entity::from_key(entity) else {
            return Ok((Vec::new(), db.begin_read()?));
        };
        let below = |id: &EventId| before.is_none_or(|b| *id < b);
        let (mut ids, buckets) = {
            let inner = self.inner.lock().expect("entity index lock");
            let mut ids: Vec<EventId> = Vec::new();
            if let Some(ws_id) = inner.workspace_ids.get(ws) {
                let frozen = inner.frozen.iter().flat_map(|f| f.rows.iter());
                for row in inner.waiting.iter().chain(frozen) {
                    if row.ws == *ws_id
                        && row.entity == wanted
                        && below(&row.id)
                        && !inner.skipped(row)
                    {
                        ids.push(row.id);
                    }
                }
            }
            (ids, inner.buckets.clone())
        };
        let rtx = db.begin_read()?;
        let table = rtx.open_table(ENTITY_EVENTS)?;
        sort_newest_first(&mut ids);
        for bucket in buckets.iter().rev() {
            if before.is_some_and(|b| bucket.first >= b) {
                continue;
            }
            // Buckets are older than what memory holds and than the buckets after them.
            if ids.len() > limit && ids[limit] > bucket.last {
                break;
            }
            let mut prefix = bucket_prefix(ws, bucket.seq);
            prefix.extend_from_slice(entity);
            let end = prefix_end(&prefix);
            // Rows keyed below `before`, newest first; and the one row at or above it, whose
            // older ids may be below it.
            let below_before = match before {
                Some(b) => with_suffix(&prefix, &b),
                None => end.clone(),
            };
            let straddling = match before {
                Some(_) => table
                    .range::<&[u8]>(below_before.as_slice()..end.as_slice())?
                    .next()
                    .transpose()?,
                None => None,
            };
            let mut taken = 0;
            if let Some((_, v)) = straddling {
                for id in group_ids(v.value())?
                    .into_iter()
                    .rev()
                    .filter(|id| below(id))
                {
                    ids.push(id);
                    taken += 1;
                }
            }
            for entry in table
                .range::<&[u8]>(prefix.as_slice()..below_before.as_slice())?
                .rev()
            {
                if taken > limit {
                    break;
                }
                let (k, v) = entry?;
                let id: EventId = k.value()[prefix.len()..]
                    .try_into()
                    .map_err(|_| StoreError::Decode("malformed entity index key".into()))?;
                ids.push(id);
                taken += 1;
                for older in group_ids(v.value())?.into_iter().rev() {
                    ids.push(older);
                    taken += 1;
                }
            }
            sort_newest_first(&mut ids);
        }
        ids.truncate(limit + 1);
        drop(table);
        Ok((ids, rtx))
    }

    /// Removes an erased event's rows (in `wtx`; memory after the commit, [`Self::erased`]).
    pub(crate) fn remove(
        &self,
        wtx: &WriteTransaction,
        ws: &str,
        id: &EventId,
        entities: &[Vec<u8>],
    ) -> Result<(), StoreError> {
        if entities.is_empty() {
            return Ok(());
        }
        let buckets = self
            .inner
            .lock()
            .expect("entity index lock")
            .buckets
            .clone();
        let Some(bucket) = buckets.iter().find(|b| b.first <= *id && *id <= b.last) else {
            return Ok(());
        };
        let mut table = wtx.open_table(ENTITY_EVENTS)?;
        for entity in entities {
            let mut prefix = bucket_prefix(ws, bucket.seq);
            prefix.extend_from_slice(entity);
            // The row holding `id` is the first keyed at or above it.
            let from = with_suffix(&prefix, id);
            let end = prefix_end(&prefix);
            let found = table
                .range::<&[u8]>(from.as_slice()..end.as_slice())?
                .next()
                .transpose()?
                .map(|(k, v)| (k.value().to_vec(), v.value().to_vec()));
            let Some((key, value)) = found else {
                continue;
            };
            let mut older = group_ids(&value)?;
            if key[prefix.len()..] == id[..] {
                table.remove(key.as_slice())?;
                // The next newest id of the run keys it now.
                if let Some(newest) = older.pop() {
                    table.insert(
                        with_suffix(&prefix, &newest).as_slice(),
                        older.concat().as_slice(),
                    )?;
                }
            } else if let Some(at) = older.iter().position(|o| o == id) {
                older.remove(at);
                table.insert(key.as_slice(), older.concat().as_slice())?;
            }
        }
        Ok(())
    }

    /// After an event was erased: its rows still in memory are skipped (and never written).
    pub(crate) fn erased(&self, id: &EventId) {
        let mut inner = self.inner.lock().expect("entity index lock");
        if inner.oldest_in_memory().is_some_and(|oldest| *id >= oldest) {
            inner.erased.insert(*id);
        }
    }

    /// After a workspace was erased: its rows still in memory are skipped.
    pub(crate) fn forget_workspace(&self, ws: &str) {
        let mut inner = self.inner.lock().expect("entity index lock");
        if let Some(id) = inner.workspace_ids.get(ws).copied() {
            inner.forgotten.insert(id);
        }
    }

    /// Deletes up to `max` rows of `ws` in the complete buckets whose newest event was
    /// received before `cutoff_ms` (every bucket with `i64::MAX`); returns how many.
    pub(crate) fn drop_before(
        &self,
        wtx: &WriteTransaction,
        ws: &str,
        cutoff_ms: i64,
        max: usize,
    ) -> Result<usize, StoreError> {
        let buckets = self
            .inner
            .lock()
            .expect("entity index lock")
            .buckets
            .clone();
        let mut table = wtx.open_table(ENTITY_EVENTS)?;
        let mut removed = 0;
        for bucket in buckets
            .iter()
            .filter(|b| cutoff_ms == i64::MAX || (b.complete && millis_of_id(&b.last) < cutoff_ms))
        {
            let prefix = bucket_prefix(ws, bucket.seq);
            let end = prefix_end(&prefix);
            let mut keys = Vec::new();
            for entry in table
                .range::<&[u8]>(prefix.as_slice()..end.as_slice())?
                .take(max - removed)
            {
                keys.push(entry?.0.value().to_vec());
            }
            for key in &keys {
                table.remove(key.as_slice())?;
            }
            removed += keys.len();
            if removed >= max {
                break;
            }
        }
        Ok(removed)
    }
}

/// The older ids a row stands for (its value), ascending.
fn group_ids(value: &[u8]) -> Result<Vec<EventId>, StoreError> {
    if value.len() % 16 != 0 {
        return Err(StoreError::Decode("malformed entity index row".into()));
    }
    Ok(value
        .chunks_exact(16)
        .map(|c| c.try_into().expect("16 bytes"))
        .collect())
}

/// The id right after `id`: the exclusive bound that keeps `id` out.
fn next_id(id: &EventId) -> EventId {
    (u128::from_be_bytes(*id).saturating_add(1)).to_be_bytes()
}

/// Inserts rows `from..to` of the bucket being written; with `completed`, records the bucket
/// as complete.
fn write_chunk(
    inner: &Inner,
    tables: &mut OpenTables<'_>,
    seq: u32,
    from: usize,
    to: usize,
    completed: bool,
) -> Result<(), StoreError> {
    let table = tables.get(ENTITY_EVENTS)?;
    let frozen = inner.frozen.as_ref().expect("a bucket being written");
    // Rows are in key order: a run of one workspace's entity is consecutive.
    let rows: Vec<&Row> = frozen.rows[from..to]
        .iter()
        .filter(|row| !inner.skipped(row))
        .collect();
    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut start = 0;
    while start < rows.len() {
        let first = rows[start];
        let mut end = start + 1;
        while end < rows.len()
            && end - start < GROUP_IDS
            && rows[end].ws == first.ws
            && rows[end].entity == first.entity
        {
            end += 1;
        }
        let older: Vec<u8> = rows[start..end - 1].iter().flat_map(|r| r.id).collect();
        entries.push((inner.table_key(rows[end - 1], seq), older));
        start = end;
    }
    insert_sorted(table, &entries)?;
    if from == 0 || completed {
        let mut buckets = inner.buckets.clone();
        if completed && let Some(bucket) = buckets.iter_mut().find(|b| b.seq == seq) {
            bucket.complete = true;
        }
        tables
            .get(META)?
            .insert(META_BUCKETS, encode(&buckets).as_slice())?;
    }
    Ok(())
}

/// Key order: workspace keys are length-prefixed. Unstable: no two rows share a key, and a
/// stable sort of a bucket would take a scratch buffer of up to 8 MB, which the allocator then
/// keeps (it raised the server's peak memory by that much).
fn sort_for_bucket(workspaces: &[String], rows: &mut [Row]) {
    let ws = |row: &Row| {
        let name = &workspaces[row.ws as usize];
        (name.len(), name.as_bytes())
    };
    rows.sort_unstable_by(|a, b| {
        ws(a)
            .cmp(&ws(b))
            .then_with(|| a.entity.cmp(&b.entity))
            .then_with(|| a.id.cmp(&b.id))
    });
}

fn sort_newest_first(ids: &mut Vec<EventId>) {
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.dedup();
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::{Dedupe, Ingested, NewEvent, Store};

    const USERS: usize = 7;

    /// Fill of a table's pages: stored bytes over the bytes of its pages.
    fn fill(table: &redb::Table<'_, &'static [u8], &'static [u8]>) -> f64 {
        use redb::ReadableTableMetadata;
        let stats = table.stats().unwrap();
        stats.stored_bytes() as f64 / ((stats.leaf_pages() + stats.branch_pages()) * 4096) as f64
    }

    /// Sorted runs written into the middle of a table (each workspace's next bucket after its
    /// older ones, about ten pages each) fill their leaves through the cursor; the same rows
    /// inserted one by one leave them about half full. A key written again replaces its row.
    #[test]
    fn runs_written_into_the_middle_of_the_table_fill_their_pages() {
        use redb::ReadableTableMetadata;
        const T: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("t");
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let wtx = db.begin_write().unwrap();
        let run = |ws: u8, bucket: u8| -> Vec<(Vec<u8>, Vec<u8>)> {
            (0..400u16)
                .map(|n| {
                    let mut key = vec![ws, bucket];
                    key.extend_from_slice(&n.to_be_bytes());
                    (key, vec![ws ^ bucket; 96])
                })
                .collect()
        };
        for plain in [true, false] {
            let name = if plain { "plain" } else { "cursor" };
            let mut table = wtx.open_table(redb::TableDefinition::new(name)).unwrap();
            for bucket in 0..6 {
                for ws in 0..5 {
                    let entries = run(ws, bucket);
                    if plain {
                        for (k, v) in &entries {
                            table.insert(k.as_slice(), v.as_slice()).unwrap();
                        }
                    } else {
                        insert_sorted(&mut table, &entries).unwrap();
                    }
                }
            }
            assert_eq!(table.len().unwrap(), 6 * 5 * 400);
            let fill = fill(&table);
            if plain {
                assert!(fill < 0.6, "plain inserts {:.0}% full", fill * 100.0);
            } else {
                assert!(fill > 0.8, "cursor runs {:.0}% full", fill * 100.0);
            }
        }
        let mut table = wtx.open_table(T).unwrap();
        insert_sorted(&mut table, &run(1, 1)).unwrap();
        let mut again = run(1, 1);
        again[5].1 = b"new".to_vec();
        again.push((vec![1, 2, 0, 0], b"next".to_vec()));
        insert_sorted(&mut table, &again[4..]).unwrap();
        assert_eq!(table.len().unwrap(), 401);
        assert_eq!(
            table
                .get([1u8, 1, 0, 5].as_slice())
                .unwrap()
                .unwrap()
                .value(),
            b"new"
        );
        assert_eq!(
            table
                .get([1u8, 2, 0, 0].as_slice())
                .unwrap()
                .unwrap()
                .value(),
            b"next"
        );
    }

    /// Event `n` names itself, one of [`USERS`] users and, every third, a project.
    fn entities(n: usize) -> Vec<String> {
        let mut ids = vec![format!("{n:024x}"), format!("u{}", n % USERS)];
        if n % 3 == 0 {
            ids.push("65b7a1f0bbbbbbbbbbbb0001".into());
        }
        ids
    }

    fn workspace(n: usize) -> &'static str {
        if n % 4 == 0 { "ws-b" } else { "ws-a" }
    }

    async fn ingest(store: &Store, n: usize) -> EventId {
        let ingested = store
            .ingest(NewEvent {
                workspace_id: workspace(n).into(),
                event_type: "NEW_TIME_ENTRY".into(),
                source: "clockify".into(),
                source_id: None,
                headers: vec![],
                body: format!("{{\"n\":{n}}}").into_bytes(),
                dedupe: Dedupe::Body,
                entities: entities(n),
            })
            .await
            .unwrap();
        match ingested {
            Ingested::Stored(event) => event.id,
            other => panic!("{other:?}"),
        }
    }

    /// Every event of `ws` naming `entity`, newest first, page by page.
    async fn history(store: &Store, ws: &str, entity: &str) -> Vec<EventId> {
        let mut out = Vec::new();
        let mut before = None;
        loop {
            let page = store.entity_events(ws, entity, before, 5).await.unwrap();
            out.extend(page.items.iter().map(|e| e.id));
            match page.next_cursor {
                Some(cursor) => before = Some(cursor),
                None => return out,
            }
        }
    }

    /// What the index should say, from the ids stored.
    fn expected(ids: &[(usize, EventId)], ws: &str, entity: &str) -> Vec<EventId> {
        let mut out: Vec<EventId> = ids
            .iter()
            .filter(|(n, _)| workspace(*n) == ws && entities(*n).iter().any(|e| e == entity))
            .map(|(_, id)| *id)
            .collect();
        out.sort_unstable_by(|a, b| b.cmp(a));
        out
    }

    async fn check_all(store: &Store, ids: &[(usize, EventId)]) {
        for ws in ["ws-a", "ws-b"] {
            for entity in [
                "u0",
                "u3",
                // The users of the erased events 41 and 299, whose rows are in runs.
                "u5",
                "u6",
                "65b7a1f0bbbbbbbbbbbb0001",
                &format!("{:024x}", 41),
            ] {
                assert_eq!(
                    history(store, ws, entity).await,
                    expected(ids, ws, entity),
                    "{ws} {entity}"
                );
            }
        }
    }

    /// Many buckets (64 rows each in tests), some half-written: lookups match the events,
    /// before and after a reopen, after an erasure, and after retention drops old buckets.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lookups_match_the_events_across_buckets_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.redb");
        let key = [5u8; 32];
        let store = Arc::new(Store::open(&path, &key).unwrap());
        let mut ids = Vec::new();
        for n in 0..300 {
            ids.push((n, ingest(&store, n).await));
        }
        let buckets = store.entity_index.inner.lock().unwrap().buckets.len();
        assert!(buckets >= 5, "{buckets} buckets");
        check_all(&store, &ids).await;
        // A run of one entity's events in a bucket is one row: far fewer rows than the
        // (event, entity) pairs the complete buckets hold.
        let (rows, pairs) = store
            .read(|rtx| {
                let table = rtx.open_table(ENTITY_EVENTS)?;
                let (mut rows, mut pairs) = (0usize, 0usize);
                for entry in table.iter()? {
                    rows += 1;
                    pairs += 1 + entry?.1.value().len() / 16;
                }
                Ok((rows, pairs))
            })
            .await
            .unwrap();
        assert!(pairs > 300, "{pairs} pairs written");
        assert!(rows + 150 < pairs, "{rows} rows for {pairs} pairs");
        store.shutdown();
        drop(store);
        // `check` (and the integrity pass) decode the buckets, the index and the log.
        crate::store::check(&path, None).expect("every record reads back");

        let store = Arc::new(Store::open(&path, &key).unwrap());
        check_all(&store, &ids).await;
        // An erased event leaves every history it was in, memory or bucket.
        for n in [41, 299] {
            let id = ids.iter().find(|(m, _)| *m == n).unwrap().1;
            assert!(
                store
                    .delete_event(workspace(n), id, entities(n))
                    .await
                    .unwrap()
            );
        }
        ids.retain(|(n, _)| *n != 41 && *n != 299);
        for n in 300..340 {
            ids.push((n, ingest(&store, n).await));
        }
        check_all(&store, &ids).await;
        store.shutdown();
        drop(store);

        let store = Arc::new(Store::open(&path, &key).unwrap());
        check_all(&store, &ids).await;
        // Retention of everything: the complete buckets' rows go.
        while store
            .delete_entity_rows_before("ws-a", i64::MAX, 50)
            .await
            .unwrap()
            > 0
        {}
        assert!(history(&store, "ws-a", "u0").await.is_empty());
        assert_eq!(
            history(&store, "ws-b", "u0").await,
            expected(&ids, "ws-b", "u0")
        );
        store.shutdown();
    }

    /// Rows written one per event (before runs were grouped) still read back, and erasing
    /// one of their events removes just its row.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_of_single_events_still_read_and_erase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.redb");
        let store = Arc::new(Store::open(&path, &[6u8; 32]).unwrap());
        let mut ids = Vec::new();
        for n in 0..200 {
            ids.push((n, ingest(&store, n).await));
        }
        // Rewrite every row of the complete buckets as one row per event.
        store
            .write(|wtx| {
                let mut table = wtx.open_table(ENTITY_EVENTS)?;
                let mut rows = Vec::new();
                for entry in table.iter()? {
                    let (k, v) = entry?;
                    rows.push((k.value().to_vec(), v.value().to_vec()));
                }
                for (key, value) in rows {
                    let prefix = &key[..key.len() - 16];
                    for id in group_ids(&value)? {
                        table.insert(with_suffix(prefix, &id).as_slice(), [].as_slice())?;
                    }
                    table.insert(key.as_slice(), [].as_slice())?;
                }
                Ok(())
            })
            .await
            .unwrap();
        check_all(&store, &ids).await;
        let n = 41;
        let id = ids.iter().find(|(m, _)| *m == n).unwrap().1;
        assert!(
            store
                .delete_event(workspace(n), id, entities(n))
                .await
                .unwrap()
        );
        ids.retain(|(m, _)| *m != n);
        check_all(&store, &ids).await;
        store.shutdown();
    }

    #[test]
    fn clockify_ids_are_keyed_in_12_bytes_and_other_ids_by_length() {
        assert_eq!(entity_key("65b7a1f0bbbbbbbbbbbb0001").unwrap().len(), 13);
        assert_eq!(entity_key("u1").unwrap(), vec![2, 2, b'u', b'1']);
        assert_eq!(entity_key(""), None);
        assert_eq!(entity_key(&"x".repeat(MAX_ENTITY_LEN + 1)), None);
        assert_eq!(entity_key("a\nb"), None);
    }
}
