//! The only module that touches redb: tables, key encoding, versioned records, migrations,
//! the batched writer, backups and integrity checks. Callers see domain methods on [`Store`]
//! and plain record types, never tables or transactions.
//!
//! Files, each building only on those listed before it: `error`, `schema` (tables, ids,
//! keys, record encoding), `secrets`, `health` (the shared handle and what is known about the
//! file), `writer`, `event_record`, `flow_model`, `recent` (the log of recent events),
//! `dedupe`, `entity_index`, `installation_model`, `installation_cache`, `flow_index`,
//! `run_dispatch`, `destination_model`, `migrations`, `db` (the open file: [`Store`]), then
//! one file per kind of data adding its methods to [`Store`] (`installations`, `events`,
//! `flows`, `sources`, `cache`, `subscriptions`, `destinations`, `audit`, `pauses` over
//! `pause_mirror`), `erase` (everything a workspace owns, counted or erased), `maintenance`
//! (`check`, `backup`, `compact`, snapshots), `transfer` (an import's one transaction),
//! `rekey` (key rotation) and `usage` (the operator's `workspaces` and `stats`).

mod audit;
mod cache;
mod db;
mod dedupe;
mod destination_model;
mod destinations;
mod entity_index;
mod erase;
mod error;
mod event_record;
mod events;
mod flow_index;
mod flow_model;
mod flows;
mod health;
mod installation_cache;
mod installation_model;
mod installations;
mod maintenance;
mod migrations;
mod pause_mirror;
mod pauses;
mod recent;
mod rekey;
mod run_dispatch;
mod schema;
mod secrets;
mod sources;
mod subscriptions;
mod transfer;
mod usage;
mod views;
mod writer;

pub use audit::{AuditEntry, AuditPage, AuditQuery};
pub use cache::{BootstrapProgress, BootstrapStep, Entity, EntityChange, Execution, StepStatus};
pub use db::{SCHEMA_VERSION, Store};
pub use dedupe::DEDUPE_WINDOW_MS;
pub use destination_model::{
    Delivery, DeliveryAttempt, DeliveryId, DeliveryStatus, Destination, DestinationFilter,
    DestinationId, DestinationSecret, QueuedDelivery,
};
pub use destinations::{AttemptOutcome, AttemptRecord, DeliveryPage, DestinationChange};
pub use erase::{FileErasure, TableCounts, check_workspace_id, erase_workspace_file};
pub use error::StoreError;
pub use event_record::StoredEvent;
pub use events::{Dedupe, EventPage, EventQuery, Ingested, NewEvent};
pub use flow_model::{
    ActionRun, ActionStatus, CLOCKIFY_SOURCE, Conditions, Flow, FlowAction, FlowRetry, FlowStats,
    HttpCall, Json, Op, QueuedRun, Rule, Run, RunOrigin, RunStatus, STUDIO_SOURCE, Trigger,
};
pub use flows::{AutoDisable, Finished, RunPage};
pub use health::{StoreStatus, panic_text};
pub use installation_model::{
    Installation, InstallationStatus, SettingValue, WebhookToken, WorkspaceSettings,
};
pub use maintenance::{
    CheckReport, PageUse, VerifyReport, backup, check, check_value, compact, partial_path,
};
pub use pause_mirror::{FlowsPause, PauseMode};
pub use rekey::{Rekeyed, rotate_key_file};
pub(crate) use schema::token_digest;
pub use schema::{
    EventId, FlowId, RunId, format_event_id, format_id, millis_of_id, new_id, parse_event_id,
    parse_id,
};
pub use secrets::{Sealed, SecretBox, load_or_create_key, read_key, replace_key_file};
pub use sources::{Source, SourceSecret};
pub use subscriptions::{SubscriptionReport, SubscriptionState};
pub use usage::{FileStats, PageStats, TableUsage, WorkspaceUsage, file_stats};
pub use views::{RunListPage, RunQuery};
