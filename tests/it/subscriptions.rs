//! Receiving every event type: non-manifest events are registered through the fake
//! Clockify's webhooks API and kept reconciled.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

const WS: &str = "ws-subs";
const ADDON: &str = "addon-s";

#[derive(Clone, Debug)]
struct Hook {
    id: String,
    url: String,
    event: String,
    token: String,
}

/// A stateful stand-in for Clockify's webhooks API on the fake server.
#[derive(Clone)]
struct FakeWebhooks {
    hooks: Arc<Mutex<Vec<Hook>>>,
    cap: usize,
}

impl FakeWebhooks {
    fn install(fake: &FakeClockify, cap: usize) -> FakeWebhooks {
        let state = FakeWebhooks {
            hooks: Arc::default(),
            cap,
        };
        let s = state.clone();
        let events: Vec<String> = std::fs::read_to_string(fixture("webhook-events.txt"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let base = format!("/api/v1/workspaces/{WS}/webhooks");
        fake.respond(move |call| {
            let mut hooks = s.hooks.lock().unwrap();
            let dto = |h: &Hook| json!({"id": h.id, "url": h.url, "webhookEvent": h.event, "authToken": h.token,
                "workspaceId": WS, "enabled": true, "triggerSourceType": "WORKSPACE_ID", "triggerSource": [WS]});
            let reply = |status: u16, body: Value| Some((status, vec![], serde_json::to_vec(&body).unwrap()));
            match (call.method.as_str(), call.path.as_str()) {
                ("GET", p) if p == base => reply(200, json!({"webhooks": hooks.iter().map(dto).collect::<Vec<_>>(), "workspaceWebhookCount": hooks.len()})),
                ("POST", p) if p == base => {
                    let body: Value = serde_json::from_slice(&call.body).unwrap();
                    // Validate against CreateWebhookRequestV1.
                    let name = body["name"].as_str().unwrap_or("");
                    assert!((2..=30).contains(&name.chars().count()), "name length: {name}");
                    let event = body["webhookEvent"].as_str().unwrap().to_string();
                    assert!(events.contains(&event), "unknown event {event}");
                    assert_eq!(body["triggerSourceType"], "WORKSPACE_ID");
                    assert_eq!(body["triggerSource"], json!([WS]));
                    let url = body["url"].as_str().unwrap().to_string();
                    assert!(url.ends_with(&format!("/webhooks/clockify/{event}")), "{url}");
                    if hooks.len() >= s.cap {
                        return reply(400, json!({"message": "Webhook limit exceeded for this workspace", "code": 501}));
                    }
                    let id = format!("wh{:04}", hooks.len() + 1000 + rand_suffix());
                    let hook = Hook { token: format!("opaque-token-{id}"), id, url, event };
                    let body = dto(&hook);
                    hooks.push(hook);
                    reply(201, body)
                }
                ("DELETE", p) if p.starts_with(&format!("{base}/")) => {
                    let id = &p[base.len() + 1..];
                    let before = hooks.len();
                    hooks.retain(|h| h.id != id);
                    if hooks.len() < before { reply(200, json!({})) } else { reply(404, json!({"message": "not found"})) }
                }
                _ => None,
            }
        });
        state
    }

    fn events(&self) -> Vec<String> {
        let mut e: Vec<String> = self
            .hooks
            .lock()
            .unwrap()
            .iter()
            .map(|h| h.event.clone())
            .collect();
        e.sort();
        e
    }

    fn remove_event(&self, event: &str) {
        self.hooks.lock().unwrap().retain(|h| h.event != event);
    }

    fn token_for(&self, event: &str) -> String {
        self.hooks
            .lock()
            .unwrap()
            .iter()
            .find(|h| h.event == event)
            .unwrap()
            .token
            .clone()
    }
}

fn rand_suffix() -> usize {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}

fn start(cap: usize) -> (TestServer, FakeClockify, FakeWebhooks) {
    let fake = FakeClockify::start();
    let hooks = FakeWebhooks::install(&fake, cap);
    let host = fake.host.clone();
    let server = TestServer::start_with(move |c| c.allow_api_hosts = vec![host]);
    (server, fake, hooks)
}

fn summary(server: &TestServer) -> Value {
    let r = server.admin_get(WS, ADDON, "/api/subscriptions");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn posts(fake: &FakeClockify) -> usize {
    fake.calls()
        .iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/webhooks"))
        .count()
}

#[test]
fn install_registers_every_non_manifest_event_once() {
    let (server, fake, hooks) = start(100);
    server.install(WS, ADDON, &fake.base);
    assert!(
        wait_until(
            Duration::from_secs(30),
            || summary(&server)["summary"]["registered"] == 40
        ),
        "{}",
        summary(&server)
    );
    let report = summary(&server);
    assert_eq!(report["summary"]["manifest"], 10);
    assert_eq!(report["summary"]["failed"], 0);
    let events = hooks.events();
    let mut distinct = events.clone();
    distinct.dedup();
    assert_eq!(events.len(), 40);
    assert_eq!(distinct.len(), 40, "no duplicates");
    // Every call carried the installation token.
    assert!(fake.calls().iter().all(|c| {
        c.headers
            .get("x-addon-token")
            .is_some_and(|t| t.split('.').count() == 3)
    }));

    // A delivery signed with a registered webhook's (opaque) token verifies.
    let token = hooks.token_for("TIME_ENTRY_SPLIT");
    let r = server.post(
        "/webhooks/clockify/TIME_ENTRY_SPLIT",
        &[("clockify-signature", &token)],
        br#"{"id":"split"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // Syncing again (or a reinstall's sync) creates nothing new.
    let before = posts(&fake);
    let r = server.api("POST", WS, ADDON, "OWNER", "/api/subscriptions/sync", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(posts(&fake), before);
    assert_eq!(hooks.events().len(), 40);

    // A webhook removed in Clockify is re-created.
    hooks.remove_event("EXPENSE_CREATED");
    let r = server.api("POST", WS, ADDON, "OWNER", "/api/subscriptions/sync", None);
    assert_eq!(r.json()["summary"]["registered"], 40);
    assert_eq!(posts(&fake), before + 1);
    assert!(hooks.events().contains(&"EXPENSE_CREATED".to_string()));
    // Only admins may sync.
    assert_eq!(
        server
            .api(
                "POST",
                WS,
                ADDON,
                "TEAM_MANAGER",
                "/api/subscriptions/sync",
                None
            )
            .status,
        403
    );
}

#[test]
fn unwanted_events_are_removed_and_uninstall_deletes_ours() {
    let (server, fake, hooks) = start(100);
    server.install(WS, ADDON, &fake.base);
    assert!(wait_until(Duration::from_secs(30), || hooks.events().len() == 40));
    let r = server.lifecycle(
        "settings-updated",
        &json!({"addonId": ADDON, "workspaceId": WS, "settings": [
            {"id": "subscribed_events", "value": ["NEW_TIME_ENTRY", "EXPENSE_CREATED", "TIME_ENTRY_SPLIT"]}
        ]}),
    );
    assert_eq!(r.status, 200);
    // The sync stores its report after its last call to Clockify: wait for both.
    assert!(
        wait_until(Duration::from_secs(30), || {
            hooks.events() == ["EXPENSE_CREATED", "TIME_ENTRY_SPLIT"]
                && summary(&server)["summary"]["registered"] == 2
        }),
        "{:?}",
        hooks.events()
    );
    let report = summary(&server);
    assert_eq!(report["summary"]["registered"], 2);
    assert_eq!(report["summary"]["manifest"], 1);
    assert_eq!(report["summary"]["notSubscribed"], 47);
    server.lifecycle("deleted", &json!({"addonId": ADDON, "workspaceId": WS}));
    assert!(
        wait_until(Duration::from_secs(30), || hooks.events().is_empty()),
        "{:?}",
        hooks.events()
    );
}

#[test]
fn a_cap_error_stops_cleanly_and_is_reported_per_event() {
    let (server, fake, hooks) = start(12);
    server.install(WS, ADDON, &fake.base);
    assert!(wait_until(Duration::from_secs(30), || {
        summary(&server)["syncedAt"].is_string()
    }));
    let report = summary(&server);
    assert_eq!(report["summary"]["registered"], 12);
    assert_eq!(report["summary"]["failed"], 28);
    let failed: Vec<&Value> = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["state"] == "failed")
        .collect();
    assert!(
        failed
            .iter()
            .all(|e| e["reason"].as_str().unwrap().contains("limit")),
        "{failed:?}"
    );
    // It stopped at the first refusal instead of trying every remaining event.
    assert_eq!(posts(&fake), 13);
    assert_eq!(hooks.events().len(), 12);
}
