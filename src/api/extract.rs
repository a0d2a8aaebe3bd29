//! What handlers take from a request besides the state: the authenticated user (`User`,
//! `Admin`, `StreamUser`), bodies read within their limit and parsed, and ids from the path.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::app::App;
use crate::auth::{USER_TOKEN_HEADER, User, user_from_ticket, user_from_token};
use crate::problem::Problem;
use crate::time::parse_rfc3339;

/// A [`User`] with the OWNER or WORKSPACE_ADMIN role.
pub struct Admin(pub User);

/// A [`User`] authenticated by the header or by a stream ticket in the `ticket` query
/// parameter (EventSource cannot set headers; a token never goes into a URL).
pub struct StreamUser(pub User);

/// The user token of a request: the `X-Addon-Token` header.
fn user_token(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(USER_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
}

async fn authenticate(parts: &Parts, app: &App) -> Result<User, ApiError> {
    Ok(user_from_token(app, user_token(parts)).await?)
}

impl FromRequestParts<App> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        authenticate(parts, app).await
    }
}

impl FromRequestParts<App> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let user = authenticate(parts, app).await?;
        user.require_admin()?;
        Ok(Admin(user))
    }
}

impl FromRequestParts<App> for StreamUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        if user_token(parts).is_some() {
            return authenticate(parts, app).await.map(StreamUser);
        }
        let ticket = parts.uri.query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "ticket")
                .map(|(_, v)| v.into_owned())
        });
        Ok(StreamUser(user_from_ticket(app, ticket.as_deref()).await?))
    }
}

/// Reads a whole body, refusing more than `limit` bytes with 413 (early when
/// `Content-Length` already says so).
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "the body is larger than the limit of {limit} bytes"
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(err) if super::connections::too_slow(&*err).is_some() => {
            Err(ApiError::Timeout(err.to_string()))
        }
        Err(err) => Err(ApiError::BadRequest(format!(
            "the body could not be read: {err}"
        ))),
    }
}

/// Parses JSON, answering 400 with serde's description of what is wrong.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// A JSON body of at most `--api-body-limit-bytes`, parsed into `T`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<App> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &App) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let bytes = read_body(&parts.headers, body, app.config.api_body_limit).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A body of at most `--api-body-limit-bytes`, unparsed (lifecycle messages are parsed after
/// their token is verified).
pub struct ApiBytes(pub Bytes);

impl FromRequest<App> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &App) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        read_body(&parts.headers, body, app.config.api_body_limit)
            .await
            .map(ApiBytes)
    }
}

/// Query parameters parsed into `T`; a malformed query is a JSON 400 like every other error.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|query| Params(query.0))
            .map_err(|e| {
                ApiError::BadRequest(format!("invalid query parameters: {}", e.body_text()))
            })
    }
}

/// A 16-byte id (event, flow, run) from the path; one that does not parse names no record,
/// so it is `not_found` with `what` in the message (`no flow …`).
pub fn path_id(text: &str, what: &str) -> Result<[u8; 16], ApiError> {
    crate::store::parse_id(text).ok_or_else(|| ApiError::NotFound(format!("no {what} {text}")))
}

/// An RFC 3339 query parameter as Unix milliseconds (the time filters of event and run lists).
pub(super) fn time_param(name: &str, value: &str) -> Result<i64, Problem> {
    parse_rfc3339(value).ok_or_else(|| {
        Problem::new(
            name,
            format!("{name} must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z"),
        )
    })
}
