//! The binary itself: manifest printing, flag validation, backup while running, check.

use std::process::Command;

use serde_json::json;

use crate::support::*;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .output()
        .expect("run binary")
}

#[test]
fn manifest_cli_prints_the_same_bytes_as_http() {
    let server = TestServer::start_in(&tempfile::tempdir().unwrap().keep(), |c| {
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
    let out = Command::new(BIN)
        .args(["manifest"])
        .env("CLOCKIFY_STUDIO_ADDON_KEY", "from-env")
        .output()
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["key"], "from-env");
    let out = Command::new(BIN)
        .args(["manifest", "--addon-key", "from-flag"])
        .env("CLOCKIFY_STUDIO_ADDON_KEY", "from-env")
        .output()
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["key"], "from-flag");
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
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--base-url".into(), "ftp://example.com".into()],
            "--base-url",
        ),
        (vec!["--max-rps".into(), "51".into()], "--max-rps"),
        (vec!["--listen".into(), "nowhere".into()], "--listen"),
        (vec!["--log-format".into(), "xml".into()], "--log-format"),
        (
            vec!["--data-dir".into(), file.join("sub").display().to_string()],
            "--data-dir",
        ),
        (
            vec![
                "--clockify-public-key".into(),
                bad_key.display().to_string(),
                "--data-dir".into(),
                temp.path().join("d").display().to_string(),
            ],
            "--clockify-public-key",
        ),
    ];
    for (args, flag) in cases {
        let mut full = vec!["serve".to_string()];
        full.extend(args.clone());
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        let out = run(&refs);
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
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(temp.path())
        .arg("--encryption-key-file")
        .arg(&other_key)
        .output()
        .unwrap();
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
        let base = server.base.clone();
        std::thread::spawn(move || {
            for i in 0..30 {
                let body = install_payload(&format!("ws-live-{i}"), "addon", UNREACHABLE_API);
                let token = lifecycle_token(&format!("ws-live-{i}"), "addon");
                let r = request(
                    "POST",
                    &format!("{base}/lifecycle/installed"),
                    &[
                        ("x-addon-lifecycle-token", &token),
                        ("content-type", "application/json"),
                    ],
                    Some(&serde_json::to_vec(&body).unwrap()),
                );
                assert_eq!(r.status, 200);
            }
        })
    };
    let copy = temp.path().join("backup.redb");
    let out = Command::new(BIN)
        .args(["backup", "--to"])
        .arg(&copy)
        .arg("--data-dir")
        .arg(temp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    writer.join().unwrap();

    // `check` on the live file works too (read-only while the server holds it).
    let out = Command::new(BIN)
        .args(["check", "--data-dir"])
        .arg(temp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop();

    // The copy opens with the same binary and holds at least the 20 installations made before.
    let restore = temp.path().join("restore");
    std::fs::create_dir_all(&restore).unwrap();
    std::fs::copy(&copy, restore.join("clockify-studio.redb")).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--data-dir"])
        .arg(&restore)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    let out = Command::new(BIN)
        .args(["check", "--data-dir"])
        .arg(temp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    std::fs::write(temp.path().join("clockify-studio.redb"), vec![7u8; 8192]).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--data-dir"])
        .arg(temp.path())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
