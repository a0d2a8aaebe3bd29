//! One integration-test binary (it links once); a module per area.

mod cli;
mod client;
mod custom_sources;
mod events_api;
mod flows;
mod lifecycle;
mod ops;
mod support;
mod tokens;
mod webhooks;
