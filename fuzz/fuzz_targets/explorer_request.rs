//! Explorer request validation against the catalog: the first two bytes pick the operation,
//! the rest is `{"path": {...}, "query": {...}}`.
#![no_main]

use clockify_studio::clockify::catalog::catalog;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let operations = catalog().operations();
    if data.len() < 2 || operations.is_empty() {
        return;
    }
    let pick = usize::from(u16::from_le_bytes([data[0], data[1]])) % operations.len();
    let Ok(request) = serde_json::from_slice::<Value>(&data[2..]) else {
        return;
    };
    let object = |key: &str| match request.get(key) {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    };
    let _ = operations[pick].build_request(&object("path"), &object("query"));
});
