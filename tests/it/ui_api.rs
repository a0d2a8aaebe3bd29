//! The API routes the sidebar UI relies on beyond the basic resources: dry runs of unsaved
//! flow definitions, runs across flows and retries, the event list's flow outcomes, stored
//! event types and NDJSON export, response compression and the cached operation catalog.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

const WS: &str = "65b7a1f0c0ffee00000f7001";
const ADDON: &str = "addon-ui-api";
const DEADLINE: Duration = Duration::from_secs(20);

struct Env {
    fake: FakeClockify,
    server: TestServer,
    _dir: tempfile::TempDir,
}

fn start() -> Env {
    let fake = FakeClockify::start();
    let dir = tempfile::tempdir().unwrap();
    let host = fake.host.clone();
    let server = TestServer::start_in(dir.path(), |c| c.allow_api_hosts = vec![host]);
    server.install(WS, ADDON, &fake.base);
    Env {
        fake,
        server,
        _dir: dir,
    }
}

fn call(env: &Env, method: &str, role: &str, path: &str, body: Option<&Value>) -> Response {
    env.server.api(method, WS, ADDON, role, path, body)
}

fn ok(env: &Env, method: &str, path: &str, body: Option<&Value>) -> Value {
    let r = call(env, method, "OWNER", path, body);
    assert!(
        (200..300).contains(&r.status),
        "{method} {path}: {} {}",
        r.status,
        r.body
    );
    r.json()
}

fn deliver(env: &Env, event: &str, body: Value) -> String {
    let r = env
        .server
        .deliver(WS, ADDON, event, body.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["webhookId"].as_str().unwrap().to_string()
}

fn entry(id: &str, description: &str) -> Value {
    json!({"id": id, "workspaceId": WS, "description": description, "userId": "u1",
           "user": {"name": "Ana"}, "project": {"name": "Apollo"},
           "timeInterval": {"start": "2024-05-01T09:00:00Z", "end": "2024-05-01T11:00:00Z", "duration": "PT2H"}})
}

fn tag_flow(name: &str, contains: &str) -> Value {
    json!({"name": name, "enabled": true, "trigger": {"events": ["NEW_TIME_ENTRY"]},
           "conditions": {"mode": "all", "rules": [{"path": "$.description", "op": "contains", "value": contains}]},
           "actions": [{"name": "tags", "operationId": "getTags", "query": {"name": "{{ event.description }}"}}],
           "retry": {"maxAttempts": 1, "backoffMs": 0}})
}

#[test]
fn an_unsaved_definition_is_dry_run_checked_like_a_save_and_never_stored() {
    let env = start();
    let audit = deliver(&env, "NEW_TIME_ENTRY", entry("te-1", "Quarterly audit"));
    let other = deliver(&env, "NEW_TIME_ENTRY", entry("te-2", "Lunch"));

    // A new flow's definition: dry run, nothing stored, nothing called.
    let result = ok(
        &env,
        "POST",
        "/api/flows/test",
        Some(&json!({"flow": tag_flow("draft", "audit"), "webhookId": audit})),
    );
    assert_eq!(result["matched"], true, "{result}");
    assert!(
        result["actions"][0]["request"]["url"]
            .as_str()
            .unwrap()
            .contains(&format!("/workspaces/{WS}/tags")),
        "{result}"
    );
    assert_eq!(result["run"], Value::Null);
    // Which of several stored events it would run for.
    let candidates = ok(
        &env,
        "POST",
        "/api/flows/candidates",
        Some(&json!({"flow": tag_flow("draft", "audit"), "webhookIds": [audit, other, "nope"]})),
    );
    let matched: Vec<Value> = candidates["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["matched"].clone())
        .collect();
    assert_eq!(
        matched,
        vec![json!(true), json!(false), Value::Null],
        "{candidates}"
    );
    assert_eq!(candidates["candidates"][2]["error"], "no such event");
    // Checked exactly like a save: the same problems.
    let mut bad = tag_flow("", "audit");
    bad["actions"][0]["operationId"] = json!("noSuchOperation");
    let tested = call(
        &env,
        "POST",
        "OWNER",
        "/api/flows/test",
        Some(&json!({"flow": bad, "webhookId": audit})),
    );
    let saved = call(&env, "POST", "OWNER", "/api/flows", Some(&bad));
    assert_eq!(
        (tested.status, saved.status),
        (400, 400),
        "{} / {}",
        tested.body,
        saved.body
    );
    assert_eq!(tested.json()["problems"], saved.json()["problems"]);
    // An unsaved flow cannot run for real, and a definition is required.
    let r = call(
        &env,
        "POST",
        "OWNER",
        "/api/flows/test",
        Some(&json!({"flow": tag_flow("draft", "audit"), "webhookId": audit, "execute": true})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = call(
        &env,
        "POST",
        "OWNER",
        "/api/flows/test",
        Some(&json!({"webhookId": audit})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(ok(&env, "GET", "/api/flows", None)["flows"], json!([]));

    // A saved flow tried with the editor's changes: the stored one stays as it was.
    let saved = ok(
        &env,
        "POST",
        "/api/flows",
        Some(&tag_flow("saved", "lunch")),
    );
    let id = saved["id"].as_str().unwrap();
    let before = call(&env, "GET", "OWNER", &format!("/api/flows/{id}"), None).body;
    let stored = ok(
        &env,
        "POST",
        &format!("/api/flows/{id}/test"),
        Some(&json!({"webhookId": audit})),
    );
    let edited = ok(
        &env,
        "POST",
        &format!("/api/flows/{id}/test"),
        Some(&json!({"webhookId": audit, "flow": tag_flow("saved", "audit")})),
    );
    assert_eq!(
        (stored["matched"].clone(), edited["matched"].clone()),
        (json!(false), json!(true))
    );
    let after = call(&env, "GET", "OWNER", &format!("/api/flows/{id}"), None).body;
    assert_eq!(before, after, "the dry run changed the stored flow");
    // Events arrived before the flow existed: nothing has run, and no dry run called
    // Clockify (the install's own bootstrap may list tags, but never by an event's text).
    assert!(
        env.fake
            .calls()
            .iter()
            .all(|c| !c.query.contains("Quarterly") && !c.query.contains("Lunch")),
        "a dry run called Clockify"
    );
}

/// Waits for `n` finished runs in `/api/runs?{query}`; returns them newest first.
fn finished(env: &Env, query: &str, n: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let done = wait_until(DEADLINE, || {
        items = ok(env, "GET", &format!("/api/runs?{query}"), None)["items"]
            .as_array()
            .unwrap()
            .clone();
        items.len() >= n
            && items.iter().all(|r| {
                matches!(
                    r["status"].as_str(),
                    Some("succeeded" | "failed" | "skipped")
                )
            })
    });
    assert!(done, "wanted {n} finished runs for {query}, have {items:?}");
    items
}

#[test]
fn runs_across_flows_filter_and_a_failed_run_is_retried_as_a_retry() {
    let env = start();
    // Clockify fails the first tag lookup, then answers.
    let failed_once = Arc::new(AtomicBool::new(false));
    let flag = failed_once.clone();
    env.fake.respond(move |call| {
        (call.method == "GET" && call.path.ends_with("/tags") && !flag.swap(true, Ordering::SeqCst))
            .then(|| (400, vec![], br#"{"message":"bad"}"#.to_vec()))
    });
    let a = ok(&env, "POST", "/api/flows", Some(&tag_flow("a", "audit")));
    let b = ok(&env, "POST", "/api/flows", Some(&tag_flow("b", "")));
    let event = deliver(&env, "NEW_TIME_ENTRY", entry("te-1", "Quarterly audit"));
    let runs = finished(&env, "", 2);
    assert_eq!(runs.len(), 2);
    assert!(
        runs.iter()
            .all(|r| r["webhookId"] == event && r["durationMs"].is_number()),
        "{runs:?}"
    );
    let failed: Vec<&Value> = runs.iter().filter(|r| r["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{runs:?}");
    let failed = failed[0].clone();

    // Filters: by flow, by status, by time.
    let by_flow = ok(
        &env,
        "GET",
        &format!("/api/runs?flow={}", a["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(by_flow["items"].as_array().unwrap().len(), 1);
    assert_eq!(by_flow["items"][0]["flowName"], "a");
    let by_status = ok(&env, "GET", "/api/runs?status=failed", None);
    assert_eq!(by_status["items"].as_array().unwrap().len(), 1);
    assert_eq!(by_status["items"][0]["id"], failed["id"]);
    let future = ok(&env, "GET", "/api/runs?from=2999-01-01T00:00:00Z", None);
    assert_eq!(future["items"], json!([]));
    let paged = ok(&env, "GET", "/api/runs?limit=1", None);
    assert_eq!(paged["items"].as_array().unwrap().len(), 1);
    let cursor = paged["nextCursor"]
        .as_str()
        .expect("a cursor to the second run");
    let rest = ok(
        &env,
        "GET",
        &format!("/api/runs?limit=1&cursor={cursor}"),
        None,
    );
    assert_ne!(rest["items"][0]["id"], paged["items"][0]["id"]);
    for bad in ["status=done", "from=yesterday", "limit=0", "flow=x"] {
        let r = call(&env, "GET", "OWNER", &format!("/api/runs?{bad}"), None);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }

    // The event list says a flow failed for this event.
    let listed = ok(&env, "GET", "/api/webhooks", None);
    assert_eq!(listed["items"][0]["flows"]["outcome"], "failed", "{listed}");
    assert_eq!(listed["items"][0]["flows"]["runs"], 2);

    // Retry: members may not; a succeeded run is not retried; a failed one is, as a retry.
    let failed_id = failed["id"].as_str().unwrap();
    let r = call(
        &env,
        "POST",
        "TEAM_MANAGER",
        &format!("/api/runs/{failed_id}/retry"),
        None,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let succeeded = runs.iter().find(|r| r["status"] == "succeeded").unwrap();
    let r = call(
        &env,
        "POST",
        "OWNER",
        &format!("/api/runs/{}/retry", succeeded["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let retry = call(
        &env,
        "POST",
        "OWNER",
        &format!("/api/runs/{failed_id}/retry"),
        None,
    );
    assert_eq!(retry.status, 202, "{}", retry.body);
    let retry = retry.json();
    assert_eq!(
        (
            retry["retry"].clone(),
            retry["webhookId"].clone(),
            retry["flowId"].clone()
        ),
        (json!(true), json!(event), failed["flowId"].clone())
    );
    let all = finished(&env, "", 3);
    let done = all
        .iter()
        .find(|r| r["id"] == retry["id"])
        .expect("the retry is listed");
    assert_eq!(done["status"], "succeeded", "{done}");
    // The event now shows its latest outcome: every flow succeeded.
    let listed = ok(&env, "GET", "/api/webhooks", None);
    assert_eq!(
        listed["items"][0]["flows"]["outcome"], "succeeded",
        "{listed}"
    );
    let started = ok(&env, "GET", &format!("/api/webhooks/{event}/runs"), None);
    let ids: Vec<&Value> = started["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert!(
        ids.contains(&&retry["id"]) && !ids.contains(&&failed["id"]),
        "{started}"
    );
    // Counted like any run of the flow.
    let flow = ok(
        &env,
        "GET",
        &format!("/api/flows/{}", b["id"].as_str().unwrap()),
        None,
    );
    let flow_a = ok(
        &env,
        "GET",
        &format!("/api/flows/{}", a["id"].as_str().unwrap()),
        None,
    );
    let total = |f: &Value| {
        f["counts"]["succeeded"].as_u64().unwrap() + f["counts"]["failed"].as_u64().unwrap()
    };
    assert_eq!(total(&flow) + total(&flow_a), 3);
    // Unknown runs are 404.
    let r = call(
        &env,
        "POST",
        "OWNER",
        "/api/runs/0190a000-0000-7000-8000-000000000000/retry",
        None,
    );
    assert_eq!(r.status, 404, "{}", r.body);
}

#[test]
fn events_list_summaries_types_and_an_ndjson_export_of_the_filter() {
    let env = start();
    deliver(&env, "NEW_TIME_ENTRY", entry("te-1", "Quarterly audit"));
    deliver(&env, "NEW_TIME_ENTRY", entry("te-2", "Lunch"));
    deliver(
        &env,
        "NEW_PROJECT",
        json!({"id": "p1", "name": "Apollo", "clientName": "ACME", "workspaceId": WS}),
    );
    // A custom source's own event type.
    let source = ok(&env, "POST", "/api/sources", Some(&json!({"name": "shop"})));
    let secret = source["secret"].as_str().unwrap();
    let r = request(
        "POST",
        &env.server.url(&format!(
            "/webhooks/custom/{}",
            source["id"].as_str().unwrap()
        )),
        &[
            ("authorization", &format!("Bearer {secret}")),
            ("content-type", "application/json"),
        ],
        Some(br#"{"type":"order.created","id":"ord_1","total":42.5}"#),
    );
    assert!(r.status < 300, "{}", r.body);

    let types = ok(&env, "GET", "/api/webhooks/types", None)["types"].clone();
    let types: Vec<&str> = types
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"NEW_TIME_ENTRY") && types.contains(&"NEW_PROJECT"),
        "{types:?}"
    );
    assert_eq!(types.len(), 3, "{types:?}");
    assert!(
        types.iter().any(|t| !t.starts_with("NEW_")),
        "no custom type in {types:?}"
    );

    let listed = ok(&env, "GET", "/api/webhooks?event=NEW_TIME_ENTRY", None);
    let summaries: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["summary"].as_str().unwrap())
        .collect();
    assert_eq!(
        summaries,
        vec![
            "Time entry 'Lunch' by Ana, 2 h, Apollo",
            "Time entry 'Quarterly audit' by Ana, 2 h, Apollo"
        ]
    );
    assert_eq!(listed["items"][0]["flows"], Value::Null, "no flow ran");

    let token = user_token(WS, ADDON, "TEAM_MANAGER");
    let export = env.server.get(
        "/api/webhooks/export?event=NEW_TIME_ENTRY&q=description:audit",
        &[("x-addon-token", &token)],
    );
    assert_eq!(export.status, 200, "{}", export.body);
    assert_eq!(export.header("content-type"), Some("application/x-ndjson"));
    assert!(
        export
            .header("content-disposition")
            .is_some_and(|d| d.starts_with("attachment;") && d.contains(".ndjson"))
    );
    let lines: Vec<Value> = export
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{}", export.body);
    assert_eq!(lines[0]["body"]["description"], "Quarterly audit");
    assert!(lines[0]["headers"].is_array());
    // Compressed as it streams (this once panicked: the stream was polled past its end).
    let compressed = env.server.get(
        "/api/webhooks/export",
        &[("x-addon-token", &token), ("accept-encoding", "br")],
    );
    assert_eq!(
        (compressed.status, compressed.header("content-encoding")),
        (200, Some("br"))
    );
    let everything = env
        .server
        .get("/api/webhooks/export", &[("x-addon-token", &token)]);
    assert_eq!(everything.body.lines().count(), 4);
    let r = env.server.get(
        "/api/webhooks/export?from=nope",
        &[("x-addon-token", &token)],
    );
    assert_eq!(r.status, 400);
    let r = env.server.get("/api/webhooks/export", &[]);
    assert_eq!(r.status, 401);
}

#[test]
fn text_responses_are_compressed_and_the_catalog_is_cached_by_etag() {
    let env = start();
    let token = user_token(WS, ADDON, "OWNER");
    let page = env.server.get(&format!("/ui?auth_token={token}"), &[]);
    let script = page
        .body
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    assert!(script.ends_with("/app.js"), "{script}");
    for (accept, expect) in [
        ("br", Some("br")),
        ("gzip", Some("gzip")),
        ("gzip, br", Some("br")),
        ("identity", None),
    ] {
        let r = env.server.get(&script, &[("accept-encoding", accept)]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), expect, "app.js for {accept}");
        assert!(
            r.header("vary")
                .is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding"))
        );
        let css = env.server.get(
            &script.replace("app.js", "app.css"),
            &[("accept-encoding", accept)],
        );
        assert_eq!(
            css.header("content-encoding"),
            expect,
            "app.css for {accept}"
        );
    }
    let html = env.server.get(
        &format!("/ui?auth_token={token}"),
        &[("accept-encoding", "gzip")],
    );
    assert_eq!(html.header("content-encoding"), Some("gzip"));
    let auth = [
        ("x-addon-token", token.as_str()),
        ("accept-encoding", "gzip"),
    ];
    let ops = env.server.get("/api/operations", &auth);
    assert_eq!(ops.header("content-encoding"), Some("gzip"));
    // Not compressed: small acknowledgements and the live stream.
    let ack = env
        .server
        .deliver(WS, ADDON, "NEW_TAG", br#"{"id":"t1","name":"x"}"#);
    assert_eq!(ack.header("content-encoding"), None);

    // The catalog: an ETag from its content, kept by the browser and revalidated.
    let plain = [("x-addon-token", token.as_str())];
    let ops = env.server.get("/api/operations", &plain);
    assert_eq!(ops.status, 200);
    assert_eq!(ops.header("cache-control"), Some("private, no-cache"));
    let etag = ops.header("etag").expect("an ETag").to_string();
    assert!(ops.json()["operations"].as_array().unwrap().len() > 100);
    let again = env.server.get(
        "/api/operations",
        &[("x-addon-token", &token), ("if-none-match", &etag)],
    );
    assert_eq!((again.status, again.body.as_str()), (304, ""));
    let filtered = env.server.get("/api/operations?tag=Tag", &plain);
    assert_ne!(
        filtered.header("etag"),
        Some(etag.as_str()),
        "a filtered list has its own ETag"
    );
    let one = env.server.get("/api/operations/getTags", &plain);
    let one_tag = one.header("etag").unwrap().to_string();
    let r = env.server.get(
        "/api/operations/getTags",
        &[("x-addon-token", &token), ("if-none-match", &one_tag)],
    );
    assert_eq!(r.status, 304);
    // Still only for signed-in users.
    assert_eq!(
        env.server
            .get("/api/operations", &[("if-none-match", &etag)])
            .status,
        401
    );
}

/// The destinations page lists each destination with its health: the engine's queue depth,
/// the oldest pending delivery, the last attempt and the failing streak.
#[test]
fn the_destination_list_shows_each_ones_queue_and_last_attempt() {
    let receiver = FakeClockify::start();
    receiver.respond(|call| (call.path == "/down").then(|| (503, vec![], b"busy".to_vec())));
    let fake = FakeClockify::start();
    let dir = tempfile::tempdir().unwrap();
    let host = receiver.host.clone();
    let server = TestServer::start_in(dir.path(), |c| {
        c.allow_destination_hosts = vec![host];
        // One retry, far away: a failed first attempt stays pending.
        c.destination_retry_schedule = vec![Duration::ZERO, Duration::from_secs(3600)];
    });
    server.install(WS, ADDON, &fake.base);
    let env = Env {
        fake,
        server,
        _dir: dir,
    };
    let create = |name: &str, path: &str| -> String {
        let body = json!({"name": name, "url": format!("{}{path}", receiver.base),
                          "filter": {"events": ["NEW_TIME_ENTRY"]}});
        let created = ok(&env, "POST", "/api/destinations", Some(&body));
        assert_eq!(created["health"]["pending"], 0, "{created}");
        created["id"].as_str().unwrap().to_string()
    };
    let (up, down) = (create("up", "/up"), create("down", "/down"));
    let listed = ok(&env, "GET", "/api/destinations", None);
    for d in listed["destinations"].as_array().unwrap() {
        assert_eq!(
            d["health"],
            json!({"pending": 0, "oldestPendingAt": null, "lastAttempt": null}),
            "{d}"
        );
    }

    deliver(&env, "NEW_TIME_ENTRY", entry("te-health", "forwarded"));
    let mut last = Value::Null;
    let settled = wait_until(DEADLINE, || {
        last = ok(&env, "GET", "/api/destinations", None);
        let by_name = |name: &str| {
            last["destinations"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["name"] == name)
                .cloned()
                .unwrap()
        };
        let (u, d) = (by_name("up"), by_name("down"));
        u["health"]["lastAttempt"]["status"] == 200
            && u["health"]["pending"] == 0
            && d["health"]["lastAttempt"]["status"] == 503
            && d["health"]["pending"] == 1
    });
    assert!(settled, "health not shown: {last:#}");
    let down_view = ok(&env, "GET", &format!("/api/destinations/{down}"), None);
    let health = &down_view["health"];
    assert_eq!(health["pending"], 1, "{down_view}");
    assert!(health["oldestPendingAt"].is_string(), "{down_view}");
    assert_eq!(health["lastAttempt"]["response"], "busy", "{down_view}");
    assert!(health["lastAttempt"]["latencyMs"].is_u64(), "{down_view}");
    assert!(down_view["failingSince"].is_string(), "{down_view}");
    let up_view = ok(&env, "GET", &format!("/api/destinations/{up}"), None);
    assert!(up_view["failingSince"].is_null(), "{up_view}");
    assert!(up_view["health"]["oldestPendingAt"].is_null(), "{up_view}");
    // Members see no destination, health included.
    let r = call(&env, "GET", "USER", "/api/destinations", None);
    assert_eq!(r.status, 403, "{}", r.body);
}
