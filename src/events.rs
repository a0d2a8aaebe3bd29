//! Reading the event log: newest-first pages with filters (event types, source, time, a text
//! or field search), and the text shown for an event in lists.

use serde_json::Value;

use crate::app::App;
use crate::store::{EventPage, EventQuery, StoreError, StoredEvent};

pub const PREVIEW_CHARS: usize = 160;

/// The first [`PREVIEW_CHARS`] characters of a body, whitespace collapsed.
pub fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(PREVIEW_CHARS * 4)]);
    let collapsed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = collapsed.chars().take(PREVIEW_CHARS).collect();
    if collapsed.chars().count() > PREVIEW_CHARS {
        out.push('…');
    }
    out
}

/// The `q` filter: `field=value` (exact, case-insensitive), `field:value` (contains) on a
/// dotted path into the JSON body, or else a case-insensitive substring of the body.
#[derive(Clone)]
pub enum TextFilter {
    Substring(String),
    Field {
        path: Vec<String>,
        value: String,
        exact: bool,
    },
}

impl TextFilter {
    pub fn parse(q: &str) -> TextFilter {
        let split = q.find(['=', ':']).filter(|&i| {
            i > 0
                && q[..i]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
        });
        match split {
            Some(i) => TextFilter::Field {
                path: q[..i].split('.').map(str::to_string).collect(),
                value: q[i + 1..].trim().to_lowercase(),
                exact: q.as_bytes()[i] == b'=',
            },
            None => TextFilter::Substring(q.to_lowercase()),
        }
    }

    pub fn matches(&self, body: &[u8]) -> bool {
        match self {
            TextFilter::Substring(needle) => String::from_utf8_lossy(body)
                .to_lowercase()
                .contains(needle.as_str()),
            TextFilter::Field { path, value, exact } => {
                let Ok(json) = serde_json::from_slice::<Value>(body) else {
                    return false;
                };
                let mut found = Vec::new();
                collect_at(&json, path, &mut found);
                found.iter().any(|v| {
                    let text = match v {
                        Value::String(s) => s.to_lowercase(),
                        other => other.to_string().to_lowercase(),
                    };
                    if *exact {
                        text == *value
                    } else {
                        text.contains(value.as_str())
                    }
                })
            }
        }
    }
}

/// Values at a dotted path; arrays are searched element-wise (`tags.name`) or by index.
fn collect_at<'a>(value: &'a Value, path: &[String], out: &mut Vec<&'a Value>) {
    let Some((head, rest)) = path.split_first() else {
        out.push(value);
        return;
    };
    match value {
        Value::Object(map) => {
            if let Some(next) = map.get(head) {
                collect_at(next, rest, out);
            }
        }
        Value::Array(items) => match head.parse::<usize>() {
            Ok(index) => {
                if let Some(next) = items.get(index) {
                    collect_at(next, rest, out);
                }
            }
            Err(_) => items.iter().for_each(|item| collect_at(item, path, out)),
        },
        _ => {}
    }
}

/// A filtered listing: the store's bounds plus what is checked per event.
pub struct EventFilter {
    pub query: EventQuery,
    /// `clockify`, a custom source's name or id.
    pub source: Option<String>,
    pub text: Option<TextFilter>,
}

/// A newest-first page of `ws`'s events matching `filter`.
pub async fn list(app: &App, ws: &str, filter: EventFilter) -> Result<EventPage, StoreError> {
    let EventFilter {
        query,
        source,
        text,
    } = filter;
    app.store
        .list_events(ws, query, move |event: &StoredEvent| {
            source
                .as_deref()
                .is_none_or(|s| event.source == s || event.source_id.as_deref() == Some(s))
                && text.as_ref().is_none_or(|t| t.matches(&event.body))
        })
        .await
}
