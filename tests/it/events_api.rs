//! Reading events back: pages, filters, isolation between workspaces, live stream, retention.

use std::io::BufRead;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

const A: &str = "ws-api-a";
const B: &str = "ws-api-b";
const ADDON: &str = "addon-api";

fn items(r: &Response) -> Vec<Value> {
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["items"].as_array().unwrap().clone()
}

#[test]
fn pages_newest_first_with_filters() {
    let server = TestServer::start();
    server.install(A, ADDON, UNREACHABLE_API);
    for i in 0..7 {
        let body = format!(
            "{{\"id\":\"p{i}\",\"description\":\"Task {i}\",\"project\":{{\"name\":\"Apollo\"}}}}"
        );
        server.deliver(A, ADDON, "NEW_PROJECT", body.as_bytes());
        let body = format!("{{\"id\":\"t{i}\",\"name\":\"tag {i}\"}}");
        server.deliver(A, ADDON, "NEW_TAG", body.as_bytes());
    }
    // Newest first, cursor pagination covers everything exactly once.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = server.admin_get(A, ADDON, &format!("/api/webhooks?limit=4&cursor={cursor}"));
        let page = items(&r);
        seen.extend(page.iter().map(|e| e["id"].as_str().unwrap().to_string()));
        match r.json()["nextCursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 14);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");

    let tags = items(&server.admin_get(A, ADDON, "/api/webhooks?event=NEW_TAG"));
    assert_eq!(tags.len(), 7);
    assert!(tags.iter().all(|e| e["eventType"] == "NEW_TAG"));
    let both = items(&server.admin_get(
        A,
        ADDON,
        "/api/webhooks?event=NEW_TAG&event=NEW_PROJECT&limit=10",
    ));
    assert_eq!(both.len(), 10);
    let by_text = items(&server.admin_get(A, ADDON, "/api/webhooks?q=task%203"));
    assert_eq!(by_text.len(), 1);
    assert!(by_text[0]["preview"].as_str().unwrap().contains("Task 3"));
    let by_field = items(&server.admin_get(A, ADDON, "/api/webhooks?q=project.name%3Dapollo"));
    assert_eq!(by_field.len(), 7);
    let by_source = items(&server.admin_get(A, ADDON, "/api/webhooks?source=clockify&limit=200"));
    assert_eq!(by_source.len(), 14);
    assert!(items(&server.admin_get(A, ADDON, "/api/webhooks?source=elsewhere")).is_empty());
    let future = items(&server.admin_get(A, ADDON, "/api/webhooks?from=2999-01-01T00:00:00Z"));
    assert!(future.is_empty());
    let past = items(&server.admin_get(A, ADDON, "/api/webhooks?to=2000-01-01T00:00:00Z"));
    assert!(past.is_empty());
    let all = items(&server.admin_get(
        A,
        ADDON,
        "/api/webhooks?from=2000-01-01T00:00:00Z&limit=200",
    ));
    assert_eq!(all.len(), 14);

    let r = server.admin_get(A, ADDON, "/api/webhooks?limit=500&from=yesterday");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["problems"].as_array().unwrap().len(), 2);
}

#[test]
fn api_needs_a_valid_user_token() {
    let server = TestServer::start();
    server.install(A, ADDON, UNREACHABLE_API);
    assert_eq!(server.get("/api/webhooks", &[]).status, 401);
    let no_exp = sign(&base_claims(A, ADDON));
    let r = server.get("/api/webhooks", &[("x-addon-token", &no_exp)]);
    assert_eq!(r.status, 401, "user tokens must expire: {}", r.body);
    let mut expired = base_claims(A, ADDON);
    expired["exp"] = json!(now_secs() - 10);
    assert_eq!(
        server
            .get("/api/webhooks", &[("x-addon-token", &sign(&expired))])
            .status,
        401
    );
    // A token for a workspace that never installed the add-on.
    assert_eq!(
        server.admin_get("ws-nobody", ADDON, "/api/webhooks").status,
        403
    );
    // A token of an earlier installation.
    assert_eq!(
        server.admin_get(A, "addon-before", "/api/webhooks").status,
        403
    );
}

#[test]
fn a_workspace_never_sees_another_workspaces_data() {
    let server = TestServer::start();
    server.install(A, ADDON, UNREACHABLE_API);
    server.install(B, ADDON, UNREACHABLE_API);
    let id = server
        .deliver(A, ADDON, "NEW_TAG", br#"{"id":"secret-of-a"}"#)
        .json()["webhookId"]
        .as_str()
        .unwrap()
        .to_string();
    let source = server.api(
        "POST",
        A,
        ADDON,
        "OWNER",
        "/api/sources",
        Some(&json!({"name": "A's CRM"})),
    );
    assert_eq!(source.status, 201, "{}", source.body);
    let source_id = source.json()["id"].as_str().unwrap().to_string();

    assert!(items(&server.admin_get(B, ADDON, "/api/webhooks")).is_empty());
    assert!(items(&server.admin_get(B, ADDON, "/api/webhooks?q=secret-of-a")).is_empty());
    assert_eq!(
        server
            .admin_get(B, ADDON, &format!("/api/webhooks/{id}"))
            .status,
        404
    );
    assert_eq!(
        server
            .admin_get(B, ADDON, &format!("/api/webhooks/{id}/raw"))
            .status,
        404
    );
    assert_eq!(
        server
            .api(
                "DELETE",
                B,
                ADDON,
                "OWNER",
                &format!("/api/webhooks/{id}"),
                None
            )
            .status,
        404
    );
    let sources = server.admin_get(B, ADDON, "/api/sources").json();
    assert!(sources["sources"].as_array().unwrap().is_empty());
    assert_eq!(
        server
            .api(
                "DELETE",
                B,
                ADDON,
                "OWNER",
                &format!("/api/sources/{source_id}"),
                None
            )
            .status,
        404
    );
    assert_eq!(
        server
            .api(
                "POST",
                B,
                ADDON,
                "OWNER",
                &format!("/api/sources/{source_id}/rotate"),
                None
            )
            .status,
        404
    );
    // A still has everything.
    assert_eq!(
        server
            .admin_get(A, ADDON, &format!("/api/webhooks/{id}"))
            .status,
        200
    );
    assert_eq!(
        server.admin_get(A, ADDON, "/api/sources").json()["sources"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn erasing_needs_an_admin() {
    let server = TestServer::start();
    server.install(A, ADDON, UNREACHABLE_API);
    let id = server.deliver(A, ADDON, "NEW_TAG", br#"{"id":"x"}"#).json()["webhookId"]
        .as_str()
        .unwrap()
        .to_string();
    let r = server.api(
        "DELETE",
        A,
        ADDON,
        "TEAM_MANAGER",
        &format!("/api/webhooks/{id}"),
        None,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    // Reading is fine for any member.
    assert_eq!(
        server
            .api(
                "GET",
                A,
                ADDON,
                "TEAM_MANAGER",
                &format!("/api/webhooks/{id}"),
                None
            )
            .status,
        200
    );
    let r = server.api(
        "DELETE",
        A,
        ADDON,
        "WORKSPACE_ADMIN",
        &format!("/api/webhooks/{id}"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        server
            .admin_get(A, ADDON, &format!("/api/webhooks/{id}"))
            .status,
        404
    );
    // The erased bytes are new again, not a duplicate of something gone.
    let again = server.deliver(A, ADDON, "NEW_TAG", br#"{"id":"x"}"#).json();
    assert_eq!(again["duplicate"], false);
}

/// A single-use stream ticket for the user of `token`.
pub fn stream_ticket(server: &TestClient, token: &str) -> String {
    let r = server.post(
        "/api/webhooks/stream-ticket",
        &[("x-addon-token", token)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["ticket"].as_str().unwrap().to_string()
}

/// Opens the live stream with a ticket for `token` and reads SSE `data:`/`id:` lines on a
/// thread; each received event as (id, data).
fn open_stream(
    server: &TestServer,
    token: &str,
    last_event_id: Option<&str>,
) -> mpsc::Receiver<(String, Value)> {
    let (tx, rx) = mpsc::channel();
    let ticket = stream_ticket(server, token);
    let url = server.url(&format!("/api/webhooks/stream?ticket={ticket}"));
    let last = last_event_id.map(str::to_string);
    std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = agent.get(&url);
        if let Some(last) = &last {
            req = req.header("last-event-id", last);
        }
        let response = req.call().unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let reader = std::io::BufReader::new(response.into_body().into_reader());
        let mut id = String::new();
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                if let Ok(data) = serde_json::from_str::<Value>(v.trim())
                    && tx.send((id.clone(), data)).is_err()
                {
                    return;
                }
            }
        }
    });
    rx
}

#[test]
fn the_live_stream_delivers_new_events_and_resumes() {
    let server = TestServer::start();
    server.install(A, ADDON, UNREACHABLE_API);
    server.install(B, ADDON, UNREACHABLE_API);
    let token = user_token(A, ADDON, "OWNER");
    let stream = open_stream(&server, &token, None);
    // The subscription starts with the response; deliver until the first one shows up.
    let mut first = None;
    for i in 0..50 {
        server.deliver(
            B,
            ADDON,
            "NEW_TAG",
            format!("{{\"id\":\"b{i}\"}}").as_bytes(),
        );
        let sent = server
            .deliver(
                A,
                ADDON,
                "NEW_TAG",
                format!("{{\"id\":\"a{i}\"}}").as_bytes(),
            )
            .json();
        if let Ok((id, data)) = stream.recv_timeout(Duration::from_millis(200)) {
            assert_eq!(data["eventType"], "NEW_TAG");
            assert!(
                data["preview"].as_str().unwrap().contains("\"a"),
                "only A's events: {data}"
            );
            first = Some((id, sent));
            break;
        }
    }
    let (first_id, _) = first.expect("no live event arrived");
    // Events delivered while nobody listens are replayed after Last-Event-ID, in order.
    drop(stream);
    let missed: Vec<String> = (0..3)
        .map(|i| {
            server
                .deliver(
                    A,
                    ADDON,
                    "NEW_CLIENT",
                    format!("{{\"id\":\"m{i}\"}}").as_bytes(),
                )
                .json()["webhookId"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let resumed = open_stream(&server, &token, Some(&first_id));
    let mut got = Vec::new();
    while got.len() < 3 {
        let (id, data) = resumed
            .recv_timeout(Duration::from_secs(10))
            .expect("replayed event");
        if data["eventType"] == "NEW_CLIENT" {
            got.push(id);
        }
    }
    assert_eq!(got, missed);
    // A bad ticket cannot open a stream.
    let r = server.get("/api/webhooks/stream?ticket=nope", &[]);
    assert_eq!(r.status, 401);
}

#[test]
fn retention_deletes_only_what_is_older_than_each_workspaces_setting() {
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(temp.path(), |_| {});
    for (ws, days) in [
        ("ws-ret-default", None),
        ("ws-ret-keep", Some(0)),
        ("ws-ret-long", Some(100)),
    ] {
        server.install(ws, ADDON, UNREACHABLE_API);
        if let Some(days) = days {
            let r = server.lifecycle(
                "settings-updated",
                &json!({"addonId": ADDON, "workspaceId": ws, "settings": [{"id": "webhook_retention_days", "value": days}]}),
            );
            assert_eq!(r.status, 200);
        }
        for i in 0..300 {
            server.deliver(
                ws,
                ADDON,
                "NEW_TAG",
                format!("{{\"id\":\"{i}\"}}").as_bytes(),
            );
        }
    }
    server.install("ws-ret-gone", ADDON, UNREACHABLE_API);
    server.deliver("ws-ret-gone", ADDON, "NEW_TAG", b"{}");
    server.lifecycle(
        "deleted",
        &json!({"addonId": ADDON, "workspaceId": "ws-ret-gone"}),
    );
    server.stop();
    // 91 days later, by the retention clock (the default is 90 days).
    let server = TestServer::start_in(temp.path(), |c| {
        c.retention_clock_skew = Duration::from_secs(91 * 24 * 3600);
        c.retention_interval = Duration::from_millis(50);
    });
    let count = |ws: &str| {
        server
            .admin_get(ws, ADDON, "/api/webhooks?limit=200")
            .json()["items"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert!(
        wait_until(Duration::from_secs(20), || count("ws-ret-default") == 0),
        "old events were not deleted"
    );
    assert_eq!(count("ws-ret-keep"), 200, "retention 0 keeps everything");
    assert_eq!(
        count("ws-ret-long"),
        200,
        "100-day retention keeps 91-day-old events"
    );
    assert!(server.metric("retention_deleted_total", &["kind=\"event\""]) >= 301.0);
    // The long-deleted installation is purged entirely.
    assert!(wait_until(Duration::from_secs(10), || {
        server.metric("retention_deleted_total", &["kind=\"installation\""]) >= 1.0
    }));
    let dir = server.stop();
    let out = std::process::Command::new(BIN)
        .args(["check", "--data-dir"])
        .arg(&*dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("table installations: 3"), "{stdout}");
    assert!(stdout.contains("table events: 600"), "{stdout}");
}
