//! Postcard record decoding, every table and every record version (a version is the enum
//! variant, the value's first byte): the first byte picks the table, the rest is the value.
#![no_main]

use clockify_studio::store::check_value;
use libfuzzer_sys::fuzz_target;

const TABLES: &[&str] = &[
    "meta",
    "installations",
    "webhook_tokens",
    "events",
    "events_by_type",
    "event_dedupe",
    "sources",
    "sources_by_workspace",
    "subscriptions",
    "entities",
    "bootstrap",
    "executions",
    "flows",
    "flow_stats",
    "flow_runs",
    "flow_runs_by_flow",
    "flow_runs_by_event",
    "flow_run_queue",
    "flow_run_starts",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, value)) = data.split_first() else {
        return;
    };
    let table = TABLES[usize::from(pick) % TABLES.len()];
    let _ = check_value(table, b"key_check", value);
    let _ = check_value(table, b"schema_version", value);
});
