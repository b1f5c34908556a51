//! Node.js test scripts run from a Rust test: the real-browser tests (Debian's chromium driven
//! by playwright-core under `node --test`) are glued this way, so a failing node run is a
//! failing `cargo test` that shows node's report.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Where the browser tests expect Debian's chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Bound on one `npm ci`.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Fails with instructions when Debian's chromium is missing: a browser test is never skipped.
///
/// # Panics
///
/// When [`CHROMIUM`] does not exist.
pub fn require_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing, and the browser tests need it: install Debian's chromium: \
         apt-get install -y chromium; `./scripts/test-all` does it"
    );
}

/// Runs `npm ci` in `dir` unless its dependencies are already installed.
///
/// # Panics
///
/// When npm cannot run or the install fails.
pub fn ensure_node_modules(dir: &Path) {
    // npm (7 and later) writes this file last, once an install is complete.
    if dir.join("node_modules").join(".package-lock.json").exists() {
        return;
    }
    let mut npm = Command::new("npm");
    npm.args(["ci", "--no-audit", "--no-fund"]).current_dir(dir);
    let output = run(npm, INSTALL_TIMEOUT);
    assert!(
        output.status.success(),
        "`npm ci` in {} failed ({})\n{}",
        dir.display(),
        output.status,
        describe(&output)
    );
}

/// Runs `node --test` on `files` in `dir` with `envs`, and fails with node's report unless
/// every test passed; returns the report.
///
/// # Panics
///
/// When node cannot run, runs past `timeout`, or a test fails.
pub fn node_test(dir: &Path, files: &[&str], envs: &[(&str, &str)], timeout: Duration) -> String {
    let mut node = Command::new("node");
    node.args(["--test", "--test-reporter=spec"])
        .args(files)
        .current_dir(dir)
        .envs(envs.iter().copied())
        .env("NO_COLOR", "1")
        .env_remove("FORCE_COLOR");
    let output = run(node, timeout);
    let report = describe(&output);
    assert!(
        output.status.success(),
        "`node --test {}` in {} failed ({}):\n{report}",
        files.join(" "),
        dir.display(),
        output.status,
    );
    report
}

/// Runs `command` to completion with its output captured, killing it after `timeout`.
///
/// # Panics
///
/// When the program cannot be started, or when it runs past `timeout`.
pub fn run(mut command: Command, timeout: Duration) -> Output {
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
pub fn describe(output: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout).trim_end(),
        String::from_utf8_lossy(&output.stderr).trim_end(),
    )
}
