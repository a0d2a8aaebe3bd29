//! `cargo bench --bench scale`: a big data file and what it costs. Fills a fresh data file with
//! SCALE_EVENTS events (default 1,000,000; `cargo bench --bench scale -- --10m` for ten
//! million) over real HTTP at 64 clients, across 100 workspaces (workspace 0 receives half of
//! them, the other 99 share the rest, so one workspace is as big as a busy customer's), with
//! realistic bodies: every sample type of assets/samples in turn, each with a unique own
//! `id`, a unique word in its texts, and the ids it references drawn from a pool per
//! workspace (50 users, projects, tasks … of each kind). All are received within the dedupe
//! window, as after one busy day. Then prints, one line each:
//!
//! - `fill`: deliveries per second at 64 clients with these bodies, and the server's CPU;
//! - `disk`: the data file's bytes per event, and per table (from `check`);
//! - `start_sigterm`, `start_sigkill`: spawn → first `/healthz` 200 after a clean stop and
//!   after a kill, and the server's RSS right after (median of three);
//! - `newest50`, `entity_own`, `entity_shared`: p50/p99 of the newest 50 of workspace 0, of one
//!   event's own id, and of a user's newest 50 (`GET /api/webhooks?entity=`); a build without
//!   that filter is measured the old way (`q=id=…`, following cursors);
//! - `search`: a rare text in workspace 0's oldest event (`q=…`), requests and time until it
//!   is found, and rows scanned per second;
//! - `backup`: `clockify-studio backup` of the live file while idle (MB/s), then ingest p99
//!   at 64 clients during a backup against a run of the same length without one;
//! - `retention`: ingest p99 at 64 clients while retention deletes every stored event (the
//!   server started with a hidden benchmark flag that ages them), run by run, and the deletion
//!   rate; then `retention paired`: the same runs from a copy of the file as it was before,
//!   without retention, and the p99 of each phase as a whole;
//! - `space`: file size after retention, after ingesting again (free pages reused), and after
//!   `compact`; `check`'s page figures.
//!
//! `BENCH_SERVER_BIN=/path/to/older/clockify-studio` measures another build with the same
//! load; figures a build cannot give (no `compact`, no `entity` filter) are printed as `n/a`.
//! `SCALE_SECONDS` (default 10) sets the length of each ingest-under-load run;
//! `SCALE_FILL_ONLY=1` stops after the fill and disk figures (to compare ingest of two builds);
//! `SCALE_SKIP_RETENTION=1` stops before the retention phase (at ten million events retention
//! under load would take hours here); `SCALE_REUSE=DIR` keeps a copy of the fill in DIR and,
//! when DIR already holds one, starts from a copy of it instead of filling (to measure the
//! later phases again; the retention clock counts from the original fill); with it,
//! `SCALE_FROM=backup` skips start-up, lookups and search, `SCALE_FROM=retention` the backups
//! too.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const WORKSPACES: usize = 100;
const ADDON: &str = "addon-scale";
const CONCURRENCY: usize = 64;
/// Distinct entities of each kind a workspace's events refer to.
const POOL: u64 = 50;
const DAY_SECS: u64 = 24 * 60 * 60;

fn workspace(i: usize) -> String {
    format!("65b7a1f0c0ffee{i:010}")
}

/// Event `n`'s workspace: every second event goes to workspace 0.
fn workspace_of(n: u64) -> usize {
    if n % 2 == 0 {
        0
    } else {
        1 + ((n / 2) % (WORKSPACES as u64 - 1)) as usize
    }
}

/// The event's own id: 24 hex digits like a Clockify id, time-ordered, unique per `n`.
fn own_id(n: u64) -> String {
    format!(
        "6{:07x}{:016x}",
        BASE_SECS.get().copied().unwrap_or(0) & 0xfff_ffff,
        n
    )
}

/// The unique word in event `n`'s texts.
fn word(n: u64) -> String {
    format!("zq{n:x}z")
}

/// A referenced entity: the `k`-th of its kind (`kind` numbers the sample's id values).
fn referenced_id(ws: usize, kind: usize, k: u64) -> String {
    format!("5e{:06x}{ws:04x}{k:012x}", kind)
}

static BASE_SECS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

enum Part {
    Text(Vec<u8>),
    Own,
    Workspace,
    Ref(usize),
    Word,
}

/// A sample body cut where the ids and texts go.
struct Template {
    event_type: String,
    parts: Vec<Part>,
}

impl Template {
    fn load(path: &Path) -> Template {
        let text = std::fs::read_to_string(path).unwrap();
        let json: Value = serde_json::from_str(&text).unwrap();
        let own = ["id", "assignmentId", "expenseId"]
            .iter()
            .find_map(|k| json.get(*k).and_then(Value::as_str))
            .map(str::to_string);
        let ws = json
            .get("workspaceId")
            .and_then(Value::as_str)
            .map(str::to_string);
        let ids = regex::Regex::new(r#""([0-9a-f]{24})""#).unwrap();
        let texts = regex::Regex::new(r#""(description|name|note)": "([^"]*)""#).unwrap();
        // (position, length replaced, part)
        let mut cuts: Vec<(usize, usize, Part)> = Vec::new();
        let mut kinds: Vec<String> = Vec::new();
        for m in ids.captures_iter(&text) {
            let value = m.get(1).unwrap();
            let part = if Some(value.as_str()) == own.as_deref() {
                Part::Own
            } else if Some(value.as_str()) == ws.as_deref() {
                Part::Workspace
            } else {
                let kind = kinds
                    .iter()
                    .position(|k| k == value.as_str())
                    .unwrap_or_else(|| {
                        kinds.push(value.as_str().to_string());
                        kinds.len() - 1
                    });
                Part::Ref(kind)
            };
            cuts.push((value.start(), value.len(), part));
        }
        for m in texts.captures_iter(&text) {
            // Appended to the text: " zq…z".
            let value = m.get(2).unwrap();
            cuts.push((value.end(), 0, Part::Word));
        }
        cuts.sort_by_key(|c| c.0);
        let mut parts = Vec::new();
        let mut at = 0;
        for (start, len, part) in cuts {
            parts.push(Part::Text(text.as_bytes()[at..start].to_vec()));
            if matches!(part, Part::Word) {
                parts.push(Part::Text(b" ".to_vec()));
            }
            parts.push(part);
            at = start + len;
        }
        parts.push(Part::Text(text.as_bytes()[at..].to_vec()));
        // A body without an id of its own gets one, so no two deliveries are duplicates.
        if !parts.iter().any(|p| matches!(p, Part::Own)) {
            let Some(Part::Text(first)) = parts.first_mut() else {
                unreachable!("parts start with text")
            };
            let rest = first.split_off(first.iter().position(|b| *b == b'{').unwrap() + 1);
            parts.splice(
                1..1,
                [
                    Part::Text(b"\n    \"eventSeq\": \"".to_vec()),
                    Part::Own,
                    Part::Text(b"\",".to_vec()),
                    Part::Text(rest),
                ],
            );
        }
        Template {
            event_type: path.file_stem().unwrap().to_string_lossy().into_owned(),
            parts,
        }
    }

    fn render(&self, n: u64, out: &mut Vec<u8>) {
        let ws = workspace_of(n);
        out.clear();
        for part in &self.parts {
            match part {
                Part::Text(bytes) => out.extend_from_slice(bytes),
                Part::Own => out.extend_from_slice(own_id(n).as_bytes()),
                Part::Workspace => out.extend_from_slice(workspace(ws).as_bytes()),
                Part::Ref(kind) => {
                    // Spread without a pattern across the pool, stable per event.
                    let k = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % POOL;
                    out.extend_from_slice(referenced_id(ws, *kind, k).as_bytes())
                }
                Part::Word => out.extend_from_slice(word(n).as_bytes()),
            }
        }
    }
}

fn templates() -> Arc<Vec<Template>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/samples");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    Arc::new(paths.iter().map(|p| Template::load(p)).collect())
}

/// The sample event `n` is made from: each type in turn within a workspace.
fn template_of(n: u64, templates: &[Template]) -> &Template {
    &templates[((n / WORKSPACES as u64) % templates.len() as u64) as usize]
}

/// Every delivery's latency, with when it ended (seconds since the run began).
struct Run {
    acked: u64,
    failed: u64,
    seconds: f64,
    latencies: Vec<(f64, f64)>,
}

impl Run {
    fn p99_between(&self, from: f64, to: f64) -> (f64, usize) {
        let mut ms: Vec<f64> = self
            .latencies
            .iter()
            .filter(|(at, _)| *at >= from && *at <= to)
            .map(|(_, ms)| *ms)
            .collect();
        ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (percentile(&ms, 0.99), ms.len())
    }

    fn p99(&self) -> f64 {
        self.p99_between(0.0, f64::MAX).0
    }

    /// p99 of each second of the run (to see where a slow stretch is).
    fn p99_per_second(&self) -> Vec<f64> {
        (0..self.seconds.ceil() as usize)
            .map(|s| (self.p99_between(s as f64, s as f64 + 1.0).0 * 10.0).round() / 10.0)
            .collect()
    }
}

/// Delivers from 64 clients for `seconds`, numbering events from `next` on (and moving it past
/// what this run used).
fn timed_run(
    runtime: &tokio::runtime::Runtime,
    base: &str,
    templates: &Arc<Vec<Template>>,
    signatures: &Arc<Vec<String>>,
    next: &mut u64,
    seconds: f64,
) -> Run {
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let run = deliver(
        runtime,
        base,
        templates,
        signatures,
        *next,
        u64::MAX / 2,
        Some(until),
        false,
    );
    *next += run.acked + run.failed + CONCURRENCY as u64;
    run
}

/// Delivers events `first..first + count` (or until `until` passes) at `concurrency`.
#[allow(clippy::too_many_arguments)] // one call per phase; a struct would only rename them
fn deliver(
    runtime: &tokio::runtime::Runtime,
    base: &str,
    templates: &Arc<Vec<Template>>,
    signatures: &Arc<Vec<String>>,
    first: u64,
    count: u64,
    until: Option<Instant>,
    progress: bool,
) -> Run {
    let addr = base.trim_start_matches("http://").to_string();
    let next = Arc::new(AtomicU64::new(first));
    let failed = Arc::new(AtomicU64::new(0));
    let end = first + count;
    let started = Instant::now();
    let latencies = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..CONCURRENCY {
            let (addr, templates, signatures, next, failed) = (
                addr.clone(),
                templates.clone(),
                signatures.clone(),
                next.clone(),
                failed.clone(),
            );
            tasks.spawn(async move {
                let mut connection = RawConnection::connect(&addr).await;
                let mut latencies = Vec::new();
                let mut body = Vec::with_capacity(4096);
                loop {
                    if until.is_some_and(|u| Instant::now() >= u) {
                        break;
                    }
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= end {
                        break;
                    }
                    if progress && n > first && (n - first) % (count / 10).max(1) == 0 {
                        eprintln!(
                            "  {} of {count} after {:.0} s",
                            n - first,
                            started.elapsed().as_secs_f64()
                        );
                    }
                    let template = template_of(n, &templates);
                    template.render(n, &mut body);
                    let head = format!(
                        "POST /webhooks/clockify/{t} HTTP/1.1\r\nHost: {addr}\r\n\
                         clockify-signature: {s}\r\nclockify-webhook-event-type: {t}\r\n\
                         Content-Type: application/json\r\n",
                        t = template.event_type,
                        s = signatures[workspace_of(n)],
                    );
                    let t = Instant::now();
                    match connection.send(&head, &body).await {
                        Ok(200) => latencies.push((
                            started.elapsed().as_secs_f64(),
                            t.elapsed().as_secs_f64() * 1000.0,
                        )),
                        Ok(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            connection = RawConnection::connect(&addr).await;
                        }
                    }
                }
                latencies
            });
        }
        let mut all = Vec::new();
        while let Some(done) = tasks.join_next().await {
            all.extend(done.unwrap());
        }
        all
    });
    Run {
        acked: latencies.len() as u64,
        failed: failed.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        latencies,
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join("/")
}

/// A server started by this benchmark, and how long it took to answer `/healthz`.
fn start(data_dir: &Path, extra: &[&str]) -> (Server, f64) {
    let started = Instant::now();
    let server = Server::start_with_args(data_dir, extra);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    loop {
        if let Ok(r) = agent.get(&format!("{}/healthz", server.base)).call()
            && r.status() == 200
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the server did not become healthy"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    (server, started.elapsed().as_secs_f64() * 1000.0)
}

/// VmRSS and VmHWM of the server, MiB.
fn rss(server: &Server) -> (f64, f64) {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn kill(mut server: Server) {
    let _ = Command::new("kill")
        .args(["-KILL", &server.child.id().to_string()])
        .status();
    let _ = server.child.wait();
}

fn data_file(dir: &Path) -> PathBuf {
    dir.join("clockify-studio.redb")
}

/// A fill kept by `SCALE_REUSE=DIR` for the next run: the data directory's files and
/// `scale-fill.txt` (the fill's base seconds, events stored and end, in Unix seconds).
struct Reused {
    acked: u64,
    ended_ago: Duration,
}

impl Reused {
    const FILE: &str = "scale-fill.txt";

    fn read(dir: &Path) -> Option<Reused> {
        let text = std::fs::read_to_string(dir.join(Reused::FILE)).ok()?;
        let fields: Vec<u64> = text
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let [_, acked, ended] = fields[..] else {
            return None;
        };
        let now = jiff::Timestamp::now().as_second() as u64;
        Some(Reused {
            acked,
            ended_ago: Duration::from_secs(now.saturating_sub(ended)),
        })
    }

    fn write(dir: &Path, acked: u64) {
        let base = BASE_SECS.get().copied().unwrap_or(0);
        let now = jiff::Timestamp::now().as_second();
        std::fs::write(dir.join(Reused::FILE), format!("{base} {acked} {now}\n")).unwrap();
    }
}

/// Copies the data directory's files, keeping the data file's holes.
fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && !path.ends_with(Reused::FILE) {
            let ok = Command::new("cp")
                .arg("--sparse=always")
                .arg(&path)
                .arg(to)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "copying {} failed", path.display());
        }
    }
}

/// Three starts of the server on `dir`, each ended by `stop`: prints the median time to ready
/// and RSS after the start.
fn starts(dir: &Path, label: &str, stop: fn(Server)) {
    let mut runs = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        let (server, ms) = start(dir, &[]);
        let (rss_now, hwm) = rss(&server);
        runs.0.push(ms);
        runs.1.push(rss_now);
        runs.2.push(hwm);
        stop(server);
    }
    println!(
        "{label} ready_ms={:.0} rss_mib={:.1} peak_rss_mib={:.1} runs_ms={:?} load={}",
        median(runs.0.clone()),
        median(runs.1),
        median(runs.2),
        runs.0.iter().map(|v| v.round()).collect::<Vec<_>>(),
        load()
    );
}

fn file_size(dir: &Path) -> u64 {
    std::fs::metadata(data_file(dir)).map_or(0, |m| m.len())
}

/// Bytes the file takes on the disk: redb grows the file ahead of use (doubling up to 4 GiB,
/// then a region at a time) and the part never written is a hole, so this is below the length.
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(data_file(dir)).map_or(0, |m| m.blocks() * 512)
}

/// `clockify-studio SUBCOMMAND --data-dir DIR ARGS…`: (success, stdout, seconds).
fn cli(sub: &str, dir: &Path, args: &[&str]) -> (bool, String, f64) {
    let started = Instant::now();
    let out = Command::new(server_bin())
        .arg(sub)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text, seconds)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

/// GET with the user token; (status, JSON, ms).
fn get(agent: &ureq::Agent, base: &str, token: &str, path: &str) -> (u16, Value, f64) {
    let t = Instant::now();
    let mut r = agent
        .get(&format!("{base}{path}"))
        .header("x-addon-token", token)
        .call()
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.body_mut().read_json().unwrap_or(Value::Null);
    (status, body, t.elapsed().as_secs_f64() * 1000.0)
}

fn p50_p99(agent: &ureq::Agent, base: &str, token: &str, paths: &[String]) -> (f64, f64, usize) {
    let mut ms = Vec::new();
    let mut items = 0;
    for (i, path) in paths.iter().enumerate() {
        let (status, body, took) = get(agent, base, token, path);
        assert_eq!(status, 200, "{path}: {body}");
        items = items.max(body["items"].as_array().map_or(0, Vec::len));
        if i >= paths.len() / 10 {
            ms.push(took);
        }
    }
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (percentile(&ms, 0.5), percentile(&ms, 0.99), items)
}

/// Follows cursors until a page has an item (or the log ends): (found, requests, ms, rows
/// the server said it scanned).
fn follow(agent: &ureq::Agent, base: &str, token: &str, query: &str) -> (bool, usize, f64, u64) {
    let started = Instant::now();
    let mut cursor: Option<String> = None;
    let mut requests = 0;
    let mut scanned = 0u64;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/webhooks?limit=50&{query}&cursor={c}"),
            None => format!("/api/webhooks?limit=50&{query}"),
        };
        let (status, body, _) = get(agent, base, token, &path);
        assert_eq!(status, 200, "{path}: {body}");
        requests += 1;
        scanned += body["scanned"].as_u64().unwrap_or(0);
        let found = body["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty());
        cursor = body["nextCursor"].as_str().map(str::to_string);
        if found || cursor.is_none() {
            return (
                found,
                requests,
                started.elapsed().as_secs_f64() * 1000.0,
                scanned,
            );
        }
    }
}

fn supports_entity(agent: &ureq::Agent, base: &str) -> bool {
    let mut r = agent
        .get(&format!("{base}/api/openapi.json"))
        .call()
        .unwrap();
    let doc: Value = r.body_mut().read_json().unwrap_or(Value::Null);
    doc["paths"]["/api/webhooks"]["get"]["parameters"]
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p["name"] == "entity"))
}

fn main() {
    let ten_million = std::env::args().any(|a| a == "--10m");
    let total: u64 = std::env::var("SCALE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if ten_million { 10_000_000 } else { 1_000_000 });
    let seconds: f64 = std::env::var("SCALE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0);
    // A reused fill keeps its ids (own ids include the time the fill began).
    let reused_base = std::env::var_os("SCALE_REUSE")
        .and_then(|d| std::fs::read_to_string(Path::new(&d).join(Reused::FILE)).ok())
        .and_then(|t| t.split_whitespace().next()?.parse().ok());
    BASE_SECS.get_or_init(|| reused_base.unwrap_or(jiff::Timestamp::now().as_second() as u64));
    let templates = templates();
    let signatures: Arc<Vec<String>> = Arc::new(
        (0..WORKSPACES)
            .map(|i| sign(&claims(&workspace(i), ADDON)))
            .collect(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::Builder::new()
        .prefix("scale-")
        .tempdir_in(
            std::env::var("SCALE_DIR")
                .unwrap_or_else(|_| std::env::temp_dir().display().to_string()),
        )
        .unwrap();
    let dir = dir.path();
    let bin = server_bin();
    println!(
        "scale server={bin} events={total} workspaces={WORKSPACES} load={}",
        load()
    );

    // Fill, or a copy of an earlier fill (SCALE_REUSE).
    let reuse = std::env::var_os("SCALE_REUSE").map(PathBuf::from);
    let (stored_before, fill_ended) = match reuse.as_deref().and_then(Reused::read) {
        Some(reused) => {
            copy_dir(reuse.as_deref().unwrap(), dir);
            println!(
                "fill reused={} events={} filled_seconds_ago={}",
                reuse.as_deref().unwrap().display(),
                reused.acked,
                reused.ended_ago.as_secs()
            );
            (reused.acked, Instant::now() - reused.ended_ago)
        }
        None => {
            let (server, _) = start(dir, &[]);
            for i in 0..WORKSPACES {
                install(&server.base, &workspace(i), ADDON);
            }
            let cpu = server.cpu_seconds();
            let fill = deliver(
                &runtime,
                &server.base,
                &templates,
                &signatures,
                0,
                total,
                None,
                true,
            );
            let fill_ended = Instant::now();
            let cpu_us = (server.cpu_seconds() - cpu) * 1e6 / fill.acked.max(1) as f64;
            let mut body = Vec::new();
            let mean_body: f64 = (0..templates.len() as u64 * WORKSPACES as u64)
                .map(|n| {
                    template_of(n, &templates).render(n, &mut body);
                    body.len() as f64
                })
                .sum::<f64>()
                / (templates.len() * WORKSPACES) as f64;
            println!(
                "fill events={} failed={} seconds={:.0} rps={:.0} p99_ms={:.1} server_cpu_us_per_event={cpu_us:.0} mean_body_bytes={mean_body:.0} load={}",
                fill.acked,
                fill.failed,
                fill.seconds,
                fill.acked as f64 / fill.seconds,
                fill.p99(),
                load()
            );
            server.stop();
            assert_eq!(fill.failed, 0, "deliveries failed while filling");
            if let Some(to) = reuse.as_deref() {
                std::fs::create_dir_all(to).unwrap();
                copy_dir(dir, to);
                Reused::write(to, fill.acked);
            }
            (fill.acked, fill_ended)
        }
    };

    // Bytes on disk.
    let size = file_size(dir);
    let on_disk = disk_bytes(dir);
    let (_, check, check_s) = cli("check", dir, &[]);
    println!(
        "disk file_bytes={size} bytes_per_event={:.0} allocated_bytes={on_disk} allocated_per_event={:.0} check_seconds={check_s:.1}",
        size as f64 / total as f64,
        on_disk as f64 / total as f64
    );
    for line in check.lines().filter(|l| l.contains("pages")) {
        println!("  check: {line}");
    }
    // What each table costs per event (a build without per-table figures prints rows only).
    let (_, stats, _) = cli("stats", dir, &["--json"]);
    let stats = stats.lines().find(|l| l.starts_with('{')).unwrap_or("");
    if let Ok(stats) = serde_json::from_str::<Value>(stats) {
        for (name, t) in stats["tables"].as_object().into_iter().flatten() {
            let pages = t["pages"].as_u64().unwrap_or(0);
            if t["rows"].as_u64().unwrap_or(0) == 0 {
                continue;
            }
            println!(
                "  table {name}: rows={} bytes_per_event={:.0} stored_per_event={:.0}",
                t["rows"],
                (pages * 4096) as f64 / total as f64,
                t["storedBytes"].as_u64().unwrap_or(0) as f64 / total as f64
            );
        }
    }

    if std::env::var_os("SCALE_FILL_ONLY").is_some() {
        return;
    }

    // SCALE_FROM=backup goes straight to the backup phase (with SCALE_REUSE, to measure it again).
    let from = std::env::var("SCALE_FROM").unwrap_or_default();
    let from_backup = from == "backup" || from == "retention";
    let from_retention = from == "retention";
    if !from_backup {
        // Start-up: after a clean stop, then after a kill (the first kill leaves the file as
        // a crash does for the first measured start).
        starts(dir, "start_sigterm", Server::stop);
        kill(start(dir, &[]).0);
        starts(dir, "start_sigkill", kill);
    }

    // Lookups.
    let (server, _) = start(dir, &[]);
    if !from_backup {
        let agent = agent();
        let token = user_token(&workspace(0), ADDON);
        let entity = supports_entity(&agent, &server.base);
        let newest: Vec<String> = (0..220)
            .map(|_| "/api/webhooks?limit=50".to_string())
            .collect();
        let measure = |label: &str, paths: &[String]| {
            let (p50, p99, items) = p50_p99(&agent, &server.base, &token, paths);
            println!(
                "{label} items={items} p50_ms={p50:.2} p99_ms={p99:.2} load={}",
                load()
            );
        };
        measure("newest50", &newest);
        // Events of workspace 0 spread over the whole log.
        let picks: Vec<u64> = (0..220u64)
            .map(|i| ((i * 7_919 * 2) % total) & !1)
            .collect();
        if entity {
            let own: Vec<String> = picks
                .iter()
                .map(|n| format!("/api/webhooks?limit=50&entity={}", own_id(*n)))
                .collect();
            measure("entity_own", &own);
            let shared: Vec<String> = (0..220u64)
                .map(|i| {
                    format!(
                        "/api/webhooks?limit=50&entity={}",
                        referenced_id(0, 1, i % POOL)
                    )
                })
                .collect();
            measure("entity_shared", &shared);
        } else {
            // The old way: a field search, following cursors; a few, since each takes seconds.
            let mut times = Vec::new();
            let mut requests = Vec::new();
            for n in picks.iter().take(3) {
                let (found, r, ms, _) = follow(
                    &agent,
                    &server.base,
                    &token,
                    &format!("q=id={}", own_id(*n)),
                );
                assert!(found, "event {n} not found by id");
                times.push(ms);
                requests.push(r);
            }
            println!(
                "entity_own (q=id=, following cursors) requests={requests:?} ms={:?} load={}",
                times.iter().map(|v| v.round()).collect::<Vec<_>>(),
                load()
            );
            println!("entity_shared n/a");
        }
        // A rare text: the oldest event of workspace 0.
        let (found, requests, ms, scanned) =
            follow(&agent, &server.base, &token, &format!("q={}", word(0)));
        let ws0 = total.div_ceil(2);
        let scanned = if scanned > 0 { scanned } else { ws0 };
        println!(
            "search found={found} requests={requests} ms={ms:.0} rows_scanned={scanned} rows_per_s={:.0} workspace_events={ws0} load={}",
            scanned as f64 / (ms / 1000.0),
            load()
        );
    }

    // Backup while idle, then under load.
    // SCALE_BACKUP_DIR: backups to another disk (or a tmpfs, to set the disk's share apart).
    let backup_to = std::env::var_os("SCALE_BACKUP_DIR")
        .map_or_else(|| dir.to_path_buf(), PathBuf::from)
        .join("backup.redb");
    if !from_retention {
        let (ok, out, backup_s) = cli("backup", dir, &["--to", backup_to.to_str().unwrap()]);
        assert!(ok, "backup failed: {out}");
        let size = file_size(dir);
        println!(
            "backup idle seconds={backup_s:.1} file_mb={:.0} mb_per_s={:.0} copy_mb={:.0} load={}",
            size as f64 / 1e6,
            size as f64 / 1e6 / backup_s,
            std::fs::metadata(&backup_to).map_or(0, |m| m.len()) as f64 / 1e6,
            load()
        );
        let _ = std::fs::remove_file(&backup_to);
    }
    let mut next = total;
    // One run of `seconds` at 64 clients against `base`, with events from `next` on.
    let ingest_for = |base: &str, next: &mut u64| {
        timed_run(&runtime, base, &templates, &signatures, next, seconds)
    };
    let mut without = Vec::new();
    let mut with = Vec::new();
    for _ in 0..if from_retention { 0 } else { 2 } {
        let run = ingest_for(&server.base, &mut next);
        without.push(run.p99());
        // A backup in the background of the same run.
        let (dir2, to) = (dir.to_path_buf(), backup_to.clone());
        let backup = std::thread::spawn(move || {
            let started = Instant::now();
            let (ok, out, s) = cli("backup", &dir2, &["--to", to.to_str().unwrap()]);
            assert!(ok, "backup failed: {out}");
            (started, s)
        });
        let run_started = Instant::now();
        let run = ingest_for(&server.base, &mut next);
        let (backup_started, backup_s) = backup.join().unwrap();
        let from = backup_started
            .saturating_duration_since(run_started)
            .as_secs_f64();
        let (p99, n) = run.p99_between(from, from + backup_s);
        with.push((p99, n, backup_s));
        if std::env::var_os("SCALE_PER_SECOND").is_some() {
            println!(
                "  backup started at {from:.1} s, p99 per second of the run: {:?}",
                run.p99_per_second()
            );
        }
        let _ = std::fs::remove_file(&backup_to);
    }
    if !from_retention {
        println!(
            "backup under_load p99_ms_without={:?} p99_ms_during={:?} (p99, deliveries during the backup, backup seconds) load={}",
            without
                .iter()
                .map(|v| (v * 10.0).round() / 10.0)
                .collect::<Vec<_>>(),
            with.iter()
                .map(|(p, n, s)| ((p * 10.0).round() / 10.0, *n, (s * 10.0).round() / 10.0))
                .collect::<Vec<_>>(),
            load()
        );
    }

    if std::env::var_os("SCALE_SKIP_RETENTION").is_some() {
        server.stop();
        return;
    }

    // Retention under load: runs of `seconds` while retention deletes every stored event,
    // then the same runs without retention on a copy of the file as it was before (the file
    // grows several-fold during the phase and ingestion slows as it grows, so only the same
    // runs from the same file say what retention costs).
    let run = ingest_for(&server.base, &mut next);
    let p99_without = run.p99();
    let rps_without = run.acked as f64 / run.seconds;
    server.stop();
    let paired = tempfile::Builder::new()
        .prefix("scale-paired-")
        .tempdir_in(dir.parent().unwrap())
        .unwrap();
    copy_dir(dir, paired.path());
    let first_of_phase = next;
    // The server's retention clock is moved forward so that the events of the fill (and
    // only those: not the ones ingested meanwhile) are past the default 90 days.
    let since_fill = fill_ended.elapsed().as_secs();
    let skew = (90 * DAY_SECS - since_fill + 2).to_string();
    let (server, _) = start(
        dir,
        &[
            "--retention-interval-secs",
            "1",
            "--retention-clock-skew-secs",
            &skew,
        ],
    );
    let retention_started = Instant::now();
    let deleted = || {
        metric_value(
            &scrape(&server.base),
            "retention_deleted_total{kind=\"event\"}",
        )
    };
    let mut runs = Vec::new();
    let mut rates = Vec::new();
    let mut during_ms = Vec::new();
    // Ingest in runs of `seconds` until retention has deleted what was stored.
    while deleted() < stored_before as f64
        && retention_started.elapsed() < Duration::from_secs(1800)
    {
        let before = deleted();
        let run = ingest_for(&server.base, &mut next);
        rates.push((deleted() - before) / run.seconds);
        runs.push((run.p99(), run.acked as f64 / run.seconds));
        during_ms.extend(run.latencies.iter().map(|(_, ms)| *ms));
    }
    let retention_s = retention_started.elapsed().as_secs_f64();
    let total_deleted = deleted();
    let tenths = |v: f64| (v * 10.0).round() / 10.0;
    println!(
        "retention deleted={total_deleted:.0} of={stored_before} seconds={retention_s:.0} p99_ms_without={p99_without:.1} rps_without={rps_without:.0} p99_ms_during={:?} rps_during={:?} deleted_per_s={:?} load={}",
        runs.iter().map(|r| tenths(r.0)).collect::<Vec<_>>(),
        runs.iter().map(|r| r.1.round()).collect::<Vec<_>>(),
        rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
        load()
    );
    server.stop();
    // The same runs on the copy, with the same clock but retention never due.
    let (twin, _) = start(
        paired.path(),
        &[
            "--retention-interval-secs",
            "1000000000",
            "--retention-clock-skew-secs",
            &skew,
        ],
    );
    let mut twin_next = first_of_phase;
    let mut twin_runs = Vec::new();
    let mut without_ms = Vec::new();
    for _ in 0..runs.len() {
        let run = ingest_for(&twin.base, &mut twin_next);
        twin_runs.push((run.p99(), run.acked as f64 / run.seconds));
        without_ms.extend(run.latencies.iter().map(|(_, ms)| *ms));
    }
    twin.stop();
    let ratios: Vec<f64> = runs
        .iter()
        .zip(&twin_runs)
        .map(|(with, without)| with.0 / without.0)
        .collect();
    let whole = |ms: &mut Vec<f64>| {
        ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
        percentile(ms, 0.99)
    };
    let (whole_during, whole_without) = (whole(&mut during_ms), whole(&mut without_ms));
    println!(
        "retention paired p99_ms_during_whole={:.1} p99_ms_without_whole={:.1} (+{:.0}%) deliveries={}/{} runs_within_20pct={}/{} median_ratio={:.2} worst_ratio={:.2} p99_ms_without={:?} rps_without={:?} load={}",
        whole_during,
        whole_without,
        (whole_during / whole_without - 1.0) * 100.0,
        during_ms.len(),
        without_ms.len(),
        ratios.iter().filter(|r| **r <= 1.2).count(),
        ratios.len(),
        median(ratios.clone()),
        ratios.iter().copied().fold(0.0, f64::max),
        twin_runs.iter().map(|r| tenths(r.0)).collect::<Vec<_>>(),
        twin_runs.iter().map(|r| r.1.round()).collect::<Vec<_>>(),
        load()
    );
    // The file as retention left it, measured without retention. The copy is deleted only
    // after this run: on a disk mounted with `discard` deleting gigabytes slows the writes of
    // the next tens of seconds.
    let (server, _) = start(dir, &[]);
    let run = ingest_for(&server.base, &mut next);
    server.stop();
    drop(paired);
    let (_, check, _) = cli("check", dir, &[]);
    println!(
        "retention p99_ms_without_at_the_end={:.1} rps={:.0} ({}) load={}",
        run.p99(),
        run.acked as f64 / run.seconds,
        check
            .lines()
            .find(|l| l.starts_with("table events:"))
            .unwrap_or("")
            .trim(),
        load()
    );

    // Space: after retention, after ingesting again, after compact. Retention ran under
    // load, so the file now holds the events ingested meanwhile: `check` says how many.
    let after_retention = file_size(dir);
    let (_, check, _) = cli("check", dir, &[]);
    for line in check
        .lines()
        .filter(|l| l.contains("pages") || l.starts_with("table events:"))
    {
        println!("  after retention: {line}");
    }
    let (server, _) = start(dir, &[]);
    let again = (total / 5).max(1000);
    let refill = deliver(
        &runtime,
        &server.base,
        &templates,
        &signatures,
        next,
        again,
        None,
        false,
    );
    server.stop();
    let after_refill = file_size(dir);
    let (compacted, out, compact_s) = cli("compact", dir, &[]);
    let after_compact = file_size(dir);
    println!(
        "space after_retention_mb={:.0} after_ingesting_{}_more_mb={:.0} after_compact_mb={} compact_seconds={} allocated_mb={:.0} load={}",
        after_retention as f64 / 1e6,
        refill.acked,
        after_refill as f64 / 1e6,
        if compacted {
            format!("{:.0}", after_compact as f64 / 1e6)
        } else {
            "n/a".into()
        },
        if compacted {
            format!("{compact_s:.1}")
        } else {
            "n/a".into()
        },
        disk_bytes(dir) as f64 / 1e6,
        load()
    );
    if !compacted {
        eprintln!("  compact: {}", out.lines().next().unwrap_or(""));
    }
    let (_, check, _) = cli("check", dir, &[]);
    for line in check
        .lines()
        .filter(|l| l.contains("pages") || l.starts_with("table events:"))
    {
        println!("  check: {line}");
    }
    std::io::stdout().flush().unwrap();
}
