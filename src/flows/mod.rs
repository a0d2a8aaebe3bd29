//! Flows: when an event arrives and its conditions hold, call Clockify API operations with
//! values taken from the event. `model` reads and checks definitions, `conditions` and
//! `template` evaluate them, `engine` executes queued runs, `api` is the HTTP surface.

pub mod api;
pub mod conditions;
pub mod engine;
pub mod model;
pub mod template;

use crate::clockify::catalog;
