//! Issue 16: each attack or defect reproduced against the real server (tokens following
//! redirects, lenient parsing, unbounded metrics and logs, data outliving its workspace …).

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::support::*;

const ADDON: &str = "addon-sec";
const DEADLINE: Duration = Duration::from_secs(30);
const REDIRECTS: [u16; 5] = [301, 302, 303, 307, 308];

// ------------------------------------------------------------------------------ redirects

/// A fake Clockify (allowed) that answers every call with the redirect status in `status`
/// (0: plain 200 `{}`), pointing at `recorder`, a second server outside the allowlist that
/// records whatever reaches it.
struct Redirecting {
    server: TestServer,
    fake: FakeClockify,
    recorder: FakeClockify,
    status: Arc<AtomicU16>,
}

impl Redirecting {
    fn start() -> Redirecting {
        let fake = FakeClockify::start();
        let recorder = FakeClockify::start();
        let status = Arc::new(AtomicU16::new(0));
        let (current, target) = (status.clone(), recorder.base.clone());
        fake.respond(move |call| {
            let code = current.load(Ordering::SeqCst);
            (code != 0).then(|| {
                let location = format!("{target}{}?{}", call.path, call.query);
                (code, vec![("location".into(), location)], Vec::new())
            })
        });
        let host = fake.host.clone();
        let server = TestServer::start_with(move |c| {
            c.allow_api_hosts = vec![host];
            c.max_rps = 50;
        });
        Redirecting {
            server,
            fake,
            recorder,
            status,
        }
    }

    fn redirect_with(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }

    /// Nothing ever reached the host outside the allowlist, and the fake was really asked.
    fn assert_nothing_followed(&self) {
        let leaked = self.recorder.calls();
        assert!(
            leaked.is_empty(),
            "calls reached the host outside the allowlist: {:?}",
            leaked
                .iter()
                .map(|c| format!(
                    "{} {} (token: {})",
                    c.method,
                    c.path,
                    c.headers.contains_key("x-addon-token")
                ))
                .collect::<Vec<_>>()
        );
        assert!(!self.fake.calls().is_empty(), "the fake was never called");
    }
}

fn install_settled(server: &TestServer, ws: &str, api_base: &str) {
    crate::support::install_settled(server, ws, ADDON, api_base);
}

#[test]
fn explorer_calls_return_a_redirect_instead_of_following_it() {
    let env = Redirecting::start();
    let ws = "ws-redirect-explorer";
    install_settled(&env.server, ws, &env.fake.base);
    for code in REDIRECTS {
        env.redirect_with(code);
        for (role, call) in [
            ("OWNER", json!({"operationId": "getClients"})),
            ("OWNER", json!({"operationId": "getClients", "as": "user"})),
            (
                "OWNER",
                json!({"operationId": "createClient", "body": {"name": "x"}}),
            ),
            ("USER", json!({"operationId": "getTags"})),
        ] {
            let r = env
                .server
                .api("POST", ws, ADDON, role, "/api/execute", Some(&call));
            assert_eq!(r.status, 200, "{code} {call}: {}", r.body);
            let answer = r.json();
            assert_eq!(answer["status"], code, "{call}: {answer}");
            assert!(
                answer["headers"]["location"]
                    .as_str()
                    .is_some_and(|l| l.starts_with(&env.recorder.base)),
                "the 3xx is shown as such: {answer}"
            );
        }
    }
    env.assert_nothing_followed();
}

/// POSTs `body` to an `/api` route of `ws` as its owner.
fn post_as_owner(
    server: &TestClient,
    ws: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Response {
    server.api("POST", ws, ADDON, "OWNER", path, body)
}

/// Creates (as the owner) a flow of `ws` running `action` on every NEW_TAG; returns its id.
fn tag_flow(server: &TestServer, ws: &str, action: serde_json::Value) -> String {
    let flow =
        json!({"name": action["name"], "trigger": {"events": ["NEW_TAG"]}, "actions": [action]});
    let r = post_as_owner(server, ws, "/api/flows", Some(&flow));
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["id"].as_str().unwrap().to_string()
}

/// Delivers a NEW_TAG event of `ws`.
fn deliver_tag(server: &TestServer, ws: &str, id: &str) {
    let body = json!({"id": id, "name": format!("tag {id}"), "workspaceId": ws});
    let r = server.deliver(ws, ADDON, "NEW_TAG", body.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn flow_actions_fail_on_a_redirect_instead_of_following_it() {
    let env = Redirecting::start();
    let ws = "ws-redirect-flows";
    install_settled(&env.server, ws, &env.fake.base);
    let flow_id = tag_flow(
        &env.server,
        ws,
        json!({"name": "read", "operationId": "getTags"}),
    );
    let write_id = tag_flow(
        &env.server,
        ws,
        json!({"name": "write", "operationId": "createNewTag", "body": {"name": "{{ event.name }}"}}),
    );
    for (i, code) in REDIRECTS.into_iter().enumerate() {
        env.redirect_with(code);
        deliver_tag(&env.server, ws, &format!("tag-{i}"));
        for flow in [&flow_id, &write_id] {
            let mut runs = Vec::new();
            let done = wait_until(DEADLINE, || {
                let listed =
                    env.server
                        .admin_get(ws, ADDON, &format!("/api/flows/{flow}/runs?limit=50"));
                runs = listed.json()["items"].as_array().unwrap().clone();
                runs.len() > i && runs.iter().all(|r| r["status"] == "failed")
            });
            assert!(done, "{code}: {runs:?}");
            let run_id = runs[0]["id"].as_str().unwrap();
            let run = env
                .server
                .admin_get(ws, ADDON, &format!("/api/runs/{run_id}"))
                .json();
            assert!(
                run.to_string().contains(&format!("HTTP {code}")),
                "{code}: {run}"
            );
        }
    }
    env.assert_nothing_followed();
}

#[test]
fn bootstrap_and_subscription_sync_stop_at_a_redirect() {
    let env = Redirecting::start();
    for code in REDIRECTS {
        env.redirect_with(code);
        let ws = format!("ws-redirect-install-{code}");
        install_settled(&env.server, &ws, &env.fake.base);
        let bootstrap = env.server.admin_get(&ws, ADDON, "/api/bootstrap").json();
        assert_eq!(bootstrap["status"], "done-with-errors", "{bootstrap}");
        assert!(
            bootstrap
                .to_string()
                .contains(&format!("\"error\":\"HTTP {code}\"")),
            "{bootstrap}"
        );
        let subscriptions = env
            .server
            .admin_get(&ws, ADDON, "/api/subscriptions")
            .json();
        assert!(
            subscriptions["error"]
                .as_str()
                .is_some_and(|e| e.contains(&format!("HTTP {code}"))),
            "{subscriptions}"
        );
        // A sync asked for by an admin stops the same way.
        let r = env
            .server
            .api("POST", &ws, ADDON, "OWNER", "/api/subscriptions/sync", None);
        assert!(r.body.contains(&format!("HTTP {code}")), "{}", r.body);
    }
    env.assert_nothing_followed();
}

#[test]
fn settings_writes_fail_on_a_redirect_instead_of_following_it() {
    let env = Redirecting::start();
    let ws = "ws-redirect-settings";
    install_settled(&env.server, ws, &env.fake.base);
    for code in REDIRECTS {
        env.redirect_with(code);
        let r = env.server.api(
            "PATCH",
            ws,
            ADDON,
            "OWNER",
            "/api/settings",
            Some(&json!({"max_rps": 10})),
        );
        assert_eq!(r.status, 503, "{code}: {}", r.body);
        assert!(r.error().contains(&format!("HTTP {code}")), "{}", r.body);
    }
    env.assert_nothing_followed();
    // Nothing was stored: Clockify never confirmed the change.
    let settings = env.server.admin_get(ws, ADDON, "/api/settings").json();
    assert_eq!(settings["settings"]["max_rps"], 25, "{settings}");
}

// ------------------------------------------------------------------------------ token times

/// `claims` with `key` set to `value`.
fn with(mut claims: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
    claims[key] = value;
    claims
}

/// A user token of `ws` with `key` (nbf or iat) at `offset` seconds from now.
fn user_token_at(ws: &str, key: &str, offset: i64) -> String {
    let mut claims = base_claims(ws, ADDON);
    claims["user"] = json!("user-1");
    claims["workspaceRole"] = json!("OWNER");
    claims["exp"] = json!(now_secs() + 1800);
    claims[key] = json!(now_secs() as i64 + offset);
    sign(&claims)
}

#[test]
fn tokens_not_valid_yet_or_issued_in_the_future_are_refused_everywhere() {
    let server = TestServer::start();
    let ws = "ws-token-times";
    // The webhook token stored at install is not valid for another hour.
    let mut payload = install_payload(ws, ADDON, UNREACHABLE_API);
    let early = sign(&with(
        base_claims(ws, ADDON),
        "nbf",
        json!(now_secs() + 3600),
    ));
    payload["webhooks"] = json!([{"path": "/webhooks/clockify/NEW_TAG", "authToken": early}]);
    let r = server.lifecycle("installed", &payload);
    assert_eq!(r.status, 200, "{}", r.body);

    for (key, expected) in [("nbf", "not valid yet"), ("iat", "issued in the future")] {
        // User tokens, on every /api route; twice, so the second answer comes from the
        // verified-token cache.
        let token = user_token_at(ws, key, 3600);
        for _ in 0..2 {
            for path in ["/api/webhooks", "/api/overview", "/api/settings"] {
                let r = server.get(path, &[("x-addon-token", &token)]);
                assert_eq!(r.status, 401, "{key} {path}: {}", r.body);
                assert!(r.error().contains(expected), "{}", r.body);
            }
        }
        // Within the allowance is fine.
        let close = user_token_at(ws, key, 30);
        assert_eq!(
            server
                .get("/api/webhooks", &[("x-addon-token", &close)])
                .status,
            200
        );

        // Lifecycle tokens.
        let ahead = json!(now_secs() + 3600);
        let lifecycle = sign(&with(base_claims(ws, ADDON), key, ahead.clone()));
        let r = server.post_json(
            "/lifecycle/status-changed",
            &[("x-addon-lifecycle-token", &lifecycle)],
            &json!({"addonId": ADDON, "workspaceId": ws, "status": "ACTIVE"}),
        );
        assert_eq!(r.status, 401, "{key}: {}", r.body);
        assert!(r.error().contains(expected), "{}", r.body);

        // Webhook signatures that are Clockify JWTs.
        let signature = sign(&with(base_claims(ws, ADDON), key, ahead.clone()));
        let r = server.post(
            "/webhooks/clockify/NEW_CLIENT",
            &[("clockify-signature", &signature)],
            br#"{"id":"c1"}"#,
        );
        assert_eq!(r.status, 401, "{key}: {}", r.body);
        assert!(r.error().contains(expected), "{}", r.body);

        // Installation tokens in an INSTALLED payload.
        let mut payload = install_payload("ws-token-times-2", ADDON, UNREACHABLE_API);
        payload["authToken"] = json!(sign(&with(
            base_claims("ws-token-times-2", ADDON),
            key,
            ahead
        )));
        let r = server.lifecycle("installed", &payload);
        assert_eq!(r.status, 400, "{key}: {}", r.body);
        assert!(r.error().contains(expected), "{}", r.body);
    }
    // The stored webhook token (matched by its bytes) is held to its nbf too.
    let r = server.post(
        "/webhooks/clockify/NEW_TAG",
        &[("clockify-signature", &early)],
        br#"{"id":"t1"}"#,
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.error().contains("not valid yet"), "{}", r.body);
    let events = server.admin_get(ws, ADDON, "/api/webhooks").json();
    assert_eq!(events["items"].as_array().unwrap().len(), 0, "{events}");
}

// ------------------------------------------------------------------------------ stream tickets

/// The status and first bytes of `GET path` (the stream never ends, so only the head is read).
fn open(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use std::io::Read;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut request = agent.get(&server.url(path));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.call().unwrap();
    let status = response.status().as_u16();
    let mut head = vec![0u8; 256];
    let mut reader = response.into_body().into_reader();
    let n = if status == 200 {
        0
    } else {
        reader.read(&mut head).unwrap_or(0)
    };
    (status, String::from_utf8_lossy(&head[..n]).into_owned())
}

#[test]
fn the_live_stream_opens_with_a_single_use_ticket_never_a_token_in_the_url() {
    let server = TestServer::start();
    let (a, b) = ("ws-ticket-a", "ws-ticket-b");
    server.install(a, ADDON, UNREACHABLE_API);
    server.install(b, ADDON, UNREACHABLE_API);
    let token = user_token(a, ADDON, "OWNER");
    // The token in the query string no longer opens anything.
    let (status, body) = open(
        &server,
        &format!("/api/webhooks/stream?auth_token={token}"),
        &[],
    );
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains(&token), "the token is never echoed");

    // A ticket (asked for with the token in the header) opens it once.
    let r = server.post(
        "/api/webhooks/stream-ticket",
        &[("x-addon-token", &token)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let answer = r.json();
    let ticket = answer["ticket"].as_str().unwrap().to_string();
    assert!(ticket.len() >= 40 && !ticket.contains(&token), "{answer}");
    let expires: jiff::Timestamp = answer["expiresAt"].as_str().unwrap().parse().unwrap();
    let left = expires.as_second() - jiff::Timestamp::now().as_second();
    assert!((55..=61).contains(&left), "valid 60 s: {answer}");
    let path = format!("/api/webhooks/stream?ticket={ticket}");
    assert_eq!(open(&server, &path, &[]).0, 200);
    let (status, body) = open(&server, &path, &[]);
    assert_eq!(status, 401, "used once: {body}");

    // No token, no ticket: no ticket; and a ticket is bound to its workspace's user.
    let r = server.post("/api/webhooks/stream-ticket", &[], b"");
    assert_eq!(r.status, 401, "{}", r.body);
    let ticket_b = crate::events_api::stream_ticket(&server, &user_token(b, ADDON, "USER"));
    server.lifecycle("deleted", &json!({"addonId": ADDON, "workspaceId": b}));
    let (status, body) = open(
        &server,
        &format!("/api/webhooks/stream?ticket={ticket_b}"),
        &[],
    );
    assert_eq!(status, 403, "the workspace was uninstalled since: {body}");
    // The header still works for clients that can send one.
    assert_eq!(
        open(
            &server,
            "/api/webhooks/stream",
            &[("x-addon-token", &token)]
        )
        .0,
        200
    );
}

// ------------------------------------------------------------------------------ delivery bodies

fn event_count(server: &TestServer, ws: &str) -> usize {
    count_events(server, ws, ADDON)
}

#[test]
fn clockify_deliveries_that_could_be_read_two_ways_are_refused_and_stored_nowhere() {
    let server = TestServer::start();
    let (a, b) = ("ws-body-a", "ws-body-b");
    server.install(a, ADDON, UNREACHABLE_API);
    server.install(b, ADDON, UNREACHABLE_API);
    let deep = format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "duplicate workspaceId naming another workspace",
            br#"{"workspaceId":"ws-body-b","workspaceId":"ws-body-b"}"#.to_vec(),
            "duplicate_key",
        ),
        (
            "duplicate workspaceId, one of them escaped",
            br#"{"workspaceId":"ws-body-a","workspace\u0049d":"ws-body-b"}"#.to_vec(),
            "duplicate_key",
        ),
        (
            "duplicate key deeper down",
            br#"{"workspaceId":"ws-body-a","user":{"id":"1","id":"2"}}"#.to_vec(),
            "duplicate_key",
        ),
        (
            "numeric workspaceId",
            br#"{"workspaceId":7}"#.to_vec(),
            "workspace_not_string",
        ),
        (
            "invalid UTF-8",
            b"{\"workspaceId\":\"ws-body-a\",\"name\":\"\xc3\x28\"}".to_vec(),
            "invalid_utf8",
        ),
        ("nested past the limit", deep.into_bytes(), "too_deep"),
        (
            "a number that fits nothing",
            br#"{"amount":1e999}"#.to_vec(),
            "invalid_json",
        ),
        (
            "not an object",
            br#"[{"workspaceId":"ws-body-a"}]"#.to_vec(),
            "not_object",
        ),
        ("a bare string", br#""ws-body-a""#.to_vec(), "not_object"),
    ];
    for (name, body, reason) in &cases {
        let reason_label = format!("reason=\"{reason}\"");
        let labels = [r#"source="clockify""#, reason_label.as_str()];
        let before = server.metric("webhook_rejections_total", &labels);
        let r = server.deliver(a, ADDON, "NEW_CLIENT", body);
        assert_eq!(r.status, 400, "{name}: {}", r.body);
        r.error();
        let after = server.metric("webhook_rejections_total", &labels);
        assert!(after >= before + 1.0, "{name}: counted as {reason}");
    }
    assert_eq!(event_count(&server, a), 0, "nothing stored in A");
    assert_eq!(event_count(&server, b), 0, "nothing stored in B");
    // The sample payloads still pass.
    for (event, body) in webhook_samples().into_iter().take(5) {
        let mut value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if value.get("workspaceId").is_some() {
            value["workspaceId"] = json!(a);
        }
        let r = server.deliver(a, ADDON, &event, value.to_string().as_bytes());
        assert_eq!(r.status, 200, "{event}: {}", r.body);
    }
}

#[test]
fn custom_sources_still_store_what_they_are_sent_byte_for_byte() {
    let server = TestServer::start();
    let ws = "ws-body-custom";
    server.install(ws, ADDON, UNREACHABLE_API);
    let r = post_as_owner(
        &server,
        ws,
        "/api/sources",
        Some(&json!({"name": "legacy"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let source = r.json();
    let path = source["ingestUrl"]
        .as_str()
        .unwrap()
        .trim_start_matches(&server.base)
        .to_string();
    let secret = source["secret"].as_str().unwrap().to_string();
    let body = br#"{"workspaceId":1,"workspaceId":"x","n":123456789012345678901234567890}"#;
    let r = server.post(
        &path,
        &[("authorization", &format!("Bearer {secret}"))],
        body,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.json()["webhookId"].as_str().unwrap().to_string();
    let raw = server.admin_get(ws, ADDON, &format!("/api/webhooks/{id}/raw"));
    assert_eq!(raw.body.as_bytes(), body);
}

// ------------------------------------------------------------------------------ metrics and logs

/// Sends a raw HTTP/1.1 request (any method, any path) and returns the status line.
fn raw_request(base: &str, method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.lines().next().unwrap_or("").to_string()
}

/// The number of series of the request metrics in /metrics.
fn request_series(server: &TestClient) -> usize {
    server
        .get("/metrics", &[])
        .body
        .lines()
        .filter(|l| {
            l.starts_with("http_requests_total{")
                || l.starts_with("http_request_duration_seconds_count{")
        })
        .count()
}

#[test]
fn made_up_methods_and_paths_add_no_metric_series() {
    let server = TestServer::start();
    // Warm up the few series the made-up requests may legitimately share.
    for method in ["GET", "POST", "BREW", "PUT"] {
        raw_request(&server.base, method, "/warm-up");
        raw_request(&server.base, method, "/healthz");
    }
    let before = request_series(&server);
    for i in 0..300 {
        let method = format!("X{i}METHOD");
        let status = raw_request(&server.base, &method, &format!("/nowhere/{i}"));
        assert!(status.starts_with("HTTP/1.1 4"), "{status}");
        raw_request(&server.base, &method, "/healthz");
        raw_request(&server.base, "GET", &format!("/api/made-up-{i}?x={i}"));
    }
    let after = request_series(&server);
    assert!(
        after <= before + 2,
        "900 made-up requests grew the request metrics from {before} to {after} series"
    );
    let text = server.get("/metrics", &[]).body;
    assert!(
        text.contains("method=\"other\""),
        "unknown methods fold into other"
    );
    assert!(!text.contains("X1METHOD") && !text.contains("made-up-1"));
}

#[test]
fn a_flood_of_rejections_is_counted_but_logged_at_a_bounded_rate() {
    let temp = tempfile::tempdir().unwrap();
    let mut server = LoggedServer::start(temp.path(), &["--rejection-log-interval-secs", "2"]);
    let forged = sign_with(&base_claims("ws-flood", ADDON), OTHER_PRIVATE_KEY);
    const FLOOD: usize = 200;
    for i in 0..FLOOD {
        let r = server.client.post(
            "/webhooks/clockify/NEW_TAG",
            &[("clockify-signature", &forged)],
            format!("{{\"id\":\"{i}\"}}").as_bytes(),
        );
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let counted = server.client.metric(
        "webhook_rejections_total",
        &["reason=\"invalid_signature\""],
    );
    assert!(
        counted >= FLOOD as f64,
        "every rejection counted: {counted}"
    );
    let route = "/webhooks/clockify/{event}";
    let is_summary = |line: &serde_json::Value| {
        line["route"] == route && line["suppressed"].is_u64() && line["status"] == 401
    };
    // The summary comes at the end of the interval.
    let mut suppressed = 0;
    let mut summaries = 0;
    while suppressed + count_handled(&server.seen, route) < FLOOD {
        let line = server
            .wait_for(Duration::from_secs(30), is_summary)
            .unwrap_or_else(|| panic!("no summary line: {:#?}", server.seen));
        suppressed += line["suppressed"].as_u64().unwrap() as usize;
        summaries += 1;
    }
    let seen = server.kill();
    let handled = count_handled(&seen, route);
    assert_eq!(
        handled + suppressed,
        FLOOD,
        "every rejection logged or summarised"
    );
    assert!(
        handled <= 5 * (summaries + 1),
        "{handled} lines for {FLOOD} rejections in {summaries} intervals"
    );
    let summary = seen.iter().find(|l| is_summary(l)).unwrap();
    assert!(
        summary["message"]
            .as_str()
            .is_some_and(|m| m.contains("more rejected requests not logged")),
        "{summary}"
    );
}

/// `handled` lines for 401s on `route`.
fn count_handled(lines: &[serde_json::Value], route: &str) -> usize {
    lines
        .iter()
        .filter(|l| l["message"] == "handled" && l["route"] == route && l["status"] == 401)
        .count()
}

// ------------------------------------------------------------------------------ explorer

/// A server allowed to call a fake Clockify that answers 200 `{}` (or as scripted).
fn with_fake(
    tweak: impl FnOnce(&mut clockify_studio::config::Config),
) -> (TestServer, FakeClockify) {
    let fake = FakeClockify::start();
    let host = fake.host.clone();
    let server = TestServer::start_with(move |c| {
        c.allow_api_hosts = vec![host];
        c.max_rps = 50;
        tweak(c);
    });
    (server, fake)
}

#[test]
fn every_catalog_operation_builds_its_path_in_the_explorer() {
    use clockify_studio::clockify::catalog::{ParamLocation, ServerFamily, catalog};
    let (server, fake) = with_fake(|_| {});
    let ws = "ws-catalog-paths";
    install_settled(&server, ws, &fake.base);
    let mut called = 0;
    for op in catalog().operations() {
        let mut path_params = serde_json::Map::new();
        let mut query = serde_json::Map::new();
        let mut expected = op.path.clone();
        for p in &op.parameters {
            let value = match p.enum_values.first() {
                Some(first) => first.clone(),
                None if p.location == ParamLocation::Path => format!("p-{}", p.name),
                None => "x".to_string(),
            };
            match p.location {
                ParamLocation::Path if p.name == "workspaceId" => {
                    expected = expected.replace("{workspaceId}", ws);
                }
                ParamLocation::Path => {
                    expected = expected.replace(&format!("{{{}}}", p.name), &value);
                    path_params.insert(p.name.clone(), json!(value));
                }
                ParamLocation::Query if p.required => {
                    query.insert(p.name.clone(), json!(value));
                }
                _ => {}
            }
        }
        let mut call = json!({"operationId": op.id, "pathParams": path_params, "query": query});
        if op.body.as_ref().is_some_and(|b| b.required) {
            call["body"] = json!({});
        }
        let r = server.api("POST", ws, ADDON, "OWNER", "/api/execute", Some(&call));
        assert!(
            !r.body.contains("path parameter"),
            "{}: path building failed: {}",
            op.id,
            r.body
        );
        if !op.addon_token || op.multipart() {
            assert_eq!(r.status, 400, "{}: {}", op.id, r.body);
            continue;
        }
        let base = match op.server {
            ServerFamily::Backend => format!("{}/api", fake.base),
            ServerFamily::Reports => format!("{}/reports", fake.base),
            // The test installation has no ptoUrl: refused before any call, after the path.
            ServerFamily::Pto => {
                assert_eq!(r.status, 503, "{}: {}", op.id, r.body);
                assert!(r.error().contains("pto"), "{}: {}", op.id, r.body);
                continue;
            }
        };
        assert_eq!(r.status, 200, "{}: {}", op.id, r.body);
        let url = r.json()["request"]["url"].as_str().unwrap().to_string();
        let path = url.split('?').next().unwrap();
        assert_eq!(path, format!("{base}{expected}"), "{}", op.id);
        called += 1;
    }
    // getLoggedUser and generateSharedReportV1 were refused before (no workspaceId).
    assert!(called > 100, "only {called} operations called");
    let paths: Vec<String> = fake.calls().into_iter().map(|c| c.path).collect();
    assert!(
        paths.contains(&"/api/v1/user".to_string()),
        "getLoggedUser was called"
    );
}

// ------------------------------------------------------------------------------ what a member sees

#[test]
fn members_call_as_themselves_and_see_no_data_read_with_the_add_on_token() {
    let (server, fake) = with_fake(|_| {});
    let ws = "ws-members";
    fake.respond(|call| {
        call.path.ends_with("/clients").then(|| {
            (
                200,
                vec![],
                br#"[{"id":"c1","name":"Acme","email":"ceo@acme.example"}]"#.to_vec(),
            )
        })
    });
    install_settled(&server, ws, &fake.base);
    let member = user_token(ws, ADDON, "USER");
    let execute = |role: &str, call: serde_json::Value| {
        server.api("POST", ws, ADDON, role, "/api/execute", Some(&call))
    };
    // The add-on's token is refused to a member, with the reason.
    let r = execute("USER", json!({"operationId": "getClients", "as": "addon"}));
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.error().contains("as: \"user\""), "{}", r.body);
    // By default a member calls as themselves: Clockify sees their token.
    let before = fake.calls().len();
    let r = execute("USER", json!({"operationId": "getClients"}));
    assert_eq!(r.status, 200, "{}", r.body);
    let sent = fake.calls()[before..]
        .iter()
        .rfind(|c| c.path.ends_with("/clients"))
        .cloned()
        .expect("the call went out");
    assert_eq!(sent.headers["x-addon-token"], member);
    // Admins keep both, the add-on's token by default.
    let r = execute("OWNER", json!({"operationId": "getClients"}));
    assert_eq!(r.status, 200, "{}", r.body);
    let sent = fake
        .calls()
        .into_iter()
        .rfind(|c| c.path.ends_with("/clients"))
        .unwrap();
    assert_ne!(
        sent.headers["x-addon-token"],
        user_token(ws, ADDON, "OWNER")
    );
    let r = execute(
        "WORKSPACE_ADMIN",
        json!({"operationId": "getClients", "as": "user"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // The history: a member sees only calls made as a user, by them (all three tokens are
    // user-1's; explorer::members_see_only_their_own_history_and_admins_see_all has others).
    let history = |role: &str| {
        let r = server.api("GET", ws, ADDON, role, "/api/executions", None);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["items"].as_array().unwrap().clone()
    };
    assert_eq!(history("OWNER").len(), 3);
    let seen = history("USER");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|e| e["as"] == "user"));

    // The entity cache is the add-on token's reading: admins only.
    let r = server.api("GET", ws, ADDON, "USER", "/api/entities", None);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(!r.body.contains("ceo@acme.example"));
    let r = server.api(
        "GET",
        ws,
        ADDON,
        "OWNER",
        "/api/entities?type=clients",
        None,
    );
    assert!(r.body.contains("ceo@acme.example"), "{}", r.body);
    // Progress and overview carry counts, never entities.
    for path in ["/api/bootstrap", "/api/overview"] {
        let r = server.api("GET", ws, ADDON, "USER", path, None);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(
            !r.body.contains("ceo@acme.example") && !r.body.contains("Acme"),
            "{path}: {}",
            r.body
        );
    }

    // Flow actions run with the add-on's token: a member sees their outcome, not the answer.
    let flow_id = tag_flow(
        &server,
        ws,
        json!({"name": "clients", "operationId": "getClients"}),
    );
    deliver_tag(&server, ws, "t1");
    let mut runs = Vec::new();
    assert!(
        wait_until(DEADLINE, || {
            runs = server
                .admin_get(ws, ADDON, &format!("/api/flows/{flow_id}/runs"))
                .json()["items"]
                .as_array()
                .unwrap()
                .clone();
            runs.first().is_some_and(|r| r["status"] == "succeeded")
        }),
        "{runs:?}"
    );
    let run_path = format!("/api/runs/{}", runs[0]["id"].as_str().unwrap());
    let admin_view = server.api("GET", ws, ADDON, "OWNER", &run_path, None);
    assert!(
        admin_view.body.contains("ceo@acme.example"),
        "{}",
        admin_view.body
    );
    let member_view = server.api("GET", ws, ADDON, "USER", &run_path, None);
    assert_eq!(member_view.status, 200, "{}", member_view.body);
    assert!(
        !member_view.body.contains("ceo@acme.example"),
        "{}",
        member_view.body
    );
    assert_eq!(member_view.json()["actions"][0]["response"]["hidden"], true);
    assert_eq!(member_view.json()["actions"][0]["response"]["status"], 200);
}

// ------------------------------------------------------------------------------ data lifecycle

/// `check --workspace ws` on `dir`: the workspace's rows per table.
fn workspace_rows(dir: &std::path::Path, ws: &str) -> std::collections::BTreeMap<String, u64> {
    let stdout = succeeded(run_on(dir, &["check", "--workspace", ws]));
    let rows = table_lines(&stdout, &format!("workspace {ws} table "));
    assert!(rows.len() >= 17, "{stdout}");
    rows
}

/// `<prefix>TABLE: N` lines of a command's output, by table.
fn table_lines(stdout: &str, prefix: &str) -> std::collections::BTreeMap<String, u64> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|l| l.split_once(": "))
        .map(|(table, n)| (table.to_string(), n.parse().unwrap()))
        .collect()
}

/// Writes rows a busy server leaves behind but a short test does not produce: a dedupe row in
/// its table (they are written in bulk after 32k deliveries), an entity index row (in bulk
/// too), a queued run and the count of its starts (the queue is empty once runs finish). The
/// server must be stopped.
fn add_rows_a_busy_server_would_have(dir: &std::path::Path, ws: &str) {
    const DEDUPE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("event_dedupe");
    const QUEUE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("flow_run_queue");
    const STARTS: redb::TableDefinition<&[u8], &[u8]> =
        redb::TableDefinition::new("flow_run_starts");
    let db = redb::Database::open(dir.join("clockify-studio.redb")).unwrap();
    let wtx = db.begin_write().unwrap();
    let mut key = vec![ws.len() as u8];
    key.extend_from_slice(ws.as_bytes());
    key.push(b"NEW_TAG".len() as u8);
    key.extend_from_slice(b"NEW_TAG");
    key.extend_from_slice(&[7u8; 32]);
    wtx.open_table(DEDUPE)
        .unwrap()
        .insert(key.as_slice(), [0u8; 24].as_slice())
        .unwrap();
    wtx.open_table(QUEUE)
        .unwrap()
        .insert([9u8; 16].as_slice(), ws.as_bytes())
        .unwrap();
    // The queued run was executing when the process died once.
    wtx.open_table(STARTS)
        .unwrap()
        .insert([9u8; 16].as_slice(), 1u32.to_le_bytes().as_slice())
        .unwrap();
    // An entity index row of bucket 1 (buckets are written after 131,072 rows):
    // `[ws][bucket][entity][event id]`.
    const ENTITY_EVENTS: redb::TableDefinition<&[u8], &[u8]> =
        redb::TableDefinition::new("entity_events");
    let mut key = vec![ws.len() as u8];
    key.extend_from_slice(ws.as_bytes());
    key.extend_from_slice(&1u32.to_be_bytes());
    key.push(1);
    key.extend_from_slice(&[5u8; 12]);
    key.extend_from_slice(&[9u8; 16]);
    wtx.open_table(ENTITY_EVENTS)
        .unwrap()
        .insert(key.as_slice(), [].as_slice())
        .unwrap();
    wtx.commit().unwrap();
}

/// Fills every per-workspace table of `ws` through the API: a destination, events (each with
/// a delivery that stays pending: the destination's host resolves to loopback, which is
/// refused, and the next attempt is seconds away), a source, an explorer call, a flow with a
/// finished run (bootstrap and subscription sync ran on install).
fn fill_workspace(server: &TestServer, ws: &str) {
    let r = post_as_owner(
        server,
        ws,
        "/api/destinations",
        Some(&json!({"name": "warehouse", "url": "https://localhost:9/hook"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    for i in 0..3 {
        let body = json!({"id": format!("c{i}"), "name": format!("client {i}"), "workspaceId": ws});
        let r = server.deliver(ws, ADDON, "NEW_CLIENT", body.to_string().as_bytes());
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = post_as_owner(
        server,
        ws,
        "/api/sources",
        Some(&json!({"name": "billing"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = post_as_owner(
        server,
        ws,
        "/api/execute",
        Some(&json!({"operationId": "getTags"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let flow_id = tag_flow(
        server,
        ws,
        json!({"name": "tags", "operationId": "getTags"}),
    );
    deliver_tag(server, ws, "t1");
    assert!(wait_until(DEADLINE, || {
        server
            .admin_get(ws, ADDON, &format!("/api/flows/{flow_id}"))
            .json()["counts"]["succeeded"]
            == 1
    }));
    // A workspace switch (and with it an audit entry) is the workspace's too.
    let r = post_as_owner(
        server,
        ws,
        "/api/flows/pause",
        Some(&json!({"reason": "filled", "mode": "skip"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn the_purge_of_an_uninstalled_workspace_leaves_nothing_behind() {
    let fake = FakeClockify::start();
    fake.respond(|call| {
        call.path.ends_with("/clients").then(|| {
            (
                200,
                vec![],
                br#"[{"id":"c1","name":"Acme","email":"ceo@acme.example"}]"#.to_vec(),
            )
        })
    });
    let temp = tempfile::tempdir().unwrap();
    let allow = |c: &mut clockify_studio::config::Config, host: &str| {
        c.allow_api_hosts = vec![host.to_string()];
        c.max_rps = 50;
    };
    let (gone, kept) = ("ws-purged", "ws-kept");
    let server = TestServer::start_in(temp.path(), |c| allow(c, &fake.host));
    for ws in [gone, kept] {
        install_settled(&server, ws, &fake.base);
        fill_workspace(&server, ws);
    }
    // The kept workspace keeps its events and runs, which will be 91 days old below.
    let keep_all = json!({"addonId": ADDON, "workspaceId": kept, "settings": [
        {"id": "webhook_retention_days", "value": 0}, {"id": "flow_run_retention_days", "value": 0}]});
    assert_eq!(server.lifecycle("settings-updated", &keep_all).status, 200);
    // Read while the server runs: the install's webhook token is indexed.
    assert!(workspace_rows(temp.path(), gone)["webhook_tokens"] > 0);
    let r = server.lifecycle("deleted", &json!({"addonId": ADDON, "workspaceId": gone}));
    assert_eq!(r.status, 200, "{}", r.body);
    let dir = server.stop();
    add_rows_a_busy_server_would_have(&dir, gone);
    let before = workspace_rows(&dir, gone);
    for (table, n) in &before {
        // Uninstalling erased the tokens at once; everything else waits for retention.
        if table != "webhook_tokens" {
            assert!(*n > 0, "{table} was not filled: {before:?}");
        }
    }
    let kept_before = workspace_rows(&dir, kept);

    // 91 days later by the retention clock (the default retention is 90 days).
    let server = TestServer::start_in(&dir, |c| {
        allow(c, &fake.host);
        c.retention_clock_skew = Duration::from_secs(91 * 24 * 3600);
        c.retention_interval = Duration::from_millis(50);
    });
    // (The retention metrics are the whole test process's: watch the rows themselves.)
    let mut after = before.clone();
    let purged = wait_until(2 * DEADLINE, || {
        after = workspace_rows(&server.data_dir, gone);
        let empty = after.values().all(|n| *n == 0);
        if !empty {
            // Each look is a `check` process reading the whole file: not too often.
            std::thread::sleep(Duration::from_millis(200));
        }
        empty
    });
    assert!(purged, "left behind: {after:?}");
    let dir = server.stop();
    let after = workspace_rows(&dir, gone);
    assert!(after.values().all(|n| *n == 0), "left behind: {after:?}");
    assert_eq!(
        workspace_rows(&dir, kept),
        kept_before,
        "another workspace was touched"
    );
}

/// `erase-workspace args…` on `dir`; returns stdout (the command must succeed).
fn erase(dir: &std::path::Path, args: &[&str]) -> String {
    succeeded(run_on(dir, &[&["erase-workspace"], args].concat()))
}

/// The per-table lines of an `erase-workspace` output.
fn erased_rows(stdout: &str) -> std::collections::BTreeMap<String, u64> {
    table_lines(stdout, "table ")
}

#[test]
fn erase_workspace_works_on_a_stopped_servers_file() {
    let (server, fake) = with_fake(|_| {});
    let (erased, kept) = ("ws-erase-offline", "ws-erase-offline-kept");
    for ws in [erased, kept] {
        install_settled(&server, ws, &fake.base);
        fill_workspace(&server, ws);
    }
    let dir = server.stop();
    let before = workspace_rows(&dir, erased);
    let kept_before = workspace_rows(&dir, kept);

    let dry = erase(&dir, &[erased, "--dry-run"]);
    assert!(
        dry.contains("dry run") && dry.contains("via the data file"),
        "{dry}"
    );
    assert_eq!(
        erased_rows(&dry),
        before,
        "the dry run reports what is there"
    );
    assert_eq!(workspace_rows(&dir, erased), before, "and removes nothing");

    let done = erase(&dir, &[erased]);
    assert!(
        done.contains("erased workspace") && done.contains("via the data file"),
        "{done}"
    );
    assert_eq!(erased_rows(&done), before, "it reports what it removed");
    let after = workspace_rows(&dir, erased);
    assert!(after.values().all(|n| *n == 0), "left behind: {after:?}");
    assert_eq!(workspace_rows(&dir, kept), kept_before);
    // Nothing left: a second run removes nothing.
    let again = erase(&dir, &[erased]);
    assert!(erased_rows(&again).values().all(|n| *n == 0), "{again}");
}

#[test]
fn erase_workspace_works_through_a_running_servers_control_socket() {
    use std::os::unix::fs::PermissionsExt;
    let (server, fake) = with_fake(|_| {});
    let (erased, kept) = ("ws-erase-live", "ws-erase-live-kept");
    for ws in [erased, kept] {
        install_settled(&server, ws, &fake.base);
        fill_workspace(&server, ws);
    }
    let socket = server.data_dir.join("control.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the control socket is the owner's alone"
    );
    let before = workspace_rows(&server.data_dir, erased);
    assert!(before["events"] > 0 && before["entities"] > 0, "{before:?}");

    let dry = erase(&server.data_dir, &[erased, "--dry-run"]);
    assert!(dry.contains("via the running server"), "{dry}");
    assert_eq!(erased_rows(&dry), before);
    assert_eq!(
        event_count(&server, erased),
        4,
        "the dry run removes nothing"
    );

    let done = erase(&server.data_dir, &[erased]);
    assert!(
        done.contains("erased workspace") && done.contains("via the running server"),
        "{done}"
    );
    assert_eq!(erased_rows(&done)["events"], before["events"]);
    let after = workspace_rows(&server.data_dir, erased);
    assert!(after.values().all(|n| *n == 0), "left behind: {after:?}");
    // The workspace is gone for the running server too, and the other one carries on.
    let r = server.deliver(erased, ADDON, "NEW_TAG", br#"{"id":"late"}"#);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(server.admin_get(erased, ADDON, "/api/webhooks").status, 403);
    let r = server.deliver(kept, ADDON, "NEW_TAG", br#"{"id":"still-here"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(event_count(&server, kept), 5);
    let dir = server.stop();
    assert!(
        !dir.join("control.sock").exists(),
        "the socket goes with the server"
    );
    let after = workspace_rows(&dir, erased);
    assert!(after.values().all(|n| *n == 0), "left behind: {after:?}");
}

// ------------------------------------------------------------------------------ entity cache

/// Answers `GET …/{list}` with `items()` paged by `page` and `page-size` (default 50).
fn serve_list(
    fake: &FakeClockify,
    list: &'static str,
    items: impl Fn() -> Vec<serde_json::Value> + Send + Sync + 'static,
) {
    fake.respond(move |call| {
        if call.method != "GET" || !call.path.ends_with(list) {
            return None;
        }
        let query: std::collections::HashMap<String, String> = call
            .query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
        let size: usize = query
            .get("page-size")
            .and_then(|p| p.parse().ok())
            .unwrap_or(50);
        let all = items();
        let slice: Vec<_> = all.into_iter().skip((page - 1) * size).take(size).collect();
        Some((200, vec![], serde_json::to_vec(&slice).unwrap()))
    });
}

/// The cached entities of one type, by id.
fn cached(
    server: &TestServer,
    ws: &str,
    entity_type: &str,
) -> std::collections::HashMap<String, serde_json::Value> {
    let r = server.admin_get(
        ws,
        ADDON,
        &format!("/api/entities?type={entity_type}&limit=1000"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

fn bootstrap_done(server: &TestServer, ws: &str) -> serde_json::Value {
    let mut status = json!(null);
    let done = wait_until(Duration::from_secs(60), || {
        status = server.admin_get(ws, ADDON, "/api/bootstrap").json();
        status["status"] == "done"
    });
    assert!(done, "{status}");
    status
}

#[test]
fn webhook_events_keep_the_entity_cache_current() {
    let (server, fake) = with_fake(|_| {});
    let ws = "ws-entity-events";
    serve_list(&fake, "/clients", || {
        vec![json!({"id": "c1", "name": "Acme", "email": "ceo@acme.example"})]
    });
    install_settled(&server, ws, &fake.base);
    bootstrap_done(&server, ws);
    assert!(cached(&server, ws, "clients").contains_key("c1"));
    let deliver = |event: &str, body: serde_json::Value| {
        let r = server.deliver(ws, ADDON, event, body.to_string().as_bytes());
        assert_eq!(r.status, 200, "{event}: {}", r.body);
    };
    let eventually = |what: &str, check: &dyn Fn() -> bool| {
        assert!(wait_until(DEADLINE, check), "{what}");
    };
    deliver(
        "NEW_CLIENT",
        json!({"id": "c2", "name": "Beta", "workspaceId": ws}),
    );
    eventually("a created client is cached", &|| {
        cached(&server, ws, "clients")
            .get("c2")
            .is_some_and(|e| e["name"] == "Beta")
    });
    deliver(
        "CLIENT_UPDATED",
        json!({"id": "c1", "name": "Acme Ltd", "workspaceId": ws}),
    );
    eventually("an update is merged", &|| {
        cached(&server, ws, "clients")
            .get("c1")
            .is_some_and(|e| e["name"] == "Acme Ltd" && e["data"]["email"] == "ceo@acme.example")
    });
    deliver(
        "CLIENT_DELETED",
        json!({"id": "c1", "name": "Acme Ltd", "workspaceId": ws}),
    );
    eventually("a deleted client goes", &|| {
        !cached(&server, ws, "clients").contains_key("c1")
    });
    deliver(
        "NEW_TASK",
        json!({"id": "task-1", "name": "Design", "projectId": "p1"}),
    );
    eventually("tasks land where the bootstrap keeps them", &|| {
        cached(&server, ws, "projects/tasks").contains_key("task-1")
    });
    deliver(
        "USER_JOINED_WORKSPACE",
        json!({"id": "u9", "name": "Nina", "email": "nina@x.example"}),
    );
    eventually("a joined user is cached", &|| {
        cached(&server, ws, "users").contains_key("u9")
    });
    deliver(
        "USER_DELETED_FROM_WORKSPACE",
        json!({"id": "u9", "name": "Nina", "email": "nina@x.example"}),
    );
    eventually("a removed user goes", &|| {
        !cached(&server, ws, "users").contains_key("u9")
    });
}

#[test]
fn the_entity_cache_is_refreshed_and_drops_what_clockify_no_longer_has() {
    let listing = Arc::new(std::sync::Mutex::new(vec!["c1", "c3"]));
    let (server, fake) = with_fake(|c| c.entity_refresh = Duration::from_secs(1));
    let ws = "ws-entity-refresh";
    let current = listing.clone();
    serve_list(&fake, "/clients", move || {
        current
            .lock()
            .unwrap()
            .iter()
            .map(|id| json!({"id": id, "name": format!("client {id}")}))
            .collect()
    });
    install_settled(&server, ws, &fake.base);
    let first = bootstrap_done(&server, ws);
    let clients = cached(&server, ws, "clients");
    assert!(
        clients.contains_key("c1") && clients.contains_key("c3"),
        "{clients:?}"
    );
    // c1 is deleted in Clockify while no event says so.
    *listing.lock().unwrap() = vec!["c3"];
    let refreshed = wait_until(DEADLINE, || {
        let status = server.admin_get(ws, ADDON, "/api/bootstrap").json();
        let clients = cached(&server, ws, "clients");
        status["startedAt"] != first["startedAt"]
            && status["status"] == "done"
            && !clients.contains_key("c1")
            && clients.contains_key("c3")
    });
    assert!(refreshed, "{:?}", cached(&server, ws, "clients"));
}

#[test]
fn bootstrap_pages_to_the_end_and_marks_a_step_cut_by_the_ceiling_as_truncated() {
    let (server, fake) = with_fake(|c| c.bootstrap_max_pages = 10);
    let ws = "ws-bootstrap-pages";
    serve_list(&fake, "/clients", || {
        (0..120)
            .map(|i| json!({"id": format!("c{i}"), "name": format!("client {i}")}))
            .collect()
    });
    serve_list(&fake, "/tags", || {
        (0..1_200)
            .map(|i| json!({"id": format!("t{i}"), "name": format!("tag {i}")}))
            .collect()
    });
    install_settled(&server, ws, &fake.base);
    let status = bootstrap_done(&server, ws);
    let step = |status: &serde_json::Value, id: &str| {
        status["operations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["operationId"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no {id} in {status}"))
    };
    let clients = step(&status, "getClients");
    assert_eq!(
        (clients["items"].clone(), clients["truncated"].clone()),
        (json!(120), json!(false))
    );
    let tags = step(&status, "getTags");
    assert_eq!(tags["pages"], 10, "{tags}");
    assert_eq!(tags["items"], 500, "{tags}");
    assert_eq!(
        tags["truncated"], true,
        "the ceiling is reported, not hidden: {tags}"
    );
    assert_eq!(status["truncated"], 1, "{status}");

    // A workspace may raise its ceiling; then every page is fetched, past the old 20.
    let raise = json!({"addonId": ADDON, "workspaceId": ws, "settings": [{"id": "bootstrap_max_pages", "value": 100}]});
    assert_eq!(server.lifecycle("settings-updated", &raise).status, 200);
    let r = post_as_owner(&server, ws, "/api/bootstrap", None);
    assert_eq!(r.status, 202, "{}", r.body);
    let status = bootstrap_done(&server, ws);
    let tags = step(&status, "getTags");
    assert_eq!(
        (tags["items"].clone(), tags["truncated"].clone()),
        (json!(1_200), json!(false)),
        "{tags}"
    );
    assert_eq!(
        cached(&server, ws, "tags").len(),
        1000,
        "the listing's limit"
    );
    assert_eq!(status["truncated"], 0);
}
