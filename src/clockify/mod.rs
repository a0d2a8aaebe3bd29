//! Talking to Clockify: token verification (and later the API client and OpenAPI catalog).

pub mod client;
pub mod token;
