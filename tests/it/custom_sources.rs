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

/// Posts `body` with the Standard Webhooks headers, whatever `signature` signs.
fn post_with_signature(
    server: &TestServer,
    url_path: &str,
    id: &str,
    timestamp: u64,
    signature: &str,
    body: &[u8],
) -> Response {
    let ts = timestamp.to_string();
    server.post(
        url_path,
        &[
            ("webhook-id", id),
            ("webhook-timestamp", &ts),
            ("webhook-signature", signature),
        ],
        body,
    )
}

/// Delivers `body` signed with `secret` the Standard Webhooks way.
fn send_signed(
    server: &TestServer,
    url_path: &str,
    secret: &str,
    id: &str,
    timestamp: u64,
    body: &[u8],
) -> Response {
    let signature = standard_signature(secret, id, timestamp, body);
    post_with_signature(server, url_path, id, timestamp, &signature, body)
}

/// [`send_signed`] with the current time.
fn send_signed_now(
    server: &TestServer,
    url_path: &str,
    secret: &str,
    id: &str,
    body: &[u8],
) -> Response {
    send_signed(server, url_path, secret, id, now_secs(), body)
}

/// Delivers `body` with the source secret as a bearer token.
fn send_bearer(server: &TestServer, url_path: &str, secret: &str, body: &[u8]) -> Response {
    server.post(
        url_path,
        &[("authorization", &format!("Bearer {secret}"))],
        body,
    )
}

/// Sends `method` to an `/api` route of WS as a user with `role`.
fn api(
    server: &TestServer,
    method: &str,
    role: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Response {
    server.api(method, WS, ADDON, role, path, body)
}

/// Rotates the source's secret (as the owner).
fn rotate(server: &TestServer, id: &str) -> Response {
    api(
        server,
        "POST",
        "OWNER",
        &format!("/api/sources/{id}/rotate"),
        None,
    )
}

/// Creates a source as the owner; returns its id, ingest path and secret.
fn create_source(server: &TestServer) -> (String, String, String) {
    let r = api(
        server,
        "POST",
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
    let r = send_signed_now(&server, &path, &secret, "msg_1", body);
    assert_eq!(r.status, 200, "{}", r.body);
    let event_id = r.json()["webhookId"].as_str().unwrap().to_string();
    // A redelivery with the same webhook-id is a duplicate, even re-signed later.
    let again = send_signed_now(&server, &path, &secret, "msg_1", body).json();
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
    let r = send_bearer(&server, &path, &secret, br#"{"eventType":"lead.new"}"#);
    assert_eq!(r.status, 200);
    let r = send_bearer(&server, &path, &secret, br#"{"plain":true}"#);
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
        send_signed_now(&server, &path, &wrong, "m1", body).status,
        401
    );
    let r = send_signed(&server, &path, &secret, "m2", now_secs() - 301, body);
    assert_eq!(r.status, 401);
    assert!(r.error().contains("5 minutes"));
    assert_eq!(
        send_signed(&server, &path, &secret, "m3", now_secs() + 400, body).status,
        401
    );
    // The furthest timestamps: the distance to now must not overflow (found by the
    // webhook_headers fuzz target: `now - i64::MIN` panicked where overflow is checked).
    for ts in ["-9223372036854775808", "9223372036854775807"] {
        let r = server.post(
            &path,
            &[
                ("webhook-id", "m5"),
                ("webhook-timestamp", ts),
                ("webhook-signature", "v1,AAAA"),
            ],
            body,
        );
        assert_eq!(r.status, 401, "{ts}");
        assert!(r.error().contains("5 minutes"), "{ts}");
    }
    // The signature covers the body.
    let now = now_secs();
    let sig = standard_signature(&secret, "m4", now, body);
    let r = post_with_signature(&server, &path, "m4", now, &sig, br#"{"type":"y"}"#);
    assert_eq!(r.status, 401);
    assert_eq!(send_bearer(&server, &path, "nope", body).status, 401);
    assert_eq!(server.post(&path, &[], body).status, 401);
    let r = send_bearer(&server, "/webhooks/custom/no-such-source", &secret, body);
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
    let r = rotate(&server, &id);
    assert_eq!(r.status, 200, "{}", r.body);
    let new = r.json()["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert!(r.json()["previousSecretValidUntil"].is_string());
    let status = |secret: &str, id: &str, body: &[u8]| {
        send_signed_now(&server, &path, secret, id, body).status
    };
    assert_eq!(status(&old, "r1", br#"{"a":1}"#), 200);
    assert_eq!(status(&new, "r2", br#"{"a":2}"#), 200);
    // A second rotation ends the oldest secret at once.
    let newest = rotate(&server, &id).json()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(status(&old, "r3", br#"{"a":3}"#), 401);
    assert_eq!(status(&new, "r4", br#"{"a":4}"#), 200);
    assert_eq!(status(&newest, "r5", br#"{"a":5}"#), 200);
}

#[test]
fn only_admins_manage_sources_and_deleting_stops_ingestion() {
    let server = TestServer::start();
    server.install(WS, ADDON, UNREACHABLE_API);
    let create = |role: &str, name: &str| {
        api(
            &server,
            "POST",
            role,
            "/api/sources",
            Some(&json!({"name": name})),
        )
        .status
    };
    assert_eq!(create("TEAM_MANAGER", "x"), 403);
    assert_eq!(create("OWNER", ""), 400);
    let (id, path, secret) = create_source(&server);
    let delete =
        |role: &str| api(&server, "DELETE", role, &format!("/api/sources/{id}"), None).status;
    assert_eq!(delete("TEAM_MANAGER"), 403);
    assert_eq!(delete("OWNER"), 200);
    assert_eq!(send_bearer(&server, &path, &secret, b"{}").status, 404);
}
