//! One integration-test binary (it links once); a module per area.

mod architecture;
mod bigdata;
mod browser;
mod catalog;
mod cli;
mod client;
mod custom_sources;
mod destinations;
mod events_api;
mod explorer;
mod faults;
mod flows;
mod lifecycle;
mod openapi;
mod ops;
mod security;
mod subscriptions;
mod support;
mod tokens;
mod toolkit;
mod ui;
mod ui_api;
mod webhooks;
