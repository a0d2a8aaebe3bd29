//! Command line: `serve` (default), `manifest` / `--print-manifest`, `backup`, `check`,
//! `compact`, `erase-workspace`, the operator's toolkit (`export`, `import`, `rotate-key`,
//! `workspaces`, `stats`), and the hidden `generate` (man pages and shell completions, for
//! packagers).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use clockify_studio::config::{
    Config, DataDirArgs, KeyFileArgs, LogFormat, ManifestArgs, ServeArgs,
};
use clockify_studio::{control, manifest, server, store};

/// jemalloc instead of glibc's malloc, which took about a fifth of the server's CPU in
/// `cargo bench --bench ingest` (README, design notes).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main` (a `MALLOC_CONF`-style string; the environment
/// variable `_RJEM_MALLOC_CONF` overrides it): two arenas instead of four per core, and freed
/// pages returned to the system after half a second instead of ten, to keep RSS down.
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: &u8 = &b"narenas:2,dirty_decay_ms:500,muzzy_decay_ms:0\0"[0];

#[derive(Parser)]
#[command(
    name = "clockify-studio",
    version,
    about = "Self-hosted Clockify add-on: webhook log, API explorer, no-code flows",
    after_help = "Every flag of serve can also be set by its CLOCKIFY_STUDIO_* environment \
                  variable (a flag beats its variable). The Debian package reads them from \
                  /etc/clockify-studio/clockify-studio.env. Documentation: README.md and docs/ \
                  in the source."
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    /// Print the manifest JSON and exit (same as the `manifest` subcommand)
    #[arg(long)]
    print_manifest: bool,
    #[command(subcommand)]
    command: Option<Command>,
    /// Flags of `serve`, which runs when no subcommand is given
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default)
    Serve(Box<ServeArgs>),
    /// Print the manifest JSON (with --base-url / --addon-key applied) and exit
    Manifest(ManifestArgs),
    /// Write a consistent copy of the data file; safe while the server runs
    Backup {
        /// Where to write the copy
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        #[command(flatten)]
        data: DataDirArgs,
    },
    /// Open the data file, verify integrity and schema version, print counts per table
    Check {
        /// Also count this workspace's rows per table
        #[arg(long, value_name = "ID")]
        workspace: Option<String>,
        #[command(flatten)]
        data: DataDirArgs,
    },
    /// Give the data file's free pages back to the file system (stop the server first)
    Compact {
        #[command(flatten)]
        data: DataDirArgs,
    },
    /// Erase everything stored for a workspace (data-subject requests); works while the
    /// server runs, through its control socket
    EraseWorkspace {
        /// The Clockify workspace id
        #[arg(value_name = "ID")]
        workspace: String,
        /// Only count what would be erased
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        data: DataDirArgs,
    },
    /// Write a workspace's configuration (flows, custom sources, settings) as one JSON
    /// document; works while the server runs, through its control socket
    #[command(
        after_help = "Exit status: 0 written; 1 failure (no data file, workspace not \
                            installed, wrong key, server unreachable); 2 bad flags."
    )]
    Export {
        /// The Clockify workspace id
        #[arg(long, value_name = "ID")]
        workspace: String,
        /// Include the custom sources' secrets, encrypted with the passphrase read from
        /// --passphrase-file
        #[arg(long, requires = "passphrase_file")]
        with_secrets: bool,
        /// File holding the passphrase (its first line; at least 12 characters)
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// Write the document here instead of to standard output
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        data: DataDirArgs,
        #[command(flatten)]
        key: KeyFileArgs,
    },
    /// Check a configuration document against a workspace and apply it in one transaction
    /// (exit 3 when the document has problems: nothing is changed); works while the server
    /// runs, through its control socket
    #[command(
        after_help = "Exit status: 0 imported (or checked, with --dry-run); 1 failure \
                            (no data file, wrong key, server unreachable); 2 bad flags; 3 the \
                            document has problems, each printed, and nothing was changed."
    )]
    Import {
        /// The document, from `export` or GET /api/config/export
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The Clockify workspace id to import into
        #[arg(long, value_name = "ID")]
        workspace: String,
        /// Only check the document and list what would change
        #[arg(long)]
        dry_run: bool,
        /// File holding the export's passphrase (needed when the document carries secrets)
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// Destination host that may use plain http or an internal address, as the server's
        /// flag (for an import on a stopped server's file; a running server uses its own)
        #[arg(long, env = "CLOCKIFY_STUDIO_ALLOW_DESTINATION_HOST", value_delimiter = ',',
              value_name = "HOST[:PORT]", value_parser = clockify_studio::config::parse_host)]
        allow_destination_host: Vec<String>,
        #[command(flatten)]
        data: DataDirArgs,
        #[command(flatten)]
        key: KeyFileArgs,
    },
    /// Re-seal every stored secret with a new encryption key in one transaction, then install
    /// that key in the key file; the old key stops working. Needs the server stopped
    #[command(
        after_help = "Exit status: 0 rotated; 1 failure (a server holds the file, the \
                            current key does not match, damaged file); 2 bad flags or the new \
                            key equals the current one."
    )]
    RotateKey {
        /// The new key (64 hex characters); created with a fresh random key if missing
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
        #[command(flatten)]
        data: DataDirArgs,
        #[command(flatten)]
        key: KeyFileArgs,
    },
    /// List every installation: status, events stored, last event, flows, share of the data;
    /// works while the server runs, through its control socket
    #[command(
        after_help = "Exit status: 0 listed; 1 failure (no data file, wrong key, server \
                            unreachable); 2 bad flags."
    )]
    Workspaces {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataDirArgs,
        #[command(flatten)]
        key: KeyFileArgs,
    },
    /// Statistics of the whole data file: rows per table, pages used and free, oldest event
    #[command(
        after_help = "Exit status: 0 printed; 1 failure (no data file, damaged or newer \
                            file); 2 bad flags. Page statistics need the server stopped."
    )]
    Stats {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataDirArgs,
    },
    /// Write the man pages (DIR/man) and bash, zsh and fish completions (DIR/completions)
    #[command(hide = true)]
    Generate {
        /// Directory to write into (created if missing)
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version print as usual; a bad flag is one line naming it (exit code 2).
        Err(err) if !err.use_stderr() => err.exit(),
        Err(err) => {
            let rendered = err.render().to_string();
            let first = rendered
                .lines()
                .next()
                .unwrap_or("error: invalid arguments");
            eprintln!("{first}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        None if cli.print_manifest => print_manifest(&cli.serve.manifest),
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(*args),
        Some(Command::Manifest(args)) => print_manifest(&args),
        Some(Command::Backup { to, data }) => backup(&data, &to),
        Some(Command::Check { data, workspace }) => check(&data, workspace.as_deref()),
        Some(Command::Compact { data }) => compact(&data),
        Some(Command::EraseWorkspace {
            workspace,
            dry_run,
            data,
        }) => erase_workspace(&data, &workspace, dry_run),
        Some(Command::Export {
            workspace,
            with_secrets,
            passphrase_file,
            out,
            data,
            key,
        }) => export(
            &data,
            &key,
            &workspace,
            passphrase_file.as_deref().filter(|_| with_secrets),
            out.as_deref(),
        ),
        Some(Command::Import {
            file,
            workspace,
            dry_run,
            passphrase_file,
            allow_destination_host,
            data,
            key,
        }) => import(
            &data,
            &key,
            &file,
            &workspace,
            dry_run,
            passphrase_file.as_deref(),
            allow_destination_host,
        ),
        Some(Command::RotateKey {
            new_key_file,
            data,
            key,
        }) => rotate_key(&data, &key, &new_key_file),
        Some(Command::Workspaces { json, data, key }) => workspaces(&data, &key, json),
        Some(Command::Stats { json, data }) => stats(&data, json),
        Some(Command::Generate { out_dir }) => generate(&out_dir),
    }
}

/// Man pages and completions come from the clap definitions above, so they cannot drift
/// from the flags. A subcommand of the binary rather than a build script: the build script
/// would need the CLI (and the config parsers behind it) outside the crate.
fn generate(out_dir: &Path) -> ExitCode {
    match write_man_pages_and_completions(out_dir) {
        Ok(files) => {
            for file in files {
                println!("{}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: cannot write into {}: {err}", out_dir.display());
            ExitCode::FAILURE
        }
    }
}

fn write_man_pages_and_completions(out_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    use clap_complete::Shell;
    let man_dir = out_dir.join("man");
    let completions_dir = out_dir.join("completions");
    std::fs::create_dir_all(&man_dir)?;
    std::fs::create_dir_all(&completions_dir)?;
    // One page per visible subcommand, and the command's own page listing them all.
    clap_mangen::generate_to(Cli::command(), &man_dir)?;
    std::fs::write(man_dir.join("clockify-studio.1"), main_man_page()?)?;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&man_dir)? {
        files.push(entry?.path());
    }
    files.sort();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        files.push(clap_complete::generate_to(
            shell,
            &mut Cli::command(),
            "clockify-studio",
            &completions_dir,
        )?);
    }
    Ok(files)
}

/// clap_mangen's page for the command, with ENVIRONMENT, FILES and SEE ALSO sections in
/// place of the `--help` epilogue.
fn main_man_page() -> std::io::Result<Vec<u8>> {
    use clap_mangen::roff::{Roff, bold, italic, roman};
    let man = clap_mangen::Man::new(Cli::command().disable_help_subcommand(true));
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    let mut more = Roff::new();
    more.control("SH", ["ENVIRONMENT"]);
    more.text([
        roman("Every flag of "),
        bold("serve"),
        roman(" has a "),
        bold("CLOCKIFY_STUDIO_*"),
        roman(
            " environment variable, named under OPTIONS. A flag beats its variable, \
               and the variable beats the default.",
        ),
    ]);
    more.control("SH", ["FILES"]);
    for (path, what) in [
        (
            "/etc/clockify-studio/clockify-studio.env",
            "The service's environment file (mode 0600): set CLOCKIFY_STUDIO_BASE_URL here \
             before enabling the service.",
        ),
        (
            "/var/lib/clockify-studio",
            "The service's data directory (systemd StateDirectory=): the data file \
             clockify-studio.redb and its encryption key secret.key (back them up together), \
             and while the server runs its control socket control.sock, through which \
             erase-workspace reaches it.",
        ),
        (
            "/usr/lib/systemd/system/clockify-studio.service",
            "The hardened systemd unit (/lib/systemd/system is the same directory on Debian). \
             Installing the package neither enables nor starts it.",
        ),
    ] {
        more.control("TP", []);
        more.text([italic(path)]);
        more.text([roman(what)]);
    }
    more.control("SH", ["SEE ALSO"]);
    more.text([
        bold("clockify-studio-serve"),
        roman("(1), "),
        bold("clockify-studio-manifest"),
        roman("(1), "),
        bold("clockify-studio-backup"),
        roman("(1), "),
        bold("clockify-studio-check"),
        roman("(1), "),
        bold("clockify-studio-erase-workspace"),
        roman("(1), "),
        bold("clockify-studio-export"),
        roman("(1), "),
        bold("clockify-studio-import"),
        roman("(1), "),
        bold("clockify-studio-rotate-key"),
        roman("(1), "),
        bold("clockify-studio-workspaces"),
        roman("(1), "),
        bold("clockify-studio-stats"),
        roman("(1), "),
        bold("systemctl"),
        roman("(1), "),
        bold("journalctl"),
        roman("(1). README.md and docs/ in the source, also in "),
        italic("/usr/share/doc/clockify-studio"),
        roman(" when installed from the Debian package."),
    ]);
    more.to_writer(&mut page)?;
    man.render_version_section(&mut page)?;
    Ok(page)
}

fn print_manifest(args: &ManifestArgs) -> ExitCode {
    use std::io::Write;
    let bytes = manifest::render(&args.base_url, &args.addon_key);
    match std::io::stdout().write_all(&bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// Usage problems exit 2, like clap's own.
fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

fn serve(args: ServeArgs) -> ExitCode {
    let config = match Config::from_args(&args) {
        Ok(config) => config,
        Err(err) => return usage_error(err),
    };
    let _log_guard = match init_logging(&args) {
        Ok(guard) => guard,
        Err(err) => return usage_error(err),
    };
    clockify_studio::telemetry::install_panic_hook();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| server::StartError::Config {
                flag: "--listen",
                message: format!("cannot listen on {}: {e}", config.listen),
            })?;
        server::launch(config, listener, shutdown_signal()).await
    });
    // A blocking call still under way (a Clockify call waiting on its own timeout) must not
    // hold the exit past the stop budget.
    runtime.shutdown_timeout(RUNTIME_STOP_TIMEOUT);
    // Printed once: on stderr, and in the log only when the log is a file (stdout and stderr
    // both go to the journal under systemd).
    let log_to_file = args.log_dir.is_some();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(server::StartError::Config { flag, message }) => {
            if log_to_file {
                tracing::error!(flag, %message, "cannot start");
            }
            usage_error(format!("{flag}: {message}"))
        }
        Err(err) => {
            if log_to_file {
                tracing::error!(error = %err, "cannot start");
            }
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// How long the runtime waits for blocking work at exit.
const RUNTIME_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown signal received");
}

fn init_logging(
    args: &ServeArgs,
) -> Result<Option<tracing_appender::non_blocking::WorkerGuard>, String> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&args.log_level).map_err(|e| format!("--log-level: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match &args.log_dir {
        None => {
            match args.log_format {
                LogFormat::Json => builder.json().flatten_event(true).init(),
                LogFormat::Text => builder.init(),
            }
            Ok(None)
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("--log-dir: cannot create {}: {e}", dir.display()))?;
            let appender = tracing_appender::rolling::daily(dir, "clockify-studio.log");
            // lossy(false): block rather than drop lines when the disk is slow.
            let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .lossy(false)
                .finish(appender);
            let builder = builder.with_writer(writer).with_ansi(false);
            match args.log_format {
                LogFormat::Json => builder.json().flatten_event(true).init(),
                LogFormat::Text => builder.init(),
            }
            Ok(Some(guard))
        }
    }
}

fn backup(data: &DataDirArgs, to: &std::path::Path) -> ExitCode {
    match store::backup(&data.data_file(), to) {
        Ok(records) => {
            println!(
                "wrote a consistent copy of {} to {} ({records} records); keep the encryption key file (secret.key) with it",
                data.data_file().display(),
                to.display()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!(
                "error: backup of {} failed: {err}",
                data.data_file().display()
            );
            ExitCode::FAILURE
        }
    }
}

fn compact(data: &DataDirArgs) -> ExitCode {
    let path = data.data_file();
    match store::compact(&path) {
        Ok((before, after)) => {
            println!(
                "compacted {}: {before} bytes before, {after} after",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(store::StoreError::InUse) => {
            eprintln!(
                "error: a server holds {}; stop it first (compaction needs the file alone)",
                path.display()
            );
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("error: {}: {err}", path.display());
            ExitCode::FAILURE
        }
    }
}

fn check(data: &DataDirArgs, workspace: Option<&str>) -> ExitCode {
    let path = data.data_file();
    match store::check(&path, workspace) {
        Ok(report) => {
            println!("data file: {} ({} bytes)", path.display(), report.file_size);
            println!(
                "schema version: {} (this binary: {})",
                report.schema_version,
                store::SCHEMA_VERSION
            );
            match report.integrity_verified {
                Some(true) => println!("integrity: ok"),
                Some(false) => println!("integrity: repaired (the file was not closed cleanly)"),
                None => println!(
                    "integrity: every table read back (the server holds the file; stop it for a full check)"
                ),
            }
            for (table, count) in &report.tables {
                println!("table {table}: {count}");
            }
            if let Some(pages) = report.pages {
                println!(
                    "pages: {} used, {} free ({} bytes each; free pages are reused, `compact` returns them)",
                    pages.used, pages.free, pages.page_size
                );
            }
            if let (Some(ws), Some(counts)) = (workspace, &report.workspace) {
                for (table, count) in counts {
                    println!("workspace {ws} table {table}: {count}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {}: {err}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// Erases (or with `dry_run` counts) a workspace's rows: on the file itself when no server
/// holds it, else through the running server's control socket. Both run the same store code.
fn erase_workspace(data: &DataDirArgs, workspace: &str, dry_run: bool) -> ExitCode {
    let path = data.data_file();
    let direct = store::erase_workspace_file(&path, workspace, dry_run, control::ERASE_BATCH);
    let (counts, via) = match direct {
        Ok(erasure) => (erasure.counts, "the data file"),
        Err(store::StoreError::InUse) => {
            let command = control::Command::EraseWorkspace {
                workspace_id: workspace.to_string(),
                dry_run,
            };
            match control::request(&data.data_dir, &command) {
                Ok(control::Reply {
                    error: None,
                    tables: Some(tables),
                    ..
                }) => (tables, "the running server"),
                Ok(reply) => {
                    let error = reply.error.unwrap_or_else(|| "no answer".into());
                    eprintln!("error: the running server could not erase {workspace}: {error}");
                    return ExitCode::FAILURE;
                }
                Err(err) => {
                    eprintln!(
                        "error: a server holds {} and its control socket failed ({err}); stop the server or check that it runs as this user",
                        path.display()
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
        Err(err) => {
            eprintln!("error: {}: {err}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let rows: u64 = counts.iter().map(|(_, n)| n).sum();
    if dry_run {
        println!(
            "dry run: workspace {workspace} has {rows} rows in {} (via {via}); nothing was erased",
            path.display()
        );
    } else {
        println!(
            "erased workspace {workspace}: {rows} rows from {} (via {via})",
            path.display()
        );
    }
    for (table, count) in &counts {
        println!("table {table}: {count}");
    }
    ExitCode::SUCCESS
}

/// Runs a control command on the data file when no server holds it (opening it like the
/// server does, with the encryption key), else sends it to the running server. Returns the
/// reply and which of the two answered.
/// `allow_destination_hosts`: as the server's flag, for a command on the file.
fn on_file_or_server(
    data: &DataDirArgs,
    key: &KeyFileArgs,
    command: control::Command,
    allow_destination_hosts: Vec<String>,
) -> Result<(control::Reply, &'static str), String> {
    use clockify_studio::app::{App, StartError};
    let path = data.data_file();
    if !path.exists() {
        return Err(format!("{} does not exist", path.display()));
    }
    let key_file = key.key_file(data);
    // The server would create a missing key; a command must not.
    store::read_key(&key_file).map_err(|e| format!("--encryption-key-file: {e}"))?;
    let mut config = Config::for_data_dir(&data.data_dir);
    config.encryption_key_file = key_file;
    config.allow_destination_hosts = allow_destination_hosts;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    match App::open(config) {
        Ok(app) => {
            let reply = runtime.block_on(control::run(&app, command));
            app.store.shutdown();
            Ok((reply, "the data file"))
        }
        Err(StartError::Store {
            source: store::StoreError::InUse,
            ..
        }) => control::request(&data.data_dir, &command)
            .map(|reply| (reply, "the running server"))
            .map_err(|err| {
                format!(
                    "a server holds {} and its control socket failed ({err}); stop the server or check that it runs as this user",
                    path.display()
                )
            }),
        Err(err) => Err(err.to_string()),
    }
}

/// The part of a reply a command wants (`take`), or its error printed and exit code 1.
fn answered<T>(
    answer: Result<(control::Reply, &'static str), String>,
    take: impl FnOnce(&mut control::Reply) -> Option<T>,
) -> Result<T, ExitCode> {
    let error = match answer {
        Ok((mut reply, _)) => match take(&mut reply) {
            Some(part) => return Ok(part),
            None => reply.error.unwrap_or_else(|| "no answer".into()),
        },
        Err(err) => err,
    };
    eprintln!("error: {error}");
    Err(ExitCode::FAILURE)
}

/// The first line of a passphrase file.
fn read_passphrase(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--passphrase-file: cannot read {}: {e}", path.display()))?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

fn export(
    data: &DataDirArgs,
    key: &KeyFileArgs,
    workspace: &str,
    passphrase_file: Option<&Path>,
    out: Option<&Path>,
) -> ExitCode {
    let passphrase = match passphrase_file.map(read_passphrase).transpose() {
        Ok(passphrase) => passphrase,
        Err(err) => return usage_error(err),
    };
    let command = control::Command::ExportConfig {
        workspace_id: workspace.to_string(),
        passphrase,
    };
    let document = match answered(on_file_or_server(data, key, command, Vec::new()), |r| {
        r.document.take()
    }) {
        Ok(document) => document,
        Err(code) => return code,
    };
    let mut text = serde_json::to_string_pretty(&document).expect("documents serialize");
    text.push('\n');
    let written = match out {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(text.as_bytes())
                .map_err(|e| e.to_string())
        }
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn import(
    data: &DataDirArgs,
    key: &KeyFileArgs,
    file: &Path,
    workspace: &str,
    dry_run: bool,
    passphrase_file: Option<&Path>,
    allow_destination_hosts: Vec<String>,
) -> ExitCode {
    let passphrase = match passphrase_file.map(read_passphrase).transpose() {
        Ok(passphrase) => passphrase,
        Err(err) => return usage_error(err),
    };
    let document: serde_json::Value = match std::fs::read(file)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}")))
    {
        Ok(document) => document,
        Err(err) => {
            eprintln!("error: {}: {err}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let command = control::Command::ImportConfig {
        workspace_id: workspace.to_string(),
        document,
        passphrase,
        dry_run,
    };
    let (reply, via) = match on_file_or_server(data, key, command, allow_destination_hosts) {
        Ok(answer) => answer,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let report = match reply {
        control::Reply {
            import: Some(report),
            ..
        } => report,
        control::Reply {
            problems: Some(problems),
            error,
            ..
        } => {
            eprintln!(
                "error: {}; nothing was changed",
                error.unwrap_or_else(|| "the document has problems".into())
            );
            for problem in problems {
                eprintln!("  {problem}");
            }
            return ExitCode::from(3);
        }
        reply => {
            eprintln!(
                "error: {}",
                reply.error.unwrap_or_else(|| "no answer".into())
            );
            return ExitCode::FAILURE;
        }
    };
    let verb = if dry_run { "would import" } else { "imported" };
    println!(
        "{verb} into workspace {workspace} (via {via}): {} flow(s) created, {} replaced; {} source(s) created, {} updated; {} destination(s) created, {} replaced",
        report.flows_created.len(),
        report.flows_replaced.len(),
        report.sources_created.len(),
        report.sources_updated.len(),
        report.destinations_created.len(),
        report.destinations_replaced.len()
    );
    for (from, to) in &report.sources_remapped {
        println!("source {from} is taken by another workspace: imported as {to}");
    }
    for (id, secret) in &report.new_secrets {
        println!("source {id} has a new secret (shown once): {secret}");
    }
    for (id, secret) in &report.new_destination_secrets {
        println!("destination {id} has a new secret (shown once): {secret}");
    }
    if let Some(why) = &report.settings_skipped {
        println!("settings not applied: {why}");
    }
    if dry_run {
        println!("dry run: nothing was changed");
    }
    ExitCode::SUCCESS
}

fn rotate_key(data: &DataDirArgs, key: &KeyFileArgs, new_key_file: &Path) -> ExitCode {
    let key_file = key.key_file(data);
    let old = match store::read_key(&key_file) {
        Ok(key) => key,
        Err(err) => {
            eprintln!("error: --encryption-key-file: {err}");
            return ExitCode::FAILURE;
        }
    };
    let new = match store::load_or_create_key(new_key_file) {
        Ok(key) => key,
        Err(err) => return usage_error(format!("--new-key-file: {err}")),
    };
    if new == old {
        return usage_error("--new-key-file holds the key already in use");
    }
    let path = data.data_file();
    let done = match store::rotate_key_file(&path, &old, &new) {
        Ok(done) => done,
        Err(store::StoreError::InUse) => {
            eprintln!(
                "error: a server holds {}: stop it, rotate the key, start it again (rotation needs the file to itself, so no secret is sealed with the old key meanwhile)",
                path.display()
            );
            return ExitCode::FAILURE;
        }
        Err(err) => {
            eprintln!("error: {}: {err}", path.display());
            return ExitCode::FAILURE;
        }
    };
    // The file is sealed with the new key from here on: install it where the server reads it.
    if let Err(err) = store::replace_key_file(&key_file, &new) {
        eprintln!(
            "error: the secrets are re-sealed with the key in {}, but {err}; copy that file to {} before starting the server",
            new_key_file.display(),
            key_file.display()
        );
        return ExitCode::FAILURE;
    }
    println!(
        "re-sealed {} installation token(s), {} webhook token(s), {} source secret(s), {} destination secret(s) and header value(s) and {} flow header value(s) in {} with the key from {}",
        done.installation_tokens,
        done.webhook_tokens,
        done.source_secrets,
        done.destination_secrets,
        done.flow_header_values,
        path.display(),
        new_key_file.display()
    );
    println!(
        "{} now holds the new key; the old key no longer opens the file. Backups taken before now still need the old key",
        key_file.display()
    );
    ExitCode::SUCCESS
}

fn workspaces(data: &DataDirArgs, key: &KeyFileArgs, json: bool) -> ExitCode {
    let answer = on_file_or_server(data, key, control::Command::Workspaces, Vec::new());
    let list = match answered(answer, |r| r.workspaces.take()) {
        Ok(list) => list,
        Err(code) => return code,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).expect("summaries serialize")
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "{:<26} {:<9} {:>10} {:<25} {:>6} {:>12} {:>6}",
        "WORKSPACE", "STATUS", "EVENTS", "LAST EVENT", "FLOWS", "BYTES", "SHARE"
    );
    for w in &list {
        println!(
            "{:<26} {:<9} {:>10} {:<25} {:>6} {:>12} {:>5.1}%",
            w.workspace_id,
            w.status,
            w.events,
            w.last_event_at.as_deref().unwrap_or("-"),
            w.flows,
            w.data_bytes,
            w.data_share * 100.0
        );
    }
    ExitCode::SUCCESS
}

fn stats(data: &DataDirArgs, json: bool) -> ExitCode {
    let path = data.data_file();
    let stats = match store::file_stats(&path) {
        Ok(stats) => stats,
        Err(err) => {
            eprintln!("error: {}: {err}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let oldest = stats.oldest_event_at.map(clockify_studio::time::rfc3339);
    if json {
        let pages = stats.pages.as_ref().map(|p| {
            serde_json::json!({
                "pageSize": p.page_size,
                "allocatedPages": p.allocated_pages,
                "leafPages": p.leaf_pages,
                "branchPages": p.branch_pages,
                "storedBytes": p.stored_bytes,
                "metadataBytes": p.metadata_bytes,
                "fragmentedBytes": p.fragmented_bytes,
            })
        });
        let tables: serde_json::Map<String, serde_json::Value> = stats
            .tables
            .iter()
            .map(|t| {
                let usage = serde_json::json!({
                    "rows": t.rows,
                    "pages": t.pages,
                    "storedBytes": t.stored_bytes,
                    "metadataBytes": t.metadata_bytes,
                    "fragmentedBytes": t.fragmented_bytes,
                });
                (t.name.clone(), usage)
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "file": path.display().to_string(),
                "fileBytes": stats.file_size,
                "schemaVersion": stats.schema_version,
                "tables": tables,
                "pages": pages,
                "oldestEventAt": oldest,
            })
        );
        return ExitCode::SUCCESS;
    }
    println!("data file: {} ({} bytes)", path.display(), stats.file_size);
    println!("schema version: {}", stats.schema_version);
    for t in &stats.tables {
        println!(
            "table {}: {} rows, {} pages, {} bytes stored, {} metadata, {} fragmented",
            t.name, t.rows, t.pages, t.stored_bytes, t.metadata_bytes, t.fragmented_bytes
        );
    }
    match &stats.pages {
        Some(p) => {
            let used = p.leaf_pages + p.branch_pages;
            println!(
                "pages: {} allocated of {} bytes, {used} holding tables; {} bytes stored, {} metadata, {} fragmented (free inside allocated pages)",
                p.allocated_pages,
                p.page_size,
                p.stored_bytes,
                p.metadata_bytes,
                p.fragmented_bytes
            );
        }
        None => {
            println!("pages: unknown while a server holds the file (stop it for page statistics)")
        }
    }
    println!("oldest event: {}", oldest.as_deref().unwrap_or("none"));
    ExitCode::SUCCESS
}
