//! The dedupe index (`EVENT_DEDUPE`): `[ws][event type][dedupe key]` →
//! `[id][received ms]`. Dedupe keys are content hashes, so they are random: writing each row in
//! its own event's transaction dirtied one B-tree leaf per event and halved what a durable
//! commit could carry (`cargo bench --bench storage`). Rows therefore wait in memory, about
//! [`FLUSH_ROWS`] of them, and are written a key range at a time: a range of a dense set
//! shares leaves. The ranges sweep the key space in turn, so each write is small and no
//! commit stalls. A waiting row is durable all the same: its event's row in the log of recent
//! events (`recent.rs`, appended in the event's transaction) is kept until the row is in the
//! table, and opening the store rebuilds the waiting rows from that log alone.
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use redb::{ReadableTable, WriteTransaction};

use super::error::StoreError;
use super::recent::RecentRow;
use super::schema::{EVENT_DEDUPE, EventId, millis_of_id, two_part_prefix, with_suffix};
use super::writer::OpenTables;

/// Deliveries of the same bytes within this window are one event.
pub const DEDUPE_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// Rows held in memory before some are written (about 100 bytes each, so about 3 MB). A
/// flush's rows span `FLUSH_CHUNK / FLUSH_ROWS` of the key space, so the more rows wait, the
/// fewer table leaves each row dirties: `cargo bench --bench ingest` wrote 4.3–4.5 KB per event
/// with 1,024 waiting rows and 2.2–2.7 KB with 32,768.
#[cfg(not(test))]
const FLUSH_ROWS: usize = 32 * 1024;
/// Small enough for unit tests to cross it quickly.
#[cfg(test)]
const FLUSH_ROWS: usize = 1024;
/// Rows written per flush (more when a batch brought more).
const FLUSH_CHUNK: usize = 256;

/// Interned prefixes kept before unused ones are dropped (see [`Pending::intern`]).
#[cfg(not(test))]
const PREFIXES_BEFORE_COMPACTION: usize = 4096;
#[cfg(test)]
const PREFIXES_BEFORE_COMPACTION: usize = 8;

/// `[id][received ms]`.
pub(crate) type Row = [u8; 24];

pub(crate) fn table_key(ws: &str, event_type: &str, dedupe_key: &[u8; 32]) -> Vec<u8> {
    with_suffix(&two_part_prefix(ws, event_type), dedupe_key)
}

pub(crate) fn row(id: &EventId, received_ms: i64) -> Row {
    let mut row = [0u8; 24];
    row[..16].copy_from_slice(id);
    row[16..].copy_from_slice(&received_ms.to_le_bytes());
    row
}

pub(crate) fn row_parts(row: &Row) -> (EventId, i64) {
    let id: EventId = row[..16].try_into().expect("16 bytes");
    let received = i64::from_le_bytes(row[16..].try_into().expect("8 bytes"));
    (id, received)
}

/// Rows not yet in the table. Only the writer thread touches it (inside its jobs and after
/// their commits), so the lock is never contended.
#[derive(Default)]
pub(crate) struct PendingDedupe {
    inner: Mutex<Pending>,
    /// Where the sweep of expired rows goes on from (`None`: the start of the table).
    sweep_from: Mutex<Option<Vec<u8>>>,
}

/// A waiting row's key: its `[ws][event type]` prefix, interned, and the content hash as two
/// big-endian integers. Kept inline in the map (no allocation per row), in the same order as
/// the table keys of one prefix; integers compare without a `memcmp` call, which showed in
/// the writer's profile (every ingest looks its key up here).
type PendingKey = (u32, u128, u128);

fn hash_words(hash: &[u8; 32]) -> (u128, u128) {
    let (high, low) = hash.split_at(16);
    (
        u128::from_be_bytes(high.try_into().expect("16 bytes")),
        u128::from_be_bytes(low.try_into().expect("16 bytes")),
    )
}

#[derive(Default)]
struct Pending {
    rows: BTreeMap<PendingKey, Row>,
    /// Interned `[ws][event type]` prefixes: id → bytes, and bytes → id.
    prefixes: Vec<Vec<u8>>,
    prefix_ids: HashMap<Vec<u8>, u32>,
    /// The last key written; the next flush continues after it.
    swept_to: Option<PendingKey>,
    /// The events of the waiting rows (with how many rows each has): the oldest bounds what
    /// the log of recent events must keep, without visiting every row.
    waiting: BTreeMap<EventId, u32>,
    /// Interning a prefix when this many are interned first drops those no row uses.
    compact_at: usize,
}

impl Pending {
    /// Splits a table key into its prefix and content hash.
    fn split(key: &[u8]) -> Option<(&[u8], (u128, u128))> {
        let at = key.len().checked_sub(32)?;
        Some((&key[..at], hash_words(key[at..].try_into().ok()?)))
    }

    /// The map key of a table key, if its prefix has been seen.
    fn find(&self, key: &[u8]) -> Option<PendingKey> {
        let (prefix, hash) = Self::split(key)?;
        Some((*self.prefix_ids.get(prefix)?, hash.0, hash.1))
    }

    fn intern(&mut self, key: &[u8]) -> Option<PendingKey> {
        let (prefix, hash) = Self::split(key)?;
        if let Some(id) = self.prefix_ids.get(prefix) {
            return Some((*id, hash.0, hash.1));
        }
        // Custom sources name their own event types, so the set of prefixes seen is open-ended;
        // only those of waiting rows are needed. Doubling the threshold keeps this amortised.
        if self.prefixes.len() >= self.compact_at.max(PREFIXES_BEFORE_COMPACTION) {
            self.compact_prefixes();
            self.compact_at = 2 * self.prefixes.len();
        }
        let id = u32::try_from(self.prefixes.len()).ok()?;
        self.prefixes.push(prefix.to_vec());
        self.prefix_ids.insert(prefix.to_vec(), id);
        Some((id, hash.0, hash.1))
    }

    /// Keeps only the prefixes of waiting rows, renumbered. Table keys are unchanged, and the
    /// sweep goes on from the same row if it is still waiting (else from the start).
    fn compact_prefixes(&mut self) {
        let mut old_prefixes = std::mem::take(&mut self.prefixes);
        let mut renumbered: HashMap<u32, u32> = HashMap::new();
        let mut prefixes = Vec::new();
        let mut new_id = |old: u32| {
            *renumbered.entry(old).or_insert_with(|| {
                prefixes.push(std::mem::take(&mut old_prefixes[old as usize]));
                (prefixes.len() - 1) as u32
            })
        };
        self.rows = std::mem::take(&mut self.rows)
            .into_iter()
            .map(|((prefix, high, low), row)| ((new_id(prefix), high, low), row))
            .collect();
        self.swept_to = self
            .swept_to
            .and_then(|(prefix, high, low)| Some((*renumbered.get(&prefix)?, high, low)));
        self.prefix_ids = prefixes
            .iter()
            .enumerate()
            .map(|(id, prefix)| (prefix.clone(), id as u32))
            .collect();
        self.prefixes = prefixes;
    }

    fn table_key(&self, (prefix, high, low): &PendingKey) -> Vec<u8> {
        let mut hash = [0u8; 32];
        hash[..16].copy_from_slice(&high.to_be_bytes());
        hash[16..].copy_from_slice(&low.to_be_bytes());
        with_suffix(&self.prefixes[*prefix as usize], &hash)
    }

    fn get(&self, key: &[u8]) -> Option<Row> {
        self.rows.get(&self.find(key)?).copied()
    }

    /// Keys are always `[prefix][32-byte hash]`; anything else is a bug, not data.
    fn insert(&mut self, key: &[u8], row: Row) {
        let key = self
            .intern(key)
            .expect("dedupe table keys end in a 32-byte hash");
        *self.waiting.entry(row_parts(&row).0).or_default() += 1;
        if let Some(old) = self.rows.insert(key, row) {
            self.forget(&old);
        }
    }

    fn remove(&mut self, key: &PendingKey) -> Option<Row> {
        let row = self.rows.remove(key)?;
        self.forget(&row);
        Some(row)
    }

    fn forget(&mut self, row: &Row) {
        let id = row_parts(row).0;
        if let Some(count) = self.waiting.get_mut(&id) {
            *count -= 1;
            if *count == 0 {
                self.waiting.remove(&id);
            }
        }
    }

    /// The event of the oldest waiting row.
    fn oldest_waiting(&self) -> Option<EventId> {
        self.waiting.keys().next().copied()
    }
}

/// Rows a flush moved from memory into the open transaction. Unless [`Flushed::committed`]
/// is called, dropping it puts them back (the transaction was aborted).
pub(crate) struct Flushed {
    rows: Vec<(Vec<u8>, Row)>,
    pending: Arc<PendingDedupe>,
    committed: AtomicBool,
}

impl Flushed {
    pub(crate) fn committed(&self) {
        self.committed.store(true, Ordering::Relaxed);
    }
}

impl Drop for Flushed {
    fn drop(&mut self) {
        if self.committed.load(Ordering::Relaxed) {
            return;
        }
        let mut pending = self.pending.inner.lock().expect("dedupe lock");
        for (key, row) in self.rows.drain(..) {
            // A row written since is newer.
            if pending.get(&key).is_none() {
                pending.insert(&key, row);
            }
        }
    }
}

impl PendingDedupe {
    /// The waiting rows of a restart: those of the recent events (oldest first) that are
    /// still inside the dedupe window. Rows already in the table are put back too; a flush
    /// writes them again, unchanged.
    /// Puts back the row of one event of the log of recent events, if it is still inside the
    /// window; called in id order, so a later event with the same key wins, as it did when
    /// stored.
    pub(crate) fn restore(&self, id: &EventId, recent: &RecentRow, now_ms: i64) {
        let received = millis_of_id(id);
        if now_ms - received < DEDUPE_WINDOW_MS && Pending::split(&recent.dedupe_key).is_some() {
            let mut rows = self.inner.lock().expect("dedupe lock");
            rows.insert(&recent.dedupe_key, row(id, received));
        }
    }

    /// The oldest event whose row still waits: the log of recent events keeps its row.
    pub(crate) fn oldest_waiting(&self) -> Option<EventId> {
        self.inner.lock().expect("dedupe lock").oldest_waiting()
    }

    /// Takes over the rows of `fresh` (after the file was reopened).
    pub(crate) fn replace_with(&self, fresh: PendingDedupe) {
        *self.inner.lock().expect("dedupe lock") = fresh.inner.into_inner().expect("dedupe lock");
    }

    pub(crate) fn get(
        &self,
        tables: &mut OpenTables<'_>,
        key: &[u8],
    ) -> Result<Option<Row>, StoreError> {
        if let Some(row) = self.inner.lock().expect("dedupe lock").get(key) {
            return Ok(Some(row));
        }
        let found = tables.get(EVENT_DEDUPE)?.get(key)?;
        Ok(found.and_then(|v| v.value().try_into().ok()))
    }

    pub(crate) fn insert(&self, key: &[u8], row: Row) {
        self.inner.lock().expect("dedupe lock").insert(key, row);
    }

    /// Drops every waiting row of `ws` (its events are being erased).
    pub(crate) fn forget_workspace(&self, ws: &str) {
        let prefix = super::schema::workspace_prefix(ws);
        let mut pending = self.inner.lock().expect("dedupe lock");
        let ids: Vec<u32> = pending
            .prefixes
            .iter()
            .enumerate()
            .filter(|(_, bytes)| bytes.starts_with(&prefix))
            .map(|(id, _)| id as u32)
            .collect();
        for id in ids {
            let keys: Vec<PendingKey> = pending
                .rows
                .range((id, 0, 0)..=(id, u128::MAX, u128::MAX))
                .map(|(k, _)| *k)
                .collect();
            for key in keys {
                pending.remove(&key);
            }
        }
    }

    /// Drops the row for `key` if it still points at event `id`.
    /// Deletes the rows, among the next `max` of the table from where the last call stopped,
    /// of events received before `expired_before`; returns how many it deleted and whether it
    /// reached the end of the table (the next call starts again at its beginning). Dedupe keys
    /// are content hashes, so expired rows are found by sweeping the table in key order, not
    /// by time; deleting an event past the window leaves its row to this sweep.
    pub(crate) fn sweep_expired(
        &self,
        wtx: &WriteTransaction,
        expired_before: i64,
        max: usize,
    ) -> Result<(usize, bool), StoreError> {
        let mut from = self.sweep_from.lock().expect("dedupe sweep lock");
        let mut table = wtx.open_table(EVENT_DEDUPE)?;
        let start = match from.as_deref() {
            Some(key) => Bound::Excluded(key),
            None => Bound::Unbounded,
        };
        let mut expired = Vec::new();
        let (mut examined, mut last) = (0, None);
        for entry in table.range::<&[u8]>((start, Bound::Unbounded))?.take(max) {
            let (k, v) = entry?;
            examined += 1;
            let received = <Row>::try_from(v.value())
                .map(|row| row_parts(&row).1)
                .unwrap_or(i64::MAX);
            if received < expired_before {
                expired.push(k.value().to_vec());
            }
            last = Some(k.value().to_vec());
        }
        for key in &expired {
            table.remove(key.as_slice())?;
        }
        let wrapped = examined < max;
        *from = if wrapped { None } else { last };
        Ok((expired.len(), wrapped))
    }

    pub(crate) fn remove_if_points_at(
        &self,
        wtx: &WriteTransaction,
        key: &[u8],
        id: &EventId,
    ) -> Result<(), StoreError> {
        {
            let mut pending = self.inner.lock().expect("dedupe lock");
            if let Some(pending_key) = pending.find(key)
                && pending
                    .rows
                    .get(&pending_key)
                    .is_some_and(|row| row.starts_with(id))
            {
                pending.remove(&pending_key);
            }
        }
        let mut table = wtx.open_table(EVENT_DEDUPE)?;
        let points_here = table.get(key)?.is_some_and(|v| v.value().starts_with(id));
        if points_here {
            table.remove(key)?;
        }
        Ok(())
    }

    /// When enough rows wait, moves the next key range of them into the table (lookups in the
    /// same transaction find them there). Call [`Flushed::committed`] after the commit.
    pub(crate) fn flush_if_full(
        self: &Arc<Self>,
        tables: &mut OpenTables<'_>,
    ) -> Result<Option<Flushed>, StoreError> {
        let mut rows = {
            let mut pending = self.inner.lock().expect("dedupe lock");
            if pending.rows.len() < FLUSH_ROWS {
                return Ok(None);
            }
            let take = pending.rows.len() - (FLUSH_ROWS - FLUSH_CHUNK);
            let after = match pending.swept_to {
                Some(last) => (Bound::Excluded(last), Bound::Unbounded),
                None => (Bound::Unbounded, Bound::Unbounded),
            };
            let mut keys: Vec<PendingKey> = pending
                .rows
                .range(after)
                .take(take)
                .map(|(k, _)| *k)
                .collect();
            // Wrap around to the start of the key space.
            let missing = take - keys.len();
            keys.extend(pending.rows.keys().take(missing).copied());
            if let Some(last) = keys.last() {
                pending.swept_to = Some(*last);
            }
            keys.iter()
                .filter_map(|key| {
                    let row = pending.remove(key)?;
                    Some((pending.table_key(key), row))
                })
                .collect::<Vec<(Vec<u8>, Row)>>()
        };
        // Key order touches each leaf once.
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let flushed = Flushed {
            rows,
            pending: self.clone(),
            committed: AtomicBool::new(false),
        };
        let table = tables.get(EVENT_DEDUPE)?;
        for (key, row) in &flushed.rows {
            table.insert(key.as_slice(), row.as_slice())?;
        }
        Ok(Some(flushed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Ingested, NewEvent, Store, token_digest};

    fn event(n: usize) -> NewEvent {
        let body = format!("{{\"n\":{n}}}").into_bytes();
        NewEvent {
            workspace_id: "ws-dedupe".into(),
            event_type: "NEW_TIME_ENTRY".into(),
            source: "clockify".into(),
            source_id: None,
            headers: vec![],
            dedupe: crate::store::Dedupe::Key(token_digest(&format!("{n}"))),
            entities: vec![],
            body,
        }
    }

    async fn ingest_all(
        store: &std::sync::Arc<Store>,
        range: std::ops::Range<usize>,
    ) -> Vec<Ingested> {
        let mut tasks = tokio::task::JoinSet::new();
        for n in range {
            let store = store.clone();
            tasks.spawn(async move { (n, store.ingest(event(n)).await.unwrap()) });
        }
        let mut all: Vec<(usize, Ingested)> = tasks.join_all().await;
        all.sort_by_key(|(n, _)| *n);
        all.into_iter().map(|(_, ingested)| ingested).collect()
    }

    async fn table_rows(store: &Store) -> u64 {
        store
            .read(|rtx| {
                Ok(redb::ReadableTableMetadata::len(
                    &rtx.open_table(EVENT_DEDUPE)?,
                )?)
            })
            .await
            .unwrap()
    }

    fn duplicates(ingested: &[Ingested]) -> usize {
        ingested
            .iter()
            .filter(|i| matches!(i, Ingested::Duplicate { .. }))
            .count()
    }

    /// Rows reach the table in bulk, duplicates are found whether their row was written, and
    /// rows still in memory come back after the store is reopened without a flush (a crash).
    /// Rows past the window are swept from the table a step at a time: each step goes on
    /// where the previous one stopped, and the sweep starts again after the end. Rows inside
    /// the window stay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_past_the_window_are_swept_away() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            std::sync::Arc::new(Store::open(&dir.path().join("data.redb"), &[7u8; 32]).unwrap());
        ingest_all(&store, 0..FLUSH_ROWS + 100).await;
        let written = table_rows(&store).await;
        assert!(written > 0, "rows reached the table");
        let sweep = |now: i64| {
            let store = store.clone();
            async move {
                let (mut deleted, mut steps) = (0u64, 0u64);
                loop {
                    let (n, wrapped) = store.sweep_expired_dedupe(now, 100).await.unwrap();
                    deleted += n as u64;
                    steps += 1;
                    if wrapped {
                        return (deleted, steps);
                    }
                }
            }
        };
        let now = jiff::Timestamp::now().as_millisecond();
        assert_eq!(
            sweep(now).await,
            (0, written / 100 + 1),
            "inside the window"
        );
        assert_eq!(table_rows(&store).await, written);
        let (deleted, _) = sweep(now + 2 * DEDUPE_WINDOW_MS).await;
        assert_eq!(deleted, written, "past the window");
        assert_eq!(table_rows(&store).await, 0);
        store.shutdown();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_are_flushed_in_bulk_and_rebuilt_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.redb");
        let key = [7u8; 32];
        let total = FLUSH_ROWS + 100;
        {
            let store = std::sync::Arc::new(Store::open(&path, &key).unwrap());
            let first = ingest_all(&store, 0..FLUSH_ROWS - 1).await;
            assert_eq!(duplicates(&first), 0);
            assert_eq!(table_rows(&store).await, 0, "rows wait in memory");
            let rest = ingest_all(&store, FLUSH_ROWS - 1..total).await;
            assert_eq!(duplicates(&rest), 0);
            let written = table_rows(&store).await;
            assert!(written >= FLUSH_CHUNK as u64, "a bulk write, got {written}");
            assert!(
                written <= (total - FLUSH_ROWS + FLUSH_CHUNK) as u64,
                "the rest waits, got {written}"
            );
            // Every row is found, written or waiting.
            let again = ingest_all(&store, 0..total).await;
            assert_eq!(duplicates(&again), total);
            store.shutdown();
        }
        let store = std::sync::Arc::new(Store::open(&path, &key).unwrap());
        let again = ingest_all(&store, 0..total).await;
        assert_eq!(duplicates(&again), total, "every row survives the reopen");
        let new = ingest_all(&store, total..total + 1).await;
        assert_eq!(duplicates(&new), 0);
        store.shutdown();
    }

    /// Pending rows are told apart by workspace and event type, an aborted flush puts its
    /// rows back, and an erased event's pending row goes.
    #[test]
    fn pending_rows_by_prefix_survive_an_aborted_flush() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("data.redb")).unwrap();
        let wtx = db.begin_write().unwrap();
        wtx.open_table(EVENT_DEDUPE).unwrap();
        wtx.commit().unwrap();
        let pending = Arc::new(PendingDedupe::default());
        let now = 1_700_000_000_000;
        let hash = [5u8; 32];
        let a = table_key("ws-a", "NEW_TIME_ENTRY", &hash);
        let b = table_key("ws-b", "NEW_TIME_ENTRY", &hash);
        let c = table_key("ws-a", "NEW_PROJECT", &hash);
        pending.insert(&a, row(&[1; 16], now));
        pending.insert(&b, row(&[2; 16], now));
        let wtx = db.begin_write().unwrap();
        // Each lookup opens (and closes) the table, as the writer's cache would.
        let get = |wtx: &WriteTransaction, key: &[u8]| {
            pending.get(&mut OpenTables::new(wtx), key).unwrap()
        };
        assert_eq!(get(&wtx, &a), Some(row(&[1; 16], now)));
        assert_eq!(get(&wtx, &b), Some(row(&[2; 16], now)));
        assert_eq!(get(&wtx, &c), None);
        pending.remove_if_points_at(&wtx, &b, &[9; 16]).unwrap();
        assert!(get(&wtx, &b).is_some(), "points elsewhere: kept");
        pending.remove_if_points_at(&wtx, &b, &[2; 16]).unwrap();
        assert_eq!(get(&wtx, &b), None);

        for n in 0..FLUSH_ROWS as u32 {
            let mut other = hash;
            other[..4].copy_from_slice(&n.to_be_bytes());
            pending.insert(
                &table_key("ws-c", "NEW_TIME_ENTRY", &other),
                row(&[3; 16], now),
            );
        }
        let before = pending.inner.lock().unwrap().rows.len();
        let flushed = pending
            .flush_if_full(&mut OpenTables::new(&wtx))
            .unwrap()
            .expect("a flush");
        assert!(pending.inner.lock().unwrap().rows.len() < before);
        wtx.abort().unwrap();
        drop(flushed);
        assert_eq!(
            pending.inner.lock().unwrap().rows.len(),
            before,
            "rows put back"
        );
        let wtx = db.begin_write().unwrap();
        assert_eq!(get(&wtx, &a), Some(row(&[1; 16], now)));
    }

    /// Prefixes no waiting row uses are dropped once enough were interned; the rows that
    /// wait keep their table keys and are still found.
    #[test]
    fn unused_prefixes_are_dropped() {
        let mut pending = Pending::default();
        let key = |ws: usize, n: u8| table_key(&format!("ws-{ws}"), "CUSTOM", &[n; 32]);
        for ws in 0..10 * PREFIXES_BEFORE_COMPACTION {
            pending.insert(&key(ws, 1), row(&[1; 16], 60_000));
            // Every other workspace's row is written out, as a flush would.
            if ws % 2 == 1 {
                let found = pending.find(&key(ws, 1)).unwrap();
                assert!(pending.remove(&found).is_some());
            }
        }
        let waiting = 5 * PREFIXES_BEFORE_COMPACTION;
        assert_eq!(pending.rows.len(), waiting);
        assert!(
            pending.prefixes.len() < 2 * waiting,
            "{} prefixes interned for {waiting} waiting rows",
            pending.prefixes.len()
        );
        assert_eq!(pending.prefixes.len(), pending.prefix_ids.len());
        for ws in (0..10 * PREFIXES_BEFORE_COMPACTION).step_by(2) {
            let found = pending
                .find(&key(ws, 1))
                .expect("a waiting row's prefix is kept");
            assert_eq!(pending.table_key(&found), key(ws, 1));
            assert!(pending.rows.contains_key(&found));
        }
        // Once the rows are gone, the next compaction drops every old prefix.
        let keys: Vec<PendingKey> = pending.rows.keys().copied().collect();
        for found in keys {
            pending.remove(&found);
        }
        let fresh = pending.compact_at - pending.prefixes.len() + 1;
        for ws in 0..fresh {
            pending.insert(&key(1_000_000 + ws, 1), row(&[2; 16], 60_000));
        }
        assert_eq!(
            pending.prefixes.len(),
            fresh,
            "only the new rows' prefixes are kept"
        );
        assert_eq!(pending.find(&key(0, 1)), None);
        assert!(pending.find(&key(1_000_000, 1)).is_some());
        assert!(pending.waiting.values().sum::<u32>() as usize == pending.rows.len());
    }

    #[test]
    fn the_oldest_waiting_row_bounds_the_log() {
        let mut pending = Pending::default();
        let key = |n: u8| table_key("ws", "NEW_TIME_ENTRY", &[n; 32]);
        pending.insert(&key(1), row(&[2; 16], 120_500));
        pending.insert(&key(2), row(&[1; 16], 60_100));
        assert_eq!(pending.oldest_waiting(), Some([1; 16]));
        // A newer delivery of the same key replaces the row and its event.
        pending.insert(&key(2), row(&[3; 16], 180_000));
        assert_eq!(pending.oldest_waiting(), Some([2; 16]));
        let first = pending.find(&key(1)).unwrap();
        assert!(pending.remove(&first).is_some());
        assert_eq!(pending.oldest_waiting(), Some([3; 16]));
        let second = pending.find(&key(2)).unwrap();
        assert!(pending.remove(&second).is_some());
        assert_eq!(pending.oldest_waiting(), None);
        assert!(pending.waiting.is_empty());
    }

    /// A restart rebuilds the waiting rows from the log, inside the window only.
    #[test]
    fn waiting_rows_come_back_from_the_log_of_recent_events() {
        let now = 1_700_000_000_000;
        let id_at = |ms: i64, n: u8| {
            let mut id = crate::store::schema::id_floor_for_millis(ms);
            id[15] = n;
            id
        };
        let recent = |n: u8| RecentRow {
            workspace_id: "ws".into(),
            dedupe_key: table_key("ws", "NEW_TIME_ENTRY", &[n; 32]),
            entities: vec![],
        };
        let rows = vec![
            (id_at(now - DEDUPE_WINDOW_MS - 1, 1), recent(1)),
            (id_at(now - 1000, 2), recent(2)),
            (id_at(now - 500, 3), recent(2)),
        ];
        let pending = PendingDedupe::default();
        for (id, row) in &rows {
            pending.restore(id, row, now);
        }
        let inner = pending.inner.lock().unwrap();
        assert_eq!(inner.get(&recent(1).dedupe_key), None, "outside the window");
        assert_eq!(
            inner.get(&recent(2).dedupe_key),
            Some(row(&id_at(now - 500, 3), now - 500)),
            "the later event wins"
        );
        assert_eq!(inner.oldest_waiting(), Some(id_at(now - 500, 3)));
    }
}
