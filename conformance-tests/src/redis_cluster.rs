//! A real Redis Cluster for the cluster cases: three masters with one replica each, six
//! `redis-server --cluster-enabled yes` processes on free ports, joined with
//! `redis-cli --cluster create`, nothing saved to disk, killed when dropped. A master can be
//! killed (`SIGKILL`) and its replica's promotion awaited, slots resharded between masters with
//! `redis-cli --cluster reshard`, and each master asked which sharded channels it has.
//!
//! Every wait polls with a deadline; nothing sleeps hoping the cluster got somewhere.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How long the cluster may take to form, or to be `ok` again after a failover or a resharding.
const SETTLE: Duration = Duration::from_secs(60);
/// `cluster-node-timeout`: how long a master may be unreachable before it is failed over. Short,
/// so that a failover takes a few seconds; long enough that a busy two-core machine does not
/// fail a healthy master over.
pub const NODE_TIMEOUT: Duration = Duration::from_millis(1500);

/// One `redis-server` of the cluster.
#[derive(Debug)]
struct Process {
    port: u16,
    child: Option<Child>,
}

/// A master as the cluster reports it (`CLUSTER NODES`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Master {
    /// Its node id.
    pub id: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The slot ranges it owns, inclusive.
    pub slots: Vec<(u16, u16)>,
}

impl Master {
    /// Whether it owns `slot`.
    pub fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }
}

/// Six `redis-server`s forming one Redis Cluster of three masters with a replica each.
#[derive(Debug)]
pub struct RedisCluster {
    dir: PathBuf,
    nodes: Vec<Process>,
}

impl RedisCluster {
    /// Starts six nodes on free ports, joins them as three masters with one replica each, and
    /// waits until every node says `cluster_state:ok`.
    ///
    /// # Panics
    ///
    /// When `redis-server` or `redis-cli` is missing (`apt-get install redis-server`), or the
    /// cluster does not form in time.
    pub async fn start() -> RedisCluster {
        let dir = std::env::temp_dir().join(format!("sseio-cluster-{}", uuid::Uuid::new_v4()));
        let mut cluster = RedisCluster {
            dir,
            nodes: Vec::new(),
        };
        for _ in 0..6 {
            let port = crate::redis_server::free_cluster_port();
            let node_dir = cluster.dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("a temporary directory for redis-server");
            let timeout = NODE_TIMEOUT.as_millis().to_string();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", &timeout])
                // Replicas sync at once (not 5 s later): a replica that never synced cannot be
                // promoted.
                .args(["--repl-diskless-sync-delay", "0"])
                .current_dir(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start redis-server ({e}); install it: apt-get install redis-server"
                    )
                });
            cluster.nodes.push(Process {
                port,
                child: Some(child),
            });
        }
        let deadline = Instant::now() + SETTLE;
        for node in &cluster.nodes {
            while command(node.port, &["PING"]).await.is_err() {
                assert!(
                    Instant::now() < deadline,
                    "redis-server on port {} did not answer PING",
                    node.port
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let creating = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let created = tokio::time::timeout(SETTLE, creating)
            .await
            .expect("redis-cli --cluster create finishes")
            .expect("redis-cli runs");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        cluster.wait_ok("the new cluster").await;
        // Every replica has synced with its master: a failover can happen from now on.
        let deadline = Instant::now() + SETTLE;
        loop {
            let mut synced = 0;
            for port in cluster.live_ports() {
                let info = command(port, &["INFO", "replication"]).await;
                if info
                    .is_ok_and(|i| i.contains("role:slave") && i.contains("master_link_status:up"))
                {
                    synced += 1;
                }
            }
            if synced == 3 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the replicas did not sync: {}",
                cluster.nodes_table().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cluster
    }

    /// The ports of the nodes still running.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// `redis://127.0.0.1:<port>/` of node `port`.
    pub fn url(port: u16) -> String {
        format!("redis://127.0.0.1:{port}/")
    }

    /// `CLUSTER NODES` as a live node answers it.
    async fn nodes_table(&self) -> String {
        for port in self.live_ports() {
            if let Ok(table) = command(port, &["CLUSTER", "NODES"]).await {
                return table;
            }
        }
        panic!("no live node answers CLUSTER NODES");
    }

    /// The masters that own slots and are not flagged failed, as node `port` sees them.
    async fn masters_seen_by(port: u16) -> redis::RedisResult<Vec<Master>> {
        let table = command(port, &["CLUSTER", "NODES"]).await?;
        Ok(parse_masters(&table))
    }

    /// The masters owning slots, as a live node sees them.
    ///
    /// # Panics
    ///
    /// When no live node answers.
    pub async fn masters(&self) -> Vec<Master> {
        parse_masters(&self.nodes_table().await)
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    ///
    /// # Panics
    ///
    /// When no live node answers.
    pub async fn slot_of(&self, key: &str) -> u16 {
        for port in self.live_ports() {
            if let Ok(slot) = command(port, &["CLUSTER", "KEYSLOT", key]).await {
                return slot.parse().expect("CLUSTER KEYSLOT answers a number");
            }
        }
        panic!("no live node answers CLUSTER KEYSLOT");
    }

    /// The master owning `slot`, as a live node sees it.
    ///
    /// # Panics
    ///
    /// When no live master owns it.
    pub async fn master_of(&self, slot: u16) -> Master {
        self.masters()
            .await
            .into_iter()
            .find(|m| m.owns(slot))
            .unwrap_or_else(|| panic!("no master owns slot {slot}"))
    }

    /// Kills node `port` at once (`SIGKILL`), as `kill -9` does.
    ///
    /// # Panics
    ///
    /// When no node of the cluster runs on `port`.
    pub async fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"));
        if let Some(mut child) = node.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Freezes node `port` (`SIGSTOP`): its connections stay open and it answers nothing, as a
    /// host that went away without closing them (a network cut) looks to its clients.
    ///
    /// # Panics
    ///
    /// When no node of the cluster runs on `port`, or the signal cannot be sent.
    pub async fn freeze(&mut self, port: u16) {
        let pid = self
            .nodes
            .iter()
            .find(|n| n.port == port)
            .and_then(|n| n.child.as_ref())
            .and_then(Child::id)
            .unwrap_or_else(|| panic!("no running node on port {port}"));
        let status = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .await
            .expect("kill runs");
        assert!(status.success(), "kill -STOP {pid} failed");
    }

    /// Waits until the slots of master `killed` (killed or frozen before) belong to another node,
    /// and every other node says `cluster_state:ok`; returns the new master of those slots.
    ///
    /// # Panics
    ///
    /// When it does not happen within a minute.
    pub async fn wait_failover(&self, killed: &Master) -> Master {
        let deadline = Instant::now() + SETTLE;
        loop {
            let mut promoted = None;
            for port in self.live_ports().into_iter().filter(|&p| p != killed.port) {
                let Ok(masters) = Self::masters_seen_by(port).await else {
                    continue;
                };
                match masters.into_iter().find(|m| m.slots == killed.slots) {
                    Some(m) if m.id != killed.id => promoted = Some(m),
                    _ => {
                        promoted = None;
                        break;
                    }
                }
            }
            if let Some(promoted) = promoted
                && self.all_ok_but(Some(killed.port)).await
            {
                return promoted;
            }
            assert!(
                Instant::now() < deadline,
                "master {} (port {}) was not failed over in {SETTLE:?}: {}",
                killed.id,
                killed.port,
                self.nodes_table().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether every live node says `cluster_state:ok` (a frozen one never answers: kill it
    /// first, or see [`RedisCluster::all_ok_but`]).
    pub async fn all_ok(&self) -> bool {
        self.all_ok_but(None).await
    }

    /// Whether every live node but `but` says `cluster_state:ok`.
    pub async fn all_ok_but(&self, but: Option<u16>) -> bool {
        for port in self.live_ports().into_iter().filter(|&p| Some(p) != but) {
            let ok = command(port, &["CLUSTER", "INFO"])
                .await
                .is_ok_and(|info| info.contains("cluster_state:ok"));
            if !ok {
                return false;
            }
        }
        true
    }

    async fn wait_ok(&self, what: &str) {
        let deadline = Instant::now() + SETTLE;
        while !self.all_ok().await {
            assert!(
                Instant::now() < deadline,
                "{what}: not every node says cluster_state:ok after {SETTLE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Moves `slots` slots from master `from` to master `to` with
    /// `redis-cli --cluster reshard`, and waits until the cluster is `ok` and every live node
    /// agrees on the new owners.
    ///
    /// # Panics
    ///
    /// When `redis-cli` fails or the cluster does not settle in time.
    pub async fn reshard(&self, from: &Master, to: &Master, slots: usize) {
        let via = format!("127.0.0.1:{}", to.port);
        let moving = Command::new("redis-cli")
            .args(["--cluster", "reshard", &via])
            .args(["--cluster-from", &from.id, "--cluster-to", &to.id])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let moved = tokio::time::timeout(SETTLE, moving)
            .await
            .expect("redis-cli --cluster reshard finishes")
            .expect("redis-cli runs");
        assert!(
            moved.status.success(),
            "redis-cli --cluster reshard failed: {}{}",
            String::from_utf8_lossy(&moved.stdout),
            String::from_utf8_lossy(&moved.stderr)
        );
        self.wait_ok("after the resharding").await;
        let deadline = Instant::now() + SETTLE;
        loop {
            let mut views = Vec::new();
            for port in self.live_ports() {
                if let Ok(mut masters) = Self::masters_seen_by(port).await {
                    masters.sort_by(|a, b| a.id.cmp(&b.id));
                    views.push(masters);
                }
            }
            if views.windows(2).all(|w| w[0] == w[1]) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the nodes disagree on the slots after the resharding"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The sharded channels with subscribers on node `port` (`PUBSUB SHARDCHANNELS`), sorted.
    ///
    /// # Panics
    ///
    /// When the node cannot be asked.
    pub async fn shard_channels(port: u16) -> Vec<String> {
        let answer = command(port, &["PUBSUB", "SHARDCHANNELS"])
            .await
            .expect("PUBSUB SHARDCHANNELS");
        let mut channels: Vec<String> = answer
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        channels.sort();
        channels
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = &mut node.child {
                let _ = child.start_kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The masters owning slots in a `CLUSTER NODES` table, but those flagged `fail`.
fn parse_masters(table: &str) -> Vec<Master> {
    let mut masters = Vec::new();
    for line in table.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            continue;
        }
        let flags = fields[2];
        if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
            continue;
        }
        let port = fields[1]
            .split('@')
            .next()
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|port| port.parse().ok());
        let Some(port) = port else {
            continue;
        };
        let slots: Vec<(u16, u16)> = fields[8..]
            .iter()
            .filter(|s| !s.starts_with('['))
            .filter_map(|s| match s.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => s.parse().ok().map(|n| (n, n)),
            })
            .collect();
        if slots.is_empty() {
            continue;
        }
        masters.push(Master {
            id: fields[0].to_owned(),
            port,
            slots,
        });
    }
    masters.sort_by_key(|m| m.slots.first().copied());
    masters
}

/// Runs one command on node `port` and returns its answer as text (arrays one item per line).
async fn command(port: u16, args: &[&str]) -> redis::RedisResult<String> {
    let client = redis::Client::open(RedisCluster::url(port))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    let value: redis::Value = cmd.query_async(&mut conn).await?;
    Ok(crate::redis_server::text(&value))
}
