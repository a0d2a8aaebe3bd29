//! The Clockify API catalog: the bundled `openapi.json` (PLATFORM.md §9) parsed once into
//! operations that the explorer lists and that the API client and flows call.
//!
//! The spec has known defects (PLATFORM.md §13) that are repaired here rather than in every
//! consumer: enum schemas declared as `type: object` + `oneOf: [string enum]` are read as
//! string enums, and the PTO paths' bogus `http://localhost:5050` server is mapped to the PTO
//! family by elimination.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::LazyLock;

use serde_json::{Map, Value, json};

/// Clockify's spec, baked in so the binary needs no files at run time.
const SPEC: &str = include_str!("../../openapi.json");

/// Nested `$ref` expansions before resolution stops; the bundled spec needs at most 4, so
/// this only guards against a future spec blowing up response sizes.
const MAX_REF_DEPTH: usize = 12;

/// Security schemes that are satisfied by an `X-Addon-Token` header.
const ADDON_SCHEMES: [&str; 3] = ["AddonKeyAuth", "PtoAddonKeyAuth", "ReportAddonKeyAuth"];

const BACKEND_SERVER: &str = "https://api.clockify.me/api";
const REPORTS_SERVER: &str = "https://reports.api.clockify.me";

static CATALOG: LazyLock<Catalog> =
    LazyLock::new(|| Catalog::parse(SPEC).expect("the bundled openapi.json is a valid catalog"));

/// The catalog of the bundled spec, parsed on first use.
pub fn catalog() -> &'static Catalog {
    &CATALOG
}

/// Which Clockify host an operation is served from: the client's own enum, so an operation's
/// family goes straight into an `ApiRequest`. The spec names production hosts; the client
/// replaces them with the installation's URLs (`Backend` → `backendUrl`/`apiUrl`, `Reports` →
/// `reportsUrl`, `Pto` → `ptoUrl`).
pub use crate::clockify::client::ServerFamily;

/// `https://api.clockify.me/api` → Backend, `https://reports.api.clockify.me` → Reports,
/// anything else → Pto (the spec gives the PTO paths `http://localhost:5050`, a spec bug).
fn family_of_server_url(url: &str) -> ServerFamily {
    match url.trim_end_matches('/') {
        BACKEND_SERVER => ServerFamily::Backend,
        REPORTS_SERVER => ServerFamily::Reports,
        _ => ServerFamily::Pto,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamLocation {
    Path,
    Query,
    Header,
}

impl ParamLocation {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamLocation::Path => "path",
            ParamLocation::Query => "query",
            ParamLocation::Header => "header",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Parameter {
    pub name: String,
    pub location: ParamLocation,
    /// Always true for path parameters.
    pub required: bool,
    /// The schema's `type` after resolving `$ref`s and the enum defect.
    pub schema_type: Option<String>,
    /// Allowed values as strings; for arrays, the allowed values of each item.
    pub enum_values: Vec<String>,
    /// Documented default; never applied automatically (Clockify applies its own).
    pub default: Option<Value>,
    pub maximum: Option<f64>,
    pub description: String,
}

#[derive(Clone, Debug)]
pub struct RequestBody {
    pub required: bool,
    pub content_type: String,
    /// As written in the spec (may hold `$ref`s); see [`Catalog::resolve`].
    pub schema: Value,
}

#[derive(Clone, Debug)]
pub struct Operation {
    pub id: String,
    /// Upper-case HTTP method.
    pub method: String,
    /// The path template, e.g. `/v1/workspaces/{workspaceId}/tags`.
    pub path: String,
    pub server: ServerFamily,
    /// The first tag (every operation in the bundled spec has exactly one).
    pub tag: String,
    pub summary: String,
    pub description: String,
    pub deprecated: bool,
    /// Path-item and operation parameters, operation ones overriding, in spec order.
    pub parameters: Vec<Parameter>,
    pub body: Option<RequestBody>,
    /// Whether the security requirements accept `X-Addon-Token`.
    pub addon_token: bool,
    /// `(status code, description, raw schema)` in spec order.
    pub responses: Vec<(String, String, Option<Value>)>,
}

/// A request line ready to be appended to the installation's base URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltRequest {
    /// The path with parameters substituted and percent-encoded.
    pub path: String,
    /// Query pairs, unencoded; arrays appear as repeated names.
    pub query: Vec<(String, String)>,
}

impl Operation {
    pub fn read_only(&self) -> bool {
        matches!(self.method.as_str(), "GET" | "HEAD")
    }

    /// Multipart operations upload files and need a file field to be executed (§13).
    pub fn multipart(&self) -> bool {
        self.body
            .as_ref()
            .is_some_and(|b| b.content_type.starts_with("multipart/"))
    }

    pub fn parameter(&self, name: &str, location: ParamLocation) -> Option<&Parameter> {
        self.parameters
            .iter()
            .find(|p| p.name == name && p.location == location)
    }

    /// Checks `path_params` and `query` against the spec and builds the request line, or
    /// lists every problem found. Unknown path parameters are problems (they would be
    /// silently dropped); unknown query parameters pass through, since Clockify accepts
    /// parameters the spec does not document. `null` counts as absent. Defaults are not
    /// filled in. Header parameters are the caller's business.
    pub fn build_request(
        &self,
        path_params: &Map<String, Value>,
        query: &Map<String, Value>,
    ) -> Result<BuiltRequest, Vec<String>> {
        let mut problems = Vec::new();

        let mut path = String::with_capacity(self.path.len() + 32);
        for piece in template_pieces(&self.path) {
            let name = match piece {
                Piece::Literal(text) => {
                    path.push_str(text);
                    continue;
                }
                Piece::Param(name) => name,
            };
            let text = match path_params.get(name) {
                None | Some(Value::Null) => {
                    problems.push(format!("missing required path parameter {name}"));
                    continue;
                }
                Some(value) => match scalar_text(value) {
                    Some(text) => text,
                    None => {
                        problems.push(format!(
                            "path parameter {name} must be a string, number or boolean"
                        ));
                        continue;
                    }
                },
            };
            if text.is_empty() {
                // An empty segment would address a different endpoint.
                problems.push(format!("path parameter {name} must not be empty"));
                continue;
            }
            if let Some(param) = self.parameter(name, ParamLocation::Path) {
                check_enum("path", param, &text, &mut problems);
            }
            encode_segment(&text, &mut path);
        }
        for name in path_params.keys() {
            if self.parameter(name, ParamLocation::Path).is_none() {
                problems.push(format!("unknown path parameter {name}"));
            }
        }

        let mut pairs = Vec::new();
        for param in self
            .parameters
            .iter()
            .filter(|p| p.location == ParamLocation::Query)
        {
            match query.get(&param.name) {
                Some(value) if has_value(value) => {
                    query_pairs(&param.name, value, Some(param), &mut pairs, &mut problems);
                }
                _ if param.required => {
                    problems.push(format!("missing required query parameter {}", param.name));
                }
                _ => {}
            }
        }
        for (name, value) in query {
            if self.parameter(name, ParamLocation::Query).is_none() {
                query_pairs(name, value, None, &mut pairs, &mut problems);
            }
        }

        if problems.is_empty() {
            Ok(BuiltRequest { path, query: pairs })
        } else {
            Err(problems)
        }
    }
}

/// `null`, `[]` and `[null]` mean "not given".
fn has_value(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Array(items) => items.iter().any(|v| !v.is_null()),
        _ => true,
    }
}

/// Appends `name=value` pairs for one query value (arrays repeat the name).
fn query_pairs(
    name: &str,
    value: &Value,
    param: Option<&Parameter>,
    pairs: &mut Vec<(String, String)>,
    problems: &mut Vec<String>,
) {
    let items = match value {
        Value::Array(items) => items.as_slice(),
        single => std::slice::from_ref(single),
    };
    for item in items {
        if item.is_null() {
            continue;
        }
        match scalar_text(item) {
            Some(text) => {
                if let Some(param) = param {
                    check_enum("query", param, &text, problems);
                }
                pairs.push((name.to_string(), text));
            }
            None => {
                problems.push(format!(
                    "query parameter {name} must be a string, number, boolean or a list of them"
                ));
                return;
            }
        }
    }
}

fn check_enum(kind: &str, param: &Parameter, text: &str, problems: &mut Vec<String>) {
    if !param.enum_values.is_empty() && !param.enum_values.iter().any(|v| v == text) {
        problems.push(format!(
            "{kind} parameter {} must be one of {} (got {text:?})",
            param.name,
            param.enum_values.join(", ")
        ));
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so a value can never add a
/// path segment (`/`), a query (`?`) or a fragment (`#`).
fn encode_segment(text: &str, out: &mut String) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

enum Piece<'a> {
    Literal(&'a str),
    Param(&'a str),
}

/// Splits `/a/{b}/c` into literals and `{parameter}` names.
fn template_pieces(template: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(len) = rest[open..].find('}') else {
            break;
        };
        if open > 0 {
            pieces.push(Piece::Literal(&rest[..open]));
        }
        pieces.push(Piece::Param(&rest[open + 1..open + len]));
        rest = &rest[open + len + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(rest));
    }
    pieces
}

pub struct Catalog {
    /// The whole document: `$ref`s are JSON pointers into it.
    spec: Value,
    operations: Vec<Operation>,
    by_id: HashMap<String, usize>,
    tags: Vec<String>,
}

// By hand: the derived form would print the whole 1 MB spec.
impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("operations", &self.operations.len())
            .field("tags", &self.tags)
            .finish_non_exhaustive()
    }
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

impl Catalog {
    /// Parses an OpenAPI 3.0 document. Fails on what would make the catalog ambiguous:
    /// operations without an `operationId`, or duplicate ids.
    pub fn parse(spec: &str) -> Result<Catalog, String> {
        let spec: Value = serde_json::from_str(spec).map_err(|e| format!("not JSON: {e}"))?;
        let mut catalog = Catalog {
            spec: Value::Null,
            operations: Vec::new(),
            by_id: HashMap::new(),
            tags: Vec::new(),
        };
        let paths = spec
            .get("paths")
            .and_then(Value::as_object)
            .ok_or("no paths")?;
        for (path, item) in paths {
            let item = deref(&spec, item);
            let shared_params = item.get("parameters").and_then(Value::as_array);
            for method in METHODS {
                let Some(op) = item.get(method) else { continue };
                let operation = parse_operation(&spec, path, method, item, op, shared_params)?;
                if catalog.by_id.contains_key(&operation.id) {
                    return Err(format!("duplicate operationId {}", operation.id));
                }
                catalog
                    .by_id
                    .insert(operation.id.clone(), catalog.operations.len());
                catalog.operations.push(operation);
            }
        }
        // Tags in the spec's declared order (it groups them sensibly), then any undeclared.
        let declared = spec.get("tags").and_then(Value::as_array);
        let used: Vec<&str> = catalog.operations.iter().map(|o| o.tag.as_str()).collect();
        for tag in declared
            .into_iter()
            .flatten()
            .filter_map(|t| t.get("name").and_then(Value::as_str))
            .chain(used.iter().copied())
        {
            if used.contains(&tag) && !catalog.tags.iter().any(|t| t == tag) {
                catalog.tags.push(tag.to_string());
            }
        }
        catalog.spec = spec;
        Ok(catalog)
    }

    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    pub fn operation(&self, id: &str) -> Option<&Operation> {
        self.by_id.get(id).map(|&i| &self.operations[i])
    }

    /// Tags used by at least one operation, in the spec's order.
    pub fn tags(&self) -> Vec<String> {
        self.tags.clone()
    }

    /// `schema` with every `$ref` replaced by its target, recursively, and the §13 enum
    /// defect repaired. A `$ref` already being expanded on the current path becomes
    /// `{"$ref": ..., "x-cycle": true}`; one nested deeper than the depth bound becomes
    /// `{"$ref": ..., "x-depth-limit": true}`; one that points nowhere keeps its `$ref`
    /// with `"x-unresolved": true`.
    pub fn resolve(&self, schema: &Value) -> Value {
        let mut stack = Vec::new();
        resolve_in(&self.spec, schema, &mut stack)
    }
}

/// Follows a `$ref` object (`#/components/parameters/…` and the like) to its target.
fn deref<'a>(spec: &'a Value, value: &'a Value) -> &'a Value {
    let mut value = value;
    // A few hops at most; a ref loop here would be a broken spec, not recursion.
    for _ in 0..MAX_REF_DEPTH {
        match value.get("$ref").and_then(Value::as_str) {
            Some(r) => match lookup(spec, r) {
                Some(target) => value = target,
                None => break,
            },
            None => break,
        }
    }
    value
}

fn lookup<'a>(spec: &'a Value, reference: &str) -> Option<&'a Value> {
    spec.pointer(reference.strip_prefix('#')?)
}

fn resolve_in(spec: &Value, value: &Value, stack: &mut Vec<String>) -> Value {
    match value {
        Value::Object(map) => {
            if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
                if stack.iter().any(|r| r == reference) {
                    return json!({"$ref": reference, "x-cycle": true});
                }
                if stack.len() >= MAX_REF_DEPTH {
                    return json!({"$ref": reference, "x-depth-limit": true});
                }
                let Some(target) = lookup(spec, reference) else {
                    return json!({"$ref": reference, "x-unresolved": true});
                };
                stack.push(reference.to_string());
                let resolved = resolve_in(spec, target, stack);
                stack.pop();
                return resolved;
            }
            if let Some(repaired) = repair_enum_defect(map) {
                return repaired;
            }
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), resolve_in(spec, v, stack)))
                    .collect(),
            )
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| resolve_in(spec, v, stack)).collect())
        }
        other => other.clone(),
    }
}

/// §13: `{type: object, oneOf: [{type: string, enum: [...]}]}` validates nothing as written;
/// Clockify sends and accepts plain strings, so it becomes `{type: string, enum: [...]}`
/// (keeping the description; the `example` is dropped as some are arrays).
fn repair_enum_defect(map: &Map<String, Value>) -> Option<Value> {
    if map.get("type").and_then(Value::as_str) != Some("object") {
        return None;
    }
    let [only] = map.get("oneOf")?.as_array()?.as_slice() else {
        return None;
    };
    if only.get("type").and_then(Value::as_str) != Some("string") {
        return None;
    }
    let values = only.get("enum").filter(|e| e.is_array())?;
    let mut repaired = Map::new();
    repaired.insert("type".into(), json!("string"));
    repaired.insert("enum".into(), values.clone());
    if let Some(description) = map.get("description") {
        repaired.insert("description".into(), description.clone());
    }
    Some(Value::Object(repaired))
}

fn text(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn parse_operation(
    spec: &Value,
    path: &str,
    method: &str,
    item: &Value,
    op: &Value,
    shared_params: Option<&Vec<Value>>,
) -> Result<Operation, String> {
    let id = op
        .get("operationId")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| format!("{} {path} has no operationId", method.to_uppercase()))?
        .to_string();

    // Operation servers override the path item's; the bundled spec sets them per path item.
    let server_url = [op, item]
        .iter()
        .find_map(|v| v.get("servers")?.as_array()?.first()?.get("url")?.as_str());
    let server = server_url.map_or(ServerFamily::Backend, family_of_server_url);

    let mut parameters: Vec<Parameter> = Vec::new();
    for raw in shared_params.into_iter().flatten().chain(
        op.get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten(),
    ) {
        let Some(param) = parse_parameter(spec, deref(spec, raw)) else {
            continue;
        };
        match parameters
            .iter_mut()
            .find(|p| p.name == param.name && p.location == param.location)
        {
            Some(existing) => *existing = param,
            None => parameters.push(param),
        }
    }
    // A template name the spec forgot to declare is still needed to build the URL.
    for piece in template_pieces(path) {
        if let Piece::Param(name) = piece
            && !parameters
                .iter()
                .any(|p| p.name == name && p.location == ParamLocation::Path)
        {
            parameters.push(Parameter {
                name: name.to_string(),
                location: ParamLocation::Path,
                required: true,
                schema_type: Some("string".into()),
                enum_values: Vec::new(),
                default: None,
                maximum: None,
                description: String::new(),
            });
        }
    }

    let body = op.get("requestBody").map(|b| deref(spec, b)).map(|b| {
        let (content_type, schema) = pick_content(b);
        RequestBody {
            required: b.get("required").and_then(Value::as_bool).unwrap_or(false),
            content_type,
            schema: schema.unwrap_or(Value::Null),
        }
    });

    let security = op.get("security").or_else(|| spec.get("security"));
    let addon_token = security
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .any(|requirement| ADDON_SCHEMES.iter().any(|s| requirement.contains_key(*s)));

    let responses = op
        .get("responses")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(code, response)| {
            let response = deref(spec, response);
            (
                code.clone(),
                text(response, "description"),
                pick_content(response).1,
            )
        })
        .collect();

    Ok(Operation {
        id,
        method: method.to_uppercase(),
        path: path.to_string(),
        server,
        tag: op
            .get("tags")
            .and_then(|t| t.get(0))
            .and_then(Value::as_str)
            .unwrap_or("Other")
            .to_string(),
        summary: text(op, "summary"),
        description: text(op, "description"),
        deprecated: op
            .get("deprecated")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        parameters,
        body,
        addon_token,
        responses,
    })
}

/// The media type and schema of a request body or response: JSON when offered (17 responses
/// say `*/*` but return JSON, §13), else the first listed.
fn pick_content(holder: &Value) -> (String, Option<Value>) {
    let Some(content) = holder.get("content").and_then(Value::as_object) else {
        return (String::new(), None);
    };
    let chosen = content
        .iter()
        .find(|(media, _)| media.as_str() == "application/json")
        .or_else(|| content.iter().next());
    match chosen {
        Some((media, entry)) => (media.clone(), entry.get("schema").cloned()),
        None => (String::new(), None),
    }
}

fn parse_parameter(spec: &Value, raw: &Value) -> Option<Parameter> {
    let location = match raw.get("in")?.as_str()? {
        "path" => ParamLocation::Path,
        "query" => ParamLocation::Query,
        "header" => ParamLocation::Header,
        // Cookies cannot be sent through the add-on's client; leave them out.
        _ => return None,
    };
    let schema = raw
        .get("schema")
        .map(|s| resolve_in(spec, s, &mut Vec::new()))
        .unwrap_or(Value::Null);
    let schema_type = schema
        .get("type")
        .and_then(Value::as_str)
        .map(str::to_string);
    let enum_source = if schema_type.as_deref() == Some("array") {
        schema.get("items").and_then(|i| i.get("enum"))
    } else {
        schema.get("enum")
    };
    let enum_values = enum_source
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(scalar_text)
        .collect();
    let description = raw
        .get("description")
        .or_else(|| schema.get("description"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Some(Parameter {
        name: raw.get("name")?.as_str()?.to_string(),
        location,
        required: location == ParamLocation::Path
            || raw
                .get("required")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        schema_type,
        enum_values,
        default: schema.get("default").cloned(),
        maximum: schema.get("maximum").and_then(Value::as_f64),
        description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = r##"{
      "openapi": "3.0.1",
      "paths": {
        "/v1/things/{thingId}": {
          "servers": [{"url": "http://localhost:5050"}],
          "get": {
            "operationId": "getThing", "tags": ["Thing"], "security": [{"ApiKeyAuth": []}],
            "parameters": [
              {"name": "thingId", "in": "path", "schema": {"type": "string"}},
              {"name": "kind", "in": "query", "schema": {"$ref": "#/components/schemas/Kind"}}
            ],
            "responses": {"200": {"description": "OK", "content": {"*/*": {"schema": {"$ref": "#/components/schemas/Node"}}}}}
          }
        }
      },
      "components": {"schemas": {
        "Kind": {"type": "object", "oneOf": [{"type": "string", "enum": ["A", "B"]}], "properties": {"A": {}}},
        "Node": {"type": "object", "properties": {"next": {"$ref": "#/components/schemas/Node"}, "kind": {"$ref": "#/components/schemas/Kind"}}}
      }}
    }"##;

    #[test]
    fn parses_a_small_spec_with_its_defects() {
        let catalog = Catalog::parse(TINY).unwrap();
        let op = catalog.operation("getThing").unwrap();
        assert_eq!(op.server, ServerFamily::Pto);
        assert!(!op.addon_token);
        let id = op.parameter("thingId", ParamLocation::Path).unwrap();
        assert!(id.required, "path parameters are always required");
        let kind = op.parameter("kind", ParamLocation::Query).unwrap();
        assert_eq!(kind.schema_type.as_deref(), Some("string"));
        assert_eq!(kind.enum_values, ["A", "B"]);
        let schema = catalog.resolve(op.responses[0].2.as_ref().unwrap());
        assert_eq!(
            schema["properties"]["next"],
            json!({"$ref": "#/components/schemas/Node", "x-cycle": true})
        );
        assert_eq!(
            schema["properties"]["kind"],
            json!({"type": "string", "enum": ["A", "B"]})
        );
    }

    #[test]
    fn rejects_missing_and_duplicate_ids() {
        let missing = r#"{"paths": {"/a": {"get": {}}}}"#;
        assert!(
            Catalog::parse(missing)
                .unwrap_err()
                .contains("no operationId")
        );
        let duplicate = r#"{"paths": {"/a": {"get": {"operationId": "x"}}, "/b": {"get": {"operationId": "x"}}}}"#;
        assert!(Catalog::parse(duplicate).unwrap_err().contains("duplicate"));
    }

    #[test]
    fn depth_is_bounded() {
        // A chain of 20 distinct schemas: no cycle, but deeper than the bound.
        let mut schemas = Map::new();
        for i in 0..20 {
            schemas.insert(
                format!("S{i}"),
                json!({"type": "object", "properties": {"child": {"$ref": format!("#/components/schemas/S{}", i + 1)}}}),
            );
        }
        let spec = json!({"paths": {}, "components": {"schemas": schemas}});
        let catalog = Catalog::parse(&spec.to_string()).unwrap();
        let mut node = catalog.resolve(&json!({"$ref": "#/components/schemas/S0"}));
        let mut depth = 0;
        while node.get("$ref").is_none() {
            node = node["properties"]["child"].clone();
            depth += 1;
        }
        assert_eq!(depth, MAX_REF_DEPTH);
        assert_eq!(node["x-depth-limit"], true);
    }

    #[test]
    fn encodes_path_segments() {
        let mut out = String::new();
        encode_segment("a/b c?d#é~_.-", &mut out);
        assert_eq!(out, "a%2Fb%20c%3Fd%23%C3%A9~_.-");
    }
}
