//! [`MemoryBroker`]: servers of one process linked as one cluster, with one history; it uses
//! only what any third-party broker can use.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use super::{
    BoxFuture, Broker, BrokerError, ConnectionId, HistoryStore, Node, Presence, Recalled, Replay,
    ReplayRoom,
};
use crate::history::{History, LocalHistory};
use crate::notify::CloseReason;
use crate::position::Position;
use crate::sync::lock;

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
/// It keeps one [`HistoryStore`] for all of them, so a client with history resumes on any of
/// them, and takes over a `clientId`'s stream still open on another of them (see
/// [`HistoryStore::resume_point`]).
pub struct MemoryBroker {
    nodes: Arc<Mutex<Vec<(u64, Node)>>>,
    next: Arc<AtomicU64>,
    /// This clone's node, once attached.
    me: Arc<OnceLock<u64>>,
    history: MemoryHistoryView,
}

/// The history of a [`MemoryBroker`]'s nodes, as one node sees it: which node it is decides
/// whose open streams it takes over.
struct MemoryHistoryView {
    shared: Arc<MemoryHistory>,
    me: Arc<OnceLock<u64>>,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl Clone for MemoryBroker {
    /// Another handle on the same set of nodes, for another server.
    fn clone(&self) -> Self {
        let me = Arc::new(OnceLock::new());
        Self {
            nodes: self.nodes.clone(),
            next: self.next.clone(),
            me: me.clone(),
            history: MemoryHistoryView {
                shared: self.history.shared.clone(),
                me,
            },
        }
    }
}

/// The history of a [`MemoryBroker`]'s nodes: one [`LocalHistory`], whose log lock a publish
/// holds while it numbers the message and delivers it to every node, so every node gets
/// positions in order and a replay (under the same lock) never misses a message. The resume
/// records have a lock of their own: a delivery may close a slow connection, which records where
/// it stood. So has the record of which node each `clientId`'s stream is open on, a leaf: no
/// node is called while it is held.
struct MemoryHistory {
    nodes: Weak<Mutex<Vec<(u64, Node)>>>,
    history: LocalHistory,
    /// Publishes since the last sweep of expired messages.
    since_sweep: AtomicU64,
    /// The node each `clientId` with history has a stream open on, until it closes.
    open: Mutex<HashMap<Arc<str>, u64>>,
}

/// How many publishes (or remembered clients) a [`MemoryBroker`] handles between two sweeps of
/// what expired.
const SWEEP_EVERY: u64 = 1024;

impl MemoryHistory {
    /// Sweeps what expired once every [`SWEEP_EVERY`] calls.
    fn sweep_now_and_then(&self) {
        if self.since_sweep.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.history.sweep();
        }
    }
}

impl fmt::Debug for MemoryHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryHistory")
            .field("now", &self.history.log().now())
            .finish_non_exhaustive()
    }
}

impl HistoryStore for MemoryHistoryView {
    fn publish(
        &self,
        event: &str,
        room: &str,
        payload: &str,
        history: History,
    ) -> Result<(), BrokerError> {
        self.shared.publish(event, room, payload, history)
    }

    fn replay(
        &self,
        rooms: Vec<ReplayRoom>,
        from: Option<Position>,
    ) -> BoxFuture<Result<Replay, BrokerError>> {
        self.shared.replay(rooms, from)
    }

    /// Kept unless the `clientId` has opened a stream on another node meanwhile.
    fn remember(&self, client_id: &str, at: Recalled, ttl: Duration) {
        {
            let mut open = lock(&self.shared.open);
            if open
                .get(client_id)
                .is_some_and(|&node| Some(&node) != self.me.get())
            {
                return;
            }
            open.remove(client_id);
        }
        self.shared.remember(client_id, at, ttl);
    }

    fn recall(&self, client_id: &str) -> BoxFuture<Result<Recalled, BrokerError>> {
        self.shared.recall(client_id)
    }

    fn resume_point(&self, client_id: &str) -> BoxFuture<Result<Recalled, BrokerError>> {
        let owner = lock(&self.shared.open).get(client_id).copied();
        let elsewhere = owner.filter(|&node| Some(&node) != self.me.get());
        let recalled = match elsewhere {
            Some(owner) => {
                let nodes = self.shared.nodes.upgrade();
                let node = nodes.and_then(|nodes| {
                    let nodes = lock(&nodes);
                    nodes
                        .iter()
                        .find(|(id, node)| *id == owner && node.is_alive())
                        .map(|(_, node)| node.clone())
                });
                match node.and_then(|node| node.take_over(client_id)) {
                    Some(recalled) => recalled,
                    // Its node is gone, or no longer has it and wrote no record.
                    None => match self.shared.history.recall(client_id) {
                        Recalled::Nothing => Recalled::Lost,
                        recalled => recalled,
                    },
                }
            }
            None => self.shared.history.recall(client_id),
        };
        Box::pin(std::future::ready(Ok(recalled)))
    }

    fn mark_open(&self, client_id: &str) {
        if let Some(&me) = self.me.get() {
            lock(&self.shared.open).insert(client_id.into(), me);
        }
    }

    fn unmark_open(&self, client_id: &str) {
        let mut open = lock(&self.shared.open);
        if open.get(client_id) == self.me.get() {
            open.remove(client_id);
        }
    }
}

impl fmt::Debug for MemoryHistoryView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryHistoryView")
            .field("me", &self.me.get())
            .finish_non_exhaustive()
    }
}

impl MemoryHistory {
    fn publish(
        &self,
        event: &str,
        room: &str,
        payload: &str,
        history: History,
    ) -> Result<(), BrokerError> {
        self.sweep_now_and_then();
        let mut log = self.history.log();
        let at = log.record_payload(&Arc::from(event), room, payload, history);
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
        let log = self.history.log();
        let replay = Replay {
            now: log.now(),
            rooms: match from {
                None => Vec::new(),
                Some(from) => rooms
                    .iter()
                    .map(|r| log.replay_payloads(&r.event, &r.room, from, r.history))
                    .collect(),
            },
        };
        Box::pin(std::future::ready(Ok(replay)))
    }

    fn remember(&self, client_id: &str, at: Recalled, ttl: Duration) {
        self.sweep_now_and_then();
        self.history.remember(client_id.into(), at, ttl);
    }

    fn recall(&self, client_id: &str) -> BoxFuture<Result<Recalled, BrokerError>> {
        let at = self.history.recall(client_id);
        Box::pin(std::future::ready(Ok(at)))
    }
}

impl MemoryBroker {
    /// A broker with no server attached yet.
    pub fn new() -> Self {
        let nodes = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(MemoryHistory {
            nodes: Arc::downgrade(&nodes),
            history: LocalHistory::new(),
            since_sweep: AtomicU64::new(0),
            open: Mutex::default(),
        });
        let me = Arc::new(OnceLock::new());
        Self {
            nodes,
            next: Arc::default(),
            me: me.clone(),
            history: MemoryHistoryView { shared, me },
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

    fn client_connected(&self, client_id: &str, _connection: ConnectionId) {
        let me = self.me.get().copied();
        for (id, node) in self.nodes() {
            if Some(id) != me {
                node.close_client(client_id, CloseReason::Replaced);
            }
        }
    }

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

    fn history_store(&self) -> Option<&dyn HistoryStore> {
        Some(&self.history)
    }
}
