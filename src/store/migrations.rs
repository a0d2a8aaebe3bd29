//! Migrations that change data (the others are no-ops in `db::MIGRATIONS`): each runs once,
//! inside the transaction that opens a file of an older schema.

use redb::{ReadableTable, WriteTransaction};

use super::dedupe::{DEDUPE_WINDOW_MS, table_key};
use super::error::StoreError;
use super::event_record::decode_with_dedupe_key;
use super::recent::RecentRow;
use super::schema::{
    EventId, LEGACY_EVENTS, META, RECENT_EVENTS, encode, events_table_name, id_floor_for_millis,
    named_table, prefix_end, with_suffix, workspace_prefix, workspaces_of,
};

/// `META` key of schemas 3 to 6: every event received before this time (Unix ms) had its
/// dedupe row in the table; later ones waited in memory.
const META_INDEXED_UNTIL: &[u8] = b"dedupe_indexed_until_ms";
/// The wall clock may have stepped back; schemas 3 to 6 re-read this much before the watermark.
const REBUILD_MARGIN_MS: i64 = 60_000;

/// 6 → 7: the events whose dedupe rows were not in the table yet get their row in the log of
/// recent events, from which every start rebuilds the waiting rows from now on.
pub(super) fn recent_events_from_watermark(wtx: &WriteTransaction) -> Result<(), StoreError> {
    let mut meta = wtx.open_table(META)?;
    let Some(indexed_until) = meta
        .remove(META_INDEXED_UNTIL)?
        .and_then(|v| v.value().try_into().ok().map(i64::from_le_bytes))
    else {
        return Ok(());
    };
    drop(meta);
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let since = indexed_until
        .saturating_sub(REBUILD_MARGIN_MS)
        .max(now_ms - DEDUPE_WINDOW_MS);
    let floor = id_floor_for_millis(since);
    let events = wtx.open_table(LEGACY_EVENTS)?;
    let mut recent = wtx.open_table(RECENT_EVENTS)?;
    let bad_key = || StoreError::Decode("malformed event key".into());
    for ws in workspaces_of(&events, bad_key)? {
        let prefix = workspace_prefix(&ws);
        let lower = with_suffix(&prefix, &floor);
        for entry in events.range(lower.as_slice()..prefix_end(&prefix).as_slice())? {
            let (k, v) = entry?;
            let id: EventId = k.value()[prefix.len()..]
                .try_into()
                .map_err(|_| bad_key())?;
            let (event, dedupe_key) = decode_with_dedupe_key(&ws, &id, v.value())?;
            let row = RecentRow {
                workspace_id: ws.clone(),
                dedupe_key: table_key(&ws, &event.event_type, &dedupe_key),
                entities: Vec::new(),
            };
            recent.insert(id.as_slice(), encode(&row).as_slice())?;
        }
    }
    Ok(())
}

/// 9 → 10: every workspace's events move from `[ws][id]` keys in one table to `[id]` keys in a
/// table of their own (`schema::events_table_name`), in id order, so the new tables' pages
/// are full; the old table is deleted.
pub(super) fn events_to_workspace_tables(wtx: &WriteTransaction) -> Result<(), StoreError> {
    let bad_key = || StoreError::Decode("malformed event key".into());
    {
        let events = wtx.open_table(LEGACY_EVENTS)?;
        for ws in workspaces_of(&events, bad_key)? {
            let prefix = workspace_prefix(&ws);
            let name = events_table_name(&ws);
            let mut table = wtx.open_table(named_table(&name))?;
            for entry in events.range(prefix.as_slice()..prefix_end(&prefix).as_slice())? {
                let (k, v) = entry?;
                let id: EventId = k.value()[prefix.len()..]
                    .try_into()
                    .map_err(|_| bad_key())?;
                table.insert(id.as_slice(), v.value())?;
            }
        }
    }
    wtx.delete_table(LEGACY_EVENTS)?;
    Ok(())
}
