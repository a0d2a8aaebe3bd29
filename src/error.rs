//! The HTTP-facing error type. Every handler returns `Result<_, ApiError>`; this is the one
//! place where failures become statuses and `{"error", "requestId"}` bodies.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::http::current_request_id;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// Validation found several problems; all of them are listed.
    #[error("{summary}")]
    Invalid {
        summary: String,
        problems: Vec<String>,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    /// Logged with its cause and call site; the client only sees a plain 500.
    #[error("internal error at {location}: {cause}")]
    Internal {
        cause: String,
        location: &'static std::panic::Location<'static>,
    },
}

impl ApiError {
    #[track_caller]
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal {
            cause: cause.to_string(),
            location: std::panic::Location::caller(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for ApiError {
    #[track_caller]
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Closed => ApiError::Unavailable("the server is shutting down".into()),
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = current_request_id();
        let status = self.status();
        let body = match &self {
            ApiError::Internal { .. } => {
                tracing::error!(error = %self, request_id = %request_id, "request failed");
                json!({"error": "internal error", "requestId": request_id})
            }
            ApiError::Invalid { summary, problems } => {
                json!({"error": summary, "problems": problems, "requestId": request_id})
            }
            other => json!({"error": other.to_string(), "requestId": request_id}),
        };
        (status, Json(body)).into_response()
    }
}
