//! Flows: when an event arrives and its conditions hold, call Clockify API operations with
//! values taken from the event. `model` reads and checks definitions, `conditions` and
//! `template` evaluate them, `engine` executes queued runs, `service` is what the API asks
//! of flows (save, test, replay, list runs).

pub mod conditions;
pub mod engine;
pub mod model;
pub mod service;
pub mod template;
pub mod views;
