//! Talking to Clockify: token verification (and later the API client and OpenAPI catalog).

pub mod catalog;
pub mod token;
