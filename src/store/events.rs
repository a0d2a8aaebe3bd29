//! Stored events (Clockify webhooks and custom sources): the log itself, an index by event
//! type, and the dedupe table. Ids are UUIDv7 made on the writer thread, so id order is
//! commit order (SSE resume relies on that).

use redb::{ReadableTable, WriteTransaction};

use super::db::Store;
use super::dedupe::{self, DEDUPE_WINDOW_MS, PendingDedupe};
use super::destination_model::{DestinationIndex, QueuedDelivery, enqueue_deliveries};
use super::error::StoreError;
use super::event_record::{
    StoredBody, StoredEvent, UnstampedRecord, count_duplicate, decode_event,
};
use super::flow_index::{FlowIndex, enqueue_for_event};
use super::flow_model::QueuedRun;
use super::schema::{
    EVENTS, EVENTS_BY_TYPE, EventId, id_floor_for_millis, ids_before, prefix_end, two_part_prefix,
    with_suffix, workspace_prefix, workspaces_of,
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
    /// Equal keys (same workspace and event type) within [`DEDUPE_WINDOW_MS`] are duplicates.
    pub dedupe_key: [u8; 32],
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
}

pub struct EventPage {
    pub items: Vec<StoredEvent>,
    /// Where the next page starts, when there may be more.
    pub next_cursor: Option<EventId>,
}

fn event_key(ws: &str, id: &EventId) -> Vec<u8> {
    with_suffix(&workspace_prefix(ws), id)
}

fn type_key(ws: &str, event_type: &str, id: &EventId) -> Vec<u8> {
    with_suffix(&two_part_prefix(ws, event_type), id)
}

/// What [`Store::ingest`] works out on the caller's thread, so the writer thread (the
/// bottleneck) does less per event: the compressed, encoded record and the dedupe row key.
pub(crate) struct PreparedEvent {
    /// The event with an empty body and zero id and time.
    event: StoredEvent,
    body: Vec<u8>,
    record: UnstampedRecord,
    dedupe_row_key: Vec<u8>,
}

impl PreparedEvent {
    fn new(new: NewEvent) -> PreparedEvent {
        let dedupe_row_key = dedupe::table_key(&new.workspace_id, &new.event_type, &new.dedupe_key);
        let event = StoredEvent {
            id: [0; 16],
            workspace_id: new.workspace_id,
            event_type: new.event_type,
            source: new.source,
            source_id: new.source_id,
            received_at: 0,
            headers: new.headers,
            body: Vec::new(),
            dedupe_key: new.dedupe_key,
            duplicates: 0,
        };
        let record = UnstampedRecord::encode(&event, &StoredBody::new(&new.body));
        PreparedEvent {
            event,
            body: new.body,
            record,
            dedupe_row_key,
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
/// it (into `queued`) in the same transaction.
pub(crate) fn insert_event(
    tables: &mut OpenTables<'_>,
    prepared: PreparedEvent,
    now_ms: i64,
    routing: &Routing<'_>,
    queued: &mut Queued,
    dedupe: &PendingDedupe,
) -> Result<Ingested, StoreError> {
    let PreparedEvent {
        mut event,
        body,
        record,
        dedupe_row_key: dkey,
    } = prepared;
    if let Some(seen) = dedupe.get(tables, &dkey)? {
        let (original, received) = dedupe::row_parts(&seen);
        let okey = event_key(&event.workspace_id, &original);
        let events = tables.get(EVENTS)?;
        let existing = events.get(okey.as_slice())?.map(|v| v.value().to_vec());
        if let Some(bytes) = existing
            && now_ms - received < DEDUPE_WINDOW_MS
        {
            events.insert(okey.as_slice(), count_duplicate(&bytes)?.as_slice())?;
            return Ok(Ingested::Duplicate { original });
        }
    }
    let id = *uuid::Uuid::now_v7().as_bytes();
    dedupe.insert(&dkey, dedupe::row(&id, now_ms));
    tables.get(EVENTS)?.insert(
        event_key(&event.workspace_id, &id).as_slice(),
        record.stamp(&id, now_ms).as_slice(),
    )?;
    (event.id, event.received_at, event.body) = (id, now_ms, body);
    tables.get(EVENTS_BY_TYPE)?.insert(
        type_key(&event.workspace_id, &event.event_type, &id).as_slice(),
        [].as_slice(),
    )?;
    enqueue_for_event(tables.wtx(), routing.flows, &event, &mut queued.runs)?;
    enqueue_deliveries(
        tables.wtx(),
        routing.destinations,
        &event,
        &mut queued.deliveries,
    )?;
    Ok(Ingested::Stored(std::sync::Arc::new(event)))
}

/// Removes an event with its index and dedupe rows; returns whether it existed.
fn remove_event(
    wtx: &WriteTransaction,
    ws: &str,
    id: &EventId,
    dedupe: &PendingDedupe,
) -> Result<bool, StoreError> {
    let mut events = wtx.open_table(EVENTS)?;
    let removed = events
        .remove(event_key(ws, id).as_slice())?
        .map(|v| v.value().to_vec());
    let Some(bytes) = removed else {
        return Ok(false);
    };
    let event = decode_event(&bytes)?;
    let mut by_type = wtx.open_table(EVENTS_BY_TYPE)?;
    by_type.remove(type_key(ws, &event.event_type, id).as_slice())?;
    // Only drop the dedupe row if it still points at this event.
    let dkey = dedupe::table_key(ws, &event.event_type, &event.dedupe_key);
    dedupe.remove_if_points_at(wtx, &dkey, id)?;
    Ok(true)
}

/// What an ingest job hands its after-commit hook.
type IngestOutcome = (Ingested, Queued, Option<dedupe::Flushed>);

impl Store {
    /// Stores an event durably (or counts a duplicate); resolves after the commit.
    pub async fn ingest(&self, new: NewEvent) -> Result<Ingested, StoreError> {
        let live = self.live.clone();
        let (flows, dispatch) = (self.flow_index.clone(), self.run_dispatch.clone());
        let destinations = self.destination_index.clone();
        let deliveries = self.delivery_dispatch.clone();
        let dedupe = self.dedupe.clone();
        let prepared = PreparedEvent::new(new);
        let after_commit: AfterCommit<IngestOutcome> =
            Box::new(move |(ingested, queued, flushed): &IngestOutcome| {
                if let Some(flushed) = flushed {
                    flushed.committed();
                }
                if let Ingested::Stored(event) = ingested {
                    dispatch.committed(&queued.runs, Some(event));
                    deliveries.committed(&queued.deliveries);
                    // No receivers is normal (nobody has the page open).
                    let _ = live.send(event.clone());
                }
            });
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
                    let ingested =
                        insert_event(tables, prepared, now, &routing, &mut queued, &dedupe)?;
                    let flushed = dedupe.flush_if_full(tables, now)?;
                    Ok((ingested, queued, flushed))
                },
                Some(after_commit),
            )
            .await
            .map(|(ingested, _, _)| ingested)
    }

    pub async fn event(&self, ws: &str, id: EventId) -> Result<Option<StoredEvent>, StoreError> {
        self.read_record(EVENTS, event_key(ws, &id), decode_event)
            .await
    }

    /// Newest-first page of a workspace's events. `keep` filters (source, text …); the scan
    /// stops after `scan_limit` rows and then reports a cursor to continue from.
    pub async fn list_events(
        &self,
        ws: &str,
        query: EventQuery,
        keep: impl Fn(&StoredEvent) -> bool + Send + 'static,
    ) -> Result<EventPage, StoreError> {
        let ws = ws.to_string();
        self.read(move |rtx| {
            let events = rtx.open_table(EVENTS)?;
            let lower = id_floor_for_millis(query.from_ms.unwrap_or(0));
            let mut upper = query
                .to_ms
                .map(|to| id_floor_for_millis(to.saturating_add(1)))
                .unwrap_or([0xff; 16]);
            if let Some(before) = query.before {
                upper = upper.min(before);
            }
            let mut items = Vec::new();
            let mut scanned = 0usize;
            let mut last_seen: Option<EventId> = None;
            let mut exhausted = true;
            let mut consider =
                |id: EventId, items: &mut Vec<StoredEvent>| -> Result<bool, StoreError> {
                    scanned += 1;
                    last_seen = Some(id);
                    if let Some(v) = events.get(event_key(&ws, &id).as_slice())? {
                        let event = decode_event(v.value())?;
                        if keep(&event) {
                            items.push(event);
                        }
                    }
                    Ok(items.len() < query.limit && scanned < query.scan_limit)
                };
            if query.event_types.is_empty() {
                let prefix = workspace_prefix(&ws);
                let start = with_suffix(&prefix, &lower);
                let end = with_suffix(&prefix, &upper);
                for entry in events
                    .range::<&[u8]>(start.as_slice()..end.as_slice())?
                    .rev()
                {
                    let (k, _) = entry?;
                    let id: EventId = k.value()[prefix.len()..]
                        .try_into()
                        .map_err(|_| bad_key())?;
                    if !consider(id, &mut items)? {
                        exhausted = false;
                        break;
                    }
                }
            } else {
                // Merge the per-type indexes newest first.
                let by_type = rtx.open_table(EVENTS_BY_TYPE)?;
                let mut ids: Vec<EventId> = Vec::new();
                for event_type in &query.event_types {
                    let prefix = two_part_prefix(&ws, event_type);
                    let start = with_suffix(&prefix, &lower);
                    let end = with_suffix(&prefix, &upper);
                    let mut taken = 0;
                    for entry in by_type
                        .range::<&[u8]>(start.as_slice()..end.as_slice())?
                        .rev()
                    {
                        let (k, _) = entry?;
                        ids.push(
                            k.value()[prefix.len()..]
                                .try_into()
                                .map_err(|_| bad_key())?,
                        );
                        taken += 1;
                        if taken >= query.scan_limit {
                            break;
                        }
                    }
                }
                ids.sort_unstable_by(|a, b| b.cmp(a));
                ids.dedup();
                for id in ids {
                    if !consider(id, &mut items)? {
                        exhausted = false;
                        break;
                    }
                }
            }
            let next_cursor = if exhausted { None } else { last_seen };
            Ok(EventPage { items, next_cursor })
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
            let events = rtx.open_table(EVENTS)?;
            let prefix = workspace_prefix(&ws);
            let start = with_suffix(&prefix, &after);
            let end = prefix_end(&prefix);
            let mut out = Vec::new();
            for entry in events.range::<&[u8]>(start.as_slice()..end.as_slice())? {
                let (k, v) = entry?;
                if k.value() == start.as_slice() {
                    continue;
                }
                out.push(decode_event(v.value())?);
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    pub async fn delete_event(&self, ws: &str, id: EventId) -> Result<bool, StoreError> {
        let ws = ws.to_string();
        let dedupe = self.dedupe.clone();
        self.write(move |wtx| remove_event(wtx, &ws, &id, &dedupe))
            .await
    }

    /// Deletes up to `max` of the workspace's events received before `cutoff_ms` (all of
    /// them with `i64::MAX`); returns how many were deleted.
    pub async fn delete_events_before(
        &self,
        ws: &str,
        cutoff_ms: i64,
        max: usize,
    ) -> Result<usize, StoreError> {
        let ws = ws.to_string();
        let dedupe = self.dedupe.clone();
        self.write(move |wtx| {
            let prefix = workspace_prefix(&ws);
            let ids = ids_before(&wtx.open_table(EVENTS)?, &prefix, cutoff_ms, max, bad_key)?;
            for id in &ids {
                remove_event(wtx, &ws, id, &dedupe)?;
            }
            Ok(ids.len())
        })
        .await
    }

    /// Workspaces that have stored events (for retention).
    pub async fn event_workspaces(&self) -> Result<Vec<String>, StoreError> {
        self.read(|rtx| workspaces_of(&rtx.open_table(EVENTS)?, bad_key))
            .await
    }
}

fn bad_key() -> StoreError {
    StoreError::Decode("malformed event key".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::event_record::EventRecordRef;
    use crate::store::schema::{META, encode};

    /// A schema-1 file (every event a `V1` record) opens as schema 2 with its events intact.
    #[tokio::test]
    async fn a_schema_1_file_migrates_and_its_events_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.redb");
        let key = [3u8; 32];
        let event = StoredEvent {
            id: [7; 16],
            workspace_id: "ws".into(),
            event_type: "NEW_TIME_ENTRY".into(),
            source: "clockify".into(),
            source_id: None,
            received_at: 1_700_000_000_000,
            headers: vec![("content-type".into(), "application/json".into())],
            body: br#"{"id":"written-by-schema-1"}"#.to_vec(),
            dedupe_key: [9; 32],
            duplicates: 0,
        };
        Store::open(&path, &key).unwrap().shutdown();
        {
            let db = redb::Database::open(&path).unwrap();
            let wtx = db.begin_write().unwrap();
            wtx.open_table(META)
                .unwrap()
                .insert(b"schema_version".as_slice(), 1u32.to_le_bytes().as_slice())
                .unwrap();
            wtx.open_table(EVENTS)
                .unwrap()
                .insert(
                    event_key(&event.workspace_id, &event.id).as_slice(),
                    encode(&EventRecordRef::V1(&event)).as_slice(),
                )
                .unwrap();
            wtx.commit().unwrap();
        }
        assert_eq!(crate::store::check(&path, None).unwrap().schema_version, 1);
        let store = Store::open(&path, &key).unwrap();
        assert_eq!(store.event("ws", event.id).await.unwrap(), Some(event));
        store.shutdown();
        assert_eq!(
            crate::store::check(&path, None).unwrap().schema_version,
            crate::store::SCHEMA_VERSION
        );
    }
}
