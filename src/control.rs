//! The operators' control channel. redb lets one process write the data file, so commands
//! that need it while a server runs (`erase-workspace`, `export`, `import`, `workspaces`)
//! are sent to that server: it listens
//! on a Unix socket in the data directory ([`SOCKET_NAME`], mode 0600, and only its own user
//! may connect). One JSON request per connection, one JSON reply; the command runs the same
//! store function the CLI runs on a file no server holds.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::app::App;
use crate::audit::{self, Actor, Change};
use crate::overview::WorkspaceSummary;
use crate::store::TableCounts;
use crate::transfer::{self, ConfigDocument, ImportReport};

/// The socket's file name inside the data directory.
pub const SOCKET_NAME: &str = "control.sock";
/// Rows erased per write transaction.
pub const ERASE_BATCH: usize = 256;
/// The most a request may take to arrive, and its largest size.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// (An import carries its whole document.)
const MAX_REQUEST: u64 = 32 * 1024 * 1024;

/// A command for the running server.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Command {
    /// Everything stored for a workspace, per table; erased unless `dry_run`.
    #[serde(rename_all = "camelCase")]
    EraseWorkspace { workspace_id: String, dry_run: bool },
    /// The workspace's configuration document (with secrets when a passphrase is given).
    #[serde(rename_all = "camelCase")]
    ExportConfig {
        workspace_id: String,
        passphrase: Option<String>,
    },
    /// Checks and (unless `dry_run`) applies a configuration document.
    #[serde(rename_all = "camelCase")]
    ImportConfig {
        workspace_id: String,
        document: serde_json::Value,
        passphrase: Option<String>,
        dry_run: bool,
    },
    /// Every installation with its counts.
    Workspaces,
}

/// The server's answer: an error, or what the command did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reply {
    pub error: Option<String>,
    /// Rows per table (`erase-workspace`).
    pub tables: Option<TableCounts>,
    /// `export`.
    pub document: Option<ConfigDocument>,
    /// `import`.
    pub import: Option<ImportReport>,
    /// `import` refused the document: every problem, as `path: message`.
    pub problems: Option<Vec<String>>,
    /// `workspaces`.
    pub workspaces: Option<Vec<WorkspaceSummary>>,
}

fn failed(error: impl std::fmt::Display) -> Reply {
    Reply {
        error: Some(error.to_string()),
        ..Reply::default()
    }
}

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// Binds the data directory's control socket; the future returned serves it until shutdown. Without one (a path too
/// long for a socket, say) the server still runs, and says so: commands then need it stopped.
pub async fn start(app: App) -> Option<impl Future<Output = ()> + Send + 'static> {
    let path = socket_path(&app.config.data_dir);
    match bind(&path) {
        Ok((listener, uid)) => Some(serve(app, listener, path, uid)),
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "no control socket: erase-workspace needs the server stopped");
            None
        }
    }
}

/// Binds the socket under a temporary name, makes it 0600, then moves it into place, so it
/// is never reachable with looser permissions. Returns the listener and the owner's uid.
fn bind(path: &Path) -> std::io::Result<(UnixListener, u32)> {
    // A socket left by a server that did not stop cleanly: this process holds the data file,
    // so no other server is using it.
    let _ = std::fs::remove_file(path);
    let temporary = path.with_extension(format!("sock.{}", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let listener = std::os::unix::net::UnixListener::bind(&temporary)?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&temporary, path)?;
    let uid = std::fs::metadata(path)?.uid();
    listener.set_nonblocking(true)?;
    Ok((UnixListener::from_std(listener)?, uid))
}

async fn serve(app: App, listener: UnixListener, path: PathBuf, uid: u32) {
    let mut shutdown = app.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let app = app.clone();
                tokio::spawn(async move {
                    if let Err(err) = handle(&app, stream, uid).await {
                        tracing::warn!(error = %err, "control request failed");
                    }
                });
            }
            Err(err) => {
                tracing::warn!(error = %err, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

async fn handle(app: &App, stream: UnixStream, uid: u32) -> std::io::Result<()> {
    let peer = stream.peer_cred()?.uid();
    let (reader, mut writer) = stream.into_split();
    let reply = if peer != uid && peer != 0 {
        Reply {
            error: Some(format!(
                "uid {peer} may not use this server's control socket"
            )),
            ..Reply::default()
        }
    } else {
        let mut line = String::new();
        let mut limited = BufReader::new(tokio::io::AsyncReadExt::take(reader, MAX_REQUEST));
        match tokio::time::timeout(REQUEST_TIMEOUT, limited.read_line(&mut line)).await {
            Ok(Ok(_)) => match serde_json::from_str::<Command>(&line) {
                Ok(command) => run(app, command).await,
                Err(err) => Reply {
                    error: Some(format!("not a command: {err}")),
                    ..Reply::default()
                },
            },
            Ok(Err(err)) => return Err(err),
            Err(_) => Reply {
                error: Some("no request within 10 s".into()),
                ..Reply::default()
            },
        }
    };
    let mut bytes = serde_json::to_vec(&reply).expect("replies serialize");
    bytes.push(b'\n');
    writer.write_all(&bytes).await?;
    writer.shutdown().await
}

/// Runs a command on the server's own store.
pub async fn run(app: &App, command: Command) -> Reply {
    match command {
        Command::EraseWorkspace {
            workspace_id,
            dry_run,
        } => {
            let result = if dry_run {
                app.store.workspace_rows(&workspace_id).await
            } else {
                app.store.erase_workspace(&workspace_id, ERASE_BATCH).await
            };
            match result {
                Ok(tables) => {
                    let rows: u64 = tables.iter().map(|(_, n)| n).sum();
                    tracing::info!(workspace_id = %workspace_id, dry_run, rows, "erase-workspace (control socket)");
                    Reply {
                        tables: Some(tables),
                        ..Reply::default()
                    }
                }
                Err(err) => failed(err),
            }
        }
        Command::ExportConfig {
            workspace_id,
            passphrase,
        } => match transfer::export(app, &workspace_id, passphrase.as_deref()).await {
            Ok(document) => Reply {
                document: Some(document),
                ..Reply::default()
            },
            Err(err) => failed(err),
        },
        Command::ImportConfig {
            workspace_id,
            document,
            passphrase,
            dry_run,
        } => {
            let parsed = transfer::parse_document(&document);
            let result = match parsed {
                Ok(document) => {
                    transfer::import(
                        app,
                        &workspace_id,
                        &document,
                        passphrase.as_deref(),
                        dry_run,
                        None,
                    )
                    .await
                }
                Err(err) => Err(err),
            };
            match result {
                Ok(report) => {
                    if !dry_run {
                        let actor = Actor::operator("import (command line)");
                        let change = Change {
                            action: "config.import",
                            target: None,
                            before: None,
                            after: Some(transfer::audit_summary(&report)),
                        };
                        audit::record(app, &workspace_id, &actor, change).await;
                    }
                    Reply {
                        import: Some(report),
                        ..Reply::default()
                    }
                }
                Err(transfer::TransferError::Invalid(problems)) => Reply {
                    error: Some(format!("the document has {} problem(s)", problems.len())),
                    problems: Some(problems.iter().map(ToString::to_string).collect()),
                    ..Reply::default()
                },
                Err(err) => failed(err),
            }
        }
        Command::Workspaces => match crate::overview::workspaces(app).await {
            Ok(workspaces) => Reply {
                workspaces: Some(workspaces),
                ..Reply::default()
            },
            Err(err) => failed(err),
        },
    }
}

/// Sends `command` to the server holding `data_dir`'s file and waits for its reply (the CLI
/// side; blocking).
pub fn request(data_dir: &Path, command: &Command) -> Result<Reply, String> {
    use std::io::{Read, Write};
    let path = socket_path(data_dir);
    let mut stream = std::os::unix::net::UnixStream::connect(&path)
        .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
    let mut bytes = serde_json::to_vec(command).expect("commands serialize");
    bytes.push(b'\n');
    stream
        .write_all(&bytes)
        .map_err(|e| format!("cannot send the command: {e}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("no reply from the server: {e}"))?;
    serde_json::from_str(&answer).map_err(|e| format!("unreadable reply {answer:?}: {e}"))
}
