//! A configuration the hub cannot run with stops the binary at once with one clear line naming
//! the file and the key: never a panic, never a hub that starts with a setting ignored.

use std::path::PathBuf;
use std::process::{Command, Output};

/// A directory of its own for one case's files.
fn scratch(case: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sseio-hub-{case}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn hub(args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sseio-hub"))
        .args(args)
        .envs(envs.iter().copied())
        .env_remove("SSEIO_HUB_CONFIG")
        .output()
        .expect("the hub runs")
}

/// Runs the hub on a file with `text` (with `--check`, and once as it would start), and
/// returns its error, after checking it failed cleanly.
fn refused(case: &str, text: &str, envs: &[(&str, &str)]) -> (String, PathBuf) {
    let dir = scratch(case);
    let file = dir.join("hub.toml");
    std::fs::write(&file, text).unwrap();
    let path = file.to_str().unwrap();
    for args in [&["--config", path, "--check"][..], &["--config", path][..]] {
        let output = hub(args, envs);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.starts_with("sseio-hub: error: "), "{stderr}");
        assert!(stderr.contains(path), "the error names the file: {stderr}");
    }
    let output = hub(&["--config", path, "--check"], envs);
    (String::from_utf8_lossy(&output.stderr).into_owned(), dir)
}

const VALID: &str = "[publish]\napi_keys = [\"0123456789abcdef\"]\n[events.news]\nroom = \"all\"\n";

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let (error, _) = refused(
        "unknown",
        &format!("{VALID}[limits]\nmax_conections = 5\n"),
        &[],
    );
    assert!(error.contains("key `limits.max_conections`"), "{error}");
    assert!(error.contains("line 6"), "{error}");
    assert!(
        error.contains("max_connections"),
        "the known keys are listed: {error}"
    );
}

#[test]
fn an_unknown_key_from_the_environment_names_the_variable() {
    let (error, _) = refused(
        "unknown-env",
        VALID,
        &[("SSEIO_HUB__SERVER__LISTEN_ADDR", "0.0.0.0:80")],
    );
    assert!(error.contains("key `server.listen_addr`"), "{error}");
    assert!(error.contains("SSEIO_HUB__SERVER__LISTEN_ADDR"), "{error}");
}

#[test]
fn an_unreadable_key_file_is_named() {
    let text =
        format!("{VALID}[auth.jwt]\nalgorithm = \"RS256\"\npublic_key_file = \"missing.pem\"\n");
    let (error, dir) = refused("key-file", &text, &[]);
    assert!(error.contains("key `auth.jwt.public_key_file`"), "{error}");
    assert!(
        error.contains(&dir.join("missing.pem").display().to_string()),
        "the key file is read next to the configuration: {error}"
    );
    std::fs::write(dir.join("missing.pem"), "not a key").unwrap();
    let output = hub(
        &[
            "--config",
            dir.join("hub.toml").to_str().unwrap(),
            "--check",
        ],
        &[],
    );
    let error = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(error.contains("is not a PEM RSA public key"), "{error}");
}

#[test]
fn a_bad_room_template_is_named() {
    let text = "[server]\npath = \"/files/:guid/pull\"\n[publish]\napi_keys = [\"0123456789abcdef\"]\n\
                [events.news]\nroom = \"{param.id}\"\n";
    let (error, _) = refused("template", text, &[]);
    assert!(error.contains("key `events.news.room`"), "{error}");
    assert!(error.contains("no parameter `id`"), "{error}");
}

#[test]
fn a_fetch_url_that_is_not_http_is_named() {
    let text = format!("{VALID}[events.news.fetch]\nurl = \"https://backend/state\"\n");
    let (error, _) = refused("fetch-url", &text, &[]);
    assert!(error.contains("key `events.news.fetch.url`"), "{error}");
}

#[test]
fn a_missing_configuration_file_is_named() {
    let output = hub(&["--config", "/nonexistent/hub.toml"], &[]);
    let error = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(error.contains("/nonexistent/hub.toml"), "{error}");
}

#[test]
fn print_config_shows_every_default_and_hides_secrets() {
    let dir = scratch("print");
    let file = dir.join("hub.toml");
    std::fs::write(&file, VALID).unwrap();
    let output = hub(
        &["--config", file.to_str().unwrap(), "--print-config"],
        &[("SSEIO_HUB__LIMITS__MAX_CONNECTIONS", "100")],
    );
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("heartbeat_interval_ms = 3000"), "{text}");
    assert!(text.contains("max_connections = 100"), "{text}");
    assert!(!text.contains("0123456789abcdef"), "{text}");
    assert!(text.contains("<redacted>"), "{text}");
}
