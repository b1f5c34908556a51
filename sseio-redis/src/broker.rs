//! `RedisBroker`: the [`Broker`] of a node, and the task that keeps its Redis connection.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use redis::{Cmd, ErrorKind, PushInfo, PushKind, RedisError, RedisResult, ServerErrorKind, Value};
use sseio_core::{
    BoxFuture, Broker, BrokerError, CloseReason, ConnectionId, History, HistoryStore, Node,
    Position, Presence, Recalled, Replay, ReplayRoom,
};
use tokio::sync::{mpsc, oneshot};

use crate::history::{self, Keys, Record, Scripts};
use crate::link::{Link, Outgoing, Target};
use crate::shards::{self, Routes};
use crate::wire::{self, Answer, Control, HandedOver, Query, RoomMessage, TakeOver, ToNode};

/// The default prefix of every channel name.
pub const DEFAULT_PREFIX: &str = "sseio";
/// The default number of messages queued for Redis before `send` returns
/// [`BrokerError::Backlog`].
pub const DEFAULT_MAX_QUEUED: usize = 65_536;
/// The default time a presence query waits for the nodes' answers.
pub const DEFAULT_PRESENCE_TIMEOUT: Duration = Duration::from_secs(2);
/// The default number of channels per `SUBSCRIBE` when a node subscribes its rooms again after
/// reconnecting.
pub const DEFAULT_RESUBSCRIBE_BATCH: usize = 1_000;
/// The first wait before reconnecting; each failed attempt doubles it, up to the maximum.
pub const DEFAULT_RECONNECT_MIN: Duration = Duration::from_millis(100);
/// The longest wait between two reconnection attempts.
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(5);

/// How long a replay or a resume lookup waits for Redis before the connection resyncs instead,
/// and a confirmed send before it fails with [`BrokerError::TimedOut`].
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a reconnecting `clientId` waits for the node its stream is still open on to close
/// it and say where it stood, before it resyncs instead. A node that died does not count: it
/// is known gone at once (nobody listens on its channel any more).
const TAKE_OVER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the record that a `clientId`'s stream is open on a node lives: a stream open longer
/// than this on a node that dies without closing it resumes as a first connect.
const OPEN_MARK_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The most commands handled in one round (one pipeline of publishes).
const BATCH: usize = 1024;

/// Configures a [`RedisBroker`]. Start with [`RedisBroker::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisBrokerBuilder {
    target: Target,
    prefix: String,
    max_queued: usize,
    presence_timeout: Duration,
    resubscribe_batch: usize,
    reconnect_min: Duration,
    reconnect_max: Duration,
}

impl RedisBrokerBuilder {
    /// The prefix of every channel this broker uses, so that several applications can share a
    /// Redis: only nodes with the same prefix form a cluster. Default: `sseio`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sharded Pub/Sub (`SSUBSCRIBE`/`SPUBLISH`, Redis 7+) on a Redis Cluster: each room's
    /// channel lives on the master that owns its slot, so a message travels through one shard
    /// instead of every node of the Redis Cluster, and a master failing over costs only its own
    /// rooms (see the crate docs, "On a Redis Cluster"). The URL is then any node of the
    /// cluster. Publishes go in one pipeline per master, the masters at once. No history in
    /// Redis. Default: off (plain `PUBLISH`, one pipeline per batch).
    pub fn sharded(mut self, sharded: bool) -> Self {
        self.target.sharded = sharded;
        self
    }

    /// The most messages waiting for Redis; past it `send` returns [`BrokerError::Backlog`]
    /// instead of queueing without bound. Default: 65,536.
    pub fn max_queued(mut self, messages: usize) -> Self {
        self.max_queued = messages.max(1);
        self
    }

    /// How long a presence query waits for every node that serves the room to answer.
    /// Default: 2 seconds.
    pub fn presence_timeout(mut self, timeout: Duration) -> Self {
        self.presence_timeout = timeout;
        self
    }

    /// How many channels go in one `SUBSCRIBE` when the node subscribes all its rooms again
    /// after reconnecting. Default: 1,000.
    pub fn resubscribe_batch(mut self, channels: usize) -> Self {
        self.resubscribe_batch = channels.max(1);
        self
    }

    /// The wait before the first reconnection attempt and the longest wait between two; each
    /// failed attempt doubles the wait. Default: 100 ms and 5 s.
    pub fn reconnect_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.reconnect_min = first;
        self.reconnect_max = max.max(first);
        self
    }

    /// Connects to Redis and starts the task that keeps the connection. Call it inside a tokio
    /// runtime; give the broker to one server with `ServerBuilder::broker`.
    ///
    /// # Errors
    ///
    /// The [`RedisError`] of the first connection: a bad URL, or no Redis there. (Later losses
    /// are handled: the broker reconnects by itself.)
    pub async fn connect(self) -> Result<RedisBroker, RedisError> {
        let node_id = uuid::Uuid::new_v4().simple().to_string();
        let shared = Arc::new(Shared {
            control: wire::control_channel(&self.prefix),
            node_channel: wire::node_channel(&self.prefix, &node_id),
            mark: format!("@{node_id}"),
            node_id,
            node: OnceLock::new(),
            up: AtomicBool::new(false),
            last_error: Mutex::new(String::new()),
            queued: AtomicUsize::new(0),
            max_queued: self.max_queued,
            presence_timeout: self.presence_timeout,
            next_query: AtomicU64::new(1),
            queries: Mutex::new(HashMap::new()),
            takeovers: Mutex::new(HashMap::new()),
            catch_up: Mutex::default(),
            clients: Mutex::new(HashMap::new()),
            keys: Keys::new(&self.prefix),
            scripts: Scripts::new(),
            routes: self.target.sharded.then(Arc::default),
            config: self,
        });
        let (link, pushes) = Link::open(&shared.config.target, shared.routes.as_ref()).await?;
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let mut keeper = Keeper {
            shared: shared.clone(),
            commands,
            replies: commands_tx.downgrade(),
        };
        let (link, lost) = keeper.start(link, pushes).await?;
        tokio::spawn(keeper.run(link, lost));
        Ok(RedisBroker {
            history: RedisHistory {
                shared: shared.clone(),
                commands: commands_tx.clone(),
            },
            shared,
            commands: commands_tx,
        })
    }
}

/// A [`Broker`] on Redis Pub/Sub: servers (nodes) given brokers on the same Redis and prefix
/// form one cluster. See the crate docs for what it guarantees and how it fails.
pub struct RedisBroker {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    history: RedisHistory,
}

/// The cluster's history in Redis (see the `history` module): what
/// [`Broker::history`] gives the server.
struct RedisHistory {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
}

struct Shared {
    config: RedisBrokerBuilder,
    node_id: String,
    control: String,
    node_channel: String,
    /// This node's mark in a resume record: `@<node id>`, for a stream open here.
    mark: String,
    node: OnceLock<Node>,
    /// Connected, with every room subscribed.
    up: AtomicBool,
    last_error: Mutex<String>,
    queued: AtomicUsize,
    max_queued: usize,
    presence_timeout: Duration,
    next_query: AtomicU64,
    /// The presence queries of this node waiting for answers.
    queries: Mutex<HashMap<u64, mpsc::UnboundedSender<Vec<String>>>>,
    /// The take-overs this node asked other nodes for, waiting for their answers.
    takeovers: Mutex<HashMap<u64, oneshot::Sender<HandedOver>>>,
    /// The numbered messages' way across a lost connection. Taken before the core's locks
    /// (deliveries run under it).
    catch_up: Mutex<CatchUp>,
    /// This node's connections by `clientId`, and whether their announcement came back on the
    /// control channel (see [`Keeper::on_control`]).
    clients: Mutex<HashMap<String, Announced>>,
    keys: Keys,
    scripts: Scripts,
    /// With sharded Pub/Sub: which master owns which slots, and which are up, so that a send
    /// to a room whose master is down fails at once.
    routes: Option<Arc<Routes>>,
}

#[derive(Debug, Clone, Copy)]
struct Announced {
    connection: ConnectionId,
    echoed: bool,
}

/// Where the answer to one command goes: `Err` with a connection error when the command was
/// written but the connection was lost before its answer came. Dropped without an answer when
/// the command was never written.
type AnswerTo = oneshot::Sender<RedisResult<Value>>;

enum Command {
    /// Sent in a pipeline with the publishes around it; counts against `max_queued`. Its answer
    /// goes to `reply`, if any: the number of nodes that received it (a presence query), or the
    /// confirmation of a send.
    Publish {
        outgoing: Outgoing,
        reply: Option<AnswerTo>,
    },
    Subscribe(String),
    Unsubscribe(String),
    /// A command whose answer is awaited, run in order with the others (in the same pipeline as
    /// the publishes around it).
    Ask {
        cmd: Cmd,
        reply: AnswerTo,
    },
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RedisBroker {
    /// A builder for a broker on the Redis at `url` (`redis://host:port/db`, with
    /// `rediss://` and credentials as the `redis` crate reads them), with the defaults.
    pub fn builder(url: impl Into<String>) -> RedisBrokerBuilder {
        RedisBrokerBuilder {
            target: Target {
                url: url.into(),
                sharded: false,
            },
            prefix: DEFAULT_PREFIX.to_owned(),
            max_queued: DEFAULT_MAX_QUEUED,
            presence_timeout: DEFAULT_PRESENCE_TIMEOUT,
            resubscribe_batch: DEFAULT_RESUBSCRIBE_BATCH,
            reconnect_min: DEFAULT_RECONNECT_MIN,
            reconnect_max: DEFAULT_RECONNECT_MAX,
        }
    }

    /// A broker on the Redis at `url` with the defaults: [`RedisBroker::builder`] then
    /// [`connect`](RedisBrokerBuilder::connect).
    ///
    /// # Errors
    ///
    /// The [`RedisError`] of the first connection.
    pub async fn connect(url: impl Into<String>) -> Result<Self, RedisError> {
        Self::builder(url).connect().await
    }

    /// This node's id in the cluster (random, new for each broker).
    pub fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    /// Whether the broker is connected to Redis with every room subscribed (sends work). With
    /// [`sharded`](RedisBrokerBuilder::sharded) Pub/Sub, whether it runs: a master of the Redis
    /// Cluster that is down refuses only its own rooms' sends, and this stays true.
    pub fn is_connected(&self) -> bool {
        self.shared.up.load(Ordering::SeqCst)
    }

    fn unavailable(&self) -> BrokerError {
        unavailable(&self.shared)
    }

    /// Queues a publish, if the broker is up and its queue has room.
    fn enqueue(
        &self,
        channel: String,
        body: Vec<u8>,
        reply: Option<AnswerTo>,
    ) -> Result<(), BrokerError> {
        enqueue(
            &self.shared,
            &self.commands,
            Outgoing::Publish { channel, body },
            reply,
        )
    }

    fn control(&self, control: &Control) -> Result<(), BrokerError> {
        let body = serde_json::to_vec(control).map_err(|e| BrokerError::Failed(e.to_string()))?;
        self.enqueue(self.shared.control.clone(), body, None)
    }

    fn room_channel(&self, event: &str, room: &str) -> String {
        wire::room_channel(&self.shared.config.prefix, event, room)
    }
}

/// Queues a command for the next pipeline, if the broker is up and its queue has room.
fn enqueue(
    shared: &Shared,
    commands: &mpsc::UnboundedSender<Command>,
    outgoing: Outgoing,
    reply: Option<AnswerTo>,
) -> Result<(), BrokerError> {
    if !shared.up.load(Ordering::SeqCst) {
        return Err(unavailable(shared));
    }
    if let (Some(routes), Outgoing::Publish { channel, .. }) = (&shared.routes, &outgoing) {
        routes
            .check(channel)
            .map_err(|reason| BrokerError::Unavailable { reason })?;
    }
    let limit = shared.max_queued;
    if shared.queued.fetch_add(1, Ordering::SeqCst) >= limit {
        shared.queued.fetch_sub(1, Ordering::SeqCst);
        return Err(BrokerError::Backlog { limit });
    }
    let command = Command::Publish { outgoing, reply };
    commands.send(command).map_err(|_| {
        shared.queued.fetch_sub(1, Ordering::SeqCst);
        stopped()
    })
}

fn unavailable(shared: &Shared) -> BrokerError {
    BrokerError::Unavailable {
        reason: lock(&shared.last_error).clone(),
    }
}

fn stopped() -> BrokerError {
    BrokerError::Failed("the broker's task has stopped".to_owned())
}

/// Queues a publish (or a script that records and publishes) like [`enqueue`], and waits until
/// Redis answered it, at most [`ASK_TIMEOUT`]: what a confirmed send awaits.
fn confirmed(
    shared: &Arc<Shared>,
    commands: &mpsc::UnboundedSender<Command>,
    outgoing: Outgoing,
) -> BoxFuture<Result<(), BrokerError>> {
    let (reply, answer) = oneshot::channel();
    if let Err(error) = enqueue(shared, commands, outgoing, Some(reply)) {
        return history::failed(error);
    }
    let shared = shared.clone();
    Box::pin(async move {
        match tokio::time::timeout(ASK_TIMEOUT, answer).await {
            Ok(Ok(Ok(_))) => Ok(()),
            // Not written: its shard's master is down.
            Ok(Ok(Err(error))) if shards::is_unavailable(&error) => Err(BrokerError::Unavailable {
                reason: error.to_string(),
            }),
            // Written, but the connection was lost before Redis answered.
            Ok(Ok(Err(error))) if crate::link::lost(&error) => Err(BrokerError::Unconfirmed {
                reason: error.to_string(),
            }),
            Ok(Ok(Err(error))) => Err(BrokerError::Failed(error.to_string())),
            // Dropped unwritten: the connection was lost while it was queued.
            Ok(Err(_)) => Err(unavailable(&shared)),
            Err(_) => Err(BrokerError::TimedOut {
                timeout: ASK_TIMEOUT,
            }),
        }
    })
}

/// Asks node `node`, whose stream of `client` the record names, to close it and say where it
/// stood. A node nobody listens for is gone (killed, or cut off from Redis): the client is
/// [`Recalled::Lost`]; so it is when the node does not answer in [`TAKE_OVER_TIMEOUT`].
async fn take_over(
    shared: &Arc<Shared>,
    commands: &mpsc::UnboundedSender<Command>,
    client: &str,
    node: &str,
) -> Result<Recalled, BrokerError> {
    let id = shared.next_query.fetch_add(1, Ordering::Relaxed);
    let (waiting, handed) = oneshot::channel();
    lock(&shared.takeovers).insert(id, waiting);
    let _forget = ForgetTakeOver {
        shared: shared.clone(),
        id,
    };
    let asking = ToNode::TakeOver(TakeOver {
        id,
        reply_to: shared.node_id.clone(),
        client: client.to_owned(),
    });
    let (reply, receivers) = oneshot::channel();
    let outgoing = Outgoing::Publish {
        channel: wire::node_channel(&shared.config.prefix, node),
        body: wire::encode_to_node(&asking),
    };
    enqueue(shared, commands, outgoing, Some(reply))?;
    let receivers = match tokio::time::timeout(ASK_TIMEOUT, receivers).await {
        Ok(Ok(Ok(Value::Int(receivers)))) => receivers,
        Ok(Ok(Ok(_))) => 0,
        Ok(Ok(Err(error))) => return Err(BrokerError::Failed(error.to_string())),
        Ok(Err(_)) => return Err(unavailable(shared)),
        Err(_) => {
            return Err(BrokerError::TimedOut {
                timeout: ASK_TIMEOUT,
            });
        }
    };
    if receivers == 0 {
        return Ok(Recalled::Lost);
    }
    match tokio::time::timeout(TAKE_OVER_TIMEOUT, handed).await {
        Ok(Ok(HandedOver { open: true, at, .. })) => {
            Ok(at.as_deref().map_or(Recalled::Nothing, history::parse_left))
        }
        // It had closed there already; its record went to Redis on its one connection before
        // its answer did.
        Ok(Ok(HandedOver { open: false, .. })) => {
            let recall = shared.keys.recall(&shared.scripts, client);
            Ok(
                match history::parse_record(&ask(shared, commands, recall).await?) {
                    Some(Record::Left(left)) => left,
                    Some(Record::OpenOn(_)) => Recalled::Lost,
                    None => Recalled::Nothing,
                },
            )
        }
        Ok(Err(_)) | Err(_) => Ok(Recalled::Lost),
    }
}

/// Forgets a take-over when its future ends, answered or not.
struct ForgetTakeOver {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for ForgetTakeOver {
    fn drop(&mut self) {
        lock(&self.shared.takeovers).remove(&self.id);
    }
}

/// Runs `cmd` in order with the broker's other commands and waits for its answer.
fn ask(
    shared: &Shared,
    commands: &mpsc::UnboundedSender<Command>,
    cmd: Cmd,
) -> BoxFuture<Result<Value, BrokerError>> {
    if !shared.up.load(Ordering::SeqCst) {
        return history::failed(unavailable(shared));
    }
    let (reply, answer) = oneshot::channel();
    if commands.send(Command::Ask { cmd, reply }).is_err() {
        return history::failed(stopped());
    }
    let lost = unavailable(shared);
    Box::pin(async move {
        match tokio::time::timeout(ASK_TIMEOUT, answer).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(error))) => Err(BrokerError::Failed(error.to_string())),
            Ok(Err(_)) => Err(lost),
            Err(_) => Err(BrokerError::TimedOut {
                timeout: ASK_TIMEOUT,
            }),
        }
    })
}

impl HistoryStore for RedisHistory {
    fn publish(
        &self,
        event: &str,
        room: &str,
        payload: &str,
        history: History,
    ) -> Result<(), BrokerError> {
        let record = self.record(event, room, payload, history);
        enqueue(&self.shared, &self.commands, record, None)
    }

    /// Confirmed once Redis answered the script: the message is numbered, recorded and
    /// published.
    fn publish_confirmed(
        &self,
        event: &str,
        room: &str,
        payload: &str,
        history: History,
    ) -> BoxFuture<Result<(), BrokerError>> {
        let record = self.record(event, room, payload, history);
        confirmed(&self.shared, &self.commands, record)
    }

    fn replay(
        &self,
        rooms: Vec<ReplayRoom>,
        from: Option<Position>,
    ) -> BoxFuture<Result<Replay, BrokerError>> {
        let cmd = self.shared.keys.replay(&self.shared.scripts, &rooms, from);
        let answer = ask(&self.shared, &self.commands, cmd);
        Box::pin(async move { history::parse_replay(&answer.await?, rooms.len()) })
    }

    /// Unless the record names another node (the `clientId` opened a stream there since).
    fn remember(&self, client_id: &str, at: Recalled, ttl: Duration) {
        self.write_record(client_id, at, ttl);
    }

    fn recall(&self, client_id: &str) -> BoxFuture<Result<Recalled, BrokerError>> {
        let answer = ask(&self.shared, &self.commands, self.recall_cmd(client_id));
        Box::pin(async move {
            Ok(match history::parse_record(&answer.await?) {
                Some(Record::Left(left)) => left,
                _ => Recalled::Nothing,
            })
        })
    }

    /// The record of the `clientId`: where its stream stood when it closed; or, when it names
    /// the node its stream is open on, that node closes it and says where it stood, or is known
    /// gone (nobody listens on its channel: it died, or lost Redis) and the client resyncs.
    fn resume_point(&self, client_id: &str) -> BoxFuture<Result<Recalled, BrokerError>> {
        let answer = ask(&self.shared, &self.commands, self.recall_cmd(client_id));
        let (shared, commands) = (self.shared.clone(), self.commands.clone());
        let client = client_id.to_owned();
        Box::pin(async move {
            match history::parse_record(&answer.await?) {
                None => Ok(Recalled::Nothing),
                Some(Record::Left(left)) => Ok(left),
                // Open here: this node's registry replaces it, with its position.
                Some(Record::OpenOn(node)) if node == shared.node_id => Ok(Recalled::Nothing),
                Some(Record::OpenOn(node)) => take_over(&shared, &commands, &client, &node).await,
            }
        })
    }

    fn mark_open(&self, client_id: &str) {
        let cmd = self
            .shared
            .keys
            .mark_open(client_id, &self.shared.mark, OPEN_MARK_TTL);
        // Best effort, as every record: while Redis is down the client resyncs on its return.
        let _ = enqueue(&self.shared, &self.commands, Outgoing::Cmd(cmd), None);
    }

    fn unmark_open(&self, client_id: &str) {
        self.write_record(client_id, Recalled::Nothing, OPEN_MARK_TTL);
    }
}

impl RedisHistory {
    fn recall_cmd(&self, client_id: &str) -> Cmd {
        self.shared.keys.recall(&self.shared.scripts, client_id)
    }

    /// Writes where a stream that closed here left (or, [`Recalled::Nothing`], that it is no
    /// longer open here), unless another node's stream owns the record.
    fn write_record(&self, client_id: &str, at: Recalled, ttl: Duration) {
        let shared = &self.shared;
        let cmd = shared
            .keys
            .remember(&shared.scripts, client_id, &shared.mark, at, ttl);
        // Best effort: while Redis is down the client will resync on its return.
        let _ = enqueue(shared, &self.commands, Outgoing::Cmd(cmd), None);
    }

    /// The script run that numbers, records and publishes one message.
    fn record(&self, event: &str, room: &str, payload: &str, history: History) -> Outgoing {
        let channel = wire::room_channel(&self.shared.config.prefix, event, room);
        let body = wire::encode_message(event, room, payload);
        Outgoing::Cmd(self.shared.keys.record(
            &self.shared.scripts,
            &channel,
            (event, room, payload),
            // The script puts the position in front of the message, after its own tag.
            &body[1..],
            history,
        ))
    }
}

impl fmt::Debug for RedisHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisHistory")
            .field("prefix", &self.shared.config.prefix)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("node_id", &self.shared.node_id)
            .field("prefix", &self.shared.config.prefix)
            .field("sharded", &self.shared.config.target.sharded)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Broker for RedisBroker {
    fn attach(&self, node: Node) -> Result<(), BrokerError> {
        self.shared
            .node
            .set(node)
            .map_err(|_| BrokerError::AlreadyAttached)
    }

    fn publish(&self, event: &str, room: &str, payload: &str) -> Result<(), BrokerError> {
        let body = wire::encode_message(event, room, payload);
        self.enqueue(self.room_channel(event, room), body, None)
    }

    /// Confirmed once Redis answered the `PUBLISH`.
    fn publish_confirmed(
        &self,
        event: &str,
        room: &str,
        payload: &str,
    ) -> BoxFuture<Result<(), BrokerError>> {
        let outgoing = Outgoing::Publish {
            channel: self.room_channel(event, room),
            body: wire::encode_message(event, room, payload),
        };
        confirmed(&self.shared, &self.commands, outgoing)
    }

    fn room_created(&self, event: &str, room: &str) {
        // Sent even while down: the task drops it and subscribes every room when it is back.
        let _ = self
            .commands
            .send(Command::Subscribe(self.room_channel(event, room)));
    }

    fn room_emptied(&self, event: &str, room: &str) {
        let _ = self
            .commands
            .send(Command::Unsubscribe(self.room_channel(event, room)));
    }

    fn client_connected(&self, client_id: &str, connection: ConnectionId) {
        let announced = self
            .control(&Control::Connected {
                client: client_id.to_owned(),
                node: self.shared.node_id.clone(),
                conn: connection.get(),
            })
            .is_ok();
        // Not announced (Redis is down): counts as the oldest, so any later connect elsewhere
        // replaces it.
        lock(&self.shared.clients).insert(
            client_id.to_owned(),
            Announced {
                connection,
                echoed: !announced,
            },
        );
    }

    fn client_closed(&self, client_id: &str, connection: ConnectionId) {
        let mut clients = lock(&self.shared.clients);
        if clients
            .get(client_id)
            .is_some_and(|a| a.connection == connection)
        {
            clients.remove(client_id);
        }
    }

    fn presence(&self, event: &str, room: &str) -> BoxFuture<Result<Presence, BrokerError>> {
        let id = self.shared.next_query.fetch_add(1, Ordering::Relaxed);
        let (answers_tx, mut answers) = mpsc::unbounded_channel();
        lock(&self.shared.queries).insert(id, answers_tx);
        let forget = Forget {
            shared: self.shared.clone(),
            id,
        };
        let (count_tx, count) = oneshot::channel();
        let query = Query {
            id,
            reply_to: self.shared.node_id.clone(),
            event: event.to_owned(),
            room: room.to_owned(),
        };
        let asked = self.enqueue(
            self.room_channel(event, room),
            wire::encode_query(&query),
            Some(count_tx),
        );
        let timeout = self.shared.presence_timeout;
        let lost = self.unavailable();
        Box::pin(async move {
            let _forget = forget;
            asked?;
            let gathering = async {
                // The number of nodes subscribed to the room, each of which answers once.
                let expected = match count.await.map_err(|_| lost.clone())? {
                    Ok(Value::Int(count)) => usize::try_from(count).unwrap_or(0),
                    _ => 0,
                };
                let mut clients = Vec::new();
                for _ in 0..expected {
                    clients.extend(answers.recv().await.ok_or_else(|| lost.clone())?);
                }
                Ok(Presence::from_client_ids(clients))
            };
            tokio::time::timeout(timeout, gathering)
                .await
                .unwrap_or(Err(BrokerError::TimedOut { timeout }))
        })
    }

    fn send_to_client(
        &self,
        client_id: &str,
        event: &str,
        payload: &str,
    ) -> Result<(), BrokerError> {
        self.control(&Control::SendToClient {
            client: client_id.to_owned(),
            event: event.to_owned(),
            payload: payload.to_owned(),
        })
    }

    fn disconnect(&self, client_id: &str) -> Result<(), BrokerError> {
        self.control(&Control::Disconnect {
            client: client_id.to_owned(),
        })
    }

    fn is_available(&self) -> bool {
        self.is_connected()
    }

    /// A `PING` in order behind everything queued: once it is answered, so is the rest (or the
    /// connection was lost, and what was queued with it). At most 5 seconds.
    fn flush(&self) -> BoxFuture<()> {
        let answered = ask(&self.shared, &self.commands, redis::cmd("PING"));
        Box::pin(async move {
            let _ = answered.await;
        })
    }

    /// The history in Redis, shared by every node; none with sharded Pub/Sub, where each node
    /// keeps its own (one sequence for the whole cluster would put every send through one
    /// shard).
    fn history_store(&self) -> Option<&dyn HistoryStore> {
        (!self.shared.config.target.sharded).then_some(&self.history as &dyn HistoryStore)
    }
}

/// Forgets a presence query when its future ends, answered or not.
struct Forget {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Forget {
    fn drop(&mut self) {
        lock(&self.shared.queries).remove(&self.id);
    }
}

/// The task that owns the connection: runs the commands, reconnects when it is lost.
struct Keeper {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// For answering presence queries; weak, so the task ends when the broker is dropped.
    replies: mpsc::WeakUnboundedSender<Command>,
}

impl Keeper {
    /// Subscribes the control channel, this node's channel and every live room on a fresh
    /// connection, starts reading its messages, and marks the broker up.
    async fn start(
        &mut self,
        mut link: Link,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
    ) -> Result<(Link, oneshot::Receiver<String>), RedisError> {
        self.drop_queued();
        if !self.shared.config.target.sharded {
            for load in Scripts::load_commands() {
                link.ask(&load).await?;
            }
        }
        let (lost_tx, lost) = oneshot::channel();
        tokio::spawn(read_pushes(
            self.shared.clone(),
            self.replies.clone(),
            pushes,
            lost_tx,
        ));
        let mut channels = vec![
            self.shared.control.clone(),
            self.shared.node_channel.clone(),
        ];
        let rooms = self.shared.node.get().map(Node::rooms).unwrap_or_default();
        let prefix = &self.shared.config.prefix;
        channels.extend(
            rooms
                .iter()
                .map(|(event, room)| wire::room_channel(prefix, event, room)),
        );
        let history = !self.shared.config.target.sharded;
        if history {
            // From the first subscription on, numbered messages wait for the catch-up.
            lock(&self.shared.catch_up).held = Some(Vec::new());
        }
        let subscribed = async {
            for batch in channels.chunks(self.shared.config.resubscribe_batch) {
                link.subscribe(batch).await?;
            }
            if history {
                catch_up(&self.shared, &mut link, &rooms).await?;
            }
            Ok(())
        };
        if let Err(error) = subscribed.await {
            // What was held is replayed by the next catch-up, in order.
            lock(&self.shared.catch_up).held = None;
            return Err(error);
        }
        self.shared.up.store(true, Ordering::SeqCst);
        Ok((link, lost))
    }

    /// Drops whatever was queued for a lost connection: its messages are lost (at most once)
    /// and whoever waits for an answer hears at once that it was never sent; the subscriptions
    /// are taken from the node's rooms when the connection is back.
    fn drop_queued(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            if let Command::Publish { .. } = command {
                self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    async fn run(mut self, mut link: Link, mut lost: oneshot::Receiver<String>) {
        loop {
            let Some(reason) = self.serve(&mut link, &mut lost).await else {
                return;
            };
            let reason = format!("lost the connection to Redis ({reason}); reconnecting");
            *lock(&self.shared.last_error) = reason.clone();
            self.shared.up.store(false, Ordering::SeqCst);
            // Not kept until the connection is back, which may take long: a confirmed send
            // fails now rather than at its timeout.
            self.drop_queued();
            tracing::warn!(target: "sseio_redis", "{reason}");
            if let Some(node) = self.shared.node.get() {
                node.report(BrokerError::Unavailable { reason });
            }
            let Some(reconnected) = self.reconnect().await else {
                return;
            };
            (link, lost) = reconnected;
            let rooms = self.shared.node.get().map_or(0, |node| node.rooms().len());
            tracing::info!(target: "sseio_redis", rooms, "reconnected to Redis");
        }
    }

    /// Runs commands until the connection is lost (`Some(why)`) or the broker is dropped.
    async fn serve(
        &mut self,
        link: &mut Link,
        lost: &mut oneshot::Receiver<String>,
    ) -> Option<String> {
        let mut check = tokio::time::interval(link.check_every());
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                biased;
                why = &mut *lost => {
                    return Some(why.unwrap_or_else(|_| "connection closed".to_owned()));
                }
                received = self.commands.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        return None;
                    }
                    let done = execute(&self.shared, link, &mut batch).await;
                    batch.clear();
                    if let Err(error) = done {
                        return Some(error.to_string());
                    }
                }
                event = link.event() => {
                    let reports = link.on_event(event).await;
                    self.report(reports);
                }
                _ = check.tick() => {
                    match link.check().await {
                        Ok(reports) => self.report(reports),
                        Err(error) => return Some(error.to_string()),
                    }
                }
            }
        }
    }

    /// Raises a [`Notification::Broker`](sseio_core::Notification::Broker) for each of
    /// `reasons` (a master of the Redis Cluster lost or unreachable).
    fn report(&self, reasons: Vec<String>) {
        if let Some(node) = self.shared.node.get() {
            for reason in reasons {
                node.report(BrokerError::Unavailable { reason });
            }
        }
    }

    /// Reconnects with exponential backoff; `None` when the broker was dropped meanwhile.
    async fn reconnect(&mut self) -> Option<(Link, oneshot::Receiver<String>)> {
        let (first, max) = (
            self.shared.config.reconnect_min,
            self.shared.config.reconnect_max,
        );
        let mut wait = first;
        loop {
            tokio::time::sleep(wait).await;
            if self.commands.is_closed() {
                return None;
            }
            wait = (wait * 2).min(max);
            let attempt = async {
                let (link, pushes) =
                    Link::open(&self.shared.config.target, self.shared.routes.as_ref()).await?;
                self.start(link, pushes).await
            };
            match attempt.await {
                Ok(reconnected) => return Some(reconnected),
                Err(error) => {
                    tracing::debug!(target: "sseio_redis", %error, "reconnecting to Redis failed");
                    *lock(&self.shared.last_error) =
                        format!("cannot reach Redis ({error}); reconnecting");
                }
            }
        }
    }
}

/// How a node keeps the numbered messages of its rooms whole across a lost connection to Redis:
/// Pub/Sub keeps nothing for a node that is away, but the history does, so once the node has
/// subscribed its rooms again it replays, from its history, what they missed meanwhile, and
/// delivers it before the live messages that arrived since. Every numbered message reaches the
/// node once and in order, however the connection comes and goes.
#[derive(Debug, Default)]
struct CatchUp {
    /// While the node catches up: the live numbered messages that arrived, held back.
    held: Option<Vec<Numbered>>,
    /// The last numbered message delivered: one at or before it (of its epoch) that arrives
    /// again (live, after it was replayed) is dropped.
    delivered: Option<Position>,
    /// Where the next catch-up starts: every message of the node's rooms after it was, or will
    /// be, delivered live.
    known: Option<Position>,
}

/// A numbered message held back during a catch-up.
#[derive(Debug)]
struct Numbered {
    at: Position,
    event: String,
    room: String,
    payload: String,
}

/// Whether a message at `at` was delivered already, `delivered` being the last one.
fn delivered_already(delivered: Option<Position>, at: Position) -> bool {
    delivered.is_some_and(|last| last.epoch() == at.epoch() && last.offset() >= at.offset())
}

/// The history each room is replayed with on a catch-up: everything its stream still has (a
/// handler's own TTL only trims what a new connection replays).
fn catch_up_history() -> History {
    History::new(1).with_ttl(Duration::from_secs(365 * 24 * 60 * 60))
}

/// Replays, on a fresh connection whose rooms are subscribed, what each of `rooms` missed since
/// the node last stood in the cluster's sequence (from the start of a new one, if Redis lost its
/// data meanwhile), then what was held back; closes the connections of a room whose history no
/// longer has all it missed, so that each resumes from where it stood or is told of the gap.
async fn catch_up(
    shared: &Shared,
    link: &mut Link,
    rooms: &[(Arc<str>, Arc<str>)],
) -> Result<(), RedisError> {
    let asked: Vec<ReplayRoom> = rooms
        .iter()
        .map(|(event, room)| ReplayRoom {
            event: event.clone(),
            room: room.clone(),
            history: catch_up_history(),
        })
        .collect();
    let replay = |from: Option<Position>| shared.keys.replay(&shared.scripts, &asked, from);
    let parse = |answer: &Value| {
        history::parse_replay(answer, asked.len()).map_err(|error| {
            RedisError::from((ErrorKind::Parse, "a catch-up replay", error.to_string()))
        })
    };
    let known = lock(&shared.catch_up).known;
    let mut answer = parse(&link.ask(&replay(known)).await?)?;
    let mut from = known;
    if let Some(known) = known
        && known.epoch() != answer.now.epoch()
    {
        // Redis restarted without its data: every message of the new sequence came after.
        let start = Position::new(answer.now.epoch(), 0);
        answer = parse(&link.ask(&replay(Some(start))).await?)?;
        from = Some(start);
    }
    let mut missed = Vec::new();
    let mut unfilled = Vec::new();
    if from.is_some() {
        for ((event, room), messages) in rooms.iter().zip(answer.rooms) {
            match messages {
                Some(messages) => missed.extend(
                    messages
                        .into_iter()
                        .map(|(offset, payload)| (offset, event, room, payload)),
                ),
                None => unfilled.push((event, room)),
            }
        }
    }
    missed.sort_by_key(|(offset, ..)| *offset);
    // Before the broker serves a server there is no room, nothing to deliver.
    let node = shared.node.get();
    let mut state = lock(&shared.catch_up);
    for (offset, event, room, payload) in missed {
        let at = Position::new(answer.now.epoch(), offset);
        if let Some(node) = node
            && !delivered_already(state.delivered, at)
        {
            node.deliver_numbered(event, room, at, &payload);
            state.delivered = Some(at);
        }
    }
    for held in state.held.take().unwrap_or_default() {
        if let Some(node) = node
            && !delivered_already(state.delivered, held.at)
        {
            node.deliver_numbered(&held.event, &held.room, held.at, &held.payload);
            state.delivered = Some(held.at);
        }
    }
    state.known = match state.delivered {
        Some(delivered) if delivered.epoch() == answer.now.epoch() => Some(Position::new(
            delivered.epoch(),
            delivered.offset().max(answer.now.offset()),
        )),
        _ => Some(answer.now),
    };
    drop(state);
    if !unfilled.is_empty() {
        tracing::warn!(
            target: "sseio_redis",
            rooms = unfilled.len(),
            "rooms missed more than their history keeps while Redis was away; closing their \
             streams, which resume or resync"
        );
    }
    if let Some(node) = node {
        for (event, room) in unfilled {
            node.close_room(event, room, CloseReason::ServerClosed);
        }
    }
    Ok(())
}

/// Delivers a numbered message that arrived live: held back during a catch-up, dropped if the
/// catch-up delivered it already.
fn deliver_numbered(
    shared: &Shared,
    node: &Node,
    at: Position,
    event: &str,
    room: &str,
    payload: &str,
) {
    let mut state = lock(&shared.catch_up);
    if let Some(held) = &mut state.held {
        held.push(Numbered {
            at,
            event: event.to_owned(),
            room: room.to_owned(),
            payload: payload.to_owned(),
        });
        return;
    }
    if delivered_already(state.delivered, at) {
        return;
    }
    node.deliver_numbered(event, room, at, payload);
    state.delivered = Some(at);
    state.known = Some(at);
}

/// Runs one batch of commands in order: consecutive publishes in one go, subscriptions between.
/// On failure the rest of the batch is dropped (its messages are lost: at most once).
async fn execute(
    shared: &Shared,
    link: &mut Link,
    batch: &mut Vec<Command>,
) -> Result<(), RedisError> {
    let mut commands = batch.drain(..).peekable();
    let done = run_commands(shared, link, &mut commands).await;
    let dropped = commands
        .filter(|command| matches!(command, Command::Publish { .. }))
        .count();
    shared.queued.fetch_sub(dropped, Ordering::SeqCst);
    done
}

async fn run_commands(
    shared: &Shared,
    link: &mut Link,
    commands: &mut std::iter::Peekable<impl Iterator<Item = Command>>,
) -> Result<(), RedisError> {
    let mut batch = Vec::new();
    let mut replies = Vec::new();
    while let Some(command) = commands.next() {
        match command {
            Command::Publish { outgoing, reply } => {
                batch.push(outgoing);
                replies.push(Reply::Publish(reply));
            }
            Command::Ask { cmd, reply } => {
                batch.push(Outgoing::Cmd(cmd));
                replies.push(Reply::Ask(reply));
            }
            Command::Subscribe(channel) => link.subscribe(&[channel]).await?,
            Command::Unsubscribe(channel) => link.unsubscribe(&[channel]).await?,
        }
        if batch.is_empty()
            || matches!(
                commands.peek(),
                Some(Command::Publish { .. } | Command::Ask { .. })
            )
        {
            continue;
        }
        let answers = link.send(&batch).await;
        let published = replies
            .iter()
            .filter(|reply| matches!(reply, Reply::Publish(_)))
            .count();
        shared.queued.fetch_sub(published, Ordering::SeqCst);
        batch.clear();
        let answers = match answers {
            Ok(answers) => answers,
            // Written, maybe run, never answered: each waiting sender hears so.
            Err(error) => {
                for reply in replies.drain(..) {
                    if let Some(reply) = reply.into_sender() {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
                return Err(error);
            }
        };
        let mut reload = false;
        for (reply, answer) in replies.drain(..).zip(answers) {
            if let (Reply::Publish(_), Err(error)) = (&reply, &answer) {
                // The scripts are gone from Redis's cache (`SCRIPT FLUSH`, or a failover):
                // reconnecting loads them again.
                reload |= error.kind() == ErrorKind::Server(ServerErrorKind::NoScript);
                tracing::warn!(target: "sseio_redis", %error, "Redis refused a publish");
            }
            if let Some(reply) = reply.into_sender() {
                let _ = reply.send(answer);
            }
        }
        if reload {
            return Err(RedisError::from((
                ErrorKind::Server(ServerErrorKind::NoScript),
                "the history scripts are not loaded",
            )));
        }
    }
    Ok(())
}

/// Who waits for the answer to one command of a pipeline.
enum Reply {
    /// A publish (counted against `max_queued`), maybe with someone waiting: a presence query
    /// for how many nodes received it, a confirmed send for Redis's answer.
    Publish(Option<AnswerTo>),
    /// A command whose whole answer is awaited.
    Ask(AnswerTo),
}

impl Reply {
    fn into_sender(self) -> Option<AnswerTo> {
        match self {
            Reply::Publish(reply) => reply,
            Reply::Ask(reply) => Some(reply),
        }
    }
}

/// Reads what arrives on one connection until it is lost, then says why on `lost`.
async fn read_pushes(
    shared: Arc<Shared>,
    replies: mpsc::WeakUnboundedSender<Command>,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    lost: oneshot::Sender<String>,
) {
    while let Some(push) = pushes.recv().await {
        match push.kind {
            PushKind::Message | PushKind::SMessage => on_message(&shared, &replies, &push.data),
            PushKind::Disconnection => break,
            _ => {}
        }
    }
    let _ = lost.send("connection closed".to_owned());
}

fn on_message(shared: &Shared, replies: &mpsc::WeakUnboundedSender<Command>, data: &[Value]) {
    let (Some(Value::BulkString(channel)), Some(Value::BulkString(body))) =
        (data.first(), data.get(1))
    else {
        return;
    };
    let Some(node) = shared.node.get() else {
        return;
    };
    if channel.as_slice() == shared.control.as_bytes() {
        if let Ok(control) = serde_json::from_slice(body) {
            on_control(shared, node, control);
        }
    } else if channel.as_slice() == shared.node_channel.as_bytes() {
        match wire::decode_to_node(body) {
            Some(ToNode::Answer(answer)) => {
                if let Some(waiting) = lock(&shared.queries).get(&answer.id) {
                    let _ = waiting.send(answer.clients);
                }
            }
            Some(ToNode::TakeOver(take)) => hand_over(shared, node, replies, take),
            Some(ToNode::HandedOver(handed)) => {
                if let Some(waiting) = lock(&shared.takeovers).remove(&handed.id) {
                    let _ = waiting.send(handed);
                }
            }
            None => {}
        }
    } else {
        match wire::decode_room(body) {
            Some(RoomMessage::Message {
                event,
                room,
                payload,
            }) => {
                node.deliver(event, room, payload);
            }
            Some(RoomMessage::Numbered {
                at,
                event,
                room,
                payload,
            }) => deliver_numbered(shared, node, at, event, room, payload),
            Some(RoomMessage::Query(query)) => answer(shared, node, replies, &query),
            None => {}
        }
    }
}

/// Answers a presence query with this node's members of the room.
fn answer(
    shared: &Shared,
    node: &Node,
    replies: &mpsc::WeakUnboundedSender<Command>,
    query: &Query,
) {
    let answer = Answer {
        id: query.id,
        clients: node.local_presence(&query.event, &query.room),
    };
    send_to_node(shared, replies, &query.reply_to, &ToNode::Answer(answer));
}

/// Closes this node's stream of the `clientId` another node is taking over, and says where it
/// stood.
fn hand_over(
    shared: &Shared,
    node: &Node,
    replies: &mpsc::WeakUnboundedSender<Command>,
    take: TakeOver,
) {
    let taken = node.take_over(&take.client);
    let handed = HandedOver {
        id: take.id,
        open: taken.is_some(),
        at: taken
            .map(history::record_text)
            .filter(|text| !text.is_empty()),
    };
    send_to_node(shared, replies, &take.reply_to, &ToNode::HandedOver(handed));
}

/// Publishes `message` on the channel of node `to`, from the task that reads this node's
/// messages (which holds no handle that would keep the broker alive).
fn send_to_node(
    shared: &Shared,
    replies: &mpsc::WeakUnboundedSender<Command>,
    to: &str,
    message: &ToNode,
) {
    let Some(replies) = replies.upgrade() else {
        return;
    };
    shared.queued.fetch_add(1, Ordering::SeqCst);
    let _ = replies.send(Command::Publish {
        outgoing: Outgoing::Publish {
            channel: wire::node_channel(&shared.config.prefix, to),
            body: wire::encode_to_node(message),
        },
        reply: None,
    });
}

/// Acts on a control message. A connect elsewhere replaces this node's connection with the same
/// `clientId` only if this node's own announcement came back earlier on the control channel:
/// every node sees the channel in the same order, so the last connection announced survives,
/// wherever the two connects happened.
fn on_control(shared: &Shared, node: &Node, control: Control) {
    match control {
        Control::Connected {
            client,
            node: at,
            conn,
        } => {
            let mut clients = lock(&shared.clients);
            let Some(local) = clients.get_mut(&client) else {
                return;
            };
            if at == shared.node_id {
                if local.connection.get() == conn {
                    local.echoed = true;
                }
            } else if local.echoed {
                let connection = local.connection;
                clients.remove(&client);
                drop(clients);
                node.close(connection, CloseReason::Replaced);
            }
        }
        Control::SendToClient {
            client,
            event,
            payload,
        } => {
            node.deliver_to_client(&client, &event, &payload);
        }
        Control::Disconnect { client } => {
            node.disconnect(&client);
        }
    }
}
