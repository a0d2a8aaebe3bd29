//! Sends queued deliveries. They arrive from the store right after the commit that queued
//! them (and, at start, from the queue table: what a restart resumes), wait in a timer heap
//! until due, and are attempted with at most `--destination-concurrency` in flight and
//! `--destination-max-rps` started per second per destination, so one slow receiver cannot
//! starve the others. Deliveries of one destination that come due together are sent as a
//! run: one after the other over one pooled connection, their outcomes committed in one
//! write (a run holds one of the destination's slots; it stops at the first
//! attempt without a 2xx, and the rest are due again at once, each on its own). Each
//! attempt's outcome is committed before the next is scheduled; a crash between sending and
//! committing sends it again (at-least-once: receivers dedupe by `webhook-id`).
//!
//! The workspace switch (`POST /api/flows/pause`) holds deliveries too. With `queue`, a
//! delivery that comes due while its workspace is paused is parked here (it stays in the
//! queue table, so a restart keeps holding it); on resume each destination's parked
//! deliveries are sent one at a time in the order they came due, and deliveries of that
//! destination that come due meanwhile wait behind them. With `skip`, a delivery that comes
//! due is marked failed with the pause's reason, unsent (`recover` sends such deliveries
//! later).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Signer;
use super::outbound::{Exchange, Outbound};
use crate::app::App;
use crate::flows::conditions;
use crate::store::{
    AttemptOutcome, AttemptRecord, Delivery, DeliveryAttempt, DeliveryId, DeliveryStatus,
    Destination, DestinationChange, DestinationId, PauseMode, QueuedDelivery, StoreError,
    StoredEvent, format_id,
};
use crate::time::now_ms;

/// How long attempts in flight get to finish at shutdown; the rest are sent again later.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `Retry-After` honoured; longer asks wait this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// A delivery whose attempt could not be recorded (the store failing) is tried again after this.
const STORE_RETRY_MS: i64 = 5_000;
/// How often the queue gauges are recomputed at most.
const GAUGE_INTERVAL: Duration = Duration::from_millis(500);
/// Deliveries waiting here at most with their event in memory (sent without reading it
/// back); beyond that, a backlog is read from the file as it is sent, so memory stays
/// bounded while a receiver is slow.
const MAX_CARRIED_EVENTS: usize = 1024;
/// The most deliveries of one destination sent as one run.
const MAX_RUN: usize = 32;

/// What a run hands back.
#[derive(Default)]
struct Finished {
    /// Per delivery of the run, the delivery again when another attempt is due later.
    items: Vec<(DeliveryId, Option<QueuedDelivery>)>,
    /// Whether the receiver answered every attempt with a 2xx (`None`: nothing was sent).
    healthy: Option<(DestinationId, bool)>,
}

/// What every attempt shares: the agent and the per-destination limits.
struct Shared {
    outbound: Outbound,
    slots: Mutex<HashMap<DestinationId, Arc<Semaphore>>>,
    limiters: Mutex<HashMap<DestinationId, Arc<DefaultDirectRateLimiter>>>,
}

impl Shared {
    fn slots(&self, app: &App, id: DestinationId) -> Arc<Semaphore> {
        self.slots
            .lock()
            .expect("slots lock")
            .entry(id)
            .or_insert_with(|| Arc::new(Semaphore::new(app.config.destination_concurrency)))
            .clone()
    }

    fn limiter(&self, app: &App, id: DestinationId) -> Arc<DefaultDirectRateLimiter> {
        self.limiters
            .lock()
            .expect("limiters lock")
            .entry(id)
            .or_insert_with(|| {
                let rps =
                    NonZeroU32::new(app.config.destination_max_rps).unwrap_or(NonZeroU32::MIN);
                Arc::new(RateLimiter::direct(Quota::per_second(rps)))
            })
            .clone()
    }
}

/// A delivery the engine knows of: waiting in the heap until `due`, or (`None`) in flight,
/// parked by a pause, or waiting its turn after one.
struct Entry {
    due: Option<i64>,
    workspace_id: String,
    destination_id: DestinationId,
    /// The event, for a first attempt without reads (see [`QueuedDelivery::event`]).
    event: Option<Arc<StoredEvent>>,
}

/// What the engine waits on: its entries, the heap of due times, and how many entries
/// carry their event.
#[derive(Default)]
struct Waiting {
    entries: HashMap<DeliveryId, Entry>,
    heap: BinaryHeap<Reverse<(i64, DeliveryId)>>,
    carried: usize,
}

/// Runs until shutdown; attempts in flight then get [`DRAIN_TIMEOUT`] to finish.
pub async fn run(app: App) {
    let Some(mut receiver) = app.store.take_queued_deliveries() else {
        tracing::error!("the delivery engine was started twice");
        return;
    };
    let mut shutdown = app.shutdown.subscribe();
    let shared = Arc::new(Shared {
        outbound: Outbound::new(&app.config),
        slots: Mutex::default(),
        limiters: Mutex::default(),
    });
    let mut waiting = Waiting::default();
    let mut tasks: JoinSet<Finished> = JoinSet::new();
    // Destinations whose last run had an attempt without a 2xx: their deliveries go one at
    // a time, so that a slow receiver's timeouts are waited out in parallel, up to the
    // destination's slots, instead of one after the other in a run.
    let mut failing: HashSet<DestinationId> = HashSet::new();
    let mut gauges = Gauges::default();
    let mut held = Held::default();
    let mut pause_changes = app.store.pause_changes();
    match app.store.queued_deliveries().await {
        Ok(queued) => {
            if !queued.is_empty() {
                tracing::info!(deliveries = queued.len(), "resuming queued deliveries");
            }
            for q in queued {
                waiting.schedule(q);
            }
        }
        Err(err) => tracing::error!(error = %err, "cannot read the delivery queue"),
    }
    loop {
        let now = now_ms();
        let mut due = Vec::new();
        while let Some(job) = waiting.pop_due(now) {
            if let Some(job) = held.hold(&app, job) {
                due.push(job);
            }
        }
        spawn_runs(&mut tasks, &app, &shared, &failing, due);
        gauges.update(&app, &waiting.entries);
        let wait = waiting
            .heap
            .peek()
            .map(|Reverse((due, _))| Duration::from_millis((due - now).max(0) as u64))
            .unwrap_or(Duration::from_secs(3600))
            .min(GAUGE_INTERVAL * 4);
        tokio::select! {
            received = receiver.recv() => match received {
                Some(queued) => {
                    waiting.schedule(queued);
                    // What one commit queued arrives together: take all of it, so that it
                    // is sent as runs.
                    while let Ok(queued) = receiver.try_recv() {
                        waiting.schedule(queued);
                    }
                }
                None => break,
            },
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                let joined = joined.unwrap_or_default();
                match joined.healthy {
                    Some((destination, true)) => failing.remove(&destination),
                    Some((destination, false)) => failing.insert(destination),
                    None => false,
                };
                let mut next_in_line = Vec::new();
                for (id, next) in joined.items {
                    if let Some(entry) = waiting.entries.remove(&id)
                        && let Some(job) = held.finished(&app, entry.destination_id, id)
                    {
                        next_in_line.push(job);
                    }
                    if let Some(next) = next {
                        waiting.schedule(next);
                    }
                }
                // Released deliveries go one at a time, in order.
                for job in next_in_line {
                    spawn_runs(&mut tasks, &app, &shared, &failing, vec![job]);
                }
            }
            Ok(()) = pause_changes.changed() => {
                for job in held.release(&app) {
                    spawn_runs(&mut tasks, &app, &shared, &failing, vec![job]);
                }
            }
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    // Waiting deliveries stay in the queue table for the next start.
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "delivery attempts still in flight at shutdown are sent again on the next start"
        );
        tasks.abort_all();
    }
}

/// Starts `jobs` as runs: per destination in the order given, at most [`MAX_RUN`] each, or
/// one each for a `failing` destination.
fn spawn_runs(
    tasks: &mut JoinSet<Finished>,
    app: &App,
    shared: &Arc<Shared>,
    failing: &HashSet<DestinationId>,
    jobs: Vec<QueuedDelivery>,
) {
    let mut runs: Vec<Vec<QueuedDelivery>> = Vec::new();
    let mut open: HashMap<DestinationId, usize> = HashMap::new();
    for job in jobs {
        let most = if failing.contains(&job.destination_id) {
            1
        } else {
            MAX_RUN
        };
        match open.get(&job.destination_id) {
            Some(&i) if runs[i].len() < most => runs[i].push(job),
            _ => {
                open.insert(job.destination_id, runs.len());
                runs.push(vec![job]);
            }
        }
    }
    for run in runs {
        let (app, shared) = (app.clone(), shared.clone());
        tasks.spawn(async move { attempt_run(&app, &shared, run).await });
    }
}

/// Deliveries held back by workspace pauses (`queue`), and those released by a resume that
/// are sent one at a time per destination, in order.
#[derive(Default)]
struct Held {
    /// Parked while their workspace is paused, in the order they came due.
    parked: HashMap<String, Vec<QueuedDelivery>>,
    /// Released (or due behind released ones), per destination, waiting their turn.
    draining: HashMap<DestinationId, VecDeque<QueuedDelivery>>,
    /// The delivery of each draining destination in flight.
    sending: HashMap<DestinationId, DeliveryId>,
}

impl Held {
    /// Returns `job` to send it now, or keeps it: parked while its workspace is paused with
    /// `queue`, or in line behind its destination's released deliveries.
    fn hold(&mut self, app: &App, job: QueuedDelivery) -> Option<QueuedDelivery> {
        if holding(app, &job.workspace_id) {
            // A pause may last long: its backlog is read back when it is sent.
            self.parked
                .entry(job.workspace_id.clone())
                .or_default()
                .push(QueuedDelivery { event: None, ..job });
            return None;
        }
        match self.draining.get_mut(&job.destination_id) {
            Some(line) => {
                line.push_back(QueuedDelivery { event: None, ..job });
                None
            }
            None => Some(job),
        }
    }

    /// After a pause changed: the parked deliveries of workspaces no longer held go in line
    /// per destination; returns the first of each line to send.
    fn release(&mut self, app: &App) -> Vec<QueuedDelivery> {
        let released: Vec<String> = self
            .parked
            .keys()
            .filter(|ws| !holding(app, ws))
            .cloned()
            .collect();
        let mut touched = Vec::new();
        for ws in released {
            for job in self.parked.remove(&ws).unwrap_or_default() {
                let destination = job.destination_id;
                self.draining.entry(destination).or_default().push_back(job);
                touched.push(destination);
            }
        }
        touched
            .into_iter()
            .filter_map(|destination| self.next(destination))
            .collect()
    }

    /// The next delivery of `destination`'s line, unless one is in flight.
    fn next(&mut self, destination: DestinationId) -> Option<QueuedDelivery> {
        if self.sending.contains_key(&destination) {
            return None;
        }
        let line = self.draining.get_mut(&destination)?;
        match line.pop_front() {
            Some(job) => {
                self.sending.insert(destination, job.id);
                Some(job)
            }
            None => {
                self.draining.remove(&destination);
                None
            }
        }
    }

    /// An attempt ended; returns the next delivery of its destination's line, if any. A line
    /// whose workspace was paused again meanwhile is parked whole, ahead of what was parked
    /// since (it came due first).
    fn finished(
        &mut self,
        app: &App,
        destination: DestinationId,
        id: DeliveryId,
    ) -> Option<QueuedDelivery> {
        if self.sending.get(&destination) != Some(&id) {
            return None;
        }
        self.sending.remove(&destination);
        let line = self.draining.remove(&destination)?;
        let ws = line.front()?.workspace_id.clone();
        if holding(app, &ws) {
            let parked = self.parked.entry(ws).or_default();
            let since = std::mem::take(parked);
            parked.extend(line);
            parked.extend(since);
            return None;
        }
        self.draining.insert(destination, line);
        self.next(destination)
    }
}

/// Whether the workspace is paused with deliveries held (`queue`).
fn holding(app: &App, ws: &str) -> bool {
    app.store
        .flows_pause(ws)
        .is_some_and(|p| p.mode == PauseMode::Queue)
}

impl Waiting {
    /// Puts a delivery on the heap, unless it is in flight or already due no later.
    fn schedule(&mut self, queued: QueuedDelivery) {
        match self.entries.get_mut(&queued.id) {
            // In flight: its attempt reads the stored record when it ends.
            Some(Entry { due: None, .. }) => {}
            Some(entry) => {
                if entry.due.is_some_and(|due| queued.next_at < due) {
                    entry.due = Some(queued.next_at);
                    self.heap.push(Reverse((queued.next_at, queued.id)));
                }
            }
            None => {
                let event = queued.event.filter(|_| self.carried < MAX_CARRIED_EVENTS);
                self.carried += usize::from(event.is_some());
                self.entries.insert(
                    queued.id,
                    Entry {
                        due: Some(queued.next_at),
                        workspace_id: queued.workspace_id,
                        destination_id: queued.destination_id,
                        event,
                    },
                );
                self.heap.push(Reverse((queued.next_at, queued.id)));
            }
        }
    }

    /// The next delivery due by `now`, marked in flight.
    fn pop_due(&mut self, now: i64) -> Option<QueuedDelivery> {
        while let Some(Reverse((due, id))) = self.heap.peek().copied() {
            if due > now {
                return None;
            }
            self.heap.pop();
            // A stale heap entry: the delivery was rescheduled or is in flight.
            let Some(entry) = self.entries.get_mut(&id).filter(|e| e.due == Some(due)) else {
                continue;
            };
            entry.due = None;
            let event = entry.event.take();
            self.carried -= usize::from(event.is_some());
            return Some(QueuedDelivery {
                id,
                workspace_id: entry.workspace_id.clone(),
                destination_id: entry.destination_id,
                next_at: due,
                event,
            });
        }
        None
    }
}

/// Queue depth and oldest pending age per destination, recomputed at most every
/// [`GAUGE_INTERVAL`]; destinations that emptied are set to zero.
#[derive(Default)]
struct Gauges {
    last: Option<Instant>,
    labelled: HashSet<DestinationId>,
}

impl Gauges {
    fn update(&mut self, app: &App, entries: &HashMap<DeliveryId, Entry>) {
        if self.last.is_some_and(|t| t.elapsed() < GAUGE_INTERVAL) {
            return;
        }
        self.last = Some(Instant::now());
        let now = now_ms();
        let mut per: HashMap<DestinationId, (u64, i64)> = HashMap::new();
        for (id, entry) in entries {
            let created = millis_of_id(id);
            let slot = per.entry(entry.destination_id).or_insert((0, created));
            slot.0 += 1;
            slot.1 = slot.1.min(created);
        }
        for gone in self.labelled.iter().filter(|d| !per.contains_key(*d)) {
            let label = format_id(gone);
            metrics::gauge!("destination_queue_depth", "destination" => label.clone()).set(0.0);
            metrics::gauge!("destination_oldest_pending_seconds", "destination" => label).set(0.0);
        }
        self.labelled = per.keys().copied().collect();
        app.delivery_queue
            .lock()
            .expect("delivery queue lock")
            .clone_from(&per);
        for (destination, (depth, oldest)) in per {
            let label = format_id(&destination);
            metrics::gauge!("destination_queue_depth", "destination" => label.clone())
                .set(depth as f64);
            metrics::gauge!("destination_oldest_pending_seconds", "destination" => label)
                .set(((now - oldest).max(0) as f64) / 1000.0);
        }
    }
}

/// Milliseconds since the epoch in a UUIDv7 (a delivery's id is made when it is queued).
fn millis_of_id(id: &[u8; 16]) -> i64 {
    let mut bytes = [0u8; 8];
    bytes[2..].copy_from_slice(&id[..6]);
    u64::from_be_bytes(bytes) as i64
}

/// What a due delivery needs before it is sent.
enum Prepared {
    /// Nothing to send: dropped, given up on, or due later (`Some`).
    Done(Option<QueuedDelivery>),
    Send {
        delivery: Delivery,
        destination: Arc<Destination>,
        body: Vec<u8>,
    },
}

/// A delivery whose attempt could not be recorded (the store failing) is due again later;
/// `None` when the store is closing (the queue table keeps it for the next start).
fn store_failed(job: &QueuedDelivery, err: &StoreError) -> Option<QueuedDelivery> {
    if matches!(err, StoreError::Closed) {
        return None;
    }
    tracing::warn!(error = %err, delivery = %format_id(&job.id), "delivery attempt could not be recorded; trying again");
    Some(QueuedDelivery {
        next_at: now_ms() + STORE_RETRY_MS,
        event: None,
        ..job.clone()
    })
}

/// One attempt of each due delivery of a run (all of one destination); returns each again
/// when another attempt is due later.
async fn attempt_run(app: &App, shared: &Shared, jobs: Vec<QueuedDelivery>) -> Finished {
    let mut finished = Finished {
        items: Vec::with_capacity(jobs.len()),
        healthy: None,
    };
    let mut sending = Vec::new();
    for job in jobs {
        match prepare(app, &job).await {
            Ok(Prepared::Done(next)) => finished.items.push((job.id, next)),
            Ok(Prepared::Send {
                delivery,
                destination,
                body,
            }) => sending.push((job, delivery, destination, body)),
            Err(err) => finished.items.push((job.id, store_failed(&job, &err))),
        }
    }
    let Some(destination_id) = sending.first().map(|(_, _, d, _)| d.id) else {
        return finished;
    };
    let slot = shared
        .slots(app, destination_id)
        .acquire_owned()
        .await
        .expect("slots never close");
    let limiter = shared.limiter(app, destination_id);
    let mut requests = Vec::with_capacity(sending.len());
    let mut sent_at = Vec::with_capacity(sending.len());
    let mut unsendable = None;
    // Opened once per run (again if a delivery brought a newer record of the destination).
    let mut signer: Option<(Arc<Destination>, Signer)> = None;
    for (job, delivery, destination, body) in &mut sending {
        limiter.until_ready().await;
        let now = now_ms();
        if !signer
            .as_ref()
            .is_some_and(|(d, _)| Arc::ptr_eq(d, destination))
        {
            match Signer::open(app, destination) {
                Ok(opened) => signer = Some((destination.clone(), opened)),
                Err(err) => {
                    // Not sent: this one is due again later, the rest at once.
                    unsendable = Some((job.id, store_failed(job, &err)));
                    break;
                }
            }
        }
        let (_, opened) = signer.as_ref().expect("opened above");
        let headers = opened.headers(&format_id(&delivery.id), body, now);
        if delivery.attempts.is_empty() {
            metrics::histogram!("destination_first_attempt_delay_seconds")
                .record(((now - delivery.created_at).max(0) as f64) / 1000.0);
        }
        requests.push((destination.url.clone(), headers, std::mem::take(body)));
        sent_at.push(now);
    }
    let exchanges = shared.outbound.post_run(requests).await;
    drop(slot);
    if !exchanges.is_empty() {
        let healthy = exchanges.iter().all(Exchange::succeeded);
        finished.healthy = Some((destination_id, healthy));
    }
    let mut records = Vec::with_capacity(exchanges.len());
    let mut recorded = Vec::with_capacity(exchanges.len());
    let mut rest = sending.into_iter();
    for (exchange, now) in exchanges.into_iter().zip(sent_at) {
        let (job, delivery, destination, _) = rest.next().expect("one exchange per request");
        records.push(decide(app, &destination, &delivery, now, exchange));
        recorded.push((job, destination));
    }
    // Prepared but not sent (the run stopped at a failing attempt): due again at once, each
    // on its own run if the receiver keeps failing.
    let skip = unsendable.as_ref().map(|(id, _)| *id);
    finished.items.extend(unsendable);
    for (job, _, _, _) in rest.filter(|(job, ..)| Some(job.id) != skip) {
        let next = QueuedDelivery {
            next_at: now_ms(),
            ..job
        };
        finished.items.push((next.id, Some(next)));
    }
    match app.store.attempts_recorded(records).await {
        Ok(stored) => {
            for ((job, destination), (stored, disabled)) in recorded.into_iter().zip(stored) {
                let next = after_record(&job, &destination, stored, disabled);
                finished.items.push((job.id, next));
            }
        }
        Err(err) => {
            for (job, _) in recorded {
                finished.items.push((job.id, store_failed(&job, &err)));
            }
        }
    }
    finished
}

/// Reads what a due delivery needs, and settles those that are not to be sent: gone,
/// rescheduled, paused with `skip`, disabled, filtered out by conditions, or failing to
/// render.
async fn prepare(app: &App, job: &QueuedDelivery) -> Result<Prepared, StoreError> {
    let ws = job.workspace_id.as_str();
    // Queued with its event and not attempted since, to a destination still enabled: all
    // that is needed is in memory (the common case, so forwarding costs no reads).
    let fresh = job
        .fresh_delivery()
        .zip(app.store.enabled_destination(ws, job.destination_id));
    let (delivery, destination) = match fresh {
        Some(known) => known,
        None => {
            let Some(delivery) = app.store.delivery(ws, job.id).await? else {
                app.store.drop_delivery(ws, job.id).await?;
                return Ok(Prepared::Done(None));
            };
            if delivery.status != DeliveryStatus::Pending {
                return Ok(Prepared::Done(None));
            }
            if delivery.next_at > now_ms() + 5 {
                // Rescheduled meanwhile (a retry that answered Retry-After, say).
                return Ok(Prepared::Done(Some(QueuedDelivery::of(&delivery))));
            }
            let Some(destination) = app.store.destination(ws, delivery.destination_id).await?
            else {
                app.store.drop_delivery(ws, job.id).await?;
                return Ok(Prepared::Done(None));
            };
            (delivery, Arc::new(destination))
        }
    };
    let give_up = async |reason: String| -> Result<Prepared, StoreError> {
        app.store
            .delivery_attempted(ws, job.id, None, AttemptOutcome::Failed(reason))
            .await?;
        count_final(&destination, DeliveryStatus::Failed);
        Ok(Prepared::Done(None))
    };
    if let Some(pause) = app
        .store
        .flows_pause(ws)
        .filter(|p| p.mode == PauseMode::Skip)
    {
        return give_up(format!(
            "not sent: the workspace is paused ({})",
            pause.reason
        ))
        .await;
    }
    if !destination.enabled {
        let reason = destination
            .disabled_reason
            .clone()
            .unwrap_or_else(|| "by an admin".into());
        return give_up(format!("not sent: the destination is disabled ({reason})")).await;
    }
    let event = match &job.event {
        Some(event) => event.clone(),
        None => match app.store.event(ws, delivery.event_id).await? {
            Some(event) => Arc::new(event),
            None => return give_up("not sent: the event is no longer stored".into()).await,
        },
    };
    let check_conditions =
        delivery.attempts.is_empty() && !destination.filter.conditions.rules.is_empty();
    // Parsed only when a condition or the template reads it.
    let payload: Value = if check_conditions || destination.template.is_some() {
        serde_json::from_slice(&event.body).unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    if check_conditions {
        match conditions::evaluate(&destination.filter.conditions, &payload) {
            Ok((true, _)) => {}
            Ok((false, _)) => {
                app.store.drop_delivery(ws, job.id).await?;
                return Ok(Prepared::Done(None));
            }
            Err(message) => {
                return give_up(format!(
                    "not sent: the conditions could not be evaluated: {message}"
                ))
                .await;
            }
        }
    }
    let body = match &destination.template {
        None => event.body.clone(),
        Some(template) => match render(app, ws, template, &payload, &event.event_type).await? {
            Ok(body) => body,
            Err(message) => {
                return give_up(format!("not sent: the template failed: {message}")).await;
            }
        },
    };
    Ok(Prepared::Send {
        delivery,
        destination,
        body,
    })
}

/// Renders a destination's template against the event; the body is the rendered text, or
/// the rendered value as JSON.
async fn render(
    app: &App,
    ws: &str,
    template: &str,
    payload: &Value,
    event_type: &str,
) -> Result<Result<Vec<u8>, String>, StoreError> {
    let Some(installation) = app.store.installation(ws).await? else {
        return Ok(Err("the workspace is not installed".into()));
    };
    let context = crate::flows::engine::context_for(&installation, payload, event_type);
    Ok(
        match context.render(&Value::String(template.to_string()), "template") {
            Ok(Value::String(text)) => Ok(text.into_bytes()),
            Ok(value) => Ok(serde_json::to_vec(&value).expect("JSON serializes")),
            Err(err) => Err(err.message),
        },
    )
}

/// What an attempt's exchange leads to, as a record to store; counts the attempt.
fn decide(
    app: &App,
    destination: &Destination,
    delivery: &Delivery,
    now: i64,
    exchange: Exchange,
) -> AttemptRecord {
    let label = format_id(&destination.id);
    let class = match exchange.status {
        Some(status) => format!("{}xx", status / 100),
        None => "error".to_string(),
    };
    metrics::counter!("destination_attempts_total", "destination" => label.clone(), "result" => class)
        .increment(1);
    let attempt = DeliveryAttempt {
        at: now,
        status: exchange.status,
        latency_ms: exchange.latency_ms,
        response: exchange.response,
    };
    let attempts = delivery.attempts.len() + 1;
    let schedule = &app.config.destination_retry_schedule;
    let (outcome, change) = match exchange.status {
        Some(status) if (200..300).contains(&status) => {
            (AttemptOutcome::Delivered, DestinationChange::Succeeded)
        }
        Some(410) => (
            AttemptOutcome::Failed(
                "the receiver answered 410 Gone: the destination is disabled".into(),
            ),
            DestinationChange::Disable("the receiver answered 410 Gone".into()),
        ),
        _ => {
            metrics::counter!("destination_failures_total", "destination" => label).increment(1);
            let outcome = match schedule.get(attempts) {
                Some(delay) => {
                    let wait = jittered(*delay).max(
                        exchange
                            .retry_after
                            .map(|r| r.min(MAX_RETRY_AFTER))
                            .unwrap_or_default(),
                    );
                    AttemptOutcome::RetryAt(now + wait.as_millis() as i64)
                }
                None => {
                    AttemptOutcome::Failed(format!("no 2xx answer after {attempts} attempt(s)"))
                }
            };
            let disable_before = now - app.config.destination_disable_after.as_millis() as i64;
            (
                outcome,
                DestinationChange::Failed {
                    now,
                    disable_before,
                },
            )
        }
    };
    AttemptRecord {
        workspace_id: delivery.workspace_id.clone(),
        id: delivery.id,
        attempt: Some(attempt),
        outcome,
        change: Some((destination.id, change)),
    }
}

/// After an attempt was stored: logs a destination it disabled, counts a final outcome, and
/// returns the delivery when it is retried.
fn after_record(
    job: &QueuedDelivery,
    destination: &Destination,
    stored: Option<Delivery>,
    disabled: Option<Destination>,
) -> Option<QueuedDelivery> {
    if let Some(disabled) = disabled {
        let label = format_id(&destination.id);
        tracing::warn!(
            workspace = %job.workspace_id,
            destination = %label,
            reason = disabled.disabled_reason.as_deref().unwrap_or(""),
            "destination disabled"
        );
        metrics::counter!("destination_disabled_total", "destination" => label).increment(1);
    }
    let stored = stored?;
    if stored.status == DeliveryStatus::Pending {
        return Some(QueuedDelivery::of(&stored));
    }
    count_final(destination, stored.status);
    None
}

fn count_final(destination: &Destination, status: DeliveryStatus) {
    metrics::counter!("destination_deliveries_total", "destination" => format_id(&destination.id), "status" => status.as_str())
        .increment(1);
}

/// `delay` ± 10%, so receivers recovering from an outage are not hit by every retry at once.
fn jittered(delay: Duration) -> Duration {
    let ms = delay.as_millis() as u64;
    if ms == 0 {
        return delay;
    }
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).expect("operating system random source");
    let spread = ms / 5;
    let offset = u64::from_le_bytes(random) % (spread + 1);
    Duration::from_millis(ms - ms / 10 + offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..1000 {
            let d = jittered(Duration::from_millis(1000)).as_millis();
            assert!((900..=1100).contains(&d), "{d}");
        }
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }
}
