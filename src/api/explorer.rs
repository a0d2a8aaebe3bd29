//! The explorer's routes: the operations of the bundled Clockify spec (`/api/operations`),
//! running one (`POST /api/execute`) and the history of runs (`/api/executions`).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, Params};
use crate::app::App;
use crate::auth::{USER_TOKEN_HEADER, User};
use crate::clockify::catalog::{Operation, Parameter, catalog};
use crate::explorer::{self, ExecuteRequest, OperationFilter};
use crate::store::format_id;
use crate::time::rfc3339;

/// A parameter of an operation.
#[derive(Serialize, ToSchema)]
pub struct ParameterView {
    name: String,
    /// `path`, `query` or `header`.
    #[serde(rename = "in")]
    location: &'static str,
    required: bool,
    #[serde(rename = "type")]
    schema_type: Option<String>,
    #[serde(rename = "enum")]
    enum_values: Vec<String>,
    default: Option<Value>,
    description: String,
}

impl From<&Parameter> for ParameterView {
    fn from(p: &Parameter) -> Self {
        ParameterView {
            name: p.name.clone(),
            location: p.location.as_str(),
            required: p.required,
            schema_type: p.schema_type.clone(),
            enum_values: p.enum_values.clone(),
            default: p.default.clone(),
            description: p.description.clone(),
        }
    }
}

/// An operation of the catalog, as listed.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationSummary {
    operation_id: String,
    method: String,
    path: String,
    tag: String,
    summary: String,
    deprecated: bool,
    /// GET/HEAD: anyone may run it; anything else needs an admin.
    read_only: bool,
    has_body: bool,
    parameters: Vec<ParameterView>,
}

impl From<&Operation> for OperationSummary {
    fn from(op: &Operation) -> Self {
        OperationSummary {
            operation_id: op.id.clone(),
            method: op.method.clone(),
            path: op.path.clone(),
            tag: op.tag.clone(),
            summary: op.summary.clone(),
            deprecated: op.deprecated,
            read_only: op.read_only(),
            has_body: op.body.is_some(),
            parameters: op.parameters.iter().map(ParameterView::from).collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct OperationList {
    count: usize,
    operations: Vec<OperationSummary>,
    /// Every tag of the catalog (not only those of the listed operations).
    tags: Vec<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestBodyView {
    required: bool,
    content_type: String,
    /// The JSON schema, `$ref`s resolved.
    schema: Value,
}

#[derive(Serialize, ToSchema)]
pub struct ResponseView {
    description: String,
    /// The JSON schema, `$ref`s resolved (null when the spec gives none).
    schema: Value,
}

/// One operation in full, its schemas resolved.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationDetail {
    #[serde(flatten)]
    summary: OperationSummary,
    description: String,
    /// `backend`, `reports` or `pto`: which of the installation's URLs serves it.
    server: &'static str,
    /// Whether it accepts the add-on's token.
    addon_token: bool,
    /// Whether it uploads files (the explorer cannot send those).
    multipart: bool,
    request_body: Option<RequestBodyView>,
    /// By status code.
    responses: BTreeMap<String, ResponseView>,
}

/// Filters of `GET /api/operations`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OperationParams {
    /// Exact tag, case-insensitive.
    tag: Option<String>,
    /// HTTP method.
    method: Option<String>,
    /// Text in the operationId, summary or path.
    q: Option<String>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The operations of the bundled Clockify spec. The catalog is the same for every
/// workspace; the token is still required so the spec is not an open endpoint.
#[utoipa::path(get, path = "/api/operations", tag = "explorer", params(OperationParams),
    responses((status = 200, body = OperationList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(_user: User, uri: Uri, request: HeaderMap) -> Result<Response, ApiError> {
    // The catalog changes only with the binary: the unfiltered list is built once.
    static UNFILTERED: OnceLock<(Bytes, String)> = OnceLock::new();
    if uri.query().unwrap_or("").is_empty() {
        let (body, etag) =
            UNFILTERED.get_or_init(|| tagged(&operation_list(OperationFilter::default())));
        return Ok(cached_json(&request, body.clone(), etag));
    }
    // Parsed by hand: a malformed query is no reason to refuse the catalog.
    let mut params = OperationParams {
        tag: None,
        method: None,
        q: None,
    };
    for (key, value) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        let slot = match key.as_ref() {
            "tag" => &mut params.tag,
            "method" => &mut params.method,
            "q" => &mut params.q,
            _ => continue,
        };
        *slot = Some(value.into_owned());
    }
    let filter = OperationFilter {
        tag: non_empty(params.tag),
        method: non_empty(params.method),
        q: non_empty(params.q),
    };
    let (body, etag) = tagged(&operation_list(filter));
    Ok(cached_json(&request, body, &etag))
}

fn operation_list(filter: OperationFilter) -> OperationList {
    let operations: Vec<OperationSummary> = explorer::operations(&filter)
        .into_iter()
        .map(OperationSummary::from)
        .collect();
    OperationList {
        count: operations.len(),
        operations,
        tags: catalog().tags(),
    }
}

/// A body as JSON bytes with a weak ETag of its content (weak: the same JSON also goes out
/// gzip- or brotli-encoded).
fn tagged<T: Serialize>(value: &T) -> (Bytes, String) {
    let body = serde_json::to_vec(value).expect("catalog views serialize");
    let etag = format!("W/\"{}\"", &hex::encode(Sha256::digest(&body))[..24]);
    (Bytes::from(body), etag)
}

/// Kept by the browser (`private`: it needs the user's token) and revalidated on every use,
/// so a new binary's catalog is picked up at once; a match answers 304 with no body.
fn cached_json(request: &HeaderMap, body: Bytes, etag: &str) -> Response {
    let bare = etag.trim_start_matches("W/");
    let matches = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim().trim_start_matches("W/") == bare);
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    response
}

#[utoipa::path(get, path = "/api/operations/{operationId}", tag = "explorer",
    params(("operationId" = String, Path)),
    responses((status = 200, body = OperationDetail), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    _user: User,
    Path(id): Path<String>,
    request: HeaderMap,
) -> Result<Response, ApiError> {
    let catalog = catalog();
    let op = catalog
        .operation(&id)
        .ok_or_else(|| ApiError::NotFound(format!("unknown operationId {id}")))?;
    let responses = op
        .responses
        .iter()
        .map(|(code, description, schema)| {
            let schema = schema.as_ref().map_or(Value::Null, |s| catalog.resolve(s));
            (
                code.clone(),
                ResponseView {
                    description: description.clone(),
                    schema,
                },
            )
        })
        .collect();
    let (body, etag) = tagged(&OperationDetail {
        summary: OperationSummary::from(op),
        description: op.description.clone(),
        server: op.server.as_str(),
        addon_token: op.addon_token,
        multipart: op.multipart(),
        request_body: op.body.as_ref().map(|body| RequestBodyView {
            required: body.required,
            content_type: body.content_type.clone(),
            schema: catalog.resolve(&body.schema),
        }),
        responses,
    });
    Ok(cached_json(&request, body, &etag))
}

/// What `POST /api/execute` takes.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteBody {
    operation_id: String,
    /// Path parameters by name; `workspaceId` is the token's and may be left out.
    #[serde(default)]
    path_params: Map<String, Value>,
    /// Query parameters by name (arrays repeat the name).
    #[serde(default)]
    query: Map<String, Value>,
    /// The JSON body, for operations that take one.
    #[serde(default)]
    body: Option<Value>,
    /// `addon` (the installation's token; admins only, and their default) or `user` (the
    /// caller's own token; everyone else's default).
    #[serde(default, rename = "as")]
    acting_as: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SentRequest {
    method: String,
    url: String,
    /// `[name, value]` pairs, in order (a name may repeat).
    #[schema(value_type = Vec<Vec<String>>)]
    query: Vec<(String, String)>,
}

/// Clockify's answer to an executed operation.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteResponse {
    status: u16,
    /// A safe subset of Clockify's response headers.
    headers: BTreeMap<String, String>,
    /// JSON when Clockify answered JSON, else the text.
    body: Value,
    duration_ms: u64,
    attempts: u32,
    request: SentRequest,
    /// The history entry this call was kept as.
    execution_id: String,
}

/// Runs one catalog operation against Clockify. GET operations are open to every user;
/// anything else needs an admin.
#[utoipa::path(post, path = "/api/execute", tag = "explorer", request_body = ExecuteBody,
    responses((status = 200, description = "Clockify's answer, whatever its status", body = ExecuteResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 503, description = "Clockify could not be reached", body = ErrorBody)))]
pub async fn execute(
    State(app): State<App>,
    user: User,
    headers: HeaderMap,
    JsonBody(request): JsonBody<ExecuteBody>,
) -> Result<Json<ExecuteResponse>, ApiError> {
    let token = headers
        .get(USER_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let executed = explorer::execute(
        &app,
        &user,
        token,
        ExecuteRequest {
            operation_id: request.operation_id,
            path_params: request.path_params,
            query: request.query,
            body: request.body,
            acting_as: request.acting_as,
        },
    )
    .await?;
    let response = executed.response;
    // Calls that may change something in Clockify are admin changes; reads are not.
    if !executed.operation.method.eq_ignore_ascii_case("GET") {
        crate::audit::by_user(
            &app,
            &user,
            crate::audit::Change {
                action: "explorer.execute",
                target: Some(format_id(&executed.execution_id)),
                before: None,
                after: Some(serde_json::json!({
                    "operationId": executed.operation.id,
                    "method": executed.operation.method,
                    "url": response.url,
                    "status": response.status,
                })),
            },
        )
        .await;
    }
    let body = serde_json::from_slice::<Value>(&response.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&response.body).into_owned()));
    Ok(Json(ExecuteResponse {
        status: response.status,
        headers: response.headers.into_iter().collect(),
        body,
        duration_ms: response.duration.as_millis() as u64,
        attempts: response.attempts,
        request: SentRequest {
            method: executed.operation.method.clone(),
            url: response.url,
            query: executed.query,
        },
        execution_id: format_id(&executed.execution_id),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// 1 to 200 (default 50).
    limit: Option<usize>,
}

/// What was entered for a past call.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionInput {
    path_params: Value,
    query: Value,
    body: Option<Value>,
}

/// A past explorer call.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionView {
    id: String,
    operation_id: String,
    method: String,
    url: String,
    /// `addon` or `user`.
    #[serde(rename = "as")]
    acting_as: String,
    /// Clockify's status, when it answered.
    status: Option<u16>,
    /// Why no answer came, when none did.
    error: Option<String>,
    duration_ms: u64,
    at: String,
    /// The Clockify user who made the call (null for calls kept before users were).
    user_id: Option<String>,
    /// Their name as the entity cache knew it at the time.
    user_name: Option<String>,
    request: ExecutionInput,
}

#[derive(Serialize, ToSchema)]
pub struct ExecutionList {
    items: Vec<ExecutionView>,
}

/// The workspace's explorer history, newest first (for non-admins: their own calls).
#[utoipa::path(get, path = "/api/executions", tag = "explorer", params(HistoryParams),
    responses((status = 200, body = ExecutionList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn history(
    State(app): State<App>,
    user: User,
    Params(query): Params<HistoryParams>,
) -> Result<Json<ExecutionList>, ApiError> {
    let limit = query.limit.unwrap_or(50).clamp(1, 200);
    let items = explorer::history(&app, &user, limit).await?;
    let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    Ok(Json(ExecutionList {
        items: items
            .iter()
            .map(|e| ExecutionView {
                id: format_id(&e.id),
                operation_id: e.operation_id.clone(),
                method: e.method.clone(),
                url: e.url.clone(),
                acting_as: e.acting_as.clone(),
                status: e.status,
                error: e.error.clone(),
                duration_ms: e.duration_ms,
                at: rfc3339(e.at),
                user_id: e.user_id.clone(),
                user_name: e.user_name.clone(),
                request: ExecutionInput {
                    path_params: parse(&e.path_params),
                    query: parse(&e.query),
                    body: e.body.as_deref().map(parse),
                },
            })
            .collect(),
    }))
}
