//! A flow as the API reads and writes it, and the checks that run before one is saved: every
//! problem found is reported at once, with where it is (`actions[1].pathParams.id: …`).

use serde_json::{Map, Value};

use super::{conditions, template};
use crate::clockify::catalog::{self, Operation, ParamLocation};
use crate::destinations::outbound::{AllowedHosts, MASK, check_url};
use crate::store::{
    CLOCKIFY_SOURCE, Conditions, Flow, FlowAction, FlowRetry, HttpCall, Json, Op, Rule,
    STUDIO_SOURCE, SecretBox, Trigger,
};

pub const DEFAULT_RETRY: FlowRetry = FlowRetry {
    max_attempts: 3,
    backoff_ms: 500,
};
const MAX_ATTEMPTS: u32 = 10;
const MAX_BACKOFF_MS: u64 = 60_000;
const MAX_ACTIONS: usize = 20;
const MAX_RULES: usize = 50;
const MAX_EVENTS: usize = 60;
const MAX_NAME_CHARS: usize = 100;
const MAX_EVENT_TYPE_LEN: usize = 100;
/// Methods an "HTTP request" action may use; only the last three send a body.
pub const HTTP_METHODS: [&str; 5] = ["GET", "DELETE", "POST", "PUT", "PATCH"];
const MAX_URL_LEN: usize = 2048;
const MAX_HEADERS: usize = 20;
const MAX_HEADER_VALUE_LEN: usize = 4096;
/// Headers an "HTTP request" action may not set: what the transport owns.
const RESERVED_HEADERS: &[&str] = &[
    "content-length",
    "host",
    "connection",
    "transfer-encoding",
    "user-agent",
];
/// Path parameters filled from the installation; a flow never needs to map them.
pub const AUTOMATIC_PATH_PARAMS: [&str; 1] = ["workspaceId"];

/// The parts of a flow a user edits.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowSpec {
    pub name: String,
    /// `None` when the body does not say (new flows start enabled; an update keeps it).
    pub enabled: Option<bool>,
    pub trigger: Trigger,
    pub conditions: Conditions,
    pub actions: Vec<FlowAction>,
    pub retry: FlowRetry,
    /// Header values of "HTTP request" actions as given (action index, name, value or
    /// [`MASK`]), sealed into `actions` by [`FlowSpec::seal_headers`].
    pub header_values: Vec<(usize, String, String)>,
}

impl FlowSpec {
    /// Seals the header values into the actions. [`MASK`] keeps the value `current` (the flow
    /// being replaced) has for the same action and header, else the one `given` finds (an
    /// import's decrypted secrets: action name, header name). `Err` lists what is missing.
    pub fn seal_headers(
        &mut self,
        secrets: &SecretBox,
        current: Option<&Flow>,
        given: impl Fn(&str, &str) -> Option<String>,
    ) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        for (i, name, value) in std::mem::take(&mut self.header_values) {
            let action = &mut self.actions[i];
            let Some(call) = action.http.as_mut() else {
                continue;
            };
            let sealed = if value == MASK {
                let kept = current
                    .and_then(|f| f.actions.iter().find(|a| a.name == action.name))
                    .and_then(|a| a.http.as_ref())
                    .and_then(|c| {
                        c.headers
                            .iter()
                            .find(|(n, _)| n.eq_ignore_ascii_case(&name))
                    })
                    .map(|(_, sealed)| sealed.clone());
                match kept.or_else(|| given(&action.name, &name).map(|v| secrets.seal_str(&v))) {
                    Some(sealed) => sealed,
                    None => {
                        problems.push(format!(
                            "actions[{i}].headers.{name}: {MASK} keeps a stored value, and this action has none under that name: enter the value"
                        ));
                        continue;
                    }
                }
            } else {
                secrets.seal_str(&value)
            };
            call.headers.push((name, sealed));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The flow this definition makes, enabled unless it says otherwise.
    pub fn into_flow(
        self,
        id: crate::store::FlowId,
        workspace_id: &str,
        created_at: i64,
        updated_at: i64,
    ) -> crate::store::Flow {
        crate::store::Flow {
            id,
            workspace_id: workspace_id.to_string(),
            name: self.name,
            enabled: self.enabled.unwrap_or(true),
            disabled_reason: None,
            trigger: self.trigger,
            conditions: self.conditions,
            actions: self.actions,
            retry: self.retry,
            created_at,
            updated_at,
        }
    }
}

/// What the checks need to know about the workspace.
pub struct Known {
    /// Whether a custom source with this id exists in the workspace.
    pub custom_source: Option<bool>,
    /// Hosts `--allow-destination-host` allows ("HTTP request" actions follow its rules).
    pub allowed_hosts: AllowedHosts,
}

/// Name → value pairs as one JSON object.
pub fn pairs_json(pairs: &[(String, Json)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect::<Map<_, _>>(),
    )
}

/// The trigger source named by a flow body, so the caller can look it up before [`parse`].
pub fn trigger_source(input: &Value) -> Option<&str> {
    input["trigger"]["source"].as_str()
}

/// Reads and checks a flow body. `Err` lists every problem.
pub fn parse(input: &Value, known: &Known) -> Result<FlowSpec, Vec<String>> {
    let mut problems = Vec::new();
    let Some(object) = input.as_object() else {
        return Err(vec!["the body must be a JSON object".into()]);
    };
    for key in object.keys() {
        if !matches!(
            key.as_str(),
            "id" | "name"
                | "enabled"
                | "disabledReason"
                | "trigger"
                | "conditions"
                | "actions"
                | "retry"
                | "createdAt"
                | "updatedAt"
                | "lastRun"
                | "counts"
                | "warnings"
        ) {
            problems.push(format!("{key}: unknown field"));
        }
    }

    let name = match &input["name"] {
        Value::String(s) if !s.trim().is_empty() && s.trim().chars().count() <= MAX_NAME_CHARS => {
            s.trim().to_string()
        }
        _ => {
            problems.push(format!("name: required, 1 to {MAX_NAME_CHARS} characters"));
            String::new()
        }
    };
    let enabled = match &input["enabled"] {
        Value::Null => None,
        Value::Bool(b) => Some(*b),
        _ => {
            problems.push("enabled: must be true or false".into());
            None
        }
    };
    let trigger = parse_trigger(&input["trigger"], known, &mut problems);
    let conditions = parse_conditions(&input["conditions"], &mut problems);
    let mut header_values = Vec::new();
    let actions = parse_actions(
        &input["actions"],
        &known.allowed_hosts,
        &mut header_values,
        &mut problems,
    );
    let retry = parse_retry(&input["retry"], &mut problems);
    if problems.is_empty() {
        Ok(FlowSpec {
            name,
            enabled,
            trigger,
            conditions,
            actions,
            retry,
            header_values,
        })
    } else {
        Err(problems)
    }
}

fn parse_trigger(value: &Value, known: &Known, problems: &mut Vec<String>) -> Trigger {
    let mut trigger = Trigger {
        source: CLOCKIFY_SOURCE.to_string(),
        events: Vec::new(),
    };
    if !value.is_object() {
        problems.push("trigger: required, {\"source\": \"clockify\", \"events\": [...]}".into());
        return trigger;
    }
    match &value["source"] {
        Value::Null => {}
        Value::String(s) if !s.is_empty() => trigger.source = s.clone(),
        _ => problems.push("trigger.source: must be \"clockify\" or a custom source id".into()),
    }
    let custom = trigger.source != CLOCKIFY_SOURCE;
    if trigger.source == STUDIO_SOURCE {
        // A notification about a failing flow must not run flows.
        problems.push(
            "trigger.source: the studio source's notifications cannot trigger flows; forward them with a destination".into(),
        );
    } else if custom && known.custom_source != Some(true) {
        problems.push(format!(
            "trigger.source: no custom source {:?} in this workspace",
            trigger.source
        ));
    }
    match value["events"].as_array() {
        Some(events) if !events.is_empty() && events.len() <= MAX_EVENTS => {
            for (i, event) in events.iter().enumerate() {
                let Some(event) = event.as_str() else {
                    problems.push(format!("trigger.events[{i}]: must be an event type name"));
                    continue;
                };
                if !custom && !crate::ingest::is_clockify_event(event) {
                    problems.push(format!(
                        "trigger.events[{i}]: unknown Clockify event type {event:?}"
                    ));
                } else if custom && (event.is_empty() || event.len() > MAX_EVENT_TYPE_LEN) {
                    problems.push(format!(
                        "trigger.events[{i}]: event types are 1 to {MAX_EVENT_TYPE_LEN} characters"
                    ));
                } else if !trigger.events.iter().any(|e| e == event) {
                    trigger.events.push(event.to_string());
                }
            }
        }
        _ => problems.push(format!(
            "trigger.events: required, a list of 1 to {MAX_EVENTS} event types"
        )),
    }
    trigger
}

pub fn parse_conditions(value: &Value, problems: &mut Vec<String>) -> Conditions {
    let mut conditions = Conditions {
        any: false,
        rules: Vec::new(),
    };
    if value.is_null() {
        return conditions;
    }
    if !value.is_object() {
        problems.push("conditions: must be {\"mode\": \"all\"|\"any\", \"rules\": [...]}".into());
        return conditions;
    }
    match value["mode"].as_str() {
        None if value["mode"].is_null() => {}
        Some("all") => {}
        Some("any") => conditions.any = true,
        _ => problems.push("conditions.mode: must be \"all\" or \"any\"".into()),
    }
    let rules = match &value["rules"] {
        Value::Null => return conditions,
        Value::Array(rules) if rules.len() <= MAX_RULES => rules,
        _ => {
            problems.push(format!(
                "conditions.rules: must be a list of at most {MAX_RULES} rules"
            ));
            return conditions;
        }
    };
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("conditions.rules[{i}]");
        let Some(path) = rule["path"].as_str() else {
            problems.push(format!(
                "{at}.path: required, a JSONPath such as $.projectId"
            ));
            continue;
        };
        let op = match rule["op"].as_str().and_then(Op::parse) {
            Some(op) => op,
            None => {
                let all: Vec<&str> = Op::ALL.iter().map(|o| o.as_str()).collect();
                problems.push(format!("{at}.op: must be one of {}", all.join(", ")));
                continue;
            }
        };
        let value = if op.takes_value() {
            rule["value"].clone()
        } else {
            Value::Null
        };
        let rule = Rule {
            path: path.to_string(),
            op,
            value: Json(value),
        };
        conditions::check_rule(&rule, &at, problems);
        conditions.rules.push(rule);
    }
    conditions
}

fn parse_retry(value: &Value, problems: &mut Vec<String>) -> FlowRetry {
    let mut retry = DEFAULT_RETRY;
    if value.is_null() {
        return retry;
    }
    match &value["maxAttempts"] {
        Value::Null => {}
        v => match v.as_u64() {
            Some(n) if (1..=MAX_ATTEMPTS as u64).contains(&n) => retry.max_attempts = n as u32,
            _ => problems.push(format!("retry.maxAttempts: must be 1 to {MAX_ATTEMPTS}")),
        },
    }
    match &value["backoffMs"] {
        Value::Null => {}
        v => match v.as_u64() {
            Some(n) if n <= MAX_BACKOFF_MS => retry.backoff_ms = n,
            _ => problems.push(format!("retry.backoffMs: must be 0 to {MAX_BACKOFF_MS}")),
        },
    }
    retry
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}

fn parse_actions(
    value: &Value,
    allowed: &AllowedHosts,
    header_values: &mut Vec<(usize, String, String)>,
    problems: &mut Vec<String>,
) -> Vec<FlowAction> {
    let Some(items) = value
        .as_array()
        .filter(|a| !a.is_empty() && a.len() <= MAX_ACTIONS)
    else {
        problems.push(format!(
            "actions: required, a list of 1 to {MAX_ACTIONS} actions"
        ));
        return Vec::new();
    };
    let names: Vec<Option<&str>> = items.iter().map(|a| a["name"].as_str()).collect();
    let mut actions = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("actions[{i}]");
        let name = match names[i] {
            Some(name) if is_identifier(name) => {
                if names[..i].contains(&Some(name)) {
                    problems.push(format!("{at}.name: {name:?} is used by an earlier action"));
                }
                name.to_string()
            }
            _ => {
                problems.push(format!(
                    "{at}.name: required, letters, digits and _ (it is how later actions refer to this one: actions.<name>)"
                ));
                format!("action{i}")
            }
        };
        let body = match &item["body"] {
            Value::Null => None,
            other => Some(other.clone()),
        };
        // The templates of the action, with where they are.
        let mut templated: Vec<(Value, String)> = Vec::new();
        let action = match item["kind"].as_str() {
            Some("http") => {
                let call = parse_http(item, &at, body.is_some(), allowed, problems);
                templated.push((Value::String(call.url.clone()), format!("{at}.url")));
                for (header, value) in &call.plain_headers {
                    header_values.push((i, header.clone(), value.clone()));
                }
                FlowAction {
                    name,
                    operation_id: String::new(),
                    path_params: Vec::new(),
                    query: Vec::new(),
                    body: body.clone().map(Json),
                    http: Some(HttpCall {
                        method: call.method,
                        url: call.url,
                        headers: Vec::new(),
                    }),
                }
            }
            None if item["kind"].is_null() => {
                parse_clockify(item, name, &at, body.clone(), &mut templated, problems)
            }
            Some("clockify") => {
                parse_clockify(item, name, &at, body.clone(), &mut templated, problems)
            }
            _ => {
                problems.push(format!(
                    "{at}.kind: must be \"clockify\" (a Clockify operation, the default) or \"http\" (an HTTP request)"
                ));
                continue;
            }
        };
        if let Some(body) = &body {
            templated.push((body.clone(), format!("{at}.body")));
        }
        // Templates: each must parse and read only known variables and earlier actions.
        let mut template_problems = Vec::new();
        let mut variables = std::collections::BTreeSet::new();
        for (value, location) in &templated {
            variables.extend(template::check(value, location, &mut template_problems));
        }
        problems.extend(template_problems.iter().map(ToString::to_string));
        for variable in &variables {
            let mut parts = variable.split('.');
            let root = parts.next().unwrap_or_default();
            if !template::CONTEXT_VARIABLES.contains(&root) {
                problems.push(format!(
                    "{at}: unknown template variable {root:?} (use {})",
                    template::CONTEXT_VARIABLES.join(", ")
                ));
                continue;
            }
            if root != "actions" {
                continue;
            }
            let Some(target) = parts.next() else { continue };
            match names.iter().position(|n| *n == Some(target)) {
                Some(j) if j < i => {}
                Some(j) if j == i => {
                    problems.push(format!("{at}: refers to its own result (actions.{target})"))
                }
                Some(_) => problems.push(format!(
                    "{at}: refers to action {target:?}, which runs later"
                )),
                None => problems.push(format!("{at}: refers to unknown action {target:?}")),
            }
        }
        actions.push(action);
    }
    actions
}

/// A Clockify operation action; its parameters and body join `templated`.
fn parse_clockify(
    item: &Value,
    name: String,
    at: &str,
    body: Option<Value>,
    templated: &mut Vec<(Value, String)>,
    problems: &mut Vec<String>,
) -> FlowAction {
    let operation = match item["operationId"].as_str() {
        Some(id) => match catalog::catalog().operation(id) {
            Some(op) => Some(op),
            None => {
                problems.push(format!("{at}.operationId: unknown operation {id:?}"));
                None
            }
        },
        None => {
            problems.push(format!("{at}.operationId: required"));
            None
        }
    };
    let path_params = object_pairs(&item["pathParams"], &format!("{at}.pathParams"), problems);
    let query = object_pairs(&item["query"], &format!("{at}.query"), problems);
    if let Some(op) = operation {
        check_against_operation(op, at, &path_params, &query, body.as_ref(), problems);
    }
    templated.push((pairs_json(&path_params), format!("{at}.pathParams")));
    templated.push((pairs_json(&query), format!("{at}.query")));
    FlowAction {
        name,
        operation_id: item["operationId"].as_str().unwrap_or_default().to_string(),
        path_params,
        query,
        body: body.map(Json),
        http: None,
    }
}

/// The parts of an "HTTP request" action as given.
struct HttpInput {
    method: String,
    url: String,
    /// Name and value (or [`MASK`]).
    plain_headers: Vec<(String, String)>,
}

/// Where a URL's scheme and host end (before the path, query or fragment).
fn origin_end(url: &str) -> usize {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    url[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| after_scheme + i)
}

fn has_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// Checks a URL as saved: the scheme and host are fixed text that the outbound rules allow;
/// the path and query may be templates (the rendered URL is checked again before the call).
pub fn check_http_url(url: &str, allowed: &AllowedHosts) -> Result<(), String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("must be at most {MAX_URL_LEN} characters"));
    }
    let end = origin_end(url);
    if has_template(&url[..end]) {
        return Err(
            "the scheme and host must be written out (templates may follow in the path and query)"
                .into(),
        );
    }
    if has_template(url) {
        check_url(&format!("{}/", &url[..end]), allowed)
    } else {
        check_url(url, allowed)
    }
}

fn parse_http(
    item: &Value,
    at: &str,
    has_body: bool,
    allowed: &AllowedHosts,
    problems: &mut Vec<String>,
) -> HttpInput {
    for field in ["operationId", "pathParams", "query"] {
        let empty = match &item[field] {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        };
        if !empty {
            problems.push(format!(
                "{at}.{field}: only Clockify operation actions have one (this is an HTTP request)"
            ));
        }
    }
    let method = match item["method"].as_str().map(str::to_ascii_uppercase) {
        Some(m) if HTTP_METHODS.contains(&m.as_str()) => m,
        _ => {
            problems.push(format!(
                "{at}.method: required, one of {}",
                HTTP_METHODS.join(", ")
            ));
            "POST".to_string()
        }
    };
    if has_body && matches!(method.as_str(), "GET" | "DELETE") {
        problems.push(format!("{at}.body: a {method} request sends no body"));
    }
    let url = match item["url"].as_str() {
        Some(url) => {
            if let Err(message) = check_http_url(url, allowed) {
                problems.push(format!("{at}.url: {message}"));
            }
            url.to_string()
        }
        None => {
            problems.push(format!("{at}.url: required, an https:// URL"));
            String::new()
        }
    };
    let mut plain_headers = Vec::new();
    match &item["headers"] {
        Value::Null => {}
        Value::Object(map) if map.len() <= MAX_HEADERS => {
            for (name, value) in map {
                let where_ = format!("{at}.headers.{name}");
                let lower = name.to_ascii_lowercase();
                let Some(value) = value.as_str() else {
                    problems.push(format!("{where_}: must be a string"));
                    continue;
                };
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    problems.push(format!("{where_}: not a header name"));
                } else if RESERVED_HEADERS.contains(&lower.as_str()) {
                    problems.push(format!(
                        "{where_}: set by the server; an action may not change it"
                    ));
                } else if http::HeaderValue::from_str(value).is_err()
                    || value.len() > MAX_HEADER_VALUE_LEN
                {
                    problems.push(format!(
                        "{where_}: must be at most {MAX_HEADER_VALUE_LEN} visible characters"
                    ));
                } else if plain_headers
                    .iter()
                    .any(|(n, _): &(String, String)| n.eq_ignore_ascii_case(name))
                {
                    problems.push(format!("{where_}: given twice"));
                } else {
                    plain_headers.push((name.clone(), value.to_string()));
                }
            }
        }
        _ => problems.push(format!(
            "{at}.headers: must be an object of at most {MAX_HEADERS} name: value pairs"
        )),
    }
    HttpInput {
        method,
        url,
        plain_headers,
    }
}

fn object_pairs(value: &Value, at: &str, problems: &mut Vec<String>) -> Vec<(String, Json)> {
    match value {
        Value::Null => Vec::new(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), Json(v.clone())))
            .collect(),
        _ => {
            problems.push(format!("{at}: must be an object of name: value"));
            Vec::new()
        }
    }
}

fn check_against_operation(
    op: &Operation,
    at: &str,
    path_params: &[(String, Json)],
    query: &[(String, Json)],
    body: Option<&Value>,
    problems: &mut Vec<String>,
) {
    let mapped = |pairs: &[(String, Json)], name: &str| {
        pairs
            .iter()
            .any(|(k, v)| k == name && !v.0.is_null() && v.0 != Value::String(String::new()))
    };
    for param in &op.parameters {
        match param.location {
            ParamLocation::Path
                if !AUTOMATIC_PATH_PARAMS.contains(&param.name.as_str())
                    && !mapped(path_params, &param.name) =>
            {
                problems.push(format!(
                    "{at}.pathParams.{}: required by {} but not mapped",
                    param.name, op.id
                ));
            }
            ParamLocation::Query if param.required && !mapped(query, &param.name) => {
                problems.push(format!(
                    "{at}.query.{}: required by {} but not mapped",
                    param.name, op.id
                ));
            }
            _ => {}
        }
    }
    for (name, _) in path_params {
        let known = op
            .parameters
            .iter()
            .any(|p| p.location == ParamLocation::Path && p.name == *name);
        if !known {
            problems.push(format!(
                "{at}.pathParams.{name}: {} has no path parameter {name}",
                op.id
            ));
        }
    }
    if !op.addon_token {
        problems.push(format!(
            "{at}.operationId: {} does not accept add-on tokens",
            op.id
        ));
    }
    match (&op.body, body) {
        (None, Some(_)) => problems.push(format!("{at}.body: {} takes no request body", op.id)),
        (Some(_), _) if op.multipart() => problems.push(format!(
            "{at}.operationId: {} uploads files (multipart), which flows cannot send",
            op.id
        )),
        (Some(spec), None) if spec.required => {
            problems.push(format!("{at}.body: {} needs a request body", op.id))
        }
        _ => {}
    }
}

/// The entities Clockify's events are about: a keyword of the event type, the entity's name,
/// and the path segment of the API operations that change it.
const ENTITIES: &[(&str, &str, &str)] = &[
    ("TIME_OFF", "time off request", "time-off"),
    ("TIME_ENTRY", "time entry", "time-entries"),
    ("TIMER", "time entry", "time-entries"),
    ("USER_GROUP", "user group", "user-groups"),
    ("APPROVAL_REQUEST", "approval request", "approval-requests"),
    ("ASSIGNMENT", "assignment", "assignments"),
    ("EXPENSE", "expense", "expenses"),
    ("INVOICE", "invoice", "invoices"),
    ("PROJECT", "project", "projects"),
    ("CLIENT", "client", "clients"),
    ("TAG", "tag", "tags"),
    ("TASK", "task", "tasks"),
];

/// What a Clockify event type is about (`TIME_ENTRY_UPDATED` → `time entry`).
pub fn entity_name(event_type: &str) -> Option<&'static str> {
    ENTITIES
        .iter()
        .find(|(keyword, _, _)| event_type.contains(keyword))
        .map(|(_, name, _)| *name)
}

/// What an operation changes: the entity of the last collection in its path, for methods
/// that change something.
fn changed_entity(operation: &Operation) -> Option<&'static str> {
    if matches!(operation.method.as_str(), "GET" | "HEAD" | "OPTIONS") {
        return None;
    }
    operation
        .path
        .split('/')
        .rev()
        .filter(|segment| !segment.starts_with('{'))
        .find_map(|segment| {
            ENTITIES
                .iter()
                .find(|(_, _, collection)| *collection == segment)
                .map(|(_, name, _)| *name)
        })
}

/// Warnings about a flow as saved (it is saved anyway): an action that changes the kind of
/// entity the trigger is about may trigger the flow again, for ever. `loop_limit` is what
/// stops such a loop at run time (0 = nothing).
pub fn warnings(trigger: &Trigger, actions: &[FlowAction], loop_limit: u32) -> Vec<String> {
    if trigger.source != CLOCKIFY_SOURCE {
        return Vec::new();
    }
    let mut warnings = Vec::new();
    for (i, action) in actions.iter().enumerate() {
        let Some(operation) = catalog::catalog().operation(&action.operation_id) else {
            continue;
        };
        let Some(changed) = changed_entity(operation) else {
            continue;
        };
        let triggers: Vec<&str> = trigger
            .events
            .iter()
            .filter(|event| entity_name(event) == Some(changed))
            .map(String::as_str)
            .collect();
        if triggers.is_empty() {
            continue;
        }
        let stop = if loop_limit > 0 {
            format!(
                "; a flow that runs more than {loop_limit} times a minute for the same {changed} is disabled"
            )
        } else {
            String::new()
        };
        warnings.push(format!(
            "actions[{i}].operationId: {} changes a {changed} and the flow runs on {}: its own change may trigger it again{stop}",
            operation.id,
            triggers.join(", "),
        ));
    }
    warnings
}

/// An "HTTP request" action's headers with their values masked.
pub fn masked_headers(call: &HttpCall) -> Map<String, Value> {
    call.headers
        .iter()
        .map(|(name, _)| (name.clone(), Value::from(MASK)))
        .collect()
}

/// A stored flow as the definition a user edits (the body [`parse`] reads back): what the
/// export carries and what audit summaries show.
pub fn definition(flow: &crate::store::Flow) -> Value {
    serde_json::json!({
        "name": flow.name,
        "enabled": flow.enabled,
        "trigger": {"source": flow.trigger.source, "events": flow.trigger.events},
        "conditions": {
            "mode": if flow.conditions.any { "any" } else { "all" },
            "rules": flow.conditions.rules.iter().map(|r| serde_json::json!({
                "path": r.path, "op": r.op.as_str(), "value": r.value.0,
            })).collect::<Vec<_>>(),
        },
        "actions": flow.actions.iter().map(|a| match &a.http {
            None => serde_json::json!({
                "name": a.name,
                "operationId": a.operation_id,
                "pathParams": pairs_json(&a.path_params),
                "query": pairs_json(&a.query),
                "body": a.body.as_ref().map(|b| b.0.clone()),
            }),
            Some(call) => serde_json::json!({
                "name": a.name,
                "kind": "http",
                "method": call.method,
                "url": call.url,
                "headers": masked_headers(call),
                "body": a.body.as_ref().map(|b| b.0.clone()),
            }),
        }).collect::<Vec<_>>(),
        "retry": {"maxAttempts": flow.retry.max_attempts, "backoffMs": flow.retry.backoff_ms},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(operation_id: &str) -> FlowAction {
        FlowAction::clockify(
            "a".into(),
            operation_id.into(),
            Vec::new(),
            Vec::new(),
            None,
        )
    }

    fn trigger(source: &str, events: &[&str]) -> Trigger {
        Trigger {
            source: source.into(),
            events: events.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn actions_that_change_what_triggers_the_flow_are_warned_about() {
        assert_eq!(entity_name("TIME_ENTRY_UPDATED"), Some("time entry"));
        assert_eq!(entity_name("NEW_TIMER_STARTED"), Some("time entry"));
        assert_eq!(entity_name("TIME_OFF_REQUESTED"), Some("time off request"));
        assert_eq!(entity_name("USER_GROUP_CREATED"), Some("user group"));
        let on_update = trigger(CLOCKIFY_SOURCE, &["TIME_ENTRY_UPDATED", "NEW_PROJECT"]);
        let found = warnings(
            &on_update,
            &[action("getTag"), action("updateTimeEntry")],
            10,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("actions[1].operationId: updateTimeEntry changes a time entry and the flow runs on TIME_ENTRY_UPDATED"), "{found:?}");
        assert!(found[0].contains("more than 10 times"), "{found:?}");
        let on_tag = trigger(CLOCKIFY_SOURCE, &["NEW_TAG"]);
        assert_eq!(warnings(&on_tag, &[action("createNewTag")], 0).len(), 1);
        assert!(
            warnings(&on_tag, &[action("getTag")], 10).is_empty(),
            "reads change nothing"
        );
        assert!(
            warnings(
                &trigger("custom-1", &["NEW_TAG"]),
                &[action("createNewTag")],
                10
            )
            .is_empty()
        );
    }
}
