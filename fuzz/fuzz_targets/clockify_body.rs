//! The strict check of a Clockify delivery body.
#![no_main]

use clockify_studio::ingest::strict::delivery_workspace;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = delivery_workspace(data);
});
