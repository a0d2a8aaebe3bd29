//! The UI over plain HTTP (no browser): the page for each kind of token, headers, asset
//! caching, the frame-ancestor flag, and the overview JSON.

use std::process::Command;

use serde_json::json;

use crate::support::*;

const WS: &str = "ws-ui";
const ADDON: &str = "addon-ui";

fn user(role: &str, theme: &str) -> String {
    let mut claims = base_claims(WS, ADDON);
    claims["workspaceRole"] = json!(role);
    claims["theme"] = json!(theme);
    claims["language"] = json!("DE");
    claims["exp"] = json!(expiry_in(1800));
    sign(&claims)
}

/// The versioned path of `file` as the page references it.
fn asset_path(page: &str, file: &str) -> String {
    let end = page.find(&format!("/{file}\"")).expect("asset in page") + file.len() + 1;
    let start = page[..end].rfind("\"/assets/").expect("asset path") + 1;
    page[start..end].to_string()
}

#[test]
fn the_page_depends_on_the_token() {
    let server = TestServer::start();
    server.install(WS, ADDON, UNREACHABLE_API);

    let page = server.get(&format!("/ui?auth_token={}", user("OWNER", "DARK")), &[]);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("data-theme=\"dark\""), "{}", page.body);
    assert!(page.body.contains("lang=\"de\""));
    assert!(page.body.contains("<script type=\"module\""));
    assert!(!page.body.contains("<script>"), "no inline script");
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let csp = page.header("content-security-policy").unwrap();
    for part in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors https://*.clockify.me",
    ] {
        assert!(csp.contains(part), "{part} missing in {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");

    let light = server.get(
        &format!("/ui?auth_token={}", user("TEAM_MANAGER", "DEFAULT")),
        &[],
    );
    assert!(light.body.contains("data-theme=\"light\""));

    let mut expired = base_claims(WS, ADDON);
    expired["exp"] = json!(now_secs() - 60);
    let r = server.get(&format!("/ui?auth_token={}", sign(&expired)), &[]);
    assert_eq!(r.status, 401);
    assert!(r.body.contains("has expired"), "{}", r.body);
    assert!(r.body.contains("open it again"), "{}", r.body);
    assert!(
        !r.body.contains(&sign(&expired)),
        "the token is never echoed"
    );

    let stranger = user_token("ws-never-installed", ADDON, "OWNER");
    let r = server.get(&format!("/ui?auth_token={stranger}"), &[]);
    assert_eq!(r.status, 403);
    assert!(
        r.body.contains("not available in this workspace"),
        "{}",
        r.body
    );

    let r = server.get("/ui?auth_token=", &[]);
    assert_eq!(r.status, 200);
    assert!(r.body.contains(&format!("{}/manifest", server.base)));
}

#[test]
fn assets_are_immutable_by_hash_and_revalidate_by_etag() {
    let server = TestServer::start();
    server.install(WS, ADDON, UNREACHABLE_API);
    let page = server
        .get(&format!("/ui?auth_token={}", user("OWNER", "DEFAULT")), &[])
        .body;
    let js = asset_path(&page, "app.js");
    let r = server.get(&js, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let etag = r.header("etag").unwrap().to_string();
    let again = server.get(&js, &[("if-none-match", &etag)]);
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));

    let css = server.get(&asset_path(&page, "app.css"), &[]);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    // An older build's version still gets the file, but not cached as that version.
    let old = server.get("/assets/0000000000000000/app.js", &[]);
    assert_eq!(old.status, 200);
    assert_eq!(old.header("cache-control"), Some("no-cache"));
    let sample = server.get("/assets/samples/NEW_TAG.json", &[]);
    assert_eq!(sample.status, 200);
    sample.json();
    assert!(sample.header("etag").is_some());
    for path in [
        "/assets/templates/app.html",
        "/assets/../Cargo.toml",
        "/assets/%2e%2e/Cargo.toml",
        "/assets/nope.js",
    ] {
        assert_eq!(server.get(path, &[]).status, 404, "{path}");
    }
}

#[test]
fn extra_frame_ancestors_come_from_the_flag() {
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(temp.path(), |c| {
        c.ui_frame_ancestors = vec![
            "https://clockify.example.com".into(),
            "http://*.intranet.test:8443".into(),
        ];
    });
    let csp = server
        .get("/ui", &[])
        .header("content-security-policy")
        .unwrap()
        .to_string();
    assert!(
        csp.ends_with(
            "frame-ancestors https://*.clockify.me https://clockify.example.com http://*.intranet.test:8443"
        ),
        "{csp}"
    );
    // A value that would smuggle another directive into the header is refused at start.
    for bad in [
        "https://a.test; script-src *",
        "javascript:alert(1)",
        "https://",
    ] {
        let out = Command::new(BIN)
            .args(["serve", "--ui-frame-ancestor", bad, "--data-dir"])
            .arg(temp.path().join("never"))
            .env_clear()
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--ui-frame-ancestor"), "{stderr}");
    }
}

#[test]
fn overview_counts_events_by_hour_and_day() {
    let server = TestServer::start();
    server.install(WS, ADDON, UNREACHABLE_API);
    let empty = server.api("GET", WS, ADDON, "TEAM_MANAGER", "/api/overview", None);
    assert_eq!(empty.status, 200, "{}", empty.body);
    let body = empty.json();
    assert_eq!(body["events"]["last24h"], 0);
    assert!(body["events"]["lastEventAt"].is_null());
    for i in 0..5 {
        let r = server.deliver(
            WS,
            ADDON,
            "NEW_TAG",
            format!("{{\"id\":\"t{i}\"}}").as_bytes(),
        );
        assert_eq!(r.status, 200);
    }
    let r = server.api("GET", WS, ADDON, "TEAM_MANAGER", "/api/overview", None);
    let body = r.json();
    assert_eq!(body["workspaceId"], WS);
    assert_eq!(body["installation"]["status"], "ACTIVE");
    assert_eq!(body["installation"]["generation"], 1);
    assert_eq!(body["events"]["last24h"], 5);
    assert_eq!(body["events"]["last7d"], 5);
    assert!(body["events"]["lastEventAt"].is_string());
    let hourly = body["events"]["hourly"].as_array().unwrap();
    assert_eq!(hourly.len(), 24);
    assert_eq!(hourly[23]["count"], 5, "this hour is the last bucket");
    let daily = body["events"]["daily"].as_array().unwrap();
    assert_eq!(daily.len(), 7);
    assert_eq!(daily[6]["count"], 5);
    assert!(body["dataFileBytes"].as_u64().unwrap() > 0);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["user"]["isAdmin"], false);
    assert_eq!(body["flowRuns"]["succeeded24h"], 0);
    assert_eq!(body["flowRuns"]["failed24h"], 0);
    assert!(body["subscriptions"]["manifest"].as_u64().unwrap() > 0);
    assert!(body["bootstrap"]["status"].is_string());
    // Scoped to the token's workspace and only for installed workspaces.
    assert_eq!(
        server
            .admin_get("ws-never-installed", ADDON, "/api/overview")
            .status,
        403
    );
}
