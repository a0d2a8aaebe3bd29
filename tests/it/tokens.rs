//! Every way a lifecycle token can be refused, and that refusals are counted.

use serde_json::{Value, json};

use crate::support::*;

const WS: &str = "ws-tokens";
const ADDON: &str = "addon-t";

fn status_body() -> Value {
    json!({"addonId": ADDON, "workspaceId": WS, "status": "INACTIVE"})
}

fn send(server: &TestServer, token: Option<&str>) -> Response {
    let headers: Vec<(&str, &str)> = token
        .map(|t| ("x-addon-lifecycle-token", t))
        .into_iter()
        .collect();
    server.post_json("/lifecycle/status-changed", &headers, &status_body())
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

#[test]
fn every_bad_token_is_refused_with_401_and_a_reason() {
    let server = TestServer::start();
    server.install(WS, ADDON, UNREACHABLE_API);
    let good = base_claims(WS, ADDON);
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "missing"),
        ("garbage", Some("not-a-jwt".into()), "well-formed"),
        ("alg none", Some(unsigned_token(&good)), "well-formed"),
        (
            "HS256 with the public key",
            Some(hs256_with_public_key(&good)),
            "RS256",
        ),
        (
            "wrong key",
            Some(sign_with(&good, OTHER_PRIVATE_KEY)),
            "signature",
        ),
        (
            "expired",
            Some(sign(&with(good.clone(), "exp", json!(now_secs() - 3600)))),
            "expired",
        ),
        (
            "wrong iss",
            Some(sign(&with(good.clone(), "iss", json!("evil")))),
            "issued by Clockify",
        ),
        (
            "no iss",
            Some(sign(&json!({"type": "addon", "sub": ADDON_KEY}))),
            "issued by Clockify",
        ),
        (
            "wrong type",
            Some(sign(&with(good.clone(), "type", json!("user")))),
            "add-on token",
        ),
        (
            "wrong sub",
            Some(sign(&with(good.clone(), "sub", json!("other-addon")))),
            "another add-on",
        ),
    ];
    for (name, token, expected) in cases {
        let r = send(&server, token.as_deref());
        assert_eq!(r.status, 401, "{name}: {}", r.body);
        let error = r.error();
        assert!(error.contains(expected), "{name}: {error}");
        if let Some(token) = &token {
            assert!(!r.body.contains(token.as_str()), "{name}: token echoed");
        }
    }
    // Nothing changed: the installation is still ACTIVE, so INACTIVE with a good token works.
    let r = send(&server, Some(&sign(&good)));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "INACTIVE");
}

#[test]
fn a_valid_token_for_another_workspace_or_installation_is_403() {
    let server = TestServer::start();
    server.install(WS, ADDON, UNREACHABLE_API);
    server.install("ws-other", ADDON, UNREACHABLE_API);
    let r = send(&server, Some(&lifecycle_token("ws-other", ADDON)));
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.error().contains("another workspace"));
    let r = send(&server, Some(&lifecycle_token(WS, "addon-other")));
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.error().contains("another installation"));
    // An install whose embedded installation token names another workspace is refused too.
    let mut payload = install_payload("ws-3", ADDON, UNREACHABLE_API);
    payload["authToken"] = json!(installation_token("ws-other", ADDON, UNREACHABLE_API));
    let r = server.lifecycle("installed", &payload);
    assert_eq!(r.status, 403, "{}", r.body);
}

#[test]
fn an_unexpired_token_is_accepted() {
    let server = TestServer::start();
    server.install(WS, ADDON, UNREACHABLE_API);
    let token = sign(&with(
        base_claims(WS, ADDON),
        "exp",
        json!(now_secs() + 600),
    ));
    assert_eq!(send(&server, Some(&token)).status, 200);
}

#[test]
fn rejected_tokens_are_counted_in_metrics() {
    let server = TestServer::start();
    let labels = ["kind=\"lifecycle\"", "reason=\"signature\""];
    let before = server.metric("token_verification_failures_total", &labels);
    let r = send(
        &server,
        Some(&sign_with(&base_claims(WS, ADDON), OTHER_PRIVATE_KEY)),
    );
    assert_eq!(r.status, 401);
    let after = server.metric("token_verification_failures_total", &labels);
    assert!(after >= before + 1.0, "before {before}, after {after}");
    assert!(
        server.metric(
            "lifecycle_events_total",
            &["type=\"STATUS_CHANGED\"", "outcome=\"unauthorized\""]
        ) >= 1.0
    );
}
