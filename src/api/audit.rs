//! `GET /api/audit`: the workspace's audit log for admins, newest first, with filters.

use axum::Json;
use axum::extract::State;
use axum::http::Uri;
use serde::Serialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{Admin, time_param};
use crate::app::App;
use crate::audit;
use crate::problem::Problem;
use crate::store::{AuditEntry, AuditQuery, format_id, parse_id};
use crate::time::rfc3339;

const DEFAULT_LIMIT: usize = 50;

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Documents the query; `audit_query` reads it.
pub struct AuditParams {
    /// An action (`flow.update`), or a prefix ending in a dot (`flow.`).
    action: Option<String>,
    /// A Clockify user id.
    user: Option<String>,
    /// The id of the changed thing (a flow, source, event, run …).
    target: Option<String>,
    /// Recorded at or after this RFC 3339 time.
    from: Option<String>,
    /// Recorded at or before this RFC 3339 time.
    to: Option<String>,
    /// The previous page's `nextCursor`.
    cursor: Option<String>,
    /// 1 to 200 (default 50).
    limit: Option<u32>,
}

/// One change.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntryView {
    id: String,
    at: String,
    /// The Clockify user id from the token; null for an operator command.
    user_id: Option<String>,
    /// The user's name as the entity cache knows it; `operator` for an operator command.
    user_name: Option<String>,
    /// The request's `X-Request-Id`, or the operator command.
    request_id: String,
    /// `flow.create`, `flow.update`, `flow.enable`, `flow.disable`, `flow.delete`,
    /// `source.create`, `source.rotate`, `source.delete`, `settings.update`,
    /// `subscriptions.sync`, `bootstrap.start`, `event.delete`, `event.replay`, `run.retry`,
    /// `explorer.execute`, `config.import`, `config.export-secrets`, `flows.pause`,
    /// `flows.resume`, `destination.create`, `destination.update`, `destination.delete`,
    /// `destination.rotate`, `destination.recover`, `delivery.retry`.
    action: String,
    target: Option<String>,
    /// Summary of the thing before the change (JSON; never a secret).
    #[schema(value_type = Option<Object>)]
    before: Option<Value>,
    #[schema(value_type = Option<Object>)]
    after: Option<Value>,
}

impl From<&AuditEntry> for AuditEntryView {
    fn from(entry: &AuditEntry) -> Self {
        // A summary cut at its length limit is no longer JSON: it is shown as text.
        let parse = |text: &Option<String>| {
            text.as_ref().map(|t| {
                serde_json::from_str::<Value>(t).unwrap_or_else(|_| Value::String(t.clone()))
            })
        };
        AuditEntryView {
            id: format_id(&entry.id),
            at: rfc3339(entry.at),
            user_id: entry.user_id.clone(),
            user_name: entry.user_name.clone(),
            request_id: entry.request_id.clone(),
            action: entry.action.clone(),
            target: entry.target.clone(),
            before: parse(&entry.before),
            after: parse(&entry.after),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditList {
    items: Vec<AuditEntryView>,
    /// Pass as `cursor` for the next (older) page; null at the end.
    next_cursor: Option<String>,
}

/// Reads the query, reporting every bad parameter.
fn audit_query(query: &str) -> Result<AuditQuery, Vec<Problem>> {
    let mut filter = AuditQuery {
        limit: DEFAULT_LIMIT,
        ..AuditQuery::default()
    };
    let mut problems = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match key.as_ref() {
            "action" => filter.action = Some(value.to_string()),
            "user" => filter.user_id = Some(value.to_string()),
            "target" => filter.target = Some(value.to_string()),
            "from" => match time_param("from", value) {
                Ok(ms) => filter.since = Some(ms),
                Err(p) => problems.push(p),
            },
            "to" => match time_param("to", value) {
                Ok(ms) => filter.until = Some(ms.saturating_add(1)),
                Err(p) => problems.push(p),
            },
            "cursor" => match parse_id(value) {
                Some(id) => filter.before = Some(id),
                None => problems.push(Problem::new("cursor", "cursor is not an audit entry id")),
            },
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=audit::MAX_PAGE).contains(&n) => filter.limit = n,
                _ => problems.push(Problem::new(
                    "limit",
                    format!("limit must be 1 to {}", audit::MAX_PAGE),
                )),
            },
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(filter)
    } else {
        Err(problems)
    }
}

/// Who changed what in the workspace, newest first (admins only). Entries are kept like
/// flow runs (`flow_run_retention_days`).
#[utoipa::path(get, path = "/api/audit", tag = "workspace", params(AuditParams),
    responses((status = 200, body = AuditList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(app): State<App>,
    Admin(user): Admin,
    uri: Uri,
) -> Result<Json<AuditList>, ApiError> {
    let query = audit_query(uri.query().unwrap_or(""))
        .map_err(|problems| ApiError::invalid("invalid query parameters", problems))?;
    let page = audit::list(&app, &user.workspace_id, query).await?;
    Ok(Json(AuditList {
        items: page.entries.iter().map(AuditEntryView::from).collect(),
        next_cursor: page.next_cursor.as_ref().map(format_id),
    }))
}
