//! Receiving Clockify webhooks: every sample, every rejection, dedupe, durability.

use serde_json::{Value, json};

use crate::support::*;

const WS: &str = "65b7a1f0c0ffee0000000001";
const ADDON: &str = "addon-wh";

#[test]
fn every_sample_is_accepted_and_read_back_byte_identical() {
    let server = TestServer::start();
    let samples = webhook_samples();
    assert_eq!(samples.len(), 49, "assets/samples holds 49 samples");
    let mut installed = std::collections::HashSet::new();
    for (event, bytes) in &samples {
        let payload: Value = serde_json::from_slice(bytes).unwrap();
        // A payload's own workspaceId must match the signature's, so sign for it.
        let ws = payload["workspaceId"].as_str().unwrap_or(WS).to_string();
        if installed.insert(ws.clone()) {
            server.install(&ws, ADDON, UNREACHABLE_API);
        }
        let r = server.deliver(&ws, ADDON, event, bytes);
        assert_eq!(r.status, 200, "{event}: {}", r.body);
        let body = r.json();
        assert_eq!(body["status"], "received");
        assert_eq!(body["duplicate"], false);
        let id = body["webhookId"].as_str().unwrap().to_string();
        let raw = server.admin_get(&ws, ADDON, &format!("/api/webhooks/{id}/raw"));
        assert_eq!(raw.status, 200);
        assert_eq!(
            raw.body.as_bytes(),
            bytes.as_slice(),
            "{event} not byte-identical"
        );
        let detail = server
            .admin_get(&ws, ADDON, &format!("/api/webhooks/{id}"))
            .json();
        assert_eq!(detail["eventType"], event.as_str());
        assert_eq!(detail["source"], "clockify");
        assert_eq!(detail["body"], payload);
    }
}

#[test]
fn the_bare_path_needs_the_event_header_and_the_header_must_match_the_path() {
    let server = TestServer::start();
    server.install(WS, ADDON, UNREACHABLE_API);
    let token = webhook_token(WS, ADDON);
    let body = br#"{"id":"t1","workspaceId":"65b7a1f0c0ffee0000000001"}"#;
    let r = server.post(
        "/webhooks/clockify",
        &[("clockify-signature", &token)],
        body,
    );
    assert_eq!(r.status, 400);
    assert!(r.error().contains("clockify-webhook-event-type"));
    let r = server.post(
        "/webhooks/clockify",
        &[
            ("clockify-signature", &token),
            ("clockify-webhook-event-type", "NEW_TAG"),
        ],
        body,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = server.post(
        "/webhooks/clockify/NEW_TAG",
        &[
            ("clockify-signature", &token),
            ("clockify-webhook-event-type", "NEW_CLIENT"),
        ],
        body,
    );
    assert_eq!(r.status, 400);
    assert!(r.error().contains("NEW_CLIENT"));
    let r = server.deliver(WS, ADDON, "NOT_AN_EVENT", body);
    assert_eq!(r.status, 400);
    assert!(r.error().contains("NOT_AN_EVENT"));
    assert_eq!(count_events(&server, WS, ADDON), 1);
}

#[test]
fn rejected_deliveries_store_nothing_and_are_counted() {
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(temp.path(), |c| c.webhook_body_limit = 64 * 1024);
    server.install(WS, ADDON, UNREACHABLE_API);
    server.install("ws-inactive", ADDON, UNREACHABLE_API);
    server.lifecycle(
        "status-changed",
        &json!({"addonId": ADDON, "workspaceId": "ws-inactive", "status": "INACTIVE"}),
    );
    server.install("ws-deleted", ADDON, UNREACHABLE_API);
    server.lifecycle(
        "deleted",
        &json!({"addonId": ADDON, "workspaceId": "ws-deleted"}),
    );
    let before = server.metric("webhook_rejections_total", &["source=\"clockify\""]);
    let body = br#"{"id":"x","workspaceId":"65b7a1f0c0ffee0000000001"}"#;
    let post = |sig: Option<&str>, body: &[u8]| {
        let mut headers = vec![("clockify-webhook-event-type", "NEW_TAG")];
        if let Some(sig) = sig {
            headers.push(("clockify-signature", sig));
        }
        server.post("/webhooks/clockify/NEW_TAG", &headers, body)
    };
    let cases: Vec<(&str, Option<String>, Vec<u8>, u16)> = vec![
        ("missing signature", None, body.to_vec(), 401),
        (
            "garbage signature",
            Some("garbage".into()),
            body.to_vec(),
            401,
        ),
        (
            "wrong key",
            Some(sign_with(&base_claims(WS, ADDON), OTHER_PRIVATE_KEY)),
            body.to_vec(),
            401,
        ),
        (
            "wrong sub",
            Some(sign(
                &json!({"iss":"clockify","type":"addon","sub":"x","workspaceId":WS,"addonId":ADDON}),
            )),
            body.to_vec(),
            401,
        ),
        (
            "expired",
            Some(sign(
                &json!({"iss":"clockify","type":"addon","sub":ADDON_KEY,"workspaceId":WS,"addonId":ADDON,"exp": now_secs() - 60}),
            )),
            body.to_vec(),
            401,
        ),
        (
            "never installed",
            Some(webhook_token("ws-unknown", ADDON)),
            br#"{"id":"x"}"#.to_vec(),
            403,
        ),
        (
            "inactive",
            Some(webhook_token("ws-inactive", ADDON)),
            br#"{"id":"x"}"#.to_vec(),
            403,
        ),
        (
            "deleted",
            Some(webhook_token("ws-deleted", ADDON)),
            br#"{"id":"x"}"#.to_vec(),
            403,
        ),
        (
            "other installation",
            Some(webhook_token(WS, "addon-old")),
            body.to_vec(),
            403,
        ),
        (
            "payload of another workspace",
            Some(webhook_token(WS, ADDON)),
            br#"{"workspaceId":"someone-else"}"#.to_vec(),
            403,
        ),
        (
            "invalid JSON",
            Some(webhook_token(WS, ADDON)),
            b"{nope".to_vec(),
            400,
        ),
        (
            "too large",
            Some(webhook_token(WS, ADDON)),
            format!("{{\"pad\":\"{}\"}}", "x".repeat(70 * 1024)).into_bytes(),
            413,
        ),
    ];
    for (name, sig, body, status) in &cases {
        let r = post(sig.as_deref(), body);
        assert_eq!(r.status, *status, "{name}: {}", r.body);
        r.error();
        if let Some(sig) = sig {
            assert!(!r.body.contains(sig.as_str()), "{name}: signature echoed");
        }
    }
    assert_eq!(count_events(&server, WS, ADDON), 0, "nothing stored");
    let after = server.metric("webhook_rejections_total", &["source=\"clockify\""]);
    assert!(
        after >= before + cases.len() as f64,
        "rejections counted: {before} → {after}"
    );
    assert!(server.metric("webhook_rejections_total", &["reason=\"inactive\""]) >= 2.0);
}

#[test]
fn a_stored_opaque_token_is_accepted_on_its_own_path_only() {
    let server = TestServer::start();
    let mut payload = install_payload(WS, ADDON, UNREACHABLE_API);
    payload["webhooks"] = json!([{"path": "https://studio.example.com/webhooks/clockify/NEW_CLIENT", "authToken": "opaque-0123456789abcdef"}]);
    assert_eq!(server.lifecycle("installed", &payload).status, 200);
    let body = br#"{"id":"c1","workspaceId":"65b7a1f0c0ffee0000000001"}"#;
    let r = server.post(
        "/webhooks/clockify/NEW_CLIENT",
        &[("clockify-signature", "opaque-0123456789abcdef")],
        body,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = server.post(
        "/webhooks/clockify/NEW_TAG",
        &[("clockify-signature", "opaque-0123456789abcdef")],
        body,
    );
    assert_eq!(r.status, 401, "{}", r.body);
    let r = server.post(
        "/webhooks/clockify/NEW_CLIENT",
        &[("clockify-signature", "opaque-0123456789abcdeX")],
        body,
    );
    assert_eq!(r.status, 401, "{}", r.body);
    // After DELETED the token is gone.
    server.lifecycle("deleted", &json!({"addonId": ADDON, "workspaceId": WS}));
    let r = server.post(
        "/webhooks/clockify/NEW_CLIENT",
        &[("clockify-signature", "opaque-0123456789abcdef")],
        body,
    );
    assert_eq!(r.status, 401, "{}", r.body);
}

#[test]
fn duplicates_are_stored_once_and_counted_but_edits_are_distinct() {
    let server = TestServer::start();
    server.install(WS, ADDON, UNREACHABLE_API);
    let edit1 = br#"{"id":"te-1","description":"first","workspaceId":"65b7a1f0c0ffee0000000001"}"#;
    let edit2 = br#"{"id":"te-1","description":"second","workspaceId":"65b7a1f0c0ffee0000000001"}"#;
    // Other tests deliver too (the recorder is process-wide): compare at least the growth.
    let received = |outcome: &str| {
        let outcome = format!("outcome=\"{outcome}\"");
        server.metric(
            "webhooks_received_total",
            &["source=\"clockify\"", outcome.as_str()],
        )
    };
    let (stored_before, duplicates_before) = (received("stored"), received("duplicate"));
    let a = server
        .deliver(WS, ADDON, "TIME_ENTRY_UPDATED", edit1)
        .json();
    let b = server
        .deliver(WS, ADDON, "TIME_ENTRY_UPDATED", edit1)
        .json();
    let c = server
        .deliver(WS, ADDON, "TIME_ENTRY_UPDATED", edit2)
        .json();
    // The same bytes as another event type is another event.
    let d = server.deliver(WS, ADDON, "NEW_TIME_ENTRY", edit1).json();
    assert_eq!(a["duplicate"], false);
    assert_eq!(b["duplicate"], true);
    assert_eq!(b["webhookId"], a["webhookId"]);
    assert_eq!(c["duplicate"], false);
    assert_ne!(c["webhookId"], a["webhookId"]);
    assert_ne!(d["webhookId"], a["webhookId"]);
    let detail = server
        .admin_get(
            WS,
            ADDON,
            &format!("/api/webhooks/{}", a["webhookId"].as_str().unwrap()),
        )
        .json();
    assert_eq!(detail["duplicates"], 1);
    assert_eq!(count_events(&server, WS, ADDON), 3);
    assert!(received("stored") >= stored_before + 3.0);
    assert!(received("duplicate") >= duplicates_before + 1.0);
}

#[test]
fn stored_headers_are_redacted() {
    let server = TestServer::start();
    server.install(WS, ADDON, UNREACHABLE_API);
    let token = webhook_token(WS, ADDON);
    let r = server.post(
        "/webhooks/clockify/NEW_TAG",
        &[
            ("clockify-signature", &token),
            ("authorization", "Bearer abc"),
            ("cookie", "session=1"),
            ("x-custom-token", "tok"),
            ("x-trace", "visible"),
        ],
        br#"{"id":"tag"}"#,
    );
    let id = r.json()["webhookId"].as_str().unwrap().to_string();
    let detail = server.admin_get(WS, ADDON, &format!("/api/webhooks/{id}"));
    assert!(!detail.body.contains(&token));
    let headers: std::collections::HashMap<String, String> = detail.json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for name in [
        "clockify-signature",
        "authorization",
        "cookie",
        "x-custom-token",
    ] {
        assert_eq!(headers[name], "[redacted]", "{name}");
    }
    assert_eq!(headers["x-trace"], "visible");
    // Nor is anything secret in the raw data file.
    let dir = server.stop();
    let raw = std::fs::read(dir.join("clockify-studio.redb")).unwrap();
    assert!(!raw.windows(token.len()).any(|w| w == token.as_bytes()));
}

#[test]
fn everything_acknowledged_survives_a_restart() {
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(temp.path(), |_| {});
    server.install(WS, ADDON, UNREACHABLE_API);
    let mut ids = Vec::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let server = &server;
                scope.spawn(move || {
                    (0..10)
                        .map(|i| {
                            let body = format!("{{\"id\":\"e-{t}-{i}\"}}");
                            let r = server.deliver(WS, ADDON, "NEW_TIME_ENTRY", body.as_bytes());
                            assert_eq!(r.status, 200);
                            r.json()["webhookId"].as_str().unwrap().to_string()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            ids.extend(h.join().unwrap());
        }
    });
    server.stop();
    let server = TestServer::start_in(temp.path(), |_| {});
    for id in &ids {
        let r = server.admin_get(WS, ADDON, &format!("/api/webhooks/{id}"));
        assert_eq!(r.status, 200, "{id} lost");
    }
    assert_eq!(count_events(&server, WS, ADDON), 80);
    // Dedupe rows still in memory at the stop are rebuilt from the stored events.
    let again = server
        .deliver(WS, ADDON, "NEW_TIME_ENTRY", b"{\"id\":\"e-0-0\"}")
        .json();
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["webhookId"], ids[0].as_str());
    assert_eq!(count_events(&server, WS, ADDON), 80);
}
