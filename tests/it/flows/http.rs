//! The "HTTP request" action: sent to a local receiver allowed by `--allow-destination-host`
//! under the outbound rules of destinations, its answer read by a later Clockify action, its
//! header values sealed and never shown.

use super::*;

const SECRET: &str = "k-very-secret-1";

/// A server that calls the fake Clockify and may send to `receiver`.
fn start_allowing(receiver: &FakeClockify) -> Env {
    let host = receiver.host.clone();
    start_with(&[WS], move |c| c.allow_destination_hosts = vec![host])
}

fn http_action(url: &str, headers: Value, body: Value) -> Value {
    json!({"name": "notify", "kind": "http", "method": "POST", "url": url,
           "headers": headers, "body": body})
}

/// The flow's HTTP action posts the rendered body and headers; the next action (Clockify)
/// reads its answer; the run records both; the header value never comes back.
fn ticket_flow(receiver: &FakeClockify) -> Value {
    json!({"name": "ticket", "trigger": {"events": ["NEW_TIME_ENTRY"]},
    "actions": [
        http_action(
            &format!("{}/hook/{{{{ event.projectId }}}}", receiver.base),
            json!({"X-Api-Key": SECRET}),
            json!({"entry": "{{ event.id }}", "text": "{{ event.description }}"})),
        update_entry_action("sign", json!({
            "start": "{{ event.timeInterval.start }}",
            "description": "{{ event.description }} [{{ actions.notify.body.ticket }}]",
        })),
    ]})
}

#[test]
fn an_http_action_posts_to_a_receiver_and_a_later_action_uses_its_answer() {
    let receiver = FakeClockify::start();
    receiver.respond(|call| {
        call.path
            .starts_with("/hook/")
            .then(|| (201, vec![], br#"{"ticket": "T-42"}"#.to_vec()))
    });
    let env = start_allowing(&receiver);
    let flow = create_flow(&env.server, WS, &ticket_flow(&receiver));

    // Shown masked, in the flow and in the list.
    let shown = get(&env.server, WS, &format!("/api/flows/{flow}"));
    assert_eq!(shown["actions"][0]["kind"], "http");
    assert_eq!(
        shown["actions"][0]["headers"],
        json!({"X-Api-Key": "********"})
    );
    let listed = env
        .server
        .api("GET", WS, ADDON, "OWNER", "/api/flows", None);
    assert!(!listed.body.contains(SECRET), "{}", listed.body);

    // A dry run shows what would be sent, and sends nothing.
    let dry = test_flow(
        &env.server,
        "OWNER",
        &flow,
        &json!({"event": json!({"id": "te-d", "projectId": "p-9", "description": "Dry",
                                "timeInterval": {"start": "2024-05-01T09:00:00Z"}}),
                "eventType": "NEW_TIME_ENTRY"}),
    );
    assert_eq!(dry.status, 200, "{}", dry.body);
    let dry = dry.json();
    let request = &dry["actions"][0]["request"];
    assert_eq!(request["method"], "POST");
    assert_eq!(request["url"], format!("{}/hook/p-9", receiver.base));
    assert_eq!(request["body"], json!({"entry": "te-d", "text": "Dry"}));
    assert_eq!(request["headers"]["X-Api-Key"], "********");
    assert!(!dry.to_string().contains(SECRET));
    assert!(receiver.calls().is_empty(), "a dry run sent something");
    // What the editor sends back (values masked) can be tried without the stored flow.
    let mut masked = shown.clone();
    for key in [
        "id",
        "createdAt",
        "updatedAt",
        "lastRun",
        "counts",
        "warnings",
        "disabledReason",
    ] {
        masked.as_object_mut().unwrap().remove(key);
    }
    let r = post_as(
        &env.server,
        "OWNER",
        "/api/flows/candidates",
        Some(&json!({"flow": masked, "webhookIds": []})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post_as(
        &env.server,
        "OWNER",
        "/api/flows/test",
        Some(
            &json!({"flow": masked, "event": {"id": "te-u", "projectId": "p-8", "description": "U",
                     "timeInterval": {"start": "2024-05-01T09:00:00Z"}}}),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["actions"][0]["request"]["headers"]["X-Api-Key"],
        "********"
    );

    deliver_new_entry(&env.server, "te-1", "p-1", "Design");
    let run = finished_runs(&env.server, WS, &flow, 1).remove(0);
    assert_eq!(run["status"], "succeeded", "{run}");
    let sent = receiver.calls();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        (sent[0].method.as_str(), sent[0].path.as_str()),
        ("POST", "/hook/p-1")
    );
    assert_eq!(sent[0].headers["x-api-key"], SECRET);
    assert_eq!(sent[0].headers["content-type"], "application/json");
    assert_eq!(
        body_of(&sent[0]),
        json!({"entry": "te-1", "text": "Design"})
    );
    let puts = calls_to(&env.fake, "PUT", "/time-entries/te-1");
    assert_eq!(puts.len(), 1);
    assert_eq!(body_of(&puts[0])["description"], "Design [T-42]");
    // The run records the request (header values masked) and the answer.
    let notify = &run["actions"][0];
    assert_eq!(notify["kind"], "http");
    assert_eq!(
        notify["request"]["url"],
        format!("{}/hook/p-1", receiver.base)
    );
    assert_eq!(notify["request"]["headers"]["X-Api-Key"], "********");
    assert_eq!(notify["response"]["status"], 201);
    assert_eq!(notify["response"]["body"]["ticket"], "T-42");
    assert!(!run.to_string().contains(SECRET));

    // Saved back unchanged (masked), the stored value is kept.
    let definition = masked;
    let r = env.server.api(
        "PUT",
        WS,
        ADDON,
        "OWNER",
        &format!("/api/flows/{flow}"),
        Some(&definition),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    deliver_new_entry(&env.server, "te-2", "p-2", "Review");
    finished_runs(&env.server, WS, &flow, 2);
    let sent = receiver.calls();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[1].headers["x-api-key"], SECRET,
        "the masked value kept the stored one"
    );

    // Exports without a passphrase, and the audit log, carry no header value.
    let export = env
        .server
        .api("GET", WS, ADDON, "OWNER", "/api/config/export", None);
    assert_eq!(export.status, 200, "{}", export.body);
    assert!(!export.body.contains(SECRET), "{}", export.body);
    assert!(export.body.contains("********"));
    let sealed = env.server.api(
        "POST",
        WS,
        ADDON,
        "OWNER",
        "/api/config/export",
        Some(&json!({"passphrase": "a long passphrase"})),
    );
    assert_eq!(sealed.status, 200, "{}", sealed.body);
    assert!(
        !sealed.body.contains(SECRET),
        "encrypted with the passphrase"
    );
    let audit = env
        .server
        .api("GET", WS, ADDON, "OWNER", "/api/audit", None);
    assert_eq!(audit.status, 200, "{}", audit.body);
    assert!(audit.body.contains("flow.update"));
    assert!(!audit.body.contains(SECRET), "{}", audit.body);

    // The encrypted export brings the value along into another instance.
    let other = start_allowing(&receiver);
    let imported = other.server.api(
        "POST",
        WS,
        ADDON,
        "OWNER",
        "/api/config/import",
        Some(&json!({"document": sealed.json(), "passphrase": "a long passphrase"})),
    );
    assert_eq!(imported.status, 200, "{}", imported.body);
    deliver_new_entry(&other.server, "te-3", "p-3", "Moved");
    finished_runs(&other.server, WS, &flow, 1);
    let sent = receiver.calls();
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[2].headers["x-api-key"], SECRET);
    // Without the passphrase, a masked value has nothing to keep: a clear problem.
    let plain = export.json();
    let refused = start_allowing(&receiver);
    let r = refused.server.api(
        "POST",
        WS,
        ADDON,
        "OWNER",
        "/api/config/import",
        Some(&json!({"document": plain})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("headers.X-Api-Key"), "{}", r.body);
}

#[test]
fn a_redirecting_receiver_is_not_followed() {
    let receiver = FakeClockify::start();
    let elsewhere = format!("{}/elsewhere", receiver.base);
    receiver.respond(move |call| {
        (call.path == "/moved").then(|| (302, vec![("location".into(), elsewhere.clone())], vec![]))
    });
    let env = start_allowing(&receiver);
    let flow = create_flow(
        &env.server,
        WS,
        &json!({"name": "moved", "trigger": {"events": ["NEW_TIME_ENTRY"]},
                "actions": [http_action(&format!("{}/moved", receiver.base), json!({}), json!({"id": "{{ event.id }}"}))]}),
    );
    deliver_new_entry(&env.server, "te-r", "p-1", "x");
    let run = finished_runs(&env.server, WS, &flow, 1).remove(0);
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["actions"][0]["response"]["status"], 302);
    assert!(run["error"].as_str().unwrap().contains("HTTP 302"), "{run}");
    let paths: Vec<String> = receiver.calls().into_iter().map(|c| c.path).collect();
    assert_eq!(paths, ["/moved"], "the redirect was followed");
}

#[test]
fn internal_and_plain_http_addresses_are_refused_at_save_without_the_flag() {
    let env = start(&[WS]);
    let save = |url: &str| {
        let flow = json!({"name": "x", "trigger": {"events": ["NEW_TIME_ENTRY"]},
                          "actions": [http_action(url, json!({"X-Key": "v"}), json!({}))]});
        env.server
            .api("POST", WS, ADDON, "OWNER", "/api/flows", Some(&flow))
    };
    for (url, says) in [
        ("https://127.0.0.1:9/x", "internal address"),
        ("https://[::1]/x", "internal address"),
        ("https://169.254.169.254/latest", "internal address"),
        ("http://example.com/x", "must use https"),
        (
            "https://{{ event.host }}/x",
            "scheme and host must be written out",
        ),
        ("ftp://example.com/x", "must use https"),
    ] {
        let r = save(url);
        assert_eq!(r.status, 400, "{url}: {}", r.body);
        let problems = r.json()["problems"].clone();
        let found = problems.as_array().unwrap().iter().any(|p| {
            p["path"] == "actions[0].url" && p["message"].as_str().unwrap().contains(says)
        });
        assert!(found, "{url}: {problems}");
    }
    let r = save("https://example.com/{{ event.projectId }}");
    assert_eq!(
        r.status, 201,
        "a public https URL with a templated path saves: {}",
        r.body
    );
    assert!(!r.body.contains("\"v\""), "{}", r.body);

    // Other mistakes of an HTTP action, all listed.
    let flow = json!({"name": "x", "trigger": {"events": ["NEW_TIME_ENTRY"]},
        "actions": [{"name": "a", "kind": "http", "method": "GET", "url": "https://example.com/",
                     "headers": {"Host": "evil", "X-Ok": "********"}, "body": {"x": 1}},
                    {"name": "b", "kind": "smtp"}]});
    let r = env
        .server
        .api("POST", WS, ADDON, "OWNER", "/api/flows", Some(&flow));
    assert_eq!(r.status, 400, "{}", r.body);
    let problems = r.problems();
    for want in [
        "actions[0].body: a GET request sends no body",
        "actions[0].headers.Host: set by the server",
        "actions[1].kind: must be",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(want)),
            "{want}: {problems:#?}"
        );
    }
}

/// A crash mid-call: an interrupted POST is failed as "outcome unknown" and not sent again; an
/// interrupted PUT (idempotent) is sent again, as for Clockify actions.
#[test]
fn a_killed_server_does_not_resend_an_interrupted_post() {
    let receiver = FakeClockify::start();
    let release_post = receiver.hold_first(|c| c.path == "/hook-post");
    let release_put = receiver.hold_first(|c| c.path == "/hook-put");
    let dir = tempfile::tempdir().unwrap();
    let allow = ["--allow-destination-host", receiver.host.as_str()];
    let server = spawn_server_with(dir.path(), &receiver.host, &allow);
    server.client.install(WS, ADDON, &receiver.base);
    let flow_with = |name: &str, method: &str, path: &str| {
        create_flow(
            &server.client,
            WS,
            &json!({"name": name, "trigger": {"events": ["NEW_TIME_ENTRY"]},
                    "actions": [{"name": "hook", "kind": "http", "method": method,
                                 "url": format!("{}{path}", receiver.base),
                                 "headers": {"X-Key": SECRET}, "body": {"id": "{{ event.id }}"}}]}),
        )
    };
    let post = flow_with("post", "POST", "/hook-post");
    let put = flow_with("put", "PUT", "/hook-put");
    deliver_new_entry(&server.client, "te-k", "p", "x");
    let sent = |path: &str| receiver.calls().iter().filter(|c| c.path == path).count();
    assert!(
        wait_until(DEADLINE, || sent("/hook-post") == 1
            && sent("/hook-put") == 1),
        "the requests were not sent"
    );
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop((release_post, release_put));
    let server = spawn_server_with(dir.path(), &receiver.host, &allow);
    let unknown = finished_runs(&server.client, WS, &post, 1).remove(0);
    assert_eq!(unknown["status"], "failed", "{unknown}");
    assert!(
        unknown["error"]
            .as_str()
            .unwrap()
            .contains("outcome unknown after restart"),
        "{unknown}"
    );
    let resent = finished_runs(&server.client, WS, &put, 1).remove(0);
    assert_eq!(resent["status"], "succeeded", "{resent}");
    assert_eq!(sent("/hook-post"), 1, "the interrupted POST was sent again");
    assert_eq!(
        sent("/hook-put"),
        2,
        "the interrupted PUT is sent again once"
    );
    let resent_put = receiver
        .calls()
        .into_iter()
        .rfind(|c| c.path == "/hook-put")
        .unwrap();
    assert_eq!(resent_put.headers["x-key"], SECRET);
}
