//! clockify-studio: a self-hosted Clockify add-on in one binary.
//!
//! The layers, top to bottom (each imports only those below it):
//! - `server` (listener, shutdown, background tasks) and `api` (every HTTP route, the error
//!   mapping, the add-on's OpenAPI document): the only code that speaks HTTP;
//! - domain modules: `ingest`, `lifecycle`, `events` (with `event_summary`), `sources`, `flows`,
//!   `explorer`, `subscriptions`, `bootstrap`, `entities`, `settings`, `overview`, `retention`,
//!   `transfer` (configuration export/import), `snapshots`,
//!   `auth`, `audit` (who changed what), `control` (the operators' socket);
//! - `app` (the shared state), then `clockify` (tokens, the API client, the catalog), `store`
//!   (the only code that names redb), `config`, `manifest`, `telemetry`, `tickets` and small
//!   helpers.

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod clockify;
pub mod config;
pub mod control;
pub mod destinations;
pub mod entities;
pub mod event_summary;
pub mod events;
pub mod explorer;
pub mod flows;
pub mod ingest;
pub mod lifecycle;
pub mod locks;
pub mod manifest;
pub mod notify;
pub mod overview;
pub mod problem;
pub mod resolve;
pub mod retention;
pub mod server;
pub mod settings;
pub mod snapshots;
pub mod sources;
pub mod store;
pub mod subscriptions;
pub mod telemetry;
pub mod tickets;
pub mod time;
pub mod transfer;
