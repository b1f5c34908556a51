//! sseio-redis on a real Redis Cluster (issue 14): three masters with a replica each (six
//! `redis-server --cluster-enabled yes`, [`RedisCluster`]), two `harness-hyper` nodes in
//! sharded mode (`SSEIO_REDIS_SHARDED=1`), raw SSE clients on both nodes in rooms chosen so that
//! their channels hash to every master, and a sender posting numbered messages to every room
//! through `POST /_control/send` on the nodes in turn (one at a time per room; `200` means Redis
//! published it). One thing happens to the cluster per case:
//!
//! - `rooms_on_every_master_deliver_across_nodes`: nothing; every room delivers;
//! - `a_master_killed_costs_only_its_own_rooms`: a master is killed (`kill -9`) mid-run and its
//!   replica promoted;
//! - `a_master_frozen_costs_its_own_rooms_and_a_pause`: a master is frozen (`SIGSTOP`: it
//!   answers nothing and closes nothing, as a host cut off by the network) and its replica
//!   promoted;
//! - `a_resharding_moves_live_rooms_without_loss`: slots holding live rooms' channels move to
//!   another master (`redis-cli --cluster reshard`).
//!
//! Each case asserts what a user would notice: every client gets each accepted message of its
//! room exactly once and in order, on the stream it opened (none reconnects); a refused send is
//! allowed only for the rooms of a master that failed, and only until the cluster is `ok` again
//! and the nodes have followed it ([`FOLLOW`]); no send hangs. Once every client has left, no
//! master has a room's sharded channel any more (`PUBSUB SHARDCHANNELS`). Each case prints, with
//! `--nocapture`, what it measured: the failed shard's gap, the healthy shards' longest pause.
//!
//! The cases run one at a time, each on a fresh cluster.

#[path = "../cases/mod.rs"]
#[allow(dead_code)] // The conformance cases and their helpers; only some are used here.
pub mod cases;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conformance_tests::Harness;
use conformance_tests::control;
use conformance_tests::redis_cluster::{Master, RedisCluster};
use conformance_tests::sse::SseStream;
use tokio::sync::MutexGuard;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cases::registry::{self, Need, note};
use crate::cases::{connect, new_id};

/// The event every room is of.
const EVENT: &str = "normal-event";
/// Rooms per master.
const ROOMS_PER_MASTER: usize = 8;
/// How often the sender posts to each room.
const PACE: Duration = Duration::from_millis(100);
/// How long a send may take before it counts as hung: the broker's confirmation timeout (5 s)
/// and slack for a loaded machine.
const SEND_LIMIT: Duration = Duration::from_secs(8);
/// How long after the cluster is `ok` again the nodes may still refuse the failed shard's
/// sends: the broker polls the topology while a shard is down, connects to the new master,
/// subscribes its rooms there, and publishes to it once the other nodes have subscribed there
/// too.
const FOLLOW: Duration = Duration::from_secs(3);
/// How long any awaited condition may take.
const WAIT: Duration = Duration::from_secs(30);
/// The backstop of a whole case.
const CASE_LIMIT: Duration = Duration::from_secs(120);

type Fault = for<'a> fn(&'a mut Cluster) -> Pin<Box<dyn Future<Output = Option<Event>> + 'a>>;

/// One case: its name, what happens to the cluster while the sender runs, and the longest pause
/// between two accepted sends the rooms of the other masters may see.
struct Case {
    name: &'static str,
    fault: Fault,
    pause_limit: Duration,
}

macro_rules! case {
    ($name:ident, $pause_limit_ms:expr) => {
        Case {
            name: stringify!($name),
            fault: |cluster| Box::pin($name(cluster)),
            pause_limit: Duration::from_millis($pause_limit_ms),
        }
    };
}

/// Generous next to the sender's 100 ms pace, for a loaded two-core machine; a frozen master
/// holds the node's other sends up to the broker's 2 s answer timeout, once.
const CASES: &[Case] = &[
    case!(rooms_on_every_master_deliver_across_nodes, 1500),
    case!(a_master_killed_costs_only_its_own_rooms, 1500),
    case!(a_master_frozen_costs_its_own_rooms_and_a_pause, 4000),
    case!(a_resharding_moves_live_rooms_without_loss, 1500),
];

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    registry::show_output(args.nocapture);
    let trials = CASES
        .iter()
        .map(|case| {
            registry::trial(
                format!("cluster::{}", case.name),
                &[Need::Nodes],
                move || async move {
                    let _turn = one_at_a_time().await;
                    if tokio::time::timeout(CASE_LIMIT, run(case)).await.is_err() {
                        panic!("{} did not finish within {CASE_LIMIT:?}", case.name);
                    }
                },
            )
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

/// Waits for this case's turn: one case at a time, whatever `--test-threads` says.
async fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

/// What a fault did, for the checks: which master failed (its rooms may refuse sends until
/// `ok_at` + [`FOLLOW`]), when it was killed, and when the cluster was `ok` again.
#[derive(Debug, Clone)]
struct Event {
    failed: Option<Master>,
    at: Instant,
    ok_at: Instant,
    what: String,
}

/// The cluster of one case: Redis, the nodes, the rooms and their clients.
#[derive(Debug)]
pub struct Cluster {
    redis: RedisCluster,
    nodes: Vec<Harness>,
    rooms: Vec<Room>,
}

/// One room: its id, the master its channel hashes to, what was sent, who listens.
#[derive(Debug)]
struct Room {
    id: String,
    master: Master,
    sends: Arc<Mutex<Vec<Send>>>,
    clients: Vec<Client>,
}

/// One numbered send.
#[derive(Debug, Clone, Copy)]
struct Send {
    n: u64,
    started: Instant,
    answered: Instant,
    accepted: bool,
}

/// One raw SSE client and what it got.
#[derive(Debug)]
struct Client {
    id: String,
    node: usize,
    got: Arc<Mutex<Vec<u64>>>,
    ended: Arc<AtomicBool>,
    stop: Arc<tokio::sync::Notify>,
    reader: JoinHandle<()>,
}

/// The channel of `room` of [`EVENT`] (sseio-redis's format, prefix `sseio`).
fn channel(room: &str) -> String {
    format!("sseio:room:{}:{EVENT}:{room}", EVENT.len())
}

impl Cluster {
    /// A fresh Redis Cluster, two nodes on it (their `REDIS_URL` the master of the highest
    /// slots, which no case kills), and [`ROOMS_PER_MASTER`] rooms per master, each with a
    /// client on each node, subscribed everywhere.
    async fn start() -> Cluster {
        let redis = RedisCluster::start().await;
        let masters = redis.masters().await;
        assert_eq!(masters.len(), 3, "three masters: {masters:?}");
        let url = RedisCluster::url(masters[2].port);
        let env = [("REDIS_URL", url.as_str()), ("SSEIO_REDIS_SHARDED", "1")];
        let hyper = registry::adapter("hyper");
        let mut nodes = Vec::new();
        for _ in 0..2 {
            nodes.push(Harness::start(hyper.name, hyper.bin, &env).await);
        }
        let mut per_master: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut rooms = Vec::new();
        while rooms.len() < ROOMS_PER_MASTER * masters.len() {
            let id = new_id();
            let master = redis.master_of(redis.slot_of(&channel(&id)).await).await;
            let on_master = per_master.entry(master.id.clone()).or_default();
            if on_master.len() == ROOMS_PER_MASTER {
                continue;
            }
            on_master.push(id.clone());
            rooms.push(Room {
                id,
                master,
                sends: Arc::default(),
                clients: Vec::new(),
            });
        }
        let mut cluster = Cluster {
            redis,
            nodes,
            rooms,
        };
        for r in 0..cluster.rooms.len() {
            for node in 0..cluster.nodes.len() {
                let client = cluster.join(r, node).await;
                cluster.rooms[r].clients.push(client);
            }
        }
        for room in &cluster.rooms {
            let ids: Vec<&str> = room.clients.iter().map(|c| c.id.as_str()).collect();
            for node in &cluster.nodes {
                wait_presence(node, &room.id, &ids).await;
            }
        }
        cluster
    }

    /// Opens a client of room `r` on node `node`, reading its stream in a task.
    async fn join(&self, r: usize, node: usize) -> Client {
        let id = new_id();
        let mut stream: SseStream =
            connect(&self.nodes[node], &self.rooms[r].id, &id, &[EVENT]).await;
        let got: Arc<Mutex<Vec<u64>>> = Arc::default();
        let ended = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(tokio::sync::Notify::new());
        let reader = tokio::spawn({
            let (got, ended, stop) = (got.clone(), ended.clone(), stop.clone());
            async move {
                loop {
                    tokio::select! {
                        _ = stop.notified() => break,
                        event = stream.next_event() => match event {
                            Ok(Some(event)) => {
                                if let Ok(n) = event.data.parse() {
                                    got.lock().unwrap().push(n);
                                }
                            }
                            Ok(None) | Err(_) => {
                                ended.store(true, Ordering::SeqCst);
                                return;
                            }
                        },
                    }
                }
                stream.close().await;
            }
        });
        Client {
            id,
            node,
            got,
            ended,
            stop,
            reader,
        }
    }
}

/// Polls presence of `room` on `node` until it lists exactly `clients`: every node serving the
/// room answers only through its subscription, so sends from now on reach all of them.
async fn wait_presence(node: &Harness, room: &str, clients: &[&str]) {
    let mut expected: Vec<String> = clients.iter().map(|&c| c.to_owned()).collect();
    expected.sort();
    let deadline = Instant::now() + WAIT;
    loop {
        let seen = control::presence(node, EVENT, room).await;
        if seen.as_ref().is_ok_and(|p| p.client_ids == expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "presence of {room}: expected {expected:?}, still {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends numbered messages to room `room` through the nodes in turn, one at a time, one every
/// [`PACE`], until `stop` is set; records each outcome in `sends`.
async fn sender(
    nodes: Vec<String>,
    room: String,
    sends: Arc<Mutex<Vec<Send>>>,
    stop: Arc<AtomicBool>,
) {
    let mut every = tokio::time::interval(PACE);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        every.tick().await;
        n += 1;
        let node = &nodes[n as usize % nodes.len()];
        let started = Instant::now();
        let target = format!(
            "/_control/send?event={EVENT}&room={}",
            control::encode_component(&room)
        );
        let request = conformance_tests::http1::Request::new("POST", target)
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("Connection", "close")
            .body(n.to_string().into_bytes());
        let answered = tokio::time::timeout(SEND_LIMIT, async {
            let mut response = request.send(node).await?;
            let _ = response.read_to_end().await;
            std::io::Result::Ok(response.status())
        })
        .await;
        let accepted = match answered {
            Ok(Ok(200)) => true,
            // The broker's typed error (`Unavailable`, `Unconfirmed`), as the harness maps it.
            Ok(Ok(503)) => false,
            Ok(Ok(status)) => panic!("POST /_control/send to {node} answered {status}"),
            Ok(Err(e)) => panic!("POST /_control/send to {node} failed: {e}"),
            Err(_) => {
                // Counted as refused, and said: a hang is a failure of the case.
                eprintln!("a send to room {room} hung for {SEND_LIMIT:?}");
                HUNG.store(true, Ordering::SeqCst);
                false
            }
        };
        sends.lock().unwrap().push(Send {
            n,
            started,
            answered: Instant::now(),
            accepted,
        });
    }
}

/// Set when a send hung for [`SEND_LIMIT`].
static HUNG: AtomicBool = AtomicBool::new(false);

/// How long the sender runs before the fault and after it.
const BEFORE: Duration = Duration::from_millis(1500);
const AFTER: Duration = Duration::from_millis(2000);

async fn run(case: &Case) {
    let started = Instant::now();
    let mut cluster = Cluster::start().await;
    let ready = started.elapsed();
    let bases: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.base_url().to_owned())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = cluster
        .rooms
        .iter()
        .map(|room| {
            tokio::spawn(sender(
                bases.clone(),
                room.id.clone(),
                room.sends.clone(),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(BEFORE).await;
    let event = (case.fault)(&mut cluster).await;
    // Every room delivers again: each had an accepted send after the fault, then some more.
    let resumed_from = Instant::now();
    for room in &cluster.rooms {
        let deadline = Instant::now() + WAIT;
        while !room
            .sends
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.accepted && s.started >= resumed_from)
        {
            assert!(
                Instant::now() < deadline,
                "room {} (master port {}) never accepted a send again",
                room.id,
                room.master.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(AFTER).await;
    stop.store(true, Ordering::SeqCst);
    for sender in senders {
        sender.await.expect("a sender");
    }

    // Every client gets its room's last accepted message (or the checks below say what not).
    let deadline = Instant::now() + WAIT;
    for room in &cluster.rooms {
        let last = room
            .sends
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|s| s.accepted)
            .map(|s| s.n)
            .expect("accepted sends");
        for client in &room.clients {
            while !client.got.lock().unwrap().contains(&last) {
                if Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    let mut failures = Vec::new();
    if HUNG.swap(false, Ordering::SeqCst) {
        failures.push(format!("a send hung for {SEND_LIMIT:?}"));
    }
    let mut report = format!(
        "{}: 3 masters with a replica each, 2 nodes, {} rooms ({ROOMS_PER_MASTER} per master), \
         a client of each on each node; ready in {ready:.1?}",
        case.name,
        cluster.rooms.len()
    );
    if let Some(event) = &event {
        report.push_str(&format!(
            "\n  {}; cluster ok again {:.2?} later",
            event.what,
            event.ok_at - event.at
        ));
    }
    let (mut healthy_pause, mut failed_gap) = (Duration::ZERO, None::<Duration>);
    for room in &cluster.rooms {
        let sends = room.sends.lock().unwrap().clone();
        let failed_shard = event
            .as_ref()
            .and_then(|e| e.failed.as_ref())
            .is_some_and(|m| m.id == room.master.id);
        let refused: Vec<&Send> = sends.iter().filter(|s| !s.accepted).collect();
        for send in &refused {
            let allowed = failed_shard
                && event
                    .as_ref()
                    .is_some_and(|e| send.answered >= e.at && send.started <= e.ok_at + FOLLOW);
            if !allowed {
                failures.push(format!(
                    "room {} (master port {}{}): send {} refused {:.2?} into the run",
                    room.id,
                    room.master.port,
                    if failed_shard { ", the failed one" } else { "" },
                    send.n,
                    send.started - started
                ));
            }
        }
        // The longest time between two accepted sends: the gap a user saw.
        let accepted: Vec<&Send> = sends.iter().filter(|s| s.accepted).collect();
        let longest = accepted
            .windows(2)
            .map(|w| w[1].answered - w[0].answered)
            .max()
            .unwrap_or_default();
        if failed_shard {
            failed_gap = Some(failed_gap.unwrap_or_default().max(longest));
        } else {
            healthy_pause = healthy_pause.max(longest);
        }
        let accepted_numbers: Vec<u64> = accepted.iter().map(|s| s.n).collect();
        let attempted = sends.len() as u64;
        for client in &room.clients {
            let got = client.got.lock().unwrap().clone();
            if client.ended.load(Ordering::SeqCst) {
                failures.push(format!(
                    "client {} on node {}: its stream ended",
                    client.id, client.node
                ));
            }
            if let Some(w) = got.windows(2).find(|w| w[0] >= w[1]) {
                failures.push(format!(
                    "client {} of room {}: {} then {} (out of order or twice)",
                    client.id, room.id, w[0], w[1]
                ));
            }
            let missing: Vec<u64> = accepted_numbers
                .iter()
                .copied()
                .filter(|n| got.binary_search(n).is_err())
                .collect();
            if !missing.is_empty() {
                failures.push(format!(
                    "client {} on node {} of room {} (master port {}{}): {} accepted sends \
                     never arrived, the first {:?}",
                    client.id,
                    client.node,
                    room.id,
                    room.master.port,
                    if failed_shard { ", the failed one" } else { "" },
                    missing.len(),
                    &missing[..missing.len().min(10)]
                ));
            }
            if let Some(n) = got.iter().find(|&&n| n == 0 || n > attempted) {
                failures.push(format!("client {}: got {n}, never sent", client.id));
            }
        }
        report.push_str(&format!(
            "\n  room {} on master port {}{}: {} sent, {} accepted, {} refused, longest pause \
             between accepted sends {:.2?}",
            &room.id[..8],
            room.master.port,
            if failed_shard { " (failed)" } else { "" },
            sends.len(),
            accepted.len(),
            refused.len(),
            longest
        ));
    }
    let slowest = cluster
        .rooms
        .iter()
        .flat_map(|room| room.sends.lock().unwrap().clone())
        .map(|s| s.answered - s.started)
        .max()
        .unwrap_or_default();
    if healthy_pause > case.pause_limit {
        failures.push(format!(
            "the rooms of the masters that stayed up paused {healthy_pause:.2?} (limit {:?})",
            case.pause_limit
        ));
    }
    report.push_str(&format!(
        "\n  longest pause on the healthy shards: {healthy_pause:.2?}"
    ));
    if let Some(gap) = failed_gap {
        report.push_str(&format!("; on the failed shard: {gap:.2?}"));
    }
    report.push_str(&format!("; the slowest send answered in {slowest:.2?}"));

    // Nobody reconnected: one conn:create per client on its node, no conn:close.
    for room in &cluster.rooms {
        for client in &room.clients {
            let log = control::log(&cluster.nodes[client.node])
                .await
                .expect("GET /_control/log");
            if control::count_conn(&log, "conn:create", &client.id) != 1
                || control::count_conn(&log, "conn:close", &client.id) != 0
            {
                failures.push(format!("client {}: reconnected", client.id));
            }
        }
    }

    // Every client leaves: no master keeps a room's channel.
    for room in &mut cluster.rooms {
        for client in room.clients.drain(..) {
            client.stop.notify_one();
            let _ = client.reader.await;
        }
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let mut left = Vec::new();
        for master in cluster.redis.masters().await {
            for channel in RedisCluster::shard_channels(master.port).await {
                if channel.starts_with("sseio:room:") {
                    left.push(format!("{channel} on port {}", master.port));
                }
            }
        }
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            failures.push(format!(
                "room channels still subscribed after every client left: {left:?}"
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    report.push_str(&format!("\n  case took {:.1?}", started.elapsed()));
    assert!(failures.is_empty(), "{}\n{report}", failures.join("\n"));
    note(&report);
}

/// Nothing happens: rooms on every master deliver across the nodes.
async fn rooms_on_every_master_deliver_across_nodes(_cluster: &mut Cluster) -> Option<Event> {
    None
}

/// The master of the lowest slots is killed with `kill -9`; its replica is promoted.
async fn a_master_killed_costs_only_its_own_rooms(cluster: &mut Cluster) -> Option<Event> {
    let victim = cluster.redis.masters().await.remove(0);
    let at = Instant::now();
    cluster.redis.kill(victim.port).await;
    let promoted = cluster.redis.wait_failover(&victim).await;
    let ok_at = Instant::now();
    Some(Event {
        what: format!(
            "master port {} killed, replica port {} promoted",
            victim.port, promoted.port
        ),
        failed: Some(victim),
        at,
        ok_at,
    })
}

/// The master of the lowest slots is frozen (`SIGSTOP`): it answers nothing and closes nothing,
/// as a host cut off by the network. Its replica is promoted; then it is killed, so that it
/// never comes back.
async fn a_master_frozen_costs_its_own_rooms_and_a_pause(cluster: &mut Cluster) -> Option<Event> {
    let victim = cluster.redis.masters().await.remove(0);
    let at = Instant::now();
    cluster.redis.freeze(victim.port).await;
    let promoted = cluster.redis.wait_failover(&victim).await;
    let ok_at = Instant::now();
    cluster.redis.kill(victim.port).await;
    Some(Event {
        what: format!(
            "master port {} frozen, replica port {} promoted",
            victim.port, promoted.port
        ),
        failed: Some(victim),
        at,
        ok_at,
    })
}

/// The slots of the first master's rooms (and those between) move to the second master.
async fn a_resharding_moves_live_rooms_without_loss(cluster: &mut Cluster) -> Option<Event> {
    let masters = cluster.redis.masters().await;
    let (from, to) = (&masters[0], &masters[1]);
    // `redis-cli` moves the source's lowest slots first: enough to take every room on it.
    let mut highest = 0;
    for room in cluster.rooms.iter().filter(|r| r.master.id == from.id) {
        highest = highest.max(cluster.redis.slot_of(&channel(&room.id)).await);
    }
    let slots = usize::from(highest - from.slots[0].0) + 1;
    let at = Instant::now();
    cluster.redis.reshard(from, to, slots).await;
    let ok_at = Instant::now();
    for room in cluster.rooms.iter().filter(|r| r.master.id == from.id) {
        let now = cluster
            .redis
            .master_of(cluster.redis.slot_of(&channel(&room.id)).await)
            .await;
        assert_eq!(now.id, to.id, "room {} moved to the second master", room.id);
    }
    Some(Event {
        what: format!(
            "{slots} slots resharded from master port {} to port {}",
            from.port, to.port
        ),
        failed: None,
        at,
        ok_at,
    })
}
