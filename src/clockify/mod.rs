//! Talking to Clockify: token verification, the OpenAPI catalog, and the API client.

pub mod catalog;
pub mod client;
pub mod token;
