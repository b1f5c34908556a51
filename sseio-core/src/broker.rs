//! The broker seam: where a `send` goes before it reaches connections, so that several servers
//! (nodes) can share rooms.
//!
//! With no broker (the default), a `send` is delivered in this process only, straight to the
//! room's connections. A [`Broker`] carries sends, presence queries and per-client commands
//! between nodes: [`MemoryBroker`] links servers in one process (tests, embedded use), and the
//! `sseio-redis` crate links processes through Redis Pub/Sub.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use crate::history::{Histories, History, Position, Resumes};
use crate::notify::CloseReason;
use crate::server::ServerInner;
use crate::sync::lock;

/// A boxed future, as [`Broker::presence`] returns it.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Identifies one connection on one node, for as long as it is open: a `clientId` can be
/// reused by a later connection, a `ConnectionId` never is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub(crate) u64);

impl ConnectionId {
    /// The id as a number, unique within its node.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The id from a number that [`ConnectionId::get`] returned on the same node.
    pub fn from_u64(id: u64) -> Self {
        Self(id)
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The connections of one room across every node: what
/// [`EventHandler::presence`](crate::EventHandler::presence) answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presence {
    /// The number of open connections in the room.
    pub count: usize,
    /// Their `clientId`s, sorted, each once.
    pub client_ids: Vec<String>,
}

impl Presence {
    /// Presence made of the `clientId`s that several nodes reported: sorted and deduplicated
    /// (a `clientId` is open on one node at a time, but a replacement may be in flight).
    pub fn from_client_ids(mut client_ids: Vec<String>) -> Self {
        client_ids.sort_unstable();
        client_ids.dedup();
        Self {
            count: client_ids.len(),
            client_ids,
        }
    }
}

/// Why a broker could not do what it was asked.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker has lost its connection (to Redis, say) and is reconnecting; nothing was sent.
    /// Open streams stay open meanwhile.
    #[error("the broker is unavailable: {reason}")]
    Unavailable {
        /// What went wrong, as the broker's client reported it.
        reason: String,
    },
    /// More messages are waiting to be published than the broker queues; nothing was sent.
    #[error("the broker's queue is full ({limit} messages waiting)")]
    Backlog {
        /// The number of messages the broker queues.
        limit: usize,
    },
    /// Other nodes did not answer within the broker's timeout.
    #[error("the broker did not get every answer within {timeout:?}")]
    TimedOut {
        /// The timeout.
        timeout: std::time::Duration,
    },
    /// This broker serves one server, and was already attached to another.
    #[error("this broker is already attached to a server")]
    AlreadyAttached,
    /// The broker's backend reported a failure that does not fit the cases above.
    #[error("the broker failed: {0}")]
    Failed(String),
}

/// Carries sends, room subscriptions, presence queries and per-client commands between nodes.
///
/// A server calls the broker; the broker reaches every node's connections through the [`Node`]
/// handle each server gives it in [`Broker::attach`]. Calls from the server must not wait:
/// `room_created`, `room_emptied` and `client_closed` are made while the server
/// holds its locks, so an implementation queues work for its own tasks and returns, and never
/// calls back into this node from them.
///
/// What every implementation guarantees, and `sseio-redis` documents for its backend: a message
/// published while the broker is up reaches each node that serves its room at most once, and
/// the messages of one room arrive in the order they were published.
pub trait Broker: Send + Sync + fmt::Debug + 'static {
    /// Connects this broker to a server, once, when the server is built.
    ///
    /// # Errors
    ///
    /// [`BrokerError::AlreadyAttached`] when the broker serves one server and has one.
    fn attach(&self, node: Node) -> Result<(), BrokerError>;

    /// Sends `payload` (already validated and serialized) to `room` of `event` on every node,
    /// this one included, each node encoding the frame once for its own connections.
    ///
    /// # Errors
    ///
    /// When the message cannot be handed on now; nothing was sent then.
    fn publish(&self, event: &str, room: &str, payload: &str) -> Result<(), BrokerError>;

    /// This node's room `room` of `event` got its first connection: from now on its messages
    /// must reach this node.
    fn room_created(&self, event: &str, room: &str);

    /// This node's room `room` of `event` lost its last connection: its messages need not reach
    /// this node any more.
    fn room_emptied(&self, event: &str, room: &str);

    /// A connection with `client_id` opened on this node. Any connection with the same
    /// `clientId` on another node is closed as replaced ([`Node::close`] there), so that one
    /// stream per `clientId` survives across the cluster.
    fn client_connected(&self, client_id: &str, connection: ConnectionId);

    /// Connection `connection` with `client_id` closed on this node.
    fn client_closed(&self, client_id: &str, connection: ConnectionId);

    /// The connections of `room` of `event` on every node.
    fn presence(&self, event: &str, room: &str) -> BoxFuture<Result<Presence, BrokerError>>;

    /// Sends `payload` as an `event` message to the connection with `client_id`, on whichever
    /// node it is open, if it listens to `event`.
    ///
    /// # Errors
    ///
    /// When the command cannot be handed on now.
    fn send_to_client(
        &self,
        client_id: &str,
        event: &str,
        payload: &str,
    ) -> Result<(), BrokerError>;

    /// Closes the connection with `client_id`, on whichever node it is open.
    ///
    /// # Errors
    ///
    /// When the command cannot be handed on now.
    fn disconnect(&self, client_id: &str) -> Result<(), BrokerError>;

    /// The history this broker keeps for the whole cluster, if it keeps one. With it, handlers
    /// with [history](crate::History) number and record their messages through the broker, so a
    /// client resumes on any node. Without it (the default), each node numbers the messages it
    /// delivers itself, and a client resumes only on the node it left.
    fn history(&self) -> Option<&dyn SharedHistory> {
        None
    }
}

/// Message history kept once for a whole cluster, by its [`Broker`]: one sequence of positions
/// for every room of every node, so that a position a client got from one node means the same
/// on any other.
///
/// Like the rest of the broker, calls that return no future must not wait.
pub trait SharedHistory: Send + Sync + fmt::Debug {
    /// Gives `payload` the cluster's next position, records it in the history of `room` of
    /// `event` (its last [`History::capacity`] messages, each for [`History::max_age`]), and
    /// sends it to every node, where it arrives through [`Node::deliver_numbered`]. Positions
    /// must arrive at each node in increasing order.
    ///
    /// # Errors
    ///
    /// When the message cannot be handed on now; nothing was recorded or sent then.
    fn publish(
        &self,
        event: &str,
        room: &str,
        payload: &str,
        history: History,
    ) -> Result<(), BrokerError>;

    /// Where the sequence stands now and, when `from` is given, the messages each of `rooms`
    /// has after `from`, oldest first: `None` for a room whose history no longer has all of
    /// them (trimmed, expired, or `from` is of another epoch), so that nothing is replayed
    /// rather than part.
    ///
    /// The server asks once the rooms were created on this node ([`Broker::room_created`]
    /// called), and holds the rooms' live messages meanwhile: an implementation must answer
    /// after this node receives every later message of those rooms, so that each message is in
    /// the answer or arrives live (or both: the server drops what it replayed already).
    fn replay(
        &self,
        rooms: Vec<ReplayRoom>,
        from: Option<Position>,
    ) -> BoxFuture<Result<Replay, BrokerError>>;

    /// Remembers where `client_id` stood when its stream closed, for `ttl`, so that its
    /// reconnect resumes there on any node.
    fn remember(&self, client_id: &str, at: Position, ttl: Duration);

    /// Takes what [`SharedHistory::remember`] stored for `client_id`, if it has not expired.
    fn recall(&self, client_id: &str) -> BoxFuture<Result<Option<Position>, BrokerError>>;
}

/// One room a connection joins, as [`SharedHistory::replay`] is asked about it.
#[derive(Debug, Clone)]
pub struct ReplayRoom {
    /// The event of the room's handler.
    pub event: Arc<str>,
    /// The room id.
    pub room: Arc<str>,
    /// The handler's history settings.
    pub history: History,
}

/// What [`SharedHistory::replay`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// The position of the last message recorded in the cluster.
    pub now: Position,
    /// For each room asked about, in order: the messages after the position asked for, as
    /// `(offset, payload)`, oldest first; `None` when the gap cannot be filled. Empty when no
    /// position was asked for.
    pub rooms: Vec<Option<Vec<(u64, String)>>>,
}

/// A broker's handle on one server: how messages and commands that arrive from other nodes
/// reach this node's connections. Cheap to clone; it does not keep the server alive (every
/// method does nothing once the server is dropped).
#[derive(Clone)]
pub struct Node {
    server: Weak<ServerInner>,
}

impl Node {
    pub(crate) fn new(server: Weak<ServerInner>) -> Self {
        Self { server }
    }

    /// Delivers `payload` to this node's connections in `room` of `event`: the frame is encoded
    /// once and queued on each. Returns how many connections it was queued on.
    pub fn deliver(&self, event: &str, room: &str, payload: &str) -> usize {
        self.server
            .upgrade()
            .and_then(|server| server.handler(event))
            .map_or(0, |handler| handler.deliver_local(room, payload))
    }

    /// Delivers `payload`, numbered `at` by the cluster's [`SharedHistory`], to this node's
    /// connections in `room` of `event`: the frame carries `id: <at>`. Returns how many
    /// connections it was queued on.
    pub fn deliver_numbered(&self, event: &str, room: &str, at: Position, payload: &str) -> usize {
        self.server
            .upgrade()
            .and_then(|server| server.handler(event))
            .map_or(0, |handler| handler.deliver_numbered(room, at, payload))
    }

    /// Delivers `payload` as an `event` message to this node's connection with `client_id`, if
    /// it is open here and listens to `event`. Returns whether it was.
    pub fn deliver_to_client(&self, client_id: &str, event: &str, payload: &str) -> bool {
        self.server
            .upgrade()
            .is_some_and(|server| server.deliver_to_client(client_id, event, payload))
    }

    /// The `clientId`s of this node's connections in `room` of `event`.
    pub fn local_presence(&self, event: &str, room: &str) -> Vec<String> {
        self.server
            .upgrade()
            .and_then(|server| server.handler(event))
            .map_or_else(Vec::new, |handler| handler.client_ids(room))
    }

    /// Closes this node's connection with `client_id`, if any (`conn:close` with
    /// [`CloseReason::Disconnected`]). Returns whether there was one.
    pub fn disconnect(&self, client_id: &str) -> bool {
        self.server
            .upgrade()
            .is_some_and(|server| server.close_client(client_id, CloseReason::Disconnected))
    }

    /// Closes connection `connection` of this node, if it is still open.
    pub fn close(&self, connection: ConnectionId, reason: CloseReason) {
        if let Some(server) = self.server.upgrade() {
            server.close_connection(connection.0, reason);
        }
    }

    /// Every room of this node that has a connection, as `(event, room)`: what a broker
    /// subscribes again after it reconnected.
    pub fn rooms(&self) -> Vec<(Arc<str>, Arc<str>)> {
        self.server
            .upgrade()
            .map_or_else(Vec::new, |server| server.rooms())
    }

    /// Raises an `error` notification on this node for something that went wrong in the
    /// broker, such as a lost connection.
    pub fn report(&self, error: BrokerError) {
        if let Some(server) = self.server.upgrade() {
            server.notify_error(crate::ConnectionError::Broker(error));
        }
    }

    /// Whether the server behind this handle still exists.
    pub fn is_alive(&self) -> bool {
        self.server.strong_count() > 0
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("alive", &self.is_alive())
            .finish()
    }
}

/// A broker that links servers in one process: a `send` on any of them reaches the room's
/// connections on all of them, a `clientId` is open on one of them at a time, and presence
/// counts all of them. Useful to test multi-node behaviour without Redis, and to run several
/// servers (say, on several ports) in one process.
///
/// Give each server its own clone with [`ServerBuilder::broker`](crate::ServerBuilder::broker)
/// (a clone serves one server). Delivery is immediate and cannot fail. When the same `clientId`
/// connects to two of the servers at the same instant, both streams may be closed as replaced;
/// the client's next reconnect settles it.
///
/// It keeps one [`SharedHistory`] for all of them, so a client with history resumes on any of
/// them.
pub struct MemoryBroker {
    nodes: Arc<Mutex<Vec<(u64, Node)>>>,
    next: Arc<AtomicU64>,
    /// This clone's node, once attached.
    me: OnceLock<u64>,
    history: Arc<MemoryHistory>,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl Clone for MemoryBroker {
    /// Another handle on the same set of nodes, for another server.
    fn clone(&self) -> Self {
        Self {
            nodes: self.nodes.clone(),
            next: self.next.clone(),
            me: OnceLock::new(),
            history: self.history.clone(),
        }
    }
}

/// The history of a [`MemoryBroker`]'s nodes: one [`Histories`], whose lock a publish holds
/// while it numbers the message and delivers it to every node, so every node gets positions in
/// order and a replay (under the same lock) never misses a message. The resume records have a
/// lock of their own: a delivery may close a slow connection, which records where it stood.
struct MemoryHistory {
    nodes: Weak<Mutex<Vec<(u64, Node)>>>,
    histories: Mutex<Histories>,
    resumes: Mutex<Resumes>,
    /// The history settings of each event published so far, for the sweep.
    settings: Mutex<std::collections::HashMap<String, History>>,
}

impl Default for MemoryHistory {
    fn default() -> Self {
        Self {
            nodes: Weak::new(),
            histories: Mutex::new(Histories::new()),
            resumes: Mutex::default(),
            settings: Mutex::default(),
        }
    }
}

impl fmt::Debug for MemoryHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryHistory")
            .field("now", &lock(&self.histories).now())
            .finish_non_exhaustive()
    }
}

impl SharedHistory for MemoryHistory {
    fn publish(
        &self,
        event: &str,
        room: &str,
        payload: &str,
        history: History,
    ) -> Result<(), BrokerError> {
        let known = {
            let mut settings = lock(&self.settings);
            let known = settings.get(event) == Some(&history);
            if !known {
                settings.insert(event.to_owned(), history);
            }
            known
        };
        let mut histories = lock(&self.histories);
        if !known || histories.now().offset.is_multiple_of(1024) {
            let settings = lock(&self.settings);
            histories.sweep(|event| settings.get(event).map(|h| h.ttl));
            lock(&self.resumes).sweep();
        }
        let at = histories.record_payload(&Arc::from(event), room, payload, history);
        let nodes = self.nodes.upgrade().map(|nodes| lock(&nodes).clone());
        for (_, node) in nodes.unwrap_or_default() {
            node.deliver_numbered(event, room, at, payload);
        }
        Ok(())
    }

    fn replay(
        &self,
        rooms: Vec<ReplayRoom>,
        from: Option<Position>,
    ) -> BoxFuture<Result<Replay, BrokerError>> {
        let histories = lock(&self.histories);
        let replay = Replay {
            now: histories.now(),
            rooms: match from {
                None => Vec::new(),
                Some(from) => rooms
                    .iter()
                    .map(|r| histories.replay_payloads(&r.event, &r.room, from, r.history))
                    .collect(),
            },
        };
        Box::pin(std::future::ready(Ok(replay)))
    }

    fn remember(&self, client_id: &str, at: Position, ttl: Duration) {
        lock(&self.resumes).insert(client_id.into(), at, ttl);
    }

    fn recall(&self, client_id: &str) -> BoxFuture<Result<Option<Position>, BrokerError>> {
        let at = lock(&self.resumes).take(client_id);
        Box::pin(std::future::ready(Ok(at)))
    }
}

impl MemoryBroker {
    /// A broker with no server attached yet.
    pub fn new() -> Self {
        let nodes = Arc::new(Mutex::new(Vec::new()));
        let history = Arc::new(MemoryHistory {
            nodes: Arc::downgrade(&nodes),
            ..MemoryHistory::default()
        });
        Self {
            nodes,
            next: Arc::default(),
            me: OnceLock::new(),
            history,
        }
    }

    /// The live nodes, pruning dropped servers.
    fn nodes(&self) -> Vec<(u64, Node)> {
        let mut nodes = lock(&self.nodes);
        nodes.retain(|(_, node)| node.is_alive());
        nodes.clone()
    }
}

impl fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("nodes", &lock(&self.nodes).len())
            .finish()
    }
}

impl Broker for MemoryBroker {
    fn attach(&self, node: Node) -> Result<(), BrokerError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if self.me.set(id).is_err() {
            return Err(BrokerError::AlreadyAttached);
        }
        lock(&self.nodes).push((id, node));
        Ok(())
    }

    fn publish(&self, event: &str, room: &str, payload: &str) -> Result<(), BrokerError> {
        for (_, node) in self.nodes() {
            node.deliver(event, room, payload);
        }
        Ok(())
    }

    fn room_created(&self, _event: &str, _room: &str) {}

    fn room_emptied(&self, _event: &str, _room: &str) {}

    fn client_connected(&self, client_id: &str, _connection: ConnectionId) {
        let me = self.me.get().copied();
        for (id, node) in self.nodes() {
            if Some(id) != me
                && let Some(server) = node.server.upgrade()
            {
                server.close_client(client_id, CloseReason::Replaced);
            }
        }
    }

    fn client_closed(&self, _client_id: &str, _connection: ConnectionId) {}

    fn presence(&self, event: &str, room: &str) -> BoxFuture<Result<Presence, BrokerError>> {
        let client_ids = self
            .nodes()
            .iter()
            .flat_map(|(_, node)| node.local_presence(event, room))
            .collect();
        Box::pin(std::future::ready(Ok(Presence::from_client_ids(
            client_ids,
        ))))
    }

    fn send_to_client(
        &self,
        client_id: &str,
        event: &str,
        payload: &str,
    ) -> Result<(), BrokerError> {
        for (_, node) in self.nodes() {
            node.deliver_to_client(client_id, event, payload);
        }
        Ok(())
    }

    fn disconnect(&self, client_id: &str) -> Result<(), BrokerError> {
        for (_, node) in self.nodes() {
            node.disconnect(client_id);
        }
        Ok(())
    }

    fn history(&self) -> Option<&dyn SharedHistory> {
        Some(&*self.history)
    }
}
