//! Destinations: the workspace's own endpoints that receive its events, signed like
//! Standard Webhooks, retried on a schedule, never lost. Deliveries are queued by ingestion
//! in the event's own transaction (see the store); [`engine`] sends them; this file is what
//! admins manage (create, change, rotate the secret, test, retry, recover).

pub mod engine;
pub mod outbound;

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::app::App;
use crate::problem::{self, Problem};
use crate::sources::{ROTATION_GRACE_MS, new_secret, standard_webhooks_signature};
use crate::store::{
    Conditions, Delivery, DeliveryAttempt, DeliveryId, DeliveryPage, DeliveryStatus, Destination,
    DestinationFilter, DestinationId, DestinationSecret, StoreError, format_id, new_id,
};
use crate::time::now_ms;
use outbound::{AllowedHosts, Exchange, Outbound, check_url};

const MAX_NAME_CHARS: usize = 100;
const MAX_URL_LEN: usize = 2048;
const MAX_HEADERS: usize = 20;
const MAX_EVENTS: usize = 100;
const MAX_TEMPLATE_LEN: usize = 64 * 1024;
pub use outbound::MASK;
/// Headers a destination may not set: the signature's, and what the transport owns.
const RESERVED_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
    "connection",
    "transfer-encoding",
    "user-agent",
];

#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error("no destination {0} in this workspace")]
    NotFound(String),
    #[error("no delivery {0} in this workspace")]
    DeliveryNotFound(String),
    #[error("the destination has {} problem(s)", .0.len())]
    Invalid(Vec<Problem>),
    #[error("{0}")]
    BadRequest(String),
    #[error("the workspace is not installed")]
    NotInstalled,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an admin sends to create or replace a destination.
pub struct Spec {
    pub name: String,
    pub url: String,
    /// `None`: new destinations start enabled, a replacement keeps the current state.
    pub enabled: Option<bool>,
    pub source: Option<String>,
    pub events: Vec<String>,
    /// `{"mode", "rules"}` as in flows; `null` for none.
    pub conditions: Value,
    pub template: Option<String>,
    pub headers: BTreeMap<String, String>,
}

/// Checked parts of a [`Spec`].
struct Checked {
    conditions: Conditions,
}

/// Checks a spec; a named source must be `clockify`, `studio` or one of the workspace's
/// custom sources.
async fn check(app: &App, ws: &str, spec: &Spec) -> Result<Checked, DestinationError> {
    let source_known = match spec.source.as_deref() {
        Some(source) if !is_builtin_source(source) => app
            .store
            .source(source)
            .await?
            .is_some_and(|s| s.workspace_id == ws),
        _ => true,
    };
    check_spec(app, spec, source_known)
        .map(|conditions| Checked { conditions })
        .map_err(DestinationError::Invalid)
}

/// `clockify` (Clockify's webhooks) and `studio` (the server's own notifications: a flow
/// disabled, syncs failing) need no custom source. A filter without a source forwards every
/// source but `studio`, which must be named.
pub fn is_builtin_source(source: &str) -> bool {
    source == crate::store::CLOCKIFY_SOURCE || source == crate::store::STUDIO_SOURCE
}

/// The checks of a spec that need no store; `source_known` says whether the custom source
/// its filter names (if any) is the workspace's. An import checks with it, knowing the
/// document's sources.
pub fn check_spec(app: &App, spec: &Spec, source_known: bool) -> Result<Conditions, Vec<Problem>> {
    let mut problems = Vec::new();
    if let Some(source) = spec.source.as_deref()
        && !source_known
    {
        problems.push(Problem::new(
            "filter.source",
            format!("no custom source {source} in this workspace (use \"clockify\", \"studio\", a source id, or null)"),
        ));
    }
    let name = spec.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        problems.push(Problem::new(
            "name",
            format!("must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    if spec.url.len() > MAX_URL_LEN {
        problems.push(Problem::new(
            "url",
            format!("must be at most {MAX_URL_LEN} characters"),
        ));
    } else if let Err(message) = check_url(
        &spec.url,
        &AllowedHosts::new(&app.config.allow_destination_hosts),
    ) {
        problems.push(Problem::new("url", message));
    }
    if let Some(source) = &spec.source
        && (source.is_empty() || source.len() > 100)
    {
        problems.push(Problem::new(
            "filter.source",
            "must be \"clockify\", \"studio\", a custom source id, or null for every received event",
        ));
    }
    if spec.events.len() > MAX_EVENTS
        || spec
            .events
            .iter()
            .any(|e| e.is_empty() || e.len() > 100 || e.chars().any(char::is_control))
    {
        problems.push(Problem::new(
            "filter.events",
            format!("must be at most {MAX_EVENTS} event types of 1 to 100 printable characters"),
        ));
    }
    let mut texts = Vec::new();
    let conditions = crate::flows::model::parse_conditions(&spec.conditions, &mut texts);
    problems.extend(
        problem::from_texts(texts)
            .into_iter()
            .map(|p| Problem::new(format!("filter.{}", p.path), p.message)),
    );
    if let Some(template) = &spec.template {
        if template.len() > MAX_TEMPLATE_LEN {
            problems.push(Problem::new(
                "template",
                format!("must be at most {MAX_TEMPLATE_LEN} bytes"),
            ));
        } else {
            let mut errors = Vec::new();
            crate::flows::template::check(
                &Value::String(template.clone()),
                "template",
                &mut errors,
            );
            problems.extend(
                errors
                    .iter()
                    .map(|e| Problem::new("template", e.message.clone())),
            );
        }
    }
    if spec.headers.len() > MAX_HEADERS {
        problems.push(Problem::new(
            "headers",
            format!("at most {MAX_HEADERS} headers"),
        ));
    }
    for (name, value) in &spec.headers {
        let lower = name.to_ascii_lowercase();
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            problems.push(Problem::new(format!("headers.{name}"), "not a header name"));
        } else if RESERVED_HEADERS.contains(&lower.as_str()) {
            problems.push(Problem::new(
                format!("headers.{name}"),
                "set by the server; a destination may not change it",
            ));
        } else if http::HeaderValue::from_str(value).is_err() || value.len() > 4096 {
            problems.push(Problem::new(
                format!("headers.{name}"),
                "must be at most 4096 visible characters",
            ));
        }
    }
    if problems.is_empty() {
        Ok(conditions)
    } else {
        Err(problems)
    }
}

fn parse_destination_id(id: &str) -> Result<DestinationId, DestinationError> {
    crate::store::parse_id(id).ok_or_else(|| DestinationError::NotFound(id.to_string()))
}

/// Seals header values; [`MASK`] keeps the value `current` has under that name.
pub fn seal_headers(
    app: &App,
    headers: &BTreeMap<String, String>,
    current: &[(String, crate::store::Sealed)],
) -> Vec<(String, crate::store::Sealed)> {
    headers
        .iter()
        .map(|(name, value)| {
            let kept = (value == MASK)
                .then(|| current.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)))
                .flatten();
            match kept {
                Some((_, sealed)) => (name.clone(), sealed.clone()),
                None => (name.clone(), app.store.secrets().seal_str(value)),
            }
        })
        .collect()
}

/// Creates a destination; returns it with its secret in plain text (the only time it is
/// shown).
pub async fn create(
    app: &App,
    ws: &str,
    spec: Spec,
) -> Result<(Destination, String), DestinationError> {
    let checked = check(app, ws, &spec).await?;
    let secret = new_secret();
    let now = now_ms();
    let destination = Destination {
        id: new_id(),
        workspace_id: ws.to_string(),
        name: spec.name.trim().to_string(),
        url: spec.url.clone(),
        enabled: spec.enabled.unwrap_or(true),
        disabled_reason: None,
        filter: DestinationFilter {
            source: spec.source.clone(),
            events: spec.events.clone(),
            conditions: checked.conditions,
        },
        template: spec.template.clone(),
        headers: seal_headers(app, &spec.headers, &[]),
        secrets: vec![DestinationSecret {
            secret: app.store.secrets().seal_str(&secret),
            valid_until: None,
        }],
        failing_since: None,
        created_at: now,
        updated_at: now,
        rotated_at: None,
    };
    if !app.store.put_destination(destination.clone()).await? {
        return Err(DestinationError::NotInstalled);
    }
    Ok((destination, secret))
}

/// A destination of an imported configuration, its `spec` checked with [`check_spec`].
/// Replacing `existing` (the same id in this workspace) keeps its creation time, health and
/// — unless `secret` is given — its secrets, as an update does. Returns the new secret when
/// one had to be made (a new destination whose secret did not travel).
pub fn imported(
    app: &App,
    ws: &str,
    id: DestinationId,
    spec: Spec,
    conditions: Conditions,
    secret: Option<&str>,
    existing: Option<Destination>,
) -> (Destination, Option<String>) {
    let now = now_ms();
    let sealed_secret = |secret: &str| {
        vec![DestinationSecret {
            secret: app.store.secrets().seal_str(secret),
            valid_until: None,
        }]
    };
    let mut made = None;
    let mut destination = match existing {
        Some(mut d) => {
            let enabled = spec.enabled.unwrap_or(d.enabled);
            if enabled && !d.enabled {
                d.disabled_reason = None;
                d.failing_since = None;
            }
            d.enabled = enabled;
            if let Some(secret) = secret {
                d.secrets = sealed_secret(secret);
                d.rotated_at = Some(now);
            }
            d.updated_at = now;
            d
        }
        None => {
            let secret = match secret {
                Some(secret) => secret.to_string(),
                None => made.insert(new_secret()).clone(),
            };
            Destination {
                id,
                workspace_id: ws.to_string(),
                name: String::new(),
                url: String::new(),
                enabled: spec.enabled.unwrap_or(true),
                disabled_reason: None,
                filter: DestinationFilter {
                    source: None,
                    events: Vec::new(),
                    conditions: Conditions {
                        any: false,
                        rules: Vec::new(),
                    },
                },
                template: None,
                headers: Vec::new(),
                secrets: sealed_secret(&secret),
                failing_since: None,
                created_at: now,
                updated_at: now,
                rotated_at: None,
            }
        }
    };
    destination.name = spec.name.trim().to_string();
    destination.url = spec.url;
    destination.filter = DestinationFilter {
        source: spec.source,
        events: spec.events,
        conditions,
    };
    destination.template = spec.template;
    destination.headers = seal_headers(app, &spec.headers, &destination.headers);
    (destination, made)
}

/// Header names with [`MASK`] for values, as the API and exports show them.
pub fn masked_headers(destination: &Destination) -> BTreeMap<String, String> {
    destination
        .headers
        .iter()
        .map(|(name, _)| (name.clone(), MASK.to_string()))
        .collect()
}

/// A destination's filter as the API shows and takes it.
pub fn filter_json(filter: &DestinationFilter) -> Value {
    json!({
        "source": filter.source,
        "events": filter.events,
        "conditions": conditions_json(&filter.conditions),
    })
}

/// Conditions as flows write them: `{"mode": "all"|"any", "rules": [...]}`.
pub fn conditions_json(conditions: &Conditions) -> Value {
    json!({
        "mode": if conditions.any { "any" } else { "all" },
        "rules": conditions.rules.iter().map(|r| json!({
            "path": r.path, "op": r.op.as_str(), "value": r.value.0,
        })).collect::<Vec<_>>(),
    })
}

pub async fn get(app: &App, ws: &str, id: &str) -> Result<Destination, DestinationError> {
    app.store
        .destination(ws, parse_destination_id(id)?)
        .await?
        .ok_or_else(|| DestinationError::NotFound(id.to_string()))
}

pub async fn list(app: &App, ws: &str) -> Result<Vec<Destination>, DestinationError> {
    Ok(app.store.destinations(ws).await?)
}

/// How many of a destination's newest deliveries are looked at for its last attempt.
const LAST_ATTEMPT_SCAN: usize = 20;

/// A destination's health at a glance, for its admins.
#[derive(Default)]
pub struct Health {
    /// Deliveries waiting to be sent or retried.
    pub pending: u64,
    /// When the oldest of them was queued (unix ms).
    pub oldest_pending_at: Option<i64>,
    /// The newest attempt among its recent deliveries.
    pub last_attempt: Option<DeliveryAttempt>,
}

/// The queue figures come from the delivery engine's own count (refreshed about every
/// half second), the last attempt from the store.
pub async fn health(app: &App, destination: &Destination) -> Result<Health, DestinationError> {
    let queued = app
        .delivery_queue
        .lock()
        .expect("delivery queue lock")
        .get(&destination.id)
        .copied();
    let last_attempt = app
        .store
        .last_delivery_attempt(&destination.workspace_id, destination.id, LAST_ATTEMPT_SCAN)
        .await?;
    Ok(Health {
        pending: queued.map_or(0, |(depth, _)| depth),
        oldest_pending_at: queued.map(|(_, oldest)| oldest),
        last_attempt,
    })
}

/// A workspace's destinations with their health, oldest first.
pub async fn list_with_health(
    app: &App,
    ws: &str,
) -> Result<Vec<(Destination, Health)>, DestinationError> {
    let mut out = Vec::new();
    for destination in list(app, ws).await? {
        let health = health(app, &destination).await?;
        out.push((destination, health));
    }
    Ok(out)
}

/// Replaces what an admin edits; the secret, the creation time and the health stay.
/// Enabling a destination clears the reason it was disabled and its failing streak.
pub async fn update(
    app: &App,
    ws: &str,
    id: &str,
    spec: Spec,
) -> Result<Destination, DestinationError> {
    let checked = check(app, ws, &spec).await?;
    let key = parse_destination_id(id)?;
    let sealer = app.clone();
    let updated = app
        .store
        .update_destination(ws, key, move |d| -> Result<(), ()> {
            d.name = spec.name.trim().to_string();
            d.url = spec.url;
            let enabled = spec.enabled.unwrap_or(d.enabled);
            if enabled && !d.enabled {
                d.disabled_reason = None;
                d.failing_since = None;
            }
            d.enabled = enabled;
            d.filter = DestinationFilter {
                source: spec.source,
                events: spec.events,
                conditions: checked.conditions,
            };
            d.template = spec.template;
            d.headers = seal_headers(&sealer, &spec.headers, &d.headers);
            d.updated_at = now_ms();
            Ok(())
        })
        .await?;
    updated
        .ok()
        .flatten()
        .ok_or_else(|| DestinationError::NotFound(id.to_string()))
}

pub async fn delete(app: &App, ws: &str, id: &str) -> Result<(), DestinationError> {
    if app
        .store
        .delete_destination(ws, parse_destination_id(id)?)
        .await?
    {
        Ok(())
    } else {
        Err(DestinationError::NotFound(id.to_string()))
    }
}

/// A new secret; the current one keeps signing (beside it) for [`ROTATION_GRACE_MS`].
pub async fn rotate_secret(
    app: &App,
    ws: &str,
    id: &str,
) -> Result<(Destination, String), DestinationError> {
    let secret = new_secret();
    let sealed = app.store.secrets().seal_str(&secret);
    let now = now_ms();
    let updated = app
        .store
        .update_destination(ws, parse_destination_id(id)?, move |d| -> Result<(), ()> {
            let mut secrets = vec![DestinationSecret {
                secret: sealed,
                valid_until: None,
            }];
            if let Some(current) = d.secrets.iter().find(|s| s.valid_until.is_none()) {
                secrets.push(DestinationSecret {
                    secret: current.secret.clone(),
                    valid_until: Some(now + ROTATION_GRACE_MS),
                });
            }
            d.secrets = secrets;
            d.rotated_at = Some(now);
            Ok(())
        })
        .await?
        .ok()
        .flatten()
        .ok_or_else(|| DestinationError::NotFound(id.to_string()))?;
    Ok((updated, secret))
}

/// When the rotated-out secret stops signing, if one still does.
pub fn previous_secret_valid_until(destination: &Destination, now: i64) -> Option<i64> {
    destination
        .secrets
        .iter()
        .filter_map(|s| s.valid_until)
        .filter(|until| *until > now)
        .max()
}

/// The headers of one attempt: content type, the Standard Webhooks triple (one `v1,`
/// signature per secret still valid, space-separated, so receivers holding either secret
/// verify during a rotation) and the destination's own headers.
pub fn attempt_headers(
    app: &App,
    destination: &Destination,
    webhook_id: &str,
    body: &[u8],
    now: i64,
) -> Result<Vec<(String, String)>, StoreError> {
    Ok(Signer::open(app, destination)?.headers(webhook_id, body, now))
}

/// A destination's secrets and header values, opened once for a run of attempts.
pub struct Signer {
    /// Each secret in plain text, with the time it stops signing.
    secrets: Vec<(String, Option<i64>)>,
    headers: Vec<(String, String)>,
}

impl Signer {
    pub fn open(app: &App, destination: &Destination) -> Result<Signer, StoreError> {
        let secrets = destination
            .secrets
            .iter()
            .map(|s| Ok((app.store.secrets().open_str(&s.secret)?, s.valid_until)))
            .collect::<Result<_, StoreError>>()?;
        let headers = destination
            .headers
            .iter()
            .map(|(name, sealed)| Ok((name.clone(), app.store.secrets().open_str(sealed)?)))
            .collect::<Result<_, StoreError>>()?;
        Ok(Signer { secrets, headers })
    }

    /// The headers of one attempt at `now` (see [`attempt_headers`]).
    pub fn headers(&self, webhook_id: &str, body: &[u8], now: i64) -> Vec<(String, String)> {
        let timestamp = (now / 1000).to_string();
        let signatures: Vec<String> = self
            .secrets
            .iter()
            .filter(|(_, until)| until.is_none_or(|until| until > now))
            .filter_map(|(plain, _)| {
                standard_webhooks_signature(plain, webhook_id, &timestamp, body)
                    .map(|signature| format!("v1,{signature}"))
            })
            .collect();
        let mut headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("webhook-id".to_string(), webhook_id.to_string()),
            ("webhook-timestamp".to_string(), timestamp),
            ("webhook-signature".to_string(), signatures.join(" ")),
        ];
        headers.extend(self.headers.iter().cloned());
        headers
    }
}

/// Sends a test event to the destination now (not stored, not retried) and returns the
/// receiver's answer.
pub async fn send_test(app: &App, ws: &str, id: &str) -> Result<Exchange, DestinationError> {
    let destination = get(app, ws, id).await?;
    let now = now_ms();
    let body = serde_json::to_vec(&json!({
        "type": "clockify-studio.test",
        "destinationId": format_id(&destination.id),
        "workspaceId": ws,
        "sentAt": crate::time::rfc3339(now),
    }))
    .expect("JSON serializes");
    let webhook_id = format!("test_{}", uuid::Uuid::now_v7().simple());
    let headers = attempt_headers(app, &destination, &webhook_id, &body, now)?;
    let outbound = Outbound::new(&app.config);
    Ok(outbound.post(&destination.url, headers, body).await)
}

/// Which deliveries of a destination to list.
pub struct DeliveryFilter<'a> {
    pub status: Option<&'a str>,
    /// A stored event's id.
    pub event: Option<&'a str>,
    pub cursor: Option<&'a str>,
    pub limit: usize,
}

/// A page of a destination's deliveries.
pub async fn deliveries(
    app: &App,
    ws: &str,
    id: &str,
    filter: DeliveryFilter<'_>,
) -> Result<DeliveryPage, DestinationError> {
    let DeliveryFilter {
        status,
        event,
        cursor,
        limit,
    } = filter;
    let destination = get(app, ws, id).await?;
    let status = match status {
        None | Some("") => None,
        Some(text) => Some(DeliveryStatus::parse(text).ok_or_else(|| {
            DestinationError::BadRequest("status must be pending, delivered or failed".into())
        })?),
    };
    let before = match cursor {
        None | Some("") => None,
        Some(text) => Some(
            crate::store::parse_id(text)
                .ok_or_else(|| DestinationError::BadRequest("cursor is not a cursor".into()))?,
        ),
    };
    let event =
        match event {
            None | Some("") => None,
            Some(text) => Some(crate::store::parse_id(text).ok_or_else(|| {
                DestinationError::BadRequest("webhookId is not an event id".into())
            })?),
        };
    Ok(app
        .store
        .deliveries(
            ws,
            destination.id,
            status,
            event,
            before,
            limit.clamp(1, 200),
        )
        .await?)
}

fn parse_delivery_id(id: &str) -> Result<DeliveryId, DestinationError> {
    crate::store::parse_id(id).ok_or_else(|| DestinationError::DeliveryNotFound(id.to_string()))
}

/// One delivery of the workspace.
pub async fn delivery(app: &App, ws: &str, id: &str) -> Result<Delivery, DestinationError> {
    app.store
        .delivery(ws, parse_delivery_id(id)?)
        .await?
        .ok_or_else(|| DestinationError::DeliveryNotFound(id.to_string()))
}

/// Sends a delivery again now (a pending one is simply made due).
pub async fn retry(app: &App, ws: &str, id: &str) -> Result<Delivery, DestinationError> {
    app.store
        .retry_delivery(ws, parse_delivery_id(id)?, now_ms())
        .await?
        .ok_or_else(|| DestinationError::DeliveryNotFound(id.to_string()))
}

/// Queues again every failed delivery of the destination created since `since_ms`.
pub async fn recover(
    app: &App,
    ws: &str,
    id: &str,
    since_ms: i64,
) -> Result<usize, DestinationError> {
    let destination = get(app, ws, id).await?;
    Ok(app
        .store
        .recover_deliveries(ws, destination.id, since_ms, now_ms())
        .await?)
}
