//! The API explorer's catalog: the bundled spec's operations over HTTP, filters, resolved
//! detail schemas, the §13 defect repairs, and request building against the spec.

use std::collections::{BTreeMap, HashSet};

use clockify_studio::clockify::catalog::{ParamLocation, ServerFamily, catalog};
use serde_json::{Map, Value, json};

use crate::support::*;

const WS: &str = "ws-catalog";
const ADDON: &str = "addon-catalog";

fn server() -> TestServer {
    let server = TestServer::start();
    server.install(WS, ADDON, "https://api.clockify.me");
    server
}

/// GET as a plain member: reading the catalog needs no admin role.
fn get(server: &TestServer, path: &str) -> Response {
    server.api("GET", WS, ADDON, "USER", path, None)
}

fn operations(server: &TestServer, path: &str) -> Vec<Value> {
    let r = get(server, path);
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    let ops = body["operations"].as_array().unwrap().clone();
    assert_eq!(body["count"], ops.len(), "count matches the list");
    ops
}

fn ids(ops: &[Value]) -> Vec<&str> {
    ops.iter()
        .map(|o| o["operationId"].as_str().unwrap())
        .collect()
}

/// Every `$ref` left in `value`, as (pointer, the ref object).
fn remaining_refs(value: &Value, at: String, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            if map.contains_key("$ref") {
                out.push((at.clone(), value.clone()));
            }
            for (k, v) in map {
                remaining_refs(v, format!("{at}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                remaining_refs(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Objects still written as the §13 enum defect (`type: object` + `oneOf`).
fn enum_defects(value: &Value) -> usize {
    match value {
        Value::Object(map) => {
            usize::from(map.get("type") == Some(&json!("object")) && map.contains_key("oneOf"))
                + map.values().map(enum_defects).sum::<usize>()
        }
        Value::Array(items) => items.iter().map(enum_defects).sum(),
        _ => 0,
    }
}

#[test]
fn lists_the_whole_spec() {
    let server = server();
    let r = get(&server, "/api/operations");
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    let ops = body["operations"].as_array().unwrap();
    assert_eq!(ops.len(), 170);
    assert_eq!(body["count"], 170);

    let unique: HashSet<&str> = ids(ops).into_iter().collect();
    assert_eq!(unique.len(), 170, "operationIds are unique");
    let paths: HashSet<&str> = ops.iter().map(|o| o["path"].as_str().unwrap()).collect();
    assert_eq!(paths.len(), 109);

    let mut methods = BTreeMap::new();
    for op in ops {
        *methods.entry(op["method"].as_str().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(
        methods,
        BTreeMap::from([
            ("DELETE", 24),
            ("GET", 52),
            ("PATCH", 18),
            ("POST", 47),
            ("PUT", 29)
        ])
    );
    assert_eq!(ops.iter().filter(|o| o["deprecated"] == true).count(), 16);
    for op in ops {
        assert_eq!(op["readOnly"], op["method"] == "GET", "{op}");
        let keys: Vec<&str> = op.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "operationId",
                "method",
                "path",
                "tag",
                "summary",
                "deprecated",
                "readOnly",
                "hasBody",
                "parameters"
            ]
        );
        for p in op["parameters"].as_array().unwrap() {
            let keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                [
                    "name",
                    "in",
                    "required",
                    "type",
                    "enum",
                    "default",
                    "description"
                ]
            );
            if p["in"] == "path" {
                assert_eq!(p["required"], true, "{p}");
                assert!(
                    op["path"]
                        .as_str()
                        .unwrap()
                        .contains(&format!("{{{}}}", p["name"].as_str().unwrap()))
                );
            }
        }
    }
    assert_eq!(ops.iter().filter(|o| o["hasBody"] == true).count(), 92);

    // Tags: every operation's tag is listed, nothing else is.
    let tags: Vec<&str> = body["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let used: HashSet<&str> = ops.iter().map(|o| o["tag"].as_str().unwrap()).collect();
    assert_eq!(tags.len(), used.len());
    assert!(tags.iter().all(|t| used.contains(t)));
    assert!(tags.contains(&"Time entry") && tags.contains(&"Webhooks"));
}

#[test]
fn documents_parameters() {
    let server = server();
    let ops = operations(&server, "/api/operations?q=getTimeEntries");
    let op = ops
        .iter()
        .find(|o| o["operationId"] == "getTimeEntries")
        .unwrap();
    let param = |name: &str| {
        op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {op}"))
            .clone()
    };
    assert_eq!(param("workspaceId")["in"], "path");
    let page_size = param("page-size");
    assert_eq!(page_size["in"], "query");
    assert_eq!(page_size["required"], false);
    assert_eq!(page_size["type"], "integer");
    assert_eq!(page_size["default"], 50);
    assert_eq!(param("tags")["type"], "array");
    assert_eq!(param("tags")["enum"], json!([]));
    assert_eq!(param("description")["default"], Value::Null);

    let users = operations(&server, "/api/operations?q=getUsersOfWorkspace");
    let status = users
        .iter()
        .find(|o| o["operationId"] == "getUsersOfWorkspace")
        .unwrap()["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "status")
        .unwrap()
        .clone();
    assert_eq!(status["type"], "string");
    assert_eq!(
        status["enum"],
        json!(["PENDING", "ACTIVE", "DECLINED", "INACTIVE", "ALL"])
    );
}

#[test]
fn filters_by_tag_method_and_text() {
    let server = server();
    let all = operations(&server, "/api/operations");

    let webhooks = operations(&server, "/api/operations?tag=webhooks");
    let expected = all.iter().filter(|o| o["tag"] == "Webhooks").count();
    assert!(expected >= 5);
    assert_eq!(
        webhooks.len(),
        expected,
        "tag is exact and case-insensitive"
    );
    assert!(ids(&webhooks).contains(&"createWebhook"));
    // Exact, not a prefix or substring.
    assert!(operations(&server, "/api/operations?tag=webhook").is_empty());

    let deletes = operations(&server, "/api/operations?method=delete");
    assert_eq!(deletes.len(), 24);
    assert!(deletes.iter().all(|o| o["method"] == "DELETE"));

    let both = operations(&server, "/api/operations?tag=Webhooks&method=GET");
    assert!(!both.is_empty());
    assert!(
        both.iter()
            .all(|o| o["tag"] == "Webhooks" && o["method"] == "GET")
    );

    // q matches the operationId, the summary and the path, case-insensitively.
    assert!(
        ids(&operations(&server, "/api/operations?q=UPDATETIMEENTRY")).contains(&"updateTimeEntry")
    );
    let by_path = operations(&server, "/api/operations?q=%2Fshared-reports");
    assert!(!by_path.is_empty());
    assert!(by_path.iter().all(|o| {
        o["path"].as_str().unwrap().contains("/shared-reports")
            || o["summary"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("/shared-reports")
    }));
    let summary = all
        .iter()
        .find(|o| o["operationId"] == "createWebhook")
        .unwrap()["summary"]
        .as_str()
        .unwrap()
        .to_string();
    let q: String = form_urlencoded_encode(&summary.to_uppercase());
    assert!(
        ids(&operations(&server, &format!("/api/operations?q={q}"))).contains(&"createWebhook")
    );

    assert!(operations(&server, "/api/operations?q=no-such-thing-anywhere").is_empty());
    // Empty filters mean no filter; tags stay complete whatever the filter.
    assert_eq!(
        operations(&server, "/api/operations?tag=&method=&q=").len(),
        170
    );
    let r = get(&server, "/api/operations?tag=Webhooks");
    assert_eq!(
        r.json()["tags"],
        get(&server, "/api/operations").json()["tags"]
    );
}

fn form_urlencoded_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn detail_resolves_schemas() {
    let server = server();
    let r = get(&server, "/api/operations/createWebhook");
    assert_eq!(r.status, 200, "{}", r.body);
    let op = r.json();
    assert_eq!(op["operationId"], "createWebhook");
    assert_eq!(op["method"], "POST");
    assert_eq!(op["path"], "/v1/workspaces/{workspaceId}/webhooks");
    assert_eq!(op["server"], "backend");
    assert_eq!(op["addonToken"], true);
    assert_eq!(op["multipart"], false);
    assert_eq!(op["readOnly"], false);
    assert!(op["description"].is_string());
    let body = &op["requestBody"];
    assert_eq!(body["required"], true);
    assert_eq!(body["contentType"], "application/json");
    let schema = &body["schema"];
    assert_eq!(schema["type"], "object");
    assert!(schema["properties"]["url"].is_object(), "{schema}");
    // The event type is a plain string enum listing every webhook event.
    let event = &schema["properties"]["webhookEvent"];
    assert_eq!(event["type"], "string", "{event}");
    let events = event["enum"].as_array().unwrap();
    assert!(events.contains(&json!("NEW_TIME_ENTRY")) && events.len() >= 40);
    let mut refs = Vec::new();
    remaining_refs(&op, String::new(), &mut refs);
    assert!(refs.is_empty(), "unresolved: {refs:?}");
    let responses = op["responses"].as_object().unwrap();
    assert!(responses.contains_key("201") || responses.contains_key("200"));
    for response in responses.values() {
        assert!(response["description"].is_string());
        assert!(response.get("schema").is_some());
    }

    let op = get(&server, "/api/operations/updateTimeEntry").json();
    assert_eq!(op["method"], "PUT");
    assert_eq!(op["requestBody"]["schema"]["type"], "object");
    assert!(
        !op["requestBody"]["schema"]["properties"]
            .as_object()
            .unwrap()
            .is_empty()
    );
    let mut refs = Vec::new();
    remaining_refs(&op, String::new(), &mut refs);
    assert!(refs.is_empty(), "unresolved: {refs:?}");

    let op = get(&server, "/api/operations/getTimeEntries").json();
    assert_eq!(op["requestBody"], Value::Null);
    assert_eq!(op["readOnly"], true);
}

#[test]
fn every_detail_is_resolved_and_classified() {
    let server = server();
    let all = operations(&server, "/api/operations");
    // One token for all 170 calls: signing RS256 in a debug build is the slow part.
    let token = user_token(WS, ADDON, "USER");
    let mut families = BTreeMap::new();
    let mut addon = Vec::new();
    let mut cycles = 0;
    let mut multipart = Vec::new();
    for summary in &all {
        let id = summary["operationId"].as_str().unwrap();
        let r = server.get(
            &format!("/api/operations/{id}"),
            &[("x-addon-token", &token)],
        );
        assert_eq!(r.status, 200, "{id}: {}", r.body);
        let op = r.json();
        // The detail is the summary plus more.
        for (k, v) in summary.as_object().unwrap() {
            assert_eq!(&op[k], v, "{id}.{k}");
        }
        *families
            .entry(op["server"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
        if op["addonToken"] == true {
            addon.push(id.to_string());
        }
        if op["multipart"] == true {
            multipart.push(id.to_string());
        }
        let mut refs = Vec::new();
        remaining_refs(&op, String::new(), &mut refs);
        for (at, r) in &refs {
            assert_eq!(r["x-cycle"], true, "{id}{at}: {r}");
        }
        cycles += refs.len();
        assert_eq!(enum_defects(&op), 0, "{id} still has an object/oneOf enum");
    }
    // PLATFORM.md §9: 93 paths on the backend, 8 on reports, 8 on the localhost PTO bug.
    assert_eq!(
        families,
        BTreeMap::from([
            ("backend".to_string(), 146),
            ("pto".to_string(), 14),
            ("reports".to_string(), 10)
        ])
    );
    // The spec accepts X-Addon-Token on all but two operations. (PLATFORM.md §13 says 166:
    // that counts operations offering exactly AddonKeyAuth + ApiKeyAuth; two more also
    // offer MarketplaceKeyAuth.)
    assert_eq!(addon.len(), 168);
    assert!(!addon.contains(&"getWorkspacesOfUser".to_string()));
    assert!(!addon.contains(&"createWorkspace".to_string()));
    multipart.sort();
    assert_eq!(multipart, ["createExpense", "updateExpense", "uploadImage"]);
    // GroupOneDto nests itself (report groups have children).
    assert!(
        cycles > 0,
        "the report groups' self-reference shows as a cycle"
    );
    let summary = get(&server, "/api/operations/generateSummaryReport").json();
    let mut refs = Vec::new();
    remaining_refs(&summary, String::new(), &mut refs);
    assert!(
        refs.iter()
            .any(|(_, r)| r["$ref"] == "#/components/schemas/GroupOneDto")
    );
}

#[test]
fn enum_defect_becomes_a_string_enum() {
    let server = server();
    let op = get(&server, "/api/operations/updateInvoice").json();
    let tax_type = &op["requestBody"]["schema"]["properties"]["taxType"];
    assert_eq!(tax_type["type"], "string", "{tax_type}");
    assert_eq!(tax_type["enum"], json!(["COMPOUND", "SIMPLE", "NONE"]));
    assert!(tax_type.get("oneOf").is_none() && tax_type.get("properties").is_none());
}

#[test]
fn errors() {
    let server = server();
    let r = get(&server, "/api/operations/noSuchOperation");
    assert_eq!(r.status, 404);
    assert!(r.error().contains("noSuchOperation"), "{}", r.body);

    for path in ["/api/operations", "/api/operations/createWebhook"] {
        let r = server.get(path, &[]);
        assert_eq!(r.status, 401, "{path}");
        r.error();
    }
    // A token of a workspace that never installed the add-on.
    let r = server.api(
        "GET",
        "ws-elsewhere",
        ADDON,
        "OWNER",
        "/api/operations",
        None,
    );
    assert_eq!(r.status, 403);
    r.error();
}

// ----- request building, through the library -----

fn map(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

#[test]
fn catalog_from_the_library() {
    let catalog = catalog();
    assert_eq!(catalog.operations().len(), 170);
    let op = catalog.operation("getTimeEntries").unwrap();
    assert_eq!(op.server, ServerFamily::Backend);
    assert!(op.read_only() && !op.multipart() && op.body.is_none());
    let page_size = op.parameter("page-size", ParamLocation::Query).unwrap();
    assert!(!page_size.required);
    assert!(page_size.maximum.is_some() || page_size.default.is_some());
    assert!(catalog.operation("uploadImage").unwrap().multipart());
    assert_eq!(catalog.tags().len(), 28);
}

#[test]
fn builds_requests() {
    let op = catalog().operation("getTimeEntries").unwrap();
    let built = op
        .build_request(
            &map(json!({"workspaceId": "ws1", "userId": "u1"})),
            &map(json!({
                "page": 2,
                "hydrated": true,
                "tags": ["t1", "t2"],
                "description": "a b&c",
                "project": null,
                "undocumented": "kept",
            })),
        )
        .unwrap();
    assert_eq!(built.path, "/v1/workspaces/ws1/user/u1/time-entries");
    let pairs: Vec<(&str, &str)> = built
        .query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for expected in [
        ("page", "2"),
        ("hydrated", "true"),
        ("tags", "t1"),
        ("tags", "t2"),
        ("description", "a b&c"),
        ("undocumented", "kept"),
    ] {
        assert!(pairs.contains(&expected), "{expected:?} in {pairs:?}");
    }
    assert!(
        !pairs.iter().any(|(k, _)| *k == "project"),
        "null is omitted"
    );
    assert!(
        !pairs.iter().any(|(k, _)| *k == "page-size"),
        "defaults are not applied"
    );
}

#[test]
fn encodes_path_parameters() {
    let op = catalog().operation("getTimeEntries").unwrap();
    let built = op
        .build_request(
            &map(json!({"workspaceId": "a/b?c#d e", "userId": 42})),
            &Map::new(),
        )
        .unwrap();
    assert_eq!(
        built.path,
        "/v1/workspaces/a%2Fb%3Fc%23d%20e/user/42/time-entries"
    );
}

#[test]
fn lists_every_request_problem() {
    let op = catalog().operation("getTimeEntries").unwrap();
    let problems = op
        .build_request(
            &map(json!({"userId": {"nested": true}, "bogus": "x"})),
            &map(json!({"tags": [["nested"]], "page": {"x": 1}})),
        )
        .unwrap_err();
    let expected = [
        "missing required path parameter workspaceId",
        "path parameter userId must be a string, number or boolean",
        "unknown path parameter bogus",
        "query parameter page must be a string, number, boolean or a list of them",
        "query parameter tags must be a string, number, boolean or a list of them",
    ];
    for e in expected {
        assert!(problems.iter().any(|p| p == e), "{e:?} in {problems:?}");
    }
    assert_eq!(problems.len(), expected.len(), "{problems:?}");

    // A required query parameter, then an enum (each array item is checked too).
    let op = catalog().operation("getUsersOfWorkspace").unwrap();
    let ws = map(json!({"workspaceId": "ws1"}));
    assert_eq!(
        op.build_request(&ws, &Map::new()).unwrap_err(),
        ["missing required query parameter include-roles"]
    );
    let problems = op
        .build_request(&ws, &map(json!({"include-roles": [], "status": "GONE"})))
        .unwrap_err();
    assert_eq!(
        problems,
        [
            "query parameter status must be one of PENDING, ACTIVE, DECLINED, INACTIVE, ALL (got \"GONE\")",
            "missing required query parameter include-roles",
        ]
    );
    let built = op
        .build_request(
            &ws,
            &map(json!({"include-roles": false, "status": "ACTIVE"})),
        )
        .unwrap();
    assert_eq!(
        built.query,
        [
            ("status".to_string(), "ACTIVE".to_string()),
            ("include-roles".to_string(), "false".to_string())
        ]
    );
    let invoices = catalog().operation("getInvoices").unwrap();
    let problems = invoices
        .build_request(&ws, &map(json!({"statuses": ["PAID", "LOST"]})))
        .unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("query parameter statuses must be one of UNSENT, SENT"));
}
