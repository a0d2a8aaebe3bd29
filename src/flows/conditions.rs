//! Flow conditions: rules `{path, op, value}` where `path` is an RFC 9535 JSONPath into the
//! event body. A path that selects one node yields that value; several nodes yield the list
//! of them; none yields "absent" (and so does JSON `null`).

use serde_json::Value;
use serde_json_path::JsonPath;

use crate::store::{Conditions, Op, Rule};

/// Compiled regexes are capped so a pattern cannot take much memory or time to build.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

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
    if let Err(e) = JsonPath::parse(&rule.path) {
        problems.push(format!(
            "{at}.path: {:?} is not a JSONPath (RFC 9535): {e}",
            rule.path
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

/// Evaluates all rules (each is reported, even after the outcome is known).
pub fn evaluate(conditions: &Conditions, event: &Value) -> (bool, Vec<RuleOutcome>) {
    let outcomes: Vec<RuleOutcome> = conditions
        .rules
        .iter()
        .map(|rule| evaluate_rule(rule, event))
        .collect();
    let matched = if conditions.rules.is_empty() {
        true
    } else if conditions.any {
        outcomes.iter().any(|o| o.passed)
    } else {
        outcomes.iter().all(|o| o.passed)
    };
    (matched, outcomes)
}

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
        assert!(!evaluate(&all, &event).0);
        let any = Conditions {
            any: true,
            ..all.clone()
        };
        assert!(evaluate(&any, &event).0);
        assert!(
            evaluate(
                &Conditions {
                    any: false,
                    rules: vec![]
                },
                &event
            )
            .0
        );
        let mut problems = Vec::new();
        check_rule(&rule("$..[", "eq", json!(1)), "r0", &mut problems);
        check_rule(&rule("$.a", "in", json!(1)), "r1", &mut problems);
        check_rule(&rule("$.a", "matches", json!("(")), "r2", &mut problems);
        assert_eq!(problems.len(), 3, "{problems:?}");
    }
}
