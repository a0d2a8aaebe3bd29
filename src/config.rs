//! Flags and environment variables, parsed and validated once into [`Config`].
//! Nothing else reads the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};

/// Clockify's published RS256 verification key (PLATFORM.md §5.4).
pub const CLOCKIFY_PUBLIC_KEY_PEM: &str = include_str!("clockify-public-key.pem");

/// File name of the data file inside `--data-dir`.
pub const DATA_FILE_NAME: &str = "clockify-studio.redb";

/// Clockify caps add-on calls at 50 requests/second per workspace.
pub const MAX_RPS_CAP: u32 = 50;

/// Highest page ceiling a bootstrap step may be given.
pub const MAX_BOOTSTRAP_PAGES: u32 = 100_000;

/// The window of `--flow-loop-limit`.
pub const FLOW_LOOP_WINDOW: Duration = Duration::from_secs(60);

/// How long a request body may take before `--min-body-rate-bytes` applies.
pub const BODY_RATE_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Flags shared by every subcommand that reads the data file.
#[derive(Args, Clone, Debug)]
pub struct DataDirArgs {
    /// Directory holding the data file (created if missing)
    #[arg(
        long,
        env = "CLOCKIFY_STUDIO_DATA_DIR",
        default_value = "./data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,
}

impl DataDirArgs {
    pub fn data_file(&self) -> PathBuf {
        self.data_dir.join(DATA_FILE_NAME)
    }
}

/// The encryption key of the data file, for commands that open its secrets.
#[derive(Args, Clone, Debug)]
pub struct KeyFileArgs {
    /// Key that encrypts stored secrets [default: DATA_DIR/secret.key]
    #[arg(long, env = "CLOCKIFY_STUDIO_ENCRYPTION_KEY_FILE", value_name = "FILE")]
    pub encryption_key_file: Option<PathBuf>,
}

impl KeyFileArgs {
    pub fn key_file(&self, data: &DataDirArgs) -> PathBuf {
        self.encryption_key_file
            .clone()
            .unwrap_or_else(|| data.data_dir.join("secret.key"))
    }
}

/// Flags that shape the manifest (also accepted by `manifest`).
#[derive(Args, Clone, Debug)]
pub struct ManifestArgs {
    /// Public URL Clockify reaches this server at (used in the manifest)
    #[arg(long, env = "CLOCKIFY_STUDIO_BASE_URL", default_value = "http://localhost:8080",
          value_name = "URL", value_parser = parse_base_url)]
    pub base_url: String,
    /// Manifest key; also the expected `sub` of every Clockify token
    #[arg(long, env = "CLOCKIFY_STUDIO_ADDON_KEY", default_value = "clockify-studio",
          value_name = "KEY", value_parser = parse_addon_key)]
    pub addon_key: String,
}

#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(
        long,
        env = "CLOCKIFY_STUDIO_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub data: DataDirArgs,
    #[command(flatten)]
    pub manifest: ManifestArgs,
    /// PEM file with the key Clockify signs tokens with [default: Clockify's published key]
    #[arg(long, env = "CLOCKIFY_STUDIO_CLOCKIFY_PUBLIC_KEY", value_name = "FILE")]
    pub clockify_public_key: Option<PathBuf>,
    /// Key that encrypts stored secrets [default: DATA_DIR/secret.key, created on first start]
    #[arg(long, env = "CLOCKIFY_STUDIO_ENCRYPTION_KEY_FILE", value_name = "FILE")]
    pub encryption_key_file: Option<PathBuf>,
    /// Extra outbound host (HOST[:PORT]) besides Clockify's own; plain http is allowed only for these
    #[arg(long, env = "CLOCKIFY_STUDIO_ALLOW_API_HOST", value_delimiter = ',',
          value_name = "HOST[:PORT]", value_parser = parse_host)]
    pub allow_api_host: Vec<String>,
    /// When set, /metrics needs `Authorization: Bearer TOKEN`
    #[arg(
        long,
        env = "CLOCKIFY_STUDIO_METRICS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub metrics_token: Option<String>,
    /// Log line format
    #[arg(
        long,
        env = "CLOCKIFY_STUDIO_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Write daily-rolling log files here instead of stdout
    #[arg(long, env = "CLOCKIFY_STUDIO_LOG_DIR", value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Log filter in RUST_LOG syntax, e.g. `info` or `clockify_studio=debug,info`
    #[arg(long, env = "CLOCKIFY_STUDIO_LOG_LEVEL", default_value = "info", value_name = "FILTER",
          value_parser = parse_log_filter)]
    pub log_level: String,
    /// Days to keep webhook events (0 = keep forever); workspaces may override
    #[arg(
        long,
        env = "CLOCKIFY_STUDIO_WEBHOOK_RETENTION_DAYS",
        default_value_t = 90,
        value_name = "N"
    )]
    pub webhook_retention_days: u32,
    /// Days to keep flow runs (0 = keep forever); workspaces may override
    #[arg(
        long,
        env = "CLOCKIFY_STUDIO_FLOW_RUN_RETENTION_DAYS",
        default_value_t = 30,
        value_name = "N"
    )]
    pub flow_run_retention_days: u32,
    /// Largest response body kept per flow action (bytes); longer ones are cut
    #[arg(long, env = "CLOCKIFY_STUDIO_FLOW_RESPONSE_LIMIT_BYTES", default_value_t = 64 * 1024, value_name = "BYTES")]
    pub flow_response_limit_bytes: usize,
    /// A flow is disabled after this many failed runs in a row (0 = never)
    #[arg(
        long,
        env = "CLOCKIFY_STUDIO_FLOW_AUTO_DISABLE_AFTER",
        default_value_t = 5,
        value_name = "N"
    )]
    pub flow_auto_disable_after: u32,
    /// A flow that runs this many times within a minute for the same entity (a time entry, a
    /// project …) is disabled as a loop (0 = never)
    #[arg(
        long,
        env = "CLOCKIFY_STUDIO_FLOW_LOOP_LIMIT",
        default_value_t = 10,
        value_name = "N"
    )]
    pub flow_loop_limit: u32,
    /// Flow runs executed at once per workspace
    #[arg(long, env = "CLOCKIFY_STUDIO_FLOW_WORKSPACE_CONCURRENCY", default_value_t = 4, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub flow_workspace_concurrency: u32,
    /// Requests per second to Clockify per workspace (1..=50); workspaces may override
    #[arg(long, env = "CLOCKIFY_STUDIO_MAX_RPS", default_value_t = 25, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=MAX_RPS_CAP as i64))]
    pub max_rps: u32,
    /// Most connections served at once; further clients wait
    #[arg(long, env = "CLOCKIFY_STUDIO_MAX_CONNECTIONS", default_value_t = 1024, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Most connections from one client address (0 = no cap); behind a reverse proxy on the
    /// same host every connection comes from it, so raise this or set 0 there
    #[arg(
        long,
        env = "CLOCKIFY_STUDIO_MAX_CONNECTIONS_PER_PEER",
        default_value_t = 256,
        value_name = "N"
    )]
    pub max_connections_per_peer: u32,
    /// Seconds an idle keep-alive connection is kept open
    #[arg(long, env = "CLOCKIFY_STUDIO_KEEP_ALIVE_TIMEOUT_SECS", default_value_t = 5, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub keep_alive_timeout_secs: u64,
    /// Slowest request body accepted, in bytes per second after the first 5 seconds; a slower
    /// body is cut with 408 (0 = no floor)
    #[arg(
        long,
        env = "CLOCKIFY_STUDIO_MIN_BODY_RATE_BYTES",
        default_value_t = 1024,
        value_name = "BYTES"
    )]
    pub min_body_rate_bytes: u64,
    /// Seconds a request may take before it is answered 408
    #[arg(long, env = "CLOCKIFY_STUDIO_REQUEST_TIMEOUT_SECS", default_value_t = 30, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_secs: u64,
    /// Seconds a client may take to send request headers
    #[arg(long, env = "CLOCKIFY_STUDIO_HEADER_READ_TIMEOUT_SECS", default_value_t = 10, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_secs: u64,
    /// Largest webhook body accepted (bytes)
    #[arg(long, env = "CLOCKIFY_STUDIO_WEBHOOK_BODY_LIMIT_BYTES", default_value_t = 5 * 1024 * 1024, value_name = "BYTES")]
    pub webhook_body_limit_bytes: usize,
    /// Seconds between retention passes
    #[arg(long, env = "CLOCKIFY_STUDIO_RETENTION_INTERVAL_SECS", default_value_t = 600, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub retention_interval_secs: u64,
    /// Pages the entity bootstrap fetches at most per operation; more is marked truncated.
    /// Workspaces may override
    #[arg(long, env = "CLOCKIFY_STUDIO_BOOTSTRAP_MAX_PAGES", default_value_t = 1000, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=MAX_BOOTSTRAP_PAGES as i64))]
    pub bootstrap_max_pages: u32,
    /// Hours between refreshes of each workspace's entity cache (0 = never); workspaces may
    /// override
    #[arg(
        long,
        env = "CLOCKIFY_STUDIO_ENTITY_REFRESH_HOURS",
        default_value_t = 24,
        value_name = "HOURS"
    )]
    pub entity_refresh_hours: u32,
    /// Seconds between reconciliations of every workspace's webhook subscriptions
    #[arg(long, env = "CLOCKIFY_STUDIO_SUBSCRIPTION_SYNC_INTERVAL_SECS", default_value_t = 21600, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(60..))]
    pub subscription_sync_interval_secs: u64,
    /// Largest lifecycle/API body accepted (bytes)
    #[arg(long, env = "CLOCKIFY_STUDIO_API_BODY_LIMIT_BYTES", default_value_t = 1024 * 1024, value_name = "BYTES")]
    pub api_body_limit_bytes: usize,
    /// Rejected requests (4xx/5xx) logged per route and status in each interval; the rest are
    /// counted and summarised in one line per interval
    #[arg(
        long,
        env = "CLOCKIFY_STUDIO_REJECTION_LOG_BURST",
        default_value_t = 5,
        value_name = "N"
    )]
    pub rejection_log_burst: u32,
    /// Length of that interval
    #[arg(long, env = "CLOCKIFY_STUDIO_REJECTION_LOG_INTERVAL_SECS", default_value_t = 60, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub rejection_log_interval_secs: u64,
    /// Destination host (HOST[:PORT]) that may use plain http and an internal address
    /// (loopback, private, link-local …); repeatable
    #[arg(long, env = "CLOCKIFY_STUDIO_ALLOW_DESTINATION_HOST", value_delimiter = ',',
          value_name = "HOST[:PORT]", value_parser = parse_host)]
    pub allow_destination_host: Vec<String>,
    /// Delay before each delivery attempt to a destination: the first is the delay before
    /// the first attempt, each later one the wait after a failed attempt (jittered ±10%)
    #[arg(long, env = "CLOCKIFY_STUDIO_DESTINATION_RETRY_SCHEDULE", value_name = "DURATIONS",
          default_value = DEFAULT_RETRY_SCHEDULE, value_parser = parse_schedule)]
    pub destination_retry_schedule: Schedule,
    /// A destination whose every attempt failed for this long is disabled (e.g. 5d, 12h)
    #[arg(long, env = "CLOCKIFY_STUDIO_DESTINATION_DISABLE_AFTER", value_name = "DURATION",
          default_value = "5d", value_parser = parse_duration)]
    pub destination_disable_after: Duration,
    /// Attempts in flight at once per destination
    #[arg(long, env = "CLOCKIFY_STUDIO_DESTINATION_CONCURRENCY", default_value_t = 4, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub destination_concurrency: u32,
    /// Attempts started per second per destination
    #[arg(long, env = "CLOCKIFY_STUDIO_DESTINATION_MAX_RPS", default_value_t = 50, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub destination_max_rps: u32,
    /// Seconds one delivery attempt may take in all (connecting takes at most 10)
    #[arg(long, env = "CLOCKIFY_STUDIO_DESTINATION_TIMEOUT_SECS", default_value_t = 15, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub destination_timeout_secs: u64,
    /// URL that receives a signed JSON message when a flow is disabled after repeated failures
    /// or a workspace's subscription sync keeps failing
    #[arg(long, env = "CLOCKIFY_STUDIO_NOTIFY_URL", value_name = "URL", value_parser = parse_base_url)]
    pub notify_url: Option<String>,
    /// File holding the secret that signs those messages (Standard Webhooks; a whsec_ secret
    /// or any text)
    #[arg(
        long,
        env = "CLOCKIFY_STUDIO_NOTIFY_SECRET_FILE",
        value_name = "FILE",
        requires = "notify_url"
    )]
    pub notify_secret_file: Option<PathBuf>,
    /// Write a consistent snapshot of the data file into this directory every
    /// --snapshot-every (off when unset); name the directory on the data file's disk or another
    #[arg(long, env = "CLOCKIFY_STUDIO_SNAPSHOT_DIR", value_name = "DIR")]
    pub snapshot_dir: Option<PathBuf>,
    /// Time between snapshots: a number and s, m, h or d (e.g. 6h)
    #[arg(long, env = "CLOCKIFY_STUDIO_SNAPSHOT_EVERY", default_value = "6h", value_name = "INTERVAL",
          value_parser = parse_interval)]
    pub snapshot_every: Duration,
    /// Snapshots kept; the oldest beyond this are removed
    #[arg(long, env = "CLOCKIFY_STUDIO_SNAPSHOT_KEEP", default_value_t = 14, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub snapshot_keep: u32,
    /// Extra origin allowed to frame /ui besides https://*.clockify.me (repeatable)
    #[arg(long, env = "CLOCKIFY_STUDIO_UI_FRAME_ANCESTOR", value_delimiter = ',',
          value_name = "ORIGIN", value_parser = parse_frame_ancestor)]
    pub ui_frame_ancestor: Vec<String>,
    /// Benchmarks only: seconds added to "now" by retention, to age stored events
    #[arg(long, hide = true, default_value_t = 0, value_name = "SECS")]
    pub retention_clock_skew_secs: u64,
}

/// The validated configuration of a running server.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub base_url: String,
    pub addon_key: String,
    pub clockify_public_key_pem: String,
    pub encryption_key_file: PathBuf,
    pub allow_api_hosts: Vec<String>,
    pub metrics_token: Option<String>,
    pub webhook_retention_days: u32,
    pub flow_run_retention_days: u32,
    pub flow_response_limit: usize,
    pub flow_auto_disable_after: u32,
    pub flow_workspace_concurrency: usize,
    /// Runs of one flow for one entity within [`crate::config::FLOW_LOOP_WINDOW`] that count as
    /// a loop (0 = never).
    pub flow_loop_limit: u32,
    pub max_rps: u32,
    pub max_connections: usize,
    /// Most connections from one client address (0 = no cap).
    pub max_connections_per_peer: usize,
    /// How long an idle keep-alive connection is kept.
    pub keep_alive_timeout: Duration,
    /// Slowest request body accepted, bytes per second after [`BODY_RATE_GRACE`] (0 = none).
    pub min_body_rate: u64,
    pub request_timeout: Duration,
    pub header_read_timeout: Duration,
    pub webhook_body_limit: usize,
    pub api_body_limit: usize,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// How often every workspace's webhook subscriptions are reconciled.
    pub subscription_sync_interval: Duration,
    /// Added to "now" by retention; only tests and benchmarks set it, to age stored rows.
    pub retention_clock_skew: Duration,
    /// Origins allowed to frame `/ui` besides `https://*.clockify.me` (CSP frame-ancestors).
    pub ui_frame_ancestors: Vec<String>,
    /// Pages fetched at most per bootstrap operation (workspaces may override).
    pub bootstrap_max_pages: u32,
    /// How old an entity cache gets before it is fetched again (zero: never; workspaces may
    /// override in hours).
    pub entity_refresh: Duration,
    /// Rejected requests logged per route and status per [`Config::rejection_log_interval`].
    pub rejection_log_burst: u32,
    pub rejection_log_interval: Duration,
    /// Destination hosts (`host` or `host:port`) allowed plain http and internal addresses.
    pub allow_destination_hosts: Vec<String>,
    /// Delay before each delivery attempt (see `--destination-retry-schedule`).
    pub destination_retry_schedule: Vec<Duration>,
    pub destination_disable_after: Duration,
    pub destination_concurrency: usize,
    pub destination_max_rps: u32,
    pub destination_timeout: Duration,
    /// Where scheduled snapshots go (`None`: no snapshots), how often, and how many are kept.
    pub snapshot_dir: Option<PathBuf>,
    pub snapshot_every: Duration,
    pub snapshot_keep: u32,
    /// The notification hook and its signing secret.
    pub notify_url: Option<String>,
    pub notify_secret: Option<String>,
}

/// The default delays between delivery attempts: eight attempts over about a day.
pub const DEFAULT_RETRY_SCHEDULE: &str = "0s,5s,5m,30m,2h,5h,10h,10h";

/// A parsed retry schedule (a newtype, so clap does not take it for a repeated flag).
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule(pub Vec<Duration>);

/// A configuration problem, always naming the flag it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {message}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub message: String,
}

fn config_error(flag: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        message: message.into(),
    }
}

impl Config {
    /// Checks what clap cannot: files that must be readable, a data dir that must be writable.
    pub fn from_args(args: &ServeArgs) -> Result<Config, ConfigError> {
        let data_dir = args.data.data_dir.clone();
        ensure_writable_dir(&data_dir).map_err(|m| config_error("--data-dir", m))?;
        let clockify_public_key_pem = match &args.clockify_public_key {
            None => CLOCKIFY_PUBLIC_KEY_PEM.to_string(),
            Some(path) => {
                let pem = std::fs::read_to_string(path).map_err(|e| {
                    config_error(
                        "--clockify-public-key",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| {
                    config_error(
                        "--clockify-public-key",
                        format!(
                            "{} is not an RSA public key in PEM form: {e}",
                            path.display()
                        ),
                    )
                })?;
                pem
            }
        };
        let snapshot_dir = match &args.snapshot_dir {
            Some(dir) => {
                ensure_writable_dir(dir).map_err(|m| config_error("--snapshot-dir", m))?;
                Some(dir.clone())
            }
            None => None,
        };
        let notify_secret = match &args.notify_secret_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    config_error(
                        "--notify-secret-file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let secret = text.trim().to_string();
                if secret.len() < 16 {
                    return Err(config_error(
                        "--notify-secret-file",
                        "the secret must have at least 16 characters",
                    ));
                }
                Some(secret)
            }
            None => None,
        };
        let encryption_key_file = args
            .encryption_key_file
            .clone()
            .unwrap_or_else(|| data_dir.join("secret.key"));
        Ok(Config {
            listen: args.listen,
            data_dir,
            base_url: args.manifest.base_url.clone(),
            addon_key: args.manifest.addon_key.clone(),
            clockify_public_key_pem,
            encryption_key_file,
            allow_api_hosts: args.allow_api_host.clone(),
            metrics_token: args.metrics_token.clone().filter(|t| !t.is_empty()),
            webhook_retention_days: args.webhook_retention_days,
            flow_run_retention_days: args.flow_run_retention_days,
            flow_response_limit: args.flow_response_limit_bytes,
            flow_auto_disable_after: args.flow_auto_disable_after,
            flow_workspace_concurrency: args.flow_workspace_concurrency as usize,
            flow_loop_limit: args.flow_loop_limit,
            max_rps: args.max_rps,
            max_connections: args.max_connections as usize,
            max_connections_per_peer: args.max_connections_per_peer as usize,
            keep_alive_timeout: Duration::from_secs(args.keep_alive_timeout_secs),
            min_body_rate: args.min_body_rate_bytes,
            request_timeout: Duration::from_secs(args.request_timeout_secs),
            header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
            webhook_body_limit: args.webhook_body_limit_bytes,
            api_body_limit: args.api_body_limit_bytes,
            retention_interval: Duration::from_secs(args.retention_interval_secs),
            subscription_sync_interval: Duration::from_secs(args.subscription_sync_interval_secs),
            retention_clock_skew: Duration::from_secs(args.retention_clock_skew_secs),
            ui_frame_ancestors: args.ui_frame_ancestor.clone(),
            bootstrap_max_pages: args.bootstrap_max_pages,
            entity_refresh: Duration::from_secs(u64::from(args.entity_refresh_hours) * 3600),
            rejection_log_burst: args.rejection_log_burst,
            rejection_log_interval: Duration::from_secs(args.rejection_log_interval_secs),
            allow_destination_hosts: args.allow_destination_host.clone(),
            destination_retry_schedule: args.destination_retry_schedule.0.clone(),
            destination_disable_after: args.destination_disable_after,
            destination_concurrency: args.destination_concurrency as usize,
            destination_max_rps: args.destination_max_rps,
            destination_timeout: Duration::from_secs(args.destination_timeout_secs),
            snapshot_dir,
            snapshot_every: args.snapshot_every,
            snapshot_keep: args.snapshot_keep,
            notify_url: args.notify_url.clone(),
            notify_secret,
        })
    }

    /// Defaults suitable for tests and embedding: everything as the CLI defaults, in `data_dir`.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        let data_dir = data_dir.into();
        Config {
            listen: "127.0.0.1:0".parse().expect("static address"),
            encryption_key_file: data_dir.join("secret.key"),
            data_dir,
            base_url: "http://localhost:8080".into(),
            addon_key: "clockify-studio".into(),
            clockify_public_key_pem: CLOCKIFY_PUBLIC_KEY_PEM.into(),
            allow_api_hosts: Vec::new(),
            metrics_token: None,
            webhook_retention_days: 90,
            flow_run_retention_days: 30,
            flow_response_limit: 64 * 1024,
            flow_auto_disable_after: 5,
            flow_workspace_concurrency: 4,
            flow_loop_limit: 10,
            max_rps: 25,
            max_connections: 1024,
            max_connections_per_peer: 256,
            keep_alive_timeout: Duration::from_secs(5),
            min_body_rate: 1024,
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            webhook_body_limit: 5 * 1024 * 1024,
            api_body_limit: 1024 * 1024,
            retention_interval: Duration::from_secs(600),
            subscription_sync_interval: Duration::from_secs(6 * 3600),
            retention_clock_skew: Duration::ZERO,
            ui_frame_ancestors: Vec::new(),
            bootstrap_max_pages: 1000,
            entity_refresh: Duration::from_secs(24 * 3600),
            rejection_log_burst: 5,
            rejection_log_interval: Duration::from_secs(60),
            allow_destination_hosts: Vec::new(),
            destination_retry_schedule: parse_schedule(DEFAULT_RETRY_SCHEDULE)
                .expect("the default schedule parses")
                .0,
            destination_disable_after: Duration::from_secs(5 * 24 * 3600),
            destination_concurrency: 4,
            destination_max_rps: 50,
            destination_timeout: Duration::from_secs(15),
            snapshot_dir: None,
            snapshot_every: Duration::from_secs(6 * 3600),
            snapshot_keep: 14,
            notify_url: None,
            notify_secret: None,
        }
    }

    pub fn data_file(&self) -> PathBuf {
        self.data_dir.join(DATA_FILE_NAME)
    }
}

/// Creates the directory if needed and proves it is writable by creating a file in it.
pub fn ensure_writable_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"ok").map_err(|e| format!("{} is not writable: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn parse_base_url(value: &str) -> Result<String, String> {
    let trimmed = value.trim_end_matches('/');
    let uri: http::Uri = trimmed.parse().map_err(|e| format!("not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("must start with https:// (or http:// for local testing)".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if uri.query().is_some() {
        return Err("must not have a query string".into());
    }
    Ok(trimmed.to_string())
}

fn parse_addon_key(value: &str) -> Result<String, String> {
    // Manifest schema 1.3: key is 2..=50 characters.
    if !(2..=50).contains(&value.chars().count()) {
        return Err("must be 2 to 50 characters".into());
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces".into());
    }
    Ok(value.to_string())
}

pub fn parse_host(value: &str) -> Result<String, String> {
    let value = value.trim();
    let authority: http::uri::Authority = value
        .parse()
        .map_err(|_| "not a HOST or HOST:PORT".to_string())?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err("not a HOST or HOST:PORT".into());
    }
    Ok(authority.as_str().to_ascii_lowercase())
}

/// A CSP source for frame-ancestors: `scheme://host[:port]`, the host may start with `*.`.
/// Anything else is refused, since the value is copied into a response header.
fn parse_frame_ancestor(value: &str) -> Result<String, String> {
    let value = value.trim().trim_end_matches('/');
    let bad =
        || "must be an origin like https://app.example.com (host may start with *.)".to_string();
    let (scheme, rest) = value.split_once("://").ok_or_else(bad)?;
    if !matches!(scheme, "http" | "https") || rest.is_empty() {
        return Err(bad());
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (host, Some(port))
        }
        Some(_) => return Err(bad()),
        None => (rest, None),
    };
    let bare = host.strip_prefix("*.").unwrap_or(host);
    let host_ok = !bare.is_empty()
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !bare.starts_with('.')
        && !bare.ends_with('.');
    if !host_ok || port.is_some_and(|p| p.len() > 5) {
        return Err(bad());
    }
    Ok(value.to_ascii_lowercase())
}

/// A duration such as `250ms`, `5s`, `5m`, `2h` or `5d`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{value:?} has no unit (ms, s, m, h or d)"))?;
    let (number, unit) = value.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{value:?} is not a number followed by ms, s, m, h or d"))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{value:?}: the unit must be ms, s, m, h or d")),
    };
    n.checked_mul(ms)
        .filter(|ms| *ms <= 366 * 86_400_000)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{value:?} is longer than a year"))
}

/// Comma-separated durations: 1 to 50 of them.
fn parse_schedule(value: &str) -> Result<Schedule, String> {
    let delays = value
        .split(',')
        .map(parse_duration)
        .collect::<Result<Vec<_>, _>>()?;
    if delays.is_empty() || delays.len() > 50 {
        return Err("must list 1 to 50 durations".into());
    }
    Ok(Schedule(delays))
}

/// `30s`, `15m`, `6h`, `1d`: at least a minute, at most 365 days.
pub fn parse_interval(value: &str) -> Result<Duration, String> {
    let interval = parse_duration(value)?;
    if !(Duration::from_secs(60)..=Duration::from_secs(365 * 86_400)).contains(&interval) {
        return Err("must be from 1 minute to 365 days".into());
    }
    Ok(interval)
}

fn parse_log_filter(value: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(value)
        .map(|_| value.to_string())
        .map_err(|e| e.to_string())
}

/// Like [`ensure_writable_dir`] but never creates the directory: a directory that vanished
/// under a running server is a fault to report, not to paper over.
pub fn ensure_writable_dir_no_create(dir: &Path) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!("data directory {} is missing", dir.display()));
    }
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"ok").map_err(|e| format!("{} is not writable: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}
