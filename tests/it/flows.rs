//! Flows end to end: the real server, deliveries of Clockify webhooks, and a fake Clockify
//! API that records what the flows send.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

const WS: &str = "65b7a1f0c0ffee00000f1001";
const WS2: &str = "65b7a1f0c0ffee00000f1002";
const ADDON: &str = "addon-flows";
const DEADLINE: Duration = Duration::from_secs(20);

struct Env {
    fake: FakeClockify,
    server: TestServer,
    _dir: tempfile::TempDir,
}

/// A server allowed to call the fake Clockify, with `workspaces` installed against it.
fn start(workspaces: &[&str]) -> Env {
    start_with(workspaces, |_| {})
}

fn start_with(
    workspaces: &[&str],
    tweak: impl FnOnce(&mut clockify_studio::config::Config),
) -> Env {
    let fake = FakeClockify::start();
    let dir = tempfile::tempdir().unwrap();
    let host = fake.host.clone();
    let server = TestServer::start_in(dir.path(), |c| {
        c.allow_api_hosts = vec![host];
        tweak(c);
    });
    for ws in workspaces {
        server.install(ws, ADDON, &fake.base);
    }
    Env {
        fake,
        server,
        _dir: dir,
    }
}

fn time_entry(ws: &str, id: &str, project: &str, description: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id, "workspaceId": ws, "projectId": project, "userId": "user-7",
        "description": description, "tagIds": ["tag-0"], "billable": true,
        "timeInterval": {"start": "2024-05-01T09:00:00Z", "end": "2024-05-01T10:00:00Z", "duration": "PT1H"}
    }))
    .unwrap()
}

fn create_flow(server: &TestClient, ws: &str, flow: &Value) -> String {
    let r = server.api("POST", ws, ADDON, "OWNER", "/api/flows", Some(flow));
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["id"].as_str().unwrap().to_string()
}

fn deliver(server: &TestClient, ws: &str, event: &str, body: &[u8]) -> String {
    let r = server.deliver(ws, ADDON, event, body);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["webhookId"].as_str().unwrap().to_string()
}

/// Delivers NEW_TIME_ENTRY for a time entry of WS; returns the webhook id.
fn deliver_new_entry(server: &TestClient, id: &str, project: &str, description: &str) -> String {
    let body = time_entry(WS, id, project, description);
    deliver(server, WS, "NEW_TIME_ENTRY", &body)
}

/// POSTs to an `/api` route of WS as a user with `role`.
fn post_as(server: &TestClient, role: &str, path: &str, body: Option<&Value>) -> Response {
    server.api("POST", WS, ADDON, role, path, body)
}

/// Tries a flow of WS (`POST /api/flows/{flow}/test`) as a user with `role`.
fn test_flow(server: &TestClient, role: &str, flow: &str, body: &Value) -> Response {
    post_as(server, role, &format!("/api/flows/{flow}/test"), Some(body))
}

fn get(server: &TestClient, ws: &str, path: &str) -> Value {
    let r = server.api("GET", ws, ADDON, "OWNER", path, None);
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.json()
}

fn is_final(status: &Value) -> bool {
    matches!(status.as_str(), Some("succeeded" | "failed" | "skipped"))
}

/// Waits until the flow has `n` finished runs; returns them in full, oldest first.
fn finished_runs(server: &TestClient, ws: &str, flow: &str, n: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let done = wait_until(DEADLINE, || {
        items = get(server, ws, &format!("/api/flows/{flow}/runs?limit=200"))["items"]
            .as_array()
            .unwrap()
            .clone();
        items.len() >= n && items.iter().all(|r| is_final(&r["status"]))
    });
    assert!(
        done,
        "flow {flow}: wanted {n} finished runs, have {items:?}"
    );
    items
        .iter()
        .rev()
        .map(|r| {
            get(
                server,
                ws,
                &format!("/api/runs/{}", r["id"].as_str().unwrap()),
            )
        })
        .collect()
}

fn calls_to(fake: &FakeClockify, method: &str, path_part: &str) -> Vec<RecordedCall> {
    fake.calls()
        .into_iter()
        .filter(|c| c.method == method && c.path.contains(path_part))
        .collect()
}

fn body_of(call: &RecordedCall) -> Value {
    serde_json::from_slice(&call.body).unwrap()
}

/// A flow on new time entries whose one action reads the workspace's tags.
fn read_tags_flow() -> Value {
    json!({"name": "t", "trigger": {"events": ["NEW_TIME_ENTRY"]},
           "actions": [{"name": "tags", "operationId": "getTags"}]})
}

fn update_entry_action(name: &str, body: Value) -> Value {
    json!({"name": name, "operationId": "updateTimeEntry",
           "pathParams": {"id": "{{ event.id }}"}, "body": body})
}

/// Runs a flow that updates each new time entry with the `body` template on one delivered
/// entry, `entry_id`; returns the finished run.
fn run_entry_update(env: &Env, entry_id: &str, body: Value) -> Value {
    let flow = create_flow(
        &env.server,
        WS,
        &json!({"name": "update", "trigger": {"events": ["NEW_TIME_ENTRY"]},
                "actions": [update_entry_action("update", body)]}),
    );
    deliver_new_entry(&env.server, entry_id, "p1", "x");
    finished_runs(&env.server, WS, &flow, 1).remove(0)
}

#[test]
fn tag_entries_of_one_project() {
    let env = start(&[WS]);
    let flow = create_flow(
        &env.server,
        WS,
        &json!({
            "name": "Tag project X",
            "trigger": {"source": "clockify", "events": ["NEW_TIME_ENTRY"]},
            "conditions": {"mode": "all", "rules": [{"path": "$.projectId", "op": "eq", "value": "proj-x"}]},
            "actions": [update_entry_action("tag", json!({
                "start": "{{ event.timeInterval.start }}",
                "projectId": "{{ event.projectId }}",
                "description": "{{ event.description }}",
                "tagIds": "{{ event.tagIds + ['tag-x'] }}",
            }))],
        }),
    );
    deliver_new_entry(&env.server, "te-1", "proj-x", "Work");
    deliver_new_entry(&env.server, "te-2", "proj-y", "Other");
    let runs = finished_runs(&env.server, WS, &flow, 2);
    assert_eq!(runs[0]["status"], "succeeded", "{}", runs[0]);
    assert_eq!(runs[1]["status"], "skipped", "{}", runs[1]);
    assert!(runs[1]["error"].as_str().unwrap().contains("$.projectId"));
    let puts = calls_to(&env.fake, "PUT", "/time-entries/");
    assert_eq!(puts.len(), 1, "only the entry on project X is updated");
    assert_eq!(
        puts[0].path,
        format!("/api/v1/workspaces/{WS}/time-entries/te-1")
    );
    assert_eq!(
        body_of(&puts[0]),
        json!({"start": "2024-05-01T09:00:00Z", "projectId": "proj-x", "description": "Work",
               "tagIds": ["tag-0", "tag-x"]})
    );
    // The run records the request as sent and the response.
    let action = &runs[0]["actions"][0];
    assert_eq!(action["status"], "succeeded");
    assert_eq!(action["request"]["method"], "PUT");
    assert_eq!(
        action["request"]["url"],
        format!("{}/api/v1/workspaces/{WS}/time-entries/te-1", env.fake.base)
    );
    assert_eq!(
        action["request"]["body"]["tagIds"],
        json!(["tag-0", "tag-x"])
    );
    assert_eq!(action["response"]["status"], 200);
    assert_eq!(action["attempts"], 1);
    assert!(!runs[0].to_string().contains("authToken"));
    // The token went in the header, never into what is recorded.
    assert!(puts[0].headers.contains_key("x-addon-token"));
    let token = puts[0].headers["x-addon-token"].clone();
    assert!(!runs[0].to_string().contains(&token));
    let listed = get(&env.server, WS, "/api/flows");
    let listed = &listed["flows"][0];
    assert_eq!(listed["counts"]["succeeded"], 1);
    assert_eq!(listed["counts"]["skipped"], 1);
    assert!(listed["lastRun"]["id"].is_string());
}

#[test]
fn default_description_for_empty_entries() {
    let env = start(&[WS]);
    let flow = create_flow(
        &env.server,
        WS,
        &json!({
            "name": "Default description",
            "trigger": {"source": "clockify", "events": ["NEW_TIME_ENTRY", "TIME_ENTRY_UPDATED"]},
            "conditions": {"rules": [{"path": "$.description", "op": "empty"}]},
            "actions": [update_entry_action("describe", json!({
                "start": "{{ event.timeInterval.start }}",
                "description": "Worked on {{ event.projectId }}",
            }))],
        }),
    );
    deliver_new_entry(&env.server, "te-1", "p1", "");
    deliver(
        &env.server,
        WS,
        "TIME_ENTRY_UPDATED",
        &time_entry(WS, "te-2", "p2", "  "),
    );
    deliver(
        &env.server,
        WS,
        "TIME_ENTRY_UPDATED",
        &time_entry(WS, "te-3", "p3", "Has one"),
    );
    let runs = finished_runs(&env.server, WS, &flow, 3);
    let statuses: Vec<&str> = runs.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["succeeded", "succeeded", "skipped"]);
    let puts = calls_to(&env.fake, "PUT", "/time-entries/");
    let mut sent: Vec<(String, Value)> = puts
        .iter()
        .map(|c| (c.path.clone(), body_of(c)["description"].clone()))
        .collect();
    sent.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        sent,
        vec![
            (
                format!("/api/v1/workspaces/{WS}/time-entries/te-1"),
                json!("Worked on p1")
            ),
            (
                format!("/api/v1/workspaces/{WS}/time-entries/te-2"),
                json!("Worked on p2")
            ),
        ]
    );
}

#[test]
fn two_steps_use_the_first_response() {
    let env = start(&[WS]);
    env.fake.respond(|call| {
        (call.method == "GET" && call.path.ends_with("/member-profile/user-7")).then(|| {
            (
                200,
                vec![],
                br#"{"name": "Ann Lee", "email": "ann@example.com", "weekStart": "MONDAY"}"#
                    .to_vec(),
            )
        })
    });
    let flow = create_flow(
        &env.server,
        WS,
        &json!({
            "name": "Sign entries",
            "trigger": {"source": "clockify", "events": ["NEW_TIME_ENTRY"]},
            "actions": [
                {"name": "getUser", "operationId": "getMemberProfile",
                 "pathParams": {"userId": "{{ event.userId }}"}},
                update_entry_action("sign", json!({
                    "start": "{{ event.timeInterval.start }}",
                    "description": "{{ event.description }} ({{ actions.getUser.body.name }})",
                })),
            ],
        }),
    );
    deliver_new_entry(&env.server, "te-9", "p1", "Design");
    let runs = finished_runs(&env.server, WS, &flow, 1);
    assert_eq!(runs[0]["status"], "succeeded", "{}", runs[0]);
    assert_eq!(runs[0]["actions"][0]["response"]["body"]["name"], "Ann Lee");
    let gets = calls_to(&env.fake, "GET", "/member-profile/");
    assert_eq!(gets.len(), 1);
    assert_eq!(
        gets[0].path,
        format!("/api/v1/workspaces/{WS}/member-profile/user-7")
    );
    let puts = calls_to(&env.fake, "PUT", "/time-entries/te-9");
    assert_eq!(puts.len(), 1);
    assert_eq!(body_of(&puts[0])["description"], "Design (Ann Lee)");
}

/// A flow whose one rule must hold, checked with a dry run.
fn rule_result(env: &Env, flow: &str, event: &Value) -> Vec<bool> {
    let body = json!({"event": event, "eventType": "NEW_TIME_ENTRY"});
    let r = test_flow(&env.server, "OWNER", flow, &body);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["passed"].as_bool().unwrap())
        .collect()
}

#[test]
fn every_operator() {
    let env = start(&[WS]);
    let event = json!({"projectId": "p1", "duration": 3600, "description": "Fix bug #12",
        "tagIds": ["a", "b"], "note": "", "hourlyRate": null, "start": "2024-05-01T09:00:00Z"});
    // Each rule holds for `event`; its twin below does not.
    let holds = json!([
        {"path": "$.projectId", "op": "eq", "value": "p1"},
        {"path": "$.projectId", "op": "ne", "value": "p2"},
        {"path": "$.duration", "op": "gt", "value": 3599},
        {"path": "$.duration", "op": "gte", "value": 3600},
        {"path": "$.duration", "op": "lt", "value": "3601"},
        {"path": "$.start", "op": "lte", "value": "2024-05-01T09:00:00Z"},
        {"path": "$.description", "op": "contains", "value": "bug"},
        {"path": "$.tagIds", "op": "not_contains", "value": "c"},
        {"path": "$.projectId", "op": "in", "value": ["p0", "p1"]},
        {"path": "$.tagIds[0]", "op": "not_in", "value": ["x", "y"]},
        {"path": "$.projectId", "op": "exists"},
        {"path": "$.hourlyRate", "op": "not_exists"},
        {"path": "$.description", "op": "matches", "value": "#\\d+$"},
        {"path": "$.note", "op": "empty"},
        {"path": "$.tagIds", "op": "not_empty"},
    ]);
    let fails = json!([
        {"path": "$.projectId", "op": "eq", "value": "p2"},
        {"path": "$.projectId", "op": "ne", "value": "p1"},
        {"path": "$.duration", "op": "gt", "value": 3600},
        {"path": "$.duration", "op": "gte", "value": 3601},
        {"path": "$.duration", "op": "lt", "value": 3600},
        {"path": "$.start", "op": "lte", "value": "2024-04-30T00:00:00Z"},
        {"path": "$.description", "op": "contains", "value": "feature"},
        {"path": "$.tagIds", "op": "not_contains", "value": "a"},
        {"path": "$.projectId", "op": "in", "value": ["p0"]},
        {"path": "$.tagIds[0]", "op": "not_in", "value": ["a"]},
        {"path": "$.missing", "op": "exists"},
        {"path": "$.projectId", "op": "not_exists"},
        {"path": "$.description", "op": "matches", "value": "^bug"},
        {"path": "$.description", "op": "empty"},
        {"path": "$.note", "op": "not_empty"},
    ]);
    assert_eq!(holds.as_array().unwrap().len(), 15);
    for (rules, expected) in [(holds, true), (fails, false)] {
        let flow = create_flow(
            &env.server,
            WS,
            &json!({"name": "ops", "enabled": false,
                    "trigger": {"events": ["NEW_TIME_ENTRY"]},
                    "conditions": {"mode": "any", "rules": rules.clone()},
                    "actions": [{"name": "get", "operationId": "getTimeEntry", "pathParams": {"id": "x"}}]}),
        );
        let results = rule_result(&env, &flow, &event);
        assert_eq!(results.len(), 15);
        for (i, passed) in results.iter().enumerate() {
            assert_eq!(*passed, expected, "rule {i} of {rules}", rules = rules[i]);
        }
    }
    assert!(
        calls_to(&env.fake, "GET", "/time-entries/").is_empty(),
        "dry runs call nothing"
    );
}

#[test]
fn lone_expressions_keep_their_json_type() {
    let env = start(&[WS]);
    let run = run_entry_update(
        &env,
        "te-t",
        json!({
            "start": "{{ event.timeInterval.start }}",
            "billable": "{{ event.billable }}",
            "tagIds": "{{ event.tagIds }}",
            "customFields": [{"customFieldId": "cf", "value": "{{ event.timeInterval }}"}],
            "description": "{{ event.id }} took {{ event.timeInterval.duration }}",
            "projectId": "{{ event.missingProject | default(none) }}",
            "taskId": "{{ event.taskId | default('no-task') }}",
        }),
    );
    assert_eq!(run["status"], "succeeded", "{run}");
    let put = &calls_to(&env.fake, "PUT", "/time-entries/te-t")[0];
    assert_eq!(
        body_of(put),
        json!({
            "start": "2024-05-01T09:00:00Z",
            "billable": true,
            "tagIds": ["tag-0"],
            "customFields": [{"customFieldId": "cf", "value":
                {"start": "2024-05-01T09:00:00Z", "end": "2024-05-01T10:00:00Z", "duration": "PT1H"}}],
            "description": "te-t took PT1H",
            "projectId": null,
            "taskId": "no-task",
        })
    );
}

#[test]
fn a_missing_value_fails_the_run_and_names_it() {
    let env = start(&[WS]);
    let run = run_entry_update(
        &env,
        "te-m",
        json!({
            "start": "{{ event.timeInterval.start }}",
            "description": "Client: {{ event.client.name }}",
        }),
    );
    assert_eq!(run["status"], "failed");
    let error = run["error"].as_str().unwrap();
    assert!(error.contains("event.client"), "{error}");
    assert!(error.contains("body.description"), "{error}");
    assert_eq!(run["actions"][0]["status"], "failed");
    assert!(
        calls_to(&env.fake, "PUT", "/time-entries/").is_empty(),
        "nothing is sent for a run that cannot render"
    );
}

#[test]
fn saving_checks_everything_and_lists_the_problems() {
    let env = start(&[WS]);
    let bad = json!({
        "name": "",
        "trigger": {"source": "clockify", "events": ["NEW_TIME_ENTRY", "NOT_AN_EVENT"]},
        "conditions": {"mode": "most", "rules": [
            {"path": "$.a[", "op": "eq", "value": 1},
            {"path": "$.a", "op": "resembles", "value": 1},
            {"path": "$.a", "op": "matches", "value": "(unclosed"},
        ]},
        "actions": [
            {"name": "first", "operationId": "noSuchOperation"},
            {"name": "second", "operationId": "updateTimeEntry", "body": {
                "description": "{{ actions.third.body.name }} {{ actions.ghost.body }}"}},
            {"name": "third", "operationId": "getTimeEntry", "pathParams": {"id": "{{ event.id"},
             "body": {"x": 1}},
            {"name": "fourth", "operationId": "deleteMany",
             "pathParams": {"userId": "u", "nope": "x"}, "query": {}},
            {"name": "fourth", "operationId": "getTags", "query": {"name": "{{ whatever.x }}"}},
        ],
        "retry": {"maxAttempts": 0},
    });
    let r = post_as(&env.server, "OWNER", "/api/flows", Some(&bad));
    assert_eq!(r.status, 400, "{}", r.body);
    let body = r.json();
    assert!(body["requestId"].is_string());
    let problems = r.problems();
    let expect = [
        "name: required",
        "trigger.events[1]: unknown Clockify event type \"NOT_AN_EVENT\"",
        "conditions.mode",
        "conditions.rules[0].path",
        "conditions.rules[1].op",
        "conditions.rules[2].value: not a valid regular expression",
        "actions[0].operationId: unknown operation \"noSuchOperation\"",
        "actions[1].pathParams.id: required by updateTimeEntry but not mapped",
        "actions[1]: refers to action \"third\", which runs later",
        "actions[1]: refers to unknown action \"ghost\"",
        "actions[2].body: getTimeEntry takes no request body",
        "actions[2].pathParams.id: template does not parse",
        "actions[3].query.time-entry-ids: required by deleteMany but not mapped",
        "actions[3].pathParams.nope: deleteMany has no path parameter nope",
        "actions[4].name: \"fourth\" is used by an earlier action",
        "actions[4]: unknown template variable \"whatever\"",
        "retry.maxAttempts",
    ];
    for want in expect {
        assert!(
            problems.iter().any(|p| p.starts_with(want)),
            "no problem starting with {want:?} in {problems:#?}"
        );
    }
    // workspaceId is filled in automatically and needs no mapping.
    let ok = json!({"name": "ok", "trigger": {"events": ["NEW_TIME_ENTRY"]},
                    "actions": [{"name": "tags", "operationId": "getTags"}]});
    create_flow(&env.server, WS, &ok);
    // A custom source must exist in this workspace.
    let custom = json!({"name": "custom", "trigger": {"source": "no-such-source", "events": ["order.paid"]},
                        "actions": [{"name": "tags", "operationId": "getTags"}]});
    let r = post_as(&env.server, "OWNER", "/api/flows", Some(&custom));
    assert_eq!(r.status, 400);
    assert!(r.body.contains("no custom source"), "{}", r.body);
    let source = post_as(
        &env.server,
        "OWNER",
        "/api/sources",
        Some(&json!({"name": "shop"})),
    );
    let mut custom = custom;
    custom["trigger"]["source"] = source.json()["id"].clone();
    create_flow(&env.server, WS, &custom);
    // Writes need an admin.
    let r = post_as(&env.server, "USER", "/api/flows", Some(&ok));
    assert_eq!(r.status, 403);
    assert_eq!(
        get(&env.server, WS, "/api/flows")["flows"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn every_matching_flow_runs_once_and_no_other() {
    let env = start(&[WS]);
    let tag_flow = |name: &str, events: Value, project: &str| {
        json!({"name": name, "trigger": {"events": events},
               "conditions": {"rules": [{"path": "$.projectId", "op": "eq", "value": project}]},
               "actions": [{"name": "tag", "operationId": "createNewTag", "body": {"name": name}}]})
    };
    let a = create_flow(
        &env.server,
        WS,
        &tag_flow("a", json!(["NEW_TIME_ENTRY"]), "p1"),
    );
    let b = create_flow(
        &env.server,
        WS,
        &tag_flow("b", json!(["NEW_TIME_ENTRY", "NEW_PROJECT"]), "p1"),
    );
    let c = create_flow(
        &env.server,
        WS,
        &tag_flow("c", json!(["NEW_TIME_ENTRY"]), "p2"),
    );
    let d = create_flow(
        &env.server,
        WS,
        &tag_flow("d", json!(["NEW_PROJECT"]), "p1"),
    );
    let mut disabled = tag_flow("e", json!(["NEW_TIME_ENTRY"]), "p1");
    disabled["enabled"] = json!(false);
    let e = create_flow(&env.server, WS, &disabled);
    let body = time_entry(WS, "te-1", "p1", "x");
    deliver(&env.server, WS, "NEW_TIME_ENTRY", &body);
    // A repeated delivery is the same event: no second run.
    let r = env.server.deliver(WS, ADDON, "NEW_TIME_ENTRY", &body);
    assert_eq!(r.json()["duplicate"], true);
    assert_eq!(
        finished_runs(&env.server, WS, &a, 1)[0]["status"],
        "succeeded"
    );
    assert_eq!(
        finished_runs(&env.server, WS, &b, 1)[0]["status"],
        "succeeded"
    );
    assert_eq!(
        finished_runs(&env.server, WS, &c, 1)[0]["status"],
        "skipped"
    );
    for flow in [&d, &e] {
        let runs = get(&env.server, WS, &format!("/api/flows/{flow}/runs"));
        assert_eq!(runs["items"], json!([]), "flow {flow} must not run");
    }
    let mut names: Vec<String> = calls_to(&env.fake, "POST", "/tags")
        .iter()
        .map(|c| body_of(c)["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
}

/// With `--flow-workspace-concurrency 1`, a workspace's runs go one at a time and in order,
/// while another workspace's run is not held up.
#[test]
fn a_workspace_runs_its_flows_one_at_a_time_in_order() {
    let env = start_with(&[WS, WS2], |c| c.flow_workspace_concurrency = 1);
    let tag_flow = json!({"name": "tag", "trigger": {"events": ["NEW_TIME_ENTRY"]},
        "actions": [{"name": "tag", "operationId": "createNewTag",
                     "body": {"name": "{{ event.description }}"}}]});
    let flow = create_flow(&env.server, WS, &tag_flow);
    let other = create_flow(&env.server, WS2, &tag_flow);
    let release = env
        .fake
        .hold_first(|c| c.method == "POST" && c.path.contains(WS) && c.path.ends_with("/tags"));
    for (n, description) in ["one", "two", "three"].iter().enumerate() {
        deliver_new_entry(&env.server, &format!("te-{n}"), "p1", description);
    }
    let body = time_entry(WS2, "te-other", "p1", "other");
    deliver(&env.server, WS2, "NEW_TIME_ENTRY", &body);
    assert_eq!(
        finished_runs(&env.server, WS2, &other, 1)[0]["status"],
        "succeeded"
    );
    let tags_of = |ws: &str| -> Vec<String> {
        calls_to(&env.fake, "POST", "/tags")
            .iter()
            .filter(|c| c.path.contains(ws))
            .map(|c| body_of(c)["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(10), || !tags_of(WS).is_empty()),
        "the first run reaches Clockify"
    );
    assert_eq!(tags_of(WS), ["one"], "the others wait for the held run");
    release.send(true).unwrap();
    let runs = finished_runs(&env.server, WS, &flow, 3);
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{runs:?}");
    assert_eq!(tags_of(WS), ["one", "two", "three"]);
}

#[test]
fn workspaces_stay_isolated() {
    let env = start(&[WS, WS2]);
    let flow = |name: &str| {
        json!({"name": name, "trigger": {"events": ["NEW_TIME_ENTRY"]},
               "actions": [{"name": "tag", "operationId": "createNewTag", "body": {"name": name}}]})
    };
    let f1 = create_flow(&env.server, WS, &flow("one"));
    let f2 = create_flow(&env.server, WS2, &flow("two"));
    deliver_new_entry(&env.server, "te-1", "p", "x");
    let runs = finished_runs(&env.server, WS, &f1, 1);
    assert_eq!(runs[0]["status"], "succeeded");
    let tags = calls_to(&env.fake, "POST", "/tags");
    assert_eq!(tags.len(), 1);
    assert_eq!(tags[0].path, format!("/api/v1/workspaces/{WS}/tags"));
    assert_eq!(
        get(&env.server, WS2, &format!("/api/flows/{f2}/runs"))["items"],
        json!([])
    );
    // Neither workspace sees the other's flows or runs.
    let other = |path: String| {
        env.server
            .api("GET", WS2, ADDON, "OWNER", &path, None)
            .status
    };
    assert_eq!(other(format!("/api/flows/{f1}")), 404);
    assert_eq!(other(format!("/api/flows/{f1}/runs")), 404);
    assert_eq!(
        other(format!("/api/runs/{}", runs[0]["id"].as_str().unwrap())),
        404
    );
    let r = env.server.api(
        "DELETE",
        WS2,
        ADDON,
        "OWNER",
        &format!("/api/flows/{f1}"),
        None,
    );
    assert_eq!(r.status, 404);
    assert_eq!(
        get(&env.server, WS2, "/api/flows")["flows"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn retries_a_429_after_retry_after() {
    let env = start(&[WS]);
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    env.fake.respond(move |call| {
        let first = call.method == "POST"
            && call.path.ends_with("/tags")
            && counter.fetch_add(1, Ordering::SeqCst) == 0;
        first.then(|| {
            (
                429,
                vec![("retry-after".into(), "1".into())],
                br#"{"message":"slow down"}"#.to_vec(),
            )
        })
    });
    let flow = create_flow(
        &env.server,
        WS,
        &json!({"name": "tag", "trigger": {"events": ["NEW_TIME_ENTRY"]},
                "retry": {"maxAttempts": 3, "backoffMs": 10},
                "actions": [{"name": "tag", "operationId": "createNewTag", "body": {"name": "t"}}]}),
    );
    let started = Instant::now();
    deliver_new_entry(&env.server, "te-1", "p", "x");
    let runs = finished_runs(&env.server, WS, &flow, 1);
    assert_eq!(runs[0]["status"], "succeeded", "{}", runs[0]);
    assert_eq!(runs[0]["actions"][0]["attempts"], 2);
    assert_eq!(calls_to(&env.fake, "POST", "/tags").len(), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After was honoured"
    );
}

#[test]
fn repeated_failures_disable_the_flow() {
    let env = start(&[WS]);
    env.fake.respond(|call| {
        (call.method == "POST" && call.path.ends_with("/tags")).then(|| {
            (
                400,
                vec![],
                br#"{"message":"Tag name already exists","code":501}"#.to_vec(),
            )
        })
    });
    let flow = create_flow(
        &env.server,
        WS,
        &json!({"name": "always fails", "trigger": {"events": ["NEW_TIME_ENTRY"]},
                "actions": [{"name": "tag", "operationId": "createNewTag", "body": {"name": "t"}}]}),
    );
    for i in 0..5 {
        deliver_new_entry(&env.server, &format!("te-{i}"), "p", "x");
        finished_runs(&env.server, WS, &flow, i + 1);
    }
    let runs = finished_runs(&env.server, WS, &flow, 5);
    for run in &runs {
        assert_eq!(run["status"], "failed");
        // A 4xx is not retried and its response is kept.
        assert_eq!(run["actions"][0]["attempts"], 1);
        assert_eq!(run["actions"][0]["response"]["status"], 400);
        assert_eq!(
            run["actions"][0]["response"]["body"]["message"],
            "Tag name already exists"
        );
        assert!(
            run["error"]
                .as_str()
                .unwrap()
                .contains("HTTP 400: Tag name already exists")
        );
    }
    let state = get(&env.server, WS, &format!("/api/flows/{flow}"));
    assert_eq!(state["enabled"], false);
    let reason = state["disabledReason"].as_str().unwrap();
    assert!(reason.contains("last 5 runs failed"), "{reason}");
    deliver_new_entry(&env.server, "te-9", "p", "x");
    let empty_event = json!({"event": {}, "eventType": "NEW_TIME_ENTRY"});
    let r = test_flow(&env.server, "OWNER", &flow, &empty_event);
    assert_eq!(r.status, 200);
    assert_eq!(
        get(&env.server, WS, &format!("/api/flows/{flow}/runs"))["items"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    // Enabling clears the reason and the streak.
    let r = post_as(
        &env.server,
        "OWNER",
        &format!("/api/flows/{flow}/enable"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["enabled"], true);
    assert_eq!(r.json()["disabledReason"], Value::Null);
    deliver_new_entry(&env.server, "te-10", "p", "x");
    finished_runs(&env.server, WS, &flow, 6);
    assert_eq!(
        get(&env.server, WS, &format!("/api/flows/{flow}"))["enabled"],
        true
    );
}

#[test]
fn a_dry_run_sends_nothing_and_execute_really_runs() {
    let env = start(&[WS]);
    env.fake.respond(|call| {
        call.path
            .ends_with("/member-profile/user-7")
            .then(|| (200, vec![], br#"{"name": "Ann Lee"}"#.to_vec()))
    });
    let flow = create_flow(
        &env.server,
        WS,
        &json!({"name": "two", "trigger": {"events": ["NEW_TIME_ENTRY"]},
        "conditions": {"rules": [{"path": "$.projectId", "op": "eq", "value": "p1"}]},
        "actions": [
            {"name": "getUser", "operationId": "getMemberProfile",
             "pathParams": {"userId": "{{ event.userId }}"}},
            update_entry_action("sign", json!({"start": "{{ event.timeInterval.start }}",
                "description": "by {{ actions.getUser.body.name }}",
                "userName": "{{ actions.getUser.body.name }}"})),
        ]}),
    );
    let webhook = deliver_new_entry(&env.server, "te-1", "p9", "x");
    assert_eq!(
        finished_runs(&env.server, WS, &flow, 1)[0]["status"],
        "skipped"
    );
    let test = |body: Value, role: &str| test_flow(&env.server, role, &flow, &body);
    let r = test(json!({"webhookId": webhook}), "USER");
    assert_eq!(r.status, 200, "{}", r.body);
    let dry = r.json();
    assert_eq!(dry["matched"], false);
    assert_eq!(dry["conditions"][0]["actual"], "p9");
    assert_eq!(dry["conditions"][0]["passed"], false);
    let event: Value = serde_json::from_slice(&time_entry(WS, "te-2", "p1", "x")).unwrap();
    let dry = test(
        json!({"event": event, "eventType": "NEW_TIME_ENTRY"}),
        "OWNER",
    )
    .json();
    assert_eq!(dry["matched"], true);
    assert_eq!(dry["run"], Value::Null);
    assert_eq!(dry["actions"][0]["request"]["method"], "GET");
    assert_eq!(
        dry["actions"][0]["request"]["url"],
        format!(
            "{}/api/v1/workspaces/{WS}/member-profile/user-7",
            env.fake.base
        )
    );
    let body = &dry["actions"][1]["request"]["body"];
    assert_eq!(
        body["description"],
        "by <actions.getUser.body.name (unavailable in a dry run)>"
    );
    assert_eq!(
        body["userName"],
        "<actions.getUser.body.name (unavailable in a dry run)>"
    );
    assert!(
        calls_to(&env.fake, "GET", "/member-profile/").is_empty()
            && calls_to(&env.fake, "PUT", "/time-entries/").is_empty(),
        "a dry run calls nothing"
    );
    // execute: admins only, then a real run recorded as a test run.
    let r = test(
        json!({"event": event, "eventType": "NEW_TIME_ENTRY", "execute": true}),
        "USER",
    );
    assert_eq!(r.status, 403);
    let r = test(
        json!({"event": event, "eventType": "NEW_TIME_ENTRY", "execute": true}),
        "OWNER",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let run = &r.json()["run"];
    assert_eq!(run["test"], true);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["webhookId"], Value::Null);
    assert_eq!(calls_to(&env.fake, "GET", "/member-profile/").len(), 1);
    let puts = calls_to(&env.fake, "PUT", "/time-entries/te-2");
    assert_eq!(puts.len(), 1);
    assert_eq!(body_of(&puts[0])["description"], "by Ann Lee");
    // Test runs are listed with the flow's runs, marked as tests.
    let runs = get(&env.server, WS, &format!("/api/flows/{flow}/runs"))["items"].clone();
    assert_eq!(runs[0]["test"], true);
}

#[test]
fn replay_runs_the_matching_flows_again() {
    let env = start(&[WS]);
    let flow = create_flow(
        &env.server,
        WS,
        &json!({"name": "tag", "trigger": {"events": ["NEW_TIME_ENTRY"]},
                "actions": [{"name": "tag", "operationId": "createNewTag", "body": {"name": "{{ event.id }}"}}]}),
    );
    let other = create_flow(
        &env.server,
        WS,
        &json!({"name": "other", "trigger": {"events": ["NEW_PROJECT"]},
                "actions": [{"name": "tag", "operationId": "getTags"}]}),
    );
    let webhook = deliver_new_entry(&env.server, "te-r", "p", "x");
    finished_runs(&env.server, WS, &flow, 1);
    let path = format!("/api/webhooks/{webhook}/replay");
    assert_eq!(post_as(&env.server, "USER", &path, None).status, 403);
    let r = post_as(&env.server, "OWNER", &path, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let replayed = r.json()["runs"].as_array().unwrap().clone();
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0]["replay"], true);
    assert_eq!(replayed[0]["flowId"], flow.as_str());
    assert_eq!(replayed[0]["webhookId"], webhook.as_str());
    let runs = finished_runs(&env.server, WS, &flow, 2);
    assert_eq!(runs[0]["replay"], false);
    assert_eq!(runs[1]["replay"], true);
    assert_eq!(runs[1]["status"], "succeeded");
    let tags = calls_to(&env.fake, "POST", "/tags");
    assert_eq!(tags.len(), 2);
    assert!(tags.iter().all(|c| body_of(c)["name"] == "te-r"));
    assert_eq!(
        get(&env.server, WS, &format!("/api/flows/{other}/runs"))["items"],
        json!([])
    );
    let r = env.server.api("POST", WS2, ADDON, "OWNER", &path, None);
    assert_ne!(r.status, 200, "another workspace cannot replay it");
}

#[test]
fn runs_are_deleted_by_retention() {
    let Env {
        fake,
        server,
        _dir: dir,
    } = start(&[WS]);
    let flow = create_flow(&server, WS, &read_tags_flow());
    deliver_new_entry(&server, "te-1", "p", "x");
    finished_runs(&server, WS, &flow, 1);
    drop(server);
    // 31 days later, by the retention clock (runs are kept 30 days by default).
    let server = TestServer::start_in(dir.path(), |c| {
        c.allow_api_hosts = vec![fake.host.clone()];
        c.retention_clock_skew = Duration::from_secs(31 * 24 * 3600);
        c.retention_interval = Duration::from_millis(50);
    });
    assert!(wait_until(DEADLINE, || {
        get(&server, WS, &format!("/api/flows/{flow}/runs"))["items"] == json!([])
    }));
    let state = get(&server, WS, &format!("/api/flows/{flow}"));
    assert_eq!(state["counts"]["succeeded"], 0);
    assert!(server.metric("retention_deleted_total", &["kind=\"flow_run\""]) >= 1.0);
}

#[test]
fn metrics_count_runs_actions_and_queue() {
    let env = start(&[WS]);
    let flow = create_flow(&env.server, WS, &read_tags_flow());
    deliver_new_entry(&env.server, "te-1", "p", "x");
    finished_runs(&env.server, WS, &flow, 1);
    let m = |name: &str, labels: &[&str]| env.server.metric(name, labels);
    assert!(m("flow_runs_total", &["status=\"succeeded\""]) >= 1.0);
    assert!(
        m(
            "flow_actions_total",
            &["operation=\"getTags\"", "outcome=\"succeeded\""]
        ) >= 1.0
    );
    assert!(m("flow_commit_to_first_send_seconds_count", &[]) >= 1.0);
    let text = env.server.get("/metrics", &[]).body;
    assert!(
        text.contains("flow_queue_depth"),
        "queue depth gauge missing"
    );
}

// --- Crash and resume: the real binary, killed with SIGKILL mid-run. ---

struct ServerProcess {
    child: Child,
    client: TestClient,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server(data_dir: &std::path::Path, fake_host: &str) -> ServerProcess {
    spawn_server_with(data_dir, fake_host, &[])
}

/// [`spawn_server`] with more arguments.
fn spawn_server_with(data_dir: &std::path::Path, fake_host: &str, extra: &[&str]) -> ServerProcess {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/test-signing-key.pub.pem"
    );
    let child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log-level",
            "warn",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--clockify-public-key", key, "--allow-api-host", fake_host])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("start the server binary");
    let client = TestClient::new(&format!("http://127.0.0.1:{port}"));
    let child = ServerProcess { child, client };
    assert!(
        wait_until(DEADLINE, || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "the server did not start"
    );
    child
}

#[test]
fn a_killed_server_resumes_runs_without_repeating_finished_actions() {
    let fake = FakeClockify::start();
    // The first PUT and the first POST are answered only once the server is dead.
    let release_put = fake.hold_first(|c| c.method == "PUT" && c.path.contains("/time-entries/"));
    let release_post = fake.hold_first(|c| c.method == "POST" && c.path.ends_with("/tags"));
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_server(dir.path(), &fake.host);
    server.client.install(WS, ADDON, &fake.base);
    // GET then PUT (idempotent: may be resent), and a POST (must not be).
    let two_steps = create_flow(
        &server.client,
        WS,
        &json!({"name": "two steps", "trigger": {"events": ["NEW_TIME_ENTRY"]},
        "actions": [
            {"name": "getUser", "operationId": "getMemberProfile", "pathParams": {"userId": "{{ event.userId }}"}},
            update_entry_action("sign", json!({"start": "{{ event.timeInterval.start }}", "description": "signed"})),
        ]}),
    );
    let post = create_flow(
        &server.client,
        WS,
        &json!({"name": "post", "trigger": {"events": ["NEW_TIME_ENTRY"]},
        "actions": [{"name": "tag", "operationId": "createNewTag", "body": {"name": "x"}}]}),
    );
    deliver_new_entry(&server.client, "te-k", "p", "x");
    assert!(
        wait_until(DEADLINE, || {
            let has = |m: &str, p: &str| !calls_to(&fake, m, p).is_empty();
            has("GET", "/member-profile/") && has("PUT", "/time-entries/") && has("POST", "/tags")
        }),
        "the actions were not sent"
    );
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    // The held calls now answer a dead connection.
    drop((release_put, release_post));
    let server = spawn_server(dir.path(), &fake.host);
    let resumed = finished_runs(&server.client, WS, &two_steps, 1);
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0]["status"], "succeeded", "{}", resumed[0]);
    let unknown = finished_runs(&server.client, WS, &post, 1);
    assert_eq!(unknown.len(), 1);
    assert_eq!(unknown[0]["status"], "failed");
    assert!(
        unknown[0]["error"]
            .as_str()
            .unwrap()
            .contains("outcome unknown after restart")
    );
    assert_eq!(unknown[0]["actions"][0]["status"], "failed");
    let count = |m: &str, p: &str| calls_to(&fake, m, p).len();
    assert_eq!(
        count("GET", "/member-profile/"),
        1,
        "the GET had succeeded: it is not sent again"
    );
    assert_eq!(
        count("PUT", "/time-entries/"),
        2,
        "the interrupted PUT is idempotent: sent again once"
    );
    assert_eq!(
        count("POST", "/tags"),
        1,
        "the interrupted POST is not repeated"
    );
}

mod http;
