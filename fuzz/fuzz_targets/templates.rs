//! Templates: the first line is the template, the rest the event. Checked as at save, then
//! rendered within the output bounds.
#![no_main]

use clockify_studio::flows::template::{Context, check};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (template, event) = text.split_once('\n').unwrap_or((text, "{}"));
    let event = serde_json::from_str::<Value>(event).unwrap_or(Value::Null);
    let value = Value::String(template.to_string());
    let mut problems = Vec::new();
    check(&value, "fuzz", &mut problems);
    let mut context = Context::new(&event, "NEW_TIME_ENTRY", "ws", "addon", Some("user"));
    context.add_action("first", Some(200), &event);
    context.add_unavailable_action("later");
    let _ = context.render(&value, "fuzz");
});
