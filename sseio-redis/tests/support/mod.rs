//! What the tests against a real `redis-server` share: the server, started on a free port.

#![allow(dead_code)] // Each test file uses its part.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use sseio_core::{Connection, Server};
use sseio_test_support::RecordingSink;

use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How long anything (Redis starting, the broker reconnecting, a message arriving) may take.
pub(crate) const WAIT: Duration = Duration::from_secs(15);

/// One `redis-server`, saving every write before it answers (`appendfsync always`), so that
/// what it acknowledged before a `SIGKILL` is there again after a restart.
pub(crate) struct Redis {
    port: u16,
    dir: PathBuf,
    cluster: bool,
    child: Option<Child>,
}

impl Redis {
    /// Starts one on a free port, in a fresh directory, and waits until it answers.
    pub(crate) async fn start() -> Redis {
        Self::launch(false).await
    }

    /// Starts a one-node Redis Cluster (every slot on this node), for sharded Pub/Sub, and
    /// waits until the cluster is `ok`.
    pub(crate) async fn start_cluster() -> Redis {
        let redis = Self::launch(true).await;
        redis
            .command(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"])
            .await
            .expect("CLUSTER ADDSLOTSRANGE");
        let deadline = Instant::now() + WAIT;
        loop {
            if redis.cluster_ok().await {
                return redis;
            }
            assert!(
                Instant::now() < deadline,
                "the one-node cluster did not become ok"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn cluster_ok(&self) -> bool {
        match self.command(&["CLUSTER", "INFO"]).await {
            Ok(redis::Value::BulkString(bytes)) => {
                String::from_utf8_lossy(&bytes).contains("cluster_state:ok")
            }
            Ok(redis::Value::VerbatimString { text, .. }) => text.contains("cluster_state:ok"),
            _ => false,
        }
    }

    async fn launch(cluster: bool) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("sseio-redis-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let mut redis = Redis {
            port,
            dir,
            cluster,
            child: None,
        };
        redis.restart().await;
        redis
    }

    /// `redis://127.0.0.1:<port>/`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts it (again, on the same port and data) and waits until it answers.
    pub(crate) async fn restart(&mut self) {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(if self.cluster {
                &["--cluster-enabled", "yes"][..]
            } else {
                &[]
            })
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}); install it: apt-get install redis-server")
            });
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while self.command(&["PING"]).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `SIGKILL`, and waits until the process is gone.
    pub(crate) async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill redis-server");
        }
    }

    /// Deletes what it saved, so that its next start is empty (call it while it is killed).
    pub(crate) fn wipe(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir).expect("a temporary directory");
    }

    /// Runs one command on a connection of its own.
    pub(crate) async fn command(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut cmd = redis::cmd(args[0]);
        cmd.arg(&args[1..]);
        cmd.query_async(&mut conn).await
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Opens a stream of `target` (path and query) on `server`, recording what it is sent.
pub(crate) async fn open(server: &Server, target: &str) -> (Connection, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    let request = http::Request::get(target).body(()).unwrap();
    let connection = server
        .connect((&request).into(), sink.clone())
        .await
        .expect("the stream opens");
    (connection, sink)
}

/// Polls `done` until it holds, within [`WAIT`].
pub(crate) async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The ids of the clients connected to `redis` now (`CLIENT LIST`), but the one asking.
pub(crate) async fn client_ids(redis: &Redis) -> Vec<String> {
    let list = match redis.command(&["CLIENT", "LIST"]).await.unwrap() {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes).unwrap(),
        redis::Value::VerbatimString { text, .. } => text,
        other => panic!("CLIENT LIST answered {other:?}"),
    };
    list.lines()
        .filter(|line| !line.contains("cmd=client|list"))
        .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_owned)
        .collect()
}
