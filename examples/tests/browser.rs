//! The live demo in a real browser: `examples/browser-test/test.mjs` drives Debian's chromium
//! with playwright-core, under `node --test`, against the `demo` binary built with this test.
//!
//! The node script starts the demo itself and restarts it halfway through (see its header), so
//! this is only glue: install the npm dependencies once, check that chromium is there, run node,
//! and turn a failing node run into a failing test that shows node's report. It needs Node 20+,
//! npm for a one-time `npm ci`, and `/usr/bin/chromium`; a missing chromium fails the test with
//! instructions, it is never skipped.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Where the test expects Debian's chromium.
const CHROMIUM: &str = "/usr/bin/chromium";

/// Bound on one whole node run. The script bounds every wait and the test itself (120 s), so
/// this only fires if node itself hangs.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn demo_works_in_a_real_browser() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing, and the demo's browser test needs it: install Debian's chromium: \
         apt-get install -y chromium; `./scripts/test-all` does it"
    );
    let dir = browser_test_dir();
    ensure_node_modules(&dir);

    let mut node = Command::new("node");
    node.args(["--test", "--test-reporter=spec", "test.mjs"])
        .current_dir(&dir)
        .env("DEMO_BIN", env!("CARGO_BIN_EXE_demo"))
        .env("NO_COLOR", "1")
        .env_remove("FORCE_COLOR");
    let output = run(node, RUN_TIMEOUT);
    let report = describe(&output);
    assert!(
        output.status.success(),
        "the demo's browser test failed ({}); `node --test test.mjs` in {}:\n{report}",
        output.status,
        dir.display(),
    );
    println!("the demo's browser test passed\n{report}");
}

/// `examples/browser-test`, wherever the workspace is checked out.
fn browser_test_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser-test")
}

/// Runs `npm ci` in `dir` unless its dependencies are already installed.
fn ensure_node_modules(dir: &Path) {
    // npm (7 and later) writes this file last, once an install is complete.
    if dir.join("node_modules").join(".package-lock.json").exists() {
        return;
    }
    let mut npm = Command::new("npm");
    npm.args(["ci", "--no-audit", "--no-fund"]).current_dir(dir);
    let output = run(npm, RUN_TIMEOUT);
    assert!(
        output.status.success(),
        "`npm ci` in {} failed ({})\n{}",
        dir.display(),
        output.status,
        describe(&output)
    );
}

/// Runs `command` to completion with its output captured, killing it after `timeout`.
///
/// # Panics
///
/// When the program cannot be started, or when it runs past `timeout`.
fn run(mut command: Command, timeout: Duration) -> Output {
    let program = format!("{:?}", command.get_program());
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} (is Node 20+ on PATH?): {e}"));
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                let _ = child.kill();
                let output = Output {
                    status: child
                        .wait()
                        .unwrap_or_else(|e| panic!("cannot reap {program}: {e}")),
                    stdout: stdout.join().unwrap_or_default(),
                    stderr: stderr.join().unwrap_or_default(),
                };
                panic!(
                    "{program} did not finish within {timeout:?}\n{}",
                    describe(&output)
                );
            }
            Err(e) => panic!("cannot wait for {program}: {e}"),
        }
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Reads a child's pipe to its end on a thread, so neither pipe can fill up and block it.
fn read_in_background(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// A child's stdout and stderr, labelled, for a failure message.
fn describe(output: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout).trim_end(),
        String::from_utf8_lossy(&output.stderr).trim_end(),
    )
}
