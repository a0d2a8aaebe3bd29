//! The HTTP-facing error type. Every handler returns `Result<_, ApiError>`; this is the one
//! place where failures become statuses and `{"error", "code", "requestId"}` bodies, and where
//! every domain error is mapped to one.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::AuthError;
use crate::problem::Problem;
use crate::store::StoreError;
use crate::telemetry::current_request_id;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// Validation found several problems; all of them are listed.
    #[error("{summary}")]
    Invalid {
        summary: String,
        problems: Vec<Problem>,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// A record that does not exist (a route that does not exist is [`ApiError::NoSuchRoute`]).
    #[error("{0}")]
    NotFound(String),
    #[error("no such route")]
    NoSuchRoute,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Unavailable(String),
    /// The disk holding the data file is full: nothing was stored; retry later.
    #[error("{0}")]
    InsufficientStorage(String),
    /// Logged with its cause and call site; the client only sees a plain 500.
    #[error("internal error at {location}: {cause}")]
    Internal {
        cause: String,
        location: &'static std::panic::Location<'static>,
    },
}

/// The body of every error response.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// What went wrong, in one line (never a token, never an internal detail).
    pub error: String,
    /// A stable, machine-readable kind: `bad_request`, `validation`, `unauthorized`,
    /// `forbidden`, `not_found`, `no_such_route`, `method_not_allowed`, `payload_too_large`,
    /// `timeout`, `unavailable`, `insufficient_storage` or `internal`.
    pub code: &'static str,
    /// Every problem found, for `validation` errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<Problem>>,
    /// The request's id (also in the `X-Request-Id` header), for finding its log lines.
    pub request_id: String,
}

impl ApiError {
    #[track_caller]
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal {
            cause: cause.to_string(),
            location: std::panic::Location::caller(),
        }
    }

    /// A validation failure with every problem.
    pub fn invalid(summary: impl Into<String>, problems: Vec<Problem>) -> Self {
        ApiError::Invalid {
            summary: summary.into(),
            problems,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::NoSuchRoute => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Invalid { .. } => "validation",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::NoSuchRoute => "no_such_route",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Timeout(_) => "timeout",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::InsufficientStorage(_) => "insufficient_storage",
            ApiError::Internal { .. } => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = current_request_id();
        let status = self.status();
        let error = match &self {
            ApiError::Internal { .. } => {
                tracing::error!(error = %self, request_id = %request_id, "request failed");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        let code = self.code();
        let problems = match self {
            ApiError::Invalid { problems, .. } => Some(problems),
            _ => None,
        };
        let body = ErrorBody {
            error,
            code,
            problems,
            request_id,
        };
        let mut response = (status, Json(body)).into_response();
        if matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::INSUFFICIENT_STORAGE
        ) {
            // A condition that passes (a full disk freed, a reopen, a restart): say when to
            // come back, so clients that honour it (Clockify's retries among them) wait.
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// `Retry-After` on 503 and 507 answers, in seconds.
const RETRY_AFTER_SECS: &str = "30";

impl From<StoreError> for ApiError {
    #[track_caller]
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Closed => ApiError::Unavailable("the server is shutting down".into()),
            StoreError::OutOfSpace(_) => {
                ApiError::InsufficientStorage(format!("nothing was stored: {err}; retry later"))
            }
            StoreError::Unavailable(_) | StoreError::Io(_) => {
                ApiError::Unavailable(format!("nothing was stored or read: {err}"))
            }
            StoreError::Damaged(_) => ApiError::Unavailable(format!(
                "{err}; the operator has to restore a backup (see /readyz)"
            )),
            other => ApiError::internal(other),
        }
    }
}

impl From<AuthError> for ApiError {
    #[track_caller]
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Token(_) | AuthError::NoWorkspace | AuthError::Ticket(_) => {
                ApiError::Unauthorized(err.to_string())
            }
            AuthError::NotInstalled(_)
            | AuthError::Uninstalled(_)
            | AuthError::OtherInstallation
            | AuthError::NotAdmin => ApiError::Forbidden(err.to_string()),
            AuthError::Store(err) => err.into(),
        }
    }
}

impl From<crate::ingest::IngestError> for ApiError {
    #[track_caller]
    fn from(err: crate::ingest::IngestError) -> Self {
        use crate::ingest::{IngestError, RejectKind};
        match err {
            IngestError::Rejected(rejected) => match rejected.kind {
                RejectKind::Invalid => ApiError::BadRequest(rejected.message),
                RejectKind::Unauthenticated => ApiError::Unauthorized(rejected.message),
                RejectKind::Forbidden => ApiError::Forbidden(rejected.message),
                RejectKind::NotFound => ApiError::NotFound(rejected.message),
            },
            IngestError::Store(err) => err.into(),
        }
    }
}

impl From<crate::sources::SourceError> for ApiError {
    #[track_caller]
    fn from(err: crate::sources::SourceError) -> Self {
        use crate::sources::SourceError;
        match err {
            SourceError::InvalidName => ApiError::BadRequest(err.to_string()),
            SourceError::NotFound(_) => ApiError::NotFound(err.to_string()),
            SourceError::Store(err) => err.into(),
        }
    }
}

impl From<crate::explorer::ExplorerError> for ApiError {
    #[track_caller]
    fn from(err: crate::explorer::ExplorerError) -> Self {
        use crate::explorer::ExplorerError;
        match err {
            ExplorerError::UnknownOperation(_) => ApiError::NotFound(err.to_string()),
            ExplorerError::NotAdmin
            | ExplorerError::AddonTokenForAdminsOnly
            | ExplorerError::HostNotAllowed(_) => ApiError::Forbidden(err.to_string()),
            ExplorerError::Invalid {
                operation,
                problems,
            } => ApiError::invalid(format!("cannot call {operation}"), problems),
            ExplorerError::Unavailable(message) => ApiError::Unavailable(message),
            ExplorerError::Store(err) => err.into(),
        }
    }
}

impl From<crate::lifecycle::LifecycleError> for ApiError {
    #[track_caller]
    fn from(err: crate::lifecycle::LifecycleError) -> Self {
        use crate::lifecycle::LifecycleError;
        match err {
            LifecycleError::Token(_) => ApiError::Unauthorized(err.to_string()),
            LifecycleError::Invalid(message) => ApiError::BadRequest(message),
            LifecycleError::Forbidden(message) => ApiError::Forbidden(message),
            LifecycleError::Unknown(_) => ApiError::NotFound(err.to_string()),
            LifecycleError::OtherInstallation(_) | LifecycleError::Deleted(_) => {
                ApiError::Forbidden(err.to_string())
            }
            LifecycleError::Store(err) => err.into(),
        }
    }
}

impl From<crate::subscriptions::SyncError> for ApiError {
    #[track_caller]
    fn from(err: crate::subscriptions::SyncError) -> Self {
        use crate::subscriptions::SyncError;
        match err {
            SyncError::NotActive(_) => ApiError::Forbidden(err.to_string()),
            SyncError::Stale => ApiError::Unavailable(err.to_string()),
            SyncError::Store(err) => err.into(),
        }
    }
}

impl From<crate::settings::SettingsError> for ApiError {
    #[track_caller]
    fn from(err: crate::settings::SettingsError) -> Self {
        use crate::settings::SettingsError;
        match err {
            SettingsError::Invalid(problems) => ApiError::invalid("invalid settings", problems),
            SettingsError::Unavailable(message) => ApiError::Unavailable(message),
            SettingsError::Store(err) => err.into(),
        }
    }
}

impl From<crate::flows::service::FlowError> for ApiError {
    #[track_caller]
    fn from(err: crate::flows::service::FlowError) -> Self {
        use crate::flows::service::FlowError;
        match err {
            FlowError::NotFound(_) | FlowError::RunNotFound(_) | FlowError::EventNotFound(_) => {
                ApiError::NotFound(err.to_string())
            }
            FlowError::Invalid(problems) => ApiError::invalid(
                format!("the flow has {} problem(s)", problems.len()),
                problems,
            ),
            FlowError::BadRequest(message) => ApiError::BadRequest(message),
            FlowError::NotAdmin => ApiError::Forbidden(err.to_string()),
            FlowError::Store(err) => err.into(),
        }
    }
}

impl From<crate::destinations::DestinationError> for ApiError {
    #[track_caller]
    fn from(err: crate::destinations::DestinationError) -> Self {
        use crate::destinations::DestinationError;
        match err {
            DestinationError::NotFound(_) | DestinationError::DeliveryNotFound(_) => {
                ApiError::NotFound(err.to_string())
            }
            DestinationError::Invalid(problems) => ApiError::invalid(
                format!("the destination has {} problem(s)", problems.len()),
                problems,
            ),
            DestinationError::BadRequest(message) => ApiError::BadRequest(message),
            DestinationError::NotInstalled => ApiError::Forbidden(err.to_string()),
            DestinationError::Store(err) => err.into(),
        }
    }
}

impl From<crate::transfer::TransferError> for ApiError {
    #[track_caller]
    fn from(err: crate::transfer::TransferError) -> Self {
        use crate::transfer::TransferError;
        match err {
            TransferError::Invalid(problems) => ApiError::invalid(
                format!("the document has {} problem(s)", problems.len()),
                problems,
            ),
            TransferError::NotInstalled(_) => ApiError::NotFound(err.to_string()),
            TransferError::Settings(err) => err.into(),
            TransferError::Store(err) => err.into(),
        }
    }
}
