//! One line that says what an event is about ("Time entry 'Quarterly audit' by Ana, 2 h,
//! Project X"), read from the fields Clockify's payloads share, for the event list.

use serde_json::{Map, Value};

const MAX_TITLE: usize = 60;

/// What an event of `event_type` is about, from its JSON body; `None` when the body says
/// nothing recognisable (the list then shows the raw preview).
pub fn line(event_type: &str, body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    let noun = noun(event_type);
    let mut parts: Vec<String> = Vec::new();
    let title = first_text(
        object,
        &["description", "name", "number", "subject", "email", "notes"],
    );
    let mut head = match (noun, title) {
        (Some(noun), Some(title)) => format!("{noun} '{}'", truncate(&title)),
        (Some(noun), None) => noun.to_string(),
        (None, Some(title)) => format!("'{}'", truncate(&title)),
        (None, None) => String::new(),
    };
    let by = text_at(object, &["user", "name"])
        .or_else(|| text_at(object, &["userName"]))
        .or_else(|| text_at(object, &["owner", "userName"]))
        .or_else(|| text_at(object, &["inviter", "name"]));
    if let Some(by) = by {
        head.push_str(&format!(" by {by}"));
    }
    if !head.trim().is_empty() {
        parts.push(head.trim().to_string());
    }
    if let Some(duration) =
        text_at(object, &["timeInterval", "duration"]).and_then(|d| duration(&d))
    {
        parts.push(duration);
    }
    if let Some(project) =
        text_at(object, &["project", "name"]).or_else(|| text_at(object, &["projectName"]))
    {
        parts.push(project);
    }
    if let Some(client) = text_at(object, &["clientName"]) {
        parts.push(format!("client {client}"));
    }
    if let Some(Value::Array(emails)) = object.get("invitedUserEmails") {
        parts.push(format!("{} invited", emails.len()));
    }
    let status = text_at(object, &["status"]).or_else(|| text_at(object, &["status", "status"]));
    if let Some(status) = status {
        parts.push(status.to_lowercase());
    }
    if noun.is_none() && parts.len() <= 1 {
        // Another system's event: its first few plain fields say the most.
        let scalars: Vec<String> = object
            .iter()
            .filter_map(|(k, v)| scalar(v).map(|v| format!("{k} {}", truncate(&v))))
            .take(3)
            .collect();
        if !scalars.is_empty() {
            parts = vec![scalars.join(", ")];
        }
    }
    let line = parts.join(", ");
    (!line.is_empty()).then_some(line)
}

/// The thing a Clockify event type is about.
fn noun(event_type: &str) -> Option<&'static str> {
    const NOUNS: [(&str, &str); 16] = [
        ("TIME_ENTRY", "Time entry"),
        ("TIMER", "Time entry"),
        ("TIME_OFF", "Time off"),
        ("USER_GROUP", "Group"),
        ("APPROVAL", "Approval request"),
        ("ASSIGNMENT", "Assignment"),
        ("EXPENSE", "Expense"),
        ("INVOICE", "Invoice"),
        ("PROJECT", "Project"),
        ("CLIENT", "Client"),
        ("TASK", "Task"),
        ("TAG", "Tag"),
        ("BALANCE", "Balance"),
        ("BILLABLE_RATE", "Billable rate"),
        ("COST_RATE", "Cost rate"),
        ("USER", "User"),
    ];
    NOUNS
        .iter()
        .find(|(key, _)| event_type.contains(key))
        .map(|(_, noun)| *noun)
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn text_at(object: &Map<String, Value>, path: &[&str]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    let mut value = object.get(*first)?;
    for key in rest {
        value = value.get(key)?;
    }
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    }
}

fn first_text(object: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| text_at(object, &[k]))
}

fn truncate(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= MAX_TITLE {
        return collapsed;
    }
    let mut out: String = collapsed.chars().take(MAX_TITLE - 1).collect();
    out.push('…');
    out
}

/// `PT1H30M` as `1 h 30 min`; `None` for zero or what is not an ISO 8601 duration.
fn duration(iso: &str) -> Option<String> {
    let span: jiff::Span = iso.parse().ok()?;
    let total = span.total(jiff::Unit::Second).ok().filter(|s| *s > 0.0)? as i64;
    let (hours, minutes, seconds) = (total / 3600, total % 3600 / 60, total % 60);
    Some(match (hours, minutes) {
        (0, 0) => format!("{seconds} s"),
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_entries_say_what_who_how_long_and_where() {
        let body = br#"{"description":"Quarterly audit","user":{"name":"Ana"},
            "timeInterval":{"duration":"PT2H"},"project":{"name":"Project X"}}"#;
        assert_eq!(
            line("NEW_TIME_ENTRY", body).as_deref(),
            Some("Time entry 'Quarterly audit' by Ana, 2 h, Project X")
        );
        let short = br#"{"description":"x","timeInterval":{"duration":"PT1H30M"}}"#;
        assert_eq!(
            line("TIMER_STOPPED", short).as_deref(),
            Some("Time entry 'x', 1 h 30 min")
        );
    }

    #[test]
    fn other_types_and_custom_sources_get_a_line_too() {
        assert_eq!(
            line("NEW_PROJECT", br#"{"name":"Apollo","clientName":"ACME"}"#).as_deref(),
            Some("Project 'Apollo', client ACME")
        );
        assert_eq!(
            line(
                "order.created",
                br#"{"type":"order.created","id":"ord_1","total":42.5}"#
            )
            .as_deref(),
            Some("type order.created, id ord_1, total 42.5")
        );
        assert_eq!(line("NEW_TAG", b"not json"), None);
    }
}
