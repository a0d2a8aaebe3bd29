//! Flows: when an event arrives and its conditions hold, call Clockify API operations with
//! values taken from the event. `model` reads and checks definitions, `conditions` and
//! `template` evaluate them, `engine` executes queued runs, `api` is the HTTP surface.

pub mod api;
pub mod conditions;
pub mod engine;
pub mod model;
pub mod template;

// TEMPORARY: the OpenAPI catalog lands from another branch; until then a minimal stand-in
// with the same API. Swap this line for `use crate::clockify::catalog;` when it does.
mod catalog_shim;
use catalog_shim as catalog;
