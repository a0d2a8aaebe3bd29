//! Stored events (Clockify webhooks and custom sources): the log itself, an index by event
//! type, the dedupe table, the entity index, and the log of recent events those two are
//! rebuilt from. Ids are UUIDv7 made on the writer thread, so id order is commit order (SSE
//! resume relies on that).

use std::sync::Arc;
use std::time::Instant;

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, TableHandle, WriteTransaction};
use sha2::Digest;

use super::db::Store;
use super::dedupe::{self, DEDUPE_WINDOW_MS, PendingDedupe};
use super::destination_model::{DestinationIndex, QueuedDelivery, enqueue_deliveries};
use super::entity_index::{self, EntityIndex};
use super::error::StoreError;
use super::event_record::{
    StoredEvent, count_duplicate, decode_event, decode_with_dedupe_key, encode_new,
};
use super::flow_index::{FlowIndex, enqueue_for_event};
use super::flow_model::QueuedRun;
use super::recent::{self, RecentRow};
use super::schema::{
    EVENTS_BY_TYPE, EventId, delete_if_empty, events_table_name, events_tables,
    id_floor_for_millis, ids_before, millis_of_id, named_table, prefix_end, two_part_prefix,
    with_suffix, workspace_prefix,
};
use super::writer::{AfterCommit, OpenTables};

/// An event to store; the id and time are assigned at commit.
pub struct NewEvent {
    pub workspace_id: String,
    pub event_type: String,
    pub source: String,
    pub source_id: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Deliveries with the same key (same workspace and event type) within
    /// [`DEDUPE_WINDOW_MS`] are one event.
    pub dedupe: Dedupe,
    /// The ids of the entities the body names, for the entity index (`crate::entities`).
    pub entities: Vec<String>,
}

/// What makes two deliveries the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dedupe {
    /// The same bytes (the key is their SHA-256, not stored with the event).
    Body,
    /// The same key (e.g. a Standard Webhooks message id, hashed).
    Key([u8; 32]),
}

#[derive(Debug)]
pub enum Ingested {
    /// Shared with the live stream and the flow engine without copying the body.
    Stored(std::sync::Arc<StoredEvent>),
    Duplicate {
        original: EventId,
    },
}

/// Bounds and filters of a newest-first listing.
pub struct EventQuery {
    /// Only ids strictly below this (the previous page's last id).
    pub before: Option<EventId>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub event_types: Vec<String>,
    pub limit: usize,
    /// Stop after examining this many rows, so a rare filter cannot scan the whole log.
    pub scan_limit: usize,
    /// Stop examining rows at this instant (a page may come back short, with a cursor).
    pub deadline: Option<Instant>,
}

pub struct EventPage {
    pub items: Vec<StoredEvent>,
    /// Where the next page starts, when there may be more.
    pub next_cursor: Option<EventId>,
    /// Rows examined.
    pub scanned: usize,
    /// The oldest event examined.
    pub scanned_to: Option<EventId>,
}

type ReadEvents = ReadOnlyTable<&'static [u8], &'static [u8]>;

/// `ws`'s events table in a read transaction; `None` before its first event.
fn read_events(rtx: &ReadTransaction, ws: &str) -> Result<Option<ReadEvents>, StoreError> {
    match rtx.open_table(named_table(&events_table_name(ws))) {
        Ok(table) => Ok(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn type_key(ws: &str, event_type: &str, id: &EventId) -> Vec<u8> {
    with_suffix(&two_part_prefix(ws, event_type), id)
}

/// What [`Store::ingest`] works out on the caller's thread, so the writer thread (the
/// bottleneck) does less per event: the compressed, encoded record, the dedupe row key and
/// the row for the log of recent events.
pub(crate) struct PreparedEvent {
    /// The event with an empty body and zero id and time.
    event: StoredEvent,
    body: Vec<u8>,
    record: Vec<u8>,
    recent: RecentRow,
}

impl PreparedEvent {
    fn new(new: NewEvent) -> PreparedEvent {
        let (stored_key, dedupe_key) = match new.dedupe {
            Dedupe::Body => (None, sha2::Sha256::digest(&new.body).into()),
            Dedupe::Key(key) => (Some(key), key),
        };
        let record = encode_new(
            &new.event_type,
            &new.source,
            new.source_id.as_deref(),
            stored_key,
            &new.headers,
            &new.body,
        );
        let mut entities: Vec<Vec<u8>> = new
            .entities
            .iter()
            .filter_map(|id| entity_index::entity_key(id))
            .collect();
        entities.sort_unstable();
        entities.dedup();
        let recent = RecentRow {
            dedupe_key: dedupe::table_key(&new.workspace_id, &new.event_type, &dedupe_key),
            workspace_id: new.workspace_id.clone(),
            entities,
        };
        let event = StoredEvent {
            id: [0; 16],
            workspace_id: new.workspace_id,
            event_type: new.event_type,
            source: new.source,
            source_id: new.source_id,
            received_at: 0,
            headers: new.headers,
            body: Vec::new(),
            duplicates: 0,
        };
        PreparedEvent {
            event,
            body: new.body,
            record,
            recent,
        }
    }
}

/// What ingestion queues beside the event, in the same transaction.
#[derive(Default)]
pub(crate) struct Queued {
    pub(crate) runs: Vec<QueuedRun>,
    pub(crate) deliveries: Vec<QueuedDelivery>,
}

/// The in-memory views ingestion consults to queue work without a read.
pub(crate) struct Routing<'a> {
    pub(crate) flows: &'a FlowIndex,
    pub(crate) destinations: &'a DestinationIndex,
}

/// Inserts one event (or records a duplicate) inside the writer's transaction, and queues
/// a run for every enabled flow it triggers and a delivery for every destination that wants
/// it (into `queued`) in the same transaction. A stored event also gets its row in the log of
/// recent events, whose entity keys are returned for the index (after the commit).
pub(crate) fn insert_event(
    tables: &mut OpenTables<'_>,
    prepared: PreparedEvent,
    now_ms: i64,
    routing: &Routing<'_>,
    queued: &mut Queued,
    dedupe: &PendingDedupe,
) -> Result<(Ingested, Vec<Vec<u8>>), StoreError> {
    let PreparedEvent {
        mut event,
        body,
        record,
        recent,
    } = prepared;
    let dkey = &recent.dedupe_key;
    if let Some(seen) = dedupe.get(tables, dkey)? {
        let (original, received) = dedupe::row_parts(&seen);
        let events = tables.get_named(&events_table_name(&event.workspace_id))?;
        let existing = events.get(original.as_slice())?.map(|v| v.value().to_vec());
        if let Some(bytes) = existing
            && now_ms - received < DEDUPE_WINDOW_MS
        {
            events.insert(original.as_slice(), count_duplicate(&bytes)?.as_slice())?;
            return Ok((Ingested::Duplicate { original }, Vec::new()));
        }
    }
    let id = *uuid::Uuid::now_v7().as_bytes();
    let received = millis_of_id(&id);
    dedupe.insert(dkey, dedupe::row(&id, received));
    tables
        .get_named(&events_table_name(&event.workspace_id))?
        .insert(id.as_slice(), record.as_slice())?;
    (event.id, event.received_at, event.body) = (id, received, body);
    tables.get(EVENTS_BY_TYPE)?.insert(
        type_key(&event.workspace_id, &event.event_type, &id).as_slice(),
        [].as_slice(),
    )?;
    recent::append(tables, &id, &recent)?;
    enqueue_for_event(tables.wtx(), routing.flows, &event, &mut queued.runs)?;
    enqueue_deliveries(tables, routing.destinations, &event, &mut queued.deliveries)?;
    Ok((Ingested::Stored(Arc::new(event)), recent.entities))
}

/// Removes an event with its index and dedupe rows (and its entity index rows, for the
/// `entities` given); returns whether it existed.
fn remove_event(
    wtx: &WriteTransaction,
    ws: &str,
    id: &EventId,
    entities: &[Vec<u8>],
    dedupe: &PendingDedupe,
    index: &EntityIndex,
) -> Result<bool, StoreError> {
    let name = events_table_name(ws);
    let mut events = wtx.open_table(named_table(&name))?;
    let removed = events.remove(id.as_slice())?.map(|v| v.value().to_vec());
    let Some(bytes) = removed else {
        // Opening the table created it if the workspace had no events.
        delete_if_empty(wtx, events, &name)?;
        return Ok(false);
    };
    let (event, dedupe_key) = decode_with_dedupe_key(ws, id, &bytes)?;
    let mut by_type = wtx.open_table(EVENTS_BY_TYPE)?;
    by_type.remove(type_key(ws, &event.event_type, id).as_slice())?;
    // Only drop the dedupe row if it still points at this event; past the window it is of
    // no use, so only younger events need the look-up.
    if jiff::Timestamp::now().as_millisecond() - event.received_at < 2 * DEDUPE_WINDOW_MS {
        let dkey = dedupe::table_key(ws, &event.event_type, &dedupe_key);
        dedupe.remove_if_points_at(wtx, &dkey, id)?;
        recent::remove(wtx, id)?;
    }
    index.remove(wtx, ws, id, entities)?;
    Ok(true)
}

/// What an ingest job hands its after-commit hook.
type IngestOutcome = (
    Ingested,
    Vec<Vec<u8>>,
    Queued,
    Option<dedupe::Flushed>,
    Option<entity_index::Step>,
);

impl Store {
    /// Stores an event durably (or counts a duplicate); resolves after the commit.
    pub async fn ingest(&self, new: NewEvent) -> Result<Ingested, StoreError> {
        let live = self.live.clone();
        let (flows, dispatch) = (self.flow_index.clone(), self.run_dispatch.clone());
        let destinations = self.destination_index.clone();
        let deliveries = self.delivery_dispatch.clone();
        let (dedupe, index) = (self.dedupe.clone(), self.entity_index.clone());
        let committed_index = index.clone();
        let prepared = PreparedEvent::new(new);
        let after_commit: AfterCommit<IngestOutcome> = Box::new(
            move |(ingested, entities, queued, flushed, step): &IngestOutcome| {
                if let Some(flushed) = flushed {
                    flushed.committed();
                }
                if let Some(step) = step {
                    step.committed();
                }
                if let Ingested::Stored(event) = ingested {
                    committed_index.committed(&event.workspace_id, &event.id, entities);
                    dispatch.committed(&queued.runs, Some(event));
                    deliveries.committed_with(&queued.deliveries, event);
                    // No receivers is normal (nobody has the page open).
                    let _ = live.send(event.clone());
                }
            },
        );
        // Through the batch's open tables: ingestion is the writer's hot path.
        self.writer
            .write_with_tables(
                move |tables: &mut OpenTables<'_>| {
                    let mut queued = Queued::default();
                    let now = jiff::Timestamp::now().as_millisecond();
                    let routing = Routing {
                        flows: &flows,
                        destinations: &destinations,
                    };
                    let (ingested, entities) =
                        insert_event(tables, prepared, now, &routing, &mut queued, &dedupe)?;
                    let flushed = dedupe.flush_if_full(tables)?;
                    let step = index.step(tables, dedupe.oldest_waiting())?;
                    Ok((ingested, entities, queued, flushed, step))
                },
                Some(after_commit),
            )
            .await
            .map(|(ingested, ..)| ingested)
    }

    pub async fn event(&self, ws: &str, id: EventId) -> Result<Option<StoredEvent>, StoreError> {
        let ws = ws.to_string();
        self.read(move |rtx| {
            let Some(events) = read_events(rtx, &ws)? else {
                return Ok(None);
            };
            let found = events.get(id.as_slice())?;
            found.map(|v| decode_event(&ws, &id, v.value())).transpose()
        })
        .await
    }

    /// Newest-first page of a workspace's events. `keep` filters (source, text …); the scan
    /// stops after `scan_limit` rows or at the deadline and then reports a cursor to
    /// continue from.
    pub async fn list_events(
        &self,
        ws: &str,
        query: EventQuery,
        keep: impl Fn(&StoredEvent) -> bool + Send + 'static,
    ) -> Result<EventPage, StoreError> {
        let ws = ws.to_string();
        self.read(move |rtx| {
            let lower = id_floor_for_millis(query.from_ms.unwrap_or(0));
            let mut upper = query
                .to_ms
                .map(|to| id_floor_for_millis(to.saturating_add(1)))
                .unwrap_or([0xff; 16]);
            if let Some(before) = query.before {
                upper = upper.min(before);
            }
            let mut page = EventPage {
                items: Vec::new(),
                next_cursor: None,
                scanned: 0,
                scanned_to: None,
            };
            let Some(events) = read_events(rtx, &ws)? else {
                return Ok(page);
            };
            // Whether to go on after `id` (just examined).
            let consider = |id: EventId, record: &[u8], page: &mut EventPage| {
                page.scanned += 1;
                page.scanned_to = Some(id);
                let event = decode_event(&ws, &id, record)?;
                if keep(&event) {
                    page.items.push(event);
                }
                // The clock is read every 64 rows.
                let out_of_time =
                    page.scanned % 64 == 0 && query.deadline.is_some_and(|d| Instant::now() >= d);
                Ok::<_, StoreError>(
                    page.items.len() < query.limit
                        && page.scanned < query.scan_limit
                        && !out_of_time,
                )
            };
            let mut exhausted = true;
            if query.event_types.is_empty() {
                for entry in events
                    .range::<&[u8]>(lower.as_slice()..upper.as_slice())?
                    .rev()
                {
                    let (k, v) = entry?;
                    let id: EventId = k.value().try_into().map_err(|_| bad_key())?;
                    if !consider(id, v.value(), &mut page)? {
                        exhausted = false;
                        break;
                    }
                }
            } else {
                // The per-type indexes merged newest first.
                let by_type = rtx.open_table(EVENTS_BY_TYPE)?;
                let mut types = query.event_types.clone();
                types.sort();
                types.dedup();
                let mut sources = Vec::new();
                for event_type in &types {
                    let prefix = two_part_prefix(&ws, event_type);
                    let start = with_suffix(&prefix, &lower);
                    let end = with_suffix(&prefix, &upper);
                    let range = by_type.range::<&[u8]>(start.as_slice()..end.as_slice())?;
                    sources.push((prefix.len(), range.rev(), None::<EventId>));
                }
                loop {
                    for (skip, range, head) in sources.iter_mut() {
                        if head.is_none()
                            && let Some(entry) = range.next()
                        {
                            let (k, _) = entry?;
                            *head = Some(k.value()[*skip..].try_into().map_err(|_| bad_key())?);
                        }
                    }
                    let Some(newest) = sources
                        .iter_mut()
                        .filter(|s| s.2.is_some())
                        .max_by_key(|s| s.2)
                    else {
                        break;
                    };
                    let id = newest.2.take().expect("a head");
                    let Some(record) = events.get(id.as_slice())? else {
                        continue;
                    };
                    if !consider(id, record.value(), &mut page)? {
                        exhausted = false;
                        break;
                    }
                }
            }
            if !exhausted {
                page.next_cursor = page.scanned_to;
            }
            Ok(page)
        })
        .await
    }

    /// Newest-first page of the events of `ws` that name `entity` (see `crate::entities`).
    pub async fn entity_events(
        &self,
        ws: &str,
        entity: &str,
        before: Option<EventId>,
        limit: usize,
    ) -> Result<EventPage, StoreError> {
        let Some(entity) = entity_index::entity_key(entity) else {
            return Ok(EventPage {
                items: Vec::new(),
                next_cursor: None,
                scanned: 0,
                scanned_to: None,
            });
        };
        let ws = ws.to_string();
        let index = self.entity_index.clone();
        self.read_db(move |db| {
            let mut items = Vec::new();
            let mut scanned = 0;
            let mut cursor = before;
            // Ids of events deleted since are skipped; the next ids fill their places.
            loop {
                let want = limit - items.len();
                let (ids, rtx) = index.events_of(db, &ws, &entity, cursor, want)?;
                let events = read_events(&rtx, &ws)?;
                let more = ids.len() > want;
                for id in ids.iter().take(want) {
                    scanned += 1;
                    cursor = Some(*id);
                    let Some(events) = &events else { break };
                    if let Some(v) = events.get(id.as_slice())? {
                        items.push(decode_event(&ws, id, v.value())?);
                    }
                }
                if !more || items.len() >= limit {
                    return Ok(EventPage {
                        items,
                        next_cursor: if more { cursor } else { None },
                        scanned,
                        scanned_to: cursor,
                    });
                }
            }
        })
        .await
    }

    /// Events with ids strictly after `after`, oldest first (SSE resume).
    pub async fn events_after(
        &self,
        ws: &str,
        after: EventId,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let ws = ws.to_string();
        self.read(move |rtx| {
            let mut out = Vec::new();
            let Some(events) = read_events(rtx, &ws)? else {
                return Ok(out);
            };
            for entry in events.range::<&[u8]>(after.as_slice()..)? {
                let (k, v) = entry?;
                if k.value() == after.as_slice() {
                    continue;
                }
                let id: EventId = k.value().try_into().map_err(|_| bad_key())?;
                out.push(decode_event(&ws, &id, v.value())?);
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    /// Erases one event with its index rows; `entities` are the ids its body names
    /// (`crate::entities`), whose entity index rows go too.
    pub async fn delete_event(
        &self,
        ws: &str,
        id: EventId,
        entities: Vec<String>,
    ) -> Result<bool, StoreError> {
        let ws = ws.to_string();
        let (dedupe, index) = (self.dedupe.clone(), self.entity_index.clone());
        let erased = index.clone();
        let keys: Vec<Vec<u8>> = entities
            .iter()
            .filter_map(|e| entity_index::entity_key(e))
            .collect();
        self.write_then(
            move |wtx| remove_event(wtx, &ws, &id, &keys, &dedupe, &index),
            move |removed| {
                if *removed {
                    erased.erased(&id);
                }
            },
        )
        .await
    }

    /// One step of the sweep of dedupe rows past the dedupe window as of `now_ms`: up to `max`
    /// rows examined; returns how many were deleted and whether the sweep reached the end of
    /// the table (and starts again).
    pub async fn sweep_expired_dedupe(
        &self,
        now_ms: i64,
        max: usize,
    ) -> Result<(usize, bool), StoreError> {
        let dedupe = self.dedupe.clone();
        self.write(move |wtx| dedupe.sweep_expired(wtx, now_ms - DEDUPE_WINDOW_MS, max))
            .await
    }

    /// Deletes up to `max` of the workspace's events received before `cutoff_ms` (all of
    /// them with `i64::MAX`); returns how many were deleted. `now_ms` is the caller's clock
    /// (retention's, which a benchmark may move). An event younger than two dedupe windows by
    /// it goes with every row about it. An older one only leaves the log: its dedupe and
    /// recent rows are past use (ingest checks that the event a dedupe row names still exists;
    /// the dedupe sweep and the trim of recent rows remove them), its row in the index by type
    /// goes with the others of its type ([`Store::delete_type_rows_before`]: a type's old rows
    /// are side by side, where one event's is among those of every other type) and its entity
    /// index rows with their bucket ([`Store::delete_entity_rows_before`]). So deleting a
    /// batch of old events reads none of them and changes the few leaves they fill. Lists by
    /// type skip a row whose event is gone.
    pub async fn delete_events_before(
        &self,
        ws: &str,
        cutoff_ms: i64,
        now_ms: i64,
        max: usize,
    ) -> Result<usize, StoreError> {
        let ws = ws.to_string();
        let (dedupe, index) = (self.dedupe.clone(), self.entity_index.clone());
        let erased = index.clone();
        self.write_then(
            move |wtx| {
                let name = events_table_name(&ws);
                let mut table = wtx.open_table(named_table(&name))?;
                let ids = ids_before(&table, &[], cutoff_ms, max, bad_key)?;
                let (young, old): (Vec<EventId>, Vec<EventId>) = ids
                    .iter()
                    .partition(|id| now_ms - millis_of_id(id) < 2 * DEDUPE_WINDOW_MS);
                for id in &old {
                    table.remove(id.as_slice())?;
                }
                drop(table);
                for id in &young {
                    remove_event(wtx, &ws, id, &[], &dedupe, &index)?;
                }
                Ok(ids)
            },
            move |ids| ids.iter().for_each(|id| erased.erased(id)),
        )
        .await
        .map(|ids| ids.len())
    }

    /// Deletes up to `max` rows of the workspace's index by type for events received before
    /// `cutoff_ms` (every row with `i64::MAX`), type by type; returns how many. Run after the
    /// events themselves ([`Store::delete_events_before`]). When fewer than `max` were left,
    /// an events table retention emptied is dropped too (an empty table would keep the
    /// workspace on the list retention visits).
    pub async fn delete_type_rows_before(
        &self,
        ws: &str,
        cutoff_ms: i64,
        max: usize,
    ) -> Result<usize, StoreError> {
        let ws = ws.to_string();
        self.write(move |wtx| {
            let mut by_type = wtx.open_table(EVENTS_BY_TYPE)?;
            let mut removed = 0;
            for prefix in type_prefixes(&by_type, &ws)? {
                for id in ids_before(&by_type, &prefix, cutoff_ms, max - removed, bad_key)? {
                    by_type.remove(with_suffix(&prefix, &id).as_slice())?;
                    removed += 1;
                }
                if removed == max {
                    return Ok(removed);
                }
            }
            let name = events_table_name(&ws);
            delete_if_empty(wtx, wtx.open_table(named_table(&name))?, &name)?;
            Ok(removed)
        })
        .await
    }

    /// Deletes up to `max` entity index rows of `ws` in buckets whose events were all received
    /// before `cutoff_ms` (every row with `i64::MAX`, and the rows still in memory are then
    /// forgotten); returns how many.
    pub async fn delete_entity_rows_before(
        &self,
        ws: &str,
        cutoff_ms: i64,
        max: usize,
    ) -> Result<usize, StoreError> {
        let ws = ws.to_string();
        let (index, forget) = (self.entity_index.clone(), self.entity_index.clone());
        let name = ws.clone();
        self.write_then(
            move |wtx| index.drop_before(wtx, &ws, cutoff_ms, max),
            move |_| {
                if cutoff_ms == i64::MAX {
                    forget.forget_workspace(&name);
                }
            },
        )
        .await
    }

    /// Workspaces that have stored events (for retention).
    pub async fn event_workspaces(&self) -> Result<Vec<String>, StoreError> {
        self.read(|rtx| {
            let names = rtx.list_tables()?.map(|t| t.name().to_string());
            Ok(events_tables(names).into_iter().map(|(_, ws)| ws).collect())
        })
        .await
    }
}

fn bad_key() -> StoreError {
    StoreError::Decode("malformed event key".into())
}

/// The index by type's key prefix (`[ws][type]`) of each event type `ws` has rows of, in key
/// order; skips from one type to the next instead of visiting every row.
pub(super) fn type_prefixes(
    by_type: &impl ReadableTable<&'static [u8], &'static [u8]>,
    ws: &str,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let prefix = workspace_prefix(ws);
    let end = prefix_end(&prefix);
    let mut cursor = prefix.clone();
    let mut out = Vec::new();
    loop {
        let next = by_type
            .range::<&[u8]>(cursor.as_slice()..end.as_slice())?
            .next();
        let Some(entry) = next else { break };
        let (k, _) = entry?;
        let key = k.value();
        let len = *key.get(prefix.len()).ok_or_else(bad_key)? as usize;
        let type_prefix = key.get(..prefix.len() + 1 + len).ok_or_else(bad_key)?;
        cursor = prefix_end(type_prefix);
        out.push(type_prefix.to_vec());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::event_record::{EventRecord, LegacyEvent, StoredBody};
    use crate::store::schema::{LEGACY_EVENTS, META, encode, workspace_prefix};

    fn legacy(id: EventId, received_at: i64, body: &[u8]) -> LegacyEvent {
        LegacyEvent {
            id,
            workspace_id: "ws".into(),
            event_type: "NEW_TIME_ENTRY".into(),
            source: "clockify".into(),
            source_id: None,
            received_at,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_vec(),
            dedupe_key: sha2::Sha256::digest(body).into(),
            duplicates: 0,
        }
    }

    /// Rewrites a fresh file as an older schema holding `records`, with `meta` rows.
    fn write_old_file(
        path: &std::path::Path,
        schema: u32,
        records: &[(EventId, Vec<u8>)],
        meta: &[(&[u8], Vec<u8>)],
    ) {
        let db = redb::Database::open(path).unwrap();
        let wtx = db.begin_write().unwrap();
        {
            let mut table = wtx.open_table(META).unwrap();
            table
                .insert(
                    b"schema_version".as_slice(),
                    schema.to_le_bytes().as_slice(),
                )
                .unwrap();
            for (k, v) in meta {
                table.insert(*k, v.as_slice()).unwrap();
            }
            let mut events = wtx.open_table(LEGACY_EVENTS).unwrap();
            for (id, record) in records {
                events
                    .insert(
                        with_suffix(&workspace_prefix("ws"), id).as_slice(),
                        record.as_slice(),
                    )
                    .unwrap();
            }
        }
        wtx.commit().unwrap();
    }

    /// Events arriving for several workspaces at once fill the pages of their tables: each
    /// workspace's events go past the end of its own table, where redb starts a new leaf
    /// instead of halving a full one. With `[ws][id]` keys in one table (schema 9) new events
    /// landed in the middle of the tree and left its leaves about half full.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_of_interleaved_workspaces_fill_their_pages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.redb");
        let store = Arc::new(Store::open(&path, &[5u8; 32]).unwrap());
        const EVENTS: usize = 3_000;
        for chunk in 0..EVENTS / 300 {
            let mut tasks = tokio::task::JoinSet::new();
            for n in chunk * 300..(chunk + 1) * 300 {
                let store = store.clone();
                // Hex of a hash: a body that does not compress to nothing.
                let digest = hex::encode(sha2::Sha256::digest(n.to_le_bytes()));
                let body = format!(r#"{{"id":"{n:024x}","note":"{digest}{digest}"}}"#);
                tasks.spawn(async move {
                    store
                        .ingest(NewEvent {
                            workspace_id: format!("ws-{}", n % 7),
                            event_type: "NEW_TIME_ENTRY".into(),
                            source: "clockify".into(),
                            source_id: None,
                            headers: vec![],
                            body: body.into_bytes(),
                            dedupe: Dedupe::Body,
                            entities: vec![],
                        })
                        .await
                        .unwrap()
                });
            }
            tasks.join_all().await;
        }
        Arc::into_inner(store).unwrap().shutdown();
        let stats = crate::store::file_stats(&path).unwrap();
        let events = stats.tables.iter().find(|t| t.name == "events").unwrap();
        assert_eq!(events.rows, EVENTS as u64);
        let fill = events.stored_bytes as f64 / (events.pages * 4096) as f64;
        assert!(
            fill > 0.8,
            "events pages {:.0}% full ({} pages for {} stored bytes)",
            fill * 100.0,
            events.pages,
            events.stored_bytes
        );
        // Each workspace's events read back newest first from its own table.
        let store = Store::open(&path, &[5u8; 32]).unwrap();
        let page = store
            .list_events(
                "ws-3",
                EventQuery {
                    before: None,
                    from_ms: None,
                    to_ms: None,
                    event_types: vec![],
                    limit: 1_000,
                    scan_limit: usize::MAX,
                    deadline: None,
                },
                |_| true,
            )
            .await
            .unwrap();
        assert_eq!(page.items.len(), EVENTS / 7 + 1);
        assert!(page.items.windows(2).all(|w| w[0].id > w[1].id));
        assert!(page.items.iter().all(|e| e.workspace_id == "ws-3"));
        store.shutdown();
    }

    /// Rows of `ws` left in the index by type.
    async fn type_rows(store: &Store, ws: &str) -> usize {
        let prefix = crate::store::schema::workspace_prefix(ws);
        store
            .read(move |rtx| {
                let table = rtx.open_table(EVENTS_BY_TYPE)?;
                let end = crate::store::schema::prefix_end(&prefix);
                Ok(table
                    .range::<&[u8]>(prefix.as_slice()..end.as_slice())?
                    .count())
            })
            .await
            .unwrap()
    }

    /// Retention removes an event with its index row whether the event is old by its clock
    /// (only the record's type is read) or young (its dedupe row goes too), legacy records
    /// included; a redelivery of a deleted event is stored again.
    #[tokio::test]
    async fn retention_removes_old_and_young_events_with_their_index_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.redb");
        let key = [3u8; 32];
        Store::open(&path, &key).unwrap().shutdown();
        // A schema-1 record, migrated into the workspace's table on open; its id a minute
        // ahead, so that it is deleted last (by the old events' path).
        let mut id = *uuid::Uuid::now_v7().as_bytes();
        let ahead = (jiff::Timestamp::now().as_millisecond() + 60_000) as u64;
        id[..6].copy_from_slice(&ahead.to_be_bytes()[2..]);
        let old = legacy(id, 1_700_000_000_000, b"{}");
        write_old_file(&path, 1, &[(old.id, encode(&EventRecord::V1(old)))], &[]);
        let store = Store::open(&path, &key).unwrap();
        let event = |n: usize| NewEvent {
            workspace_id: "ws".into(),
            event_type: if n % 2 == 0 { "NEW_TAG" } else { "NEW_CLIENT" }.into(),
            source: "clockify".into(),
            source_id: None,
            headers: vec![],
            body: format!(r#"{{"id":"{n}"}}"#).into_bytes(),
            dedupe: Dedupe::Body,
            entities: vec![],
        };
        for n in 0..10 {
            store.ingest(event(n)).await.unwrap();
        }
        // The legacy record was written without an index row (see `write_old_file`).
        assert_eq!(type_rows(&store, "ws").await, 10);
        let now = jiff::Timestamp::now().as_millisecond();
        // Young by the clock: the first half, with their dedupe rows.
        let deleted = store
            .delete_events_before("ws", i64::MAX, now, 5)
            .await
            .unwrap();
        assert_eq!((deleted, type_rows(&store, "ws").await), (5, 5));
        // Three days later by the clock: the rest leave the log alone; their index rows go
        // type by type, and then the empty table.
        let later = now + 3 * DEDUPE_WINDOW_MS;
        let deleted = store
            .delete_events_before("ws", i64::MAX, later, 100)
            .await
            .unwrap();
        assert_eq!((deleted, type_rows(&store, "ws").await), (6, 5));
        let by_type = EventQuery {
            before: None,
            from_ms: None,
            to_ms: None,
            event_types: vec!["NEW_TAG".into(), "NEW_CLIENT".into()],
            limit: 50,
            scan_limit: 1000,
            deadline: None,
        };
        let listed = store.list_events("ws", by_type, |_| true).await.unwrap();
        assert!(
            listed.items.is_empty(),
            "a list by type skips rows of deleted events"
        );
        assert_eq!(
            store
                .delete_type_rows_before("ws", i64::MAX, 3)
                .await
                .unwrap(),
            3
        );
        assert_eq!(store.event_workspaces().await.unwrap(), ["ws"]);
        assert_eq!(
            store
                .delete_type_rows_before("ws", i64::MAX, 3)
                .await
                .unwrap(),
            2
        );
        assert_eq!(type_rows(&store, "ws").await, 0);
        assert!(store.stored_event_types("ws").await.unwrap().is_empty());
        assert!(store.event_workspaces().await.unwrap().is_empty());
        // The originals are gone, so redeliveries are new events (young and old alike).
        for n in [0, 9] {
            let again = store.ingest(event(n)).await.unwrap();
            assert!(matches!(again, Ingested::Stored(_)), "{n}: {again:?}");
        }
        assert_eq!(type_rows(&store, "ws").await, 2);
        store.shutdown();
    }

    /// Deleting an event of a workspace that has none leaves no table behind for it.
    #[tokio::test]
    async fn deleting_in_a_workspace_without_events_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data.redb"), &[3u8; 32]).unwrap();
        assert!(
            !store
                .delete_event("ws-none", [9; 16], vec![])
                .await
                .unwrap()
        );
        assert!(store.event_workspaces().await.unwrap().is_empty());
        store.shutdown();
    }

    /// A file of every older schema holding `V1` records (what schema 1 wrote; later schemas
    /// still read them) opens as the current schema with its events intact.
    #[tokio::test]
    async fn a_file_of_every_older_schema_migrates_and_its_events_still_read() {
        for schema in 1..crate::store::SCHEMA_VERSION {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("data.redb");
            let key = [3u8; 32];
            let old = legacy(
                [7; 16],
                1_700_000_000_000,
                br#"{"id":"written-by-schema-1"}"#,
            );
            Store::open(&path, &key).unwrap().shutdown();
            let record = encode(&EventRecord::V1(old.clone()));
            write_old_file(&path, schema, &[(old.id, record)], &[]);
            assert_eq!(
                crate::store::check(&path, None).unwrap().schema_version,
                schema
            );
            let store = Store::open(&path, &key).unwrap();
            let read = store.event("ws", old.id).await.unwrap().unwrap();
            assert_eq!(
                (read.id, read.received_at, read.body, read.headers),
                (old.id, old.received_at, old.body, old.headers),
                "schema {schema}"
            );
            store.shutdown();
            assert_eq!(
                crate::store::check(&path, None).unwrap().schema_version,
                crate::store::SCHEMA_VERSION
            );
        }
    }

    /// A file of schemas 3 to 6 (they kept a dedupe watermark) whose recent events' dedupe rows
    /// were never written (they waited in memory, behind the watermark) migrates: the log of
    /// recent events is rebuilt from the events after the watermark once, so a redelivery
    /// after the upgrade is still a duplicate, and the `V2` records read.
    #[tokio::test]
    async fn a_file_with_a_dedupe_watermark_keeps_deduplicating_its_recent_events() {
        // Schema 7 dropped the watermark.
        for schema in 3..=6 {
            keeps_deduplicating_after_migrating_from(schema).await;
        }
    }

    async fn keeps_deduplicating_after_migrating_from(schema: u32) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.redb");
        let key = [3u8; 32];
        let now = jiff::Timestamp::now().as_millisecond();
        let body = br#"{"id":"65b7a1f0c0ffee0000000001","description":"before the upgrade"}"#;
        let id = *uuid::Uuid::now_v7().as_bytes();
        let mut bare = legacy(id, now, b"");
        bare.dedupe_key = sha2::Sha256::digest(body).into();
        let mut stamp = [0u8; 24];
        stamp[..16].copy_from_slice(&id);
        stamp[16..].copy_from_slice(&now.to_le_bytes());
        let record = encode(&EventRecord::V2(stamp, bare, StoredBody::new(body)));
        Store::open(&path, &key).unwrap().shutdown();
        let watermark = (now - 60_000).to_le_bytes().to_vec();
        write_old_file(
            &path,
            schema,
            &[(id, record)],
            &[(b"dedupe_indexed_until_ms".as_slice(), watermark)],
        );
        let store = Store::open(&path, &key).unwrap();
        assert_eq!(store.event("ws", id).await.unwrap().unwrap().body, body);
        let again = store
            .ingest(NewEvent {
                workspace_id: "ws".into(),
                event_type: "NEW_TIME_ENTRY".into(),
                source: "clockify".into(),
                source_id: None,
                headers: vec![],
                body: body.to_vec(),
                dedupe: Dedupe::Body,
                entities: vec![],
            })
            .await
            .unwrap();
        assert!(
            matches!(again, Ingested::Duplicate { original } if original == id),
            "schema {schema}: {again:?}"
        );
        store.shutdown();
        assert_eq!(
            crate::store::check(&path, None).unwrap().schema_version,
            crate::store::SCHEMA_VERSION
        );
    }
}
