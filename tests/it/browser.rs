//! The web UI in headless Chromium: starts the real server, installs two workspaces (one
//! with 10,000 stored events for the timing figure), then runs tests/browser/ui.test.mjs
//! (playwright-core driving Debian's chromium) and requires it to pass.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

const WS: &str = "ws-browser";
const ADDON: &str = "addon-browser";
const PERF_WS: &str = "ws-browser-perf";
const PERF_EVENTS: usize = 10_000;
const CHROMIUM: &str = "/usr/bin/chromium";
/// The stand-in for Clockify's page that frames /ui (served by the script, never dialled).
const FRAME_ANCESTOR: &str = "http://clockify-parent.localhost:9";
/// Concurrent deliveries: each commit is durable, so throughput comes from group commit.
const DELIVERY_CONNECTIONS: usize = 64;

/// A user token with the claims the sidebar iframe receives, `ttl` seconds from expiry.
fn sidebar_token(workspace_id: &str, role: &str, theme: &str, ttl: i64) -> String {
    let mut claims = base_claims(workspace_id, ADDON);
    claims["user"] = json!("user-1");
    claims["workspaceRole"] = json!(role);
    claims["theme"] = json!(theme);
    claims["language"] = json!("EN");
    claims["exp"] = json!(now_secs() as i64 + ttl);
    sign(&claims)
}

/// What the browser test needs and is missing, if anything.
fn missing_prerequisites(dir: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("node is not installed".to_string());
    }
    if !Path::new(CHROMIUM).exists() {
        missing.push(format!("{CHROMIUM} is missing (apt-get install chromium)"));
    }
    if !dir.join("node_modules/playwright-core").is_dir()
        || !dir.join("node_modules/axe-core").is_dir()
    {
        missing.push(format!(
            "{}/node_modules is missing (npm ci in tests/browser)",
            dir.display()
        ));
    }
    missing
}

/// Stores `count` distinct events in `workspace_id` over parallel keep-alive connections.
fn deliver_many(server: &TestServer, workspace_id: &str, count: usize) {
    let token = webhook_token(workspace_id, ADDON);
    let next = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..DELIVERY_CONNECTIONS)
        .map(|_| {
            let (next, token) = (next.clone(), token.clone());
            let url = server.url("/webhooks/clockify/NEW_TIME_ENTRY");
            let workspace_id = workspace_id.to_string();
            std::thread::spawn(move || {
                let agent = agent();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let body = json!({
                        "id": format!("te-{i:05}"),
                        "description": format!("Time entry number {i}"),
                        "workspaceId": workspace_id,
                        "userId": "user-1",
                        "timeInterval": {"start": "2026-01-05T09:00:00Z", "end": "2026-01-05T10:30:00Z", "duration": "PT1H30M"},
                    });
                    let response = agent
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("clockify-signature", &token)
                        .header("clockify-webhook-event-type", "NEW_TIME_ENTRY")
                        .send(serde_json::to_vec(&body).unwrap())
                        .expect("delivery");
                    assert_eq!(response.status().as_u16(), 200);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("delivery thread");
    }
}

#[test]
fn the_ui_works_in_headless_chromium() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/browser");
    let missing = missing_prerequisites(&dir);
    if !missing.is_empty() {
        let why = missing.join("; ");
        if std::env::var_os("CI").is_some() {
            panic!("browser tests cannot run on CI: {why}");
        }
        skipped(
            "the_ui_works_in_headless_chromium",
            &format!("{why} (run scripts/dev-setup)"),
        );
        return;
    }

    // The explorer's calls (and the install's bootstrap) go to a fake Clockify.
    let fake = FakeClockify::start();
    // Tags named "fail …" are refused: the flow that makes them fails (the runs view retries it).
    fake.respond(|call| {
        (call.method == "POST"
            && call.path == format!("/api/v1/workspaces/{WS}/tags")
            && String::from_utf8_lossy(&call.body).contains("\"fail "))
        .then(|| (400, vec![], br#"{"message":"Tag name is taken"}"#.to_vec()))
    });
    fake.respond(|call| {
        (call.method == "GET" && call.path == format!("/api/v1/workspaces/{WS}/tags")).then(|| {
            (
                200,
                vec![],
                br#"[{"id":"tag-1","name":"Billable","archived":false}]"#.to_vec(),
            )
        })
    });
    // The destinations page's receiver: the first attempt of an event saying "flaky" fails,
    // so the page's retry and recover have something to send again.
    let receiver = FakeClockify::start();
    let failed_once = Arc::new(Mutex::new(HashSet::new()));
    receiver.respond(move |call| {
        let id = call.headers.get("webhook-id").cloned().unwrap_or_default();
        let flaky = String::from_utf8_lossy(&call.body).contains("flaky");
        Some(if flaky && failed_once.lock().unwrap().insert(id) {
            (500, vec![], b"receiver down".to_vec())
        } else {
            (200, vec![], br#"{"received":true}"#.to_vec())
        })
    });
    let temp = tempfile::tempdir().expect("temp dir");
    let host = fake.host.clone();
    let receiver_host = receiver.host.clone();
    let server = TestServer::start_in(temp.path(), move |c| {
        c.ui_frame_ancestors = vec![FRAME_ANCESTOR.to_string()];
        c.allow_api_hosts = vec![host];
        c.allow_destination_hosts = vec![receiver_host];
        // One attempt: a failure stays failed until the page retries it.
        c.destination_retry_schedule = vec![Duration::ZERO];
    });
    server.install(WS, ADDON, &fake.base);
    server.install(PERF_WS, ADDON, UNREACHABLE_API);
    for (i, event) in ["NEW_PROJECT", "NEW_CLIENT", "TIMER_STOPPED"]
        .iter()
        .enumerate()
    {
        let body =
            json!({"id": format!("seed-{i}"), "name": format!("Seed {event}"), "workspaceId": WS});
        let r = server.deliver(WS, ADDON, event, body.to_string().as_bytes());
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let started = Instant::now();
    deliver_many(&server, PERF_WS, PERF_EVENTS);
    let elapsed = started.elapsed();
    println!(
        "stored {PERF_EVENTS} events in {:.1} s ({:.0}/s over {DELIVERY_CONNECTIONS} connections)",
        elapsed.as_secs_f64(),
        PERF_EVENTS as f64 / elapsed.as_secs_f64()
    );

    let screenshots = root.join("target/screenshots");
    std::fs::create_dir_all(&screenshots).expect("screenshot dir");
    let output = Command::new("node")
        .arg("ui.test.mjs")
        .current_dir(&dir)
        .env("BASE", &server.base)
        .env("WORKSPACE_ID", WS)
        .env("ADMIN_TOKEN", sidebar_token(WS, "OWNER", "DEFAULT", 1800))
        .env(
            "MEMBER_TOKEN",
            sidebar_token(WS, "TEAM_MANAGER", "DEFAULT", 1800),
        )
        .env("DARK_TOKEN", sidebar_token(WS, "OWNER", "DARK", 1800))
        .env("EXPIRED_TOKEN", sidebar_token(WS, "OWNER", "DEFAULT", -60))
        // For tokens whose time left matters, minted by the script when it needs them.
        .env(
            "SIGNING_KEY",
            root.join("tests/fixtures/test-signing-key.pem"),
        )
        .env("ADDON_ID", ADDON)
        .env("WEBHOOK_TOKEN", webhook_token(WS, ADDON))
        .env(
            "PERF_TOKEN",
            sidebar_token(PERF_WS, "OWNER", "DEFAULT", 1800),
        )
        .env("SCREENSHOT_DIR", &screenshots)
        .env("FRAME_ANCESTOR", FRAME_ANCESTOR)
        .env("RECEIVER_URL", format!("{}/hook", receiver.base))
        .output()
        .expect("run node");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the browser tests failed ({})",
        output.status
    );
    // What the destinations page sent really reached the receiver, signed and with its header.
    let hooks: Vec<_> = receiver
        .calls()
        .into_iter()
        .filter(|c| c.method == "POST" && c.path == "/hook")
        .collect();
    let test_sends = hooks
        .iter()
        .filter(|c| {
            c.headers
                .get("webhook-id")
                .is_some_and(|id| id.starts_with("test_"))
        })
        .count();
    assert_eq!(test_sends, 1, "{hooks:#?}");
    let flaky: Vec<_> = hooks
        .iter()
        .filter(|c| String::from_utf8_lossy(&c.body).contains("flaky client"))
        .collect();
    assert_eq!(flaky.len(), 2, "a failed attempt and the retry: {flaky:#?}");
    assert_eq!(
        flaky[0].headers["webhook-id"],
        flaky[1].headers["webhook-id"]
    );
    assert!(
        hooks.iter().all(
            |c| c.headers.get("x-api-key").map(String::as_str) == Some("k-123")
                && c.headers["webhook-signature"].starts_with("v1,")
        ),
        "{hooks:#?}"
    );
}
