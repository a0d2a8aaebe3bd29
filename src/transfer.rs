//! Export and import of a workspace's configuration (its flows, custom sources, destinations
//! and stored settings) as one versioned JSON document. Secrets are left out unless a
//! passphrase is given; then the sources' and destinations' current secrets and the
//! destinations' and flow HTTP actions' header values travel encrypted with a key derived from it (Argon2id,
//! XChaCha20-Poly1305). An import checks everything first — the same checks as the API, every
//! problem listed — and then writes all flows, sources and destinations in one transaction.
//! Flow and destination ids are kept (one with the same id in the workspace is replaced); a
//! source id already taken by another workspace is remapped, and the flows and destinations
//! that name it follow. Version 1 documents (before destinations) still import.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::auth::User;
use crate::destinations::outbound::AllowedHosts;
use crate::destinations::{self, MASK};
use crate::flows::model::{self, Known};
use crate::problem::{self, Problem};
use crate::settings::{self, SettingsError};
use crate::store::{
    CLOCKIFY_SOURCE, Destination, Sealed, SecretBox, Source, SourceSecret, StoreError, format_id,
    parse_id,
};
use crate::time::now_ms;

/// The document's `format`; `version` says how to read the rest.
pub const FORMAT: &str = "clockify-studio-config";
/// 2 added `destinations`; version 1 documents still import.
pub const VERSION: u32 = 2;
const OLDEST_VERSION: u32 = 1;
/// The shortest passphrase accepted for exported secrets.
pub const MIN_PASSPHRASE_CHARS: usize = 12;
const KDF: &str = "argon2id";

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("the document has {} problem(s)", .0.len())]
    Invalid(Vec<Problem>),
    #[error("workspace {0} has not installed this add-on")]
    NotInstalled(String),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(path: &str, message: impl Into<String>) -> TransferError {
    TransferError::Invalid(vec![Problem::new(path, message)])
}

/// The document. Flows are their definitions (the API's body) with their `id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigDocument {
    pub format: String,
    pub version: u32,
    /// Setting ids and values, as stored (settings never changed keep their defaults and
    /// are left out).
    #[serde(default)]
    pub settings: Map<String, Value>,
    #[serde(default)]
    pub sources: Vec<SourceDocument>,
    #[serde(default)]
    pub flows: Vec<Value>,
    /// Since version 2. Header values are masked; they travel in `secrets`.
    #[serde(default)]
    pub destinations: Vec<DestinationDocument>,
    /// The current secrets, encrypted (only with a passphrase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<EncryptedSecrets>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceDocument {
    pub id: String,
    pub name: String,
}

/// A destination as the API takes it, with its id; header values are [`MASK`] (the real
/// ones travel encrypted in the document's `secrets`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationDocument {
    pub id: String,
    pub name: String,
    pub url: String,
    /// Missing: enabled.
    #[serde(default = "enabled")]
    pub enabled: bool,
    #[serde(default)]
    pub filter: FilterDocument,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn enabled() -> bool {
    true
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterDocument {
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    pub conditions: Value,
}

/// `data` is the XChaCha20-Poly1305 nonce and ciphertext (base64) of a JSON object under the
/// Argon2id key of the passphrase and `salt`. Version 1: each source id mapped to its
/// secret. Version 2: `{"sources": {id: secret}, "destinations": {id: {"secret": …,
/// "headers": {name: value}}}, "flowHeaders": {"flows/ID/ACTION/HEADER": value}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncryptedSecrets {
    pub kdf: String,
    pub salt: String,
    pub data: String,
}

fn passphrase_key(passphrase: &str, salt: &[u8]) -> Result<[u8; 32], String> {
    let mut key = [0u8; 32];
    argon2::Argon2::default()
        .hash_password_into(passphrase.as_bytes(), salt, &mut key)
        .map_err(|e| format!("cannot derive a key from the passphrase: {e}"))?;
    Ok(key)
}

fn check_passphrase(passphrase: &str) -> Result<(), TransferError> {
    if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(invalid(
            "passphrase",
            format!("the passphrase must have at least {MIN_PASSPHRASE_CHARS} characters"),
        ));
    }
    Ok(())
}

fn encrypt(
    secrets: &Map<String, Value>,
    passphrase: &str,
) -> Result<EncryptedSecrets, TransferError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("operating system random source");
    let key = passphrase_key(passphrase, &salt).map_err(|m| invalid("passphrase", m))?;
    let plaintext = serde_json::to_vec(secrets).expect("JSON");
    let sealed = SecretBox::new(&key).seal(&plaintext);
    Ok(EncryptedSecrets {
        kdf: KDF.into(),
        salt: STANDARD.encode(salt),
        data: STANDARD.encode(sealed.as_bytes()),
    })
}

fn decrypt(secrets: &EncryptedSecrets, passphrase: &str) -> Result<Map<String, Value>, Problem> {
    let bad = |m: &str| Problem::new("secrets", m.to_string());
    if secrets.kdf != KDF {
        return Err(bad("secrets.kdf must be argon2id"));
    }
    let salt = STANDARD
        .decode(&secrets.salt)
        .map_err(|_| bad("secrets.salt is not base64"))?;
    let data = STANDARD
        .decode(&secrets.data)
        .map_err(|_| bad("secrets.data is not base64"))?;
    let key = passphrase_key(passphrase, &salt).map_err(|m| bad(&m))?;
    let plaintext = SecretBox::new(&key)
        .open(&Sealed::from_bytes(data))
        .map_err(|_| bad("the passphrase does not decrypt the secrets"))?;
    serde_json::from_slice(&plaintext)
        .map_err(|_| bad("the decrypted secrets are not a JSON object"))
}

/// Where a flow's header value sits among the encrypted secrets (source ids have no `/`).
fn flow_header_key(flow_id: &str, action: &str, header: &str) -> String {
    format!("flows/{flow_id}/{action}/{}", header.to_ascii_lowercase())
}

/// The workspace's configuration as a document; with a passphrase, with its sources'
/// current secrets and its flows' header values encrypted (without one, header values are
/// masked).
pub async fn export(
    app: &App,
    ws: &str,
    passphrase: Option<&str>,
) -> Result<ConfigDocument, TransferError> {
    let installation = app
        .store
        .installation(ws)
        .await?
        .ok_or_else(|| TransferError::NotInstalled(ws.to_string()))?;
    if let Some(passphrase) = passphrase {
        check_passphrase(passphrase)?;
    }
    let settings: Map<String, Value> = installation
        .settings
        .values
        .iter()
        .map(|(id, value)| (id.clone(), value.to_json()))
        .collect();
    let stored_sources = app.store.sources(ws).await?;
    let sources = stored_sources
        .iter()
        .map(|s| SourceDocument {
            id: s.id.clone(),
            name: s.name.clone(),
        })
        .collect();
    let stored_destinations = app.store.destinations(ws).await?;
    let destinations = stored_destinations
        .iter()
        .map(destination_document)
        .collect();
    let stored_flows = app.store.flows(ws).await?;
    let flows = stored_flows
        .iter()
        .map(|flow| {
            let mut definition = model::definition(flow);
            definition["id"] = Value::from(format_id(&flow.id));
            // Ids first, for people reading the file.
            let mut ordered = Map::new();
            ordered.insert("id".into(), definition["id"].take());
            if let Value::Object(rest) = definition {
                ordered.extend(rest.into_iter().filter(|(k, _)| k != "id"));
            }
            Value::Object(ordered)
        })
        .collect();
    let secrets = match passphrase {
        None => None,
        Some(passphrase) => {
            let mut sources = Map::new();
            for source in &stored_sources {
                if let Some(current) = source.secrets.iter().find(|s| s.valid_until.is_none()) {
                    let secret = app.store.secrets().open_str(&current.secret)?;
                    sources.insert(source.id.clone(), Value::from(secret));
                }
            }
            let mut destinations = Map::new();
            for destination in &stored_destinations {
                destinations.insert(
                    format_id(&destination.id),
                    destination_secrets(app, destination)?,
                );
            }
            let mut flow_headers = Map::new();
            for flow in &stored_flows {
                for action in &flow.actions {
                    for (header, sealed) in action.http.iter().flat_map(|c| &c.headers) {
                        let value = app.store.secrets().open_str(sealed)?;
                        flow_headers.insert(
                            flow_header_key(&format_id(&flow.id), &action.name, header),
                            Value::from(value),
                        );
                    }
                }
            }
            let plain = json!({"sources": sources, "destinations": destinations,
                "flowHeaders": flow_headers});
            let Value::Object(plain) = plain else {
                unreachable!("an object")
            };
            Some(encrypt(&plain, passphrase)?)
        }
    };
    Ok(ConfigDocument {
        format: FORMAT.into(),
        version: VERSION,
        settings,
        sources,
        flows,
        destinations,
        secrets,
    })
}

fn destination_document(destination: &Destination) -> DestinationDocument {
    let filter = destinations::filter_json(&destination.filter);
    DestinationDocument {
        id: format_id(&destination.id),
        name: destination.name.clone(),
        url: destination.url.clone(),
        enabled: destination.enabled,
        filter: serde_json::from_value(filter).expect("a filter document"),
        template: destination.template.clone(),
        headers: destinations::masked_headers(destination),
    }
}

/// A destination's current secret and header values, in plain text (to be encrypted).
fn destination_secrets(app: &App, destination: &Destination) -> Result<Value, StoreError> {
    let secret = match destination.secrets.iter().find(|s| s.valid_until.is_none()) {
        Some(current) => Some(app.store.secrets().open_str(&current.secret)?),
        None => None,
    };
    let mut headers = Map::new();
    for (name, sealed) in &destination.headers {
        headers.insert(
            name.clone(),
            Value::from(app.store.secrets().open_str(sealed)?),
        );
    }
    Ok(json!({"secret": secret, "headers": headers}))
}

/// The decrypted secrets of a document: sources' by id, destinations' by id, flow HTTP
/// actions' header values by [`flow_header_key`].
#[derive(Default)]
struct Secrets {
    sources: Map<String, Value>,
    destinations: Map<String, Value>,
    flow_headers: Map<String, Value>,
}

impl Secrets {
    /// Reads the decrypted object as the document's `version` wrote it.
    fn read(version: u32, mut plain: Map<String, Value>) -> Result<Secrets, Problem> {
        if version == 1 {
            return Ok(Secrets {
                sources: plain,
                ..Secrets::default()
            });
        }
        let mut part = |name: &str| match plain.remove(name) {
            None => Ok(Map::new()),
            Some(Value::Object(map)) => Ok(map),
            Some(_) => Err(Problem::new(
                "secrets",
                format!("the decrypted {name} are not a JSON object"),
            )),
        };
        Ok(Secrets {
            sources: part("sources")?,
            destinations: part("destinations")?,
            flow_headers: part("flowHeaders")?,
        })
    }

    /// A destination's secret, when it travelled; a problem when it is not a whsec_ secret.
    fn destination_secret(&self, id: &str) -> Result<Option<String>, Problem> {
        match self.destinations.get(id).map(|d| &d["secret"]) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.starts_with(crate::sources::SECRET_PREFIX) => {
                Ok(Some(s.clone()))
            }
            Some(_) => Err(Problem::new(
                format!("secrets.destinations.{id}.secret"),
                "is not a whsec_ secret",
            )),
        }
    }

    /// The value of a destination's header, when it travelled.
    fn header(&self, id: &str, name: &str) -> Option<String> {
        self.destinations.get(id)?["headers"][name]
            .as_str()
            .map(str::to_string)
    }
}

/// What an import did (or, dry, would do).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    pub dry_run: bool,
    pub flows_created: Vec<String>,
    pub flows_replaced: Vec<String>,
    pub sources_created: Vec<String>,
    pub sources_updated: Vec<String>,
    pub destinations_created: Vec<String>,
    pub destinations_replaced: Vec<String>,
    /// Destinations that came without a secret and were given a new one, shown this once.
    pub new_destination_secrets: Vec<(String, String)>,
    /// Source ids taken by another workspace, and the ids they were given here.
    pub sources_remapped: Vec<(String, String)>,
    /// Sources that came without a secret and were given a new one, shown this once.
    pub new_secrets: Vec<(String, String)>,
    /// Settings that differ from the workspace's and were (or would be) changed.
    pub settings_changed: Vec<String>,
    /// Settings not applied, and why (an import without a user cannot reach Clockify).
    pub settings_skipped: Option<String>,
}

/// Reads a document from JSON, listing what is wrong with its shape.
pub fn parse_document(input: &Value) -> Result<ConfigDocument, TransferError> {
    if input.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(invalid("format", format!("must be \"{FORMAT}\"")));
    }
    match input.get("version").and_then(Value::as_u64) {
        Some(v) if (OLDEST_VERSION as u64..=VERSION as u64).contains(&v) => {}
        Some(v) => {
            return Err(invalid(
                "version",
                format!(
                    "version {v} is not supported (this release reads versions {OLDEST_VERSION} to {VERSION})"
                ),
            ));
        }
        None => return Err(invalid("version", "required")),
    }
    serde_json::from_value(input.clone())
        .map_err(|e| invalid("", format!("not a configuration document: {e}")))
}

fn new_secret_for_import() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("operating system random source");
    format!(
        "{}{}",
        crate::sources::SECRET_PREFIX,
        STANDARD.encode(bytes)
    )
}

/// Checks `document` against workspace `ws` and, unless `dry_run`, applies it. `user` is the
/// admin importing through the API: settings then go through Clockify's settings API like a
/// settings change (an import without one, from the command line, leaves settings as they
/// are and says so).
pub async fn import(
    app: &App,
    ws: &str,
    document: &ConfigDocument,
    passphrase: Option<&str>,
    dry_run: bool,
    user: Option<&User>,
) -> Result<ImportReport, TransferError> {
    let installation = app
        .store
        .installation(ws)
        .await?
        .ok_or_else(|| TransferError::NotInstalled(ws.to_string()))?;
    let mut problems = Vec::new();
    let mut report = ImportReport {
        dry_run,
        ..ImportReport::default()
    };

    if document.version == 1 && !document.destinations.is_empty() {
        problems.push(Problem::new(
            "destinations",
            "version 1 documents have no destinations (export again, or set version 2)",
        ));
    }

    // Secrets.
    let secrets = match (&document.secrets, passphrase) {
        (None, _) => Secrets::default(),
        (Some(_), None) => {
            problems.push(Problem::new(
                "secrets",
                "the document carries encrypted secrets: give the passphrase they were exported with",
            ));
            Secrets::default()
        }
        (Some(encrypted), Some(passphrase)) => decrypt(encrypted, passphrase)
            .and_then(|plain| Secrets::read(document.version, plain))
            .unwrap_or_else(|p| {
                problems.push(p);
                Secrets::default()
            }),
    };

    // Sources: ids kept when free or already this workspace's, else remapped.
    let mut source_ids: HashMap<String, String> = HashMap::new();
    let mut sources = Vec::new();
    for (i, doc) in document.sources.iter().enumerate() {
        let at = format!("sources[{i}]");
        let name = doc.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            problems.push(Problem::new(
                format!("{at}.name"),
                "must be 1 to 100 characters",
            ));
        }
        let id_ok = !doc.id.is_empty()
            && doc.id.len() <= 64
            && doc
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !id_ok {
            problems.push(Problem::new(
                format!("{at}.id"),
                "must be 1 to 64 letters, digits, - or _",
            ));
            continue;
        }
        // A custom source under a built-in id would receive (and let flows run on) what
        // belongs to Clockify or to the server's own notifications.
        if destinations::is_builtin_source(&doc.id) {
            problems.push(Problem::new(
                format!("{at}.id"),
                format!(
                    "{:?} is a built-in source and cannot be a custom source's id",
                    doc.id
                ),
            ));
            continue;
        }
        if source_ids.contains_key(&doc.id) {
            problems.push(Problem::new(format!("{at}.id"), "appears twice"));
            continue;
        }
        let existing = app.store.source(&doc.id).await?;
        let secret = match secrets.sources.get(&doc.id) {
            Some(Value::String(s)) if s.starts_with(crate::sources::SECRET_PREFIX) => {
                Some(s.clone())
            }
            Some(_) => {
                problems.push(Problem::new(
                    format!("secrets.{}", doc.id),
                    "is not a whsec_ secret",
                ));
                None
            }
            None => None,
        };
        let now = now_ms();
        let source = match existing {
            Some(mut source) if source.workspace_id == ws => {
                source.name = name.to_string();
                if let Some(secret) = &secret {
                    source.secrets = vec![SourceSecret {
                        secret: app.store.secrets().seal_str(secret),
                        valid_until: None,
                    }];
                    source.rotated_at = Some(now);
                }
                report.sources_updated.push(source.id.clone());
                source
            }
            other => {
                let id = match other {
                    Some(_) => {
                        let id = uuid::Uuid::now_v7().simple().to_string();
                        report.sources_remapped.push((doc.id.clone(), id.clone()));
                        id
                    }
                    None => doc.id.clone(),
                };
                let secret = secret.unwrap_or_else(|| {
                    let fresh = new_secret_for_import();
                    report.new_secrets.push((id.clone(), fresh.clone()));
                    fresh
                });
                report.sources_created.push(id.clone());
                Source {
                    id,
                    workspace_id: ws.to_string(),
                    name: name.to_string(),
                    secrets: vec![SourceSecret {
                        secret: app.store.secrets().seal_str(&secret),
                        valid_until: None,
                    }],
                    created_at: now,
                    rotated_at: None,
                }
            }
        };
        source_ids.insert(doc.id.clone(), source.id.clone());
        sources.push(source);
    }
    let workspace_sources: Vec<String> = app
        .store
        .sources(ws)
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect();

    // Flows: checked exactly like a save, with the document's sources known.
    let mut flows = Vec::new();
    let mut flow_ids = HashMap::new();
    for (i, input) in document.flows.iter().enumerate() {
        let at = format!("flows[{i}]");
        let mut input = input.clone();
        let id = match input.get("id").and_then(Value::as_str).map(parse_id) {
            Some(Some(id)) => id,
            None => crate::store::new_id(),
            Some(None) => {
                problems.push(Problem::new(format!("{at}.id"), "is not a flow id"));
                continue;
            }
        };
        if flow_ids.insert(id, i).is_some() {
            problems.push(Problem::new(format!("{at}.id"), "appears twice"));
            continue;
        }
        // The trigger follows a remapped source.
        let mapped = model::trigger_source(&input).and_then(|s| source_ids.get(s).cloned());
        if let Some(mapped) = mapped {
            input["trigger"]["source"] = Value::from(mapped);
        }
        let custom_source = match model::trigger_source(&input) {
            Some(source) if source != CLOCKIFY_SOURCE => Some(
                source_ids.values().any(|id| id == source)
                    || workspace_sources.iter().any(|id| id == source),
            ),
            _ => None,
        };
        let known = Known {
            custom_source,
            allowed_hosts: AllowedHosts::new(&app.config.allow_destination_hosts),
        };
        let existing = app.store.flow(ws, id).await?;
        let doc_id = input
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let parsed = model::parse(&input, &known).and_then(|mut spec| {
            spec.seal_headers(app.store.secrets(), existing.as_ref(), |action, header| {
                secrets
                    .flow_headers
                    .get(&flow_header_key(&doc_id, action, header))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .map(|()| spec)
        });
        match parsed {
            Err(texts) => {
                for p in problem::from_texts(texts) {
                    let path = if p.path.is_empty() {
                        at.clone()
                    } else {
                        format!("{at}.{}", p.path)
                    };
                    problems.push(Problem::new(path, p.message));
                }
            }
            Ok(spec) => {
                let now = now_ms();
                let (created_at, replaced) = match &existing {
                    Some(flow) => (flow.created_at, true),
                    None => (now, false),
                };
                if replaced {
                    report.flows_replaced.push(format_id(&id));
                } else {
                    report.flows_created.push(format_id(&id));
                }
                flows.push(spec.into_flow(id, ws, created_at, now));
            }
        }
    }

    // Destinations: checked like a save; their source follows a remapped one.
    let mut imported_destinations = Vec::new();
    let mut destination_ids = HashMap::new();
    for (i, doc) in document.destinations.iter().enumerate() {
        let at = format!("destinations[{i}]");
        let Some(id) = parse_id(&doc.id) else {
            problems.push(Problem::new(format!("{at}.id"), "is not a destination id"));
            continue;
        };
        if destination_ids.insert(id, i).is_some() {
            problems.push(Problem::new(format!("{at}.id"), "appears twice"));
            continue;
        }
        let source = doc
            .filter
            .source
            .as_ref()
            .map(|s| source_ids.get(s).cloned().unwrap_or_else(|| s.clone()));
        let source_known = match source.as_deref() {
            Some(source) if !destinations::is_builtin_source(source) => {
                source_ids.values().any(|id| id == source)
                    || workspace_sources.iter().any(|id| id == source)
            }
            _ => true,
        };
        let existing = app.store.destination(ws, id).await?;
        let secret = secrets.destination_secret(&doc.id).unwrap_or_else(|p| {
            problems.push(p);
            None
        });
        // Header values: from the secrets, else as written (a hand-written document may
        // carry them); a masked one keeps the value the destination has here.
        let mut headers = BTreeMap::new();
        for (name, value) in &doc.headers {
            let value = secrets
                .header(&doc.id, name)
                .unwrap_or_else(|| value.clone());
            let kept = existing
                .as_ref()
                .is_some_and(|d| d.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)));
            if value == MASK && !kept {
                problems.push(Problem::new(
                    format!("{at}.headers.{name}"),
                    "the value is not in the document: export with a passphrase (--with-secrets), or write the value here",
                ));
            }
            headers.insert(name.clone(), value);
        }
        let spec = destinations::Spec {
            name: doc.name.clone(),
            url: doc.url.clone(),
            enabled: Some(doc.enabled),
            source,
            events: doc.filter.events.clone(),
            conditions: doc.filter.conditions.clone(),
            template: doc.template.clone(),
            headers,
        };
        match destinations::check_spec(app, &spec, source_known) {
            Err(found) => problems.extend(
                found
                    .into_iter()
                    .map(|p| Problem::new(format!("{at}.{}", p.path), p.message)),
            ),
            Ok(conditions) => {
                let replaced = existing.is_some();
                let (destination, made) = destinations::imported(
                    app,
                    ws,
                    id,
                    spec,
                    conditions,
                    secret.as_deref(),
                    existing,
                );
                let id = format_id(&id);
                if replaced {
                    report.destinations_replaced.push(id.clone());
                } else {
                    report.destinations_created.push(id.clone());
                }
                if let Some(made) = made {
                    report.new_destination_secrets.push((id, made));
                }
                imported_destinations.push(destination);
            }
        }
    }

    // Settings: only those that differ from the workspace's.
    let current = settings::current(&installation);
    let changes: Map<String, Value> = document
        .settings
        .iter()
        .filter(|(id, value)| current.get(*id) != Some(value))
        .map(|(id, value)| (id.clone(), value.clone()))
        .collect();
    problems.extend(settings::problems(&changes, "settings."));
    report.settings_changed = changes.keys().cloned().collect();

    if !problems.is_empty() {
        return Err(TransferError::Invalid(problems));
    }
    if user.is_none() && !changes.is_empty() {
        report.settings_skipped = Some(
            "settings are kept by Clockify: import through the API (POST /api/config/import) or change them in Clockify's settings form".into(),
        );
        report.settings_changed.clear();
    }
    if dry_run {
        return Ok(report);
    }
    // Clockify first: if it refuses the settings, nothing has been written here.
    match user {
        Some(user) if !changes.is_empty() => {
            settings::patch(app, user, changes).await?;
        }
        _ => {}
    }
    if !app
        .store
        .import_config(ws, sources, flows, imported_destinations)
        .await?
    {
        return Err(TransferError::NotInstalled(ws.to_string()));
    }
    metrics::counter!("config_imports_total").increment(1);
    Ok(report)
}

/// What the audit log keeps of an import: the counts and ids, never a secret.
pub fn audit_summary(report: &ImportReport) -> Value {
    json!({
        "flowsCreated": report.flows_created,
        "flowsReplaced": report.flows_replaced,
        "sourcesCreated": report.sources_created,
        "sourcesUpdated": report.sources_updated,
        "sourcesRemapped": report.sources_remapped,
        "destinationsCreated": report.destinations_created,
        "destinationsReplaced": report.destinations_replaced,
        "settingsChanged": report.settings_changed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        let Value::Object(map) = value else {
            panic!("an object")
        };
        map
    }

    #[test]
    fn secrets_are_read_as_their_version_wrote_them() {
        // Version 1: source ids to secrets, nothing else.
        let v1 = Secrets::read(1, object(json!({"shop": "whsec_a"}))).unwrap();
        assert_eq!(v1.sources["shop"], "whsec_a");
        assert!(v1.destinations.is_empty());
        // Version 2: sources and destinations apart.
        let v2 = Secrets::read(
            2,
            object(json!({"sources": {"shop": "whsec_a"},
                "destinations": {"d1": {"secret": "whsec_b", "headers": {"X-Key": "k"}}}})),
        )
        .unwrap();
        assert_eq!(v2.sources["shop"], "whsec_a");
        assert_eq!(
            v2.destination_secret("d1").unwrap().as_deref(),
            Some("whsec_b")
        );
        assert_eq!(v2.header("d1", "X-Key").as_deref(), Some("k"));
        assert_eq!(v2.header("d1", "Other"), None);
        assert_eq!(v2.destination_secret("d2").unwrap(), None);
        let bad = Secrets::read(
            2,
            object(json!({"destinations": {"d1": {"secret": "nope"}}})),
        )
        .unwrap();
        assert!(bad.destination_secret("d1").is_err());
        assert!(Secrets::read(2, object(json!({"sources": []}))).is_err());
    }
}
