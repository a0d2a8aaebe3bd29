//! The operator's toolkit (issue 20): the audit log, configuration export/import, key
//! rotation, scheduled snapshots and restore, and the `workspaces` / `stats` views.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::destinations::signed_with;
use crate::support::*;

const WS: &str = "ws-toolkit";
const ADDON: &str = "addon-t";
const DEADLINE: Duration = Duration::from_secs(30);

/// A server allowed to call `fake` (as Clockify and as a destination), on `dir`, with WS
/// installed.
fn start_on(dir: &Path, fake: &FakeClockify) -> TestServer {
    let host = fake.host.clone();
    let server = TestServer::start_in(dir, |c| {
        c.allow_api_hosts = vec![host.clone()];
        c.allow_destination_hosts = vec![host];
    });
    server.install(WS, ADDON, &fake.base);
    server
}

fn api(server: &TestClient, method: &str, path: &str, body: Option<&Value>) -> Response {
    server.api(method, WS, ADDON, "OWNER", path, body)
}

fn ok(r: Response) -> Value {
    assert!((200..300).contains(&r.status), "{}: {}", r.status, r.body);
    r.json()
}

fn time_entry(id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"id": id, "workspaceId": WS, "projectId": "p1",
        "userId": "user-7", "description": "x"}))
    .unwrap()
}

/// A flow on new time entries that reads the workspace's tags.
fn tags_flow(name: &str) -> Value {
    json!({"name": name, "trigger": {"events": ["NEW_TIME_ENTRY"]},
           "actions": [{"name": "tags", "operationId": "getTags"}]})
}

/// A flow on a custom source's `order.created` events.
fn source_flow(source: &str) -> Value {
    json!({"name": "orders", "trigger": {"source": source, "events": ["order.created"]},
           "conditions": {"mode": "all", "rules": [{"path": "$.total", "op": "gt", "value": 10}]},
           "actions": [{"name": "tags", "operationId": "getTags", "query": {"name": "{{ event.sku }}"}}]})
}

/// Posts `body` to a custom source signed the Standard Webhooks way with `secret`.
fn send_to_source(
    server: &TestClient,
    source: &str,
    secret: &str,
    id: &str,
    body: &[u8],
) -> Response {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let ts = now_secs().to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let signature = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    server.post(
        &format!("/webhooks/custom/{source}"),
        &[
            ("webhook-id", id),
            ("webhook-timestamp", &ts),
            ("webhook-signature", &signature),
            ("x-event-type", "order.created"),
        ],
        body,
    )
}

/// Waits for `n` finished runs of `flow`; returns their statuses.
fn finished_runs(server: &TestClient, flow: &str, n: usize) -> Vec<String> {
    let mut statuses = Vec::new();
    let done = wait_until(DEADLINE, || {
        let page = ok(api(server, "GET", &format!("/api/flows/{flow}/runs"), None));
        statuses = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["status"].as_str().unwrap().to_string())
            .collect();
        statuses.len() >= n
            && statuses
                .iter()
                .all(|s| matches!(s.as_str(), "succeeded" | "failed" | "skipped"))
    });
    assert!(
        done,
        "flow {flow}: wanted {n} finished runs, have {statuses:?}"
    );
    statuses
}

fn text(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn failed_with(out: std::process::Output) -> (i32, String) {
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

mod audit {
    use super::*;

    fn audit(server: &TestClient, query: &str) -> Vec<Value> {
        ok(api(server, "GET", &format!("/api/audit{query}"), None))["items"]
            .as_array()
            .unwrap()
            .clone()
    }

    #[test]
    fn admin_changes_are_recorded_with_who_what_and_the_request_id() {
        let fake = FakeClockify::start();
        let dir = tempfile::tempdir().unwrap();
        let server = start_on(dir.path(), &fake);
        let token = user_token(WS, ADDON, "OWNER");
        let created = request(
            "POST",
            &server.url("/api/flows"),
            &[
                ("x-addon-token", &token),
                ("content-type", "application/json"),
                ("x-request-id", "req-audit-1"),
            ],
            Some(&serde_json::to_vec(&tags_flow("first")).unwrap()),
        );
        let flow = ok(created)["id"].as_str().unwrap().to_string();
        ok(api(
            &server,
            "PUT",
            &format!("/api/flows/{flow}"),
            Some(&tags_flow("renamed")),
        ));
        ok(api(
            &server,
            "POST",
            &format!("/api/flows/{flow}/disable"),
            None,
        ));
        let source = ok(api(
            &server,
            "POST",
            "/api/sources",
            Some(&json!({"name": "shop"})),
        ));
        let source_id = source["id"].as_str().unwrap();
        let secret = source["secret"].as_str().unwrap().to_string();
        ok(api(
            &server,
            "POST",
            &format!("/api/sources/{source_id}/rotate"),
            None,
        ));
        ok(api(&server, "DELETE", &format!("/api/flows/{flow}"), None));
        // Reads are not changes.
        ok(api(&server, "GET", "/api/flows", None));

        let entries = audit(&server, "");
        let actions: Vec<&str> = entries
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert_eq!(
            actions,
            [
                "flow.delete",
                "source.rotate",
                "source.create",
                "flow.disable",
                "flow.update",
                "flow.create"
            ]
        );
        for entry in &entries {
            assert_eq!(entry["userId"], "user-1", "{entry}");
            assert!(entry["requestId"].as_str().is_some_and(|r| !r.is_empty()));
            assert!(entry["at"].is_string());
        }
        let create = &entries[5];
        assert_eq!(create["requestId"], "req-audit-1");
        assert_eq!(create["target"], flow);
        assert_eq!(create["before"], Value::Null);
        assert_eq!(create["after"]["name"], "first");
        let update = &entries[4];
        assert_eq!(update["before"]["name"], "first");
        assert_eq!(update["after"]["name"], "renamed");
        assert_eq!(entries[3]["before"]["enabled"], true);
        assert_eq!(entries[3]["after"]["enabled"], false);
        assert_eq!(entries[0]["before"]["name"], "renamed");
        assert_eq!(entries[0]["after"], Value::Null);
        // No secret ever reaches the log.
        let everything = serde_json::to_string(&entries).unwrap();
        assert!(!everything.contains(&secret) && !everything.contains("whsec_"));

        // Filters: an action prefix, a target, a user, a time window; pages with a cursor.
        assert_eq!(audit(&server, "?action=flow.").len(), 4);
        assert_eq!(audit(&server, "?action=source.rotate").len(), 1);
        assert_eq!(audit(&server, &format!("?target={flow}")).len(), 4);
        assert_eq!(audit(&server, "?user=someone-else").len(), 0);
        assert_eq!(audit(&server, "?to=2001-01-01T00:00:00Z").len(), 0);
        assert_eq!(audit(&server, "?from=2001-01-01T00:00:00Z").len(), 6);
        let first = ok(api(&server, "GET", "/api/audit?limit=4", None));
        assert_eq!(first["items"].as_array().unwrap().len(), 4);
        let cursor = first["nextCursor"].as_str().unwrap();
        let rest = ok(api(
            &server,
            "GET",
            &format!("/api/audit?limit=4&cursor={cursor}"),
            None,
        ));
        let rest_actions: Vec<&str> = rest["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert_eq!(rest_actions, ["flow.update", "flow.create"]);
        assert_eq!(rest["nextCursor"], Value::Null);

        // Admins only; bad parameters are listed.
        let member = server.api("GET", WS, ADDON, "TEAM_MANAGER", "/api/audit", None);
        assert_eq!(member.status, 403, "{}", member.body);
        let bad = api(
            &server,
            "GET",
            "/api/audit?limit=0&from=yesterday&cursor=x",
            None,
        );
        assert_eq!(bad.status, 400);
        assert_eq!(bad.problems().len(), 3, "{}", bad.body);
    }

    #[test]
    fn replays_retries_settings_and_deletions_are_recorded_too() {
        let fake = FakeClockify::start();
        let dir = tempfile::tempdir().unwrap();
        let server = start_on(dir.path(), &fake);
        let flow = ok(api(&server, "POST", "/api/flows", Some(&tags_flow("t"))))["id"]
            .as_str()
            .unwrap()
            .to_string();
        let delivered = server.deliver(WS, ADDON, "NEW_TIME_ENTRY", &time_entry("te-1"));
        let event = ok(delivered)["webhookId"].as_str().unwrap().to_string();
        finished_runs(&server, &flow, 1);
        ok(api(
            &server,
            "POST",
            &format!("/api/webhooks/{event}/replay"),
            None,
        ));
        ok(api(
            &server,
            "PATCH",
            "/api/settings",
            Some(&json!({"max_rps": 7})),
        ));
        ok(api(
            &server,
            "DELETE",
            &format!("/api/webhooks/{event}"),
            None,
        ));
        let entries = audit(&server, "");
        let actions: Vec<&str> = entries
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert_eq!(
            actions[..3],
            ["event.delete", "settings.update", "event.replay"]
        );
        assert_eq!(entries[0]["target"], event);
        // (Settings are stored as Clockify sends numbers: as floating point.)
        assert_eq!(entries[1]["after"]["max_rps"].as_f64(), Some(7.0));
        assert_eq!(entries[1]["before"]["max_rps"].as_f64(), Some(25.0));
        assert_eq!(entries[2]["after"]["runs"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn destination_changes_are_recorded_without_secrets_or_header_values() {
        let fake = FakeClockify::start();
        let receiver = FakeClockify::start();
        let dir = tempfile::tempdir().unwrap();
        let (api_host, receiver_host) = (fake.host.clone(), receiver.host.clone());
        let server = TestServer::start_in(dir.path(), |c| {
            c.allow_api_hosts = vec![api_host];
            c.allow_destination_hosts = vec![receiver_host];
        });
        server.install(WS, ADDON, &fake.base);
        let url = format!("{}/in", receiver.base);
        let created = ok(api(
            &server,
            "POST",
            "/api/destinations",
            Some(&json!({"name": "warehouse", "url": url,
                "filter": {"events": ["NEW_TIME_ENTRY"]},
                "headers": {"Authorization": "Bearer tok-never-logged"}})),
        ));
        let id = created["id"].as_str().unwrap().to_string();
        let first_secret = created["secret"].as_str().unwrap().to_string();
        ok(api(
            &server,
            "PUT",
            &format!("/api/destinations/{id}"),
            Some(&json!({"name": "warehouse 2", "url": url,
                "headers": {"Authorization": "********", "X-Team": "blue-value"}})),
        ));
        let rotated = ok(api(
            &server,
            "POST",
            &format!("/api/destinations/{id}/rotate-secret"),
            None,
        ));
        let second_secret = rotated["secret"].as_str().unwrap().to_string();
        ok(server.deliver(WS, ADDON, "NEW_TIME_ENTRY", &time_entry("te-dest")));
        let mut delivery = String::new();
        assert!(wait_until(DEADLINE, || {
            let page = ok(api(
                &server,
                "GET",
                &format!("/api/destinations/{id}/deliveries"),
                None,
            ));
            let first = &page["items"][0];
            delivery = first["id"].as_str().unwrap_or_default().to_string();
            first["status"] == "delivered"
        }));
        ok(api(
            &server,
            "POST",
            &format!("/api/deliveries/{delivery}/retry"),
            None,
        ));
        ok(api(
            &server,
            "POST",
            &format!("/api/destinations/{id}/recover"),
            Some(&json!({"since": "2001-01-01T00:00:00Z"})),
        ));
        ok(api(
            &server,
            "DELETE",
            &format!("/api/destinations/{id}"),
            None,
        ));

        let entries: Vec<Value> = audit(&server, "")
            .into_iter()
            .filter(|e| {
                let action = e["action"].as_str().unwrap();
                action.starts_with("destination.") || action.starts_with("delivery.")
            })
            .collect();
        let actions: Vec<&str> = entries
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert_eq!(
            actions,
            [
                "destination.delete",
                "destination.recover",
                "delivery.retry",
                "destination.rotate",
                "destination.update",
                "destination.create"
            ]
        );
        for entry in &entries {
            assert_eq!(entry["userId"], "user-1", "{entry}");
        }
        let by_action = |action: &str| entries.iter().find(|e| e["action"] == action).unwrap();
        let create = by_action("destination.create");
        assert_eq!(create["target"], id);
        assert_eq!(create["before"], Value::Null);
        assert_eq!(create["after"]["name"], "warehouse");
        assert_eq!(create["after"]["url"], url);
        assert_eq!(create["after"]["headers"], json!(["Authorization"]));
        assert_eq!(
            create["after"]["filter"]["events"],
            json!(["NEW_TIME_ENTRY"])
        );
        let update = by_action("destination.update");
        assert_eq!(update["before"]["name"], "warehouse");
        assert_eq!(update["after"]["name"], "warehouse 2");
        assert_eq!(
            update["after"]["headers"],
            json!(["Authorization", "X-Team"])
        );
        let rotate = by_action("destination.rotate");
        assert_eq!(rotate["target"], id);
        assert_eq!(rotate["before"]["rotatedAt"], Value::Null);
        assert!(rotate["after"]["rotatedAt"].is_string(), "{rotate}");
        let retry = by_action("delivery.retry");
        assert_eq!(retry["target"], delivery);
        assert_eq!(retry["before"]["status"], "delivered");
        assert_eq!(retry["after"]["status"], "pending");
        assert_eq!(retry["after"]["destinationId"], id);
        let recover = by_action("destination.recover");
        assert_eq!(recover["target"], id);
        assert_eq!(recover["after"]["since"], "2001-01-01T00:00:00Z");
        let delete = by_action("destination.delete");
        assert_eq!(delete["before"]["name"], "warehouse 2");
        assert_eq!(delete["after"], Value::Null);
        // Neither signing secret nor any header value reaches the log.
        let everything = serde_json::to_string(&entries).unwrap();
        for secret in [
            first_secret.as_str(),
            second_secret.as_str(),
            "whsec_",
            "tok-never-logged",
            "blue-value",
            "********",
        ] {
            assert!(!everything.contains(secret), "{secret} in {everything}");
        }
    }

    #[test]
    fn entries_are_kept_like_runs_and_erased_with_the_workspace() {
        let fake = FakeClockify::start();
        let dir = tempfile::tempdir().unwrap();
        let server = start_on(dir.path(), &fake);
        ok(api(&server, "POST", "/api/flows", Some(&tags_flow("t"))));
        assert_eq!(audit(&server, "").len(), 1);
        drop(server);
        // 31 days later by the retention clock (flow runs, and so entries, are kept 30 days).
        let host = fake.host.clone();
        let server = TestServer::start_in(dir.path(), |c| {
            c.allow_api_hosts = vec![host];
            c.retention_clock_skew = Duration::from_secs(31 * 24 * 3600);
            c.retention_interval = Duration::from_millis(50);
        });
        assert!(wait_until(DEADLINE, || audit(&server, "").is_empty()));
        assert!(server.metric("retention_deleted_total", &["kind=\"audit\""]) >= 1.0);
        drop(server);

        let server = start_on(dir.path(), &fake);
        ok(api(
            &server,
            "POST",
            "/api/flows",
            Some(&tags_flow("again")),
        ));
        let erased = succeeded(run_on(dir.path(), &["erase-workspace", WS]));
        assert!(erased.contains("table audit: 1"), "{erased}");
        drop(server);
        let check = succeeded(run_on(dir.path(), &["check", "--workspace", WS]));
        assert!(
            check.contains(&format!("workspace {WS} table audit: 0")),
            "{check}"
        );
    }
}

mod transfer {
    use super::*;

    const PASSPHRASE: &str = "correct horse battery staple";

    /// What `configure` made.
    struct Configured {
        source: String,
        source_secret: String,
        /// The secret of the destination on new time entries.
        destination_secret: String,
    }

    /// WS with two flows (one on Clockify events, one on a custom source), the source, and
    /// two destinations posting to `receiver`: one on new time entries with a header, one on
    /// the source's events.
    fn configure(server: &TestClient, receiver: &str) -> Configured {
        let source = ok(api(
            server,
            "POST",
            "/api/sources",
            Some(&json!({"name": "shop"})),
        ));
        let id = source["id"].as_str().unwrap().to_string();
        ok(api(
            server,
            "POST",
            "/api/flows",
            Some(&tags_flow("on entries")),
        ));
        ok(api(server, "POST", "/api/flows", Some(&source_flow(&id))));
        let entries = ok(api(
            server,
            "POST",
            "/api/destinations",
            Some(
                &json!({"name": "entries", "url": format!("{receiver}/receiver"),
                "filter": {"source": "clockify", "events": ["NEW_TIME_ENTRY"],
                           "conditions": {"mode": "all", "rules": [{"path": "$.projectId", "op": "eq", "value": "p1"}]}},
                "template": "{\"text\": \"{{ event.description }}\"}",
                "headers": {"X-Api-Key": "key-never-exported"}}),
            ),
        ));
        ok(api(
            server,
            "POST",
            "/api/destinations",
            Some(
                &json!({"name": "orders", "url": format!("{receiver}/receiver-orders"),
                "enabled": false, "filter": {"source": id}}),
            ),
        ));
        Configured {
            source: id,
            source_secret: source["secret"].as_str().unwrap().to_string(),
            destination_secret: entries["secret"].as_str().unwrap().to_string(),
        }
    }

    fn import(server: &TestClient, body: &Value) -> Response {
        api(server, "POST", "/api/config/import", Some(body))
    }

    #[test]
    fn round_trip_into_an_empty_instance_and_the_moved_workspace_works() {
        let fake = FakeClockify::start();
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = start_on(dir_a.path(), &fake);
        let Configured {
            source,
            source_secret: secret,
            destination_secret,
        } = configure(&a, &fake.base);
        let plain = ok(api(&a, "GET", "/api/config/export", None));
        assert_eq!(plain["format"], "clockify-studio-config");
        assert_eq!(plain["version"], 2);
        assert_eq!(plain["flows"].as_array().unwrap().len(), 2);
        assert_eq!(plain["sources"], json!([{"id": source, "name": "shop"}]));
        assert!(plain.get("secrets").is_none());
        assert!(!plain.to_string().contains("whsec_"));
        let destinations = plain["destinations"].as_array().unwrap();
        assert_eq!(destinations.len(), 2, "{plain}");
        assert_eq!(destinations[0]["name"], "entries");
        assert_eq!(destinations[0]["headers"], json!({"X-Api-Key": "********"}));
        assert_eq!(
            destinations[0]["filter"]["conditions"]["rules"][0]["value"],
            "p1"
        );
        assert_eq!(destinations[1]["enabled"], false);
        assert_eq!(destinations[1]["filter"]["source"], source);
        assert!(!plain.to_string().contains("key-never-exported"));
        let sealed = ok(api(
            &a,
            "POST",
            "/api/config/export",
            Some(&json!({"passphrase": PASSPHRASE})),
        ));
        assert_eq!(sealed["secrets"]["kdf"], "argon2id");
        for secret in [&secret, &destination_secret, "key-never-exported"] {
            assert!(
                !sealed.to_string().contains(secret),
                "the secret travels encrypted"
            );
        }
        let short = api(
            &a,
            "POST",
            "/api/config/export",
            Some(&json!({"passphrase": "short"})),
        );
        assert_eq!(short.status, 400, "{}", short.body);

        let b = start_on(dir_b.path(), &fake);
        let report = ok(import(
            &b,
            &json!({"document": sealed, "passphrase": PASSPHRASE}),
        ));
        assert_eq!(report["flowsCreated"].as_array().unwrap().len(), 2);
        assert_eq!(report["sourcesCreated"], json!([source]));
        assert_eq!(report["newSecrets"], json!([]));
        assert_eq!(report["destinationsCreated"].as_array().unwrap().len(), 2);
        assert_eq!(report["newDestinationSecrets"], json!([]));
        assert_eq!(ok(api(&b, "GET", "/api/config/export", None)), plain);
        // Importing again replaces, and changes nothing (masked header values are kept).
        let again = ok(import(&b, &json!({"document": plain})));
        assert_eq!(again["flowsReplaced"].as_array().unwrap().len(), 2);
        assert_eq!(again["sourcesUpdated"], json!([source]));
        assert_eq!(again["destinationsReplaced"].as_array().unwrap().len(), 2);
        assert_eq!(ok(api(&b, "GET", "/api/config/export", None)), plain);

        // The moved workspace works: a Clockify event runs its flow, the source verifies with
        // the secret it had, and its flow runs as well.
        let flows = ok(api(&b, "GET", "/api/flows", None));
        let id_of = |name: &str| {
            flows["flows"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == name)
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        };
        ok(b.deliver(WS, ADDON, "NEW_TIME_ENTRY", &time_entry("te-moved")));
        assert_eq!(finished_runs(&b, &id_of("on entries"), 1), ["succeeded"]);
        let order = serde_json::to_vec(&json!({"total": 42, "sku": "sku-9"})).unwrap();
        let r = send_to_source(&b, &source, &secret, "msg-1", &order);
        assert!((200..300).contains(&r.status), "{}: {}", r.status, r.body);
        assert_eq!(finished_runs(&b, &id_of("orders"), 1), ["succeeded"]);
        assert!(
            fake.calls()
                .iter()
                .any(|c| c.path.contains("/tags") && c.query.contains("sku-9")),
            "the source's flow called Clockify"
        );
        // The moved destination delivers: its template, its header value and its secret
        // travelled (the disabled one stays disabled).
        let mut received = Vec::new();
        assert!(wait_until(DEADLINE, || {
            received = fake
                .calls()
                .into_iter()
                .filter(|c| c.method == "POST" && c.path.starts_with("/receiver"))
                .collect();
            !received.is_empty()
        }));
        std::thread::sleep(Duration::from_millis(200));
        let received: Vec<RecordedCall> = fake
            .calls()
            .into_iter()
            .filter(|c| c.method == "POST" && c.path.starts_with("/receiver"))
            .collect();
        assert_eq!(received.len(), 1, "{received:#?}");
        let call = &received[0];
        assert_eq!(call.path, "/receiver");
        assert_eq!(call.headers["x-api-key"], "key-never-exported");
        assert_eq!(
            serde_json::from_slice::<Value>(&call.body).unwrap(),
            json!({"text": "x"})
        );
        assert!(signed_with(&destination_secret, call), "{:?}", call.headers);
        // The import is in the audit log, without secrets.
        let log = ok(api(&b, "GET", "/api/audit?action=config.import", None));
        assert_eq!(log["items"].as_array().unwrap().len(), 2);
        assert!(!log.to_string().contains("whsec_"));
    }

    #[test]
    fn an_import_lists_every_problem_and_changes_nothing() {
        let fake = FakeClockify::start();
        let dir = tempfile::tempdir().unwrap();
        let server = start_on(dir.path(), &fake);
        let document = json!({
            "format": "clockify-studio-config", "version": 2,
            "settings": {"max_rps": 500, "nonsense": 1},
            "sources": [{"id": "src-1", "name": ""}],
            "flows": [
                tags_flow("fine"),
                {"name": "", "trigger": {"events": ["NEW_TIME_ENTRY"]}, "actions": []},
                source_flow("no-such-source"),
            ],
            "destinations": [
                {"id": "0190e6d0-0000-7000-8000-000000000001", "name": "a",
                 "url": "ftp://example.com/x", "enabled": true,
                 "filter": {"source": "no-such-source"}},
                {"id": "0190e6d0-0000-7000-8000-000000000002", "name": "b",
                 "url": "https://example.com/x", "enabled": true,
                 "headers": {"Authorization": "********"}},
            ],
        });
        let r = import(&server, &json!({"document": document}));
        assert_eq!(r.status, 400, "{}", r.body);
        let problems = r.problems();
        for wanted in [
            "settings.max_rps",
            "settings.nonsense",
            "sources[0].name",
            "flows[1].name",
            "flows[1].actions",
            "flows[2].trigger.source",
            "destinations[0].url",
            "destinations[0].filter.source",
            "destinations[1].headers.Authorization",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(wanted)),
                "no problem at {wanted}: {problems:?}"
            );
        }
        assert!(
            !problems.iter().any(|p| p.starts_with("flows[0]")),
            "{problems:?}"
        );
        assert_eq!(
            ok(api(&server, "GET", "/api/flows", None))["flows"],
            json!([])
        );
        assert_eq!(
            ok(api(&server, "GET", "/api/sources", None))["sources"],
            json!([])
        );
        assert_eq!(
            ok(api(&server, "GET", "/api/destinations", None))["destinations"],
            json!([])
        );

        // A dry run of a good document says what would happen and does nothing.
        let good = json!({"format": "clockify-studio-config", "version": 1,
            "sources": [{"id": "src-1", "name": "shop"}],
            "flows": [tags_flow("fine"), source_flow("src-1")]});
        let dry = ok(import(&server, &json!({"document": good, "dryRun": true})));
        assert_eq!(dry["dryRun"], true);
        assert_eq!(dry["flowsCreated"].as_array().unwrap().len(), 2);
        assert_eq!(
            ok(api(&server, "GET", "/api/flows", None))["flows"],
            json!([])
        );
        // Without secrets, a new source gets a new one, shown once.
        let applied = ok(import(&server, &json!({"document": good})));
        assert_eq!(applied["newSecrets"][0]["sourceId"], "src-1");
        assert!(
            applied["newSecrets"][0]["secret"]
                .as_str()
                .unwrap()
                .starts_with("whsec_")
        );

        // Wrong version, wrong passphrase, missing passphrase; members may not import.
        let v3 = import(
            &server,
            &json!({"document": {"format": "clockify-studio-config", "version": 3}}),
        );
        assert_eq!(v3.status, 400);
        assert!(v3.problems()[0].starts_with("version"), "{}", v3.body);
        let sealed = ok(api(
            &server,
            "POST",
            "/api/config/export",
            Some(&json!({"passphrase": PASSPHRASE})),
        ));
        let wrong = import(
            &server,
            &json!({"document": sealed, "passphrase": "not the passphrase"}),
        );
        assert_eq!(wrong.status, 400);
        assert!(wrong.problems()[0].starts_with("secrets"), "{}", wrong.body);
        let missing = import(&server, &json!({"document": sealed}));
        assert_eq!(missing.status, 400);
        let member = server.api(
            "POST",
            WS,
            ADDON,
            "TEAM_MANAGER",
            "/api/config/import",
            Some(&json!({"document": good})),
        );
        assert_eq!(member.status, 403);
    }

    #[test]
    fn the_command_line_exports_through_the_server_and_imports_on_the_file() {
        let fake = FakeClockify::start();
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = start_on(dir_a.path(), &fake);
        let Configured { source, .. } = configure(&a, &fake.base);
        let over_http = ok(api(&a, "GET", "/api/config/export", None));
        // While the server runs: through its control socket.
        let exported = succeeded(run_on(dir_a.path(), &["export", "--workspace", WS]));
        let document: Value = serde_json::from_str(&exported).unwrap();
        assert_eq!(document, over_http);
        let passphrase_file = dir_a.path().join("passphrase");
        std::fs::write(&passphrase_file, format!("{PASSPHRASE}\n")).unwrap();
        let file = dir_a.path().join("config.json");
        succeeded(run_on(
            dir_a.path(),
            &[
                "export",
                "--workspace",
                WS,
                "--with-secrets",
                "--passphrase-file",
                text(&passphrase_file),
                "--out",
                text(&file),
            ],
        ));
        // Into another workspace of the same server: the source id is taken, so it is remapped
        // and the flow follows.
        a.install("ws-other", ADDON, &fake.base);
        let out = succeeded(run_on(
            dir_a.path(),
            &[
                "import",
                text(&file),
                "--workspace",
                "ws-other",
                "--passphrase-file",
                text(&passphrase_file),
            ],
        ));
        assert!(out.contains("is taken by another workspace"), "{out}");
        let other = ok(a.api("GET", "ws-other", ADDON, "OWNER", "/api/flows", None));
        let orders = other["flows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "orders")
            .unwrap()
            .clone();
        assert_ne!(orders["trigger"]["source"], source);
        let log = ok(a.api("GET", "ws-other", ADDON, "OWNER", "/api/audit", None));
        assert_eq!(log["items"][0]["action"], "config.import");
        assert_eq!(log["items"][0]["userName"], "operator");

        // On a file no server holds.
        let b = start_on(dir_b.path(), &fake);
        drop(b);
        let bad = dir_b.path().join("bad.json");
        std::fs::write(
            &bad,
            r#"{"format": "clockify-studio-config", "version": 1, "flows": [{"name": ""}]}"#,
        )
        .unwrap();
        let (code, stderr) = failed_with(run_on(
            dir_b.path(),
            &["import", text(&bad), "--workspace", WS],
        ));
        assert_eq!(code, 3, "{stderr}");
        assert!(stderr.contains("flows[0].name"), "{stderr}");
        let (code, stderr) = failed_with(run_on(
            dir_b.path(),
            &["import", text(&file), "--workspace", WS],
        ));
        assert_eq!(code, 3, "{stderr}");
        assert!(stderr.contains("passphrase"), "{stderr}");
        // On the file, the destinations' plain-http receiver needs the server's flag.
        let (code, stderr) = failed_with(run_on(
            dir_b.path(),
            &[
                "import",
                text(&file),
                "--workspace",
                WS,
                "--dry-run",
                "--passphrase-file",
                text(&passphrase_file),
            ],
        ));
        assert_eq!(code, 3, "{stderr}");
        assert!(
            stderr.contains("destinations[0].url") && stderr.contains("--allow-destination-host"),
            "{stderr}"
        );
        let with_flag = |dry_run: bool| {
            let mut args = vec![
                "import",
                text(&file),
                "--workspace",
                WS,
                "--passphrase-file",
                text(&passphrase_file),
                "--allow-destination-host",
                &fake.host,
            ];
            if dry_run {
                args.push("--dry-run");
            }
            succeeded(run_on(dir_b.path(), &args))
        };
        let dry = with_flag(true);
        assert!(dry.contains("nothing was changed"), "{dry}");
        assert!(dry.contains("2 destination(s) created"), "{dry}");
        with_flag(false);
        let b = start_on(dir_b.path(), &fake);
        assert_eq!(ok(api(&b, "GET", "/api/config/export", None)), over_http);
    }
}

mod rotate_key {
    use super::*;

    #[test]
    fn rotation_reseals_every_secret_and_the_old_key_stops_working() {
        let fake = FakeClockify::start();
        let dir = tempfile::tempdir().unwrap();
        let server = {
            let host = fake.host.clone();
            let server = TestServer::start_in(dir.path(), |c| {
                c.allow_api_hosts = vec![host.clone()];
                c.allow_destination_hosts = vec![host];
            });
            server.install(WS, ADDON, &fake.base);
            server
        };
        let source = ok(api(
            &server,
            "POST",
            "/api/sources",
            Some(&json!({"name": "shop"})),
        ));
        let (source_id, secret) = (
            source["id"].as_str().unwrap().to_string(),
            source["secret"].as_str().unwrap().to_string(),
        );
        let flow = ok(api(&server, "POST", "/api/flows", Some(&tags_flow("t"))))["id"]
            .as_str()
            .unwrap()
            .to_string();
        // A destination: its signing secret and a custom header value are sealed too.
        let destination = ok(api(
            &server,
            "POST",
            "/api/destinations",
            Some(
                &json!({"name": "mine", "url": format!("{}/hook", fake.base),
                         "headers": {"X-Api-Key": "k-rotated"}}),
            ),
        ));
        let destination_id = destination["id"].as_str().unwrap().to_string();
        // A flow's "HTTP request" header value is sealed too.
        let hook_flow = ok(api(
            &server,
            "POST",
            "/api/flows",
            Some(&json!({"name": "hook", "trigger": {"events": ["NEW_PROJECT"]},
                "actions": [{"name": "hook", "kind": "http", "method": "POST",
                    "url": format!("{}/flow-hook", fake.base),
                    "headers": {"X-Flow-Key": "k-flow-rotated"}, "body": {"id": "{{ event.id }}"}}]})),
        ))["id"]
            .as_str()
            .unwrap()
            .to_string();
        // A run keeps a copy of its flow, header values included: re-sealed as well.
        let project = |id: &str| {
            serde_json::to_vec(&json!({"id": id, "workspaceId": WS, "name": "P"})).unwrap()
        };
        ok(server.deliver(WS, ADDON, "NEW_PROJECT", &project("p-before")));
        assert_eq!(finished_runs(&server, &hook_flow, 1), ["succeeded"]);
        let old_key = std::fs::read_to_string(dir.path().join("secret.key")).unwrap();
        let new_key_file = dir.path().join("new.key");

        // Refused while the server holds the file; nothing changes.
        let (code, stderr) = failed_with(run_on(
            dir.path(),
            &["rotate-key", "--new-key-file", text(&new_key_file)],
        ));
        assert_eq!(code, 1);
        assert!(stderr.contains("stop it"), "{stderr}");
        drop(server);

        let out = succeeded(run_on(
            dir.path(),
            &["rotate-key", "--new-key-file", text(&new_key_file)],
        ));
        assert!(
            out.contains(
                "re-sealed 1 installation token(s), 1 webhook token(s), 1 source secret(s), 2 destination secret(s) and header value(s) and 2 flow header value(s)"
            ),
            "{out}"
        );
        let new_key = std::fs::read_to_string(&new_key_file).unwrap();
        assert_ne!(new_key, old_key);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("secret.key")).unwrap(),
            new_key
        );

        // The old key no longer opens the file.
        let old_key_file = dir.path().join("old.key");
        std::fs::write(&old_key_file, &old_key).unwrap();
        let mut config = clockify_studio::config::Config::for_data_dir(dir.path());
        config.encryption_key_file = old_key_file.clone();
        let refused = clockify_studio::app::App::open(config)
            .err()
            .expect("the old key is refused");
        assert!(
            refused.to_string().contains("does not decrypt"),
            "{refused}"
        );
        let (_, stderr) = failed_with(run_on(
            dir.path(),
            &[
                "export",
                "--workspace",
                WS,
                "--encryption-key-file",
                text(&old_key_file),
            ],
        ));
        assert!(stderr.contains("does not decrypt"), "{stderr}");
        // Rotating again with a key that is not the file's changes nothing.
        let (_, stderr) = failed_with(run_on(
            dir.path(),
            &[
                "rotate-key",
                "--new-key-file",
                text(&dir.path().join("third.key")),
                "--encryption-key-file",
                text(&old_key_file),
            ],
        ));
        assert!(stderr.contains("encryption key does not match"), "{stderr}");

        // With the new key everything works: the installation token (a flow calls Clockify),
        // the webhook token (a delivery), the source secret (a custom event).
        let server = TestServer::start_in(dir.path(), |c| {
            c.allow_api_hosts = vec![fake.host.clone()];
            c.allow_destination_hosts = vec![fake.host.clone()];
        });
        // The destination still sends with its custom header (the test button).
        let test = ok(api(
            &server,
            "POST",
            &format!("/api/destinations/{destination_id}/test"),
            None,
        ));
        assert_eq!(test["ok"], true, "{test}");
        let sent = fake
            .calls()
            .into_iter()
            .rev()
            .find(|c| c.path == "/hook")
            .expect("the test delivery reached the receiver");
        assert_eq!(
            sent.headers.get("x-api-key").map(String::as_str),
            Some("k-rotated")
        );
        assert!(sent.headers.contains_key("webhook-signature"));
        ok(server.deliver(WS, ADDON, "NEW_TIME_ENTRY", &time_entry("te-after")));
        assert_eq!(finished_runs(&server, &flow, 1), ["succeeded"]);
        ok(server.deliver(WS, ADDON, "NEW_PROJECT", &project("p-after")));
        assert_eq!(
            finished_runs(&server, &hook_flow, 2),
            ["succeeded", "succeeded"]
        );
        let hooked = fake
            .calls()
            .into_iter()
            .rev()
            .find(|c| c.path == "/flow-hook")
            .expect("the flow's HTTP request reached the receiver");
        assert_eq!(
            hooked.headers.get("x-flow-key").map(String::as_str),
            Some("k-flow-rotated")
        );
        let call = fake
            .calls()
            .into_iter()
            .rev()
            .find(|c| c.path.contains("/tags"))
            .unwrap();
        assert_eq!(
            call.headers.get("x-addon-token").map(String::as_str),
            Some(installation_token(WS, ADDON, &fake.base).as_str())
        );
        let r = send_to_source(&server, &source_id, &secret, "m-1", br#"{"total": 1}"#);
        assert!((200..300).contains(&r.status), "{}: {}", r.status, r.body);
    }
}

mod snapshots {
    use super::*;

    fn snapshot_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".redb"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn snapshots_are_taken_on_schedule_pruned_reported_and_restorable() {
        let fake = FakeClockify::start();
        let dir = tempfile::tempdir().unwrap();
        let snapshots = tempfile::tempdir().unwrap();
        let (host, snapshot_dir) = (fake.host.clone(), snapshots.path().to_path_buf());
        let server = TestServer::start_in(dir.path(), |c| {
            c.allow_api_hosts = vec![host];
            c.snapshot_dir = Some(snapshot_dir);
            c.snapshot_every = Duration::from_millis(300);
            c.snapshot_keep = 2;
        });
        server.install(WS, ADDON, &fake.base);
        for i in 0..5 {
            ok(server.deliver(WS, ADDON, "NEW_TIME_ENTRY", &time_entry(&format!("te-{i}"))));
        }
        // Several intervals later: still two files, the oldest replaced.
        let first = {
            assert!(wait_until(DEADLINE, || !snapshot_files(snapshots.path()).is_empty()));
            snapshot_files(snapshots.path())[0].clone()
        };
        assert!(wait_until(DEADLINE, || {
            let files = snapshot_files(snapshots.path());
            files.len() == 2 && !files.contains(&first)
        }));
        assert!(snapshot_files(snapshots.path()).len() <= 2);
        assert!(server.metric("snapshot_last_size_bytes", &[]) > 0.0);
        assert!(server.metric("snapshot_last_success_timestamp_seconds", &[]) > 1.7e9);
        let overview = ok(api(&server, "GET", "/api/overview", None));
        assert!(
            overview["lastSnapshot"]["bytes"].as_u64().unwrap() > 0,
            "{overview}"
        );
        // Wait for a snapshot taken after every delivery, then restore it.
        let newest_after_events = snapshot_files(snapshots.path()).pop().unwrap();
        assert!(wait_until(DEADLINE, || snapshot_files(snapshots.path())
            .last()
            != Some(&newest_after_events)));
        let newest = snapshots
            .path()
            .join(snapshot_files(snapshots.path()).pop().unwrap());
        drop(server);

        // Restore: stop, copy the snapshot (and the key) into place, check, start.
        let restored = tempfile::tempdir().unwrap();
        std::fs::copy(&newest, restored.path().join("clockify-studio.redb")).unwrap();
        std::fs::copy(
            dir.path().join("secret.key"),
            restored.path().join("secret.key"),
        )
        .unwrap();
        let check = succeeded(run_on(restored.path(), &["check"]));
        assert!(
            check.contains("integrity: ok") && check.contains("table events: 5"),
            "{check}"
        );
        let server = TestServer::start_in(restored.path(), |_| {});
        assert_eq!(count_events(&server, WS, ADDON), 5);
    }

    #[test]
    fn the_interval_flag_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["6", "6x", "10s", "400d"] {
            let out = run_on(
                dir.path(),
                &[
                    "serve",
                    "--snapshot-dir",
                    text(dir.path()),
                    "--snapshot-every",
                    bad,
                ],
            );
            assert_eq!(out.status.code(), Some(2), "{bad}");
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("--snapshot-every"),
                "{bad}"
            );
        }
    }
}

mod operator_views {
    use super::*;

    #[test]
    fn workspaces_and_stats_describe_the_file() {
        let fake = FakeClockify::start();
        let dir = tempfile::tempdir().unwrap();
        let server = start_on(dir.path(), &fake);
        server.install("ws-quiet", ADDON, &fake.base);
        for i in 0..3 {
            ok(server.deliver(WS, ADDON, "NEW_TIME_ENTRY", &time_entry(&format!("te-{i}"))));
        }
        ok(api(
            &server,
            "POST",
            "/api/flows",
            Some(&json!({"name": "off", "enabled": false,
            "trigger": {"events": ["NEW_PROJECT"]}, "actions": [{"name": "tags", "operationId": "getTags"}]})),
        ));
        // Through the running server.
        let listed: Value =
            serde_json::from_str(&succeeded(run_on(dir.path(), &["workspaces", "--json"])))
                .unwrap();
        let list = listed.as_array().unwrap();
        assert_eq!(list.len(), 2);
        let busy = list.iter().find(|w| w["workspaceId"] == WS).unwrap();
        let quiet = list
            .iter()
            .find(|w| w["workspaceId"] == "ws-quiet")
            .unwrap();
        assert_eq!(busy["status"], "ACTIVE");
        assert_eq!(busy["events"], 3);
        assert_eq!(busy["flows"], 1);
        assert!(busy["lastEventAt"].is_string());
        assert_eq!(quiet["events"], 0);
        assert_eq!(quiet["lastEventAt"], Value::Null);
        assert!(busy["dataShare"].as_f64().unwrap() > quiet["dataShare"].as_f64().unwrap());
        let held = succeeded(run_on(dir.path(), &["stats"]));
        assert!(
            held.contains("table events: 3 rows") && held.contains("unknown while a server holds"),
            "{held}"
        );
        drop(server);

        // On the file.
        let table = succeeded(run_on(dir.path(), &["workspaces"]));
        assert!(
            table.starts_with("WORKSPACE") && table.contains("ws-quiet"),
            "{table}"
        );
        let stats: Value =
            serde_json::from_str(&succeeded(run_on(dir.path(), &["stats", "--json"]))).unwrap();
        assert_eq!(stats["tables"]["events"]["rows"], 3);
        assert_eq!(stats["tables"]["installations"]["rows"], 2);
        assert!(
            stats["tables"]["events"]["storedBytes"].as_u64().unwrap() > 0
                && stats["tables"]["events"]["pages"].as_u64().unwrap() > 0,
            "{stats}"
        );
        assert!(
            stats["pages"]["allocatedPages"].as_u64().unwrap() > 0,
            "{stats}"
        );
        assert!(stats["oldestEventAt"].is_string());
        let (_, stderr) = failed_with(run_on(&dir.path().join("nothing-here"), &["workspaces"]));
        assert!(stderr.contains("does not exist"), "{stderr}");
    }
}

mod notifications {
    use super::*;

    const HOOK_SECRET: &str = "a-notification-secret-of-some-length";

    fn messages(hook: &FakeClockify, kind: &str) -> Vec<(RecordedCall, Value)> {
        hook.calls()
            .into_iter()
            .filter_map(|c| {
                let body: Value = serde_json::from_slice(&c.body).ok()?;
                (body["type"] == kind).then_some((c, body))
            })
            .collect()
    }

    #[test]
    fn a_disabled_flow_and_failing_syncs_reach_the_hook_signed() {
        let fake = FakeClockify::start();
        let hook = FakeClockify::start();
        // Clockify refuses the flow's call and the webhook listing of every sync.
        fake.respond(|c| {
            (c.path.contains("/tags") || c.path.contains("/webhooks"))
                .then(|| (400, Vec::new(), b"{\"message\": \"no\"}".to_vec()))
        });
        let dir = tempfile::tempdir().unwrap();
        let (host, hook_url) = (fake.host.clone(), format!("{}/hook", hook.base));
        let server = TestServer::start_in(dir.path(), |c| {
            c.allow_api_hosts = vec![host];
            c.flow_auto_disable_after = 1;
            c.notify_url = Some(hook_url);
            c.notify_secret = Some(HOOK_SECRET.into());
        });
        server.install(WS, ADDON, &fake.base);
        let flow = ok(api(
            &server,
            "POST",
            "/api/flows",
            Some(&tags_flow("fragile")),
        ))["id"]
            .as_str()
            .unwrap()
            .to_string();
        ok(server.deliver(WS, ADDON, "NEW_TIME_ENTRY", &time_entry("te-1")));
        assert_eq!(finished_runs(&server, &flow, 1), ["failed"]);
        assert!(wait_until(DEADLINE, || !messages(
            &hook,
            "flow.auto_disabled"
        )
        .is_empty()));
        let (call, body) = messages(&hook, "flow.auto_disabled").remove(0);
        assert_eq!(call.method, "POST");
        assert_eq!(call.path, "/hook");
        assert_eq!(body["workspaceId"], WS);
        assert_eq!(body["data"]["flowId"], flow);
        assert_eq!(body["data"]["flowName"], "fragile");
        assert!(
            body["data"]["reason"]
                .as_str()
                .unwrap()
                .contains("disabled automatically")
        );
        // The signature verifies with the secret, over the id, the timestamp and the body.
        let (id, ts) = (
            &call.headers["webhook-id"],
            &call.headers["webhook-timestamp"],
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(&call.body);
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        assert_eq!(call.headers["webhook-signature"], expected);

        // Syncs keep failing: a message at the third failure in a row.
        let notified = wait_until(DEADLINE, || {
            if messages(&hook, "subscriptions.sync_failing").is_empty() {
                api(&server, "POST", "/api/subscriptions/sync", None);
                false
            } else {
                true
            }
        });
        assert!(
            notified,
            "no sync_failing message: {:?}",
            hook.calls().len()
        );
        let (_, body) = messages(&hook, "subscriptions.sync_failing").remove(0);
        assert_eq!(body["data"]["consecutiveFailures"], 3);
        assert!(server.metric("notifications_total", &["outcome=\"sent\""]) >= 2.0);
    }
}

/// Notifications as events of the built-in `studio` source, forwarded by the destinations
/// an admin points at it (issue 20: the admin-configured notification hook).
mod studio_notifications {
    use super::*;

    /// A server whose flows disable after one failure, allowed to call `fake` (as Clockify)
    /// and `receiver` (as a destination), with WS installed.
    fn start(dir: &Path, fake: &FakeClockify, receiver: &FakeClockify) -> TestServer {
        let (api_host, receiver_host) = (fake.host.clone(), receiver.host.clone());
        let server = TestServer::start_in(dir, |c| {
            c.allow_api_hosts = vec![api_host];
            c.allow_destination_hosts = vec![receiver_host];
            c.flow_auto_disable_after = 1;
        });
        server.install(WS, ADDON, &fake.base);
        server
    }

    /// Creates a destination posting to `path` on `receiver` with `filter`; returns (id, secret).
    fn destination(
        server: &TestClient,
        receiver: &FakeClockify,
        path: &str,
        filter: Value,
    ) -> (String, String) {
        let created = ok(api(
            server,
            "POST",
            "/api/destinations",
            Some(
                &json!({"name": path, "url": format!("{}{path}", receiver.base), "filter": filter}),
            ),
        ));
        (
            created["id"].as_str().unwrap().to_string(),
            created["secret"].as_str().unwrap().to_string(),
        )
    }

    /// The POSTs `receiver` got on `path`, with their JSON bodies.
    fn posts(receiver: &FakeClockify, path: &str) -> Vec<(RecordedCall, Value)> {
        receiver
            .calls()
            .into_iter()
            .filter(|c| c.method == "POST" && c.path == path)
            .map(|c| {
                let body = serde_json::from_slice(&c.body).unwrap();
                (c, body)
            })
            .collect()
    }

    fn studio_events(server: &TestClient) -> Vec<Value> {
        ok(api(server, "GET", "/api/webhooks?source=studio", None))["items"]
            .as_array()
            .unwrap()
            .clone()
    }

    #[test]
    fn a_disabled_flow_reaches_the_studio_destination_signed_and_no_other() {
        let fake = FakeClockify::start();
        let receiver = FakeClockify::start();
        fake.respond(|c| {
            c.path
                .contains("/tags")
                .then(|| (400, Vec::new(), b"{\"message\": \"no\"}".to_vec()))
        });
        let dir = tempfile::tempdir().unwrap();
        let server = start(dir.path(), &fake, &receiver);
        let (_, secret) = destination(&server, &receiver, "/studio", json!({"source": "studio"}));
        let (everything, _) = destination(&server, &receiver, "/all", json!({"source": null}));
        let (clockify, _) = destination(
            &server,
            &receiver,
            "/clockify",
            json!({"source": "clockify"}),
        );
        let flow = ok(api(
            &server,
            "POST",
            "/api/flows",
            Some(&tags_flow("fragile")),
        ))["id"]
            .as_str()
            .unwrap()
            .to_string();
        ok(server.deliver(WS, ADDON, "NEW_TIME_ENTRY", &time_entry("te-1")));
        assert_eq!(finished_runs(&server, &flow, 1), ["failed"]);

        assert!(
            wait_until(DEADLINE, || !posts(&receiver, "/studio").is_empty()),
            "nothing reached the studio destination: {:?}",
            receiver.calls()
        );
        let (call, body) = posts(&receiver, "/studio").remove(0);
        assert_eq!(body["type"], "flow.auto_disabled");
        assert_eq!(body["workspaceId"], WS);
        assert!(body["at"].is_string(), "{body}");
        assert_eq!(body["data"]["flowId"], flow);
        assert_eq!(body["data"]["flowName"], "fragile");
        let reason = body["data"]["reason"].as_str().unwrap();
        assert!(reason.contains("disabled automatically"), "{reason}");
        assert!(signed_with(&secret, &call), "{:?}", call.headers);

        // It is an event of the workspace, of the studio source.
        let events = studio_events(&server);
        assert_eq!(events.len(), 1, "{events:?}");
        let event = &events[0];
        assert_eq!(event["eventType"], "FLOW_AUTO_DISABLED");
        assert_eq!(event["sourceId"], "studio");
        let id = event["id"].as_str().unwrap();
        let stored = ok(api(&server, "GET", &format!("/api/webhooks/{id}"), None));
        assert_eq!(stored["body"]["data"]["flowId"], flow, "{stored}");

        // The destinations for every source and for Clockify got the time entry only; the
        // notification was never queued for them (it is queued with the event, and has
        // been delivered by now).
        for (destination, path) in [(&everything, "/all"), (&clockify, "/clockify")] {
            assert!(wait_until(DEADLINE, || posts(&receiver, path).len() == 1));
            let deliveries = ok(api(
                &server,
                "GET",
                &format!("/api/destinations/{destination}/deliveries"),
                None,
            ))["items"]
                .as_array()
                .unwrap()
                .clone();
            let types: Vec<&str> = deliveries
                .iter()
                .map(|d| d["eventType"].as_str().unwrap())
                .collect();
            assert_eq!(types, ["NEW_TIME_ENTRY"], "{path}");
        }

        // No flow runs on it, nor on a replay of it.
        let runs = ok(api(
            &server,
            "GET",
            &format!("/api/webhooks/{id}/runs"),
            None,
        ));
        assert_eq!(runs["runs"], json!([]), "{runs}");
        let replayed = ok(api(
            &server,
            "POST",
            &format!("/api/webhooks/{id}/replay"),
            None,
        ));
        assert_eq!(replayed["runs"], json!([]), "{replayed}");
    }

    #[test]
    fn failing_syncs_reach_the_studio_destination() {
        let fake = FakeClockify::start();
        let receiver = FakeClockify::start();
        // Clockify refuses the webhook listing of every sync.
        fake.respond(|c| {
            c.path
                .contains("/webhooks")
                .then(|| (400, Vec::new(), b"{\"message\": \"no\"}".to_vec()))
        });
        let dir = tempfile::tempdir().unwrap();
        let server = start(dir.path(), &fake, &receiver);
        let (_, secret) = destination(
            &server,
            &receiver,
            "/studio",
            json!({"source": "studio", "events": ["SUBSCRIPTION_SYNC_FAILING"]}),
        );
        // The event is stored before the sync answers.
        let stored = wait_until(DEADLINE, || {
            if studio_events(&server).is_empty() {
                api(&server, "POST", "/api/subscriptions/sync", None);
                false
            } else {
                true
            }
        });
        assert!(stored, "no SUBSCRIPTION_SYNC_FAILING event");
        let events = studio_events(&server);
        assert_eq!(events[0]["eventType"], "SUBSCRIPTION_SYNC_FAILING");
        assert!(
            wait_until(DEADLINE, || !posts(&receiver, "/studio").is_empty()),
            "nothing reached the studio destination"
        );
        let (call, body) = posts(&receiver, "/studio").remove(0);
        assert_eq!(body["type"], "subscriptions.sync_failing");
        assert_eq!(body["workspaceId"], WS);
        assert_eq!(body["data"]["consecutiveFailures"], 3);
        assert!(body["data"]["error"].is_string(), "{body}");
        assert!(signed_with(&secret, &call), "{:?}", call.headers);
    }

    /// No flow can trigger on the studio source, and no custom source can take its id (an
    /// import keeps ids), so a notification about a failing flow never runs flows.
    #[test]
    fn no_flow_can_trigger_on_studio_notifications() {
        let fake = FakeClockify::start();
        let receiver = FakeClockify::start();
        let dir = tempfile::tempdir().unwrap();
        let server = start(dir.path(), &fake, &receiver);
        let r = api(
            &server,
            "POST",
            "/api/flows",
            Some(
                &json!({"name": "loop", "trigger": {"source": "studio", "events": ["FLOW_AUTO_DISABLED"]},
                         "actions": [{"name": "tags", "operationId": "getTags"}]}),
            ),
        );
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(
            r.problems()
                .iter()
                .any(|p| p.starts_with("trigger.source") && p.contains("cannot trigger flows")),
            "{}",
            r.body
        );
        for reserved in ["studio", "clockify"] {
            let document = json!({
                "format": "clockify-studio-config", "version": 2, "settings": {},
                "sources": [{"id": reserved, "name": "sneaky"}],
                "flows": [], "destinations": [],
            });
            let r = api(
                &server,
                "POST",
                "/api/config/import",
                Some(&json!({"document": document})),
            );
            assert_eq!(r.status, 400, "{reserved}: {}", r.body);
            assert!(
                r.problems().iter().any(|p| p.starts_with("sources[0].id")),
                "{}",
                r.body
            );
        }
        assert_eq!(
            ok(api(&server, "GET", "/api/sources", None))["sources"],
            json!([])
        );
    }
}

mod pause {
    use super::*;

    #[test]
    fn paused_flows_hold_or_skip_their_runs_and_resume() {
        let fake = FakeClockify::start();
        let dir = tempfile::tempdir().unwrap();
        let host = fake.host.clone();
        let server = TestServer::start_in(dir.path(), |c| c.allow_api_hosts = vec![host]);
        // Settled, so the install's own calls (the bootstrap reads tags too) are over.
        install_settled(&server, WS, ADDON, &fake.base);
        let flow = ok(api(&server, "POST", "/api/flows", Some(&tags_flow("t"))))["id"]
            .as_str()
            .unwrap()
            .to_string();
        let before = fake
            .calls()
            .iter()
            .filter(|c| c.path.contains("/tags"))
            .count();
        let tag_calls = || {
            fake.calls()
                .iter()
                .filter(|c| c.path.contains("/tags"))
                .count()
                - before
        };

        // Queue: events are stored, runs wait; the reason shows with the flows.
        let paused = ok(api(
            &server,
            "POST",
            "/api/flows/pause",
            Some(&json!({"reason": "Clockify migration"})),
        ));
        assert_eq!(paused["mode"], "queue");
        assert_eq!(paused["by"], "user-1");
        let listed = ok(api(&server, "GET", "/api/flows", None));
        assert_eq!(listed["pause"]["reason"], "Clockify migration");
        for i in 0..3 {
            ok(server.deliver(
                WS,
                ADDON,
                "NEW_TIME_ENTRY",
                &time_entry(&format!("held-{i}")),
            ));
        }
        assert_eq!(count_events(&server, WS, ADDON), 3);
        std::thread::sleep(Duration::from_millis(500));
        let runs = ok(api(
            &server,
            "GET",
            &format!("/api/flows/{flow}/runs"),
            None,
        ));
        assert_eq!(runs["items"].as_array().unwrap().len(), 3);
        assert!(
            runs["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["status"] == "queued"),
            "{runs}"
        );
        assert_eq!(tag_calls(), 0);

        // Held runs survive a restart and start on resume.
        drop(server);
        let server =
            TestServer::start_in(dir.path(), |c| c.allow_api_hosts = vec![fake.host.clone()]);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(tag_calls(), 0);
        let resumed = ok(api(&server, "POST", "/api/flows/resume", None));
        assert_eq!(resumed["pause"], Value::Null);
        assert_eq!(finished_runs(&server, &flow, 3), ["succeeded"; 3]);
        assert_eq!(tag_calls(), 3);

        // Skip: runs are recorded as skipped with the reason.
        ok(api(
            &server,
            "POST",
            "/api/flows/pause",
            Some(&json!({"reason": "quiet hours", "mode": "skip"})),
        ));
        ok(server.deliver(WS, ADDON, "NEW_TIME_ENTRY", &time_entry("skipped-1")));
        let statuses = finished_runs(&server, &flow, 4);
        assert_eq!(statuses[0], "skipped");
        let runs = ok(api(
            &server,
            "GET",
            &format!("/api/flows/{flow}/runs"),
            None,
        ));
        let newest = runs["items"][0]["id"].as_str().unwrap();
        let detail = ok(api(&server, "GET", &format!("/api/runs/{newest}"), None));
        assert!(detail.to_string().contains("quiet hours"), "{detail}");
        assert_eq!(tag_calls(), 3);

        // Admins only, a reason is required; both switches are in the audit log.
        let member = server.api(
            "POST",
            WS,
            ADDON,
            "TEAM_MANAGER",
            "/api/flows/pause",
            Some(&json!({"reason": "x"})),
        );
        assert_eq!(member.status, 403);
        let bad = api(
            &server,
            "POST",
            "/api/flows/pause",
            Some(&json!({"reason": " ", "mode": "later"})),
        );
        assert_eq!(bad.status, 400);
        assert_eq!(bad.problems().len(), 2, "{}", bad.body);
        let log = ok(api(&server, "GET", "/api/audit?action=flows.", None));
        let actions: Vec<&str> = log["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions, ["flows.pause", "flows.resume", "flows.pause"]);
    }
}

mod pause_destinations {
    use super::*;

    fn deliveries(server: &TestClient, destination: &str) -> Vec<Value> {
        ok(api(
            server,
            "GET",
            &format!("/api/destinations/{destination}/deliveries"),
            None,
        ))["items"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// The ids of the time entries the receiver got, in the order they arrived.
    fn received(receiver: &FakeClockify) -> Vec<String> {
        receiver
            .calls()
            .iter()
            .filter(|c| c.method == "POST" && c.path == "/in")
            .map(|c| {
                let body: Value = serde_json::from_slice(&c.body).unwrap();
                body["id"].as_str().unwrap().to_string()
            })
            .collect()
    }

    #[test]
    fn a_paused_workspace_holds_its_deliveries_and_sends_them_in_order_on_resume() {
        let receiver = FakeClockify::start();
        let dir = tempfile::tempdir().unwrap();
        let start = || {
            let host = receiver.host.clone();
            TestServer::start_in(dir.path(), |c| {
                c.allow_destination_hosts = vec![host];
                // Several attempts at once per destination: the order on resume must not
                // depend on it.
                c.destination_concurrency = 4;
            })
        };
        let server = start();
        server.install(WS, ADDON, UNREACHABLE_API);
        let destination = ok(api(
            &server,
            "POST",
            "/api/destinations",
            Some(&json!({"name": "warehouse", "url": format!("{}/in", receiver.base)})),
        ))["id"]
            .as_str()
            .unwrap()
            .to_string();

        // Queue: events are stored, deliveries wait.
        ok(api(
            &server,
            "POST",
            "/api/flows/pause",
            Some(&json!({"reason": "receiver maintenance"})),
        ));
        let held: Vec<String> = (0..6).map(|i| format!("held-{i}")).collect();
        for id in &held {
            ok(server.deliver(WS, ADDON, "NEW_TIME_ENTRY", &time_entry(id)));
        }
        assert_eq!(deliveries(&server, &destination).len(), 6);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(received(&receiver), Vec::<String>::new());
        assert!(
            deliveries(&server, &destination)
                .iter()
                .all(|d| d["status"] == "pending" && d["attempts"] == json!([])),
            "nothing attempted while paused"
        );

        // Held across a restart; on resume they go out in the order they were queued.
        drop(server);
        let server = start();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(received(&receiver), Vec::<String>::new());
        ok(api(&server, "POST", "/api/flows/resume", None));
        assert!(wait_until(DEADLINE, || received(&receiver).len() >= 6));
        assert_eq!(received(&receiver), held);
        assert!(wait_until(DEADLINE, || {
            deliveries(&server, &destination)
                .iter()
                .all(|d| d["status"] == "delivered")
        }));

        // Skip: a delivery that comes due is failed, unsent, with the reason; recover sends
        // it once the pause is over.
        ok(api(
            &server,
            "POST",
            "/api/flows/pause",
            Some(&json!({"reason": "quiet hours", "mode": "skip"})),
        ));
        ok(server.deliver(WS, ADDON, "NEW_TIME_ENTRY", &time_entry("skipped-1")));
        let mut newest = Value::Null;
        assert!(wait_until(DEADLINE, || {
            newest = deliveries(&server, &destination)[0].clone();
            newest["status"] == "failed"
        }));
        assert!(
            newest["error"].as_str().unwrap().contains("quiet hours"),
            "{newest}"
        );
        assert_eq!(newest["attempts"], json!([]));
        assert_eq!(received(&receiver).len(), 6);
        ok(api(&server, "POST", "/api/flows/resume", None));
        let recovered = ok(api(
            &server,
            "POST",
            &format!("/api/destinations/{destination}/recover"),
            Some(&json!({"since": "2001-01-01T00:00:00Z"})),
        ));
        assert_eq!(recovered["requeued"], 1);
        assert!(wait_until(DEADLINE, || received(&receiver).len() == 7));
        assert_eq!(received(&receiver)[6], "skipped-1");
    }
}
