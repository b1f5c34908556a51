//! Support for the sseio conformance suite: start a harness server and talk to it.
//!
//! Every case of the suite drives a server through HTTP only, following the harness contract
//! (`conformance-tests/HARNESS.md`), so the same cases run against every adapter's harness binary,
//! and against any running SSE-IO server when `SERVER_URL` is set (for example
//! `SERVER_URL=http://127.0.0.1:8080 cargo test -p conformance-tests`).

pub mod control;
pub mod crowd;
pub mod h2;
pub mod harness;
pub mod http1;
pub mod message_check;
pub mod nginx;
pub mod redis_cluster;
pub mod redis_server;
pub mod sse;

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

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
    /// The environment it was started with before a case's own (how it is served), which its
    /// siblings start with too.
    base_env: &'static [(&'static str, &'static str)],
    child: Option<Child>,
    /// Reads the child's stdout to its end, keeping the `log <JSON>` line it prints on exit.
    stdout: Option<JoinHandle<Option<String>>>,
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
        Harness::start_with_base(adapter, bin, &[], env).await
    }

    /// As [`Harness::start`], with `base_env` before `env` (so `env` wins where both set a
    /// variable): the environment that makes the binary the adapter under test (`SSEIO_SERVE`),
    /// which [`Harness::with_env`] gives its siblings too.
    ///
    /// # Panics
    ///
    /// As [`Harness::start`].
    pub async fn start_with_base(
        adapter: &'static str,
        bin: &str,
        base_env: &'static [(&'static str, &'static str)],
        env: &[(&str, &str)],
    ) -> Harness {
        if let Ok(url) = std::env::var("SERVER_URL") {
            return Harness {
                base_url: url.trim_end_matches('/').to_owned(),
                adapter,
                bin: None,
                base_env,
                child: None,
                stdout: None,
            };
        }
        let mut child = Command::new(bin)
            .env("PORT", "0")
            .envs(base_env.iter().copied())
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
        // Keep draining stdout so the harness never blocks on a full pipe, and keep the log it
        // prints as it exits.
        let stdout = tokio::spawn(async move {
            let mut exit_log = None;
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(log) = line.strip_prefix("log ") {
                    exit_log = Some(log.to_owned());
                }
            }
            exit_log
        });
        Harness {
            base_url: format!("http://127.0.0.1:{port}"),
            adapter,
            bin: Some(bin.to_owned()),
            base_env,
            child: Some(child),
            stdout: Some(stdout),
        }
    }

    /// Starts another harness of the same adapter with extra environment (the capabilities of
    /// `conformance-tests/HARNESS.md`, such as `SSEIO_MAX_EVENTS`), served as this one is (its
    /// base environment, see [`Harness::start_with_base`]).
    ///
    /// # Panics
    ///
    /// When this harness is an external server (`SERVER_URL`), whose settings the suite cannot
    /// choose: a case that needs settings declares so, and the suite does not run it against an
    /// external server.
    pub async fn with_env(&self, env: &[(&str, &str)]) -> Harness {
        let bin = self.bin.as_deref().unwrap_or_else(|| {
            panic!(
                "{}: an external server's settings cannot be chosen; a case that needs them must \
                 declare `needs [Settings]` so that it is not run against one",
                self.adapter
            )
        });
        Harness::start_with_base(self.adapter, bin, self.base_env, env).await
    }

    /// The server's base URL, such as `http://127.0.0.1:43117`, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The server's `host:port`, such as `127.0.0.1:43117`: where a proxy in front of it
    /// connects.
    pub fn authority(&self) -> &str {
        let rest = self
            .base_url
            .split_once("://")
            .map_or(self.base_url.as_str(), |(_, rest)| rest);
        rest.split('/').next().unwrap_or(rest)
    }

    /// The peers' ports of the TCP connections to the server's port that are established on the
    /// server's side right now, sorted, from Linux's `/proc/net/tcp` and `/proc/net/tcp6`: which
    /// connections a proxy in front of the server keeps open (and any request of the case itself
    /// still in flight). `None` without those files, or when the port cannot be told from the
    /// base URL.
    pub fn established_peer_ports(&self) -> Option<Vec<u16>> {
        let port: u16 = self.authority().rsplit(':').next()?.parse().ok()?;
        let hex_port = |address: &str| {
            address
                .rsplit(':')
                .next()
                .and_then(|hex| u16::from_str_radix(hex, 16).ok())
        };
        let mut peers = None;
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let Ok(table) = std::fs::read_to_string(table) else {
                continue;
            };
            let peers = peers.get_or_insert_with(Vec::new);
            // `sl local_address rem_address st ...`: addresses as `HEXIP:HEXPORT`, state `01`
            // for ESTABLISHED.
            for line in table.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().take(4).collect();
                if let [_, local, remote, "01"] = fields[..]
                    && hex_port(local) == Some(port)
                    && let Some(peer) = hex_port(remote)
                {
                    peers.push(peer);
                }
            }
        }
        peers.map(|mut peers| {
            peers.sort_unstable();
            peers
        })
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
        self.proc_status_bytes("VmRSS:")
    }

    /// The harness process's peak resident memory (`VmHWM`), in bytes, since it started or since
    /// the last [`Harness::reset_peak_rss`]; `None` as for [`Harness::rss_bytes`].
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        self.proc_status_bytes("VmHWM:")
    }

    /// Resets the harness process's peak resident memory to its current resident memory (Linux's
    /// `/proc/PID/clear_refs`), so that [`Harness::peak_rss_bytes`] covers what follows. Whether
    /// it could.
    pub fn reset_peak_rss(&self) -> bool {
        self.child
            .as_ref()
            .and_then(Child::id)
            .is_some_and(|pid| std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok())
    }

    fn proc_status_bytes(&self, field: &str) -> Option<u64> {
        let pid = self.child.as_ref()?.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Sends `SIGTERM` to the harness process, which drains and exits
    /// (`conformance-tests/HARNESS.md`).
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

    /// The lifecycle log the harness printed on stdout as it exited (`log <JSON array>`, see
    /// `HarnessApp::print_log`): once a drain has ended the process, `GET /_control/log` is gone
    /// with it. Call after [`Harness::wait_exit`].
    ///
    /// # Panics
    ///
    /// When this harness is an external server, its stdout does not end within `limit`, or it
    /// printed no log or one that is not a JSON array of records.
    pub async fn exit_log(&mut self, limit: Duration) -> Vec<control::LogRecord> {
        let adapter = self.adapter;
        let stdout = self
            .stdout
            .take()
            .expect("a harness process started by the suite");
        let line = tokio::time::timeout(limit, stdout)
            .await
            .unwrap_or_else(|_| panic!("{adapter}: the harness's stdout did not end in {limit:?}"))
            .expect("reading the harness's stdout")
            .unwrap_or_else(|| panic!("{adapter}: the harness printed no `log` line as it exited"));
        serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!("{adapter}: the harness's exit log is not a JSON array of records: {e}")
        })
    }

    /// The harness child process, when this suite started one (not with `SERVER_URL`).
    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }
}
