//! The layout of the data file: every table, the id types, how keys are built (composite keys
//! are length-prefixed parts, so one workspace's rows form a contiguous, ordered range, and
//! UUIDv7 ids sort by time within it), the scans that rely on that layout, and the record
//! encoding. Every other store file builds on this one; it imports none of them.

use redb::{ReadableTable, TableDefinition};

use super::error::StoreError;

/// A table of the file; every table is keyed by bytes and holds bytes.
pub(crate) type Table = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// Schema version, encryption-key check, dedupe watermark, readiness probe.
pub(crate) const META: Table = TableDefinition::new("meta");
/// Workspace id → installation record.
pub(crate) const INSTALLATIONS: Table = TableDefinition::new("installations");
/// SHA-256 of a webhook token → workspace id.
pub(crate) const WEBHOOK_TOKENS: Table = TableDefinition::new("webhook_tokens");
/// `[ws][id]` → event record: schema 9 and older, moved to one table per workspace
/// ([`events_table_name`]) by the migration to schema 10.
pub(crate) const LEGACY_EVENTS: Table = TableDefinition::new("events");
/// What the events tables are called together (figures, counts): `events`.
pub(crate) const EVENTS_LABEL: &str = "events";
/// Names of the per-workspace events tables start with this; the workspace id follows.
pub(crate) const EVENTS_TABLE_PREFIX: &str = "events/";
/// `[ws][event type][id]` → empty.
pub(crate) const EVENTS_BY_TYPE: Table = TableDefinition::new("events_by_type");
/// `[ws][event type][dedupe key]` → `[id][received ms]`.
pub(crate) const EVENT_DEDUPE: Table = TableDefinition::new("event_dedupe");
/// `[id]` → what the in-memory dedupe rows and entity index rows of a recent event are
/// rebuilt from at start (`store/recent.rs`): appended with the event, trimmed from the front.
pub(crate) const RECENT_EVENTS: Table = TableDefinition::new("recent_events");
/// `[ws][bucket][entity][event id]` → empty: the entity index (`store/entity_index.rs`).
pub(crate) const ENTITY_EVENTS: Table = TableDefinition::new("entity_events");
/// Source id → source record.
pub(crate) const SOURCES: Table = TableDefinition::new("sources");
/// `[ws][source id]` → empty.
pub(crate) const SOURCES_BY_WORKSPACE: Table = TableDefinition::new("sources_by_workspace");
/// Workspace id → subscription report.
pub(crate) const SUBSCRIPTIONS: Table = TableDefinition::new("subscriptions");
/// `[ws][entity type][entity id]` → entity record.
pub(crate) const ENTITIES: Table = TableDefinition::new("entities");
/// Workspace id → bootstrap progress.
pub(crate) const BOOTSTRAP: Table = TableDefinition::new("bootstrap");
/// `[ws][execution id]` → explorer execution record.
pub(crate) const EXECUTIONS: Table = TableDefinition::new("executions");
/// `[ws][flow id]` → flow record.
pub(crate) const FLOWS: Table = TableDefinition::new("flows");
/// `[ws][flow id]` → run counters of the flow.
pub(crate) const FLOW_STATS: Table = TableDefinition::new("flow_stats");
/// `[ws][run id]` → run record.
pub(crate) const FLOW_RUNS: Table = TableDefinition::new("flow_runs");
/// `[ws][flow id][run id]` → empty.
pub(crate) const FLOW_RUNS_BY_FLOW: Table = TableDefinition::new("flow_runs_by_flow");
/// `[ws][event id][flow id]` → run id: the one run an event produces per flow.
pub(crate) const FLOW_RUNS_BY_EVENT: Table = TableDefinition::new("flow_runs_by_event");
/// `[run id]` → workspace id: runs not finished yet, oldest first.
pub(crate) const FLOW_RUN_QUEUE: Table = TableDefinition::new("flow_run_queue");
/// `[run id]` → how many times the run was started without ending cleanly (u32, LE): a run
/// in flight when the process died is counted, and quarantined when it happens again.
pub(crate) const FLOW_RUN_STARTS: Table = TableDefinition::new("flow_run_starts");
/// `[ws][destination id]` → destination record.
pub(crate) const DESTINATIONS: Table = TableDefinition::new("destinations");
/// `[ws][delivery id]` → delivery record (with its attempts).
pub(crate) const DELIVERIES: Table = TableDefinition::new("deliveries");
/// `[ws][destination id][delivery id]` → empty.
pub(crate) const DELIVERIES_BY_DESTINATION: Table =
    TableDefinition::new("deliveries_by_destination");
/// `[delivery id]` → workspace id: deliveries not finished yet, oldest first.
pub(crate) const DELIVERY_QUEUE: Table = TableDefinition::new("delivery_queue");

/// `[ws][UUIDv7]` → audit entry: who changed what, when.
pub(crate) const AUDIT: Table = TableDefinition::new("audit");

/// Workspace id → the pause of its flows.
pub(crate) const FLOW_PAUSES: Table = TableDefinition::new("flow_pauses");

/// The fixed tables of the file; with the events tables ([`all_table_names`]) they are what
/// backups copy and `check` counts.
pub(crate) const TABLES: &[Table] = &[
    META,
    INSTALLATIONS,
    WEBHOOK_TOKENS,
    EVENTS_BY_TYPE,
    EVENT_DEDUPE,
    RECENT_EVENTS,
    ENTITY_EVENTS,
    SOURCES,
    SOURCES_BY_WORKSPACE,
    SUBSCRIPTIONS,
    ENTITIES,
    BOOTSTRAP,
    EXECUTIONS,
    FLOWS,
    FLOW_STATS,
    FLOW_RUNS,
    FLOW_RUNS_BY_FLOW,
    FLOW_RUNS_BY_EVENT,
    FLOW_RUN_QUEUE,
    FLOW_RUN_STARTS,
    DESTINATIONS,
    DELIVERIES,
    DELIVERIES_BY_DESTINATION,
    DELIVERY_QUEUE,
    AUDIT,
    FLOW_PAUSES,
];

/// The name of the table of `ws`'s events: `[id]` → event record. One table per workspace,
/// so every new event goes past the end of its tree, where redb starts a new leaf instead of
/// splitting a full one in half: the pages stay full (`[ws][id]` keys in one table appended
/// in the middle of the tree and left every leaf about half full).
pub(crate) fn events_table_name(ws: &str) -> String {
    format!("{EVENTS_TABLE_PREFIX}{ws}")
}

/// The table named `name` (an events table's name from [`events_table_name`]).
pub(crate) fn named_table(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

/// Deletes the table `name`, held open as `table`, when it has no rows left: opening a table in
/// a write transaction creates it, and an empty events table would put its workspace on the
/// lists of workspaces with events.
pub(crate) fn delete_if_empty(
    wtx: &redb::WriteTransaction,
    table: redb::Table<'_, &'static [u8], &'static [u8]>,
    name: &str,
) -> Result<(), StoreError> {
    if redb::ReadableTableMetadata::is_empty(&table)? {
        drop(table);
        wtx.delete_table(named_table(name))?;
    }
    Ok(())
}

/// The workspace whose events table is called `name`, if it is one.
pub(crate) fn events_table_workspace(name: &str) -> Option<&str> {
    name.strip_prefix(EVENTS_TABLE_PREFIX)
        .filter(|ws| !ws.is_empty())
}

/// The per-workspace events tables among `names` (a transaction's `list_tables()`), as
/// (table name, workspace id), in name order.
pub(crate) fn events_tables(names: impl Iterator<Item = String>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = names
        .filter_map(|name| {
            let ws = events_table_workspace(&name)?.to_string();
            Some((name, ws))
        })
        .collect();
    out.sort();
    out
}

/// Every table of a file: the fixed ones, then the events tables of [`events_tables`].
pub(crate) fn all_table_names(names: impl Iterator<Item = String>) -> Vec<String> {
    TABLES
        .iter()
        .map(|t| redb::TableHandle::name(t).to_string())
        .chain(events_tables(names).into_iter().map(|(name, _)| name))
        .collect()
}

/// Whether `ws` has an installation record: writes that follow slow outside work (a Clockify
/// call, a bootstrap page) check it, so a workspace erased meanwhile is not partly recreated.
pub(crate) fn installed(wtx: &redb::WriteTransaction, ws: &str) -> Result<bool, StoreError> {
    Ok(wtx.open_table(INSTALLATIONS)?.get(ws.as_bytes())?.is_some())
}

/// An event's id: a UUIDv7 made on the writer thread, so id order is commit order.
pub type EventId = [u8; 16];
pub type FlowId = [u8; 16];
pub type RunId = [u8; 16];

/// The text form of every id (events, flows, runs, executions).
pub fn format_id(id: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*id).to_string()
}

pub fn parse_id(text: &str) -> Option<[u8; 16]> {
    uuid::Uuid::parse_str(text).ok().map(|u| *u.as_bytes())
}

pub fn format_event_id(id: &EventId) -> String {
    format_id(id)
}

pub fn parse_event_id(text: &str) -> Option<EventId> {
    parse_id(text)
}

/// A new time-ordered id.
pub fn new_id() -> [u8; 16] {
    *uuid::Uuid::now_v7().as_bytes()
}

pub(crate) fn token_digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// Records are postcard-encoded enums whose variant is the record version.
pub(crate) fn encode<T: serde::Serialize>(record: &T) -> Vec<u8> {
    postcard::to_allocvec(record).expect("records always serialize")
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Decode(e.to_string()))
}

/// Appends a length-prefixed part (parts longer than 255 bytes are refused upstream).
pub(crate) fn push_part(key: &mut Vec<u8>, part: &str) {
    let bytes = part.as_bytes();
    debug_assert!(bytes.len() <= u8::MAX as usize);
    key.push(bytes.len().min(255) as u8);
    key.extend_from_slice(&bytes[..bytes.len().min(255)]);
}

/// `[len][workspace]`: the prefix of every per-workspace key.
pub(crate) fn workspace_prefix(workspace_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + workspace_id.len() + 40);
    push_part(&mut key, workspace_id);
    key
}

/// `[len][workspace][len][second]`.
pub(crate) fn two_part_prefix(workspace_id: &str, second: &str) -> Vec<u8> {
    let mut key = workspace_prefix(workspace_id);
    push_part(&mut key, second);
    key
}

pub(crate) fn with_suffix(prefix: &[u8], suffix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + suffix.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(suffix);
    key
}

/// The smallest key greater than every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

/// The smallest UUIDv7 of a millisecond: used as a range bound for time filters.
pub(crate) fn id_floor_for_millis(ms: i64) -> [u8; 16] {
    let ms = ms.clamp(0, (1i64 << 48) - 1) as u64;
    let mut id = [0u8; 16];
    id[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    id
}

/// The workspaces with rows in `table` (keys `[len][workspace]…`), in key order. Skips from
/// one workspace prefix to the next instead of visiting every row; `bad_key` is the error
/// for a key that does not start with a workspace.
pub(crate) fn workspaces_of(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    bad_key: fn() -> StoreError,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let mut cursor: Vec<u8> = Vec::new();
    loop {
        let next = table.range::<&[u8]>(cursor.as_slice()..)?.next();
        let Some(entry) = next else { break };
        let (k, _) = entry?;
        let key = k.value();
        let len = *key.first().ok_or_else(bad_key)? as usize;
        let ws =
            std::str::from_utf8(key.get(1..1 + len).ok_or_else(bad_key)?).map_err(|_| bad_key())?;
        out.push(ws.to_string());
        cursor = prefix_end(&key[..1 + len]);
    }
    Ok(out)
}

/// The oldest ids (at most `max`) of the rows `[prefix][UUIDv7]` in `table` made before
/// `cutoff_ms`, or of all the prefix's rows with `i64::MAX`. Retention collects a batch with
/// this, then removes it; `bad_key` is the error for a suffix that is not an id. An empty
/// prefix means every row (a table keyed by id alone, like an events table).
pub(crate) fn ids_before(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    prefix: &[u8],
    cutoff_ms: i64,
    max: usize,
    bad_key: fn() -> StoreError,
) -> Result<Vec<[u8; 16]>, StoreError> {
    use std::ops::Bound;
    let end = if cutoff_ms != i64::MAX {
        Bound::Excluded(with_suffix(prefix, &id_floor_for_millis(cutoff_ms)))
    } else if prefix.is_empty() {
        // No key is past every key; `prefix_end` of nothing would be `[0xff]`.
        Bound::Unbounded
    } else {
        Bound::Excluded(prefix_end(prefix))
    };
    let mut ids = Vec::new();
    let range = (Bound::Included(prefix), end.as_ref().map(Vec::as_slice));
    for entry in table.range::<&[u8]>(range)?.take(max) {
        let (k, _) = entry?;
        ids.push(
            k.value()[prefix.len()..]
                .try_into()
                .map_err(|_| bad_key())?,
        );
    }
    Ok(ids)
}

/// Removes the oldest rows (at most `max`) of `[prefix][UUIDv7]` in `table` made before
/// `cutoff_ms` ([`ids_before`]); returns how many. Retention of simple logs (explorer
/// executions, audit entries) is this one step.
pub(crate) fn remove_ids_before(
    wtx: &redb::WriteTransaction,
    table: Table,
    prefix: &[u8],
    cutoff_ms: i64,
    max: usize,
    bad_key: fn() -> StoreError,
) -> Result<usize, StoreError> {
    let mut table = wtx.open_table(table)?;
    let ids = ids_before(&table, prefix, cutoff_ms, max, bad_key)?;
    for id in &ids {
        table.remove(with_suffix(prefix, id).as_slice())?;
    }
    Ok(ids.len())
}

/// `[ws][flow id]`: flows and their counters.
pub(super) fn flow_key(ws: &str, id: &FlowId) -> Vec<u8> {
    with_suffix(&workspace_prefix(ws), id)
}

/// `[ws][run id]`: runs.
pub(super) fn run_key(ws: &str, id: &RunId) -> Vec<u8> {
    with_suffix(&workspace_prefix(ws), id)
}

/// `[ws][flow id][run id]`: a flow's runs in order.
pub(super) fn by_flow_key(ws: &str, flow: &FlowId, run: &RunId) -> Vec<u8> {
    let mut key = flow_key(ws, flow);
    key.extend_from_slice(run);
    key
}

/// `[ws][event id][flow id]`: the run an event produced for a flow.
pub(super) fn by_event_key(ws: &str, event: &EventId, flow: &FlowId) -> Vec<u8> {
    let mut key = with_suffix(&workspace_prefix(ws), event);
    key.extend_from_slice(flow);
    key
}

/// Milliseconds since the epoch encoded in a UUIDv7.
pub fn millis_of_id(id: &[u8; 16]) -> i64 {
    let mut bytes = [0u8; 8];
    bytes[2..].copy_from_slice(&id[..6]);
    u64::from_be_bytes(bytes) as i64
}

/// Inserts `entries` (in key order, each new or replacing a row) through a cursor: a run of
/// keys that falls into one gap of the table is written as full leaves, without a descent
/// from the root per key. Rows written in the middle of a table (the entity index's buckets
/// go after each workspace's older ones) would otherwise split full leaves in half, never
/// filled again; a copy into an empty table (backups) is built faster.
pub(crate) fn insert_sorted<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    table: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
    entries: &[(K, V)],
) -> Result<(), StoreError> {
    let mut at = 0;
    while at < entries.len() {
        let from = at;
        let first: &[u8] = entries[at].0.as_ref();
        let mut cursor = table.lower_bound_mut(std::ops::Bound::Included(first))?;
        while let Some((key, value)) = entries.get(at) {
            match cursor.insert_before(key.as_ref(), value.as_ref()) {
                Ok(()) => at += 1,
                // The next key is past the gap's right neighbour (or equal to it).
                Err(redb::CursorError::UnorderedKey) => break,
                Err(redb::CursorError::Storage(e)) => return Err(e.into()),
                Err(other) => return Err(StoreError::Storage(other.to_string())),
            }
        }
        cursor.close()?;
        if at == from {
            // The key is already there (a bucket written again after a crash): replace it.
            let (key, value) = &entries[at];
            table.insert(key.as_ref(), value.as_ref())?;
            at += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_prefixes_order_as_expected() {
        let id = *uuid::Uuid::now_v7().as_bytes();
        let ms = millis_of_id(&id);
        assert!(id_floor_for_millis(ms) <= id);
        assert!(id_floor_for_millis(ms + 1) > id);
        let p = workspace_prefix("ws");
        assert!(with_suffix(&p, &[0xff; 16]) < prefix_end(&p));
        assert!(workspace_prefix("ws") != workspace_prefix("ws2")[..3]);
    }

    #[test]
    fn scans_find_workspaces_and_the_oldest_ids() {
        const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("t");
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let wtx = db.begin_write().unwrap();
        let mut table = wtx.open_table(TABLE).unwrap();
        for (ws, ms) in [("a", 3), ("a", 1), ("a", 2), ("bb", 1), ("c", 5)] {
            let mut id = id_floor_for_millis(ms);
            id[15] = 1;
            let key = with_suffix(&workspace_prefix(ws), &id);
            table.insert(key.as_slice(), [].as_slice()).unwrap();
        }
        let bad = || StoreError::Decode("malformed key".into());
        // Key order: the length prefix sorts shorter ids first.
        assert_eq!(workspaces_of(&table, bad).unwrap(), ["a", "c", "bb"]);
        let a = workspace_prefix("a");
        let millis = |cutoff_ms, max| -> Vec<i64> {
            let ids = ids_before(&table, &a, cutoff_ms, max, bad).unwrap();
            ids.iter().map(millis_of_id).collect()
        };
        assert_eq!(millis(3, 10), [1, 2]);
        assert_eq!(millis(3, 1), [1]);
        assert_eq!(millis(i64::MAX, 10), [1, 2, 3]);
        assert!(millis(1, 10).is_empty());
        // An empty prefix: a table keyed by id alone, ids up to the last possible one.
        let ids = wtx.open_table(redb::TableDefinition::<&[u8], &[u8]>::new("ids"));
        let mut ids = ids.unwrap();
        for id in [id_floor_for_millis(2), [0xff; 16], id_floor_for_millis(1)] {
            ids.insert(id.as_slice(), [].as_slice()).unwrap();
        }
        let all = ids_before(&ids, &[], i64::MAX, 10, bad).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[2], [0xff; 16]);
        let before_2 = ids_before(&ids, &[], 2, 10, bad).unwrap();
        assert_eq!(before_2, [id_floor_for_millis(1)]);
    }
}
