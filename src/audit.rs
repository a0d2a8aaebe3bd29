//! The audit log's domain side: who made a change (the token's user, the name the entity
//! cache knows, the request id), what it was, and short before/after summaries. Recording
//! never fails the change it describes: a change is already committed when it is recorded,
//! so a failed write is logged and counted (`audit_write_failures_total`) instead.

use serde_json::Value;

use crate::app::App;
use crate::auth::User;
use crate::store::{AuditEntry, AuditPage, AuditQuery, StoreError, new_id};
use crate::telemetry::current_request_id;
use crate::time::now_ms;

/// Longest summary kept per side, in characters; longer ones are cut and marked.
const MAX_SUMMARY_CHARS: usize = 4000;
/// Entries per page at most.
pub const MAX_PAGE: usize = 200;

/// Who made a change.
#[derive(Clone, Debug)]
pub struct Actor {
    pub user_id: Option<String>,
    pub user_name: Option<String>,
    pub request_id: String,
}

impl Actor {
    /// The user of a request; the name comes from the workspace's cached users, when known.
    pub async fn of(app: &App, user: &User) -> Actor {
        let user_id = user.claims.user.clone();
        let user_name = match &user_id {
            Some(id) => {
                let id = id.clone();
                app.store
                    .entities(&user.workspace_id, Some("users"), move |e| e.id == id, 1)
                    .await
                    .ok()
                    .and_then(|found| found.into_iter().next())
                    .and_then(|e| e.name)
            }
            None => None,
        };
        Actor {
            user_id,
            user_name,
            request_id: current_request_id(),
        }
    }

    /// An operator's command on the server's host (the CLI through the control socket).
    pub fn operator(command: &str) -> Actor {
        Actor {
            user_id: None,
            user_name: Some("operator".into()),
            request_id: command.to_string(),
        }
    }
}

/// A summary as stored: compact JSON, cut at [`MAX_SUMMARY_CHARS`].
fn summary(value: Option<Value>) -> Option<String> {
    let text = value?.to_string();
    if text.chars().count() <= MAX_SUMMARY_CHARS {
        Some(text)
    } else {
        let cut: String = text.chars().take(MAX_SUMMARY_CHARS).collect();
        Some(format!("{cut}…"))
    }
}

/// One change to record; `before`/`after` are summaries of the changed thing (no secrets).
pub struct Change<'a> {
    pub action: &'a str,
    pub target: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// Records `change` made by `actor` in `ws`.
pub async fn record(app: &App, ws: &str, actor: &Actor, change: Change<'_>) {
    let entry = AuditEntry {
        id: new_id(),
        at: now_ms(),
        user_id: actor.user_id.clone(),
        user_name: actor.user_name.clone(),
        request_id: actor.request_id.clone(),
        action: change.action.to_string(),
        target: change.target,
        before: summary(change.before),
        after: summary(change.after),
    };
    let action = entry.action.clone();
    match app.store.append_audit(ws, entry).await {
        Ok(()) => metrics::counter!("audit_entries_total").increment(1),
        Err(err) => {
            metrics::counter!("audit_write_failures_total").increment(1);
            tracing::error!(workspace_id = %ws, action = %action, error = %err, "audit entry not written");
        }
    }
}

/// Records a change made by the user of a request.
pub async fn by_user(app: &App, user: &User, change: Change<'_>) {
    let actor = Actor::of(app, user).await;
    record(app, &user.workspace_id, &actor, change).await;
}

/// Records a change of one thing by the user of a request: `target` names it, `summary`
/// turns it into what the log keeps (never a secret).
pub async fn thing_changed<T>(
    app: &App,
    user: &User,
    action: &str,
    (before, after): (Option<&T>, Option<&T>),
    target: impl Fn(&T) -> String,
    summary: impl Fn(&T) -> Value,
) {
    let change = Change {
        action,
        target: before.or(after).map(&target),
        before: before.map(&summary),
        after: after.map(&summary),
    };
    by_user(app, user, change).await;
}

/// A newest-first page of the workspace's log.
pub async fn list(app: &App, ws: &str, mut query: AuditQuery) -> Result<AuditPage, StoreError> {
    query.limit = query.limit.clamp(1, MAX_PAGE);
    app.store.audit(ws, query).await
}
