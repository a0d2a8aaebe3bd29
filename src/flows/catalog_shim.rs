//! TEMPORARY stand-in for `crate::clockify::catalog` (being written on another branch),
//! with exactly the API flows use. Deleted when the catalog lands on main.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::{Map, Value};

const SPEC: &str = include_str!("../../../shared/clockify/openapi.json");

static CATALOG: LazyLock<Catalog> = LazyLock::new(|| Catalog::parse(SPEC));

pub fn catalog() -> &'static Catalog {
    &CATALOG
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerFamily {
    Backend,
    Reports,
    Pto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamLocation {
    Path,
    Query,
    Header,
}

#[derive(Clone, Debug)]
pub struct Parameter {
    pub name: String,
    pub location: ParamLocation,
    pub required: bool,
}

#[derive(Clone, Debug)]
pub struct RequestBody {
    pub required: bool,
    pub content_type: String,
}

#[derive(Clone, Debug)]
pub struct Operation {
    pub id: String,
    pub method: String,
    pub path: String,
    pub server: ServerFamily,
    pub parameters: Vec<Parameter>,
    pub body: Option<RequestBody>,
}

pub struct BuiltRequest {
    pub path: String,
    pub query: Vec<(String, String)>,
}

pub struct Catalog {
    operations: HashMap<String, Operation>,
}

impl Catalog {
    fn parse(spec: &str) -> Catalog {
        let spec: Value = serde_json::from_str(spec).expect("bundled spec");
        let mut operations = HashMap::new();
        for (path, item) in spec["paths"].as_object().expect("paths") {
            let server = match item["servers"][0]["url"].as_str().unwrap_or("") {
                "https://api.clockify.me/api" => ServerFamily::Backend,
                "https://reports.api.clockify.me" => ServerFamily::Reports,
                _ => ServerFamily::Pto,
            };
            for method in ["get", "put", "post", "patch", "delete"] {
                let Some(op) = item.get(method) else { continue };
                let Some(id) = op["operationId"].as_str() else {
                    continue;
                };
                let parameters = op["parameters"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter_map(|p| {
                                let location = match p["in"].as_str()? {
                                    "path" => ParamLocation::Path,
                                    "query" => ParamLocation::Query,
                                    "header" => ParamLocation::Header,
                                    _ => return None,
                                };
                                Some(Parameter {
                                    name: p["name"].as_str()?.to_string(),
                                    location,
                                    required: location == ParamLocation::Path
                                        || p["required"].as_bool().unwrap_or(false),
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let body = op.get("requestBody").map(|b| {
                    let content_type = b["content"]
                        .as_object()
                        .and_then(|c| c.keys().next().cloned())
                        .unwrap_or_default();
                    RequestBody {
                        required: b["required"].as_bool().unwrap_or(false),
                        content_type,
                    }
                });
                operations.insert(
                    id.to_string(),
                    Operation {
                        id: id.to_string(),
                        method: method.to_ascii_uppercase(),
                        path: path.clone(),
                        server,
                        parameters,
                        body,
                    },
                );
            }
        }
        Catalog { operations }
    }

    pub fn operation(&self, id: &str) -> Option<&Operation> {
        self.operations.get(id)
    }
}

impl Operation {
    pub fn build_request(
        &self,
        path_params: &Map<String, Value>,
        query: &Map<String, Value>,
    ) -> Result<BuiltRequest, Vec<String>> {
        let mut problems = Vec::new();
        let mut path = self.path.clone();
        for p in self
            .parameters
            .iter()
            .filter(|p| p.location == ParamLocation::Path)
        {
            match path_params.get(&p.name).and_then(scalar) {
                Some(v) if !v.is_empty() => {
                    let encoded: String = form_urlencoded::byte_serialize(v.as_bytes()).collect();
                    path = path.replace(&format!("{{{}}}", p.name), &encoded);
                }
                _ => problems.push(format!("missing required path parameter {}", p.name)),
            }
        }
        let mut pairs = Vec::new();
        for (k, v) in query {
            match v {
                Value::Null => {}
                Value::Array(items) => {
                    pairs.extend(items.iter().filter_map(scalar).map(|s| (k.clone(), s)))
                }
                other => match scalar(other) {
                    Some(s) => pairs.push((k.clone(), s)),
                    None => problems.push(format!("query parameter {k} must be a scalar")),
                },
            }
        }
        for p in self
            .parameters
            .iter()
            .filter(|p| p.location == ParamLocation::Query && p.required)
        {
            if !pairs.iter().any(|(k, _)| *k == p.name) {
                problems.push(format!("missing required query parameter {}", p.name));
            }
        }
        if problems.is_empty() {
            Ok(BuiltRequest { path, query: pairs })
        } else {
            Err(problems)
        }
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
