//! How each harness binary is served (`SSEIO_SERVE`, `conformance-tests/HARNESS.md`): a value it
//! does not know, or a way it cannot serve, is a startup error. The binary prints one line on
//! stderr naming the variable and the value, binds nothing (no `listening` line), and exits with
//! status 1, rather than serving some other way than the one asked for.
//!
//! These run the binaries themselves, not a server, so they are trials of their own, one per
//! binary and value, named `<adapter>::sseio_serve_<value>_is_a_startup_error`.

use std::process::Stdio;
use std::time::Duration;

use libtest_mimic::Trial;
use tokio::process::Command;

use super::registry::{self, ADAPTERS};

/// How long a binary may take to refuse to start.
const EXIT_WITHIN: Duration = Duration::from_secs(30);

/// A way a binary cannot serve, by adapter name: actix-web has its own HTTP stack, and the hub
/// is a binary of its own.
const ONE_WAY_ONLY: &[(&str, &str)] = &[("actix", "lean"), ("hub", "framework")];

/// A value of `SSEIO_SERVE` that names no way.
const UNKNOWN: &str = "sideways";

/// The trials: every binary with an unknown value, and the binaries served one way with the
/// other.
pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    // Each binary once: by the entry that starts it with its default.
    for adapter in ADAPTERS.iter().filter(|a| a.env.is_empty()) {
        let mut values = vec![UNKNOWN];
        values.extend(
            ONE_WAY_ONLY
                .iter()
                .filter(|(name, _)| *name == adapter.name)
                .map(|(_, way)| *way),
        );
        for value in values {
            let name = format!("{}::sseio_serve_{value}_is_a_startup_error", adapter.name);
            trials.push(registry::trial(name, &[], move || async move {
                refuses_to_start(adapter.bin, value).await;
            }));
        }
    }
    trials
}

/// Starts `bin` with `SSEIO_SERVE=value` and asserts the startup error.
async fn refuses_to_start(bin: &str, value: &str) {
    let run = Command::new(bin)
        .env("PORT", "0")
        .env("SSEIO_SERVE", value)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(EXIT_WITHIN, run)
        .await
        .unwrap_or_else(|_| {
            panic!("{bin} with SSEIO_SERVE={value} still runs after {EXIT_WITHIN:?}")
        })
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{bin} with SSEIO_SERVE={value}: exit status; stderr: {stderr}"
    );
    assert!(
        !stdout.contains("listening"),
        "{bin} with SSEIO_SERVE={value} must bind nothing; stdout: {stdout}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.len() == 1
            && lines[0].starts_with("harness-")
            && lines[0].contains("SSEIO_SERVE=")
            && lines[0].contains(value),
        "{bin} with SSEIO_SERVE={value}: one line on stderr naming the variable and the value, \
         got: {stderr}"
    );
}
