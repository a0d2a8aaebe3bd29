//! Faults the server must survive (issue 21), each reproduced: a full disk, a damaged data
//! file, a poison flow, a run that takes the process down with it, a flow that triggers
//! itself, clients that hold connections, a flow action that hangs at shutdown, a backup to a
//! full disk. Those needing a small disk mount a tmpfs themselves (root; CI runs as root).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

const WS: &str = "ws-faults";
const ADDON: &str = "addon-faults";
const DEADLINE: Duration = Duration::from_secs(60);
const DATA_FILE: &str = "clockify-studio.redb";

/// Bytes that do not compress: each delivery takes its size on disk.
fn noise(seed: u64, len: usize) -> String {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len / 2)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            format!("{:02x}", state as u8)
        })
        .collect()
}

fn entry(id: &str, description: &str, padding: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id, "workspaceId": WS, "projectId": "p1", "userId": "u1",
        "description": description, "padding": noise(id.len() as u64 + padding as u64 + description.len() as u64, padding),
        "timeInterval": {"start": "2024-05-01T09:00:00Z", "end": "2024-05-01T10:00:00Z"}
    }))
    .unwrap()
}

/// Every event of WS, by paging the API.
fn stored_events(server: &TestClient) -> usize {
    events_matching(server, "")
}

/// The events of WS that `/api/webhooks?{filter}` lists, by paging the API.
fn events_matching(server: &TestClient, filter: &str) -> usize {
    let mut count = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/webhooks?limit=200&{filter}&cursor={c}"),
            None => format!("/api/webhooks?limit=200&{filter}"),
        };
        let page = server.admin_get(WS, ADDON, &path);
        assert_eq!(page.status, 200, "{}", page.body);
        let page = page.json();
        count += page["items"].as_array().unwrap().len();
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return count,
        }
    }
}

/// Delivers padded events until one is refused with 507; returns how many were acknowledged
/// and the refusal.
fn deliver_until_full(server: &TestClient) -> (usize, Response) {
    let mut acknowledged = 0;
    for i in 0..400 {
        let r = server.deliver(
            WS,
            ADDON,
            "NEW_TIME_ENTRY",
            &entry(&format!("te-{i}"), "fill", 48 * 1024),
        );
        match r.status {
            200 => acknowledged += 1,
            507 => return (acknowledged, r),
            other => panic!("delivery {i}: {other} {}", r.body),
        }
    }
    panic!("the disk never filled up");
}

/// Point 1: a full disk answers 507 with the JSON body and `Retry-After`, stores nothing,
/// readiness says why while liveness holds, reads go on, and the server recovers by itself
/// when space returns.
#[test]
fn a_full_disk_refuses_deliveries_with_507_and_recovers_when_space_returns() {
    let Some(disk) = Tmpfs::mount(
        "faults::a_full_disk_refuses_deliveries_with_507_and_recovers_when_space_returns",
        "16m",
    ) else {
        return;
    };
    let server = TestServer::start_in(&disk.path.join("data"), |_| {});
    server.install(WS, ADDON, UNREACHABLE_API);
    let filler = disk.fill(1024 * 1024);
    let (acknowledged, full) = deliver_until_full(&server);
    assert_eq!(full.json()["code"], "insufficient_storage", "{}", full.body);
    assert!(full.error().contains("full"), "{}", full.body);
    assert!(full.header("retry-after").is_some(), "{:?}", full.headers);

    let ready = server.get("/readyz", &[]);
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(
        ready.json()["error"].as_str().unwrap().contains("full"),
        "{}",
        ready.body
    );
    assert_eq!(
        server.get("/healthz", &[]).status,
        200,
        "a full disk passes"
    );
    // Reads go on (once the file was reopened after the error).
    assert!(wait_until(DEADLINE, || {
        server.admin_get(WS, ADDON, "/api/webhooks?limit=1").status == 200
    }));
    assert_eq!(stored_events(&server), acknowledged);
    let again = server.deliver(WS, ADDON, "NEW_TIME_ENTRY", &entry("te-again", "x", 1024));
    assert_eq!(again.status, 507, "{}", again.body);

    std::fs::remove_file(&filler).unwrap();
    assert!(
        wait_until(DEADLINE, || server.get("/readyz", &[]).status == 200),
        "ready again once space returned: {}",
        server.get("/readyz", &[]).body
    );
    let after = server.deliver(WS, ADDON, "NEW_TIME_ENTRY", &entry("te-after", "x", 1024));
    assert_eq!(after.status, 200, "{}", after.body);
    assert_eq!(
        stored_events(&server),
        acknowledged + 1,
        "every acknowledged event, and nothing that was refused"
    );
    // The views that wait in memory came back from the reopened file: the entity index
    // (every delivery names user u1) and the dedupe rows (a redelivery is a duplicate).
    assert_eq!(events_matching(&server, "entity=u1"), acknowledged + 1);
    let redelivered = server.deliver(
        WS,
        ADDON,
        "NEW_TIME_ENTRY",
        &entry("te-0", "fill", 48 * 1024),
    );
    assert_eq!(redelivered.status, 200, "{}", redelivered.body);
    assert_eq!(
        redelivered.json()["duplicate"],
        true,
        "{}",
        redelivered.body
    );
    drop(server);
}

/// Point 1: a store that cannot recover (its file deleted after the disk filled up) fails
/// liveness and refuses writes, so a supervisor that watches it restarts the process.
#[test]
fn a_store_that_cannot_recover_fails_liveness() {
    let Some(disk) = Tmpfs::mount("faults::a_store_that_cannot_recover_fails_liveness", "16m")
    else {
        return;
    };
    let data = disk.path.join("data");
    let server = TestServer::start_in(&data, |_| {});
    server.install(WS, ADDON, UNREACHABLE_API);
    let filler = disk.fill(512 * 1024);
    deliver_until_full(&server);
    // Reads answer again once the writer has reopened the file (still out of space): the
    // file is deleted under that new handle, so removing it frees nothing.
    assert!(wait_until(DEADLINE, || {
        server.admin_get(WS, ADDON, "/api/webhooks?limit=1").status == 200
    }));
    std::fs::remove_file(data.join(DATA_FILE)).unwrap();
    std::fs::remove_file(&filler).unwrap();
    assert!(
        wait_until(DEADLINE, || server.get("/healthz", &[]).status == 503),
        "liveness fails"
    );
    let health = server.get("/healthz", &[]).json();
    assert_eq!(health["status"], "failing");
    assert!(
        health["error"].as_str().unwrap().contains("unusable"),
        "{health}"
    );
    assert_eq!(server.get("/readyz", &[]).status, 503);
    let refused = server.deliver(WS, ADDON, "NEW_TIME_ENTRY", &entry("te-lost", "x", 16));
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(!data.join(DATA_FILE).exists(), "not recreated empty");
}

/// Point 7: a backup that fails (its disk is full) leaves no `.partial` file behind.
#[test]
fn a_failed_backup_leaves_no_partial_file() {
    let Some(disk) = Tmpfs::mount("faults::a_failed_backup_leaves_no_partial_file", "16m") else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(temp.path(), |_| {});
    server.install(WS, ADDON, UNREACHABLE_API);
    for i in 0..30 {
        let r = server.deliver(
            WS,
            ADDON,
            "NEW_TIME_ENTRY",
            &entry(&format!("te-{i}"), "b", 32 * 1024),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    server.stop();
    disk.fill(128 * 1024);
    let dest = disk.path.join("backup.redb");
    let out = std::process::Command::new(BIN)
        .args(["backup", "--to"])
        .arg(&dest)
        .arg("--data-dir")
        .arg(temp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("full"), "{stderr}");
    assert!(!dest.exists());
    assert!(
        !store_partial(&dest).exists(),
        "the partial copy is removed: {:?}",
        std::fs::read_dir(&disk.path).unwrap().collect::<Vec<_>>()
    );
}

fn store_partial(dest: &Path) -> PathBuf {
    clockify_studio::store::partial_path(dest)
}

/// A data directory with installations, events, a flow and a finished test run whose event
/// carries `marker`; the server that wrote it is stopped.
fn written_data_dir(marker: &str) -> tempfile::TempDir {
    let fake = FakeClockify::start();
    let temp = tempfile::tempdir().unwrap();
    let host = fake.host.clone();
    let server = TestServer::start_in(temp.path(), |c| c.allow_api_hosts = vec![host]);
    server.install(WS, ADDON, &fake.base);
    for i in 0..40 {
        let r = server.deliver(
            WS,
            ADDON,
            "NEW_TIME_ENTRY",
            &entry(&format!("te-{i}"), "d", 2048),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let flow = tag_flow(&server);
    let tested = server.api(
        "POST",
        WS,
        ADDON,
        "OWNER",
        &format!("/api/flows/{flow}/test"),
        Some(&json!({"event": {"id": "te-marked", "marker": marker}, "execute": true})),
    );
    assert_eq!(tested.status, 200, "{}", tested.body);
    assert_eq!(
        tested.json()["run"]["status"],
        "succeeded",
        "{}",
        tested.body
    );
    server.stop();
    temp
}

/// A flow on NEW_TIME_ENTRY that reads the tag named by the event's id (GET: idempotent).
fn tag_flow(server: &TestClient) -> String {
    let flow = json!({"name": "read tag", "trigger": {"events": ["NEW_TIME_ENTRY"]},
        "actions": [{"name": "tag", "operationId": "getTag", "pathParams": {"id": "{{ event.id }}"}}]});
    let r = server.api("POST", WS, ADDON, "OWNER", "/api/flows", Some(&flow));
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["id"].as_str().unwrap().to_string()
}

/// Copies a data directory (file and key).
fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for name in [DATA_FILE, "secret.key"] {
        std::fs::copy(from.join(name), to.path().join(name)).unwrap();
    }
    to
}

/// Overwrites 4 KiB at `offset` with a fixed pattern of junk.
fn damage(file: &Path, offset: u64) {
    use std::io::Seek;
    let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.seek(std::io::SeekFrom::Start(offset)).unwrap();
    f.write_all(noise(offset, 8192).as_bytes()).unwrap();
    f.sync_all().unwrap();
}

fn check_passes(dir: &Path) -> bool {
    // `check` may repair what it checks: give it a copy.
    let copy = copy_dir(dir);
    std::process::Command::new(BIN)
        .args(["check", "--data-dir"])
        .arg(copy.path())
        .output()
        .unwrap()
        .status
        .success()
}

fn assert_one_clear_line(exit: &ChildExit, names: &[&str]) {
    assert!(!exit.status.success(), "{exit:?}");
    let lines: Vec<&str> = exit.stderr.trim_end().lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {exit:?}");
    for name in names {
        assert!(lines[0].contains(name), "{name:?} in {:?}", lines[0]);
    }
    let everything = format!("{}{}", exit.stderr, exit.log.join("\n"));
    assert!(!everything.contains("panicked"), "{exit:?}");
    assert!(!everything.contains("backtrace"), "{exit:?}");
}

/// Point 2: 4 KiB of junk at various offsets never makes `serve` panic. Damage visible at
/// open refuses the start with one line naming `check` and the backup; damage deeper in is
/// found after start, and readiness then fails with the same advice.
#[test]
fn a_damaged_data_file_never_panics_and_is_never_served_as_healthy() {
    let written = written_data_dir("no-marker");
    let size = std::fs::metadata(written.path().join(DATA_FILE))
        .unwrap()
        .len();
    let mut offsets = vec![0, 4096, 8192, 16384, 65536, 131072, 262144, 524288];
    offsets.extend([size / 2, size / 3, size - 8192]);
    offsets.retain(|o| *o + 4096 <= size);
    let mut refused = 0;
    let mut found_later = 0;
    for offset in offsets {
        let dir = copy_dir(written.path());
        damage(&dir.path().join(DATA_FILE), offset);
        let healthy = check_passes(dir.path());
        let mut command = ChildServer::command(dir.path());
        command.env("RUST_BACKTRACE", "1");
        match ChildServer::try_start(command) {
            Err(exit) => {
                refused += 1;
                assert_one_clear_line(&exit, &["damaged", "clockify-studio check", "restore"]);
            }
            Ok(server) => {
                if !healthy {
                    found_later += 1;
                    let noticed = wait_until(DEADLINE, || server.get("/readyz", &[]).status == 503);
                    assert!(
                        noticed,
                        "offset {offset}: `check` calls the file damaged, readiness must too: {}",
                        server.output()
                    );
                    let ready = server.get("/readyz", &[]).json();
                    assert!(
                        ready["error"]
                            .as_str()
                            .unwrap()
                            .contains("clockify-studio check"),
                        "{ready}"
                    );
                }
                // Whatever was damaged, nothing panics (the hook would log `panicked`).
                std::thread::sleep(Duration::from_millis(1500));
                assert!(
                    !server.output().contains("panicked"),
                    "offset {offset}: {}",
                    server.output()
                );
                server.kill();
            }
        }
    }
    assert!(refused > 0, "some damage is visible at open");
    let _ = found_later;
}

/// Point 2: damage in a page no start-up read touches is found by the background integrity
/// pass: readiness and liveness fail with the advice, and the damaged record is not served.
#[test]
fn deep_damage_is_found_after_start_and_nothing_damaged_is_served() {
    let marker = format!("MARKER-{}", noise(7, 64));
    let written = written_data_dir(&marker);
    let file = written.path().join(DATA_FILE);
    // A backup holds each record once (the live file also has stale copies in free pages).
    let copy = written.path().join("copy.redb");
    let out = std::process::Command::new(BIN)
        .args(["backup", "--to"])
        .arg(&copy)
        .arg("--data-dir")
        .arg(written.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&copy, &file).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let found: Vec<usize> = bytes
        .windows(marker.len())
        .enumerate()
        .filter(|(_, w)| *w == marker.as_bytes())
        .map(|(at, _)| at)
        .collect();
    assert_eq!(found.len(), 1, "the marker is in the file once");
    let at = found[0] as u64;
    // The whole page holding the run record.
    damage(&file, at / 4096 * 4096);
    let server = ChildServer::start(ChildServer::command(written.path()));
    assert!(
        wait_until(DEADLINE, || server.get("/readyz", &[]).status == 503),
        "the integrity pass finds the damage: {}",
        server.output()
    );
    let ready = server.get("/readyz", &[]).json();
    let reason = ready["error"].as_str().unwrap();
    assert!(reason.contains("damaged"), "{reason}");
    assert!(reason.contains("clockify-studio check"), "{reason}");
    assert!(reason.contains("restore"), "{reason}");
    let health = server.get("/healthz", &[]);
    assert_eq!(health.status, 503, "{}", health.body);
    let runs = server.admin_get(WS, ADDON, "/api/webhooks?limit=5");
    assert_eq!(
        runs.status, 503,
        "nothing is served from a damaged file: {}",
        runs.body
    );
    assert_eq!(runs.json()["code"], "unavailable");
    assert!(!server.output().contains("panicked"), "{}", server.output());
}

/// Point 2: an existing empty data file is refused, not turned into a new database.
#[test]
fn an_empty_data_file_is_refused_not_reinitialised() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(DATA_FILE), b"").unwrap();
    let exit = ChildServer::try_start(ChildServer::command(dir.path()))
        .err()
        .expect("the start is refused");
    assert_one_clear_line(&exit, &["empty", "clockify-studio check"]);
    assert_eq!(
        std::fs::metadata(dir.path().join(DATA_FILE)).unwrap().len(),
        0,
        "left as it was"
    );
}

/// A child server that may call the fake Clockify.
fn child_with(fake: &FakeClockify, dir: &Path) -> ChildServer {
    let mut command = ChildServer::command(dir);
    command.args(["--allow-api-host", &fake.host]);
    ChildServer::start(command)
}

/// Waits for the latest run of `flow` to fail, and checks its error says `why`.
fn assert_first_run_failed(server: &ChildServer, flow: &str, why: &str) {
    let mut runs = Vec::new();
    assert!(
        wait_until(DEADLINE, || {
            runs = runs_of(server, flow);
            runs.first().is_some_and(|r| r["status"] == "failed")
        }),
        "{runs:?} {}",
        server.output()
    );
    let id = runs[0]["id"].as_str().unwrap();
    let run = server
        .admin_get(WS, ADDON, &format!("/api/runs/{id}"))
        .json();
    assert!(run["error"].as_str().unwrap_or("").contains(why), "{run}");
}

fn runs_of(server: &TestClient, flow: &str) -> Vec<Value> {
    let r = server.admin_get(WS, ADDON, &format!("/api/flows/{flow}/runs?limit=50"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["items"].as_array().unwrap().clone()
}

fn tag_calls(fake: &FakeClockify, id: &str) -> usize {
    fake.calls()
        .iter()
        .filter(|c| c.method == "GET" && c.path.ends_with(&format!("/tags/{id}")))
        .count()
}

/// Point 3: a run in flight each time the process died, twice, is quarantined as failed with
/// the reason at the next start, not started again (and again).
#[test]
fn a_run_in_flight_at_two_crashes_is_quarantined() {
    let fake = FakeClockify::start();
    let _first = fake.hold_first(|c| c.path.ends_with("/tags/te-crash"));
    let _second = fake.hold_first(|c| c.path.ends_with("/tags/te-crash"));
    let dir = tempfile::tempdir().unwrap();
    let server = child_with(&fake, dir.path());
    server.install(WS, ADDON, &fake.base);
    let flow = tag_flow(&server);
    let r = server.deliver(WS, ADDON, "NEW_TIME_ENTRY", &entry("te-crash", "c", 16));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(wait_until(DEADLINE, || tag_calls(&fake, "te-crash") == 1));
    server.kill();

    let server = child_with(&fake, dir.path());
    assert!(
        wait_until(DEADLINE, || tag_calls(&fake, "te-crash") == 2),
        "resumed after the first crash"
    );
    server.kill();

    let server = child_with(&fake, dir.path());
    assert_first_run_failed(&server, &flow, "quarantined");
    assert_eq!(tag_calls(&fake, "te-crash"), 2, "not started a third time");
    assert_eq!(server.get("/healthz", &[]).status, 200);
}

/// Point 3: a condition that would visit more of the event than allowed fails its run with a
/// clear error; the server (given 4 GiB of address space, which the query would exceed) stays
/// up. Paths with more than two `..` are refused at save.
#[test]
fn a_poison_condition_fails_its_run_and_the_server_stays_up() {
    let fake = FakeClockify::start();
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new("sh");
    let inner = ChildServer::command(dir.path());
    command
        .arg("-c")
        .arg("ulimit -v 4194304 && exec \"$0\" \"$@\"")
        .arg(inner.get_program())
        .args(inner.get_args())
        .args(["--allow-api-host", &fake.host]);
    let server = ChildServer::start(command);
    server.install(WS, ADDON, &fake.base);
    let flow = |path: &str| {
        json!({"name": "poison", "trigger": {"events": ["NEW_TIME_ENTRY"]},
            "conditions": {"rules": [{"path": path, "op": "exists"}]},
            "actions": [{"name": "tag", "operationId": "getTag", "pathParams": {"id": "{{ event.id }}"}}]})
    };
    let refused = server.api(
        "POST",
        WS,
        ADDON,
        "OWNER",
        "/api/flows",
        Some(&flow("$..*..*..*")),
    );
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("descendant"), "{}", refused.body);
    let created = server.api(
        "POST",
        WS,
        ADDON,
        "OWNER",
        "/api/flows",
        Some(&flow("$..*..*")),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let flow_id = created.json()["id"].as_str().unwrap().to_string();

    // 60 levels, each with a hundred numbers beside the next level.
    let mut event = json!({"leaf": true});
    for level in 0..60 {
        event = json!({"next": event, "items": (0..100).collect::<Vec<u32>>(), "level": level});
    }
    event["id"] = json!("te-poison");
    let r = server.deliver(
        WS,
        ADDON,
        "NEW_TIME_ENTRY",
        &serde_json::to_vec(&event).unwrap(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_first_run_failed(&server, &flow_id, "could visit");
    assert_eq!(server.get("/healthz", &[]).status, 200);
    let next = server.deliver(WS, ADDON, "NEW_TIME_ENTRY", &entry("te-next", "n", 16));
    assert_eq!(next.status, 200, "{}", next.body);
    assert_eq!(tag_calls(&fake, "te-poison"), 0);
}

/// Point 4: a flow whose action changes the entity its trigger is about gets a warning when
/// saved, and when it does trigger itself it is disabled with the reason after
/// `--flow-loop-limit` runs for the same entity within a minute.
#[test]
fn a_flow_that_triggers_itself_is_stopped() {
    let fake = FakeClockify::start();
    let temp = tempfile::tempdir().unwrap();
    let host = fake.host.clone();
    let server = TestServer::start_in(temp.path(), |c| c.allow_api_hosts = vec![host]);
    server.install(WS, ADDON, &fake.base);
    let flow = json!({"name": "touch", "trigger": {"events": ["TIME_ENTRY_UPDATED"]},
        "actions": [{"name": "touch", "operationId": "updateTimeEntry",
            "pathParams": {"id": "{{ event.id }}"},
            "body": {"start": "{{ event.timeInterval.start }}", "description": "{{ event.description }} (checked)"}}]});
    let created = server.api("POST", WS, ADDON, "OWNER", "/api/flows", Some(&flow));
    assert_eq!(created.status, 201, "{}", created.body);
    let created = created.json();
    let warnings = created["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{created}");
    assert_eq!(warnings[0]["path"], "actions[0].operationId");
    assert!(
        warnings[0]["message"]
            .as_str()
            .unwrap()
            .contains("TIME_ENTRY_UPDATED"),
        "{created}"
    );
    let id = created["id"].as_str().unwrap().to_string();

    // Clockify tells us about each change the flow makes: the same time entry, again and again.
    for round in 0..12 {
        let r = server.deliver(
            WS,
            ADDON,
            "TIME_ENTRY_UPDATED",
            &entry("te-loop", &format!("round {round}"), 16),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let mut current = Value::Null;
    assert!(
        wait_until(DEADLINE, || {
            current = server
                .admin_get(WS, ADDON, &format!("/api/flows/{id}"))
                .json();
            current["enabled"] == false
        }),
        "{current}"
    );
    let reason = current["disabledReason"].as_str().unwrap();
    assert!(reason.contains("more than 10 times"), "{reason}");
    assert!(reason.contains("time entry"), "{reason}");
    let mut runs = Vec::new();
    assert!(
        wait_until(DEADLINE, || {
            runs = runs_of(&server, &id);
            // The twelfth delivery finds the flow enabled or already disabled, by timing.
            (11..=12).contains(&runs.len())
                && runs
                    .iter()
                    .all(|r| r["status"] != "queued" && r["status"] != "running")
        }),
        "{runs:#?}"
    );
    let updates = fake
        .calls()
        .iter()
        .filter(|c| c.method == "PUT" && c.path.ends_with("/time-entries/te-loop"))
        .count();
    assert_eq!(updates, 10, "stopped at the limit");
    let succeeded = runs.iter().filter(|r| r["status"] == "succeeded").count();
    assert_eq!(succeeded, 10, "{runs:#?}");
}

/// Point 6: with a flow action hanging in Clockify, SIGTERM still ends the process well within
/// systemd's `TimeoutStopSec=30`, and the unfinished run resumes at the next start.
#[test]
fn shutdown_ends_in_time_with_a_hung_flow_action_and_the_run_resumes() {
    let fake = FakeClockify::start();
    let _never = fake.hold_first(|c| c.path.ends_with("/tags/te-hang"));
    let dir = tempfile::tempdir().unwrap();
    let server = child_with(&fake, dir.path());
    server.install(WS, ADDON, &fake.base);
    let flow = tag_flow(&server);
    let r = server.deliver(WS, ADDON, "NEW_TIME_ENTRY", &entry("te-hang", "h", 16));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(wait_until(DEADLINE, || tag_calls(&fake, "te-hang") == 1));
    let (took, status) = server.terminate(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "exits cleanly: {status:?}"
    );
    assert!(
        took < Duration::from_secs(25),
        "stopped in {took:?}, TimeoutStopSec is 30 s"
    );

    let server = child_with(&fake, dir.path());
    let mut runs = Vec::new();
    assert!(
        wait_until(DEADLINE, || {
            runs = runs_of(&server, &flow);
            runs.first().is_some_and(|r| r["status"] == "succeeded")
        }),
        "{runs:?}"
    );
    assert_eq!(
        tag_calls(&fake, "te-hang"),
        2,
        "sent again (GET is idempotent)"
    );
}

/// A TCP connection to `server` from `source` (127.0.0.0/8 are all this host).
fn connect_from(source: [u8; 4], server: SocketAddr) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::from((source, 0)))
            .expect("bind a loopback source address");
        let stream = socket.connect(server).await.expect("connect");
        let stream = stream.into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream
    })
}

/// Whether the server closed `stream` (EOF or reset) within `within`.
fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Point 5: clients holding connections (idle, keep-alive idle, trickling a body) do not keep
/// others waiting: at the limit the connection idle longest gives way, one address gets at
/// most its cap, idle keep-alive connections are closed, a body slower than the floor is cut.
#[test]
fn held_connections_do_not_keep_other_clients_waiting() {
    let server = TestServer::start_with(|c| {
        c.max_connections = 32;
        c.max_connections_per_peer = 8;
        c.keep_alive_timeout = Duration::from_secs(1);
    });
    let addr: SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    let prompt = || {
        let started = Instant::now();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(3)))
            .build()
            .into();
        let answered = agent
            .get(&server.url("/healthz"))
            .call()
            .is_ok_and(|r| r.status() == 200);
        assert!(
            answered,
            "answered within 3 s (took {:?})",
            started.elapsed()
        );
    };

    // Idle connections from many addresses fill every slot; newcomers are still served.
    let mut idle: Vec<TcpStream> = (0..48)
        .map(|i| connect_from([127, 0, 1, 1 + (i % 12) as u8], addr))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        prompt();
    }
    let shed = idle
        .iter_mut()
        .map(|s| closed_by_server(s, Duration::from_millis(50)))
        .filter(|closed| *closed)
        .count();
    assert!(shed >= 16, "idle connections gave way ({shed})");
    drop(idle);

    // Bodies trickling from one address: it gets its cap, its next connection is refused,
    // and each slow body is cut with 408 after the grace period.
    let head = "POST /webhooks/clockify/NEW_TIME_ENTRY HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nclockify-webhook-event-type: NEW_TIME_ENTRY\r\nContent-Length: 100000\r\n\r\n{\"id\":";
    let mut trickling: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = connect_from([127, 0, 2, 1], addr);
            s.write_all(head.as_bytes()).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut over_cap = connect_from([127, 0, 2, 1], addr);
    assert!(
        closed_by_server(&mut over_cap, Duration::from_secs(2)),
        "a ninth connection from the same address is refused"
    );
    prompt();
    let mut answer = String::new();
    trickling[0]
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let started = Instant::now();
    loop {
        let _ = trickling[0].write_all(b"1");
        let mut buffer = [0u8; 1024];
        match trickling[0].read(&mut buffer) {
            Ok(n) if n > 0 => {
                answer.push_str(&String::from_utf8_lossy(&buffer[..n]));
                break;
            }
            _ if started.elapsed() > Duration::from_secs(15) => break,
            _ => {}
        }
    }
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "cut with 408: {answer:?}"
    );
    assert!(
        answer.contains("slower than 1024 bytes per second"),
        "{answer}"
    );
    drop(trickling);

    // A keep-alive connection left idle is closed.
    let mut kept = connect_from([127, 0, 0, 1], addr);
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buffer = [0u8; 4096];
    let n = kept.read(&mut buffer).unwrap();
    assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        closed_by_server(&mut kept, Duration::from_secs(5)),
        "closed after the keep-alive timeout"
    );
}

/// The crash-cycle suite: `cycles` rounds of {unique signed deliveries from `senders`
/// concurrent clients, with a flow whose action POSTs to Clockify; SIGKILL at a random moment;
/// restart on the same file; a delivery left unanswered is sent again}, then a last start that finishes the queued runs. Prints cycles,
/// acknowledged, lost, stored twice, effects sent twice and events never forwarded to the
/// destination that matches them all; all but the first two must be 0.
///
/// CI runs a short form (3 cycles, 8 senders). The long form:
/// `CRASH_CYCLES=100 CRASH_SENDERS=32 cargo test --release --test it faults::crash_cycles -- --nocapture`.
#[test]
fn crash_cycles_lose_nothing_and_repeat_nothing() {
    let cycles: usize = env_number("CRASH_CYCLES", 3);
    let senders: usize = env_number("CRASH_SENDERS", 8);
    let fake = FakeClockify::start();
    let dir = tempfile::tempdir().unwrap();
    let server = crash_child(&fake, dir.path());
    server.install(WS, ADDON, &fake.base);
    let flow = json!({"name": "tag each entry", "trigger": {"events": ["NEW_TIME_ENTRY"]},
        "actions": [{"name": "tag", "operationId": "createNewTag", "body": {"name": "{{ event.id }}"}}]});
    let r = server.api("POST", WS, ADDON, "OWNER", "/api/flows", Some(&flow));
    assert_eq!(r.status, 201, "{}", r.body);
    let flow = r.json()["id"].as_str().unwrap().to_string();
    // Every event is also forwarded to a destination (the fake, on another path).
    let destination = json!({"name": "crash receiver", "url": format!("{}/hook", fake.base)});
    let r = server.api(
        "POST",
        WS,
        ADDON,
        "OWNER",
        "/api/destinations",
        Some(&destination),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let token = webhook_token(WS, ADDON);
    let mut acknowledged: Vec<String> = Vec::new();
    let mut seed = u64::from(std::process::id()) | 1;
    let mut server = Some(server);
    // Per sender, a delivery the crash left unanswered: sent again first in the next cycle,
    // as Clockify retries (the server may have stored it; it must not store it twice).
    let mut unanswered: Vec<Option<String>> = vec![None; senders];
    for cycle in 0..cycles {
        let running = server
            .take()
            .unwrap_or_else(|| crash_child(&fake, dir.path()));
        let base = running.client.base.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads: Vec<_> = (0..senders)
            .map(|sender| {
                let (base, token, stop) = (base.clone(), token.clone(), stop.clone());
                let retry = unanswered[sender].take();
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    for n in 0.. {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            return (acked, None);
                        }
                        let id = match (n, &retry) {
                            (0, Some(id)) => id.clone(),
                            _ => format!("c{cycle}-s{sender}-n{n}"),
                        };
                        let body = entry(&id, "crash", 64);
                        let sent = try_request(
                            "POST",
                            &format!("{base}/webhooks/clockify/NEW_TIME_ENTRY"),
                            &[
                                ("content-type", "application/json"),
                                ("clockify-signature", &token),
                                ("clockify-webhook-event-type", "NEW_TIME_ENTRY"),
                            ],
                            Some(&body),
                        );
                        match sent {
                            Ok(r) if r.status == 200 => acked.push(id),
                            Ok(r) => assert!(
                                r.status == 503 || r.status == 429,
                                "{id}: {} {}",
                                r.status,
                                r.body
                            ),
                            // Killed: what was not answered was not acknowledged.
                            Err(_) => return (acked, Some(id)),
                        }
                    }
                    unreachable!()
                })
            })
            .collect();
        // A random moment, 0.3 to 2.3 s in (xorshift; the seed is printed on failure).
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(300 + seed % 2_000));
        running.kill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for (sender, thread) in threads.into_iter().enumerate() {
            let (acked, left) = thread.join().expect("a sender panicked");
            acknowledged.extend(acked);
            unanswered[sender] = left;
        }
    }

    // The last start finishes what the crashes left queued.
    let server = crash_child(&fake, dir.path());
    let stored = exported_entry_ids(&server.client);
    // Thousands of queued runs after a long form take a while: wait as long as they progress.
    let mut finished = 0;
    let mut counts = Value::Null;
    loop {
        let before = finished;
        let done = wait_until(Duration::from_secs(60), || {
            counts = server
                .admin_get(WS, ADDON, &format!("/api/flows/{flow}"))
                .json()["counts"]
                .clone();
            finished = ["succeeded", "failed", "skipped"]
                .iter()
                .map(|k| counts[k].as_u64().unwrap_or(0))
                .sum::<u64>() as usize;
            finished >= stored.len()
        });
        if done {
            break;
        }
        assert!(
            finished > before,
            "runs finished: {finished} of {}, none in the last minute: {}",
            stored.len(),
            server
                .admin_get(WS, ADDON, &format!("/api/flows/{flow}"))
                .body
        );
    }
    let mut stored_count: std::collections::HashMap<&str, usize> = Default::default();
    for id in &stored {
        *stored_count.entry(id.as_str()).or_default() += 1;
    }
    let lost = acknowledged
        .iter()
        .filter(|id| !stored_count.contains_key(id.as_str()))
        .count();
    let stored_twice = stored_count.values().filter(|n| **n > 1).count();
    let mut effects: std::collections::HashMap<String, usize> = Default::default();
    for call in fake.calls() {
        if call.method == "POST" && call.path.ends_with("/tags") {
            let body: Value = serde_json::from_slice(&call.body).unwrap_or(Value::Null);
            *effects
                .entry(body["name"].as_str().unwrap_or("").to_string())
                .or_default() += 1;
        }
    }
    let effects_twice = effects.values().filter(|n| **n > 1).count();
    // Destinations deliver at least once: every stored event reaches the receiver.
    let forwarded = || -> std::collections::HashSet<String> {
        fake.calls()
            .iter()
            .filter(|c| c.method == "POST" && c.path == "/hook")
            .filter_map(|c| serde_json::from_slice::<Value>(&c.body).ok())
            .filter_map(|b| b["id"].as_str().map(str::to_string))
            .collect()
    };
    let mut not_forwarded = stored.len();
    wait_until(Duration::from_secs(120), || {
        let got = forwarded();
        not_forwarded = stored.iter().filter(|id| !got.contains(*id)).count();
        not_forwarded == 0
    });
    println!(
        "crash cycles: cycles={cycles} senders={senders} acknowledged={} stored={} lost={lost} \
         stored_twice={stored_twice} effects_sent={} effects_sent_twice={effects_twice} \
         runs_finished={finished} runs_failed={} not_forwarded={not_forwarded} seed={}",
        acknowledged.len(),
        stored.len(),
        effects.len(),
        counts["failed"],
        u64::from(std::process::id()) | 1
    );
    assert!(!acknowledged.is_empty(), "nothing was acknowledged");
    assert_eq!(lost, 0, "acknowledged events lost");
    assert_eq!(stored_twice, 0, "events stored twice");
    assert_eq!(effects_twice, 0, "POSTs sent twice");
    assert_eq!(
        not_forwarded, 0,
        "stored events never reached the destination"
    );
    assert_eq!(server.get("/healthz", &[]).status, 200);
}

/// A server for the crash cycles. A POST cut by a kill fails its run ("outcome unknown", never
/// sent again), so after a few kills auto-disable would stop the flow and later deliveries would
/// start no runs: it is off here.
fn crash_child(fake: &FakeClockify, dir: &Path) -> ChildServer {
    let mut command = ChildServer::command(dir);
    command.args([
        "--allow-api-host",
        &fake.host,
        "--flow-auto-disable-after",
        "0",
        "--allow-destination-host",
        &fake.host,
        // Quick retries, so an attempt cut by a kill is repeated within the final wait.
        "--destination-retry-schedule",
        "0s,1s,1s,1s,1s,1s,1s,1s,1s,1s",
        "--destination-max-rps",
        "10000",
        "--destination-concurrency",
        "16",
    ]);
    ChildServer::start(command)
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `id` in the body of every event of WS, from the NDJSON export.
fn exported_entry_ids(server: &TestClient) -> Vec<String> {
    let r = server.admin_get(WS, ADDON, "/api/webhooks/export");
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let event: Value = serde_json::from_str(l).unwrap();
            event["body"]["id"].as_str().unwrap_or("").to_string()
        })
        .collect()
}
