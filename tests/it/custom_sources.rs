//! Custom sources: create, sign the Standard Webhooks way or with a bearer secret, rotate.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::support::*;

const WS: &str = "ws-custom";
const ADDON: &str = "addon-c";

fn standard_signature(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn send_signed(
    server: &TestServer,
    url_path: &str,
    secret: &str,
    id: &str,
    timestamp: u64,
    body: &[u8],
) -> Response {
    let signature = standard_signature(secret, id, timestamp, body);
    let ts = timestamp.to_string();
    server.post(
        url_path,
        &[
            ("webhook-id", id),
            ("webhook-timestamp", &ts),
            ("webhook-signature", &signature),
        ],
        body,
    )
}

fn create_source(server: &TestServer) -> (String, String, String) {
    let r = server.api(
        "POST",
        WS,
        ADDON,
        "OWNER",
        "/api/sources",
        Some(&json!({"name": "Billing system"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let body = r.json();
    let url = body["ingestUrl"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&server.base) && url.contains("/webhooks/custom/"),
        "{url}"
    );
    let path = url.trim_start_matches(&server.base).to_string();
    (
        body["id"].as_str().unwrap().to_string(),
        path,
        body["secret"].as_str().unwrap().to_string(),
    )
}

#[test]
fn signed_and_bearer_deliveries_are_stored_with_the_source_name() {
    let server = TestServer::start();
    server.install(WS, ADDON, UNREACHABLE_API);
    let (id, path, secret) = create_source(&server);
    // The secret is shown once: the list never includes it.
    let list = server.admin_get(WS, ADDON, "/api/sources");
    assert!(!list.body.contains(&secret));
    assert_eq!(list.json()["sources"][0]["id"], id.as_str());

    let body = br#"{"type":"invoice.paid","amount":12}"#;
    let r = send_signed(&server, &path, &secret, "msg_1", now_secs(), body);
    assert_eq!(r.status, 200, "{}", r.body);
    let event_id = r.json()["webhookId"].as_str().unwrap().to_string();
    // A redelivery with the same webhook-id is a duplicate, even re-signed later.
    let again = send_signed(&server, &path, &secret, "msg_1", now_secs(), body).json();
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["webhookId"], event_id.as_str());

    let r = server.post(
        &path,
        &[
            ("authorization", &format!("Bearer {secret}")),
            ("x-event-type", "order.created"),
        ],
        br#"{"n":1}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = server.post(
        &path,
        &[("authorization", &format!("Bearer {secret}"))],
        br#"{"eventType":"lead.new"}"#,
    );
    assert_eq!(r.status, 200);
    let r = server.post(
        &path,
        &[("authorization", &format!("Bearer {secret}"))],
        br#"{"plain":true}"#,
    );
    assert_eq!(r.status, 200);

    let items = server.admin_get(WS, ADDON, "/api/webhooks?limit=10").json()["items"]
        .as_array()
        .unwrap()
        .clone();
    let types: Vec<&str> = items
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["CUSTOM", "lead.new", "order.created", "invoice.paid"]
    );
    assert!(
        items
            .iter()
            .all(|e| e["source"] == "Billing system" && e["sourceId"] == id.as_str())
    );
    let detail = server.admin_get(WS, ADDON, &format!("/api/webhooks/{event_id}"));
    assert!(!detail.body.contains(&secret));
    assert!(detail.body.contains("[redacted]"));
}

#[test]
fn bad_signatures_and_unknown_sources_are_refused() {
    let server = TestServer::start();
    server.install(WS, ADDON, UNREACHABLE_API);
    let (_, path, secret) = create_source(&server);
    let body = br#"{"type":"x"}"#;
    let wrong = format!("whsec_{}", STANDARD.encode([7u8; 32]));
    assert_eq!(
        send_signed(&server, &path, &wrong, "m1", now_secs(), body).status,
        401
    );
    let r = send_signed(&server, &path, &secret, "m2", now_secs() - 301, body);
    assert_eq!(r.status, 401);
    assert!(r.error().contains("5 minutes"));
    assert_eq!(
        send_signed(&server, &path, &secret, "m3", now_secs() + 400, body).status,
        401
    );
    // The signature covers the body.
    let sig = standard_signature(&secret, "m4", now_secs(), body);
    let ts = now_secs().to_string();
    let r = server.post(
        &path,
        &[
            ("webhook-id", "m4"),
            ("webhook-timestamp", &ts),
            ("webhook-signature", &sig),
        ],
        br#"{"type":"y"}"#,
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        server
            .post(&path, &[("authorization", "Bearer nope")], body)
            .status,
        401
    );
    assert_eq!(server.post(&path, &[], body).status, 401);
    let r = server.post(
        "/webhooks/custom/no-such-source",
        &[("authorization", &format!("Bearer {secret}"))],
        body,
    );
    assert_eq!(r.status, 404);
    r.error();
    assert!(
        server.admin_get(WS, ADDON, "/api/webhooks").json()["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn rotation_keeps_the_old_secret_working_for_a_grace_period() {
    let server = TestServer::start();
    server.install(WS, ADDON, UNREACHABLE_API);
    let (id, path, old) = create_source(&server);
    let r = server.api(
        "POST",
        WS,
        ADDON,
        "OWNER",
        &format!("/api/sources/{id}/rotate"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let new = r.json()["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert!(r.json()["previousSecretValidUntil"].is_string());
    assert_eq!(
        send_signed(&server, &path, &old, "r1", now_secs(), br#"{"a":1}"#).status,
        200
    );
    assert_eq!(
        send_signed(&server, &path, &new, "r2", now_secs(), br#"{"a":2}"#).status,
        200
    );
    // A second rotation ends the oldest secret at once.
    let r = server.api(
        "POST",
        WS,
        ADDON,
        "OWNER",
        &format!("/api/sources/{id}/rotate"),
        None,
    );
    let newest = r.json()["secret"].as_str().unwrap().to_string();
    assert_eq!(
        send_signed(&server, &path, &old, "r3", now_secs(), br#"{"a":3}"#).status,
        401
    );
    assert_eq!(
        send_signed(&server, &path, &new, "r4", now_secs(), br#"{"a":4}"#).status,
        200
    );
    assert_eq!(
        send_signed(&server, &path, &newest, "r5", now_secs(), br#"{"a":5}"#).status,
        200
    );
}

#[test]
fn only_admins_manage_sources_and_deleting_stops_ingestion() {
    let server = TestServer::start();
    server.install(WS, ADDON, UNREACHABLE_API);
    let r = server.api(
        "POST",
        WS,
        ADDON,
        "TEAM_MANAGER",
        "/api/sources",
        Some(&json!({"name": "x"})),
    );
    assert_eq!(r.status, 403);
    let r = server.api(
        "POST",
        WS,
        ADDON,
        "OWNER",
        "/api/sources",
        Some(&json!({"name": ""})),
    );
    assert_eq!(r.status, 400);
    let (id, path, secret) = create_source(&server);
    assert_eq!(
        server
            .api(
                "DELETE",
                WS,
                ADDON,
                "TEAM_MANAGER",
                &format!("/api/sources/{id}"),
                None
            )
            .status,
        403
    );
    assert_eq!(
        server
            .api(
                "DELETE",
                WS,
                ADDON,
                "OWNER",
                &format!("/api/sources/{id}"),
                None
            )
            .status,
        200
    );
    assert_eq!(
        server
            .post(
                &path,
                &[("authorization", &format!("Bearer {secret}"))],
                b"{}"
            )
            .status,
        404
    );
}
