//! An in-process stand-in for Redis, for the tests of the connection task and inbound dispatch
//! without a `redis-server` (socketioxide's `StubDriver` is the model). Several simulated nodes
//! share one [`StubRedis`]: Pub/Sub fans out in memory, and a test scripts the failures (Redis
//! going away and coming back, its scripts flushed, a Redis that stops answering).
//!
//! It knows only what the broker asks: `PUBLISH`, `SUBSCRIBE`, `UNSUBSCRIBE`, `PING`, `SCRIPT
//! LOAD` and the history's `EVALSHA`s. The history scripts do not number, record or publish
//! anything here; their answers have the right shape (an empty replay, no resume record).

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{Cmd, ErrorKind, PushInfo, PushKind, RedisError, RedisResult, ServerErrorKind, Value};
use tokio::sync::{mpsc, watch};

use crate::broker::lock;
use crate::history::Scripts;
use crate::link::{Connector, Outgoing, Transport};

/// One Redis that several simulated nodes share: a cheap clone of a handle.
#[derive(Debug, Clone)]
pub(crate) struct StubRedis {
    state: Arc<Mutex<State>>,
    /// While true, a pipeline waits for its answers (a Redis that stopped answering).
    stalled: Arc<watch::Sender<bool>>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// The open connections, by id.
    connections: HashMap<u64, Client>,
    /// Refusing connections.
    down: bool,
    /// The script cache: filled by `SCRIPT LOAD`, emptied by [`StubRedis::flush_scripts`].
    scripts_loaded: bool,
    script_loads: usize,
    /// How many messages were published on each channel.
    published: HashMap<String, usize>,
}

/// One open connection: its subscriptions and where its Pub/Sub messages go.
#[derive(Debug)]
struct Client {
    channels: HashSet<String>,
    pushes: mpsc::UnboundedSender<PushInfo>,
}

impl StubRedis {
    /// A Redis that is up, with an empty script cache.
    pub(crate) fn new() -> Self {
        StubRedis {
            state: Arc::default(),
            stalled: Arc::new(watch::channel(false).0),
        }
    }

    /// What a broker opens its connections with.
    pub(crate) fn connector(&self) -> StubConnector {
        StubConnector {
            redis: self.clone(),
        }
    }

    /// Closes every connection (each node's reader is told, as by a reset) and refuses new ones
    /// until [`StubRedis::come_back`].
    pub(crate) fn go_away(&self) {
        let mut state = lock(&self.state);
        state.down = true;
        for (_, client) in state.connections.drain() {
            let _ = client.pushes.send(PushInfo {
                kind: PushKind::Disconnection,
                data: Vec::new(),
            });
        }
    }

    /// Accepts connections again.
    pub(crate) fn come_back(&self) {
        lock(&self.state).down = false;
    }

    /// Empties the script cache, as `SCRIPT FLUSH` or a failover does: the next `EVALSHA`
    /// gets `NOSCRIPT`.
    pub(crate) fn flush_scripts(&self) {
        lock(&self.state).scripts_loaded = false;
    }

    /// How many `SCRIPT LOAD`s it ran.
    pub(crate) fn script_loads(&self) -> usize {
        lock(&self.state).script_loads
    }

    /// Makes pipelines wait for their answers (`true`) or answers them again (`false`).
    pub(crate) fn stall(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }

    /// How many connections subscribe `channel`.
    pub(crate) fn subscribers(&self, channel: &str) -> usize {
        lock(&self.state)
            .connections
            .values()
            .filter(|client| client.channels.contains(channel))
            .count()
    }

    /// The subscriptions of each open connection.
    pub(crate) fn subscriptions(&self) -> Vec<HashSet<String>> {
        lock(&self.state)
            .connections
            .values()
            .map(|client| client.channels.clone())
            .collect()
    }

    /// How many messages were published on `channel`.
    pub(crate) fn published(&self, channel: &str) -> usize {
        lock(&self.state)
            .published
            .get(channel)
            .copied()
            .unwrap_or(0)
    }
}

/// Opens connections to a [`StubRedis`].
#[derive(Debug)]
pub(crate) struct StubConnector {
    redis: StubRedis,
}

impl Connector for StubConnector {
    type Transport = StubLink;

    async fn open(&self) -> RedisResult<(StubLink, mpsc::UnboundedReceiver<PushInfo>)> {
        let mut state = lock(&self.redis.state);
        if state.down {
            return Err(io_error(std::io::ErrorKind::ConnectionRefused));
        }
        let (push_tx, pushes) = mpsc::unbounded_channel();
        state.next_id += 1;
        let id = state.next_id;
        state.connections.insert(
            id,
            Client {
                channels: HashSet::new(),
                pushes: push_tx,
            },
        );
        let link = StubLink {
            redis: self.redis.clone(),
            id,
        };
        Ok((link, pushes))
    }
}

/// One connection to a [`StubRedis`]; closed when dropped.
#[derive(Debug)]
pub(crate) struct StubLink {
    redis: StubRedis,
    id: u64,
}

/// The error of a connection that failed (refused, or reset).
fn io_error(kind: std::io::ErrorKind) -> RedisError {
    RedisError::from(std::io::Error::new(
        kind,
        "the stub Redis closed the connection",
    ))
}

impl StubLink {
    /// Runs `f` on this connection's state, or fails as a closed connection does.
    fn with<T>(&self, f: impl FnOnce(&mut State, u64) -> T) -> RedisResult<T> {
        let mut state = lock(&self.redis.state);
        if !state.connections.contains_key(&self.id) {
            return Err(io_error(std::io::ErrorKind::ConnectionReset));
        }
        Ok(f(&mut state, self.id))
    }
}

impl Drop for StubLink {
    fn drop(&mut self) {
        lock(&self.redis.state).connections.remove(&self.id);
    }
}

/// Publishes `body` on `channel` to every subscribed connection; returns how many got it.
fn publish(state: &mut State, channel: &str, body: &[u8]) -> usize {
    *state.published.entry(channel.to_owned()).or_default() += 1;
    let mut receivers = 0;
    for client in state.connections.values() {
        if client.channels.contains(channel) {
            receivers += 1;
            let _ = client.pushes.send(PushInfo {
                kind: PushKind::Message,
                data: vec![
                    Value::BulkString(channel.as_bytes().to_vec()),
                    Value::BulkString(body.to_vec()),
                ],
            });
        }
    }
    receivers
}

/// Runs one command that is not a publish.
fn run(state: &mut State, cmd: &Cmd) -> RedisResult<Value> {
    let args: Vec<Vec<u8>> = cmd
        .args_iter()
        .filter_map(|arg| match arg {
            redis::Arg::Simple(bytes) => Some(bytes.to_vec()),
            _ => None,
        })
        .collect();
    let text =
        |i: usize| String::from_utf8_lossy(args.get(i).map_or(&[][..], Vec::as_slice)).into_owned();
    match text(0).to_ascii_uppercase().as_str() {
        "PING" => Ok(Value::SimpleString("PONG".to_owned())),
        "SCRIPT" => {
            state.scripts_loaded = true;
            state.script_loads += 1;
            Ok(Value::Okay)
        }
        "EVALSHA" if !state.scripts_loaded => Err(RedisError::from((
            ErrorKind::Server(ServerErrorKind::NoScript),
            "NOSCRIPT No matching script.",
        ))),
        "EVALSHA" => {
            let scripts = Scripts::new();
            let sha = text(1);
            if sha == scripts.replay.get_hash() {
                // Epoch 1, nothing recorded: with a position, nothing missed in any room.
                let keys: usize = text(2).parse().unwrap_or(2);
                let mut answer = vec![
                    Value::BulkString(b"1".to_vec()),
                    Value::BulkString(b"0".to_vec()),
                ];
                if !text(3 + keys).is_empty() {
                    answer.extend((2..keys).map(|_| Value::Array(Vec::new())));
                }
                Ok(Value::Array(answer))
            } else if sha == scripts.recall.get_hash() {
                Ok(Value::Nil)
            } else {
                Ok(Value::Int(0))
            }
        }
        _ => Ok(Value::Okay),
    }
}

impl Transport for StubLink {
    type Event = Infallible;

    async fn subscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        self.with(|state, id| {
            if let Some(client) = state.connections.get_mut(&id) {
                client.channels.extend(channels.iter().cloned());
            }
        })
    }

    async fn unsubscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        self.with(|state, id| {
            if let Some(client) = state.connections.get_mut(&id) {
                for channel in channels {
                    client.channels.remove(channel);
                }
            }
        })
    }

    async fn send(&mut self, items: &[Outgoing]) -> RedisResult<Vec<RedisResult<Value>>> {
        let mut stalled = self.redis.stalled.subscribe();
        let _ = stalled.wait_for(|stalled| !*stalled).await;
        self.with(|state, _| {
            items
                .iter()
                .map(|item| match item {
                    Outgoing::Publish { channel, body } => {
                        let receivers = publish(state, channel, body);
                        Ok(Value::Int(i64::try_from(receivers).unwrap_or(i64::MAX)))
                    }
                    Outgoing::Cmd(cmd) => run(state, cmd),
                })
                .collect()
        })
    }

    async fn ask(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        self.with(|state, _| run(state, cmd))?
    }

    async fn check(&mut self) -> RedisResult<Vec<String>> {
        self.with(|_, _| Vec::new())
    }

    async fn event(&mut self) -> Infallible {
        std::future::pending().await
    }

    async fn on_event(&mut self, event: Infallible) -> Vec<String> {
        match event {}
    }

    fn check_every(&self) -> Duration {
        Duration::from_secs(1)
    }
}

mod tests {
    //! The connection task and inbound dispatch over [`StubRedis`]: several nodes, one Redis.

    use std::error::Error;
    use std::sync::Arc;
    use std::time::Duration;

    use redis::{ErrorKind, RedisError, ServerErrorKind};
    use sseio_core::{
        Broker, BrokerError, CloseReason, Connection, Context, EventHandler, HandlerOptions,
        History, Server,
    };
    use sseio_test_support::RecordingSink;
    use tokio::time::Instant;

    use super::StubRedis;
    use crate::broker::Shared;
    use crate::{RedisBroker, RedisBrokerBuilder};

    /// How long anything may take here (nothing sleeps for it: each wait polls what it awaits).
    const WAIT: Duration = Duration::from_secs(5);

    /// A broker on `redis`, reconnecting within milliseconds.
    async fn broker(redis: &StubRedis, config: RedisBrokerBuilder) -> RedisBroker {
        let config = config.reconnect_backoff(Duration::from_millis(1), Duration::from_millis(10));
        RedisBroker::start_with(Arc::new(Shared::new(config)), redis.connector())
            .await
            .expect("the stub accepts the connection")
    }

    /// A node on `redis`: a server with rooms by path and handler `e`.
    async fn node(redis: &StubRedis) -> (Server, EventHandler) {
        let broker = broker(redis, RedisBroker::builder("stub")).await;
        let server = Server::builder()
            .path("/r/:room")
            .broker(broker)
            .build()
            .expect("the server builds");
        let handler = server
            .register_event_handler(
                "e",
                HandlerOptions::new(|ctx: &Context| {
                    ctx.param("room").unwrap_or_default().to_owned()
                }),
            )
            .expect("the handler registers");
        (server, handler)
    }

    /// Opens a stream of `target` on `server`, recording what it is sent.
    async fn open(server: &Server, target: &str) -> (Connection, Arc<RecordingSink>) {
        let sink = Arc::new(RecordingSink::default());
        let request = http::Request::get(target).body(()).expect("a request");
        let connection = server
            .connect((&request).into(), sink.clone())
            .await
            .expect("the stream opens");
        (connection, sink)
    }

    /// Yields until `done` holds, within [`WAIT`].
    async fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The [`RedisError`] beneath `error`, downcast from its source.
    fn cause(error: &BrokerError) -> Option<&RedisError> {
        error.source()?.downcast_ref::<RedisError>()
    }

    fn room(name: &str) -> String {
        crate::wire::room_channel("sseio", "e", name)
    }

    #[tokio::test]
    async fn a_message_sent_on_one_node_reaches_the_room_on_another() {
        let redis = StubRedis::new();
        let (_one, sender) = node(&redis).await;
        let (two, _) = node(&redis).await;
        let (_stream, sink) = open(&two, "/r/a?clientId=c&events=e").await;
        wait_until("node two subscribes room a", || {
            redis.subscribers(&room("a")) == 1
        })
        .await;
        sender.send("a", "hello").expect("queued");
        wait_until("the message reaches node two's client", || {
            sink.data().iter().any(|data| data.contains("hello"))
        })
        .await;
    }

    #[tokio::test]
    async fn presence_gathers_the_members_of_every_node() {
        let redis = StubRedis::new();
        let (one, asking) = node(&redis).await;
        let (two, _) = node(&redis).await;
        let (_first, _) = open(&one, "/r/a?clientId=c1&events=e").await;
        let (_second, _) = open(&two, "/r/a?clientId=c2&events=e").await;
        let (_elsewhere, _) = open(&two, "/r/b?clientId=c3&events=e").await;
        wait_until("both nodes subscribe room a", || {
            redis.subscribers(&room("a")) == 2
        })
        .await;
        let presence = asking.presence("a").await.expect("every node answers");
        assert_eq!(presence.count, 2);
        assert_eq!(presence.client_ids, ["c1", "c2"]);
    }

    #[tokio::test]
    async fn a_client_id_connecting_on_another_node_replaces_the_old_stream() {
        let redis = StubRedis::new();
        let (one, _) = node(&redis).await;
        let (two, _) = node(&redis).await;
        let control = crate::wire::control_channel("sseio");
        let (_old, old) = open(&one, "/r/a?clientId=c&events=e").await;
        wait_until("node one announces c", || redis.published(&control) == 1).await;
        let (_new, new) = open(&two, "/r/a?clientId=c&events=e").await;
        wait_until("node one closes its stream of c", || {
            old.close_reason() == Some(CloseReason::Replaced)
        })
        .await;
        assert_eq!(new.close_reason(), None);
    }

    #[tokio::test]
    async fn scripts_are_loaded_again_after_noscript() {
        let redis = StubRedis::new();
        let broker = broker(&redis, RedisBroker::builder("stub")).await;
        assert_eq!(redis.script_loads(), 4, "each script once per connection");
        let history = broker.history_store().expect("history in Redis");
        redis.flush_scripts();
        let refused = history
            .publish_confirmed("e", "a", "lost", History::new(8))
            .await;
        assert!(
            matches!(&refused, Err(BrokerError::Failed { reason, .. }) if reason.contains("NOSCRIPT")),
            "{refused:?}"
        );
        let answer = refused.as_ref().err().and_then(cause);
        assert_eq!(
            answer.map(RedisError::kind),
            Some(ErrorKind::Server(ServerErrorKind::NoScript))
        );
        wait_until("the broker reconnects and loads the scripts", || {
            redis.script_loads() == 8 && broker.is_connected()
        })
        .await;
        history
            .publish_confirmed("e", "a", "kept", History::new(8))
            .await
            .expect("the script runs again");
    }

    #[tokio::test]
    async fn a_send_refused_while_redis_is_unreachable_has_the_redis_error_as_source() {
        let redis = StubRedis::new();
        let broker = broker(&redis, RedisBroker::builder("stub")).await;
        redis.go_away();
        // Lost first (with no error, or the reset of a command in flight), then refused at
        // each attempt to reconnect.
        let deadline = Instant::now() + WAIT;
        let refused = loop {
            match broker.publish("e", "a", "m") {
                Err(error) if cause(&error).is_some_and(RedisError::is_connection_refusal) => {
                    break error;
                }
                _ => assert!(Instant::now() < deadline, "timed out waiting for a refusal"),
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        assert!(
            matches!(&refused, BrokerError::Unavailable { reason, .. } if reason.starts_with("cannot reach Redis")),
            "{refused:?}"
        );
        // The same cause in every clone handed out.
        let cloned = refused.clone();
        assert!(cause(&cloned).is_some_and(RedisError::is_connection_refusal));
        assert!(!broker.is_connected());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_sends_until_redis_answers_again() {
        let redis = StubRedis::new();
        let broker = broker(&redis, RedisBroker::builder("stub").max_queued(4)).await;
        redis.stall(true);
        let mut accepted = 0;
        let limit = loop {
            match broker.publish("e", "a", "m") {
                Ok(()) => accepted += 1,
                Err(BrokerError::Backlog { limit }) => break limit,
                Err(other) => panic!("{other:?}"),
            }
            // The connection task takes what it can: the first batch, then waits for Redis.
            tokio::task::yield_now().await;
            assert!(accepted <= 4 + 1, "more accepted than the queue holds");
        };
        assert_eq!(limit, 4);
        assert!(accepted >= 4, "refused with room left: {accepted} accepted");
        redis.stall(false);
        wait_until("every accepted message is published", || {
            redis.published(&room("a")) == accepted
        })
        .await;
        broker.publish("e", "a", "m").expect("room again");
    }

    #[tokio::test]
    async fn a_reconnection_subscribes_the_rooms_served_now() {
        let redis = StubRedis::new();
        let (one, _) = node(&redis).await;
        let (a, _) = open(&one, "/r/a?clientId=ca&events=e").await;
        let (_b, _) = open(&one, "/r/b?clientId=cb&events=e").await;
        wait_until("rooms a and b subscribed", || {
            redis.subscribers(&room("a")) == 1 && redis.subscribers(&room("b")) == 1
        })
        .await;
        redis.go_away();
        wait_until("the node sees Redis gone", || !one.is_ready()).await;
        // While Redis is away: room a empties, room c appears.
        drop(a);
        let (_c, _) = open(&one, "/r/c?clientId=cc&events=e").await;
        redis.come_back();
        wait_until("the node is back", || one.is_ready()).await;
        let subscriptions = redis.subscriptions();
        assert_eq!(subscriptions.len(), 1, "one connection");
        let (mut rooms, others): (Vec<&String>, Vec<&String>) = subscriptions[0]
            .iter()
            .partition(|channel| channel.contains(":room:"));
        rooms.sort_unstable();
        assert_eq!(rooms, [&room("b"), &room("c")]);
        assert_eq!(
            others.len(),
            2,
            "the control channel and the node's own: {others:?}"
        );
        assert!(others.contains(&&crate::wire::control_channel("sseio")));
    }
}
