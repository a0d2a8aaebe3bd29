use serde_json::json;

use crate::support::*;

const WS: &str = "ws-lifecycle-1";
const ADDON: &str = "addon-1";

#[test]
fn install_status_settings_delete_round_trip() {
    let server = TestServer::start();
    let body = server.install(WS, ADDON, UNREACHABLE_API).json();
    assert_eq!(body["status"], "installed");
    assert_eq!(body["generation"], 1);

    let r = server.lifecycle(
        "status-changed",
        &json!({"addonId": ADDON, "workspaceId": WS, "status": "INACTIVE"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "INACTIVE");
    let r = server.lifecycle(
        "status-changed",
        &json!({"addonId": ADDON, "workspaceId": WS, "status": "ACTIVE"}),
    );
    assert_eq!(r.json()["status"], "ACTIVE");

    let r = server.lifecycle(
        "settings-updated",
        &json!({"addonId": ADDON, "workspaceId": WS, "settings": [
            {"id": "max_rps", "name": "Max", "value": 10},
            {"id": "bootstrap_on_install", "name": "B", "value": false},
            {"id": "subscribed_events", "name": "E", "value": ["NEW_TAG", "NEW_CLIENT"]}
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    let r = server.lifecycle(
        "deleted",
        &json!({"addonId": ADDON, "workspaceId": WS, "asUser": "u"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "deleted");
    // Repeating DELETED is harmless; the alias path works too.
    let r = server.lifecycle(
        "uninstalled",
        &json!({"addonId": ADDON, "workspaceId": WS, "asUser": "u"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // A deleted installation takes no more status changes.
    let r = server.lifecycle(
        "status-changed",
        &json!({"addonId": ADDON, "workspaceId": WS, "status": "ACTIVE"}),
    );
    assert_eq!(r.status, 403, "{}", r.body);

    let dir = server.stop();
    let stored = read_installation(&dir, WS);
    assert_eq!(stored["status"], "Deleted");
    assert_eq!(
        stored["has_auth_token"], false,
        "tokens must be erased on DELETED"
    );
    assert_eq!(stored["webhook_tokens"], 0);
    assert_eq!(stored["settings"]["max_rps"], 10.0);
}

/// Reads an installation straight from the data file through the library's store API.
fn read_installation(dir: &std::path::Path, ws: &str) -> serde_json::Value {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let key = clockify_studio::store::load_or_create_key(&dir.join("secret.key")).unwrap();
        let store =
            clockify_studio::store::Store::open(&dir.join("clockify-studio.redb"), &key).unwrap();
        let i = store
            .installation(ws)
            .await
            .unwrap()
            .expect("installation stored");
        let settings: serde_json::Map<String, serde_json::Value> = i
            .settings
            .values
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        let token = i
            .auth_token
            .as_ref()
            .map(|t| store.secrets().open_str(t).unwrap());
        let value = json!({
            "status": format!("{:?}", i.status),
            "generation": i.generation,
            "addon_id": i.addon_id,
            "api_url": i.api_url,
            "backend_url": i.backend_url,
            "has_auth_token": i.auth_token.is_some(),
            "auth_token": token,
            "webhook_tokens": i.webhook_tokens.len(),
            "settings": settings,
        });
        store.shutdown();
        value
    })
}

#[test]
fn reinstall_bumps_generation_and_repeat_is_idempotent() {
    let server = TestServer::start();
    let payload = install_payload(WS, ADDON, UNREACHABLE_API);
    let first = server.lifecycle("installed", &payload);
    assert_eq!(first.json()["generation"], 1);
    // The very same message again changes nothing.
    let again = server.lifecycle("installed", &payload);
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["generation"], 1);
    // A reinstall (new installation id and token) replaces it.
    let second = server.install(WS, "addon-2", UNREACHABLE_API);
    assert_eq!(second.json()["generation"], 2);
    // A late message for the old installation cannot touch the new one.
    let late = server.lifecycle(
        "status-changed",
        &json!({"addonId": ADDON, "workspaceId": WS, "status": "INACTIVE"}),
    );
    assert_eq!(late.status, 403, "{}", late.body);
    // After DELETED, a reinstall gets a clean installation.
    server.lifecycle("deleted", &json!({"addonId": "addon-2", "workspaceId": WS}));
    let third = server.install(WS, "addon-3", UNREACHABLE_API);
    assert_eq!(third.json()["generation"], 3);
    let dir = server.stop();
    let stored = read_installation(&dir, WS);
    assert_eq!(stored["status"], "Active");
    assert_eq!(stored["addon_id"], "addon-3");
    assert_eq!(stored["webhook_tokens"], 1);
    assert_eq!(stored["backend_url"], "http://127.0.0.1:9/api");
}

#[test]
fn unknown_workspace_gets_404_and_changes_nothing() {
    let server = TestServer::start();
    for (hook, body) in [
        (
            "status-changed",
            json!({"addonId": ADDON, "workspaceId": "nobody", "status": "ACTIVE"}),
        ),
        (
            "settings-updated",
            json!({"addonId": ADDON, "workspaceId": "nobody", "settings": []}),
        ),
        (
            "deleted",
            json!({"addonId": ADDON, "workspaceId": "nobody"}),
        ),
    ] {
        let r = server.lifecycle(hook, &body);
        assert_eq!(r.status, 404, "{hook}: {}", r.body);
        assert!(r.error().contains("nobody"), "{hook}: {}", r.body);
    }
}

#[test]
fn bad_bodies_are_refused_clearly() {
    let server = TestServer::start();
    let token = lifecycle_token(WS, ADDON);
    let auth = [("x-addon-lifecycle-token", token.as_str())];
    let r = server.post("/lifecycle/installed", &auth, b"{not json");
    assert_eq!(r.status, 400);
    assert!(r.error().contains("invalid JSON"), "{}", r.body);

    let r = server.post_json(
        "/lifecycle/status-changed",
        &auth,
        &json!({"addonId": ADDON, "workspaceId": WS}),
    );
    assert_eq!(r.status, 400, "missing field: {}", r.body);

    server.install(WS, ADDON, UNREACHABLE_API);
    let r = server.post_json(
        "/lifecycle/status-changed",
        &auth,
        &json!({"addonId": ADDON, "workspaceId": WS, "status": "MAYBE"}),
    );
    assert_eq!(r.status, 400);
    assert!(r.error().contains("ACTIVE or INACTIVE"));

    // The server answers 413 as soon as Content-Length says too much, before the body.
    let raw = raw_exchange(
        &server,
        &format!(
            "POST /lifecycle/installed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             X-Addon-Lifecycle-Token: {token}\r\nContent-Length: {}\r\n\r\n",
            1024 * 1024 + 1
        ),
    );
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(raw.contains("\"requestId\""), "{raw}");
    // A body without Content-Length is cut off at the limit as well.
    let chunk = vec![b' '; 64 * 1024];
    let mut request = format!(
        "POST /lifecycle/installed HTTP/1.1\r\nHost: x\r\nX-Addon-Lifecycle-Token: {token}\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..17 {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(&chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let raw = raw_bytes_exchange(&server, &request);
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
}

#[test]
fn the_installation_token_never_leaves_the_server() {
    let server = TestServer::start();
    let payload = install_payload(WS, ADDON, UNREACHABLE_API);
    let secret = payload["authToken"].as_str().unwrap().to_string();
    let r = server.lifecycle("installed", &payload);
    assert!(!r.body.contains(&secret));
    // An attempt with a broken body echoes nothing of the token either.
    let token = lifecycle_token(WS, ADDON);
    let r = server.post(
        "/lifecycle/installed",
        &[("x-addon-lifecycle-token", &token)],
        format!("{{\"authToken\": \"{secret}\"").as_bytes(),
    );
    assert_eq!(r.status, 400);
    assert!(!r.body.contains(&secret), "{}", r.body);
    let metrics = server.get("/metrics", &[]).body;
    assert!(!metrics.contains(&secret));
    // At rest the token is sealed: the raw data file does not contain it.
    let dir = server.stop();
    let raw = std::fs::read(dir.join("clockify-studio.redb")).unwrap();
    assert!(
        !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "token stored in clear"
    );
    assert_eq!(read_installation(&dir, WS)["auth_token"], secret.as_str());
}

#[test]
fn data_survives_a_restart() {
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(temp.path(), |_| {});
    server.install(WS, ADDON, UNREACHABLE_API);
    server.install("ws-2", ADDON, UNREACHABLE_API);
    server.stop();
    let server = TestServer::start_in(temp.path(), |_| {});
    // The stored installation is there: a status change for it succeeds.
    let r = server.lifecycle(
        "status-changed",
        &json!({"addonId": ADDON, "workspaceId": "ws-2", "status": "INACTIVE"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    server.stop();
    assert_eq!(read_installation(temp.path(), WS)["status"], "Active");
}

/// Writes raw bytes to the server and returns what it answers (tolerating an early close).
fn raw_bytes_exchange(server: &TestServer, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let addr = server.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&out).contains("requestId") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

fn raw_exchange(server: &TestServer, request: &str) -> String {
    raw_bytes_exchange(server, request.as_bytes())
}
