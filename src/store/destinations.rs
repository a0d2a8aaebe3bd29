//! Destinations and their deliveries: the records, the queue the delivery engine works
//! from, the attempt log, retries and recovery. Deliveries of events are queued by
//! ingestion itself (`events::insert_event`, `destination_model::enqueue_deliveries`).

use redb::ReadableTable;

use super::db::Store;
use super::destination_model::{
    Delivery, DeliveryAttempt, DeliveryId, DeliveryStatus, Destination, DestinationId,
    QueuedDelivery, by_destination_key, decode_delivery, decode_destination, encode_delivery,
    encode_destination, insert_delivery, ws_key,
};
use super::error::StoreError;
use super::schema::{
    DELIVERIES, DELIVERIES_BY_DESTINATION, DELIVERY_QUEUE, DESTINATIONS, EventId,
    id_floor_for_millis, ids_before, installed, prefix_end, with_suffix, workspace_prefix,
    workspaces_of,
};
use super::writer::{AfterCommit, OpenTables};

/// A page of a destination's deliveries, newest first.
pub struct DeliveryPage {
    pub items: Vec<Delivery>,
    pub next_cursor: Option<DeliveryId>,
}

/// What an attempt leads to.
pub enum AttemptOutcome {
    Delivered,
    /// Try again at this time (unix ms).
    RetryAt(i64),
    /// Give up, with the reason.
    Failed(String),
}

/// What a finished attempt does to its destination.
pub enum DestinationChange {
    /// A 2xx: the destination is healthy again.
    Succeeded,
    /// A failure at `now`; disable the destination when it has been failing since before
    /// `disable_before` (unix ms).
    Failed { now: i64, disable_before: i64 },
    /// Disable at once (410 Gone).
    Disable(String),
}

fn bad_key() -> StoreError {
    StoreError::Decode("malformed delivery key".into())
}

fn read_delivery(
    tables: &mut OpenTables<'_>,
    ws: &str,
    id: &DeliveryId,
) -> Result<Option<Delivery>, StoreError> {
    tables
        .get(DELIVERIES)?
        .get(ws_key(ws, id).as_slice())?
        .map(|v| decode_delivery(v.value()))
        .transpose()
}

fn remove_delivery(
    tables: &mut OpenTables<'_>,
    ws: &str,
    delivery: &Delivery,
) -> Result<(), StoreError> {
    tables
        .get(DELIVERIES)?
        .remove(ws_key(ws, &delivery.id).as_slice())?;
    tables
        .get(DELIVERIES_BY_DESTINATION)?
        .remove(by_destination_key(ws, &delivery.destination_id, &delivery.id).as_slice())?;
    tables.get(DELIVERY_QUEUE)?.remove(delivery.id.as_slice())?;
    Ok(())
}

/// Applies what an attempt did to its destination; returns whether that changed it.
fn apply_change(d: &mut Destination, change: DestinationChange) -> bool {
    match change {
        DestinationChange::Succeeded => d.failing_since.take().is_some(),
        DestinationChange::Failed {
            now,
            disable_before,
        } => match d.failing_since {
            None => {
                d.failing_since = Some(now);
                true
            }
            Some(since) if since < disable_before && d.enabled => {
                d.enabled = false;
                d.disabled_reason = Some(format!(
                    "every attempt failed since {}",
                    jiff::Timestamp::from_millisecond(since)
                        .map(|t| t.to_string())
                        .unwrap_or_default()
                ));
                true
            }
            Some(_) => false,
        },
        DestinationChange::Disable(reason) if d.enabled => {
            d.enabled = false;
            d.disabled_reason = Some(reason);
            true
        }
        DestinationChange::Disable(_) => false,
    }
}

/// Makes a delivery pending and due at `now`; `None` when it is already pending.
fn requeue(delivery: &mut Delivery, now: i64) -> bool {
    if delivery.status == DeliveryStatus::Pending {
        return false;
    }
    delivery.status = DeliveryStatus::Pending;
    delivery.next_at = now;
    delivery.error = None;
    true
}

/// One attempt to record (see [`Store::attempts_recorded`]).
pub struct AttemptRecord {
    pub workspace_id: String,
    pub id: DeliveryId,
    /// `None` when the delivery is given up on unsent.
    pub attempt: Option<DeliveryAttempt>,
    pub outcome: AttemptOutcome,
    pub change: Option<(DestinationId, DestinationChange)>,
}

/// Stores one attempt and its destination's change; the changed destination is returned.
fn record_attempt(
    tables: &mut OpenTables<'_>,
    record: AttemptRecord,
) -> Result<(Option<Delivery>, Option<Destination>), StoreError> {
    let AttemptRecord {
        workspace_id: ws,
        id,
        attempt,
        outcome,
        change,
    } = record;
    let delivery = match read_delivery(tables, &ws, &id)? {
        None => {
            tables.get(DELIVERY_QUEUE)?.remove(id.as_slice())?;
            None
        }
        Some(mut delivery) => {
            let was_pending = delivery.status == DeliveryStatus::Pending;
            delivery.attempts.extend(attempt);
            match outcome {
                AttemptOutcome::Delivered => {
                    delivery.status = DeliveryStatus::Delivered;
                    delivery.error = None;
                }
                AttemptOutcome::RetryAt(at) => {
                    delivery.status = DeliveryStatus::Pending;
                    delivery.next_at = at;
                }
                AttemptOutcome::Failed(error) => {
                    delivery.status = DeliveryStatus::Failed;
                    delivery.error = Some(error);
                }
            }
            // The index row is there already, and so is the queue row of a pending delivery.
            tables.get(DELIVERIES)?.insert(
                ws_key(&ws, &delivery.id).as_slice(),
                encode_delivery(&delivery).as_slice(),
            )?;
            let pending = delivery.status == DeliveryStatus::Pending;
            if pending && !was_pending {
                tables
                    .get(DELIVERY_QUEUE)?
                    .insert(delivery.id.as_slice(), ws.as_bytes())?;
            } else if !pending && was_pending {
                tables.get(DELIVERY_QUEUE)?.remove(delivery.id.as_slice())?;
            }
            Some(delivery)
        }
    };
    let mut changed = None;
    if let Some((destination_id, change)) = change {
        let key = ws_key(&ws, &destination_id);
        let table = tables.get(DESTINATIONS)?;
        let current = table
            .get(key.as_slice())?
            .map(|v| decode_destination(v.value()))
            .transpose()?;
        if let Some(mut destination) = current
            && apply_change(&mut destination, change)
        {
            table.insert(key.as_slice(), encode_destination(&destination).as_slice())?;
            changed = Some(destination);
        }
    }
    Ok((delivery, changed))
}

impl Store {
    /// Inserts or replaces a destination of an installed workspace; returns whether it was
    /// written (an erased workspace is not partly recreated).
    pub async fn put_destination(&self, destination: Destination) -> Result<bool, StoreError> {
        let index = self.destination_index.clone();
        let written = destination.clone();
        self.write_then(
            move |wtx| {
                if !installed(wtx, &destination.workspace_id)? {
                    return Ok(false);
                }
                wtx.open_table(DESTINATIONS)?.insert(
                    ws_key(&destination.workspace_id, &destination.id).as_slice(),
                    encode_destination(&destination).as_slice(),
                )?;
                Ok(true)
            },
            move |done| {
                if *done {
                    index.put(written);
                }
            },
        )
        .await
    }

    pub async fn destination(
        &self,
        ws: &str,
        id: DestinationId,
    ) -> Result<Option<Destination>, StoreError> {
        self.read_record(DESTINATIONS, ws_key(ws, &id), decode_destination)
            .await
    }

    /// An enabled destination as last committed, from memory (no read).
    pub fn enabled_destination(
        &self,
        ws: &str,
        id: DestinationId,
    ) -> Option<std::sync::Arc<Destination>> {
        self.destination_index.enabled(ws, &id)
    }

    /// A workspace's destinations, oldest first.
    pub async fn destinations(&self, ws: &str) -> Result<Vec<Destination>, StoreError> {
        let ws = ws.to_string();
        self.read(move |rtx| {
            let table = rtx.open_table(DESTINATIONS)?;
            let prefix = workspace_prefix(&ws);
            let end = prefix_end(&prefix);
            let mut out = Vec::new();
            for entry in table.range::<&[u8]>(prefix.as_slice()..end.as_slice())? {
                out.push(decode_destination(entry?.1.value())?);
            }
            Ok(out)
        })
        .await
    }

    /// Changes a stored destination; `change` returns `Err` to leave it as it was.
    /// `Ok(None)`: no such destination.
    pub async fn update_destination<E: Send + 'static>(
        &self,
        ws: &str,
        id: DestinationId,
        change: impl FnOnce(&mut Destination) -> Result<(), E> + Send + 'static,
    ) -> Result<Result<Option<Destination>, E>, StoreError> {
        let key = ws_key(ws, &id);
        let index = self.destination_index.clone();
        self.write_then(
            move |wtx| {
                let mut table = wtx.open_table(DESTINATIONS)?;
                let current = table
                    .get(key.as_slice())?
                    .map(|v| decode_destination(v.value()))
                    .transpose()?;
                let Some(mut destination) = current else {
                    return Ok(Ok(None));
                };
                if let Err(e) = change(&mut destination) {
                    return Ok(Err(e));
                }
                table.insert(key.as_slice(), encode_destination(&destination).as_slice())?;
                Ok(Ok(Some(destination)))
            },
            move |result| {
                if let Ok(Some(destination)) = result {
                    index.put(destination.clone());
                }
            },
        )
        .await
    }

    /// Deletes a destination with all its deliveries; returns whether it existed.
    pub async fn delete_destination(
        &self,
        ws: &str,
        id: DestinationId,
    ) -> Result<bool, StoreError> {
        let ws = ws.to_string();
        let index = self.destination_index.clone();
        let (name, after) = (ws.clone(), ws);
        self.write_then(
            move |wtx| {
                let existed = wtx
                    .open_table(DESTINATIONS)?
                    .remove(ws_key(&name, &id).as_slice())?
                    .is_some();
                let prefix = ws_key(&name, &id);
                let ids = ids_before(
                    &wtx.open_table(DELIVERIES_BY_DESTINATION)?,
                    &prefix,
                    i64::MAX,
                    usize::MAX,
                    bad_key,
                )?;
                let mut tables = OpenTables::new(wtx);
                for delivery_id in ids {
                    if let Some(delivery) = read_delivery(&mut tables, &name, &delivery_id)? {
                        remove_delivery(&mut tables, &name, &delivery)?;
                    }
                }
                Ok(existed)
            },
            move |existed| {
                if *existed {
                    index.remove(&after, &id);
                }
            },
        )
        .await
    }

    /// Records an attempt of a delivery (or giving up on it) and what the attempt does to
    /// its destination; see [`Store::attempts_recorded`].
    pub async fn attempt_recorded(
        &self,
        ws: &str,
        id: DeliveryId,
        attempt: Option<DeliveryAttempt>,
        outcome: AttemptOutcome,
        change: Option<(DestinationId, DestinationChange)>,
    ) -> Result<(Option<Delivery>, Option<Destination>), StoreError> {
        let record = AttemptRecord {
            workspace_id: ws.to_string(),
            id,
            attempt,
            outcome,
            change,
        };
        let mut recorded = self.attempts_recorded(vec![record]).await?;
        Ok(recorded.pop().expect("one record, one result"))
    }

    /// Records attempts (a run of one destination's deliveries, say) and what each does to
    /// its destination, in order, in one write through the batch's open tables: sending is
    /// the delivery engine's hot path, and it shares the writer with ingestion. Returns, per
    /// record, the delivery as stored (`None`: it is gone) and the destination when that
    /// record's change disabled it.
    pub async fn attempts_recorded(
        &self,
        records: Vec<AttemptRecord>,
    ) -> Result<Vec<(Option<Delivery>, Option<Destination>)>, StoreError> {
        let index = self.destination_index.clone();
        let after_commit: AfterCommit<Vec<(Option<Delivery>, Option<Destination>)>> =
            Box::new(move |recorded| {
                for (_, changed) in recorded {
                    if let Some(destination) = changed {
                        index.put(destination.clone());
                    }
                }
            });
        let recorded = self
            .writer
            .write_with_tables(
                move |tables: &mut OpenTables<'_>| {
                    records
                        .into_iter()
                        .map(|record| record_attempt(tables, record))
                        .collect::<Result<Vec<_>, StoreError>>()
                },
                Some(after_commit),
            )
            .await?;
        Ok(recorded
            .into_iter()
            .map(|(delivery, changed)| (delivery, changed.filter(|d| !d.enabled)))
            .collect())
    }

    pub async fn delivery(&self, ws: &str, id: DeliveryId) -> Result<Option<Delivery>, StoreError> {
        self.read_record(DELIVERIES, ws_key(ws, &id), decode_delivery)
            .await
    }

    /// A destination's deliveries newest first, optionally of one status and of one event,
    /// below `before`.
    pub async fn deliveries(
        &self,
        ws: &str,
        destination: DestinationId,
        status: Option<DeliveryStatus>,
        event: Option<EventId>,
        before: Option<DeliveryId>,
        limit: usize,
    ) -> Result<DeliveryPage, StoreError> {
        let ws = ws.to_string();
        self.read(move |rtx| {
            let index = rtx.open_table(DELIVERIES_BY_DESTINATION)?;
            let deliveries = rtx.open_table(DELIVERIES)?;
            let prefix = ws_key(&ws, &destination);
            let end = match before {
                Some(before) => with_suffix(&prefix, &before),
                None => prefix_end(&prefix),
            };
            let mut items = Vec::new();
            let mut last = None;
            let mut more = false;
            // A rare status may need a long scan; bounded so one request stays cheap.
            for (scanned, entry) in index
                .range::<&[u8]>(prefix.as_slice()..end.as_slice())?
                .rev()
                .enumerate()
            {
                let (k, _) = entry?;
                let id: DeliveryId = k.value()[prefix.len()..]
                    .try_into()
                    .map_err(|_| bad_key())?;
                if items.len() >= limit || scanned >= 10_000 {
                    more = true;
                    break;
                }
                last = Some(id);
                if let Some(v) = deliveries.get(ws_key(&ws, &id).as_slice())? {
                    let delivery = decode_delivery(v.value())?;
                    if status.is_none_or(|s| s == delivery.status)
                        && event.is_none_or(|e| e == delivery.event_id)
                    {
                        items.push(delivery);
                    }
                }
            }
            Ok(DeliveryPage {
                items,
                next_cursor: if more { last } else { None },
            })
        })
        .await
    }

    /// The newest attempt among the destination's `scan` newest deliveries (its health at a
    /// glance; bounded so listing destinations stays cheap).
    pub async fn last_delivery_attempt(
        &self,
        ws: &str,
        destination: DestinationId,
        scan: usize,
    ) -> Result<Option<DeliveryAttempt>, StoreError> {
        let ws = ws.to_string();
        self.read(move |rtx| {
            let index = rtx.open_table(DELIVERIES_BY_DESTINATION)?;
            let deliveries = rtx.open_table(DELIVERIES)?;
            let prefix = ws_key(&ws, &destination);
            let end = prefix_end(&prefix);
            let mut last: Option<DeliveryAttempt> = None;
            for entry in index
                .range::<&[u8]>(prefix.as_slice()..end.as_slice())?
                .rev()
                .take(scan)
            {
                let (k, _) = entry?;
                let id: DeliveryId = k.value()[prefix.len()..]
                    .try_into()
                    .map_err(|_| bad_key())?;
                if let Some(v) = deliveries.get(ws_key(&ws, &id).as_slice())? {
                    let delivery = decode_delivery(v.value())?;
                    if let Some(attempt) = delivery.attempts.into_iter().max_by_key(|a| a.at)
                        && last.as_ref().is_none_or(|l| attempt.at > l.at)
                    {
                        last = Some(attempt);
                    }
                }
            }
            Ok(last)
        })
        .await
    }

    /// Records an attempt and what it leads to; returns the delivery as stored, or `None`
    /// when it is gone (its destination or workspace was deleted meanwhile).
    pub async fn delivery_attempted(
        &self,
        ws: &str,
        id: DeliveryId,
        attempt: Option<DeliveryAttempt>,
        outcome: AttemptOutcome,
    ) -> Result<Option<Delivery>, StoreError> {
        self.attempt_recorded(ws, id, attempt, outcome, None)
            .await
            .map(|(delivery, _)| delivery)
    }

    /// Drops a delivery whose event did not pass the destination's conditions.
    pub async fn drop_delivery(&self, ws: &str, id: DeliveryId) -> Result<(), StoreError> {
        let ws = ws.to_string();
        self.writer
            .write_with_tables(
                move |tables: &mut OpenTables<'_>| {
                    match read_delivery(tables, &ws, &id)? {
                        Some(delivery) => remove_delivery(tables, &ws, &delivery)?,
                        None => {
                            tables.get(DELIVERY_QUEUE)?.remove(id.as_slice())?;
                        }
                    }
                    Ok(())
                },
                None,
            )
            .await
    }

    /// Makes a finished delivery pending again, due now, and hands it to the engine.
    /// `Ok(None)`: no such delivery.
    pub async fn retry_delivery(
        &self,
        ws: &str,
        id: DeliveryId,
        now: i64,
    ) -> Result<Option<Delivery>, StoreError> {
        let ws = ws.to_string();
        let dispatch = self.delivery_dispatch.clone();
        self.write_then(
            move |wtx| {
                let mut tables = OpenTables::new(wtx);
                let Some(mut delivery) = read_delivery(&mut tables, &ws, &id)? else {
                    return Ok(None);
                };
                if requeue(&mut delivery, now) {
                    insert_delivery(&mut tables, &delivery)?;
                }
                Ok(Some(delivery))
            },
            move |delivery| {
                if let Some(delivery) = delivery {
                    dispatch.committed(&[QueuedDelivery::of(delivery)]);
                }
            },
        )
        .await
    }

    /// Makes every failed delivery of a destination created since `since_ms` pending again;
    /// returns how many.
    pub async fn recover_deliveries(
        &self,
        ws: &str,
        destination: DestinationId,
        since_ms: i64,
        now: i64,
    ) -> Result<usize, StoreError> {
        let ws = ws.to_string();
        let dispatch = self.delivery_dispatch.clone();
        self.write_then(
            move |wtx| {
                let prefix = ws_key(&ws, &destination);
                let start = with_suffix(&prefix, &id_floor_for_millis(since_ms));
                let end = prefix_end(&prefix);
                let mut ids = Vec::new();
                for entry in wtx
                    .open_table(DELIVERIES_BY_DESTINATION)?
                    .range::<&[u8]>(start.as_slice()..end.as_slice())?
                {
                    let (k, _) = entry?;
                    let id: DeliveryId = k.value()[prefix.len()..]
                        .try_into()
                        .map_err(|_| bad_key())?;
                    ids.push(id);
                }
                let mut requeued = Vec::new();
                let mut tables = OpenTables::new(wtx);
                for id in ids {
                    if let Some(mut delivery) = read_delivery(&mut tables, &ws, &id)?
                        && delivery.status == DeliveryStatus::Failed
                        && requeue(&mut delivery, now)
                    {
                        insert_delivery(&mut tables, &delivery)?;
                        requeued.push(QueuedDelivery::of(&delivery));
                    }
                }
                Ok(requeued)
            },
            move |requeued| dispatch.committed(requeued),
        )
        .await
        .map(|requeued| requeued.len())
    }

    /// Takes the stream of committed deliveries (once: the delivery engine owns it).
    pub fn take_queued_deliveries(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<QueuedDelivery>> {
        self.delivery_dispatch
            .receiver
            .lock()
            .expect("delivery receiver")
            .take()
    }

    /// Every pending delivery (what a restart resumes), oldest first.
    pub async fn queued_deliveries(&self) -> Result<Vec<QueuedDelivery>, StoreError> {
        self.read(|rtx| {
            let queue = rtx.open_table(DELIVERY_QUEUE)?;
            let deliveries = rtx.open_table(DELIVERIES)?;
            let mut out = Vec::new();
            for entry in queue.iter()? {
                let (k, v) = entry?;
                let id: DeliveryId = k.value().try_into().map_err(|_| bad_key())?;
                let ws = String::from_utf8_lossy(v.value()).into_owned();
                match deliveries.get(ws_key(&ws, &id).as_slice())? {
                    Some(v) => out.push(QueuedDelivery::of(&decode_delivery(v.value())?)),
                    // The engine drops the stale queue row.
                    None => out.push(QueuedDelivery {
                        id,
                        workspace_id: ws,
                        destination_id: [0; 16],
                        next_at: 0,
                        event: None,
                    }),
                }
            }
            Ok(out)
        })
        .await
    }

    /// Deletes finished deliveries of `ws` among the `max` oldest created before
    /// `cutoff_ms` (pending ones stay); returns how many were deleted.
    pub async fn delete_deliveries_before(
        &self,
        ws: &str,
        cutoff_ms: i64,
        max: usize,
    ) -> Result<usize, StoreError> {
        let ws = ws.to_string();
        self.write(move |wtx| {
            let prefix = workspace_prefix(&ws);
            let ids = ids_before(
                &wtx.open_table(DELIVERIES)?,
                &prefix,
                cutoff_ms,
                max,
                bad_key,
            )?;
            let mut deleted = 0;
            let mut tables = OpenTables::new(wtx);
            for id in &ids {
                if let Some(delivery) = read_delivery(&mut tables, &ws, id)?
                    && delivery.status != DeliveryStatus::Pending
                {
                    remove_delivery(&mut tables, &ws, &delivery)?;
                    deleted += 1;
                }
            }
            Ok(deleted)
        })
        .await
    }

    /// Workspaces that have stored deliveries (for retention).
    pub async fn delivery_workspaces(&self) -> Result<Vec<String>, StoreError> {
        self.read(|rtx| workspaces_of(&rtx.open_table(DELIVERIES)?, bad_key))
            .await
    }
}
