//! The broker seam: where a `send` goes before it reaches connections, so that several servers
//! (nodes) can share rooms.
//!
//! With no broker (the default), a `send` is delivered in this process only, straight to the
//! room's connections. A [`Broker`] carries sends, presence queries and per-client commands
//! between nodes: [`MemoryBroker`] links servers in one process (tests, embedded use), and the
//! `sseio-redis` crate links processes through Redis Pub/Sub.
//!
//! The seam runs one way: a broker reaches its node through [`Node`], a narrow handle on
//! [`LocalNode`], which the server implements; nothing here knows the server.

mod error;
mod memory;

pub use error::{BrokerCause, BrokerError};
pub use memory::MemoryBroker;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::history::History;
use crate::notify::CloseReason;
use crate::position::Position;

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

/// Carries sends, room subscriptions, presence queries and per-client commands between nodes.
///
/// A server calls the broker; the broker reaches every node's connections through the [`Node`]
/// handle each server gives it in [`Broker::attach`]. Calls from the server must not wait:
/// `room_created`, `room_emptied` and `client_closed` are made while the server
/// holds its locks, so an implementation queues work for its own tasks and returns, and never
/// calls back into this node from them.
///
/// A minimal broker implements [`attach`](Broker::attach) and [`publish`](Broker::publish):
/// the hooks that tell it about rooms and clients do nothing by default, and presence,
/// per-client sends and disconnects answer [`BrokerError::Unsupported`].
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

    /// Sends `payload` like [`Broker::publish`], and completes once the broker's backend has
    /// taken it for good (with `sseio-redis`, once Redis answered the `PUBLISH`): what
    /// [`EventHandler::send_confirmed`](crate::EventHandler::send_confirmed) waits for. The
    /// message is handed on when this is called, not when the future is first polled, so
    /// sends keep the order of the calls. The future must complete in a bounded time.
    ///
    /// Default: [`Broker::publish`], confirmed as soon as it returns, which is right for a
    /// broker that delivers before `publish` returns (such as [`MemoryBroker`]); a broker that
    /// only queues the message there should override it.
    ///
    /// # Errors
    ///
    /// As [`Broker::publish`] when the message cannot be handed on (nothing was sent);
    /// [`BrokerError::Failed`] when the backend refused it; [`BrokerError::Unconfirmed`] or
    /// [`BrokerError::TimedOut`] when it was handed on but no answer came.
    fn publish_confirmed(
        &self,
        event: &str,
        room: &str,
        payload: &str,
    ) -> BoxFuture<Result<(), BrokerError>> {
        Box::pin(std::future::ready(self.publish(event, room, payload)))
    }

    /// This node's room `room` of `event` got its first connection: from now on its messages
    /// must reach this node. Default: nothing (every message reaches every node).
    fn room_created(&self, event: &str, room: &str) {
        let _ = (event, room);
    }

    /// This node's room `room` of `event` lost its last connection: its messages need not reach
    /// this node any more. Default: nothing.
    fn room_emptied(&self, event: &str, room: &str) {
        let _ = (event, room);
    }

    /// A connection with `client_id` opened on this node. Any connection with the same
    /// `clientId` on another node is closed as replaced ([`Node::close_client`] there), so that
    /// one stream per `clientId` survives across the cluster. Default: nothing (a `clientId` may
    /// then be open on several nodes at once).
    fn client_connected(&self, client_id: &str, connection: ConnectionId) {
        let _ = (client_id, connection);
    }

    /// Connection `connection` with `client_id` closed on this node. Default: nothing.
    fn client_closed(&self, client_id: &str, connection: ConnectionId) {
        let _ = (client_id, connection);
    }

    /// The connections of `room` of `event` on every node. Default: [`BrokerError::Unsupported`].
    fn presence(&self, event: &str, room: &str) -> BoxFuture<Result<Presence, BrokerError>> {
        let _ = (event, room);
        Box::pin(std::future::ready(Err(BrokerError::Unsupported {
            operation: "presence",
        })))
    }

    /// Sends `payload` as an `event` message to the connection with `client_id`, on whichever
    /// node it is open, if it listens to `event`.
    ///
    /// # Errors
    ///
    /// When the command cannot be handed on now; by default, [`BrokerError::Unsupported`].
    fn send_to_client(
        &self,
        client_id: &str,
        event: &str,
        payload: &str,
    ) -> Result<(), BrokerError> {
        let _ = (client_id, event, payload);
        Err(BrokerError::Unsupported {
            operation: "send_to_client",
        })
    }

    /// Closes the connection with `client_id`, on whichever node it is open.
    ///
    /// # Errors
    ///
    /// When the command cannot be handed on now; by default, [`BrokerError::Unsupported`].
    fn disconnect(&self, client_id: &str) -> Result<(), BrokerError> {
        let _ = client_id;
        Err(BrokerError::Unsupported {
            operation: "disconnect",
        })
    }

    /// Completes once everything the broker was handed so far has reached its backend (with
    /// `sseio-redis`, was written to Redis and answered), or could not: what
    /// [`Server::shutdown`](crate::Server::shutdown) waits for after it closed every stream, so
    /// that the streams' resume records are not lost with the process. Must complete in a
    /// bounded time. Default: at once (a broker that hands everything on before its calls
    /// return).
    fn flush(&self) -> BoxFuture<()> {
        Box::pin(std::future::ready(()))
    }

    /// Whether the broker can carry sends now (its backend is reachable): what a node's
    /// [`Server::is_ready`](crate::Server::is_ready) reports to an orchestrator. Default: always.
    fn is_available(&self) -> bool {
        true
    }

    /// The history store this broker keeps for the whole cluster, if it keeps one. With it,
    /// handlers with [history](crate::History) number and record their messages through the
    /// broker, so a client resumes on any node. Without it (the default), each node numbers the
    /// messages it delivers itself, and a client resumes only on the node it left.
    fn history_store(&self) -> Option<&dyn HistoryStore> {
        None
    }
}

/// Message history kept once for a whole cluster, by its [`Broker`]: one sequence of positions
/// for every room of every node, so that a position a client got from one node means the same
/// on any other.
///
/// Like the rest of the broker, calls that return no future must not wait.
pub trait HistoryStore: Send + Sync + fmt::Debug {
    /// Gives `payload` the cluster's next position, records it in the history of `room` of
    /// `event` (its last [`History::capacity`] messages, each for [`History::ttl`]), and
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

    /// Numbers, records and sends `payload` like [`HistoryStore::publish`], and completes once
    /// the store has recorded and published it (with `sseio-redis`, once Redis answered the
    /// script that does both), so that a client resuming from an earlier position gets it:
    /// what [`EventHandler::send_confirmed`](crate::EventHandler::send_confirmed) waits for
    /// with history on. As for [`Broker::publish_confirmed`], the message is handed on when
    /// this is called, and the future completes in a bounded time.
    ///
    /// Default: [`HistoryStore::publish`], confirmed as soon as it returns, which is right for
    /// a store that records before `publish` returns (such as [`MemoryBroker`]'s).
    ///
    /// # Errors
    ///
    /// As [`Broker::publish_confirmed`].
    fn publish_confirmed(
        &self,
        event: &str,
        room: &str,
        payload: &str,
        history: History,
    ) -> BoxFuture<Result<(), BrokerError>> {
        Box::pin(std::future::ready(
            self.publish(event, room, payload, history),
        ))
    }

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

    /// Remembers where `client_id` left when its stream closed, for `ttl`, so that its
    /// reconnect resumes there on any node: [`Recalled::At`] a position, or
    /// [`Recalled::Dropped`] one when its connection dropped after it was given messages. The
    /// server never passes [`Recalled::Nothing`] (it calls
    /// [`unmark_open`](HistoryStore::unmark_open) instead); a store may take it as forgetting
    /// the record.
    fn remember(&self, client_id: &str, at: Recalled, ttl: Duration);

    /// Takes what [`HistoryStore::remember`] stored for `client_id`, if it has not expired;
    /// [`Recalled::Nothing`] when there is none.
    fn recall(&self, client_id: &str) -> BoxFuture<Result<Recalled, BrokerError>>;

    /// Where `client_id` resumes from when it reconnects without `Last-Event-ID` (as the
    /// official client does), on whichever node it was. The server asks before the new
    /// stream joins its rooms.
    ///
    /// A store that tracks open streams ([`HistoryStore::mark_open`]) does more than
    /// [`recall`](HistoryStore::recall): when the `clientId`'s stream is still open on another
    /// node (that node has not noticed the client left), it closes it there
    /// ([`Node::take_over`]) and answers where it stood, so that what that node queued and
    /// never wrote is not lost; when it was open on a node that is gone (killed, or cut off
    /// from the cluster) without recording where it stood, it answers [`Recalled::Lost`], so
    /// that the client is told of the gap instead of starting afresh.
    ///
    /// Default: what [`recall`](HistoryStore::recall) answers. The answer must come in a
    /// bounded time.
    fn resume_point(&self, client_id: &str) -> BoxFuture<Result<Recalled, BrokerError>> {
        self.recall(client_id)
    }

    /// A stream of `client_id`, in rooms with history, opened on this node: a store records
    /// it, so that [`resume_point`](HistoryStore::resume_point) can tell a reconnect whose
    /// stream is still open elsewhere, or whose node died with it, from a first connect. Its
    /// close overwrites the record ([`remember`](HistoryStore::remember), or
    /// [`unmark_open`](HistoryStore::unmark_open) when it stood nowhere). Must not wait.
    /// Default: nothing.
    fn mark_open(&self, client_id: &str) {
        let _ = client_id;
    }

    /// The stream of `client_id` that [`mark_open`](HistoryStore::mark_open) recorded closed
    /// on this node without a position to remember (it was given no message): the record goes,
    /// and its reconnect is a first connect. Must not wait. Default: nothing.
    fn unmark_open(&self, client_id: &str) {
        let _ = client_id;
    }
}

/// Where a reconnecting `clientId` resumes from: what
/// [`HistoryStore::resume_point`] answers, and what [`Node::take_over`] hands over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recalled {
    /// Right after this position: the messages since are replayed.
    At(Position),
    /// Its connection dropped (the server did not end it) after it was given messages up to
    /// this position, and some of them may have been lost in flight with the connection (in
    /// the network, or a proxy's buffers), which a client that resumes by `clientId` cannot
    /// tell: it resumes after this position, told first of a possible gap (the
    /// [gap notice](crate::ServerBuilder::gap_notice)), on which it can fetch what it needs.
    Dropped(Position),
    /// Its stream was open on a node that is gone, which never recorded where it stood: what
    /// it missed cannot be told, so it resyncs (its `fetch` runs as a resync, and it gets the
    /// [gap notice](crate::ServerBuilder::gap_notice)).
    Lost,
    /// Nothing is known: a first connect (or its record expired). It starts afresh.
    Nothing,
}

/// One room a connection joins, as [`HistoryStore::replay`] is asked about it.
#[derive(Debug, Clone)]
pub struct ReplayRoom {
    /// The event of the room's handler.
    pub event: Arc<str>,
    /// The room id.
    pub room: Arc<str>,
    /// The handler's history settings.
    pub history: History,
}

/// What [`HistoryStore::replay`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// The position of the last message recorded in the cluster.
    pub now: Position,
    /// For each room asked about, in order: the messages after the position asked for, as
    /// `(offset, payload)`, oldest first; `None` when the gap cannot be filled. Empty when no
    /// position was asked for.
    pub rooms: Vec<Option<Vec<(u64, String)>>>,
}

/// What a [`Node`] reaches: the local side of one server, as a broker sees it. The server
/// implements it; [`Node`] holds it weakly, so a broker never keeps its server alive.
pub(crate) trait LocalNode: Send + Sync {
    /// Queues `payload` (numbered `at`, with a broker's history) on the connections of `room`
    /// of `event`; how many took it.
    fn deliver(&self, event: &str, room: &str, at: Option<Position>, payload: &str) -> usize;
    /// Queues `payload` as an `event` message on the connection with `client_id`, if it is
    /// open here and listens to `event`.
    fn deliver_to_client(&self, client_id: &str, event: &str, payload: &str) -> bool;
    /// The `clientId`s of the connections in `room` of `event`.
    fn local_presence(&self, event: &str, room: &str) -> Vec<String>;
    /// Closes one connection, if it is still open.
    fn close(&self, connection: ConnectionId, reason: CloseReason);
    /// Closes the connection with `client_id`, if any; whether there was one.
    fn close_client(&self, client_id: &str, reason: CloseReason) -> bool;
    /// Closes the connection with `client_id` as replaced, if any, and says where it stood.
    fn take_over(&self, client_id: &str) -> Option<Recalled>;
    /// Closes every connection in `room` of `event`; how many.
    fn close_room(&self, event: &str, room: &str, reason: CloseReason) -> usize;
    /// Every `(event, room)` with a connection.
    fn rooms(&self) -> Vec<(Arc<str>, Arc<str>)>;
    /// Raises a broker error as a notification.
    fn report(&self, error: BrokerError);
}

/// A broker's handle on one server: how messages and commands that arrive from other nodes
/// reach this node's connections. Cheap to clone; it does not keep the server alive (every
/// method does nothing once the server is dropped).
#[derive(Clone)]
pub struct Node {
    local: Weak<dyn LocalNode>,
}

impl Node {
    pub(crate) fn new(local: Weak<dyn LocalNode>) -> Self {
        Self { local }
    }

    /// Delivers `payload` to this node's connections in `room` of `event`: the frame is encoded
    /// once and queued on each. Returns how many connections queued it (a connection that is
    /// closing, or whose buffer is full, is not counted).
    pub fn deliver(&self, event: &str, room: &str, payload: &str) -> usize {
        self.local
            .upgrade()
            .map_or(0, |local| local.deliver(event, room, None, payload))
    }

    /// Delivers `payload`, numbered `at` by the cluster's [`HistoryStore`], to this node's
    /// connections in `room` of `event`: the frame carries `id: <at>`. Returns how many
    /// connections queued it.
    pub fn deliver_numbered(&self, event: &str, room: &str, at: Position, payload: &str) -> usize {
        self.local
            .upgrade()
            .map_or(0, |local| local.deliver(event, room, Some(at), payload))
    }

    /// Delivers `payload` as an `event` message to this node's connection with `client_id`, if
    /// it is open here and listens to `event`. Returns whether it was queued.
    pub fn deliver_to_client(&self, client_id: &str, event: &str, payload: &str) -> bool {
        self.local
            .upgrade()
            .is_some_and(|local| local.deliver_to_client(client_id, event, payload))
    }

    /// The `clientId`s of this node's connections in `room` of `event`.
    pub fn local_presence(&self, event: &str, room: &str) -> Vec<String> {
        self.local
            .upgrade()
            .map_or_else(Vec::new, |local| local.local_presence(event, room))
    }

    /// Closes this node's connection with `client_id`, if any (`conn:close` with
    /// [`CloseReason::Disconnected`]): what [`Broker::disconnect`] does on each node. Returns
    /// whether there was one.
    pub fn disconnect(&self, client_id: &str) -> bool {
        self.close_client(client_id, CloseReason::Disconnected)
    }

    /// Closes this node's connection with `client_id`, if any, for `reason`
    /// ([`CloseReason::Replaced`] when the `clientId` connected to another node). Returns
    /// whether there was one.
    pub fn close_client(&self, client_id: &str, reason: CloseReason) -> bool {
        self.local
            .upgrade()
            .is_some_and(|local| local.close_client(client_id, reason))
    }

    /// Closes this node's connection with `client_id`, if any, as
    /// [replaced](CloseReason::Replaced) by a stream of the same `clientId` that is opening
    /// on another node, and answers where it stood, for that stream to resume from (what it
    /// was queued and never wrote counts as not given): `None` when there was no such
    /// connection here; [`Recalled::Nothing`] when it was given no message. Unlike
    /// [`Node::close_client`], no resume record is written: the position goes to the taker.
    /// What a [`HistoryStore::resume_point`] asks the node a client left.
    pub fn take_over(&self, client_id: &str) -> Option<Recalled> {
        self.local.upgrade()?.take_over(client_id)
    }

    /// Closes every connection of this node in `room` of `event`, for `reason`, and returns how
    /// many. What a broker does when it knows the room's connections missed messages it cannot
    /// deliver now (its history no longer has them after it lost its backend): each client
    /// reconnects and resumes from where it stood, or is told of the gap. Each connection
    /// records where it stood, as at any close.
    pub fn close_room(&self, event: &str, room: &str, reason: CloseReason) -> usize {
        self.local
            .upgrade()
            .map_or(0, |local| local.close_room(event, room, reason))
    }

    /// Closes connection `connection` of this node, if it is still open.
    pub fn close(&self, connection: ConnectionId, reason: CloseReason) {
        if let Some(local) = self.local.upgrade() {
            local.close(connection, reason);
        }
    }

    /// Every room of this node that has a connection, as `(event, room)`: what a broker
    /// subscribes again after it reconnected.
    pub fn rooms(&self) -> Vec<(Arc<str>, Arc<str>)> {
        self.local
            .upgrade()
            .map_or_else(Vec::new, |local| local.rooms())
    }

    /// Raises a [`Notification::Broker`](crate::Notification::Broker) on this node for
    /// something that went wrong in the broker, such as a lost connection.
    pub fn report(&self, error: BrokerError) {
        if let Some(local) = self.local.upgrade() {
            local.report(error);
        }
    }

    /// Whether the server behind this handle still exists.
    pub fn is_alive(&self) -> bool {
        self.local.strong_count() > 0
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("alive", &self.is_alive())
            .finish()
    }
}
