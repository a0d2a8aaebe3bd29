//! Running operations from the explorer and the entity bootstrap, against the fake Clockify.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

const WS: &str = "ws-explore";
const ADDON: &str = "addon-x";

fn start_with_fake() -> (TestServer, FakeClockify, tempfile::TempDir) {
    let fake = FakeClockify::start();
    let temp = tempfile::tempdir().unwrap();
    let host = fake.host.clone();
    let server = TestServer::start_in(temp.path(), move |c| c.allow_api_hosts = vec![host]);
    (server, fake, temp)
}

fn install_quiet(server: &TestServer, ws: &str, api_base: &str) {
    install_settled(server, ws, ADDON, api_base);
}

fn execute(server: &TestServer, role: &str, body: Value) -> Response {
    server.api("POST", WS, ADDON, role, "/api/execute", Some(&body))
}

#[test]
fn execute_calls_the_installation_api_and_keeps_a_history() {
    let (server, fake, _t) = start_with_fake();
    install_quiet(&server, WS, &fake.base);
    fake.respond(|call| {
        (call.method == "GET" && call.path == format!("/api/v1/workspaces/{WS}/clients")).then(
            || {
                (
                    200,
                    vec![
                        ("x-ratelimit-remaining".into(), "49".into()),
                        ("set-cookie".into(), "s=1".into()),
                    ],
                    br#"[{"id":"c1","name":"Acme"}]"#.to_vec(),
                )
            },
        )
    });
    let r = execute(
        &server,
        "TEAM_MANAGER",
        json!({"operationId": "getClients", "query": {"page": 1, "page-size": 10, "name": "A&B"}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["status"], 200);
    assert_eq!(body["body"][0]["name"], "Acme");
    assert_eq!(body["headers"]["x-ratelimit-remaining"], "49");
    assert!(
        body["headers"].get("set-cookie").is_none(),
        "only a safe subset of headers"
    );
    assert_eq!(body["request"]["method"], "GET");
    assert!(
        body["request"]["url"]
            .as_str()
            .unwrap()
            .starts_with(&fake.base)
    );
    let call = fake
        .calls()
        .into_iter()
        .rfind(|c| c.path.ends_with("/clients") && c.query.contains("name="))
        .expect("the fake was called");
    let query = form_urlencoded_pairs(&call.query);
    assert_eq!(query["name"], "A%26B");
    assert_eq!(query["page-size"], "10");
    let installation_token = call.headers["x-addon-token"].clone();
    assert!(
        !r.body.contains(&installation_token),
        "the token is never returned"
    );

    let history = server.admin_get(WS, ADDON, "/api/executions");
    assert_eq!(history.status, 200);
    let items = history.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["operationId"], "getClients");
    assert_eq!(items[0]["request"]["query"]["name"], "A&B");
    // Who made the call is kept with it.
    assert_eq!(items[0]["userId"], "user-1");
    assert!(!history.body.contains(&installation_token));
}

#[test]
fn execute_validates_before_calling() {
    let (server, fake, _t) = start_with_fake();
    install_quiet(&server, WS, &fake.base);
    let before = fake.calls().len();
    let r = execute(&server, "OWNER", json!({"operationId": "noSuchOperation"}));
    assert_eq!(r.status, 404);
    r.error();
    let r = execute(&server, "OWNER", json!({"operationId": "getTasks"}));
    assert_eq!(r.status, 400);
    assert!(
        r.problems().iter().any(|p| p.contains("projectId")),
        "{}",
        r.body
    );
    let r = execute(
        &server,
        "OWNER",
        json!({"operationId": "getClients", "pathParams": {"workspaceId": "someone-else"}}),
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("workspaceId"));
    let r = execute(
        &server,
        "OWNER",
        json!({"operationId": "getClients", "body": {"x": 1}}),
    );
    assert_eq!(r.status, 400, "a body on an operation that takes none");
    // Writes need an admin.
    let r = execute(
        &server,
        "TEAM_MANAGER",
        json!({"operationId": "createClient", "body": {"name": "x"}}),
    );
    assert_eq!(r.status, 403);
    assert_eq!(fake.calls().len(), before, "nothing was sent");
}

/// A member sees only the calls they made themselves, not another member's "as user" calls
/// (which show what that user could read), nor the admins'; admins see every call.
#[test]
fn members_see_only_their_own_history_and_admins_see_all() {
    let (server, fake, _t) = start_with_fake();
    install_quiet(&server, WS, &fake.base);
    let as_user = |role: &str, user: &str, call: Value| {
        let token = user_token_of(WS, ADDON, role, user);
        let r = request(
            "POST",
            &server.url("/api/execute"),
            &[
                ("x-addon-token", &token),
                ("content-type", "application/json"),
            ],
            Some(&serde_json::to_vec(&call).unwrap()),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    };
    as_user("USER", "alice", json!({"operationId": "getClients"}));
    as_user("USER", "bob", json!({"operationId": "getTags"}));
    as_user("OWNER", "carol", json!({"operationId": "getProjects"}));
    as_user(
        "WORKSPACE_ADMIN",
        "dave",
        json!({"operationId": "getTasks", "pathParams": {"projectId": "p1"}, "as": "user"}),
    );
    let history = |role: &str, user: &str| -> Vec<(String, String)> {
        let token = user_token_of(WS, ADDON, role, user);
        let r = server.get("/api/executions", &[("x-addon-token", &token)]);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["userId"].as_str().unwrap_or_default().to_string(),
                    e["operationId"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(
        history("USER", "alice"),
        [("alice".into(), "getClients".into())]
    );
    assert_eq!(history("USER", "bob"), [("bob".into(), "getTags".into())]);
    assert_eq!(history("TEAM_MANAGER", "erin"), []);
    // Admins: every call, newest first, whoever made it and however.
    let all = history("WORKSPACE_ADMIN", "frank");
    let users: Vec<&str> = all.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(users, ["dave", "carol", "bob", "alice"], "{all:?}");
}

#[test]
fn execute_refuses_a_backend_url_outside_the_allowlist() {
    let (server, fake, _t) = start_with_fake();
    // The installation's URLs point at a host nobody allowed.
    install_quiet(&server, WS, "https://evil.example.com");
    let r = execute(&server, "OWNER", json!({"operationId": "getClients"}));
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.error().contains("evil.example.com"));
    assert!(fake.calls().is_empty());
}

/// Serves `count` clients in pages and one project with three tasks.
fn script_workspace(fake: &FakeClockify, clients: usize) {
    fake.respond(move |call| {
        if call.method != "GET" {
            return None;
        }
        let q: std::collections::HashMap<String, String> = form_urlencoded_pairs(&call.query);
        let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
        let size: usize = q
            .get("page-size")
            .and_then(|p| p.parse().ok())
            .unwrap_or(50);
        let list = |n: usize, prefix: &str| -> Vec<u8> {
            let items: Vec<Value> = (0..n)
                .skip((page - 1) * size)
                .take(size)
                .map(|i| json!({"id": format!("{prefix}{i}"), "name": format!("{prefix} {i}")}))
                .collect();
            serde_json::to_vec(&items).unwrap()
        };
        let path = call.path.as_str();
        let ws = format!("/api/v1/workspaces/{WS}");
        if path == format!("{ws}/clients") {
            Some((200, vec![], list(clients, "client")))
        } else if path == format!("{ws}/projects") {
            Some((200, vec![], list(1, "project")))
        } else if path == format!("{ws}/projects/project0/tasks") {
            Some((200, vec![], list(3, "task")))
        } else if path == ws {
            Some((
                200,
                vec![],
                serde_json::to_vec(&json!({"id": WS, "name": "Test workspace"})).unwrap(),
            ))
        } else {
            Some((200, vec![], b"[]".to_vec()))
        }
    });
}

fn form_urlencoded_pairs(query: &str) -> std::collections::HashMap<String, String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn bootstrap_status(server: &TestServer) -> Value {
    server.admin_get(WS, ADDON, "/api/bootstrap").json()
}

#[test]
fn bootstrap_paginates_fetches_children_and_skips_ineligible_operations() {
    let (server, fake, _t) = start_with_fake();
    script_workspace(&fake, 120);
    // The bootstrap runs on install (setting `bootstrap_on_install`, default on).
    install_quiet(&server, WS, &fake.base);
    assert!(
        wait_until(
            Duration::from_secs(60),
            || bootstrap_status(&server)["status"] == "done"
        ),
        "{}",
        bootstrap_status(&server)
    );
    let status = bootstrap_status(&server);
    let ops: Vec<&Value> = status["operations"].as_array().unwrap().iter().collect();
    let op = |id: &str| ops.iter().find(|o| o["operationId"] == id).copied();
    // Core entities first.
    assert_eq!(ops[0]["operationId"], "getWorkspaceOfUser");
    let clients = op("getClients").expect("clients fetched");
    assert_eq!(clients["items"], 120);
    let calls = fake.calls();
    let client_pages: Vec<&RecordedCall> = calls
        .iter()
        .filter(|c| c.path.ends_with("/clients"))
        .collect();
    // 120 items at the spec's page size: pages until a short one, never past it.
    let size: usize = form_urlencoded_pairs(&client_pages[0].query)["page-size"]
        .parse()
        .unwrap();
    assert_eq!(
        client_pages.len(),
        120 / size + 1,
        "pages: {client_pages:?}"
    );
    // Tasks are fetched per project already held.
    assert_eq!(op("getTasks").expect("tasks fetched")["items"], 3);
    // Ineligible operations never run: add-on token refused, deprecated, required inputs,
    // single-item reads, time entries (off by default), writes.
    for id in [
        "getWorkspacesOfUser",
        "getTimeEntries",
        "getAllAssignments",
        "getClient",
        "getCreatedEntityInfo",
    ] {
        assert!(op(id).is_none(), "{id} should not be part of the bootstrap");
    }
    // Only reads (the webhook registrations are the subscription sync's).
    assert!(
        calls
            .iter()
            .filter(|c| !c.path.contains("/webhooks"))
            .all(|c| c.method == "GET")
    );
    assert!(calls.iter().all(|c| !c.path.contains("time-entries")));
    let entities = server
        .admin_get(
            WS,
            ADDON,
            "/api/entities?type=clients&q=client%2011&limit=5",
        )
        .json();
    let names: Vec<&str> = entities["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"client 11"), "{names:?}");
    assert_eq!(entities["counts"]["clients"], 120);
    let tasks = server
        .admin_get(WS, ADDON, "/api/entities?type=projects/tasks")
        .json();
    assert_eq!(tasks["items"].as_array().unwrap().len(), 3);
    // Re-running refreshes: a new plan from the start.
    let r = server.api("POST", WS, ADDON, "OWNER", "/api/bootstrap", None);
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(wait_until(Duration::from_secs(60), || bootstrap_status(
        &server
    )["status"]
        == "done"));
    let again = fake
        .calls()
        .iter()
        .filter(|c| c.path.ends_with("/clients"))
        .count();
    assert_eq!(again, 2 * client_pages.len());
    assert_eq!(
        server
            .api("POST", WS, ADDON, "TEAM_MANAGER", "/api/bootstrap", None)
            .status,
        403
    );
}

#[test]
fn bootstrap_resumes_after_a_restart_without_refetching_finished_operations() {
    let fake = FakeClockify::start();
    // Every read takes a while, so the server can be stopped in the middle of the bootstrap.
    fake.respond(|_| {
        std::thread::sleep(Duration::from_millis(60));
        None
    });
    script_workspace(&fake, 10);
    let temp = tempfile::tempdir().unwrap();
    let host = fake.host.clone();
    let server = TestServer::start_in(temp.path(), {
        let host = host.clone();
        move |c| c.allow_api_hosts = vec![host]
    });
    server.install(WS, ADDON, &fake.base);
    assert!(wait_until(Duration::from_secs(30), || fake
        .calls()
        .iter()
        .any(|c| c.path.ends_with("/clients"))));
    server.stop();
    let calls_before = fake.calls().len();
    let status_before = {
        let server = TestServer::start_in(temp.path(), {
            let host = host.clone();
            move |c| c.allow_api_hosts = vec![host]
        });
        assert!(
            wait_until(
                Duration::from_secs(60),
                || bootstrap_status(&server)["status"] == "done"
            ),
            "{}",
            bootstrap_status(&server)
        );
        bootstrap_status(&server)
    };
    let after: Vec<String> = fake.calls()[calls_before..]
        .iter()
        .map(|c| c.path.clone())
        .collect();
    assert!(!after.is_empty(), "the bootstrap resumed");
    assert!(
        !after
            .iter()
            .any(|p| p.ends_with(&format!("/workspaces/{WS}"))),
        "the finished workspace read was fetched again: {after:?}"
    );
    assert!(
        !after.iter().any(|p| p == "/api/v1/user"),
        "the finished user read was fetched again"
    );
    assert!(
        after.iter().any(|p| p.ends_with("/tags")),
        "later operations ran: {after:?}"
    );
    let ops = status_before["operations"].as_array().unwrap();
    assert!(ops.iter().all(|o| o["status"] == "done"), "{status_before}");
}

#[test]
fn settings_are_written_through_clockify_and_stored() {
    let (server, fake, _t) = start_with_fake();
    install_quiet(&server, WS, &fake.base);
    let r = server.admin_get(WS, ADDON, "/api/settings");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["settings"]["max_rps"], 25);
    assert_eq!(r.json()["defaults"]["webhook_retention_days"], 90);
    let r = server.api(
        "PATCH",
        WS,
        ADDON,
        "OWNER",
        "/api/settings",
        Some(&json!({"max_rps": 99, "nope": 1})),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["problems"].as_array().unwrap().len(), 2);
    assert_eq!(
        server
            .api(
                "PATCH",
                WS,
                ADDON,
                "TEAM_MANAGER",
                "/api/settings",
                Some(&json!({"max_rps": 10}))
            )
            .status,
        403
    );
    let r = server.api(
        "PATCH",
        WS,
        ADDON,
        "OWNER",
        "/api/settings",
        Some(&json!({"max_rps": 10, "webhook_retention_days": 7})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["settings"]["max_rps"], 10.0);
    let call = fake
        .calls()
        .into_iter()
        .find(|c| c.method == "PATCH" && c.path == format!("/api/addon/workspaces/{WS}/settings"))
        .expect("written through Clockify's settings API");
    let sent: Value = serde_json::from_slice(&call.body).unwrap();
    assert!(
        sent.as_array()
            .unwrap()
            .contains(&json!({"id": "max_rps", "value": 10})),
        "{sent}"
    );
    assert_eq!(
        server.admin_get(WS, ADDON, "/api/settings").json()["settings"]["webhook_retention_days"],
        7.0
    );
}
