//! The explorer's "run this operation": `POST /api/execute` validates the parameters against
//! the catalog, fills `workspaceId` from the token, calls Clockify through the shared client
//! (as the add-on or as the user), keeps the call in a history, and returns the response
//! without ever showing the token.

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::{USER_TOKEN_HEADER, User};
use crate::clockify::catalog::catalog;
use crate::clockify::client::{Acting, ApiRequest, RetryPolicy};
use crate::error::ApiError;
use crate::http::{parse_json, read_body};
use crate::server::App;
use crate::store::Execution;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecuteRequest {
    operation_id: String,
    #[serde(default)]
    path_params: Map<String, Value>,
    #[serde(default)]
    query: Map<String, Value>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default, rename = "as")]
    acting_as: Option<String>,
}

pub async fn execute(
    State(app): State<App>,
    user: User,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let bytes = read_body(&headers, body, app.config.api_body_limit).await?;
    let request: ExecuteRequest = parse_json(&bytes)?;
    let operation = catalog().operation(&request.operation_id).ok_or_else(|| {
        ApiError::NotFound(format!("unknown operationId {:?}", request.operation_id))
    })?;
    if !operation.read_only() {
        user.require_admin()?;
    }
    let mut problems = Vec::new();
    if !operation.addon_token {
        problems.push(format!("{} does not accept add-on tokens", operation.id));
    }
    if operation.multipart() {
        problems.push(format!(
            "{} uploads files (multipart), which the explorer cannot send",
            operation.id
        ));
    }
    let mut path_params = request.path_params;
    match path_params.get("workspaceId") {
        Some(Value::String(ws)) if *ws != user.workspace_id => {
            problems.push("workspaceId is the token's workspace and cannot be changed".into())
        }
        _ => {}
    }
    path_params.insert("workspaceId".into(), json!(user.workspace_id));
    if operation.body.is_none() && request.body.as_ref().is_some_and(|b| !b.is_null()) {
        problems.push(format!("{} takes no request body", operation.id));
    }
    if operation.body.as_ref().is_some_and(|b| b.required)
        && request.body.as_ref().is_none_or(Value::is_null)
    {
        problems.push(format!("{} needs a request body", operation.id));
    }
    let acting = match request.acting_as.as_deref().unwrap_or("addon") {
        "addon" => Acting::Addon,
        "user" => Acting::User(
            headers
                .get(USER_TOKEN_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
        ),
        other => {
            problems.push(format!("as must be \"addon\" or \"user\", not {other:?}"));
            Acting::Addon
        }
    };
    let built = match operation.build_request(&path_params, &request.query) {
        Ok(built) => Some(built),
        Err(more) => {
            problems.extend(more);
            None
        }
    };
    let Some(built) = built.filter(|_| problems.is_empty()) else {
        return Err(ApiError::Invalid {
            summary: format!("cannot call {}", operation.id),
            problems,
        });
    };
    let acting_as = if matches!(acting, Acting::User(_)) {
        "user"
    } else {
        "addon"
    };
    let body_bytes = request
        .body
        .as_ref()
        .filter(|b| !b.is_null())
        .map(|b| serde_json::to_vec(b).expect("JSON"));
    let api_request = ApiRequest {
        operation_id: operation.id.clone(),
        server: operation.server,
        method: operation.method.clone(),
        path: built.path,
        query: built.query.clone(),
        body: body_bytes,
        acting,
        retry: RetryPolicy::default(),
    };
    let url = crate::clockify::client::ApiClient::url(&user.installation, &api_request)
        .unwrap_or_default();
    let started = std::time::Instant::now();
    let outcome = app
        .clockify
        .send(&user.installation, app.store.secrets(), api_request)
        .await;
    let id = *uuid::Uuid::now_v7().as_bytes();
    let mut execution = Execution {
        id,
        operation_id: operation.id.clone(),
        method: operation.method.clone(),
        url: url.clone(),
        path_params: Value::Object(path_params).to_string(),
        query: Value::Object(request.query).to_string(),
        body: request.body.as_ref().map(Value::to_string),
        acting_as: acting_as.to_string(),
        status: None,
        error: None,
        duration_ms: started.elapsed().as_millis() as u64,
        at: jiff::Timestamp::now().as_millisecond(),
    };
    let result = match outcome {
        Ok(response) => {
            execution.status = Some(response.status);
            execution.duration_ms = response.duration.as_millis() as u64;
            let body = serde_json::from_slice::<Value>(&response.body).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&response.body).into_owned())
            });
            let headers: Map<String, Value> = response
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            Ok(json!({
                "status": response.status,
                "headers": headers,
                "body": body,
                "durationMs": response.duration.as_millis() as u64,
                "attempts": response.attempts,
                "request": {"method": operation.method, "url": response.url, "query": built.query},
                "executionId": crate::store::format_event_id(&id),
            }))
        }
        Err(err) => {
            execution.error = Some(err.to_string());
            Err(err)
        }
    };
    app.store
        .put_execution(&user.workspace_id, execution)
        .await?;
    match result {
        Ok(value) => Ok(Json(value)),
        Err(crate::clockify::client::ClientError::HostNotAllowed(host)) => {
            Err(ApiError::Forbidden(format!(
                "refusing to call {host}: not a Clockify API host (see --allow-api-host)"
            )))
        }
        Err(err) => Err(ApiError::Unavailable(err.to_string())),
    }
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    limit: Option<usize>,
}

pub async fn history(
    State(app): State<App>,
    user: User,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(50).clamp(1, 200);
    let items = app.store.executions(&user.workspace_id, limit).await?;
    let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    Ok(Json(json!({
        "items": items.iter().map(|e| json!({
            "id": crate::store::format_event_id(&e.id),
            "operationId": e.operation_id,
            "method": e.method,
            "url": e.url,
            "as": e.acting_as,
            "status": e.status,
            "error": e.error,
            "durationMs": e.duration_ms,
            "at": jiff::Timestamp::from_millisecond(e.at).map(|t| t.to_string()).ok(),
            "request": {"pathParams": parse(&e.path_params), "query": parse(&e.query), "body": e.body.as_deref().map(parse)},
        })).collect::<Vec<_>>(),
    })))
}
