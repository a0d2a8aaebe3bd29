//! The API explorer's catalog routes (docs/API.md "Explorer"): the operations of the bundled
//! Clockify spec, filterable, and one operation in full with its schemas resolved.

use axum::Json;
use axum::extract::Path;
use axum::http::Uri;
use serde_json::{Map, Value, json};

use crate::auth::User;
use crate::clockify::catalog::{Catalog, Operation, Parameter, catalog};
use crate::error::ApiError;

/// `GET /api/operations?tag=&method=&q=`. The catalog is the same for every workspace; the
/// token is still required so the spec is not an open endpoint.
pub async fn list(_user: User, uri: Uri) -> Result<Json<Value>, ApiError> {
    let filter = OperationFilter::parse(uri.query().unwrap_or(""));
    Ok(Json(list_json(catalog(), &filter)))
}

/// `GET /api/operations/{operationId}`.
pub async fn get(_user: User, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let catalog = catalog();
    let operation = catalog
        .operation(&id)
        .ok_or_else(|| ApiError::NotFound(format!("unknown operationId {id}")))?;
    Ok(Json(detail_json(catalog, operation)))
}

/// The list filters; empty values mean "no filter".
#[derive(Clone, Debug, Default)]
pub struct OperationFilter {
    /// Exact tag, case-insensitive.
    pub tag: Option<String>,
    /// HTTP method, case-insensitive.
    pub method: Option<String>,
    /// Case-insensitive substring of the operationId, summary or path.
    pub q: Option<String>,
}

impl OperationFilter {
    pub fn parse(query: &str) -> OperationFilter {
        let mut filter = OperationFilter::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            let slot = match key.as_ref() {
                "tag" => &mut filter.tag,
                "method" => &mut filter.method,
                "q" => &mut filter.q,
                _ => continue,
            };
            *slot = Some(value.to_lowercase());
        }
        filter
    }

    pub fn matches(&self, op: &Operation) -> bool {
        self.tag
            .as_ref()
            .is_none_or(|t| op.tag.to_lowercase() == *t)
            && self
                .method
                .as_ref()
                .is_none_or(|m| op.method.eq_ignore_ascii_case(m))
            && self.q.as_ref().is_none_or(|q| {
                [&op.id, &op.summary, &op.path]
                    .iter()
                    .any(|field| field.to_lowercase().contains(q.as_str()))
            })
    }
}

pub fn list_json(catalog: &Catalog, filter: &OperationFilter) -> Value {
    let operations: Vec<Value> = catalog
        .operations()
        .iter()
        .filter(|op| filter.matches(op))
        .map(summary_json)
        .collect();
    json!({
        "count": operations.len(),
        "operations": operations,
        "tags": catalog.tags(),
    })
}

pub fn summary_json(op: &Operation) -> Value {
    json!({
        "operationId": op.id,
        "method": op.method,
        "path": op.path,
        "tag": op.tag,
        "summary": op.summary,
        "deprecated": op.deprecated,
        "readOnly": op.read_only(),
        "hasBody": op.body.is_some(),
        "parameters": op.parameters.iter().map(parameter_json).collect::<Vec<_>>(),
    })
}

pub fn parameter_json(p: &Parameter) -> Value {
    json!({
        "name": p.name,
        "in": p.location.as_str(),
        "required": p.required,
        "type": p.schema_type,
        "enum": p.enum_values,
        "default": p.default,
        "description": p.description,
    })
}

pub fn detail_json(catalog: &Catalog, op: &Operation) -> Value {
    let mut value = summary_json(op);
    let object = value.as_object_mut().expect("summary is an object");
    object.insert("description".into(), json!(op.description));
    object.insert("server".into(), json!(op.server.as_str()));
    object.insert("addonToken".into(), json!(op.addon_token));
    object.insert("multipart".into(), json!(op.multipart()));
    object.insert(
        "requestBody".into(),
        op.body.as_ref().map_or(Value::Null, |body| {
            json!({
                "required": body.required,
                "contentType": body.content_type,
                "schema": catalog.resolve(&body.schema),
            })
        }),
    );
    let responses: Map<String, Value> = op
        .responses
        .iter()
        .map(|(code, description, schema)| {
            let schema = schema.as_ref().map_or(Value::Null, |s| catalog.resolve(s));
            (
                code.clone(),
                json!({"description": description, "schema": schema}),
            )
        })
        .collect();
    object.insert("responses".into(), Value::Object(responses));
    value
}
