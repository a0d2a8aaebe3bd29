//! Ingestion: turning a delivery into a stored event. `clockify` verifies Clockify's own
//! webhooks, `custom` the events of other systems (custom sources); both end in
//! [`store_event`], which stores the event durably once and publishes it to live listeners.
//! Nothing here knows HTTP: the `api` layer reads the request and maps [`IngestError`].

pub mod clockify;
pub mod custom;
pub mod strict;

use std::sync::LazyLock;

use crate::app::App;
use crate::store::{EventId, Ingested, NewEvent, StoreError};

/// The 50 event types Clockify's API accepts for webhooks.
pub static CLOCKIFY_EVENTS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    include_str!("../webhook-events.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
});

pub fn is_clockify_event(name: &str) -> bool {
    CLOCKIFY_EVENTS.contains(&name)
}

/// Headers whose values are secrets: never stored, logged or shown.
const SECRET_HEADERS: &[&str] = &[
    "clockify-signature",
    "x-addon-token",
    "x-addon-lifecycle-token",
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "webhook-signature",
];

/// The headers as stored: names kept (lower case), secret values replaced. Anything that
/// looks like a credential by name is redacted too.
pub fn redact_headers<'a>(
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Vec<(String, String)> {
    headers
        .map(|(name, value)| {
            let name = name.to_ascii_lowercase();
            let secret = SECRET_HEADERS.contains(&name.as_str())
                || [
                    "token",
                    "secret",
                    "signature",
                    "password",
                    "api-key",
                    "apikey",
                ]
                .iter()
                .any(|word| name.contains(word));
            let value = if secret {
                "[redacted]".to_string()
            } else {
                String::from_utf8_lossy(value).into_owned()
            };
            (name, value)
        })
        .collect()
}

/// What kind of refusal a rejected delivery is; the HTTP layer picks the status from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectKind {
    /// The request itself is malformed (unknown event, invalid JSON, …).
    Invalid,
    /// No valid credential.
    Unauthenticated,
    /// A valid credential that does not grant this (wrong workspace, inactive installation).
    Forbidden,
    /// The addressed source does not exist.
    NotFound,
}

/// A delivery refused before anything was stored. `reason` labels the rejection metric.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Rejected {
    pub kind: RejectKind,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Rejected(#[from] Rejected),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Counts a rejection of `source`'s delivery (`clockify` or `custom`) in
/// `webhook_rejections_total{source, reason}`.
pub fn count_rejection(source: &'static str, reason: &'static str) {
    metrics::counter!("webhook_rejections_total", "source" => source, "reason" => reason)
        .increment(1);
}

/// A counted rejection.
fn reject(
    source: &'static str,
    reason: &'static str,
    kind: RejectKind,
    message: impl Into<String>,
) -> IngestError {
    count_rejection(source, reason);
    IngestError::Rejected(Rejected {
        kind,
        reason,
        message: message.into(),
    })
}

/// `webhooks_received_total{source, outcome}`, registered once (all four series, so each
/// shows from the first delivery on): a registry lookup per delivery showed in the ingest
/// profile.
fn received_counter(custom: bool, duplicate: bool) -> &'static metrics::Counter {
    static COUNTERS: LazyLock<[metrics::Counter; 4]> = LazyLock::new(|| {
        let counter = |source: &'static str, outcome: &'static str| metrics::counter!("webhooks_received_total", "source" => source, "outcome" => outcome);
        [
            counter("clockify", "stored"),
            counter("clockify", "duplicate"),
            counter("custom", "stored"),
            counter("custom", "duplicate"),
        ]
    });
    &COUNTERS[2 * usize::from(custom) + usize::from(duplicate)]
}

/// An accepted delivery: the stored event (or the one it duplicates).
#[derive(Clone, Copy, Debug)]
pub struct Received {
    pub event_id: EventId,
    pub duplicate: bool,
}

/// Stores an event (the store announces it to live listeners); returns only after the
/// commit, so an acknowledgement is durable.
pub async fn store_event(app: &App, new: NewEvent) -> Result<Received, StoreError> {
    let custom = new.source_id.is_some();
    let (event_id, duplicate) = match app.store.ingest(new).await? {
        Ingested::Stored(event) => (event.id, false),
        Ingested::Duplicate { original } => (original, true),
    };
    received_counter(custom, duplicate).increment(1);
    Ok(Received {
        event_id,
        duplicate,
    })
}
