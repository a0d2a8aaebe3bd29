//! The API explorer: the operations of the bundled Clockify spec (filtered), and running one
//! ("execute"): parameters checked against the catalog, `workspaceId` filled from the token,
//! the call made through the shared client (as the add-on or as the user), kept in a history.
//! The token is never shown.

use serde_json::{Map, Value, json};

use crate::app::App;
use crate::auth::User;
use crate::clockify::catalog::{Operation, ParamLocation, catalog};
use crate::clockify::client::{
    Acting, ApiClient, ApiRequest, ApiResponse, ClientError, RetryPolicy,
};
use crate::problem::{self, Problem};
use crate::store::{Execution, StoreError, new_id};
use crate::time::now_ms;

/// The list filters of the catalog; empty values mean "no filter".
#[derive(Clone, Debug, Default)]
pub struct OperationFilter {
    /// Exact tag, case-insensitive.
    pub tag: Option<String>,
    /// HTTP method, case-insensitive.
    pub method: Option<String>,
    /// Case-insensitive substring of the operationId, summary or path.
    pub q: Option<String>,
}

impl OperationFilter {
    pub fn matches(&self, op: &Operation) -> bool {
        self.tag
            .as_ref()
            .is_none_or(|t| op.tag.to_lowercase() == t.to_lowercase())
            && self
                .method
                .as_ref()
                .is_none_or(|m| op.method.eq_ignore_ascii_case(m))
            && self.q.as_ref().is_none_or(|q| {
                let q = q.to_lowercase();
                [&op.id, &op.summary, &op.path]
                    .iter()
                    .any(|field| field.to_lowercase().contains(q.as_str()))
            })
    }
}

/// The operations matching `filter`, in catalog order.
pub fn operations(filter: &OperationFilter) -> Vec<&'static Operation> {
    catalog()
        .operations()
        .iter()
        .filter(|op| filter.matches(op))
        .collect()
}

/// Whose token an explorer call carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActAs {
    Addon,
    User,
}

impl ActAs {
    pub fn as_str(self) -> &'static str {
        match self {
            ActAs::Addon => "addon",
            ActAs::User => "user",
        }
    }
}

/// A call to run, as the explorer sends it.
pub struct ExecuteRequest {
    pub operation_id: String,
    pub path_params: Map<String, Value>,
    pub query: Map<String, Value>,
    pub body: Option<Value>,
    /// `addon` or `user`; by default `addon` for admins, `user` for everyone else.
    pub acting_as: Option<String>,
}

/// A call made: Clockify's answer, and the history record it was kept as.
pub struct Executed {
    pub operation: &'static Operation,
    pub response: ApiResponse,
    pub query: Vec<(String, String)>,
    pub execution_id: [u8; 16],
}

#[derive(Debug, thiserror::Error)]
pub enum ExplorerError {
    #[error("unknown operationId {0:?}")]
    UnknownOperation(String),
    #[error("this needs the OWNER or WORKSPACE_ADMIN role in the workspace")]
    NotAdmin,
    #[error(
        "as: \"addon\" calls with the add-on's own token, which only workspace owners and admins may use; call as: \"user\" to use your own Clockify permissions"
    )]
    AddonTokenForAdminsOnly,
    #[error("cannot call {operation}")]
    Invalid {
        operation: String,
        problems: Vec<Problem>,
    },
    #[error("refusing to call {0}: not a Clockify API host (see --allow-api-host)")]
    HostNotAllowed(String),
    /// Clockify could not be reached, or asked to wait too long.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs one catalog operation for `user` (writes need an admin), keeps it in the history.
/// `user_token` is sent when the call is made as the user.
pub async fn execute(
    app: &App,
    user: &User,
    user_token: &str,
    request: ExecuteRequest,
) -> Result<Executed, ExplorerError> {
    let operation = catalog()
        .operation(&request.operation_id)
        .ok_or_else(|| ExplorerError::UnknownOperation(request.operation_id.clone()))?;
    if !operation.read_only() && !user.is_admin() {
        return Err(ExplorerError::NotAdmin);
    }
    // Non-admins call as themselves, so Clockify applies their own rights; the add-on's token
    // reads the whole workspace and is for owners and admins only (docs/security.md).
    let acting_as = match request.acting_as.as_deref() {
        Some(given) => given,
        None if user.is_admin() => "addon",
        None => "user",
    };
    if acting_as == "addon" && !user.is_admin() {
        return Err(ExplorerError::AddonTokenForAdminsOnly);
    }
    let mut problems = Vec::new();
    if !operation.addon_token {
        problems.push(format!("{} does not accept add-on tokens", operation.id));
    }
    if operation.multipart() {
        problems.push(format!(
            "{} uploads files (multipart), which the explorer cannot send",
            operation.id
        ));
    }
    let mut path_params = request.path_params;
    // Filled only where the operation has it (`getLoggedUser` has none); given elsewhere, it
    // is reported as an unknown parameter like any other.
    if operation
        .parameter("workspaceId", ParamLocation::Path)
        .is_some()
    {
        match path_params.get("workspaceId") {
            Some(Value::String(ws)) if *ws != user.workspace_id => {
                problems.push("workspaceId is the token's workspace and cannot be changed".into())
            }
            _ => {}
        }
        path_params.insert("workspaceId".into(), json!(user.workspace_id));
    }
    if operation.body.is_none() && request.body.as_ref().is_some_and(|b| !b.is_null()) {
        problems.push(format!("{} takes no request body", operation.id));
    }
    if operation.body.as_ref().is_some_and(|b| b.required)
        && request.body.as_ref().is_none_or(Value::is_null)
    {
        problems.push(format!("{} needs a request body", operation.id));
    }
    let (acting, act_as) = match acting_as {
        "addon" => (Acting::Addon, ActAs::Addon),
        "user" => (Acting::User(user_token.to_string()), ActAs::User),
        other => {
            problems.push(format!("as must be \"addon\" or \"user\", not {other:?}"));
            (Acting::Addon, ActAs::Addon)
        }
    };
    let built = match operation.build_request(&path_params, &request.query) {
        Ok(built) => Some(built),
        Err(more) => {
            problems.extend(more);
            None
        }
    };
    let Some(built) = built.filter(|_| problems.is_empty()) else {
        return Err(ExplorerError::Invalid {
            operation: operation.id.clone(),
            problems: problem::from_texts(problems),
        });
    };
    let body_bytes = request
        .body
        .as_ref()
        .filter(|b| !b.is_null())
        .map(|b| serde_json::to_vec(b).expect("JSON"));
    let api_request = ApiRequest {
        operation_id: operation.id.clone(),
        server: operation.server,
        method: operation.method.clone(),
        path: built.path,
        query: built.query.clone(),
        body: body_bytes,
        acting,
        retry: RetryPolicy::default(),
    };
    let url = ApiClient::url(&user.installation, &api_request).unwrap_or_default();
    let started = std::time::Instant::now();
    let outcome = app
        .clockify
        .send(&user.installation, app.store.secrets(), api_request)
        .await;
    let id = new_id();
    let mut execution = Execution {
        id,
        operation_id: operation.id.clone(),
        method: operation.method.clone(),
        url,
        path_params: Value::Object(path_params).to_string(),
        query: Value::Object(request.query).to_string(),
        body: request.body.as_ref().map(Value::to_string),
        acting_as: act_as.as_str().to_string(),
        status: None,
        error: None,
        duration_ms: started.elapsed().as_millis() as u64,
        at: now_ms(),
        user_id: None,
        user_name: None,
    };
    let who = crate::audit::Actor::of(app, user).await;
    (execution.user_id, execution.user_name) = (who.user_id, who.user_name);
    match &outcome {
        Ok(response) => {
            execution.status = Some(response.status);
            execution.duration_ms = response.duration.as_millis() as u64;
        }
        Err(err) => execution.error = Some(err.to_string()),
    }
    app.store
        .put_execution(&user.workspace_id, execution)
        .await?;
    match outcome {
        Ok(response) => Ok(Executed {
            operation,
            response,
            query: built.query,
            execution_id: id,
        }),
        Err(ClientError::HostNotAllowed(host)) => Err(ExplorerError::HostNotAllowed(host)),
        Err(err) => Err(ExplorerError::Unavailable(err.to_string())),
    }
}

/// The workspace's explorer history as `user` may see it, newest first: admins every call;
/// everyone else only the calls they made themselves (as themselves: calls with the add-on's
/// token are the admins'), since another user's calls show what that user could read.
pub async fn history(app: &App, user: &User, limit: usize) -> Result<Vec<Execution>, StoreError> {
    let admin = user.is_admin();
    let me = user.claims.user.clone();
    app.store
        .executions(
            &user.workspace_id,
            move |e| {
                admin || (e.acting_as == ActAs::User.as_str() && me.is_some() && e.user_id == me)
            },
            limit,
        )
        .await
}
