//! Flow conditions: rules `{path, op, value}` where `path` is an RFC 9535 JSONPath into the
//! event body. A path that selects one node yields that value; several nodes yield the list
//! of them; none yields "absent" (and so does JSON `null`).
//!
//! Every evaluation is bounded: the event's nesting and size, the nodes a path may visit
//! (estimated before the query runs: each descendant segment `..` may visit every node below
//! each node it starts from), the nodes it may select, and the time all rules take. Past a
//! bound the evaluation stops with an error saying which, and the run fails with it: a
//! `$..*..*..*` on a deeply nested event would otherwise hold gigabytes of node lists.

use std::time::{Duration, Instant};

use serde_json::Value;
use serde_json_path::JsonPath;

use crate::store::{Conditions, Op, Rule};

/// Compiled regexes are capped so a pattern cannot take much memory or time to build.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Events nested deeper are not evaluated (Clockify's are about 5 deep).
pub const MAX_EVENT_DEPTH: usize = 64;
/// Events with more values (objects, arrays and scalars) are not evaluated.
pub const MAX_EVENT_NODES: usize = 250_000;
/// Longest JSONPath accepted at save.
pub const MAX_PATH_CHARS: usize = 512;
/// Descendant segments (`..`) one path may have, checked at save.
pub const MAX_DESCENDANT_SEGMENTS: usize = 2;
/// Node visits one rule may make on an event, by the estimate above.
pub const MAX_VISITS: u64 = 5_000_000;
/// Values (counted with everything nested in them) one rule may select.
pub const MAX_SELECTED_NODES: usize = 100_000;
/// All rules of a flow together.
pub const TIME_LIMIT: Duration = Duration::from_secs(2);

/// How deep and how large an event is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EventShape {
    pub depth: usize,
    pub nodes: usize,
}

/// Measures an event, refusing one nested deeper or larger than flows evaluate.
pub fn measure(event: &Value) -> Result<EventShape, String> {
    let mut shape = EventShape { depth: 0, nodes: 0 };
    let mut stack = vec![(event, 1usize)];
    while let Some((value, depth)) = stack.pop() {
        shape.nodes += 1;
        shape.depth = shape.depth.max(depth);
        if depth > MAX_EVENT_DEPTH {
            return Err(format!(
                "the event is nested more than {MAX_EVENT_DEPTH} levels deep; flows do not evaluate it"
            ));
        }
        if shape.nodes > MAX_EVENT_NODES {
            return Err(format!(
                "the event has more than {MAX_EVENT_NODES} values; flows do not evaluate it"
            ));
        }
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, depth + 1))),
            _ => {}
        }
    }
    Ok(shape)
}

/// Descendant segments (`..`) in a JSONPath, outside quoted names and strings.
pub fn descendant_segments(path: &str) -> usize {
    let mut count = 0;
    let mut quote: Option<char> = None;
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(_), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '.') if chars.peek() == Some(&'.') => {
                chars.next();
                count += 1;
            }
            _ => {}
        }
    }
    count
}

/// The most nodes a path with `descendants` segments `..` may visit on an event of `shape`.
fn visit_estimate(shape: EventShape, descendants: usize) -> u64 {
    let per_segment = shape.depth as u64 + 1;
    (0..descendants).fold(shape.nodes as u64, |visits, _| {
        visits.saturating_mul(per_segment)
    })
}

/// Counts the values in `value`, stopping once past `budget`.
fn count_nodes(value: &Value, budget: usize) -> usize {
    let mut count = 0;
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        count += 1;
        if count > budget {
            break;
        }
        match value {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    count
}

/// The outcome of one rule, for dry runs and run details.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleOutcome {
    pub actual: Option<Value>,
    pub passed: bool,
    /// A rule that could not be evaluated (only possible for rules saved before a check
    /// existed); it counts as not passed.
    pub error: Option<String>,
}

/// Checks one rule as saved; problems are reported under `at`.
pub fn check_rule(rule: &Rule, at: &str, problems: &mut Vec<String>) {
    if rule.path.chars().count() > MAX_PATH_CHARS {
        problems.push(format!(
            "{at}.path: longer than {MAX_PATH_CHARS} characters"
        ));
    } else if let Err(e) = JsonPath::parse(&rule.path) {
        problems.push(format!(
            "{at}.path: {:?} is not a JSONPath (RFC 9535): {e}",
            rule.path
        ));
    } else if descendant_segments(&rule.path) > MAX_DESCENDANT_SEGMENTS {
        problems.push(format!(
            "{at}.path: at most {MAX_DESCENDANT_SEGMENTS} descendant segments (..) per path: each one may visit the whole event again for every node it starts from"
        ));
    }
    let value = &rule.value.0;
    match rule.op {
        Op::In | Op::NotIn if !value.is_array() => {
            problems.push(format!("{at}.value: {} needs a list", rule.op.as_str()));
        }
        Op::Matches => match value.as_str() {
            Some(pattern) => {
                if let Err(e) = build_regex(pattern) {
                    problems.push(format!("{at}.value: not a valid regular expression: {e}"));
                }
            }
            None => problems.push(format!(
                "{at}.value: matches needs a regular expression string"
            )),
        },
        Op::Gt | Op::Gte | Op::Lt | Op::Lte if !(value.is_number() || value.is_string()) => {
            problems.push(format!(
                "{at}.value: {} compares numbers or strings",
                rule.op.as_str()
            ));
        }
        _ => {}
    }
}

fn build_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// Evaluates all rules (each is reported, even after the outcome is known). `Err` when the
/// event or a rule is past a bound (see the module docs): the run fails with it.
pub fn evaluate(
    conditions: &Conditions,
    event: &Value,
) -> Result<(bool, Vec<RuleOutcome>), String> {
    let started = Instant::now();
    let shape = if conditions.rules.is_empty() {
        EventShape { depth: 0, nodes: 0 }
    } else {
        measure(event)?
    };
    let mut outcomes = Vec::with_capacity(conditions.rules.len());
    for (i, rule) in conditions.rules.iter().enumerate() {
        let at = || format!("conditions.rules[{i}] ({})", rule.path);
        let visits = visit_estimate(shape, descendant_segments(&rule.path));
        if visits > MAX_VISITS {
            return Err(format!(
                "{} could visit about {visits} values of this event ({} values, {} levels deep), more than the {MAX_VISITS} allowed; use a more specific path",
                at(),
                shape.nodes,
                shape.depth
            ));
        }
        let outcome = evaluate_rule(rule, event);
        if let Some(error) = outcome
            .error
            .as_ref()
            .filter(|e| e.starts_with(SELECTED_TOO_MUCH))
        {
            return Err(format!("{}: {error}", at()));
        }
        outcomes.push(outcome);
        if started.elapsed() > TIME_LIMIT {
            return Err(format!(
                "the conditions took longer than {} s to evaluate (stopped after {})",
                TIME_LIMIT.as_secs(),
                at()
            ));
        }
    }
    let matched = if conditions.rules.is_empty() {
        true
    } else if conditions.any {
        outcomes.iter().any(|o| o.passed)
    } else {
        outcomes.iter().all(|o| o.passed)
    };
    Ok((matched, outcomes))
}

const SELECTED_TOO_MUCH: &str = "selects more than";

pub fn evaluate_rule(rule: &Rule, event: &Value) -> RuleOutcome {
    let path = match JsonPath::parse(&rule.path) {
        Ok(path) => path,
        Err(e) => {
            return RuleOutcome {
                actual: None,
                passed: false,
                error: Some(format!("invalid JSONPath: {e}")),
            };
        }
    };
    let nodes = path.query(event).all();
    // What is selected is copied into the outcome: count before copying.
    let mut selected = 0usize;
    for node in &nodes {
        selected += count_nodes(node, MAX_SELECTED_NODES);
        if selected > MAX_SELECTED_NODES {
            return RuleOutcome {
                actual: None,
                passed: false,
                error: Some(format!(
                    "{SELECTED_TOO_MUCH} {MAX_SELECTED_NODES} values of the event"
                )),
            };
        }
    }
    let actual = match nodes.as_slice() {
        [] => None,
        [one] => Some((*one).clone()),
        many => Some(Value::Array(many.iter().map(|v| (*v).clone()).collect())),
    };
    let present = actual.as_ref().filter(|v| !v.is_null());
    let expected = &rule.value.0;
    let mut error = None;
    let passed = match rule.op {
        Op::Exists => present.is_some(),
        Op::NotExists => present.is_none(),
        Op::Empty => present.is_none_or(is_empty),
        Op::NotEmpty => present.is_some_and(|v| !is_empty(v)),
        Op::Eq => present.is_some_and(|v| loose_eq(v, expected)),
        Op::Ne => !present.is_some_and(|v| loose_eq(v, expected)),
        Op::Gt | Op::Gte | Op::Lt | Op::Lte => present
            .and_then(|v| compare(v, expected))
            .is_some_and(|ord| match rule.op {
                Op::Gt => ord.is_gt(),
                Op::Gte => ord.is_ge(),
                Op::Lt => ord.is_lt(),
                _ => ord.is_le(),
            }),
        Op::Contains => present.is_some_and(|v| contains(v, expected)),
        Op::NotContains => !present.is_some_and(|v| contains(v, expected)),
        Op::In => present.is_some_and(|v| member_of(v, expected)),
        Op::NotIn => !present.is_some_and(|v| member_of(v, expected)),
        Op::Matches => match expected.as_str().map(build_regex) {
            Some(Ok(re)) => present.is_some_and(|v| match v {
                Value::Array(items) => items.iter().any(|i| re.is_match(&text_of(i))),
                other => re.is_match(&text_of(other)),
            }),
            Some(Err(e)) => {
                error = Some(format!("invalid regular expression: {e}"));
                false
            }
            None => {
                error = Some("matches needs a regular expression string".into());
                false
            }
        },
    };
    RuleOutcome {
        actual,
        passed,
        error,
    }
}

/// Absent, `null`, blank text, `[]` and `{}` are empty.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

/// Strings as they are; other scalars in their JSON form.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// JSON equality, with numbers compared by value and scalars of different types compared by
/// their text (a rule value typed as `"5"` still matches the number 5).
fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => a == b,
        (Value::Null, _) | (_, Value::Null) => a == b,
        _ => text_of(a) == text_of(b),
    }
}

/// Numbers (or numeric text) by value; otherwise text by text (ISO times order correctly).
fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return x.partial_cmp(&y);
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(x.as_str().cmp(y.as_str())),
        _ => None,
    }
}

/// Text contains text; a list contains an equal item; an object has the key.
fn contains(haystack: &Value, needle: &Value) -> bool {
    match haystack {
        Value::String(s) => s.contains(&text_of(needle)),
        Value::Array(items) => items.iter().any(|i| loose_eq(i, needle)),
        Value::Object(map) => map.contains_key(&text_of(needle)),
        _ => false,
    }
}

/// The value (or, for a list, any of its items) equals one of the listed values.
fn member_of(value: &Value, list: &Value) -> bool {
    let Some(list) = list.as_array() else {
        return false;
    };
    match value {
        Value::Array(items) => items.iter().any(|i| list.iter().any(|l| loose_eq(i, l))),
        other => list.iter().any(|l| loose_eq(other, l)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::Json;

    fn rule(path: &str, op: &str, value: Value) -> Rule {
        Rule {
            path: path.into(),
            op: Op::parse(op).unwrap(),
            value: Json(value),
        }
    }

    fn passes(path: &str, op: &str, value: Value) -> bool {
        let event = json!({"projectId": "p1", "n": 5, "s": "Hello world", "blank": "  ",
            "tags": ["a", "b"], "obj": {"k": 1}, "nil": null, "start": "2024-01-02T00:00:00Z",
            "items": [{"id": 1}, {"id": 2}]});
        evaluate_rule(&rule(path, op, value), &event).passed
    }

    #[test]
    fn every_operator() {
        assert!(passes("$.projectId", "eq", json!("p1")));
        assert!(passes("$.n", "eq", json!(5.0)));
        assert!(passes("$.n", "eq", json!("5")));
        assert!(!passes("$.projectId", "eq", json!("p2")));
        assert!(passes("$.projectId", "ne", json!("p2")));
        assert!(passes("$.missing", "ne", json!("p2")));
        assert!(passes("$.n", "gt", json!(4)));
        assert!(!passes("$.n", "gt", json!(5)));
        assert!(passes("$.n", "gte", json!(5)));
        assert!(passes("$.n", "lt", json!("6")));
        assert!(passes("$.n", "lte", json!(5)));
        assert!(passes("$.start", "gt", json!("2024-01-01T00:00:00Z")));
        assert!(!passes("$.missing", "lt", json!(1)));
        assert!(passes("$.s", "contains", json!("world")));
        assert!(passes("$.tags", "contains", json!("b")));
        assert!(passes("$.obj", "contains", json!("k")));
        assert!(passes("$.s", "not_contains", json!("moon")));
        assert!(!passes("$.tags", "not_contains", json!("a")));
        assert!(passes("$.projectId", "in", json!(["p0", "p1"])));
        assert!(passes("$.tags", "in", json!(["x", "b"])));
        assert!(!passes("$.projectId", "in", json!(["p0"])));
        assert!(passes("$.projectId", "not_in", json!(["p0"])));
        assert!(passes("$.projectId", "exists", json!(null)));
        assert!(!passes("$.nil", "exists", json!(null)));
        assert!(passes("$.missing", "not_exists", json!(null)));
        assert!(passes("$.nil", "not_exists", json!(null)));
        assert!(passes("$.s", "matches", json!("^Hel+o")));
        assert!(!passes("$.s", "matches", json!("^world")));
        assert!(passes("$.tags", "matches", json!("^b$")));
        assert!(passes("$.blank", "empty", json!(null)));
        assert!(passes("$.missing", "empty", json!(null)));
        assert!(passes("$.nil", "empty", json!(null)));
        assert!(!passes("$.tags", "empty", json!(null)));
        assert!(passes("$.tags", "not_empty", json!(null)));
        assert!(!passes("$.blank", "not_empty", json!(null)));
        assert!(passes("$.items[*].id", "contains", json!(2)));
        assert!(passes("$.items[?@.id > 1].id", "eq", json!(2)));
    }

    #[test]
    fn modes_and_checks() {
        let event = json!({"a": 1});
        let all = Conditions {
            any: false,
            rules: vec![
                rule("$.a", "eq", json!(1)),
                rule("$.b", "exists", json!(null)),
            ],
        };
        assert!(!evaluate(&all, &event).unwrap().0);
        let any = Conditions {
            any: true,
            ..all.clone()
        };
        assert!(evaluate(&any, &event).unwrap().0);
        assert!(
            evaluate(
                &Conditions {
                    any: false,
                    rules: vec![]
                },
                &event
            )
            .unwrap()
            .0
        );
        let mut problems = Vec::new();
        check_rule(&rule("$..[", "eq", json!(1)), "r0", &mut problems);
        check_rule(&rule("$.a", "in", json!(1)), "r1", &mut problems);
        check_rule(&rule("$.a", "matches", json!("(")), "r2", &mut problems);
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    /// `$..*..*..*` on a 120-deep event once took more than 3 GiB: now every evaluation is
    /// bounded, and refused before the query runs when it would be too costly.
    #[test]
    fn evaluations_are_bounded() {
        let exists = |path: &str| Conditions {
            any: false,
            rules: vec![rule(path, "exists", Value::Null)],
        };
        let mut deep = json!(1);
        for _ in 0..120 {
            deep = json!({"a": deep, "b": [1, 2]});
        }
        let err = evaluate(&exists("$..*..*..*"), &deep).unwrap_err();
        assert!(err.contains("nested more than 64"), "{err}");

        let mut wide = json!(1);
        for _ in 0..60 {
            wide = json!({"a": wide, "items": (0..100).collect::<Vec<u32>>()});
        }
        let err = evaluate(&exists("$..*..*"), &wide).unwrap_err();
        assert!(err.contains("could visit about"), "{err}");
        assert!(
            evaluate(&exists("$..items[0]"), &wide).unwrap().0,
            "one `..` is fine"
        );

        let big = json!({"items": (0..150_000).collect::<Vec<u32>>()});
        let err = evaluate(&exists("$..*"), &big).unwrap_err();
        assert!(err.contains("selects more than"), "{err}");

        let mut problems = Vec::new();
        check_rule(
            &rule("$..*..*..*", "exists", Value::Null),
            "r",
            &mut problems,
        );
        check_rule(
            &rule(&format!("$.{}", "a".repeat(600)), "exists", Value::Null),
            "s",
            &mut problems,
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("descendant segments"), "{problems:?}");
    }

    #[test]
    fn descendant_segments_are_counted_outside_quotes() {
        assert_eq!(descendant_segments("$.a.b"), 0);
        assert_eq!(descendant_segments("$..a"), 1);
        assert_eq!(descendant_segments("$['x..y']..z"), 1);
        assert_eq!(descendant_segments("$..[?@..id == 'a..b']"), 2);
        assert_eq!(descendant_segments(r#"$["q\"..x"]..y"#), 1);
    }
}
