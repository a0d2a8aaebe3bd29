//! Templates in action parameters and bodies, evaluated with minijinja (sandboxed: no file
//! or template loading, strict undefined values, bounded fuel). A string that is exactly one
//! `{{ expression }}` keeps the JSON type of its value; any other string with `{{`/`{%`
//! is rendered as text.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, LazyLock};

use minijinja::value::{Object, ObjectRepr, Value as Mj, ValueKind};
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde_json::{Map, Value};

/// Enough for any sensible template; stops runaway loops.
const FUEL: u64 = 100_000;
/// What one rendered value (a parameter, or a body with all its strings) may grow to: text is
/// cut off while it is written, a value converted back to JSON while it is built (a loop or a
/// repetition could build gigabytes within the fuel).
pub const MAX_RENDERED_BYTES: usize = 1024 * 1024;
/// JSON values one rendered value may hold.
pub const MAX_RENDERED_NODES: usize = 100_000;
/// The variables a template may use.
pub const CONTEXT_VARIABLES: [&str; 5] = [
    "event",
    "eventType",
    "workspaceId",
    "installation",
    "actions",
];

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(64);
    // Debug mode records where undefined values come from, so errors can name them.
    env.set_debug(true);
    env
});

/// How a JSON string is evaluated.
#[derive(Debug, PartialEq)]
enum Kind<'a> {
    Plain,
    /// Exactly one `{{ … }}`: the expression inside.
    Expression(&'a str),
    Text,
}

fn classify(s: &str) -> Kind<'_> {
    if !(s.contains("{{") || s.contains("{%") || s.contains("{#")) {
        return Kind::Plain;
    }
    let trimmed = s.trim();
    if let Some(inner) = trimmed
        .strip_prefix("{{")
        .and_then(|rest| rest.strip_suffix("}}"))
        && !inner.contains("{{")
        && !inner.contains("}}")
        && !inner.contains("{%")
        && !inner.contains("{#")
    {
        // Whitespace-control markers (`{{- x -}}`) mean nothing for a lone expression.
        let inner = inner.strip_prefix(['-', '+']).unwrap_or(inner);
        let inner = inner.strip_suffix(['-', '+']).unwrap_or(inner);
        return Kind::Expression(inner.trim());
    }
    Kind::Text
}

/// A template that failed to parse, or a value that failed to render.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateError {
    /// Where in the action (`body.description`, `pathParams.id` …).
    pub location: String,
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// minijinja's message without its "(in <string>:1)" suffix noise where it helps.
fn describe(err: &minijinja::Error) -> String {
    let detail = err.detail().map(str::to_string);
    match (err.kind(), detail) {
        (ErrorKind::UndefinedError, Some(detail)) => format!("missing value: {detail}"),
        (ErrorKind::UndefinedError, None) => "missing value".to_string(),
        (kind, Some(detail)) => format!("{kind}: {detail}"),
        (kind, None) => kind.to_string(),
    }
}

/// Checks that every template in `value` parses; returns the variables they read, as
/// dotted paths (`event.userId`, `actions.getUser.body`).
pub fn check(value: &Value, location: &str, problems: &mut Vec<TemplateError>) -> BTreeSet<String> {
    let mut variables = BTreeSet::new();
    walk_strings(value, location, &mut |s, at| match classify(s) {
        Kind::Plain => {}
        Kind::Expression(expr) => match ENV.compile_expression(expr) {
            Ok(compiled) => variables.extend(compiled.undeclared_variables(true)),
            Err(e) => problems.push(TemplateError {
                location: at.to_string(),
                message: format!("template does not parse: {}", describe(&e)),
            }),
        },
        Kind::Text => match ENV.template_from_str(s) {
            Ok(template) => variables.extend(template.undeclared_variables(true)),
            Err(e) => problems.push(TemplateError {
                location: at.to_string(),
                message: format!("template does not parse: {}", describe(&e)),
            }),
        },
    });
    variables
}

fn walk_strings(value: &Value, location: &str, f: &mut impl FnMut(&str, &str)) {
    match value {
        Value::String(s) => f(s, location),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_strings(item, &format!("{location}[{i}]"), f);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                walk_strings(v, &format!("{location}.{k}"), f);
            }
        }
        _ => {}
    }
}

/// The values templates see.
#[derive(Clone)]
pub struct Context {
    event: Mj,
    event_type: String,
    workspace_id: String,
    installation: Mj,
    actions: Vec<(String, Mj)>,
}

impl Context {
    pub fn new(
        event: &Value,
        event_type: &str,
        workspace_id: &str,
        addon_id: &str,
        user: Option<&str>,
    ) -> Context {
        Context {
            event: Mj::from(minijinja::value::Serde(event)),
            event_type: event_type.to_string(),
            workspace_id: workspace_id.to_string(),
            installation: Mj::from(minijinja::value::Serde(serde_json::json!({
                "addonId": addon_id,
                "user": user,
            }))),
            actions: Vec::new(),
        }
    }

    /// Makes an earlier action's outcome available as `actions.<name>`.
    pub fn add_action(&mut self, name: &str, status: Option<u16>, body: &Value) {
        let value = Mj::from(minijinja::value::Serde(serde_json::json!({
            "status": status,
            "body": body,
        })));
        self.actions.push((name.to_string(), value));
    }

    /// A dry run: `actions.<name>.…` renders as a marker saying it is unavailable.
    pub fn add_unavailable_action(&mut self, name: &str) {
        self.actions.push((
            name.to_string(),
            Mj::from_object(Unavailable(format!("actions.{name}"))),
        ));
    }

    fn root(&self) -> Mj {
        let actions: std::collections::BTreeMap<String, Mj> =
            self.actions.iter().cloned().collect();
        minijinja::context! {
            event => self.event.clone(),
            eventType => self.event_type.clone(),
            workspaceId => self.workspace_id.clone(),
            installation => self.installation.clone(),
            actions => Mj::from(actions),
        }
    }

    /// Renders every template in `value` (strings elsewhere are kept as they are), within
    /// [`MAX_RENDERED_BYTES`] and [`MAX_RENDERED_NODES`] for the whole value.
    pub fn render(&self, value: &Value, location: &str) -> Result<Value, TemplateError> {
        let root = self.root();
        let mut budget = Budget {
            bytes: MAX_RENDERED_BYTES,
            nodes: MAX_RENDERED_NODES,
        };
        render_value(&root, value, location, &mut budget)
    }
}

/// What is left of the size one rendered value may have.
struct Budget {
    bytes: usize,
    nodes: usize,
}

impl Budget {
    fn take_node(&mut self) -> Result<(), String> {
        self.nodes = self
            .nodes
            .checked_sub(1)
            .ok_or_else(|| format!("renders to more than {MAX_RENDERED_NODES} values"))?;
        Ok(())
    }

    fn take_bytes(&mut self, n: usize) -> Result<(), String> {
        self.bytes = self
            .bytes
            .checked_sub(n)
            .ok_or_else(|| format!("renders to more than {MAX_RENDERED_BYTES} bytes"))?;
        Ok(())
    }
}

fn render_value(
    root: &Mj,
    value: &Value,
    location: &str,
    budget: &mut Budget,
) -> Result<Value, TemplateError> {
    match value {
        Value::String(s) => render_string(root, s, location, budget),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| render_value(root, item, &format!("{location}[{i}]"), budget))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                out.insert(
                    k.clone(),
                    render_value(root, v, &format!("{location}.{k}"), budget)?,
                );
            }
            Ok(Value::Object(out))
        }
        other => Ok(other.clone()),
    }
}

/// Text output that stops the render once the budget is spent.
struct CappedWriter<'a> {
    text: Vec<u8>,
    budget: &'a mut Budget,
    exceeded: Option<String>,
}

impl std::io::Write for CappedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Err(message) = self.budget.take_bytes(buf.len()) {
            self.exceeded = Some(message.clone());
            return Err(std::io::Error::other(message));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn render_string(
    root: &Mj,
    s: &str,
    location: &str,
    budget: &mut Budget,
) -> Result<Value, TemplateError> {
    let error = |message: String| TemplateError {
        location: location.to_string(),
        message,
    };
    match classify(s) {
        Kind::Plain => Ok(Value::String(s.to_string())),
        Kind::Expression(expr) => {
            let compiled = ENV
                .compile_expression(expr)
                .map_err(|e| error(describe(&e)))?;
            let value = compiled
                .eval(root.clone())
                .map_err(|e| error(describe(&e)))?;
            if value.is_undefined() {
                return Err(error(format!("missing value: `{expr}` is undefined")));
            }
            to_json(&value, expr, budget).map_err(error)
        }
        Kind::Text => {
            let template = ENV.template_from_str(s).map_err(|e| error(describe(&e)))?;
            let mut out = CappedWriter {
                text: Vec::new(),
                budget,
                exceeded: None,
            };
            let rendered = template
                .render_captured_to(root.clone(), &mut out)
                .map(drop);
            if let Some(exceeded) = out.exceeded {
                return Err(error(exceeded));
            }
            rendered.map_err(|e| error(describe(&e)))?;
            String::from_utf8(out.text)
                .map(Value::String)
                .map_err(|_| error("renders to text that is not UTF-8".into()))
        }
    }
}

/// Converts a minijinja value back to JSON, keeping its type, within `budget`. Undefined
/// parts are errors (strict mode lets `[a.missing]` through as a value holding an undefined).
fn to_json(value: &Mj, expr: &str, budget: &mut Budget) -> Result<Value, String> {
    budget.take_node()?;
    Ok(match value.kind() {
        ValueKind::Undefined => return Err(format!("missing value in `{expr}`")),
        ValueKind::None => Value::Null,
        ValueKind::Bool => Value::Bool(value.is_true()),
        ValueKind::Number => {
            if let Ok(n) = i64::try_from(value.clone()) {
                Value::from(n)
            } else if let Ok(n) = u64::try_from(value.clone()) {
                Value::from(n)
            } else {
                let f = f64::try_from(value.clone()).map_err(|e| e.to_string())?;
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| format!("`{expr}` is not a finite number"))?
            }
        }
        ValueKind::String => {
            let text = value.as_str().unwrap_or_default();
            budget.take_bytes(text.len())?;
            Value::String(text.to_string())
        }
        ValueKind::Bytes => {
            let text = value.to_str().unwrap_or_default();
            budget.take_bytes(text.len())?;
            Value::String(text.to_string())
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let iter = value.try_iter().map_err(|e| describe(&e))?;
            let mut items = Vec::new();
            for item in iter {
                items.push(to_json(&item, expr, budget)?);
            }
            Value::Array(items)
        }
        ValueKind::Map => {
            let iter = value.try_iter().map_err(|e| describe(&e))?;
            let mut map = Map::new();
            for key in iter {
                let item = value.get_item(&key).map_err(|e| describe(&e))?;
                let key = match key.as_str() {
                    Some(k) => k.to_string(),
                    None => key.to_string(),
                };
                budget.take_bytes(key.len())?;
                map.insert(key, to_json(&item, expr, budget)?);
            }
            Value::Object(map)
        }
        _ => {
            let text = value.to_string();
            budget.take_bytes(text.len())?;
            Value::String(text)
        }
    })
}

/// Stands for an earlier action's result in a dry run; any attribute of it is one too.
#[derive(Debug)]
struct Unavailable(String);

impl Object for Unavailable {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &Mj) -> Option<Mj> {
        Some(Mj::from_object(Unavailable(format!("{}.{key}", self.0))))
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} (unavailable in a dry run)>", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context() -> Context {
        let mut c = Context::new(
            &json!({"id": "te1", "n": 3, "f": 1.5, "tags": ["a", "b"], "desc": "",
                    "nested": {"x": true}, "nothing": null}),
            "NEW_TIME_ENTRY",
            "ws1",
            "addon1",
            Some("u1"),
        );
        c.add_action("getUser", Some(200), &json!({"name": "Ann", "ids": [1, 2]}));
        c
    }

    #[test]
    fn lone_expressions_keep_their_type() {
        let c = context();
        let rendered = c
            .render(
                &json!({"n": "{{ event.n }}", "f": "{{event.f}}", "tags": "{{ event.tags }}",
                        "nested": "{{ event.nested }}", "null": "{{ event.nothing }}",
                        "sum": "{{ event.n + 1 }}", "b": "{{ event.n > 2 }}",
                        "list": "{{ event.tags + ['c'] }}", "ids": "{{ actions.getUser.body.ids }}",
                        "ws": "{{- workspaceId -}}", "user": "{{ installation.user }}",
                        "plain": "no template here"}),
                "body",
            )
            .unwrap();
        assert_eq!(
            rendered,
            json!({"n": 3, "f": 1.5, "tags": ["a", "b"], "nested": {"x": true}, "null": null,
                   "sum": 4, "b": true, "list": ["a", "b", "c"], "ids": [1, 2], "ws": "ws1",
                   "user": "u1", "plain": "no template here"})
        );
    }

    #[test]
    fn mixed_text_interpolates() {
        let c = context();
        let rendered = c
            .render(
                &json!("{{ eventType }} by {{ actions.getUser.body.name }} ({{ event.n }})"),
                "x",
            )
            .unwrap();
        assert_eq!(rendered, json!("NEW_TIME_ENTRY by Ann (3)"));
        let rendered = c
            .render(
                &json!("{% if event.desc %}has{% else %}none{% endif %}"),
                "x",
            )
            .unwrap();
        assert_eq!(rendered, json!("none"));
    }

    #[test]
    fn missing_values_fail_with_their_name_unless_defaulted() {
        let c = context();
        let err = c
            .render(&json!("{{ event.missing }}"), "body.d")
            .unwrap_err();
        assert_eq!(err.location, "body.d");
        assert!(err.message.contains("event.missing"), "{}", err.message);
        let err = c
            .render(&json!("a {{ event.nested.nope }} b"), "q")
            .unwrap_err();
        assert!(err.message.contains("nope"), "{}", err.message);
        let err = c
            .render(&json!("{{ event.missing.deeper }}"), "q")
            .unwrap_err();
        assert!(err.message.contains("missing"), "{}", err.message);
        assert_eq!(
            c.render(&json!("{{ event.missing | default('dflt') }}"), "x")
                .unwrap(),
            json!("dflt")
        );
        assert_eq!(
            c.render(&json!("{{ event.missing | default(7) }}"), "x")
                .unwrap(),
            json!(7)
        );
    }

    #[test]
    fn check_reports_parse_errors_and_variables() {
        let mut problems = Vec::new();
        let vars = check(
            &json!({"a": "{{ event.userId }}", "b": "x {{ actions.getUser.body.name }}",
                    "c": "{{ event. }}", "d": "{% if %}"}),
            "body",
            &mut problems,
        );
        assert!(vars.contains("event.userId"), "{vars:?}");
        assert!(
            vars.iter().any(|v| v.starts_with("actions.getUser")),
            "{vars:?}"
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].location, "body.c");
    }

    #[test]
    fn dry_run_shows_unavailable_results() {
        let mut c = Context::new(&json!({}), "E", "ws", "a", None);
        c.add_unavailable_action("first");
        let rendered = c
            .render(
                &json!({"x": "{{ actions.first.body.id }}", "y": "id={{ actions.first.body.id }}"}),
                "b",
            )
            .unwrap();
        assert_eq!(
            rendered["x"],
            json!("<actions.first.body.id (unavailable in a dry run)>")
        );
        assert_eq!(
            rendered["y"],
            json!("id=<actions.first.body.id (unavailable in a dry run)>")
        );
    }

    #[test]
    fn runaway_templates_stop() {
        let c = context();
        let err = c
            .render(
                &json!("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"),
                "x",
            )
            .unwrap_err();
        assert!(!err.message.is_empty());
    }

    /// A loop or a repetition cannot build more than the budget, whatever the fuel allows.
    #[test]
    fn rendering_is_bounded() {
        let c = context();
        let err = c
            .render(
                &json!("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}"),
                "b",
            )
            .unwrap_err();
        assert!(err.message.contains("more than 1048576 bytes"), "{err}");
        let err = c.render(&json!("{{ [1] * 1000000 }}"), "b").unwrap_err();
        assert!(err.message.contains("more than 100000 values"), "{err}");
        let err = c.render(&json!("{{ 'x' * 2000000 }}"), "b").unwrap_err();
        assert!(err.message.contains("bytes"), "{err}");
        // The budget is per rendered value, across its strings.
        let half = "{{ 'x' * 600000 }}";
        let err = c
            .render(&json!({"a": half, "b": half}), "body")
            .unwrap_err();
        assert_eq!(err.location, "body.b");
    }
}
