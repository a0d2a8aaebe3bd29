//! One integration-test binary (it links once); a module per area.

mod browser;
mod cli;
mod custom_sources;
mod events_api;
mod lifecycle;
mod ops;
mod support;
mod tokens;
mod ui;
mod webhooks;
