//! `cargo bench --bench delivery_body`: what the strict check of a Clockify delivery body
//! (`ingest::strict::delivery_workspace`) costs per delivery, next to the lenient probe it
//! replaced and a bare serde_json pass, on the NEW_TIME_ENTRY sample as Clockify sends it
//! (indented) and compact (as `cargo bench --bench ingest` sends it). Prints the best of
//! several rounds in ns per body and the heap allocations per body.
//!
//! Wall time is noisy on a shared machine; instruction counts are not. Under callgrind, run
//! one check at a time with `DELIVERY_BODY_ONLY=strict|lenient|bare`,
//! `DELIVERY_BODY_ITERATIONS=N` and `DELIVERY_BODY_ROUNDS=1`, and subtract a run with N = 0.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use clockify_studio::ingest::strict::delivery_workspace;

/// Counts allocations, to show the check allocates per body, not per key.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The probe deliveries went through before: reads `workspaceId` leniently.
fn lenient_probe(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "workspaceId", default)]
        workspace_id: Option<serde_json::Value>,
    }
    serde_json::from_slice::<Probe>(bytes)
        .ok()?
        .workspace_id
        .and_then(|v| v.as_str().map(str::to_string))
}

fn bare_pass(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

/// Best ns per call over the rounds, and allocations per call.
fn measure(body: &[u8], check: impl Fn(&[u8]) -> bool) -> (f64, f64) {
    let rounds = setting("DELIVERY_BODY_ROUNDS", 7);
    let iterations = setting("DELIVERY_BODY_ITERATIONS", 100_000);
    let mut best = f64::MAX;
    let mut allocations = 0.0;
    for _ in 0..rounds {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let started = Instant::now();
        for _ in 0..iterations {
            assert!(check(black_box(body)));
        }
        let per = iterations.max(1) as f64;
        best = best.min(started.elapsed().as_nanos() as f64 / per);
        allocations = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / per;
    }
    (best, allocations)
}

fn main() {
    let sample = include_bytes!("../assets/samples/NEW_TIME_ENTRY.json").to_vec();
    let compact =
        serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(&sample).unwrap()).unwrap();
    let only = std::env::var("DELIVERY_BODY_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only == name;
    for (name, body) in [("as sent", &sample), ("compact", &compact)] {
        println!("NEW_TIME_ENTRY {name} ({} bytes):", body.len());
        let mut rows: Vec<(&str, (f64, f64))> = Vec::new();
        if wanted("strict") {
            rows.push((
                "strict check (new)",
                measure(body, |b| delivery_workspace(b).is_ok_and(|ws| ws.is_some())),
            ));
        }
        if wanted("lenient") {
            rows.push((
                "lenient probe (before)",
                measure(body, |b| lenient_probe(b).is_some()),
            ));
        }
        if wanted("bare") {
            rows.push(("bare serde_json pass", measure(body, bare_pass)));
        }
        for (what, (ns, allocations)) in rows {
            println!("  {what:24} {ns:8.0} ns/body  {allocations:5.1} allocations/body");
        }
    }
}
