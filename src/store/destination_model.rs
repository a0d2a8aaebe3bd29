//! Destinations as stored: the endpoint records, their deliveries (one per matching event,
//! with every attempt), the enabled destinations in memory by workspace so ingestion queues
//! deliveries inside the event's own transaction without a read, and the hand-over of
//! committed deliveries to the delivery engine.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::event_record::StoredEvent;
use super::flow_model::{CLOCKIFY_SOURCE, Conditions, STUDIO_SOURCE};
use super::schema::{
    DELIVERIES, DELIVERIES_BY_DESTINATION, DELIVERY_QUEUE, DESTINATIONS, EventId, decode, encode,
    new_id, with_suffix, workspace_prefix,
};
use super::secrets::Sealed;
use super::writer::OpenTables;

pub type DestinationId = [u8; 16];
pub type DeliveryId = [u8; 16];

/// A signing secret and, after a rotation, until when it still signs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DestinationSecret {
    pub secret: Sealed,
    /// Unix ms after which the secret no longer signs; `None` for the current one.
    pub valid_until: Option<i64>,
}

/// Which events a destination receives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DestinationFilter {
    /// [`CLOCKIFY_SOURCE`], [`STUDIO_SOURCE`], a custom source id, or `None` for every
    /// source but [`STUDIO_SOURCE`].
    pub source: Option<String>,
    /// Event types; empty for all.
    pub events: Vec<String>,
    /// Checked by the delivery engine before the first attempt.
    pub conditions: Conditions,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Destination {
    pub id: DestinationId,
    pub workspace_id: String,
    pub name: String,
    pub url: String,
    pub enabled: bool,
    /// Why it was disabled automatically (410 Gone, failing too long).
    pub disabled_reason: Option<String>,
    pub filter: DestinationFilter,
    /// A flow template rendering the body; `None` sends the event body unchanged.
    pub template: Option<String>,
    /// Extra request headers; values sealed like every stored secret.
    pub headers: Vec<(String, Sealed)>,
    /// Current secret first; a rotated-out one follows while its overlap lasts.
    pub secrets: Vec<DestinationSecret>,
    /// Since when every attempt failed (cleared by a success).
    pub failing_since: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub rotated_at: Option<i64>,
}

impl Destination {
    /// Whether the destination wants events of this source and type (conditions aside).
    /// "Every source" means every source events are received from: the server's own
    /// notifications go only where they are asked for, not into every existing forwarder.
    pub fn accepts(&self, source: &str, event_type: &str) -> bool {
        self.enabled
            && self
                .filter
                .source
                .as_deref()
                .map_or(source != STUDIO_SOURCE, |s| s == source)
            && (self.filter.events.is_empty() || self.filter.events.iter().any(|e| e == event_type))
    }
}

#[derive(Serialize, Deserialize)]
enum DestinationRecord {
    V1(Destination),
}

pub(super) fn decode_destination(bytes: &[u8]) -> Result<Destination, StoreError> {
    match decode::<DestinationRecord>(bytes)? {
        DestinationRecord::V1(destination) => Ok(destination),
    }
}

pub(super) fn encode_destination(destination: &Destination) -> Vec<u8> {
    encode(&DestinationRecordRef::V1(destination))
}

#[derive(Serialize)]
enum DestinationRecordRef<'a> {
    V1(&'a Destination),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryStatus> {
        match text {
            "pending" => Some(DeliveryStatus::Pending),
            "delivered" => Some(DeliveryStatus::Delivered),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// One POST to the destination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    pub at: i64,
    /// The receiver's HTTP status; `None` when no answer came (refused, timed out …).
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// The first KB of the answer, or what went wrong.
    pub response: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Also the `webhook-id` of every attempt (the receiver's dedupe key).
    pub id: DeliveryId,
    pub workspace_id: String,
    pub destination_id: DestinationId,
    pub event_id: EventId,
    pub event_type: String,
    pub status: DeliveryStatus,
    pub attempts: Vec<DeliveryAttempt>,
    /// When the next attempt is due (pending deliveries).
    pub next_at: i64,
    /// Why it failed for good, when it did.
    pub error: Option<String>,
    pub created_at: i64,
}

#[derive(Serialize, Deserialize)]
enum DeliveryRecord {
    V1(Delivery),
}

pub(super) fn decode_delivery(bytes: &[u8]) -> Result<Delivery, StoreError> {
    match decode::<DeliveryRecord>(bytes)? {
        DeliveryRecord::V1(delivery) => Ok(delivery),
    }
}

pub(super) fn encode_delivery(delivery: &Delivery) -> Vec<u8> {
    encode(&DeliveryRecordRef::V1(delivery))
}

#[derive(Serialize)]
enum DeliveryRecordRef<'a> {
    V1(&'a Delivery),
}

/// `[ws][id]`: destinations and deliveries.
pub(super) fn ws_key(ws: &str, id: &[u8; 16]) -> Vec<u8> {
    with_suffix(&workspace_prefix(ws), id)
}

/// `[ws][destination][delivery]`: a destination's deliveries in order.
pub(super) fn by_destination_key(ws: &str, dest: &DestinationId, id: &DeliveryId) -> Vec<u8> {
    let mut key = ws_key(ws, dest);
    key.extend_from_slice(id);
    key
}

/// A delivery committed to the queue, handed to the delivery engine after the commit.
#[derive(Clone, Debug)]
pub struct QueuedDelivery {
    pub id: DeliveryId,
    pub workspace_id: String,
    pub destination_id: DestinationId,
    pub next_at: i64,
    /// The event, when the delivery was just queued with it: its first attempt then needs
    /// no reads (the delivery is known to be pending with no attempts, created with the
    /// event). `None` for deliveries read back from the queue or retried.
    pub event: Option<Arc<StoredEvent>>,
}

impl Delivery {
    /// A delivery of `event` just queued: pending, due when the event arrived.
    fn queued(id: DeliveryId, destination_id: DestinationId, event: &StoredEvent) -> Delivery {
        Delivery {
            id,
            workspace_id: event.workspace_id.clone(),
            destination_id,
            event_id: event.id,
            event_type: event.event_type.clone(),
            status: DeliveryStatus::Pending,
            attempts: Vec::new(),
            next_at: event.received_at,
            error: None,
            created_at: event.received_at,
        }
    }
}

impl QueuedDelivery {
    pub fn of(delivery: &Delivery) -> QueuedDelivery {
        QueuedDelivery {
            id: delivery.id,
            workspace_id: delivery.workspace_id.clone(),
            destination_id: delivery.destination_id,
            next_at: delivery.next_at,
            event: None,
        }
    }

    /// The stored record of a delivery queued with its event and not attempted since.
    pub fn fresh_delivery(&self) -> Option<Delivery> {
        let event = self.event.as_ref()?;
        Some(Delivery::queued(self.id, self.destination_id, event))
    }
}

/// Enabled destinations in memory, by workspace.
#[derive(Default)]
pub(crate) struct DestinationIndex {
    by_workspace: RwLock<HashMap<String, Vec<Arc<Destination>>>>,
}

impl DestinationIndex {
    pub(crate) fn load(db: &redb::Database) -> Result<DestinationIndex, StoreError> {
        let index = DestinationIndex::default();
        let rtx = db.begin_read()?;
        let table = rtx.open_table(DESTINATIONS)?;
        for entry in table.iter()? {
            let (_, v) = entry?;
            index.put(decode_destination(v.value())?);
        }
        Ok(index)
    }

    /// Takes over a freshly loaded index (the file was reopened).
    pub(crate) fn replace_with(&self, fresh: DestinationIndex) {
        *self.by_workspace.write().expect("destination index lock") = fresh
            .by_workspace
            .into_inner()
            .expect("destination index lock");
    }

    pub(crate) fn put(&self, destination: Destination) {
        let mut map = self.by_workspace.write().expect("destination index lock");
        let list = map.entry(destination.workspace_id.clone()).or_default();
        list.retain(|d| d.id != destination.id);
        if destination.enabled {
            list.push(Arc::new(destination));
            list.sort_by_key(|d| d.id);
        }
    }

    pub(crate) fn remove(&self, ws: &str, id: &DestinationId) {
        let mut map = self.by_workspace.write().expect("destination index lock");
        if let Some(list) = map.get_mut(ws) {
            list.retain(|d| d.id != *id);
        }
    }

    pub(crate) fn remove_workspace(&self, ws: &str) {
        self.by_workspace
            .write()
            .expect("destination index lock")
            .remove(ws);
    }

    /// An enabled destination, as last committed.
    pub(crate) fn enabled(&self, ws: &str, id: &DestinationId) -> Option<Arc<Destination>> {
        let map = self.by_workspace.read().expect("destination index lock");
        map.get(ws)?.iter().find(|d| d.id == *id).cloned()
    }

    /// Enabled destinations of `ws` that want this source and event type.
    fn matching(&self, ws: &str, source: &str, event_type: &str) -> Vec<Arc<Destination>> {
        let map = self.by_workspace.read().expect("destination index lock");
        match map.get(ws) {
            None => Vec::new(),
            Some(list) => list
                .iter()
                .filter(|d| d.accepts(source, event_type))
                .cloned()
                .collect(),
        }
    }
}

/// Inside the event's write transaction: queues one delivery per enabled destination that
/// wants the event, so an acknowledged event is never lost to a crash.
pub(crate) fn enqueue_deliveries(
    tables: &mut OpenTables<'_>,
    index: &DestinationIndex,
    event: &StoredEvent,
    out: &mut Vec<QueuedDelivery>,
) -> Result<(), StoreError> {
    let source = event.source_id.as_deref().unwrap_or(CLOCKIFY_SOURCE);
    let destinations = index.matching(&event.workspace_id, source, &event.event_type);
    if destinations.is_empty() {
        return Ok(());
    }
    for destination in destinations {
        let delivery = Delivery::queued(new_id(), destination.id, event);
        // Through the batch's open tables: opening three tables per event (and closing them,
        // which writes their roots) cost ingestion more than the rows themselves.
        let ws = &delivery.workspace_id;
        tables.get(DELIVERIES)?.insert(
            ws_key(ws, &delivery.id).as_slice(),
            encode_delivery(&delivery).as_slice(),
        )?;
        tables.get(DELIVERIES_BY_DESTINATION)?.insert(
            by_destination_key(ws, &delivery.destination_id, &delivery.id).as_slice(),
            [].as_slice(),
        )?;
        tables
            .get(DELIVERY_QUEUE)?
            .insert(delivery.id.as_slice(), ws.as_bytes())?;
        out.push(QueuedDelivery::of(&delivery));
    }
    Ok(())
}

/// Writes a delivery with its index row, and its queue row while it is pending.
pub(super) fn insert_delivery(
    tables: &mut OpenTables<'_>,
    delivery: &Delivery,
) -> Result<(), StoreError> {
    let ws = &delivery.workspace_id;
    tables.get(DELIVERIES)?.insert(
        ws_key(ws, &delivery.id).as_slice(),
        encode_delivery(delivery).as_slice(),
    )?;
    tables.get(DELIVERIES_BY_DESTINATION)?.insert(
        by_destination_key(ws, &delivery.destination_id, &delivery.id).as_slice(),
        [].as_slice(),
    )?;
    let queue = tables.get(DELIVERY_QUEUE)?;
    if delivery.status == DeliveryStatus::Pending {
        queue.insert(delivery.id.as_slice(), ws.as_bytes())?;
    } else {
        queue.remove(delivery.id.as_slice())?;
    }
    Ok(())
}

/// Hands committed deliveries to the delivery engine.
pub(crate) struct DeliveryDispatch {
    sender: tokio::sync::mpsc::UnboundedSender<QueuedDelivery>,
    /// Taken once, by the delivery engine.
    pub(super) receiver:
        std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<QueuedDelivery>>>,
}

impl DeliveryDispatch {
    pub(crate) fn new() -> DeliveryDispatch {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        DeliveryDispatch {
            sender,
            receiver: std::sync::Mutex::new(Some(receiver)),
        }
    }

    /// Called after the commit that queued `deliveries`.
    pub(crate) fn committed(&self, deliveries: &[QueuedDelivery]) {
        for queued in deliveries {
            // No engine (shutting down): the queue table keeps it for the next start.
            let _ = self.sender.send(queued.clone());
        }
    }

    /// Called after the commit that stored `event` and queued its `deliveries`.
    pub(crate) fn committed_with(&self, deliveries: &[QueuedDelivery], event: &Arc<StoredEvent>) {
        for queued in deliveries {
            let _ = self.sender.send(QueuedDelivery {
                event: Some(event.clone()),
                ..queued.clone()
            });
        }
    }
}
