//! Command line: `serve` (default), `manifest` / `--print-manifest`, `backup`, `check`,
//! `erase-workspace`, and the hidden `generate` (man pages and shell completions, for
//! packagers).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use clockify_studio::config::{Config, DataDirArgs, LogFormat, ManifestArgs, ServeArgs};
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
        Some(Command::EraseWorkspace {
            workspace,
            dry_run,
            data,
        }) => erase_workspace(&data, &workspace, dry_run),
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
