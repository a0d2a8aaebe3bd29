//! clockify-studio: a self-hosted Clockify add-on in one binary.

pub mod auth;
pub mod bootstrap;
pub mod clockify;
pub mod config;
pub mod error;
pub mod execute;
pub mod explorer;
pub mod flows;
pub mod http;
pub mod lifecycle;
pub mod locks;
pub mod manifest;
pub mod ops;
pub mod overview;
pub mod retention;
pub mod server;
pub mod settings;
pub mod store;
pub mod subscriptions;
pub mod ui;
pub mod webhooks;
