//! A real `redis-server` for the multi-node cases: started by the test on a free port, with
//! nothing saved to disk, killed when dropped; it can be killed and restarted mid-test on the
//! same port.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// How long `redis-server` may take to answer its first `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One `redis-server` process (a plain server, or a one-node Redis Cluster owning every slot,
/// for sharded Pub/Sub).
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    cluster: bool,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a plain `redis-server` on a free port and waits until it answers.
    ///
    /// # Panics
    ///
    /// When `redis-server` is not installed (`scripts/test-all` installs it) or does not start.
    pub async fn start() -> RedisServer {
        Self::launch(false).await
    }

    /// Starts a one-node Redis Cluster (cluster mode, all 16384 slots on this node) and waits
    /// until the cluster is `ok`.
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    pub async fn start_cluster() -> RedisServer {
        Self::launch(true).await
    }

    async fn launch(cluster: bool) -> RedisServer {
        let port = if cluster {
            free_cluster_port()
        } else {
            free_port()
        };
        let dir = std::env::temp_dir().join(format!("sseio-redis-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a temporary directory for redis-server");
        let mut server = RedisServer {
            port,
            cluster,
            dir,
            child: None,
        };
        server.restart().await;
        if cluster {
            server
                .command(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"])
                .await
                .expect("CLUSTER ADDSLOTSRANGE");
            let deadline = tokio::time::Instant::now() + START_TIMEOUT;
            while !server
                .command(&["CLUSTER", "INFO"])
                .await
                .is_ok_and(|info| info.contains("cluster_state:ok"))
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the one-node Redis Cluster did not become ok"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        server
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server at once (`SIGKILL`): its clients see the connection drop.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts the server (again) on the same port and waits until it answers `PING`.
    ///
    /// # Panics
    ///
    /// When it cannot be started or does not answer in time.
    pub async fn restart(&mut self) {
        self.kill().await;
        let port = self.port.to_string();
        let mut args = vec![
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ];
        if self.cluster {
            args.extend(["--cluster-enabled", "yes"]);
        }
        let child = Command::new("redis-server")
            .args(&args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}); install it: apt-get install redis-server")
            });
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        while self.command(&["PING"]).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server on port {} did not answer PING",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs one command and returns its answer as text (arrays one item per line).
    ///
    /// # Errors
    ///
    /// When the server cannot be reached or refuses the command.
    pub async fn command(&self, args: &[&str]) -> redis::RedisResult<String> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        let value: redis::Value = cmd.query_async(&mut conn).await?;
        Ok(text(&value))
    }

    /// The channels with at least one subscriber (`PUBSUB CHANNELS`, or `PUBSUB SHARDCHANNELS`
    /// on a cluster).
    ///
    /// # Panics
    ///
    /// When the server cannot be asked.
    pub async fn channels(&self) -> Vec<String> {
        let which = if self.cluster {
            "SHARDCHANNELS"
        } else {
            "CHANNELS"
        };
        let mut channels: Vec<String> = self
            .command(&["PUBSUB", which])
            .await
            .expect("PUBSUB")
            .lines()
            .map(str::to_owned)
            .collect();
        channels.sort();
        channels
    }
}

impl RedisServer {
    /// The number of subscribers of `channel` (`PUBSUB NUMSUB`, or `PUBSUB SHARDNUMSUB` on a
    /// cluster): one per node that serves the room.
    ///
    /// # Panics
    ///
    /// When the server cannot be asked.
    pub async fn subscribers(&self, channel: &str) -> usize {
        let which = if self.cluster {
            "SHARDNUMSUB"
        } else {
            "NUMSUB"
        };
        let answer = self
            .command(&["PUBSUB", which, channel])
            .await
            .expect("PUBSUB NUMSUB");
        answer
            .lines()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("PUBSUB {which} answered {answer:?}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis answer as text: arrays one item per line.
pub(crate) fn text(value: &redis::Value) -> String {
    match value {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        redis::Value::SimpleString(s) | redis::Value::VerbatimString { text: s, .. } => s.clone(),
        redis::Value::Okay => "OK".to_owned(),
        redis::Value::Int(n) => n.to_string(),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            items.iter().map(text).collect::<Vec<_>>().join("\n")
        }
        other => format!("{other:?}"),
    }
}

/// A port for a node of a Redis Cluster, free a moment ago with its cluster bus port
/// (`port + 10000`): both below the kernel's range of ephemeral ports (32768 and up, by
/// default), from which the suite's thousands of client connections take theirs, so that no
/// connection takes the bus port between this check and the node's start (a node whose bus
/// port is taken does not start).
pub(crate) fn free_cluster_port() -> u16 {
    loop {
        let port = 10_000 + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16;
        let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

/// A port that was free a moment ago (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}
