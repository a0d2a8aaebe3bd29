//! The binary itself: manifest printing, flag validation, backup while running, check.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::json;

use crate::support::*;

/// Runs the binary with `args` and an empty environment.
fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .output()
        .expect("run binary")
}

/// A path as an argument (temp paths are UTF-8).
fn text(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// The manifest printed by `manifest` with `args`, with the add-on key also set in the
/// environment.
fn manifest_with_env_key(args: &[&str], env_key: &str) -> serde_json::Value {
    let out = Command::new(BIN)
        .arg("manifest")
        .args(args)
        .env("CLOCKIFY_STUDIO_ADDON_KEY", env_key)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn manifest_cli_prints_the_same_bytes_as_http() {
    let server = TestServer::start_with(|c| {
        c.base_url = "https://studio.example.com".into();
    });
    let http = server.get("/manifest", &[]).body;
    for args in [
        vec!["manifest", "--base-url", "https://studio.example.com"],
        vec![
            "--print-manifest",
            "--base-url",
            "https://studio.example.com",
        ],
    ] {
        let out = run(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8(out.stdout).unwrap(), http, "{args:?}");
    }
    // Environment fallback, and flags beat env.
    assert_eq!(manifest_with_env_key(&[], "from-env")["key"], "from-env");
    let flagged = manifest_with_env_key(&["--addon-key", "from-flag"], "from-env");
    assert_eq!(flagged["key"], "from-flag");
}

#[test]
fn manifest_cli_does_not_touch_the_data_dir() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("never-created");
    let out = Command::new(BIN)
        .args(["manifest"])
        .env("CLOCKIFY_STUDIO_DATA_DIR", &dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!dir.exists());
}

#[test]
fn invalid_flags_stop_with_exit_code_2_naming_the_flag() {
    let temp = tempfile::tempdir().unwrap();
    let file = temp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let bad_key = temp.path().join("bad.pem");
    std::fs::write(&bad_key, "not a key").unwrap();
    let (under_file, other_dir) = (file.join("sub"), temp.path().join("d"));
    let cases: &[(&[&str], &str)] = &[
        (&["--base-url", "ftp://example.com"], "--base-url"),
        (&["--max-rps", "51"], "--max-rps"),
        (&["--listen", "nowhere"], "--listen"),
        (&["--log-format", "xml"], "--log-format"),
        (&["--data-dir", text(&under_file)], "--data-dir"),
        (
            &[
                "--clockify-public-key",
                text(&bad_key),
                "--data-dir",
                text(&other_dir),
            ],
            "--clockify-public-key",
        ),
    ];
    for (args, flag) in cases {
        let out = run(&[&["serve"], *args].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    }
    let out = run(&["--version"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_wrong_encryption_key_fails_the_start_clearly() {
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(temp.path(), |_| {});
    server.install("ws-key", "addon", UNREACHABLE_API);
    server.stop();
    let other_key = temp.path().join("other.key");
    std::fs::write(&other_key, format!("{}\n", "ab".repeat(32))).unwrap();
    let out = run_on(
        temp.path(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--encryption-key-file",
            text(&other_key),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--encryption-key-file"), "{stderr}");
    // The default key file was created 0600 on first start.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(temp.path().join("secret.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn backup_while_running_then_check_the_copy() {
    let temp = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(temp.path(), |_| {});
    for i in 0..20 {
        server.install(&format!("ws-backup-{i}"), "addon", UNREACHABLE_API);
    }
    // Writes keep going while the backup runs.
    let writer = {
        let client = TestClient::new(&server.base);
        std::thread::spawn(move || {
            for i in 0..30 {
                client.install(&format!("ws-live-{i}"), "addon", UNREACHABLE_API);
            }
        })
    };
    let copy = temp.path().join("backup.redb");
    succeeded(run_on(temp.path(), &["backup", "--to", text(&copy)]));
    writer.join().unwrap();

    // `check` on the live file works too (read-only while the server holds it).
    succeeded(run_on(temp.path(), &["check"]));
    server.stop();

    // The copy opens with the same binary and holds at least the 20 installations made before.
    let restore = temp.path().join("restore");
    std::fs::create_dir_all(&restore).unwrap();
    std::fs::copy(&copy, restore.join("clockify-studio.redb")).unwrap();
    let stdout = succeeded(run_on(&restore, &["check"]));
    assert!(stdout.contains("integrity: ok"), "{stdout}");
    let count: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("table installations: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!((20..=50).contains(&count), "{stdout}");

    // And a server started on the restored copy (with the original key) serves it.
    std::fs::copy(temp.path().join("secret.key"), restore.join("secret.key")).unwrap();
    let server = TestServer::start_in(&restore, |_| {});
    let r = server.lifecycle(
        "status-changed",
        &json!({"addonId": "addon", "workspaceId": "ws-backup-7", "status": "INACTIVE"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn check_fails_on_a_missing_or_damaged_file() {
    let temp = tempfile::tempdir().unwrap();
    let out = run_on(temp.path(), &["check"]);
    assert!(!out.status.success());
    std::fs::write(temp.path().join("clockify-studio.redb"), vec![7u8; 8192]).unwrap();
    let out = run_on(temp.path(), &["check"]);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// At the default level a rejected request gets one `handled` line with its id, route and
/// status; a successful one gets none (it is counted in the metrics instead).
#[test]
fn the_default_log_level_logs_rejections_not_successes() {
    use std::time::Duration;

    let temp = tempfile::tempdir().unwrap();
    let mut server = LoggedServer::start(temp.path(), &[]);
    let ok = server
        .client
        .get("/healthz", &[("x-request-id", "the-healthy-one")]);
    assert_eq!(ok.status, 200);
    let rejected = server
        .client
        .get("/api/webhooks", &[("x-request-id", "the-rejected-one")]);
    assert_eq!(rejected.status, 401);
    let handled = server
        .wait_for(Duration::from_secs(30), |line| {
            line["request_id"] == "the-rejected-one"
        })
        .expect("a line for the rejected request");
    let seen = server.kill();

    assert_eq!(handled["message"], "handled");
    assert_eq!(handled["level"], "INFO");
    assert_eq!(handled["status"], 401);
    assert_eq!(handled["route"], "/api/webhooks");
    assert_eq!(handled["method"], "GET");
    assert!(
        !seen
            .iter()
            .any(|line| line.to_string().contains("the-healthy-one")),
        "{seen:#?}"
    );
}

#[test]
fn man_pages_and_completions_cover_every_subcommand_and_flag() {
    let temp = tempfile::tempdir().unwrap();
    let out = run(&["generate", "--out-dir", text(temp.path())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |path: &str| {
        std::fs::read_to_string(temp.path().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let main_page = read("man/clockify-studio.1");
    let subcommands = [
        "serve",
        "manifest",
        "backup",
        "check",
        "compact",
        "erase-workspace",
        "export",
        "import",
        "rotate-key",
        "workspaces",
        "stats",
    ];
    for sub in subcommands {
        assert!(
            // roff escapes every hyphen.
            main_page.contains(&format!(
                "clockify\\-studio\\-{}(1)",
                sub.replace('-', "\\-")
            )),
            "{sub} listed in the main page"
        );
        let page = read(&format!("man/clockify-studio-{sub}.1"));
        assert!(page.contains(".SH OPTIONS"), "{sub}: {page}");
    }
    for section in [".SH ENVIRONMENT", ".SH FILES", ".SH \"SEE ALSO\""] {
        assert!(main_page.contains(section), "{section} in the main page");
    }
    assert!(main_page.contains("/etc/clockify\\-studio/clockify\\-studio.env"));
    let serve_page = read("man/clockify-studio-serve.1");
    for flag in [
        "base\\-url",
        "data\\-dir",
        "metrics\\-token",
        "ui\\-frame\\-ancestor",
    ] {
        assert!(serve_page.contains(&format!("\\-\\-{flag}")), "--{flag}");
    }
    assert!(
        serve_page.contains("CLOCKIFY_STUDIO_BASE_URL"),
        "environment variables are named"
    );
    let backup_page = read("man/clockify-studio-backup.1");
    assert!(backup_page.contains("\\-\\-to"), "{backup_page}");
    // The packager's own subcommand stays out of the pages, the help and the completions.
    let man_files: Vec<_> = std::fs::read_dir(temp.path().join("man"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(man_files.len(), 1 + subcommands.len(), "{man_files:?}");
    assert!(!main_page.contains("generate"));
    let help = String::from_utf8_lossy(&run(&["--help"]).stdout).into_owned();
    assert!(!help.contains("generate"), "{help}");
    for completion in [
        "completions/clockify-studio.bash",
        "completions/_clockify-studio",
        "completions/clockify-studio.fish",
    ] {
        let script = read(completion);
        for sub in subcommands {
            assert!(script.contains(sub), "{completion} completes {sub}");
        }
        assert!(script.contains("base-url"), "{completion} completes flags");
    }
}
