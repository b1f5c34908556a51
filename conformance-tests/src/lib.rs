//! Support for the sseio conformance suite: start a harness server and talk to it.
//!
//! Every case of the suite drives a server through HTTP only, following the harness contract
//! (`shared/HARNESS.md`), so the same cases run against every adapter's harness binary, and
//! against any running SSE-IO server when `SERVER_URL` is set (for example
//! `SERVER_URL=http://127.0.0.1:8080 cargo test -p conformance-tests`).

pub mod control;
pub mod h2;
pub mod harness;
pub mod http1;
pub mod redis_server;
pub mod sse;

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a harness binary may take to print `listening <port>`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A harness server under test: a child process started on a free port, or the external server
/// named by `SERVER_URL`.
#[derive(Debug)]
pub struct Harness {
    base_url: String,
    adapter: &'static str,
    /// The binary this harness runs, to start siblings with other settings.
    bin: Option<String>,
    child: Option<Child>,
}

impl Harness {
    /// Starts the harness binary `bin` on `PORT=0` with the given extra environment and waits
    /// for its `listening <port>` line. When `SERVER_URL` is set, nothing is started and the
    /// cases run against that server instead.
    ///
    /// # Panics
    ///
    /// When the binary cannot be started or does not announce its port in time: the suite
    /// cannot run without a server, so this is a test failure.
    pub async fn start(adapter: &'static str, bin: &str, env: &[(&str, &str)]) -> Harness {
        if let Ok(url) = std::env::var("SERVER_URL") {
            return Harness {
                base_url: url.trim_end_matches('/').to_owned(),
                adapter,
                bin: None,
                child: None,
            };
        }
        let mut child = Command::new(bin)
            .env("PORT", "0")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{adapter}: cannot start harness {bin}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await.ok().flatten() {
                if let Some(port) = line.strip_prefix("listening ") {
                    return port.trim().parse::<u16>().ok();
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("{adapter}: harness {bin} did not print `listening <port>`"));
        // Keep draining stdout so the harness never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Harness {
            base_url: format!("http://127.0.0.1:{port}"),
            adapter,
            bin: Some(bin.to_owned()),
            child: Some(child),
        }
    }

    /// Starts another harness of the same adapter with extra environment (the capabilities of
    /// `HARNESS.md`, such as `SSEIO_MAX_EVENTS`). `None` when the suite runs against an external
    /// server (`SERVER_URL`), whose settings it cannot choose.
    pub async fn with_env(&self, env: &[(&str, &str)]) -> Option<Harness> {
        let bin = self.bin.as_deref()?;
        Some(Harness::start(self.adapter, bin, env).await)
    }

    /// The server's base URL, such as `http://127.0.0.1:43117`, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The absolute URL of `path_and_query` on this server.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base_url, path_and_query)
    }

    /// The name of the adapter under test, for failure messages.
    pub fn adapter(&self) -> &'static str {
        self.adapter
    }

    /// The harness process's resident memory (`VmRSS`), in bytes, when this suite started it
    /// and the platform has `/proc`.
    pub fn rss_bytes(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Sends `SIGTERM` to the harness process, which drains and exits (`HARNESS.md`).
    ///
    /// # Panics
    ///
    /// When this harness is an external server, or the signal cannot be sent.
    pub fn terminate(&self) {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("a harness process started by the suite");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits up to `limit` for the harness process to exit and returns its status.
    ///
    /// # Panics
    ///
    /// When this harness is an external server, or the process does not exit in time.
    pub async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let child = self
            .child
            .as_mut()
            .expect("a harness process started by the suite");
        tokio::time::timeout(limit, child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{}: the harness did not exit within {limit:?}",
                    self.adapter
                )
            })
            .expect("waiting for the harness")
    }

    /// The harness child process, when this suite started one (not with `SERVER_URL`).
    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }
}
