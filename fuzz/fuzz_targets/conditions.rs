//! JSONPath conditions: the first line is the path, the rest the event. Checked as at save,
//! then evaluated within the bounds (an Err is a clear run error, a panic is a finding).
#![no_main]

use clockify_studio::flows::conditions::{check_rule, evaluate};
use clockify_studio::store::{Conditions, Json, Op, Rule};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, event) = text.split_once('\n').unwrap_or((text, "{}"));
    let Ok(event) = serde_json::from_str::<Value>(event) else {
        return;
    };
    for op in ["exists", "eq", "contains", "matches", "gt"] {
        let rule = Rule {
            path: path.to_string(),
            op: Op::parse(op).expect("a known operator"),
            value: Json(Value::String("a.*".into())),
        };
        let mut problems = Vec::new();
        check_rule(&rule, "fuzz", &mut problems);
        let conditions = Conditions {
            any: false,
            rules: vec![rule],
        };
        let _ = evaluate(&conditions, &event);
    }
});
