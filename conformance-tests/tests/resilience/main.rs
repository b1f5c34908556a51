//! Nothing lost (issue 16), at scale: a cluster of harness nodes of several adapters on a real
//! `redis-server` with history on and the gap notice, a few hundred clients behind a small TCP
//! proxy (the load balancer), a sender posting numbered messages to several rooms throughout,
//! and one thing going wrong per case:
//!
//! - `node_killed`: a node is killed with `kill -9`; its clients reconnect to the others;
//! - `node_drained`: a node is drained with `SIGTERM`;
//! - `connections_cut`: the proxy cuts a random share of the connections every few hundred
//!   milliseconds;
//! - `redis_restarted_empty`: Redis is killed and restarted without its data.
//!
//! Half the clients are native `EventSource`s (they come back with `Last-Event-ID`), half
//! behave as the official client does (the same `clientId`, no `Last-Event-ID`); see
//! [`Kind`]. Every message the sender got `200` for (`POST /_control/send`: recorded
//! in the cluster's history) must reach every client of its room: once and in order for every
//! `Last-Event-ID` client in every case; once for every `clientId` client after a drain or a
//! Redis restart; after a `kill -9` or with connections cut, either once or with the gap notice
//! in their place, never silently missing (a connection that drops may lose what was in flight
//! with it, and the official client cannot say what it got: the server tells it of a possible
//! gap). Each case prints, with `--nocapture`, what each kind of client lost, got twice and was
//! resynced.
//!
//! The cases run one at a time, each on a fresh cluster. [`CLIENTS`] sets their size (the
//! environment variable `SSEIO_RESILIENCE_CLIENTS` overrides it); at 300, the four cases take
//! about a minute and a half on two cores.

#[path = "../cases/mod.rs"]
#[allow(dead_code)] // The conformance cases and their tables; only the registry is used here.
pub mod cases;

pub mod proxy;
pub mod sender;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use conformance_tests::Harness;
use conformance_tests::redis_server::RedisServer;
use tokio::sync::{Mutex, MutexGuard};

use crate::cases::registry::{self, Need, note};
use crate::proxy::Proxy;
use crate::sender::Sender;
use conformance_tests::crowd::{self as clients, Client, GAP_NOTICE, Kind, Tally, rand_unit};

/// The clients of each case, half of each [`Kind`], spread evenly over [`ROOMS`].
pub const CLIENTS: usize = 300;
/// The rooms the sender posts to, each at one message every [`PACE`].
pub const ROOMS: usize = 3;
/// How often the sender posts to each room.
pub const PACE: Duration = Duration::from_millis(25);
/// The messages each room's history keeps (`SSEIO_HISTORY`): more than a case sends to one room.
pub const HISTORY: usize = 5_000;
/// The nodes of every case: the harness of each of these adapters.
pub const NODES: [&str; 3] = ["hyper", "warp", "actix"];
/// How long a drained node spreads its closes (`SSEIO_SHUTDOWN_GRACE_MS`).
const GRACE_MS: &str = "1000";
/// How long the sender runs before the fault, and after the fault's own time.
const BEFORE: Duration = Duration::from_secs(2);
const AFTER: Duration = Duration::from_secs(2);
/// How long every client has, once the sender stopped, to get the last message of its room.
const CONVERGE: Duration = Duration::from_secs(30);
/// The backstop of a whole case.
const CASE_LIMIT: Duration = Duration::from_secs(240);

/// What the clients of one kind must get in a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Promise {
    /// Every acknowledged message once, in order, no gap notice.
    Exact,
    /// Every acknowledged message once, or a gap notice in place of the missing ones; never a
    /// message missing without a notice, never one twice.
    NoSilentHole,
}

/// One case: its name, the fault, and what each kind of client must get.
struct Case {
    name: &'static str,
    fault: for<'a> fn(&'a mut Cluster) -> Pin<Box<dyn Future<Output = ()> + 'a>>,
    last_event_id: Promise,
    client_id: Promise,
}

macro_rules! case {
    ($name:ident, $last_event_id:ident, $client_id:ident) => {
        Case {
            name: stringify!($name),
            fault: |cluster| Box::pin($name(cluster)),
            last_event_id: Promise::$last_event_id,
            client_id: Promise::$client_id,
        }
    };
}

const CASES: &[Case] = &[
    case!(node_killed, Exact, NoSilentHole),
    case!(node_drained, Exact, Exact),
    case!(connections_cut, Exact, NoSilentHole),
    case!(redis_restarted_empty, Exact, Exact),
];

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    registry::show_output(args.nocapture);
    let trials = CASES
        .iter()
        .map(|case| {
            registry::trial(
                format!("resilience::{}", case.name),
                &[Need::Nodes],
                move || async move {
                    let _turn = one_at_a_time().await;
                    let run = run(case);
                    if tokio::time::timeout(CASE_LIMIT, run).await.is_err() {
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
    static TURN: Mutex<()> = Mutex::const_new(());
    TURN.lock().await
}

/// The number of clients: [`CLIENTS`], or `SSEIO_RESILIENCE_CLIENTS`.
fn clients() -> usize {
    std::env::var("SSEIO_RESILIENCE_CLIENTS").map_or(CLIENTS, |n| {
        n.parse()
            .expect("SSEIO_RESILIENCE_CLIENTS must be a number")
    })
}

/// The cluster of one case and what drives it.
#[derive(Debug)]
pub struct Cluster {
    redis: RedisServer,
    nodes: Vec<Harness>,
    proxy: Proxy,
    sender: Arc<Sender>,
}

impl Cluster {
    async fn start() -> Cluster {
        let redis = RedisServer::start().await;
        let url = redis.url();
        let history = HISTORY.to_string();
        let env = [
            ("REDIS_URL", url.as_str()),
            ("SSEIO_HISTORY", history.as_str()),
            ("SSEIO_GAP_NOTICE", GAP_NOTICE),
            ("SSEIO_SHUTDOWN_GRACE_MS", GRACE_MS),
        ];
        let mut nodes = Vec::new();
        for name in NODES {
            let adapter = registry::adapter(name);
            nodes.push(adapter.start(&env).await);
        }
        let upstreams: Vec<String> = nodes.iter().map(|n| n.authority().to_owned()).collect();
        let proxy = Proxy::start(&upstreams).await;
        let bases: Vec<String> = nodes.iter().map(|n| n.base_url().to_owned()).collect();
        let sender = Arc::new(Sender::new(&bases, ROOMS));
        Cluster {
            redis,
            nodes,
            proxy,
            sender,
        }
    }

    /// Takes node `i` out of the proxy's rotation and out of the sender's nodes.
    fn retire(&self, i: usize) {
        self.proxy.remove(self.nodes[i].authority());
        self.sender.remove(self.nodes[i].base_url());
    }
}

/// Node 0 (hyper) is killed with `kill -9`: its clients' connections end, and they come back
/// through the proxy, which finds the node's port closed and takes them to another node.
async fn node_killed(cluster: &mut Cluster) {
    let child = cluster.nodes[0]
        .child_mut()
        .expect("a harness of the suite's own");
    child.start_kill().expect("kill -9 the node");
    let _ = child.wait().await;
    cluster.retire(0);
    tokio::time::sleep(Duration::from_secs(6)).await;
}

/// Node 1 (warp) is drained with `SIGTERM`, as an orchestrator does: first taken out of the load
/// balancer's rotation, then signalled; its streams are closed over the grace period and their
/// clients come back to the other nodes.
async fn node_drained(cluster: &mut Cluster) {
    cluster.retire(1);
    cluster.nodes[1].terminate();
    let status = cluster.nodes[1].wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "the drained node exits 0: {status}");
    tokio::time::sleep(Duration::from_secs(4)).await;
}

/// For eight seconds, every 200 to 400 ms, the proxy cuts a random 5 % of the connections it
/// carries.
async fn connections_cut(cluster: &mut Cluster) {
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200 + (rand_unit() * 200.0) as u64)).await;
        cluster.proxy.cut_some(0.05);
    }
}

/// Redis is killed, and restarted a second later without its data (no persistence): a new
/// history, a new epoch. The streams stay open throughout; sends fail while it is down.
async fn redis_restarted_empty(cluster: &mut Cluster) {
    cluster.redis.kill().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.redis.restart().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
}

async fn run(case: &Case) {
    let started = Instant::now();
    let mut cluster = Cluster::start().await;
    let rooms: Arc<Vec<String>> = Arc::new(
        (0..ROOMS)
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect(),
    );
    let count = clients();
    let clients: Vec<Arc<Client>> = (0..count)
        .map(|i| {
            let kind = if i % 2 == 0 {
                Kind::LastEventId
            } else {
                Kind::ClientId
            };
            Arc::new(Client::new(kind, (i / 2) % ROOMS))
        })
        .collect();
    let stop_clients = Arc::new(AtomicBool::new(false));
    let running: Vec<_> = clients
        .iter()
        .map(|client| {
            clients::spawn(
                client.clone(),
                cluster.proxy.base_url(),
                rooms.clone(),
                stop_clients.clone(),
            )
        })
        .collect();
    wait_for(
        "every client's stream to open",
        Duration::from_secs(60),
        || clients.iter().all(|c| c.opened()),
    )
    .await;
    // Every node has subscribed its rooms once each client got a message sent after it joined:
    // from then on, the numbered messages count.
    let warm = async {
        while !clients.iter().all(|c| c.warmed()) {
            for room in rooms.iter() {
                cluster.sender.post(room, "warm-up").await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    within(
        Duration::from_secs(30),
        "every client's warm-up message",
        warm,
    )
    .await;
    let connected = started.elapsed();

    let stop_sending = Arc::new(AtomicBool::new(false));
    let sending: Vec<_> = rooms
        .iter()
        .enumerate()
        .map(|(i, room)| {
            tokio::spawn(
                cluster
                    .sender
                    .clone()
                    .run(i, room.clone(), PACE, stop_sending.clone()),
            )
        })
        .collect();
    tokio::time::sleep(BEFORE).await;
    (case.fault)(&mut cluster).await;
    tokio::time::sleep(AFTER).await;
    stop_sending.store(true, Ordering::SeqCst);
    for sending in sending {
        sending.await.expect("a sender");
    }
    let last: Vec<u64> = (0..ROOMS)
        .map(|i| {
            let acknowledged = cluster.sender.room(i).acknowledged.lock().unwrap();
            acknowledged.last().copied().unwrap_or(0)
        })
        .collect();
    let converged = {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let behind = clients.iter().filter(|c| c.last() < last[c.room]).count();
            if behind == 0 || Instant::now() >= deadline {
                break behind;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    stop_clients.store(true, Ordering::SeqCst);
    for running in running {
        running.await.expect("a client");
    }

    let mut report = format!(
        "{}: {count} clients in {ROOMS} rooms on {} nodes ({}), connected and warmed up in \
         {connected:.1?}",
        case.name,
        NODES.len(),
        NODES.join(", ")
    );
    for i in 0..ROOMS {
        let room = cluster.sender.room(i);
        report.push_str(&format!(
            "\n  room {i}: {} messages sent, {} acknowledged, {} not",
            room.attempted.lock().unwrap().len(),
            room.acknowledged.lock().unwrap().len(),
            room.failed.lock().unwrap().len()
        ));
    }
    let (accepted, cut, refused) = cluster.proxy.counts();
    report.push_str(&format!(
        "\n  proxy: {accepted} connections, {cut} cut, {refused} refused by every node; {converged} \
         clients had not got their room's last message {CONVERGE:?} after the sender stopped"
    ));
    let mut failures = Vec::new();
    for (kind, promise) in [
        (Kind::LastEventId, case.last_event_id),
        (Kind::ClientId, case.client_id),
    ] {
        let mut total = Tally::default();
        let mut holed = 0;
        let (mut ended, mut refused) = (0, 0);
        let mut clients_of_kind = 0;
        for client in clients.iter().filter(|c| c.kind == kind) {
            let room = cluster.sender.room(client.room);
            let tally = clients::tally(
                &client.seen(),
                &room.acknowledged.lock().unwrap(),
                &room.attempted.lock().unwrap(),
            );
            clients_of_kind += 1;
            let (e, r) = client.reconnects();
            ended += e;
            refused += r;
            if tally.lost + tally.skipped_with_notice > 0 {
                holed += 1;
            }
            total.add(tally);
        }
        report.push_str(&format!(
            "\n  {} clients ({clients_of_kind}): {} streams ({ended} ended, {refused} connects \
             refused); lost silently {} ({} of them across a reconnect); {holed} clients missing \
             some, with or without a notice; duplicated {}; out of order {}; resynced {} (gap \
             notices, covering {} messages); {} unacknowledged messages delivered",
            kind.name(),
            total.streams,
            total.lost,
            total.lost_across_reconnect,
            total.duplicated,
            total.out_of_order,
            total.resyncs,
            total.skipped_with_notice,
            total.unacknowledged
        ));
        let kept = match promise {
            Promise::Exact => {
                total.lost + total.duplicated + total.out_of_order + total.resyncs == 0
            }
            Promise::NoSilentHole => total.lost + total.duplicated + total.out_of_order == 0,
        };
        if !kept {
            failures.push(format!("{} clients: not {promise:?}", kind.name()));
        }
    }
    assert!(failures.is_empty(), "{}\n{report}", failures.join("; "));
    note(&report);
}

/// Polls `done` every 20 ms until it holds, failing the case after `limit`.
async fn wait_for(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?} waiting for {what}"))
}
