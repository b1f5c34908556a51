//! `RedisBroker`: the [`Broker`] a node's server talks to. It queues publishes and commands for
//! the connection task (the `keeper` module), refuses them at once while Redis is away, and
//! waits for the answers of confirmed sends, presence queries and take-overs.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use redis::{Cmd, RedisError, RedisResult, Value};
use sseio_core::{
    BoxFuture, Broker, BrokerError, ConnectionId, HistoryStore, Node, Presence, Recalled,
};
use tokio::sync::{mpsc, oneshot};

use crate::builder::RedisBrokerBuilder;
use crate::catch_up::CatchUp;
use crate::history::store::RedisHistory;
use crate::history::{self, Keys, Record, Scripts};
use crate::keeper::Keeper;
use crate::link::{Link, Outgoing};
use crate::shards::{self, Routes};
use crate::wire::{self, Control, HandedOver, Query, TakeOver, ToNode};

/// How long a replay or a resume lookup waits for Redis before the connection resyncs instead,
/// and a confirmed send before it fails with [`BrokerError::TimedOut`].
pub(crate) const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a reconnecting `clientId` waits for the node its stream is still open on to close
/// it and say where it stood, before it resyncs instead. A node that died does not count: it
/// is known gone at once (nobody listens on its channel any more).
const TAKE_OVER_TIMEOUT: Duration = Duration::from_secs(2);

/// A [`Broker`] on Redis Pub/Sub: servers (nodes) given brokers on the same Redis and prefix
/// form one cluster. See the crate docs for what it guarantees and how it fails.
pub struct RedisBroker {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    history: RedisHistory,
}

/// What the broker's handles, the connection task and inbound dispatch share.
pub(crate) struct Shared {
    pub(crate) config: RedisBrokerBuilder,
    pub(crate) node_id: String,
    pub(crate) control: String,
    pub(crate) node_channel: String,
    /// This node's mark in a resume record: `@<node id>`, for a stream open here.
    pub(crate) mark: String,
    pub(crate) node: OnceLock<Node>,
    /// Connected, with every room subscribed.
    pub(crate) up: AtomicBool,
    pub(crate) last_error: Mutex<String>,
    pub(crate) queued: AtomicUsize,
    pub(crate) max_queued: usize,
    pub(crate) presence_timeout: Duration,
    pub(crate) next_query: AtomicU64,
    /// The presence queries of this node waiting for answers.
    pub(crate) queries: Mutex<HashMap<u64, mpsc::UnboundedSender<Vec<String>>>>,
    /// The take-overs this node asked other nodes for, waiting for their answers.
    pub(crate) takeovers: Mutex<HashMap<u64, oneshot::Sender<HandedOver>>>,
    /// The numbered messages' way across a lost connection. Taken before the core's locks
    /// (deliveries run under it).
    pub(crate) catch_up: Mutex<CatchUp>,
    /// This node's connections by `clientId`, and whether their announcement came back on the
    /// control channel (see `inbound::on_control`).
    pub(crate) clients: Mutex<HashMap<String, Announced>>,
    pub(crate) keys: Keys,
    pub(crate) scripts: Scripts,
    /// With sharded Pub/Sub: which master owns which slots, and which are up, so that a send
    /// to a room whose master is down fails at once.
    pub(crate) routes: Option<Arc<Routes>>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Announced {
    pub(crate) connection: ConnectionId,
    pub(crate) echoed: bool,
}

/// Where the answer to one command goes: `Err` with a connection error when the command was
/// written but the connection was lost before its answer came. Dropped without an answer when
/// the command was never written.
pub(crate) type AnswerTo = oneshot::Sender<RedisResult<Value>>;

/// What the broker's handles queue for the connection task.
pub(crate) enum Command {
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

/// Locks `mutex`, whether or not a thread panicked while holding it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RedisBroker {
    /// Connects to Redis as `config` says and starts the connection task: what
    /// [`RedisBrokerBuilder::connect`] does.
    pub(crate) async fn start(config: RedisBrokerBuilder) -> Result<RedisBroker, RedisError> {
        let node_id = uuid::Uuid::new_v4().simple().to_string();
        let shared = Arc::new(Shared {
            control: wire::control_channel(&config.prefix),
            node_channel: wire::node_channel(&config.prefix, &node_id),
            mark: format!("@{node_id}"),
            node_id,
            node: OnceLock::new(),
            up: AtomicBool::new(false),
            last_error: Mutex::new(String::new()),
            queued: AtomicUsize::new(0),
            max_queued: config.max_queued,
            presence_timeout: config.presence_timeout,
            next_query: AtomicU64::new(1),
            queries: Mutex::new(HashMap::new()),
            takeovers: Mutex::new(HashMap::new()),
            catch_up: Mutex::default(),
            clients: Mutex::new(HashMap::new()),
            keys: Keys::new(&config.prefix),
            scripts: Scripts::new(),
            routes: config.target.sharded.then(Arc::default),
            config,
        });
        let (link, pushes) = Link::open(&shared.config.target, shared.routes.as_ref()).await?;
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let mut keeper = Keeper::new(shared.clone(), commands, commands_tx.downgrade());
        let (link, lost) = keeper.start(link, pushes).await?;
        tokio::spawn(keeper.run(link, lost));
        Ok(RedisBroker {
            history: RedisHistory::new(shared.clone(), commands_tx.clone()),
            shared,
            commands: commands_tx,
        })
    }

    /// A builder for a broker on the Redis at `url` (`redis://host:port/db`, with
    /// `rediss://` and credentials as the `redis` crate reads them), with the defaults.
    pub fn builder(url: impl Into<String>) -> RedisBrokerBuilder {
        RedisBrokerBuilder::new(url.into())
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
pub(crate) fn enqueue(
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

pub(crate) fn unavailable(shared: &Shared) -> BrokerError {
    BrokerError::Unavailable {
        reason: lock(&shared.last_error).clone(),
    }
}

pub(crate) fn stopped() -> BrokerError {
    BrokerError::Failed("the broker's task has stopped".to_owned())
}

/// Queues a publish (or a script that records and publishes) like [`enqueue`], and waits until
/// Redis answered it, at most [`ASK_TIMEOUT`]: what a confirmed send awaits.
pub(crate) fn confirmed(
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
pub(crate) async fn take_over(
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
pub(crate) fn ask(
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
