//! Destinations end to end: the real server forwards stored events to a fake receiver in
//! this process, which records every request. Signatures are checked with the Standard
//! Webhooks algorithm written out here (HMAC-SHA256 of `id.timestamp.body` under the
//! secret's bytes), not with the server's code. Retry schedules are milliseconds.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

use crate::support::*;

const WS: &str = "65b7a1f0c0ffee00000d0001";
const ADDON: &str = "addon-destinations";
const DEADLINE: Duration = Duration::from_secs(20);

fn ms(list: &[u64]) -> Vec<Duration> {
    list.iter().map(|m| Duration::from_millis(*m)).collect()
}

struct Env {
    receiver: FakeClockify,
    server: TestServer,
}

/// A server allowed to deliver to the fake receiver, with `schedule` (ms) as its retry
/// schedule, and the workspace installed (against no Clockify: nothing here calls it).
fn start(schedule: &[u64], tweak: impl FnOnce(&mut clockify_studio::config::Config)) -> Env {
    let receiver = FakeClockify::start();
    let host = receiver.host.clone();
    let schedule = ms(schedule);
    let server = TestServer::start_with(|c| {
        c.allow_destination_hosts = vec![host];
        c.destination_retry_schedule = schedule;
        tweak(c);
    });
    server.install(WS, ADDON, UNREACHABLE_API);
    Env { receiver, server }
}

fn admin(server: &TestClient, method: &str, path: &str, body: Option<&Value>) -> Response {
    server.api(method, WS, ADDON, "OWNER", path, body)
}

/// Creates a destination posting to `path` on the receiver; returns (id, secret).
fn create(env: &Env, path: &str, extra: Value) -> (String, String) {
    let mut body = json!({"name": "warehouse", "url": format!("{}{path}", env.receiver.base)});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = admin(&env.server, "POST", "/api/destinations", Some(&body));
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json();
    (
        created["id"].as_str().unwrap().to_string(),
        created["secret"].as_str().unwrap().to_string(),
    )
}

fn entry(id: &str) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"id": id, "workspaceId": WS, "description": "forwarded", "projectId": "p-1"}),
    )
    .unwrap()
}

fn deliver(env: &Env, event: &str, id: &str) -> Vec<u8> {
    let body = entry(id);
    let r = env.server.deliver(WS, ADDON, event, &body);
    assert_eq!(r.status, 200, "{}", r.body);
    body
}

fn posts(receiver: &FakeClockify, path: &str) -> Vec<RecordedCall> {
    receiver
        .calls()
        .into_iter()
        .filter(|c| c.method == "POST" && c.path == path)
        .collect()
}

fn deliveries(server: &TestClient, destination: &str, query: &str) -> Vec<Value> {
    let r = admin(
        server,
        "GET",
        &format!("/api/destinations/{destination}/deliveries{query}"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["items"].as_array().unwrap().clone()
}

/// Waits until the destination has `n` deliveries, none pending; returns them.
fn settled(env: &Env, destination: &str, n: usize) -> Vec<Value> {
    let mut last = Vec::new();
    let done = wait_until(DEADLINE, || {
        last = deliveries(&env.server, destination, "");
        last.len() == n && last.iter().all(|d| d["status"] != "pending")
    });
    assert!(done, "deliveries did not settle: {last:#?}");
    last
}

/// Asks for the destination's failed deliveries since `since` to be sent again; checks how
/// many were requeued.
fn recover(env: &Env, destination: &str, since: &str, requeued: u64) {
    let r = admin(
        &env.server,
        "POST",
        &format!("/api/destinations/{destination}/recover"),
        Some(&json!({"since": since})),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["requeued"], requeued);
}

/// The Standard Webhooks check, written out: one of the space-separated `v1,` signatures
/// is base64(HMAC-SHA256(secret bytes, "{id}.{timestamp}.{body}")).
pub(crate) fn signed_with(secret: &str, call: &RecordedCall) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .unwrap();
    let id = &call.headers["webhook-id"];
    let timestamp = &call.headers["webhook-timestamp"];
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&call.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    call.headers["webhook-signature"]
        .split(' ')
        .any(|s| s == expected)
}

/// An event id that names no event.
fn uuid_of_nothing() -> &'static str {
    "01900000-0000-7000-8000-000000000000"
}

#[test]
fn matching_events_are_forwarded_signed_with_the_event_body_and_logged() {
    let env = start(&[0, 20, 20], |_| {});
    let (id, secret) = create(
        &env,
        "/hook",
        json!({"filter": {"source": "clockify", "events": ["NEW_TIME_ENTRY"]},
               "headers": {"X-Api-Key": "k-123"}}),
    );
    assert!(secret.starts_with("whsec_"), "{secret}");
    // The secret is shown once; header values are masked.
    let read = admin(&env.server, "GET", &format!("/api/destinations/{id}"), None);
    assert_eq!(read.status, 200, "{}", read.body);
    assert!(read.json().get("secret").is_none(), "{}", read.body);
    assert_eq!(read.json()["headers"]["X-Api-Key"], "********");
    assert!(!read.body.contains("k-123"));
    // Members may not see or manage destinations.
    let member = env
        .server
        .api("GET", WS, ADDON, "USER", "/api/destinations", None);
    assert_eq!(member.status, 403, "{}", member.body);

    let body = deliver(&env, "NEW_TIME_ENTRY", "te-1");
    deliver(&env, "NEW_PROJECT", "pr-1"); // not in the filter
    let items = settled(&env, &id, 1);
    let calls = posts(&env.receiver, "/hook");
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let call = &calls[0];
    assert_eq!(call.body, body, "the event body, unchanged");
    assert_eq!(call.headers["content-type"], "application/json");
    assert_eq!(call.headers["x-api-key"], "k-123");
    assert_eq!(call.headers["webhook-id"], items[0]["id"].as_str().unwrap());
    let ts: u64 = call.headers["webhook-timestamp"].parse().unwrap();
    assert!(ts.abs_diff(now_secs()) < 60, "{ts}");
    assert!(signed_with(&secret, call), "{:?}", call.headers);
    assert!(!signed_with(
        "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        call
    ));
    assert_eq!(items[0]["status"], "delivered");
    assert_eq!(items[0]["eventType"], "NEW_TIME_ENTRY");
    assert_eq!(items[0]["attempts"][0]["status"], 200);
    assert_eq!(items[0]["attempts"][0]["response"], "{}");
    // The stored event the delivery carried.
    let event = admin(
        &env.server,
        "GET",
        &format!("/api/webhooks/{}", items[0]["webhookId"].as_str().unwrap()),
        None,
    );
    assert_eq!(event.status, 200, "{}", event.body);
    assert_eq!(
        deliveries(&env.server, &id, "?status=failed").len(),
        0,
        "status filter"
    );
    let by_event = format!(
        "?status=delivered&webhookId={}",
        items[0]["webhookId"].as_str().unwrap()
    );
    assert_eq!(
        deliveries(&env.server, &id, &by_event).len(),
        1,
        "event filter"
    );
    let other = format!("?webhookId={}", uuid_of_nothing());
    assert_eq!(
        deliveries(&env.server, &id, &other).len(),
        0,
        "event filter"
    );
    assert!(
        env.server.metric(
            "destination_attempts_total",
            &[&format!("destination=\"{id}\""), "result=\"2xx\""]
        ) >= 1.0
    );
}

/// `studio` (the server's own notifications) is a source a filter may name, like
/// `clockify`; a source that is neither nor one of the workspace's is still refused.
#[test]
fn the_studio_source_is_accepted_and_an_unknown_source_refused() {
    let env = start(&[0], |_| {});
    let (id, _) = create(
        &env,
        "/studio",
        json!({"filter": {"source": "studio", "events": ["FLOW_AUTO_DISABLED"]}}),
    );
    let read = admin(&env.server, "GET", &format!("/api/destinations/{id}"), None);
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.json()["filter"]["source"], "studio");
    for source in [
        "no-such-source",
        "Studio",
        "0190e6d0000070008000000000000001",
    ] {
        let r = admin(
            &env.server,
            "POST",
            "/api/destinations",
            Some(
                &json!({"name": "x", "url": format!("{}/x", env.receiver.base),
                         "filter": {"source": source}}),
            ),
        );
        assert_eq!(r.status, 400, "{source}: {}", r.body);
        assert!(
            r.problems().iter().any(|p| p.starts_with("filter.source")),
            "{}",
            r.body
        );
    }
}

#[test]
fn conditions_and_templates_shape_what_is_sent() {
    let env = start(&[0], |_| {});
    let (id, _) = create(
        &env,
        "/slack",
        json!({"filter": {"events": ["NEW_TIME_ENTRY"], "conditions": {"mode": "all",
                 "rules": [{"path": "$.projectId", "op": "eq", "value": "p-1"}]}},
               "template": "{\"text\": \"{{ event.description }} in {{ workspaceId }}\"}"}),
    );
    deliver(&env, "NEW_TIME_ENTRY", "te-1");
    let other = serde_json::to_vec(&json!({"id": "te-2", "projectId": "p-2"})).unwrap();
    assert_eq!(
        env.server
            .deliver(WS, ADDON, "NEW_TIME_ENTRY", &other)
            .status,
        200
    );
    settled(&env, &id, 1);
    let calls = posts(&env.receiver, "/slack");
    assert_eq!(calls.len(), 1, "only the event passing the conditions");
    let sent: Value = serde_json::from_slice(&calls[0].body).unwrap();
    assert_eq!(sent, json!({"text": format!("forwarded in {WS}")}));
    // A bad condition or template is refused with every problem listed.
    let bad = admin(
        &env.server,
        "POST",
        "/api/destinations",
        Some(
            &json!({"name": "", "url": "ftp://x", "template": "{{ broken",
            "filter": {"conditions": {"mode": "some"}}, "headers": {"webhook-id": "x"}}),
        ),
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    let problems = bad.problems();
    for field in [
        "name",
        "url",
        "template",
        "filter.conditions.mode",
        "headers.webhook-id",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(field)),
            "{field}: {problems:?}"
        );
    }
}

#[test]
fn a_failing_receiver_is_retried_with_the_same_webhook_id_until_it_recovers() {
    let env = start(&[0, 30, 30, 30, 30], |c| {
        c.destination_timeout = Duration::from_secs(1)
    });
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    // 500, then no answer within the timeout (held below), then 200.
    env.receiver.respond(move |c| {
        (c.path == "/flaky").then(|| match counter.fetch_add(1, Ordering::SeqCst) {
            0 => (500, vec![], b"boom".to_vec()),
            _ => (200, vec![], b"ok".to_vec()),
        })
    });
    let _held = env.receiver.hold_first(|c| c.path == "/flaky");
    let (id, _) = create(&env, "/flaky", json!({}));
    deliver(&env, "NEW_TIME_ENTRY", "te-1");
    let items = settled(&env, &id, 1);
    let attempts = items[0]["attempts"].as_array().unwrap();
    assert_eq!(items[0]["status"], "delivered", "{items:#?}");
    assert_eq!(attempts.len(), 3, "{attempts:#?}");
    assert!(
        attempts[0]["status"].is_null(),
        "timed out: {}",
        attempts[0]
    );
    assert!(
        attempts[0]["response"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("timeout"),
        "{}",
        attempts[0]
    );
    assert_eq!(attempts[1]["status"], 500);
    assert_eq!(attempts[1]["response"], "boom");
    assert_eq!(attempts[2]["status"], 200);
    let calls = posts(&env.receiver, "/flaky");
    assert_eq!(calls.len(), 3);
    let ids: Vec<&String> = calls.iter().map(|c| &c.headers["webhook-id"]).collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "stable across retries: {ids:?}"
    );
    assert!(
        env.server.metric(
            "destination_failures_total",
            &[&format!("destination=\"{id}\"")]
        ) >= 2.0
    );
}

#[test]
fn retry_after_on_429_is_honoured() {
    let env = start(&[0, 10, 10], |_| {});
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    env.receiver.respond(move |c| {
        (c.path == "/busy").then(|| match counter.fetch_add(1, Ordering::SeqCst) {
            0 => (429, vec![("retry-after".into(), "1".into())], vec![]),
            _ => (200, vec![], vec![]),
        })
    });
    let (id, _) = create(&env, "/busy", json!({}));
    deliver(&env, "NEW_TIME_ENTRY", "te-1");
    let items = settled(&env, &id, 1);
    assert_eq!(items[0]["status"], "delivered");
    let at = |i: usize| {
        let text = items[0]["attempts"][i]["at"].as_str().unwrap();
        text.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    };
    assert!(
        at(1) - at(0) >= 950,
        "waited {} ms, not the 1 s asked",
        at(1) - at(0)
    );
}

#[test]
fn gone_disables_the_destination_and_no_more_events_are_queued() {
    let env = start(&[0, 10, 10], |_| {});
    env.receiver
        .respond(|c| (c.path == "/gone").then(|| (410, vec![], vec![])));
    let (id, _) = create(&env, "/gone", json!({}));
    deliver(&env, "NEW_TIME_ENTRY", "te-1");
    let items = settled(&env, &id, 1);
    assert_eq!(items[0]["status"], "failed");
    assert_eq!(
        items[0]["attempts"].as_array().unwrap().len(),
        1,
        "not retried"
    );
    // The delivery's outcome is committed just before the destination is disabled.
    let mut destination = Value::Null;
    let disabled = wait_until(DEADLINE, || {
        destination = admin(&env.server, "GET", &format!("/api/destinations/{id}"), None).json();
        destination["enabled"] == false
    });
    assert!(disabled, "{destination}");
    assert!(
        destination["disabledReason"]
            .as_str()
            .unwrap()
            .contains("410"),
        "{destination}"
    );
    deliver(&env, "NEW_TIME_ENTRY", "te-2");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(deliveries(&env.server, &id, "").len(), 1);
    assert_eq!(posts(&env.receiver, "/gone").len(), 1);
}

#[test]
fn a_destination_failing_for_longer_than_allowed_is_disabled() {
    let env = start(&[0, 10, 10, 10], |c| {
        c.destination_disable_after = Duration::from_millis(1)
    });
    env.receiver
        .respond(|c| (c.path == "/down").then(|| (503, vec![], vec![])));
    let (id, _) = create(&env, "/down", json!({}));
    deliver(&env, "NEW_TIME_ENTRY", "te-1");
    let mut destination = Value::Null;
    let disabled = wait_until(DEADLINE, || {
        destination = admin(&env.server, "GET", &format!("/api/destinations/{id}"), None).json();
        destination["enabled"] == false
    });
    assert!(disabled, "{destination}");
    assert!(
        destination["disabledReason"]
            .as_str()
            .unwrap()
            .contains("failed since"),
        "{destination}"
    );
    let items = settled(&env, &id, 1);
    assert_eq!(items[0]["status"], "failed");
    // Enabling it again clears the failure state.
    let enabled = admin(
        &env.server,
        "PUT",
        &format!("/api/destinations/{id}"),
        Some(
            &json!({"name": "again", "url": format!("{}/down", env.receiver.base), "enabled": true}),
        ),
    );
    assert_eq!(enabled.status, 200, "{}", enabled.body);
    assert_eq!(enabled.json()["enabled"], true);
    assert!(enabled.json()["disabledReason"].is_null());
    assert!(enabled.json()["failingSince"].is_null());
}

#[test]
fn redirects_are_not_followed() {
    let env = start(&[0, 10], |_| {});
    let target = format!("{}/elsewhere", env.receiver.base);
    env.receiver.respond(move |c| {
        (c.path == "/moved").then(|| (302, vec![("location".into(), target.clone())], vec![]))
    });
    let (id, _) = create(&env, "/moved", json!({}));
    deliver(&env, "NEW_TIME_ENTRY", "te-1");
    let items = settled(&env, &id, 1);
    assert_eq!(items[0]["status"], "failed");
    assert_eq!(items[0]["attempts"][0]["status"], 302);
    assert_eq!(posts(&env.receiver, "/moved").len(), 2);
    assert!(
        env.receiver.calls().iter().all(|c| c.path != "/elsewhere"),
        "the redirect was followed"
    );
}

#[test]
fn internal_addresses_and_plain_http_are_refused_unless_allowed() {
    let env = start(&[0], |_| {});
    let port = env.receiver.host.rsplit(':').next().unwrap().to_string();
    for (url, why) in [
        (format!("http://127.0.0.2:{port}/x"), "https"),
        (
            format!("https://127.0.0.1:{}/x", port.parse::<u16>().unwrap() + 1),
            "internal",
        ),
        ("https://10.0.0.8/x".to_string(), "internal"),
        ("https://[::1]/x".to_string(), "internal"),
        ("https://169.254.169.254/latest".to_string(), "internal"),
    ] {
        let r = admin(
            &env.server,
            "POST",
            "/api/destinations",
            Some(&json!({"name": "n", "url": url})),
        );
        assert_eq!(r.status, 400, "{url}: {}", r.body);
        assert!(
            r.problems()
                .iter()
                .any(|p| p.starts_with("url") && p.contains(why)),
            "{url}: {:?}",
            r.problems()
        );
    }
    // A name is resolved when sending: one that points at loopback is refused then.
    let (id, _) = {
        let r = admin(
            &env.server,
            "POST",
            "/api/destinations",
            Some(&json!({"name": "n", "url": format!("https://localhost:{port}/x")})),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        (r.json()["id"].as_str().unwrap().to_string(), ())
    };
    deliver(&env, "NEW_TIME_ENTRY", "te-1");
    let items = settled(&env, &id, 1);
    assert_eq!(items[0]["status"], "failed");
    let response = items[0]["attempts"][0]["response"].as_str().unwrap();
    assert!(response.contains("internal addresses"), "{response}");
    assert!(env.receiver.calls().is_empty());
    // The test button reports the same.
    let test = admin(
        &env.server,
        "POST",
        &format!("/api/destinations/{id}/test"),
        None,
    );
    assert_eq!(test.status, 200, "{}", test.body);
    assert_eq!(test.json()["ok"], false);
    assert!(
        test.json()["response"]
            .as_str()
            .unwrap()
            .contains("internal")
    );
}

#[test]
fn manual_retry_recover_and_the_test_button() {
    let env = start(&[0], |_| {});
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = down.clone();
    env.receiver.respond(move |c| {
        (c.path == "/later" && flag.load(Ordering::SeqCst)).then(|| (500, vec![], vec![]))
    });
    let (id, secret) = create(&env, "/later", json!({}));
    let before = jiff::Timestamp::now().to_string();
    for i in 0..3 {
        deliver(&env, "NEW_TIME_ENTRY", &format!("te-{i}"));
    }
    let items = settled(&env, &id, 3);
    assert!(items.iter().all(|d| d["status"] == "failed"), "{items:#?}");
    down.store(false, Ordering::SeqCst);
    // One by hand.
    let one = items[0]["id"].as_str().unwrap();
    let r = admin(
        &env.server,
        "POST",
        &format!("/api/deliveries/{one}/retry"),
        None,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(wait_until(DEADLINE, || deliveries(
        &env.server,
        &id,
        "?status=delivered"
    )
    .len()
        == 1));
    // The rest since a time.
    recover(&env, &id, &before, 2);
    let items = settled(&env, &id, 3);
    assert!(
        items.iter().all(|d| d["status"] == "delivered"),
        "{items:#?}"
    );
    assert_eq!(items[0]["attempts"].as_array().unwrap().len(), 2);
    let bad = admin(
        &env.server,
        "POST",
        &format!("/api/destinations/{id}/recover"),
        Some(&json!({"since": "yesterday"})),
    );
    assert_eq!(bad.status, 400);
    // The test button: a signed test event, the receiver's answer shown.
    let test = admin(
        &env.server,
        "POST",
        &format!("/api/destinations/{id}/test"),
        None,
    );
    assert_eq!(test.status, 200, "{}", test.body);
    assert_eq!(test.json()["ok"], true, "{}", test.body);
    assert_eq!(test.json()["status"], 200);
    let sent = posts(&env.receiver, "/later");
    let last = sent.last().unwrap();
    assert!(signed_with(&secret, last));
    assert!(String::from_utf8_lossy(&last.body).contains("clockify-studio.test"));
}

/// Deliveries that come due together go out as one run per destination; a run stops at its
/// first attempt without a 2xx, and the rest are sent on their own: none is lost, none gets
/// an attempt it did not have, and the failed one keeps its own log.
#[test]
fn a_run_that_meets_a_failing_attempt_leaves_the_rest_to_be_sent_on_their_own() {
    let env = start(&[0], |c| c.destination_concurrency = 8);
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let after_recovery = Arc::new(AtomicUsize::new(0));
    let (flag, counter) = (down.clone(), after_recovery.clone());
    env.receiver.respond(move |c| {
        if c.path != "/runs" {
            return None;
        }
        if flag.load(Ordering::SeqCst) {
            return Some((500, vec![], vec![]));
        }
        // The third request after the recovery fails (the first is the healthy one's).
        match counter.fetch_add(1, Ordering::SeqCst) {
            3 => Some((503, vec![], b"busy".to_vec())),
            _ => None,
        }
    });
    let (id, secret) = create(&env, "/runs", json!({}));
    let before = jiff::Timestamp::now().to_string();
    for i in 0..12 {
        deliver(&env, "NEW_TIME_ENTRY", &format!("te-{i}"));
    }
    let items = settled(&env, &id, 12);
    assert!(items.iter().all(|d| d["status"] == "failed"), "{items:#?}");
    let sent_before = posts(&env.receiver, "/runs").len();
    assert_eq!(sent_before, 12);
    down.store(false, Ordering::SeqCst);
    // A delivery that succeeds: the destination is healthy again, so its deliveries go out
    // in runs.
    deliver(&env, "NEW_TIME_ENTRY", "te-healthy");
    let items = settled(&env, &id, 13);
    assert_eq!(
        items.iter().filter(|d| d["status"] == "delivered").count(),
        1
    );
    let sent_before = sent_before + 1;
    // Recovery queues all twelve failed ones in one commit: they come due together.
    recover(&env, &id, &before, 12);
    let items = settled(&env, &id, 13);
    let failed: Vec<&Value> = items.iter().filter(|d| d["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{items:#?}");
    let attempts = failed[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!(attempts[1]["status"], 503);
    assert_eq!(attempts[1]["response"], "busy");
    let recovered: Vec<&Value> = items
        .iter()
        .filter(|d| d["status"] == "delivered" && d["attempts"].as_array().unwrap().len() > 1)
        .collect();
    assert_eq!(recovered.len(), 11, "{items:#?}");
    for delivered in recovered {
        let attempts = delivered["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2, "one failure, one success: {delivered:#}");
        assert_eq!(attempts[1]["status"], 200);
    }
    // One request per delivery after the recovery, each signed, each its own webhook-id.
    let sent = posts(&env.receiver, "/runs");
    assert_eq!(sent.len() - sent_before, 12, "{}", sent.len());
    let recovered = &sent[sent_before..];
    assert!(recovered.iter().all(|c| signed_with(&secret, c)));
    let mut ids: Vec<&String> = recovered.iter().map(|c| &c.headers["webhook-id"]).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12);
}

/// An https destination is spoken to in TLS, also on an allowed internal host: pointed at a
/// plain HTTP receiver, the handshake fails and the receiver never reads the event in clear.
#[test]
fn https_destinations_speak_tls_and_send_nothing_in_clear() {
    let env = start(&[0], |_| {});
    let url = format!("https://{}/tls", env.receiver.host);
    let r = admin(
        &env.server,
        "POST",
        "/api/destinations",
        Some(&json!({"name": "tls", "url": url})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    deliver(&env, "NEW_TIME_ENTRY", "te-tls");
    let items = settled(&env, &id, 1);
    assert_eq!(items[0]["status"], "failed", "{items:#?}");
    let attempt = &items[0]["attempts"][0];
    assert!(attempt["status"].is_null(), "{attempt}");
    let response = attempt["response"].as_str().unwrap().to_lowercase();
    assert!(
        ["tls", "handshake", "corrupt", "invalid"]
            .iter()
            .any(|word| response.contains(word)),
        "{response}"
    );
    assert!(
        env.receiver
            .calls()
            .iter()
            .all(|c| !String::from_utf8_lossy(&c.body).contains("te-tls")),
        "the event reached the receiver in clear"
    );
}

#[test]
fn a_rotated_secret_signs_beside_the_new_one_for_the_overlap() {
    let env = start(&[0], |_| {});
    let (id, old) = create(&env, "/rotate", json!({}));
    let r = admin(
        &env.server,
        "POST",
        &format!("/api/destinations/{id}/rotate-secret"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let new = r.json()["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert!(
        r.json()["previousSecretValidUntil"].is_string(),
        "{}",
        r.body
    );
    deliver(&env, "NEW_TIME_ENTRY", "te-1");
    settled(&env, &id, 1);
    let call = &posts(&env.receiver, "/rotate")[0];
    assert!(
        signed_with(&old, call) && signed_with(&new, call),
        "{:?}",
        call.headers
    );
    // Deleting removes it and its deliveries.
    let r = admin(
        &env.server,
        "DELETE",
        &format!("/api/destinations/{id}"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = admin(
        &env.server,
        "GET",
        &format!("/api/destinations/{id}/deliveries"),
        None,
    );
    assert_eq!(r.status, 404);
}

#[test]
fn erasing_the_workspace_erases_its_destinations_and_deliveries() {
    let env = start(&[0], |_| {});
    let (id, _) = create(&env, "/erase", json!({}));
    deliver(&env, "NEW_TIME_ENTRY", "te-1");
    settled(&env, &id, 1);
    let Env { receiver, server } = env;
    let dir = server.stop();
    let rows = |stdout: &str| -> HashMap<String, u64> {
        stdout
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("workspace {WS} table ")))
            .filter_map(|l| l.split_once(": "))
            .map(|(t, n)| (t.to_string(), n.parse().unwrap()))
            .collect()
    };
    let before = rows(&succeeded(run_on(&dir, &["check", "--workspace", WS])));
    assert_eq!(before["destinations"], 1, "{before:?}");
    assert_eq!(before["deliveries"], 1, "{before:?}");
    assert_eq!(before["deliveries_by_destination"], 1, "{before:?}");
    succeeded(run_on(&dir, &["erase-workspace", WS]));
    let after = rows(&succeeded(run_on(&dir, &["check", "--workspace", WS])));
    assert!(after.values().all(|n| *n == 0), "{after:?}");
    drop(receiver);
}

// --- Crash safety: the real binary, killed with SIGKILL while a delivery is in flight. ---

fn spawn_destination_server(data_dir: &std::path::Path, receiver_host: &str) -> ChildServer {
    let mut command = ChildServer::command(data_dir);
    command.args([
        "--allow-destination-host",
        receiver_host,
        "--destination-retry-schedule",
        "0s,50ms,50ms",
    ]);
    ChildServer::start(command)
}

#[test]
fn a_killed_server_delivers_every_acknowledged_event_after_restart() {
    let receiver = FakeClockify::start();
    // The first attempt is answered only once the server is dead.
    let release = receiver.hold_first(|c| c.path == "/crash");
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_destination_server(dir.path(), &receiver.host);
    server.client.install(WS, ADDON, UNREACHABLE_API);
    let r = server.client.api(
        "POST",
        WS,
        ADDON,
        "OWNER",
        "/api/destinations",
        Some(&json!({"name": "crash", "url": format!("{}/crash", receiver.base)})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let mut bodies = Vec::new();
    for i in 0..5 {
        let body = entry(&format!("te-{i}"));
        let r = server.client.deliver(WS, ADDON, "NEW_TIME_ENTRY", &body);
        assert_eq!(r.status, 200, "{}", r.body);
        bodies.push(body);
    }
    assert!(
        wait_until(DEADLINE, || !posts(&receiver, "/crash").is_empty()),
        "no attempt started"
    );
    server.kill();
    drop(release);
    let started = Instant::now();
    let server = spawn_destination_server(dir.path(), &receiver.host);
    let mut items = Vec::new();
    let done = wait_until(DEADLINE, || {
        items = deliveries(&server.client, &id, "");
        items.len() == 5 && items.iter().all(|d| d["status"] == "delivered")
    });
    assert!(done, "not all delivered after the restart: {items:#?}");
    // Every acknowledged event reached the receiver; a resend carries the same webhook-id.
    let calls = posts(&receiver, "/crash");
    for body in &bodies {
        let ids: Vec<&String> = calls
            .iter()
            .filter(|c| &c.body == body)
            .map(|c| &c.headers["webhook-id"])
            .collect();
        assert!(!ids.is_empty(), "an event was lost");
        assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    }
    assert!(started.elapsed() < DEADLINE);
}
