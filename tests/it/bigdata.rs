//! Big data files (issue 18): an entity's history in one request from the entity index, a
//! text search that answers in one request, and what a restart or a crash keeps of both the
//! index and the dedupe state. (What they cost is `cargo bench --bench scale`.)

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const WS: &str = "ws-bigdata";
const OTHER: &str = "ws-bigdata-other";
const ADDON: &str = "addon-bigdata";
const USER: &str = "65b7a1f0aaaaaaaaaaaa0001";
const PROJECT: &str = "65b7a1f0bbbbbbbbbbbb0001";

/// A time entry naming the user, and the project when `with_project`.
fn time_entry(n: usize, with_project: bool) -> (String, Vec<u8>) {
    let id = format!("65b7a1f0cccc{n:012x}");
    let project = if with_project {
        format!(
            ",\"projectId\":\"{PROJECT}\",\"project\":{{\"id\":\"{PROJECT}\",\"name\":\"Apollo\"}}"
        )
    } else {
        String::new()
    };
    let body = format!(
        "{{\"id\":\"{id}\",\"workspaceId\":\"{WS}\",\"userId\":\"{USER}\",\"description\":\"entry {n}\"{project},\"tags\":[{{\"id\":\"65b7a1f0dddd{n:012x}\"}}]}}"
    );
    (id, body.into_bytes())
}

fn history(server: &TestClient, ws: &str, query: &str) -> Value {
    let r = server.admin_get(ws, ADDON, &format!("/api/webhooks?{query}"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn an_entity_history_lists_the_events_naming_it_newest_first() {
    let server = TestServer::start();
    server.install(WS, ADDON, UNREACHABLE_API);
    server.install(OTHER, ADDON, UNREACHABLE_API);
    let mut stored = Vec::new();
    for n in 0..6 {
        let (own, body) = time_entry(n, n % 2 == 0);
        let r = server.deliver(WS, ADDON, "NEW_TIME_ENTRY", &body);
        assert_eq!(r.status, 200, "{}", r.body);
        stored.push((own, r.json()["webhookId"].as_str().unwrap().to_string()));
    }
    // The same user named in another workspace is that workspace's business.
    let (_, body) = time_entry(99, true);
    let body = String::from_utf8(body).unwrap().replace(WS, OTHER);
    let r = server.deliver(OTHER, ADDON, "NEW_TIME_ENTRY", body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);

    // The event's own id: exactly that event.
    let page = history(&server, WS, &format!("entity={}", stored[3].0));
    assert_eq!(ids(&page), vec![stored[3].1.clone()]);
    assert!(page["nextCursor"].is_null());

    // A referenced user: all six, newest first; a project: the three that name it.
    let all: Vec<String> = stored.iter().rev().map(|(_, id)| id.clone()).collect();
    assert_eq!(ids(&history(&server, WS, &format!("entity={USER}"))), all);
    let with_project: Vec<String> = stored
        .iter()
        .enumerate()
        .rev()
        .filter(|(n, _)| n % 2 == 0)
        .map(|(_, (_, id))| id.clone())
        .collect();
    assert_eq!(
        ids(&history(&server, WS, &format!("entity={PROJECT}"))),
        with_project
    );
    // A nested tag id is indexed; the workspace id is not.
    assert_eq!(
        ids(&history(&server, WS, "entity=65b7a1f0dddd000000000002")),
        vec![stored[2].1.clone()]
    );
    assert!(ids(&history(&server, WS, &format!("entity={WS}"))).is_empty());

    // Pages follow the cursor.
    let first = history(&server, WS, &format!("entity={USER}&limit=4"));
    assert_eq!(ids(&first), all[..4].to_vec());
    let cursor = first["nextCursor"].as_str().expect("a cursor");
    let second = history(
        &server,
        WS,
        &format!("entity={USER}&limit=4&cursor={cursor}"),
    );
    assert_eq!(ids(&second), all[4..].to_vec());
    assert!(second["nextCursor"].is_null());

    // An erased event leaves the history.
    let token = user_token(WS, ADDON, "OWNER");
    let r = request(
        "DELETE",
        &server.url(&format!("/api/webhooks/{}", stored[5].1)),
        &[("x-addon-token", &token)],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        ids(&history(&server, WS, &format!("entity={USER}"))),
        all[1..].to_vec()
    );

    // Other filters do not combine with entity; a bad id is a 400 too.
    for query in [
        format!("entity={USER}&q=entry"),
        format!("entity={USER}&event=NEW_TAG"),
        "entity=".to_string(),
        format!("entity={}", "x".repeat(65)),
    ] {
        let r = server.admin_get(WS, ADDON, &format!("/api/webhooks?{query}"));
        assert_eq!(r.status, 400, "{query}: {}", r.body);
    }
}

/// A rare text deep in the log is found in one request (the search keeps scanning past the
/// page's usual bound), and the page says how much it examined.
#[test]
fn a_text_search_answers_in_one_request_and_says_how_far_it_got() {
    let server = TestServer::start();
    server.install(WS, ADDON, UNREACHABLE_API);
    let (_, rare) = time_entry(0, false);
    let rare = String::from_utf8(rare)
        .unwrap()
        .replace("entry 0", "the needle");
    assert_eq!(
        server
            .deliver(WS, ADDON, "NEW_TIME_ENTRY", rare.as_bytes())
            .status,
        200
    );
    for n in 1..120 {
        let (_, body) = time_entry(n, n % 3 == 0);
        assert_eq!(
            server.deliver(WS, ADDON, "NEW_TIME_ENTRY", &body).status,
            200
        );
    }
    let page = history(&server, WS, "q=NEEDLE&limit=1");
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    assert!(
        page["items"][0]["preview"]
            .as_str()
            .unwrap()
            .contains("the needle")
    );
    assert_eq!(page["scanned"], 120, "{page}");
    assert!(page["scannedTo"].as_str().is_some(), "{page}");
    let none = history(&server, WS, "q=nowhere-to-be-found");
    assert!(none["items"].as_array().unwrap().is_empty());
    assert!(
        none["nextCursor"].is_null(),
        "the whole log was searched: {none}"
    );
    assert_eq!(none["scanned"], 120);
}

/// The real binary killed with SIGKILL: every acknowledged event is there, named in the entity
/// history, and a redelivery inside the dedupe window is still a duplicate, although its
/// dedupe row and index rows were only in memory at the kill.
#[test]
fn after_a_crash_the_index_and_dedupe_state_come_back() {
    let temp = tempfile::tempdir().unwrap();
    let key = repo_file("tests/fixtures/test-signing-key.pub.pem");
    let args = [
        "--clockify-public-key",
        key.to_str().unwrap(),
        "--allow-api-host",
        "127.0.0.1:9",
    ];
    let server = LoggedServer::start(temp.path(), &args);
    assert_eq!(
        server.client.install(WS, ADDON, UNREACHABLE_API).status,
        200
    );
    let mut stored = Vec::new();
    for n in 0..20 {
        let (own, body) = time_entry(n, true);
        let r = server.client.deliver(WS, ADDON, "NEW_TIME_ENTRY", &body);
        assert_eq!(r.status, 200, "{}", r.body);
        stored.push((own, r.json()["webhookId"].as_str().unwrap().to_string()));
    }
    server.kill();

    let server = LoggedServer::start(temp.path(), &args);
    // The start after the kill reads the allocator state the last commit saved: no walk of
    // the whole file, whose time would grow with the data.
    let repairs: Vec<&Value> = server
        .seen
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("repairing"))
        })
        .collect();
    assert!(repairs.is_empty(), "{repairs:?}");
    let all: Vec<String> = stored.iter().rev().map(|(_, id)| id.clone()).collect();
    assert_eq!(
        ids(&history(&server.client, WS, &format!("entity={USER}"))),
        all
    );
    assert_eq!(
        ids(&history(
            &server.client,
            WS,
            &format!("entity={}", stored[7].0)
        )),
        vec![stored[7].1.clone()]
    );
    let (_, body) = time_entry(7, true);
    let again = server.client.deliver(WS, ADDON, "NEW_TIME_ENTRY", &body);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["duplicate"], true);
    assert_eq!(again.json()["webhookId"], stored[7].1.as_str());
    // New events after the restart join the same history.
    let (_, body) = time_entry(20, true);
    let fresh = server
        .client
        .deliver(WS, ADDON, "NEW_TIME_ENTRY", &body)
        .json();
    assert!(wait_until(Duration::from_secs(5), || {
        ids(&history(&server.client, WS, &format!("entity={PROJECT}")))
            .first()
            .map(String::as_str)
            == fresh["webhookId"].as_str()
    }));
    drop(server);
}

/// `check --workspace WS` on `dir`: the rows of `table`.
fn workspace_rows(dir: &std::path::Path, table: &str) -> u64 {
    let stdout = succeeded(run_on(dir, &["check", "--workspace", WS]));
    let prefix = format!("workspace {WS} table {table}: ");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {table} line: {stdout}"))
        .parse()
        .unwrap()
}

/// Erasing a workspace takes its rows in the log of recent events (and so the entity index
/// rows rebuilt from them) with it.
#[test]
fn erasing_a_workspace_covers_the_entity_index() {
    let server = TestServer::start();
    server.install(WS, ADDON, UNREACHABLE_API);
    for n in 0..5 {
        let (_, body) = time_entry(n, true);
        assert_eq!(
            server.deliver(WS, ADDON, "NEW_TIME_ENTRY", &body).status,
            200
        );
    }
    let dir = server.stop();
    assert_eq!(workspace_rows(&dir, "recent_events"), 5);
    assert_eq!(
        workspace_rows(&dir, "entity_events"),
        0,
        "rows wait for a bucket"
    );
    succeeded(run_on(&dir, &["erase-workspace", WS]));
    for table in ["recent_events", "entity_events", "events"] {
        assert_eq!(workspace_rows(&dir, table), 0, "{table}");
    }
    let server = TestServer::start_in(&dir, |_| {});
    server.install(WS, ADDON, UNREACHABLE_API);
    assert!(ids(&history(&server, WS, &format!("entity={USER}"))).is_empty());
}

/// `check` reports used and free pages; `compact` refuses a file a server holds, and gives the
/// pages an erasure freed back to the file system.
#[test]
fn compact_gives_freed_space_back() {
    let server = TestServer::start();
    server.install(WS, ADDON, UNREACHABLE_API);
    for n in 0..300 {
        // Incompressible descriptions, so the events take real space.
        let noise: String = (0..1500)
            .map(|i| char::from(b'a' + ((n * 7919 + i * 104_729) % 26) as u8))
            .collect();
        let (_, body) = time_entry(n, true);
        let body = String::from_utf8(body)
            .unwrap()
            .replace(&format!("entry {n}"), &noise);
        assert_eq!(
            server
                .deliver(WS, ADDON, "NEW_TIME_ENTRY", body.as_bytes())
                .status,
            200
        );
    }
    let busy = run_on(&server.data_dir, &["compact"]);
    assert!(!busy.status.success());
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("stop it first"),
        "{busy:?}"
    );
    let dir = server.stop();
    succeeded(run_on(&dir, &["erase-workspace", WS]));
    let file = dir.join("clockify-studio.redb");
    let before = std::fs::metadata(&file).unwrap().len();
    let report = succeeded(run_on(&dir, &["check"]));
    let free: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("pages: "))
        .and_then(|l| l.split_once(" used, "))
        .and_then(|(_, rest)| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no pages line: {report}"))
        .parse()
        .unwrap();
    assert!(free > 0, "{report}");
    let out = succeeded(run_on(&dir, &["compact"]));
    assert!(out.contains("compacted"), "{out}");
    let after = std::fs::metadata(&file).unwrap().len();
    assert!(after < before, "{before} → {after}");
    succeeded(run_on(&dir, &["check"]));
}
