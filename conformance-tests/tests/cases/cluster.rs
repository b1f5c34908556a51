//! Several nodes, one cluster (`conformance-tests/HARNESS.md`, `REDIS_URL`): a send on any node
//! reaches the room's clients on every node once; presence, per-client sends, disconnects and
//! `clientId` replacement work across nodes; Redis can go away and come back without any client
//! reconnecting.
//!
//! The cases that hold for any cluster run three ways: on one in-memory node (every "node" of the
//! case is the same process, so the same case checks the single-node behaviour), on three
//! processes of three different adapters sharing a `redis-server`, and on two processes using
//! sharded Pub/Sub on a one-node Redis Cluster. The Redis-only cases look at Redis itself.

use std::time::Duration;

use conformance_tests::Harness;
use conformance_tests::control::{self, Presence};
use conformance_tests::redis_server::RedisServer;
use conformance_tests::sse::{SseEvent, SseItem, SseStream};

use super::registry::{self, Adapter, CaseFuture, Need};
use super::*;

/// The cluster cases, each with the clusters it runs on (a trial per cluster, named
/// `<topology>::<case>`, each on a fresh cluster).
macro_rules! cluster_cases {
    ($($case:ident on [$($topology:ident),+ $(,)?]),+ $(,)?) => {
        /// Every cluster case, with the clusters it runs on.
        pub const CASES: &[ClusterCase] = &[$(
            ClusterCase {
                name: stringify!($case),
                on: &[$(Topology::$topology),+],
                run: {
                    fn run(cluster: &mut Cluster) -> CaseFuture<'_> {
                        Box::pin($case(cluster))
                    }
                    run
                },
            }
        ),+];
    };
}

cluster_cases! {
    send_reaches_every_node_once_in_order on [Memory, Redis, RedisSharded, HubRedis, HubRedisSharded],
    presence_counts_every_node on [Memory, Redis, RedisSharded, HubRedis, HubRedisSharded],
    client_id_moving_to_another_node_replaces_the_old_stream on [Memory, Redis, RedisSharded, HubRedis, HubRedisSharded],
    send_to_client_and_disconnect_reach_any_node on [Memory, Redis, RedisSharded, HubRedis, HubRedisSharded],
    rooms_are_unsubscribed_when_empty on [Redis, RedisSharded, HubRedis, HubRedisSharded],
    redis_restart_keeps_streams_and_resumes_delivery on [Redis, HubRedis],
    official_client_resumes_on_another_node on [MemoryWithHistory, RedisWithHistory, HubRedisWithHistory],
    last_event_id_resumes_on_another_node on [MemoryWithHistory, RedisWithHistory, HubRedisWithHistory],
    history_in_redis_is_one_capped_stream_per_room on [RedisWithHistory, HubRedisWithHistory],
    a_new_sequence_after_redis_restarts_reaches_resumed_clients on [RedisWithHistory, HubRedisWithHistory],
    history_scripts_are_loaded_again_after_a_script_flush on [RedisWithHistory, HubRedisWithHistory],
}

/// One cluster case: an entry of [`CASES`].
#[derive(Debug)]
pub struct ClusterCase {
    /// The function's name, which names the test: `<topology>::<name>`.
    pub name: &'static str,
    /// The clusters it runs on.
    pub on: &'static [Topology],
    /// Runs the case on a cluster.
    pub run: for<'a> fn(&'a mut Cluster) -> CaseFuture<'a>,
}

/// The clusters the cases run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One hyper harness without a broker.
    Memory,
    /// hyper, warp, salvo and actix harnesses on one `redis-server`.
    Redis,
    /// poem and hyper harnesses on a one-node Redis Cluster, with sharded Pub/Sub.
    RedisSharded,
    /// One hyper harness without a broker, with history.
    MemoryWithHistory,
    /// hyper, warp and poem harnesses on one `redis-server`, with history kept in Redis.
    RedisWithHistory,
    /// Two hubs on one `redis-server`.
    HubRedis,
    /// Two hubs on a one-node Redis Cluster, with sharded Pub/Sub.
    HubRedisSharded,
    /// Two hubs on one `redis-server`, with history kept in Redis.
    HubRedisWithHistory,
}

impl Topology {
    /// Every topology, in the order their trials are made.
    pub const ALL: [Topology; 8] = [
        Topology::Memory,
        Topology::Redis,
        Topology::RedisSharded,
        Topology::MemoryWithHistory,
        Topology::RedisWithHistory,
        Topology::HubRedis,
        Topology::HubRedisSharded,
        Topology::HubRedisWithHistory,
    ];

    /// The first part of its trials' names.
    pub fn name(self) -> &'static str {
        match self {
            Topology::Memory => "cluster_memory",
            Topology::Redis => "cluster_redis",
            Topology::RedisSharded => "cluster_redis_sharded",
            Topology::MemoryWithHistory => "cluster_history_memory",
            Topology::RedisWithHistory => "cluster_history_redis",
            Topology::HubRedis => "cluster_hub_redis",
            Topology::HubRedisSharded => "cluster_hub_redis_sharded",
            Topology::HubRedisWithHistory => "cluster_hub_history_redis",
        }
    }

    /// What a case on it needs. One in-memory node may be an external server (`SERVER_URL`);
    /// history needs the setting, and several nodes on Redis need the suite to start them.
    pub fn needs(self) -> &'static [Need] {
        match self {
            Topology::Memory => &[],
            Topology::MemoryWithHistory => &[Need::Settings],
            Topology::Redis
            | Topology::RedisSharded
            | Topology::RedisWithHistory
            | Topology::HubRedis
            | Topology::HubRedisSharded
            | Topology::HubRedisWithHistory => &[Need::Nodes],
        }
    }

    /// Starts a fresh cluster of this topology (and its `redis-server`, when it has one). The
    /// nodes of a cluster on Redis mix adapters, and the ways they are served.
    pub async fn start(self) -> Cluster {
        let nodes = |names: &[&'static str]| -> Vec<&'static Adapter> {
            names.iter().map(|name| registry::adapter(name)).collect()
        };
        let hyper = registry::adapter("hyper");
        match self {
            Topology::Memory => Cluster::memory(hyper).await,
            Topology::Redis => {
                Cluster::redis(&nodes(&["hyper", "warp-framework", "salvo", "actix"])).await
            }
            Topology::RedisSharded => {
                Cluster::redis_sharded(&nodes(&["poem-framework", "hyper"])).await
            }
            Topology::MemoryWithHistory => Cluster::memory_with_history(hyper).await,
            Topology::RedisWithHistory => {
                Cluster::redis_with_history(&nodes(&["hyper-framework", "warp", "poem"])).await
            }
            Topology::HubRedis => Cluster::redis(&nodes(&["hub", "hub"])).await,
            Topology::HubRedisSharded => Cluster::redis_sharded(&nodes(&["hub", "hub"])).await,
            Topology::HubRedisWithHistory => {
                Cluster::redis_with_history(&nodes(&["hub", "hub"])).await
            }
        }
    }

    /// The trial of `case` on a fresh cluster of this topology, under [`CASE_LIMIT`].
    pub fn trial(self, case: &'static ClusterCase) -> libtest_mimic::Trial {
        let name = format!("{}::{}", self.name(), case.name);
        registry::trial(name, self.needs(), move || async move {
            let mut cluster = self.start().await;
            let what = format!("{} to finish", case.name);
            within(CASE_LIMIT, &what, (case.run)(&mut cluster)).await;
        })
    }
}

/// The history each node of a history cluster keeps (`SSEIO_HISTORY`).
const HISTORY: usize = 100;

/// The nodes of a cluster under test, and its Redis when it has one.
#[derive(Debug)]
pub struct Cluster {
    nodes: Vec<Harness>,
    redis: Option<RedisServer>,
}

impl Cluster {
    /// One harness without a broker: every node index is that one process.
    pub async fn memory(adapter: &'static Adapter) -> Cluster {
        Self::memory_on(adapter, &[]).await
    }

    /// As [`Cluster::memory`], with history on.
    pub async fn memory_with_history(adapter: &'static Adapter) -> Cluster {
        Self::memory_on(adapter, &[("SSEIO_HISTORY", &HISTORY.to_string())]).await
    }

    async fn memory_on(adapter: &'static Adapter, env: &[(&str, &str)]) -> Cluster {
        Cluster {
            nodes: vec![adapter.start(env).await],
            redis: None,
        }
    }

    /// A fresh `redis-server` and one harness per adapter on it.
    pub async fn redis(adapters: &[&'static Adapter]) -> Cluster {
        Self::on(RedisServer::start().await, adapters, false, &[]).await
    }

    /// As [`Cluster::redis`], with history on: kept in Redis, for the whole cluster.
    pub async fn redis_with_history(adapters: &[&'static Adapter]) -> Cluster {
        let history = HISTORY.to_string();
        let env = [("SSEIO_HISTORY", history.as_str())];
        Self::on(RedisServer::start().await, adapters, false, &env).await
    }

    /// A fresh one-node Redis Cluster and one harness per adapter using sharded
    /// Pub/Sub on it.
    pub async fn redis_sharded(adapters: &[&'static Adapter]) -> Cluster {
        Self::on(RedisServer::start_cluster().await, adapters, true, &[]).await
    }

    async fn on(
        redis: RedisServer,
        adapters: &[&'static Adapter],
        sharded: bool,
        extra: &[(&str, &str)],
    ) -> Cluster {
        let url = redis.url();
        let sharded = if sharded { "1" } else { "0" };
        let mut nodes = Vec::new();
        for adapter in adapters {
            let mut env = vec![
                ("REDIS_URL", url.as_str()),
                ("SSEIO_REDIS_SHARDED", sharded),
            ];
            env.extend_from_slice(extra);
            nodes.push(adapter.start(&env).await);
        }
        Cluster {
            nodes,
            redis: Some(redis),
        }
    }

    /// Node `i` of the case; with fewer processes than that, they are reused in turn.
    fn node(&self, i: usize) -> &Harness {
        &self.nodes[i % self.nodes.len()]
    }

    fn redis_server(&self) -> &RedisServer {
        self.redis
            .as_ref()
            .expect("this case needs a cluster on Redis")
    }
}

/// The presence of `room` of `normal-event` as node `i` reports it.
async fn presence(cluster: &Cluster, i: usize, room: &str) -> Presence {
    within(
        WAIT,
        "GET /_control/presence",
        control::presence(cluster.node(i), "normal-event", room),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Polls presence on node `i` until it lists exactly `clients`. A node answers a presence
/// query only through its subscription to the room, so once every client is listed, every node
/// serving the room is subscribed and a send now reaches all of them.
async fn wait_presence(cluster: &Cluster, i: usize, room: &str, clients: &[&str]) {
    let mut expected: Vec<String> = clients.iter().map(|&c| c.to_owned()).collect();
    expected.sort();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = presence(cluster, i, room).await;
        if seen.client_ids == expected && seen.count == expected.len() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "presence of {room} on node {i}: expected {expected:?}, still {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens a `normal-event` stream on node `i` in `room`, and waits for its `conn:create` there.
async fn join(cluster: &Cluster, i: usize, room: &str, client: &str) -> SseStream {
    connect(cluster.node(i), room, client, &["normal-event"]).await
}

/// The data of the next `count` events on `stream`.
async fn next_data(stream: &mut SseStream, who: &str, count: usize) -> Vec<String> {
    let mut data = Vec::with_capacity(count);
    for i in 0..count {
        data.push(
            next_event(stream, &format!("{who}: message #{i}"))
                .await
                .data,
        );
    }
    data
}

/// Three clients on three nodes and one in another room: every message of the room reaches each
/// of the three once. From one sender, in the order sent; from several senders at once, in the
/// same order for everyone. The client in the other room gets none of them.
pub async fn send_reaches_every_node_once_in_order(cluster: &Cluster) {
    let (room, elsewhere) = (new_id(), new_id());
    let clients = [new_id(), new_id(), new_id()];
    let mut streams = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        streams.push(join(cluster, i, &room, client).await);
    }
    let bystander_id = new_id();
    let mut bystander = join(cluster, 1, &elsewhere, &bystander_id).await;
    let ids: Vec<&str> = clients.iter().map(String::as_str).collect();
    wait_presence(cluster, 0, &room, &ids).await;
    wait_presence(cluster, 0, &elsewhere, &[&bystander_id]).await;

    let from_one: Vec<String> = (0..20).map(|n| format!("one-{n}")).collect();
    for message in &from_one {
        send(cluster.node(0), "normal-event", &room, message).await;
    }
    for (stream, client) in streams.iter_mut().zip(&clients) {
        assert_eq!(next_data(stream, client, from_one.len()).await, from_one);
    }
    // A send answers once the broker took the message; from several nodes at once, the
    // messages are ordered by Redis, the same way for every client.
    let from_all: Vec<String> = (0..21).map(|n| format!("all-{n}")).collect();
    for (n, message) in from_all.iter().enumerate() {
        send(cluster.node(n % 3), "normal-event", &room, message).await;
    }
    send(cluster.node(2), "normal-event", &elsewhere, "elsewhere").await;

    let mut first_order = None;
    for (stream, client) in streams.iter_mut().zip(&clients) {
        let mut got = next_data(stream, client, from_all.len()).await;
        let order = got.clone();
        got.sort();
        let mut sent = from_all.clone();
        sent.sort();
        assert_eq!(got, sent, "{client}: every message from every node, once");
        match &first_order {
            None => first_order = Some(order),
            Some(first) => assert_eq!(&order, first, "{client}: the same order as the others"),
        }
    }
    // Nothing more came for the room: the next thing each client gets is a later send.
    send(cluster.node(1), "normal-event", &room, "end").await;
    for (stream, client) in streams.iter_mut().zip(&clients) {
        assert_eq!(
            next_data(stream, client, 1).await,
            ["end"],
            "{client}: no duplicate"
        );
    }
    assert_eq!(
        next_data(&mut bystander, "the client in another room", 1).await,
        ["elsewhere"]
    );
}

/// Presence lists the room's clients on every node, as any node sees it, and drops a client
/// that left.
pub async fn presence_counts_every_node(cluster: &Cluster) {
    let room = new_id();
    let (a, b, c) = (new_id(), new_id(), new_id());
    let _a = join(cluster, 0, &room, &a).await;
    let b_stream = join(cluster, 1, &room, &b).await;
    let _c = join(cluster, 2, &room, &c).await;
    for i in 0..3 {
        wait_presence(cluster, i, &room, &[&a, &b, &c]).await;
    }
    b_stream.close().await;
    wait_presence(cluster, 2, &room, &[&a, &c]).await;
    assert_eq!(
        presence(cluster, 0, &new_id()).await,
        Presence {
            count: 0,
            client_ids: Vec::new(),
        }
    );
}

/// A `clientId` that reconnects to another node closes its stream on the first one
/// (`conn:close` there), and only the new stream gets the room's messages.
pub async fn client_id_moving_to_another_node_replaces_the_old_stream(cluster: &Cluster) {
    let room = new_id();
    let client = new_id();
    let mut old = join(cluster, 0, &room, &client).await;
    wait_presence(cluster, 1, &room, &[&client]).await;
    let mut new = open_stream(
        cluster.node(1),
        &sse_target(&room, &client, &["normal-event"]),
    )
    .await;

    expect_end(&mut old, "the old stream to end once the clientId moved").await;
    wait_log(cluster.node(0), "conn:close of the moved client", |log| {
        control::count_conn(log, "conn:close", &client) == 1
    })
    .await;
    wait_presence(cluster, 2, &room, &[&client]).await;
    send(cluster.node(2), "normal-event", &room, "to the new stream").await;
    assert_eq!(
        next_data(&mut new, "the new stream", 1).await,
        ["to the new stream"]
    );
}

/// `send-to-client` reaches one client on whichever node it is, and only it; `disconnect`
/// closes it there (`conn:close` on its node), leaving the others.
pub async fn send_to_client_and_disconnect_reach_any_node(cluster: &Cluster) {
    let room = new_id();
    let (target, other) = (new_id(), new_id());
    let mut target_stream = join(cluster, 1, &room, &target).await;
    let mut other_stream = join(cluster, 1, &room, &other).await;
    wait_presence(cluster, 0, &room, &[&target, &other]).await;

    let sent = control::send_to_client(cluster.node(0), &target, "normal-event", "just you")
        .await
        .expect("POST /_control/send-to-client");
    assert_eq!(sent.status, 200);
    assert_eq!(
        next_data(&mut target_stream, "the addressed client", 1).await,
        ["just you"]
    );
    send(cluster.node(2), "normal-event", &room, "everyone").await;
    assert_eq!(
        next_data(&mut other_stream, "the other client", 1).await,
        ["everyone"],
        "the other client got only the room's message"
    );

    let kicked = control::disconnect(cluster.node(2), &target)
        .await
        .expect("POST /_control/disconnect");
    assert_eq!(kicked.status, 200);
    expect_end(
        &mut target_stream,
        "the disconnected client's stream to end",
    )
    .await;
    wait_log(
        cluster.node(1),
        "conn:close of the disconnected client",
        |log| control::count_conn(log, "conn:close", &target) == 1,
    )
    .await;
    wait_presence(cluster, 0, &room, &[&other]).await;
}

/// A node subscribes a room's channel only while it serves the room: the channel has one
/// subscriber (the node with the client, not the others), and disappears when the room empties.
pub async fn rooms_are_unsubscribed_when_empty(cluster: &Cluster) {
    let redis = cluster.redis_server();
    let room = new_id();
    let channel = format!("sseio:room:{}:normal-event:{room}", "normal-event".len());
    let client = new_id();
    let stream = join(cluster, 1, &room, &client).await;
    wait_presence(cluster, 0, &room, &[&client]).await;
    assert!(redis.channels().await.contains(&channel));
    assert_eq!(
        redis.subscribers(&channel).await,
        1,
        "only the node serving the room subscribes"
    );

    stream.close().await;
    within(WAIT, "the room's channel to be unsubscribed", async {
        while redis.channels().await.contains(&channel) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Redis killed with clients connected: every node says so in an `error`, sends answer `503`,
/// the streams stay open with their heartbeats. Redis restarted: every node reconnects and
/// subscribes its rooms again, and sends reach the same streams, none of which reconnected.
pub async fn redis_restart_keeps_streams_and_resumes_delivery(cluster: &mut Cluster) {
    let room = new_id();
    let clients = [new_id(), new_id()];
    let mut streams = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        streams.push(join(cluster, i, &room, client).await);
    }
    wait_presence(cluster, 0, &room, &[&clients[0], &clients[1]]).await;

    cluster
        .redis
        .as_mut()
        .expect("this case needs Redis")
        .kill()
        .await;
    for i in 0..2 {
        wait_log(cluster.node(i), "an error saying Redis was lost", |log| {
            log.iter()
                .any(|r| r.is_error() && r.message.as_deref().is_some_and(|m| m.contains("Redis")))
        })
        .await;
        wait_send_status(cluster, i, 503).await;
    }
    // Two heartbeats, three seconds apart: at least one was written while Redis was down.
    for (stream, client) in streams.iter_mut().zip(&clients) {
        for _ in 0..2 {
            match within(WAIT, "a heartbeat while Redis is down", stream.next_item()).await {
                Ok(Some(SseItem::Comment(_))) => {}
                Ok(Some(SseItem::Event(e))) => panic!("{client}: unexpected event {e:?}"),
                Ok(None) | Err(_) => panic!("{client}: the stream ended while Redis was down"),
            }
        }
    }

    cluster
        .redis
        .as_mut()
        .expect("this case needs Redis")
        .restart()
        .await;
    for i in 0..2 {
        wait_send_status(cluster, i, 200).await;
    }
    send(cluster.node(0), "normal-event", &room, "after the restart").await;
    for (stream, client) in streams.iter_mut().zip(&clients) {
        let event = after_heartbeats(stream, client, "the message after the restart").await;
        assert_eq!(event.data, "after the restart", "{client}");
    }
    for (i, client) in clients.iter().enumerate() {
        let log = log(cluster.node(i)).await;
        assert_eq!(
            control::count_conn(&log, "conn:create", client),
            1,
            "{client}"
        );
        assert_eq!(
            control::count_conn(&log, "conn:close", client),
            0,
            "{client}"
        );
    }
}

/// The next event on `client`'s stream, past any heartbeats (a Redis restart can take a few).
async fn after_heartbeats(stream: &mut SseStream, client: &str, what: &str) -> SseEvent {
    within(WAIT, what, async {
        loop {
            match stream.next_item().await {
                Ok(Some(SseItem::Event(event))) => return event,
                Ok(Some(SseItem::Comment(_))) => {}
                Ok(None) | Err(_) => panic!("{client}: the stream ended"),
            }
        }
    })
    .await
}

/// Polls a send on node `i` (to a room nobody is in) until it answers `status`: `503` once the
/// node noticed Redis is gone, `200` once it is back with its rooms subscribed.
async fn wait_send_status(cluster: &Cluster, i: usize, status: u16) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let outcome = within(
            WAIT,
            "POST /_control/send",
            control::send_text(cluster.node(i), "normal-event", "probe", "probe"),
        )
        .await
        .expect("POST /_control/send");
        if outcome.status == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {i}: sends still answer {} ({}), not {status}",
            outcome.status,
            String::from_utf8_lossy(&outcome.body)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Leaves node `i` of the cluster: closes `stream`, waits for its `conn:close` there and, on
/// Redis, for the resume record of `client` that its close wrote, so a reconnect on any node
/// finds it.
async fn leave_node(cluster: &Cluster, i: usize, stream: SseStream, client: &str) {
    super::history::leave(cluster.node(i), stream, client, 0).await;
    if let Some(redis) = &cluster.redis {
        let key = format!("sseio:resume:{client}");
        let deadline = tokio::time::Instant::now() + WAIT;
        while redis.command(&["EXISTS", &key]).await.ok().as_deref() != Some("1") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no resume record {key} in Redis after {client} left"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The official client's way back, to another node: same `clientId`, no `Last-Event-ID`. It
/// gets what was sent to its room while it was away, from any node, each message once and in
/// the order the other clients saw, then live messages; every node frames a message with the same `id:`.
pub async fn official_client_resumes_on_another_node(cluster: &Cluster) {
    let (room, client, watcher) = (new_id(), new_id(), new_id());
    let mut first = join(cluster, 0, &room, &client).await;
    let mut watching = join(cluster, 2, &room, &watcher).await;
    wait_presence(cluster, 1, &room, &[&client, &watcher]).await;
    send(cluster.node(1), "normal-event", &room, "1").await;
    let seen = next_event(&mut first, "message 1 on node 0").await;
    let watched = next_event(&mut watching, "message 1 on node 2").await;
    assert_eq!(seen.data, "1");
    assert!(seen.id.is_some(), "with history, frames carry an id");
    assert_eq!(
        seen.id, watched.id,
        "every node frames a message with the same id"
    );
    leave_node(cluster, 0, first, &client).await;

    for (n, message) in ["2", "3", "4"].iter().enumerate() {
        send(cluster.node(n % 3), "normal-event", &room, message).await;
    }
    // Sends from several nodes are ordered by the broker, not by when each send returned.
    let order = next_data(&mut watching, &watcher, 3).await;
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, ["2", "3", "4"]);
    let replayed = r#"sseio_resumes_total{result="replayed"}"#;
    let before = super::metrics::scrape(cluster.node(1)).await.get(replayed);
    let mut back = join(cluster, 1, &room, &client).await;
    assert_eq!(
        next_data(&mut back, "the client back on node 1", 3).await,
        order,
        "what it missed, once, in the room's order"
    );
    let after = super::metrics::scrape(cluster.node(1)).await.get(replayed);
    assert_eq!(
        after - before,
        1.0,
        "node 1 counts the resume in {replayed}"
    );
    send(cluster.node(2), "normal-event", &room, "5").await;
    assert_eq!(
        next_data(&mut back, "the client back on node 1", 1).await,
        ["5"]
    );
}

/// A native `EventSource` that comes back to another node with the `Last-Event-ID` one node
/// gave it gets exactly the messages after it.
pub async fn last_event_id_resumes_on_another_node(cluster: &Cluster) {
    let (room, client) = (new_id(), new_id());
    let mut first = join(cluster, 0, &room, &client).await;
    wait_presence(cluster, 1, &room, &[&client]).await;
    for message in ["1", "2", "3"] {
        send(cluster.node(1), "normal-event", &room, message).await;
    }
    let one = next_event(&mut first, "message 1").await;
    assert_eq!(next_data(&mut first, &client, 2).await, ["2", "3"]);
    first.close().await;

    // Another clientId: the position comes from the header alone.
    let reader = new_id();
    let id = one.id.expect("with history, frames carry an id");
    let response = request(
        cluster.node(2),
        Request::get(sse_target(&room, &reader, &["normal-event"]))
            .header("Accept", "text/event-stream")
            .header("Last-Event-ID", &id),
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut resumed = SseStream::http1(response);
    assert_eq!(next_data(&mut resumed, &reader, 2).await, ["2", "3"]);
    wait_presence(cluster, 0, &room, &[&reader]).await;
    send(cluster.node(0), "normal-event", &room, "4").await;
    assert_eq!(next_data(&mut resumed, &reader, 1).await, ["4"]);
}

/// The history lives in Redis, capped: one stream per room holding its last `SSEIO_HISTORY`
/// messages, whichever nodes sent them.
pub async fn history_in_redis_is_one_capped_stream_per_room(cluster: &Cluster) {
    let room = new_id();
    let sent = HISTORY + 20;
    for n in 0..sent {
        send(cluster.node(n % 3), "normal-event", &room, &n.to_string()).await;
    }
    let key = format!("sseio:history:{}:normal-event:{room}", "normal-event".len());
    let redis = cluster.redis_server();
    assert_eq!(
        redis.command(&["XLEN", &key]).await.unwrap(),
        HISTORY.to_string()
    );
    // Entries are numbered by the cluster's one sequence, whichever node sent: this fresh Redis
    // numbered 1 to `sent`, and keeps the last `HISTORY` of them.
    let oldest = redis
        .command(&["XRANGE", &key, "-", "+", "COUNT", "1"])
        .await
        .unwrap();
    let newest = redis
        .command(&["XREVRANGE", &key, "+", "-", "COUNT", "1"])
        .await
        .unwrap();
    assert!(
        oldest.starts_with(&format!("{}-1\n", sent - HISTORY + 1)),
        "the oldest entry kept: {oldest}"
    );
    assert!(
        newest.starts_with(&format!("{sent}-1\n")),
        "the newest entry: {newest}"
    );
}

/// Redis restarted empty (no persistence) starts a new sequence, with a new epoch, whose
/// offsets begin again at 1. A client that resumed before keeps getting every message: its
/// stream's place in the old sequence does not hide the new one's messages.
pub async fn a_new_sequence_after_redis_restarts_reaches_resumed_clients(cluster: &mut Cluster) {
    let (room, client) = (new_id(), new_id());
    let mut first = join(cluster, 0, &room, &client).await;
    wait_presence(cluster, 1, &room, &[&client]).await;
    send(cluster.node(1), "normal-event", &room, "1").await;
    assert_eq!(next_data(&mut first, &client, 1).await, ["1"]);
    leave_node(cluster, 0, first, &client).await;
    for message in ["2", "3"] {
        send(cluster.node(0), "normal-event", &room, message).await;
    }
    let mut back = join(cluster, 1, &room, &client).await;
    let replayed = next_event(&mut back, "the first missed message").await;
    assert_eq!(replayed.data, "2");
    assert_eq!(next_data(&mut back, &client, 1).await, ["3"]);

    let redis = cluster.redis.as_mut().expect("this case needs Redis");
    redis.kill().await;
    redis.restart().await;
    for i in 0..2 {
        wait_send_status(cluster, i, 200).await;
    }
    send(cluster.node(0), "normal-event", &room, "after the restart").await;
    let after = after_heartbeats(&mut back, &client, "the message after the restart").await;
    assert_eq!(after.data, "after the restart");
    let epoch = |id: Option<String>| id.and_then(|id| id.split('-').next().map(str::to_owned));
    assert_ne!(
        epoch(after.id),
        epoch(replayed.id),
        "the restarted Redis numbers from a new epoch"
    );
}

/// Redis forgets the history scripts (`SCRIPT FLUSH`, as after a failover to a replica that
/// never loaded them): the send that finds its script gone is not recorded, and says so (`503`:
/// the harness's send waits for Redis's answer), the node reports it, reconnects and loads the
/// scripts again, and the next sends are delivered.
pub async fn history_scripts_are_loaded_again_after_a_script_flush(cluster: &Cluster) {
    let (room, client) = (new_id(), new_id());
    let mut stream = join(cluster, 0, &room, &client).await;
    wait_presence(cluster, 1, &room, &[&client]).await;
    send(cluster.node(1), "normal-event", &room, "before").await;
    assert_eq!(next_data(&mut stream, &client, 1).await, ["before"]);

    cluster
        .redis_server()
        .command(&["SCRIPT", "FLUSH"])
        .await
        .unwrap();
    let refused = within(
        WAIT,
        "POST /_control/send",
        control::send_text(cluster.node(1), "normal-event", &room, "lost"),
    )
    .await
    .expect("POST /_control/send");
    assert_eq!(
        refused.status,
        503,
        "a send Redis refused is not acknowledged: {}",
        String::from_utf8_lossy(&refused.body)
    );
    wait_log(cluster.node(1), "an error saying Redis was lost", |log| {
        log.iter()
            .any(|r| r.is_error() && r.message.as_deref().is_some_and(|m| m.contains("Redis")))
    })
    .await;
    wait_send_status(cluster, 1, 200).await;
    send(cluster.node(1), "normal-event", &room, "after").await;
    assert_eq!(next_data(&mut stream, &client, 1).await, ["after"]);
}
