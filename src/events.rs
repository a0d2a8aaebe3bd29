//! Reading the event log: newest-first pages with filters (event types, source, time, a text
//! or field search), an entity's history, the entity ids a body names, and the text shown for
//! an event in lists.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::app::App;
use crate::store::{EventId, EventPage, EventQuery, StoreError, StoredEvent};

/// How long one request searching the text of bodies keeps scanning before it answers with
/// what it found and a cursor (so a rare text is found in one request, not forty).
pub const SEARCH_BUDGET: Duration = Duration::from_secs(1);
/// Rows a text search examines at most per request (the time budget usually ends it first).
pub const SEARCH_SCAN_LIMIT: usize = 10_000_000;
/// Entity ids indexed per event at most (a project lists its tasks: the first ones count).
pub const MAX_ENTITIES: usize = 32;

/// The entity ids `body` names, for the entity index (`GET /api/webhooks?entity=`): every
/// string under a key `id` or ending in `Id` (`userId`, `projectId`, `timeEntryId`,
/// `changedByUserId` …), and the strings of arrays under keys ending in `Ids` (`tagIds`), at
/// the top level and one level down (`project.id`, `task.id`, `user.id`, `tags[].id`,
/// `owner.userId`, `client.id`, `tasks[].id`, `modifiedEntity.targetId` …). So a time entry
/// event is found by its own id, its user, project, task, client, tags and custom fields; a
/// project event by the project, its client and tasks; an expense by its own id, user,
/// project and category. `workspaceId` and the workspace's own id are left out: every event
/// of the workspace would name them.
pub fn entity_ids(ws: &str, body: &[u8]) -> Vec<String> {
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    collect_ids(&json, 0, ws, &mut out);
    out.sort_unstable();
    out.dedup();
    out.truncate(MAX_ENTITIES);
    out
}

fn collect_ids(value: &Value, depth: usize, ws: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "workspaceId" {
                    continue;
                }
                let is_id = key == "id" || key.ends_with("Id");
                match v {
                    Value::String(s) if is_id && s != ws && !s.is_empty() => out.push(s.clone()),
                    Value::Array(items) if key.ends_with("Ids") => out.extend(
                        items
                            .iter()
                            .filter_map(Value::as_str)
                            .filter(|s| *s != ws && !s.is_empty())
                            .map(str::to_string),
                    ),
                    Value::Object(_) | Value::Array(_) if depth == 0 => {
                        collect_ids(v, depth + 1, ws, out)
                    }
                    _ => {}
                }
            }
        }
        // Arrays of objects one level down (`tags`, `tasks`, `customFieldValues`).
        Value::Array(items) => items
            .iter()
            .filter(|item| item.is_object())
            .for_each(|item| collect_ids(item, depth, ws, out)),
        _ => {}
    }
}

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
    /// Anywhere in the body, ignoring case: the text as a literal, searched without copying
    /// or lowercasing each body (`finder`); a text too long for that is compared in lowercase.
    Substring {
        finder: Option<regex::bytes::Regex>,
        lowered: String,
    },
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
            None => TextFilter::Substring {
                finder: regex::bytes::RegexBuilder::new(&regex::escape(q))
                    .case_insensitive(true)
                    .build()
                    .ok(),
                lowered: q.to_lowercase(),
            },
        }
    }

    pub fn matches(&self, body: &[u8]) -> bool {
        match self {
            TextFilter::Substring { finder, lowered } => match finder {
                Some(finder) => finder.is_match(body),
                None => String::from_utf8_lossy(body)
                    .to_lowercase()
                    .contains(lowered.as_str()),
            },
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

/// A newest-first page of `ws`'s events matching `filter`. A text or source filter scans on for up to
/// [`SEARCH_BUDGET`] (the page says how far it got).
pub async fn list(app: &App, ws: &str, filter: EventFilter) -> Result<EventPage, StoreError> {
    let EventFilter {
        mut query,
        source,
        text,
    } = filter;
    if text.is_some() || source.is_some() {
        query.deadline = Some(Instant::now() + SEARCH_BUDGET);
        query.scan_limit = query.scan_limit.max(SEARCH_SCAN_LIMIT);
    }
    app.store
        .list_events(ws, query, move |event: &StoredEvent| {
            source
                .as_deref()
                .is_none_or(|s| event.source == s || event.source_id.as_deref() == Some(s))
                && text.as_ref().is_none_or(|t| t.matches(&event.body))
        })
        .await
}

/// The newest-first history of one entity of `ws` (events whose body names it, see
/// [`entity_ids`]).
pub async fn entity_history(
    app: &App,
    ws: &str,
    entity: &str,
    before: Option<EventId>,
    limit: usize,
) -> Result<EventPage, StoreError> {
    app.store.entity_events(ws, entity, before, limit).await
}

/// Erases one event with its index rows; whether it existed.
pub async fn delete(app: &App, ws: &str, id: EventId) -> Result<bool, StoreError> {
    let Some(event) = app.store.event(ws, id).await? else {
        return Ok(false);
    };
    let entities = entity_ids(ws, &event.body);
    app.store.delete_event(ws, id, entities).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_search_ignores_case_and_takes_the_text_literally() {
        let body = "{\"description\":\"Čaj at the Café, a.k.a. BREAK\"}".as_bytes();
        for q in ["break", "CAFÉ", "čaj", "a.k.a.", "Description"] {
            assert!(TextFilter::parse(q).matches(body), "{q}");
        }
        for q in ["a.k.b", "caf.", "tea"] {
            assert!(!TextFilter::parse(q).matches(body), "{q}");
        }
        // Too long to be compiled: compared in lowercase instead, with the same answer.
        let long = "x".repeat(200_000);
        let filter = TextFilter::parse(&long);
        assert!(matches!(
            &filter,
            TextFilter::Substring { finder: None, .. }
        ));
        assert!(filter.matches(long.to_uppercase().as_bytes()));
        assert!(!filter.matches(body));
    }
}
