//! The JavaScript suite (`conformance-tests/js`): the official `sse.io-client` and a spec
//! `EventSource`, as applications use them, run by `node --test` against the harness.
//!
//! The cases themselves live in `js/test/*.test.js` and talk to the server over HTTP only, so
//! here there is only the glue: install the npm dependencies once, run node with `SERVER_URL`
//! pointing at the harness, and turn a failing node run into a failing Rust test that shows
//! node's report.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use conformance_tests::Harness;
use tokio::process::Command;

super::registry::case_table! {
    official_js_client,
    js_clients_resume_with_history needs [Settings],
}

/// Bound on one whole run of the JS suite. Every JS case has its own 15 s timeout, so this only
/// fires when node itself hangs.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs the JavaScript conformance suite against `h` and fails with node's report if any JS
/// case fails.
///
/// # Panics
///
/// When `npm ci` or node cannot run, or when a JS case fails; the message names the adapter
/// and carries node's output, so the log shows which JS case failed and why.
pub async fn official_js_client(h: &Harness) {
    run_js_suite(h, "test/", &[]).await;
}

/// The JavaScript history cases (`js/test/history.test.js`) against a harness with
/// `SSEIO_HISTORY`: a spec `EventSource` and the official client, each disconnected by the
/// server mid-stream while messages keep flowing, get every message once and in order.
pub async fn js_clients_resume_with_history(h: &Harness) {
    let h = h.with_env(&[("SSEIO_HISTORY", "100")]).await;
    run_js_suite(&h, "test/history.test.js", &[("SSEIO_HISTORY", "100")]).await;
}

/// Runs `node --test <tests>` in `js/` against `h`, failing with node's report if a JS case
/// fails.
async fn run_js_suite(h: &Harness, tests: &str, env: &[(&str, &str)]) {
    let adapter = h.adapter();
    let dir = js_dir();

    let install_dir = dir.clone();
    tokio::task::spawn_blocking(move || ensure_node_modules(&install_dir))
        .await
        .expect("the npm install task panicked")
        .unwrap_or_else(|e| panic!("{adapter}: cannot install the JS suite's dependencies: {e}"));

    let run = Command::new("node")
        .args(["--test", "--test-reporter=spec", tests])
        .current_dir(&dir)
        .env("SERVER_URL", h.base_url())
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .env_remove("FORCE_COLOR")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{adapter}: `node --test {tests}` in {} did not finish within {RUN_TIMEOUT:?}",
                dir.display()
            )
        })
        .unwrap_or_else(|e| {
            panic!("{adapter}: cannot run `node --test` (is Node 20+ on PATH?): {e}")
        });

    let report = describe(&output);
    assert!(
        output.status.success(),
        "{adapter}: the JavaScript conformance suite ({tests}) failed against {} ({})\n{report}",
        h.base_url(),
        output.status,
    );
    super::note(&format!(
        "{adapter}: JavaScript conformance suite ({tests}) passed\n{report}"
    ));
}

/// `conformance-tests/js`, wherever the workspace is checked out.
fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// Runs `npm ci` in `dir` unless its dependencies are already installed, at most once per test
/// process. Tests for several adapters run in parallel threads; the `OnceLock` makes every one
/// of them wait for the single install instead of racing two `npm ci`s in one directory.
fn ensure_node_modules(dir: &Path) -> Result<(), String> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            // npm (7 and later) writes this file last, once an install is complete.
            if dir.join("node_modules").join(".package-lock.json").exists() {
                return Ok(());
            }
            let output = std::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(dir)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run `npm ci` (is npm on PATH?): {e}"))?;
            if output.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "`npm ci` in {} failed ({})\n{}",
                    dir.display(),
                    output.status,
                    describe(&output)
                ))
            }
        })
        .clone()
}

/// A child's stdout and stderr, labelled, for a failure message.
fn describe(output: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout).trim_end(),
        String::from_utf8_lossy(&output.stderr).trim_end(),
    )
}
