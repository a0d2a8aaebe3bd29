//! Health, readiness, metrics, request ids, manifest.

use crate::support::*;

#[test]
fn health_and_readiness() {
    let server = TestServer::start();
    let r = server.get("/healthz", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    assert_eq!(r.json()["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(server.get("/health", &[]).status, 200);
    assert_eq!(server.get("/readyz", &[]).status, 200);
    assert_eq!(server.get("/ready", &[]).status, 200);
}

#[test]
fn readiness_fails_when_the_data_directory_disappears() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("data");
    let server = TestServer::start_in(&dir, |_| {});
    assert_eq!(server.get("/readyz", &[]).status, 200);
    std::fs::remove_dir_all(&dir).unwrap();
    let r = server.get("/readyz", &[]);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.contains("data file") || r.body.contains("missing"),
        "{}",
        r.body
    );
    // The file it writes to is gone: what it acknowledged now would be lost at the next
    // start, so liveness fails too (and writes are refused), for a supervisor to act.
    let r = server.get("/healthz", &[]);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("deleted or replaced"), "{}", r.body);
    let r = server.lifecycle(
        "installed",
        &install_payload("ws-gone", "addon", UNREACHABLE_API),
    );
    assert_eq!(r.status, 503, "{}", r.body);
}

#[test]
fn the_base_url_shows_what_this_is_its_version_readiness_and_the_manifest_url() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("data");
    let server = TestServer::start_in(&dir, |c| {
        c.base_url = "https://studio.example.com".into();
    });
    server.install("ws-home", "addon-home", UNREACHABLE_API);
    let r = server.get("/", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(r.body.contains("Clockify add-on"), "{}", r.body);
    assert!(
        r.body.contains(&format!(
            "Version <strong>{}</strong>",
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        r.body
    );
    assert!(r.body.contains("<strong>ready</strong>"), "{}", r.body);
    assert!(
        r.body
            .contains("<a href=\"https://studio.example.com/manifest\"><code>https://studio.example.com/manifest</code></a>"),
        "{}",
        r.body
    );
    assert!(r.body.contains("docs/"), "{}", r.body);
    assert!(!r.body.contains("ws-home"), "no workspace data: {}", r.body);
    // The same headers as every HTML page.
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors"),
        "{csp}"
    );
    assert!(!r.body.contains("<script"), "a page of prose: {}", r.body);

    // The store probe fails (as in the readiness test): the page says so, with the reason.
    std::fs::remove_dir_all(&dir).unwrap();
    let r = server.get("/", &[]);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(r.body.contains("<strong>not ready</strong>"), "{}", r.body);
    let reason = server.get("/readyz", &[]).json()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        r.body.contains(&format!("Reason: {reason}.")),
        "the probe's reason ({reason}): {}",
        r.body
    );
    assert!(r.body.contains("https://studio.example.com/manifest"));
}

#[test]
fn request_ids_are_echoed_or_generated() {
    let server = TestServer::start();
    let r = server.get("/healthz", &[("x-request-id", "abc-123")]);
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    let r = server.get("/healthz", &[("x-request-id", "bad id with spaces")]);
    let generated = r.header("x-request-id").unwrap();
    assert_ne!(generated, "bad id with spaces");
    let parsed = uuid::Uuid::parse_str(generated).expect("a generated id is a UUID");
    assert_eq!(parsed.get_version_num(), 7, "{generated}");
    let ids: std::collections::HashSet<String> = (0..50)
        .map(|_| {
            server
                .get("/healthz", &[])
                .header("x-request-id")
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 50, "every generated id differs");
    let r = server.get("/no-such-route", &[("x-request-id", "req-42")]);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["requestId"], "req-42");
}

#[test]
fn metrics_expose_the_promised_series_and_honour_the_token() {
    let server = TestServer::start_with(|c| c.metrics_token = Some("s3cret".into()));
    let r = server.get("/metrics", &[]);
    assert_eq!(r.status, 401);
    r.error();
    assert_eq!(
        server
            .get("/metrics", &[("authorization", "Bearer wrong")])
            .status,
        401
    );
    server.get("/healthz", &[]);
    server.get("/readyz", &[]);
    let r = server.get("/metrics", &[("authorization", "Bearer s3cret")]);
    assert_eq!(r.status, 200);
    for series in [
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "store_commit_batch_size",
        "store_commit_seconds",
        "data_file_size_bytes",
        "uptime_seconds",
        "build_info",
    ] {
        assert!(r.body.contains(series), "missing {series} in\n{}", r.body);
    }
}

#[test]
fn manifest_is_served_with_the_configured_base_url_and_key() {
    let server = TestServer::start_with(|c| {
        c.base_url = "https://studio.example.com".into();
        c.addon_key = "my-studio".into();
    });
    let r = server.get("/manifest", &[]);
    assert_eq!(r.status, 200);
    let manifest = r.json();
    assert_eq!(manifest["baseUrl"], "https://studio.example.com");
    assert_eq!(manifest["key"], "my-studio");
    assert_eq!(server.get("/manifest.json", &[]).body, r.body);
}

#[test]
fn manifest_template_is_valid_against_schema_1_3() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("manifest-schema-1.3.json")).unwrap(),
    )
    .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&clockify_studio::manifest::render(
        "https://studio.example.com",
        "clockify-studio",
    ))
    .unwrap();
    let validator = jsonschema::draft4::new(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&manifest)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "manifest errors: {errors:#?}");
    // The platform facts the schema does not enforce.
    let webhooks = manifest["webhooks"].as_array().unwrap();
    assert_eq!(webhooks.len(), 10, "10 webhooks, the platform maximum");
    for hook in webhooks {
        assert_eq!(
            hook["path"],
            format!("/webhooks/clockify/{}", hook["event"].as_str().unwrap())
        );
    }
    assert_eq!(manifest["scopes"].as_array().unwrap().len(), 30);
    assert_eq!(manifest["lifecycle"].as_array().unwrap().len(), 4);
    assert_eq!(manifest["components"][0]["type"], "sidebar");
    assert_eq!(manifest["components"][0]["accessLevel"], "ADMINS");
    assert_eq!(manifest["components"][0]["path"], "/ui");
}

#[test]
fn ui_without_a_token_explains_how_to_install() {
    let server = TestServer::start();
    let r = server.get("/ui", &[]);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("/manifest"), "{}", r.body);
    assert!(
        r.header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors")
    );
    assert_eq!(
        server.get("/assets/icon.svg", &[]).header("content-type"),
        Some("image/svg+xml")
    );
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use std::io::{Read, Write};
    let server =
        TestServer::start_with(|c| c.header_read_timeout = std::time::Duration::from_secs(1));
    let mut stream =
        std::net::TcpStream::connect(server.base.trim_start_matches("http://")).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    // The server closes the connection (possibly after a 408) instead of waiting forever.
    let _ = stream.read_to_end(&mut buf);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "held for {:?}",
        started.elapsed()
    );
    // Other clients are served meanwhile and after.
    assert_eq!(server.get("/healthz", &[]).status, 200);
}

#[test]
fn a_data_file_from_a_newer_release_is_refused_clearly() {
    let temp = tempfile::tempdir().unwrap();
    {
        // What a future release would have written: a higher schema version.
        let db = redb::Database::create(temp.path().join("clockify-studio.redb")).unwrap();
        let wtx = db.begin_write().unwrap();
        {
            let mut meta = wtx
                .open_table(redb::TableDefinition::<&[u8], &[u8]>::new("meta"))
                .unwrap();
            meta.insert(b"schema_version".as_slice(), 99u32.to_le_bytes().as_slice())
                .unwrap();
        }
        wtx.commit().unwrap();
    }
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(temp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("newer release") && stderr.contains("99"),
        "{stderr}"
    );
    let out = std::process::Command::new(BIN)
        .args(["check", "--data-dir"])
        .arg(temp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("newer release"));
}
