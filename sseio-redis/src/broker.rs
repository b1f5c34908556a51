//! `RedisBroker`: the [`Broker`] a node's server talks to. It queues publishes and commands for
//! the connection task (the `keeper` module), refuses them at once while Redis is away, and
//! waits for the answers of confirmed sends, presence queries and take-overs.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use redis::{Cmd, RedisError, RedisResult, Value};
use sseio_core::{
    BoxFuture, Broker, BrokerError, ConnectionId, HistoryStore, Node, Presence, Recalled,
};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use crate::builder::RedisBrokerBuilder;
use crate::catch_up::CatchUp;
use crate::history::store::RedisHistory;
use crate::history::{self, Keys, Record, Scripts};
use crate::keeper::{Keeper, Wanted};
use crate::link::{Connect, Connector, Outgoing};
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
    commands: mpsc::Sender<Command>,
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
    /// What a send gets while the broker is down: [`BrokerError::Unavailable`] for the last
    /// connection error, with Redis's error as its source when there was one.
    pub(crate) last_error: Mutex<BrokerError>,
    /// The capacity of the command channel: past it, a publish fails with
    /// [`BrokerError::Backlog`].
    pub(crate) max_queued: usize,
    /// The subscriptions to change, applied by the connection task before it runs the commands
    /// queued after the change.
    pub(crate) wanted: Wanted,
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

impl Shared {
    /// The state of a new broker configured by `config`, with a new node id; down until the
    /// connection task has subscribed its channels.
    pub(crate) fn new(config: RedisBrokerBuilder) -> Shared {
        let node_id = uuid::Uuid::new_v4().simple().to_string();
        Shared {
            control: wire::control_channel(&config.prefix),
            node_channel: wire::node_channel(&config.prefix, &node_id),
            mark: format!("@{node_id}"),
            node_id,
            node: OnceLock::new(),
            up: AtomicBool::new(false),
            last_error: Mutex::new(BrokerError::unavailable("lost the connection to Redis")),
            max_queued: config.max_queued,
            wanted: Wanted::default(),
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
        }
    }
}

/// A connection of this node, by `clientId`: which one, and whether its announcement came back
/// on the control channel.
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
    /// Sent in a pipeline with the publishes around it; refused when `max_queued` commands wait
    /// already (see [`enqueue`]), except a node's answer to another node. Its answer
    /// goes to `reply`, if any: the number of nodes that received it (a presence query), or the
    /// confirmation of a send.
    Publish {
        outgoing: Outgoing,
        reply: Option<AnswerTo>,
    },
    /// A command whose answer is awaited, run in order with the others (in the same pipeline as
    /// the publishes around it).
    Ask { cmd: Cmd, reply: AnswerTo },
}

/// Locks `mutex`, whether or not a thread panicked while holding it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RedisBroker {
    /// Connects to Redis as `config` says and starts the connection task: what
    /// [`RedisBrokerBuilder::connect`] does.
    pub(crate) async fn start(config: RedisBrokerBuilder) -> Result<RedisBroker, RedisError> {
        let shared = Arc::new(Shared::new(config));
        let connector = Connect::new(shared.config.target.clone(), shared.routes.clone());
        Self::start_with(shared, connector).await
    }

    /// Connects with `connector` (to Redis; in the tests, to a stub) and starts the connection
    /// task of the broker whose state is `shared`.
    pub(crate) async fn start_with(
        shared: Arc<Shared>,
        connector: impl Connector,
    ) -> Result<RedisBroker, RedisError> {
        let (link, pushes) = connector.open().await?;
        let (commands_tx, commands) = mpsc::channel(shared.max_queued);
        let mut keeper = Keeper::new(shared.clone(), connector, commands, commands_tx.downgrade());
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
        let body = serde_json::to_vec(control).map_err(|error| {
            BrokerError::failed_from(format!("cannot encode a control message ({error})"), error)
        })?;
        self.enqueue(self.shared.control.clone(), body, None)
    }

    fn room_channel(&self, event: &str, room: &str) -> String {
        wire::room_channel(&self.shared.config.prefix, event, room)
    }
}

/// Queues a command for the next pipeline, if the broker is up and its queue has room: the
/// command channel holds at most `max_queued` commands, so a full one refuses it with
/// [`BrokerError::Backlog`] (bounded by construction, nothing counted by hand).
pub(crate) fn enqueue(
    shared: &Shared,
    commands: &mpsc::Sender<Command>,
    outgoing: Outgoing,
    reply: Option<AnswerTo>,
) -> Result<(), BrokerError> {
    if !shared.up.load(Ordering::SeqCst) {
        return Err(unavailable(shared));
    }
    if let (Some(routes), Outgoing::Publish { channel, .. }) = (&shared.routes, &outgoing) {
        routes.check(channel).map_err(BrokerError::unavailable)?;
    }
    let command = Command::Publish { outgoing, reply };
    commands.try_send(command).map_err(|error| match error {
        TrySendError::Full(_) => BrokerError::Backlog {
            limit: shared.max_queued,
        },
        TrySendError::Closed(_) => stopped(),
    })
}

/// Why the broker is unavailable: the last connection error.
pub(crate) fn unavailable(shared: &Shared) -> BrokerError {
    lock(&shared.last_error).clone()
}

/// The error of a command queued after the connection task ended.
pub(crate) fn stopped() -> BrokerError {
    BrokerError::failed("the broker's task has stopped")
}

/// Queues a publish (or a script that records and publishes) like [`enqueue`], and waits until
/// Redis answered it, at most [`ASK_TIMEOUT`]: what a confirmed send awaits.
pub(crate) fn confirmed(
    shared: &Arc<Shared>,
    commands: &mpsc::Sender<Command>,
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
            Ok(Ok(Err(error))) if shards::is_unavailable(&error) => {
                Err(BrokerError::unavailable_from(error.to_string(), error))
            }
            // Written, but the connection was lost before Redis answered.
            Ok(Ok(Err(error))) if crate::link::lost(&error) => {
                Err(BrokerError::unconfirmed_from(error.to_string(), error))
            }
            Ok(Ok(Err(error))) => Err(BrokerError::failed_from(error.to_string(), error)),
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
    commands: &mpsc::Sender<Command>,
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
        Ok(Ok(Err(error))) => return Err(BrokerError::failed_from(error.to_string(), error)),
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

/// Runs `cmd` in order with the broker's other commands and waits for its answer. Queued when
/// the command channel has room: a full channel delays it (within [`ASK_TIMEOUT`]) rather than
/// refusing it.
pub(crate) fn ask(
    shared: &Shared,
    commands: &mpsc::Sender<Command>,
    cmd: Cmd,
) -> BoxFuture<Result<Value, BrokerError>> {
    if !shared.up.load(Ordering::SeqCst) {
        return history::failed(unavailable(shared));
    }
    let (reply, answer) = oneshot::channel();
    let commands = commands.clone();
    let lost = unavailable(shared);
    Box::pin(async move {
        let asked = async {
            // Waits for room (within the same timeout) rather than failing with the backlog:
            // a lookup is no publish, and its caller waits for the answer anyway.
            if commands.send(Command::Ask { cmd, reply }).await.is_err() {
                return Err(stopped());
            }
            Ok(answer.await)
        };
        match tokio::time::timeout(ASK_TIMEOUT, asked).await {
            Ok(Err(stopped)) => Err(stopped),
            Ok(Ok(Ok(Ok(value)))) => Ok(value),
            Ok(Ok(Ok(Err(error)))) => Err(BrokerError::failed_from(error.to_string(), error)),
            Ok(Ok(Err(_))) => Err(lost),
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
        // State, not a queue: also while down, when the task forgets it and subscribes every
        // room the node serves once it is back.
        self.shared.wanted.set(self.room_channel(event, room), true);
    }

    fn room_emptied(&self, event: &str, room: &str) {
        self.shared
            .wanted
            .set(self.room_channel(event, room), false);
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

#[cfg(test)]
impl RedisBroker {
    /// A broker that never connects, marked up, with the receiving end of its command channel:
    /// what the tests of the command channel look at.
    pub(crate) fn unconnected(
        config: RedisBrokerBuilder,
    ) -> (RedisBroker, mpsc::Receiver<Command>) {
        let shared = Arc::new(Shared::new(config));
        shared.up.store(true, Ordering::SeqCst);
        let (commands_tx, commands) = mpsc::channel(shared.max_queued);
        let broker = RedisBroker {
            history: RedisHistory::new(shared.clone(), commands_tx.clone()),
            shared,
            commands: commands_tx,
        };
        (broker, commands)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_command_channel_refuses_a_send_with_the_backlog() {
        let (broker, mut commands) =
            RedisBroker::unconnected(RedisBroker::builder("redis://x").max_queued(2));
        assert!(broker.publish("e", "r", "1").is_ok());
        assert!(broker.publish("e", "r", "2").is_ok());
        assert!(matches!(
            broker.publish("e", "r", "3"),
            Err(BrokerError::Backlog { limit: 2 })
        ));
        // The connection task took one: there is room for one more, not two.
        assert!(commands.try_recv().is_ok());
        assert!(broker.publish("e", "r", "4").is_ok());
        assert!(matches!(
            broker.publish("e", "r", "5"),
            Err(BrokerError::Backlog { limit: 2 })
        ));
    }

    #[test]
    fn a_full_command_channel_refuses_control_messages_too() {
        let (broker, _commands) =
            RedisBroker::unconnected(RedisBroker::builder("redis://x").max_queued(1));
        assert!(broker.disconnect("a").is_ok());
        assert!(matches!(
            broker.send_to_client("a", "e", "p"),
            Err(BrokerError::Backlog { limit: 1 })
        ));
    }

    #[test]
    fn rooms_coming_and_going_take_no_place_in_the_command_channel() {
        let (broker, mut commands) =
            RedisBroker::unconnected(RedisBroker::builder("redis://x").max_queued(1));
        for room in 0..10 {
            broker.room_created("e", &room.to_string());
        }
        broker.room_emptied("e", "3");
        assert!(commands.try_recv().is_err(), "no command was queued");
        assert!(broker.publish("e", "r", "fits").is_ok());
        let (subscribe, unsubscribe) = broker.shared.wanted.take();
        assert_eq!(subscribe.len(), 9);
        assert_eq!(unsubscribe, ["sseio:room:1:e:3"]);
    }

    #[test]
    fn max_queued_is_at_least_one() {
        let (broker, _commands) =
            RedisBroker::unconnected(RedisBroker::builder("redis://x").max_queued(0));
        assert!(broker.publish("e", "r", "1").is_ok());
        assert!(matches!(
            broker.publish("e", "r", "2"),
            Err(BrokerError::Backlog { limit: 1 })
        ));
    }
}
