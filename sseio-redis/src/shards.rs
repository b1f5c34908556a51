//! Sharded Pub/Sub on a Redis Cluster, one shard at a time: a connection pair per master, and a
//! shard's failure costs only the rooms whose channels hash to it.
//!
//! The node keeps the cluster's slot map (`CLUSTER SLOTS`) and, per master, one connection that
//! publishes (`SPUBLISH`, pipelined per master) and one that holds the node's subscriptions
//! (`SSUBSCRIBE`, RESP3 pushes). Which channels the node wants is state: on any change of the
//! map, or when a master comes back, each master is given the wanted channels of the slots it
//! owns now.
//!
//! - A master lost (its connection closes, or a `PING` goes unanswered) is marked down at once:
//!   sends to its rooms fail fast with `Unavailable`, every other master goes on. While one is
//!   down, the slot map is asked again every [`POLL`]; once another node owns its slots (its
//!   replica was promoted), the node connects there, subscribes those rooms, and publishes to
//!   each again once every other node serving it has followed too, so that a send accepted from
//!   then on reaches all of them. Redis tells a publisher how many subscribers a message
//!   reached; the node remembers that count per channel, and after a failover accepts a
//!   channel's sends once the new master counts as many subscribers of it again
//!   (`PUBSUB SHARDNUMSUB`): after [`GRACE`] at least (for the channels it never published to),
//!   [`FOLLOW_LIMIT`] at most (a node that left a room meanwhile never comes back to it).
//! - A slot moved (resharding): Redis drops the subscriptions of its channels on the old master
//!   (a `sunsubscribe` push the node did not ask for) and answers `MOVED` to a publish there.
//!   Either makes the node read the slot map again and subscribe those channels on the new
//!   owner; a publish that got `MOVED` is sent again there, in order, once the new owner counts
//!   as many subscribers of its channel as its last publish reached (the other nodes have
//!   resubscribed there, so that it is not published before they listen), at most after
//!   [`MOVED_LIMIT`]; after [`MOVED_GRACE`] for a channel whose count the node does not know.
//!
//! Why not the `redis` crate's cluster client: it forwards each node connection's disconnection
//! as one push, which the broker took for the loss of its whole connection (every room's sends
//! refused for the whole failover, and everything resubscribed through the failed shard); its
//! subscriptions follow a failover only when a request happens to refresh its slot map; and a
//! subscription Redis drops when its slot moves is dropped from its tracking too, so the room
//! went deaf silently.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind,
    IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, RedisError, RedisResult,
    ServerErrorKind, Value,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::link::{CONNECT_TIMEOUT, Outgoing, RESPONSE_TIMEOUT};

/// How often, while a master is down or a subscription was dropped, the slot map is asked
/// again.
pub(crate) const POLL: Duration = Duration::from_millis(100);
/// How often every master is checked with a `PING`, and the slot map asked, when all is well.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a master may take to answer that `PING` before it counts as lost.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a master may take to answer a pipeline of publishes or subscriptions before it
/// counts as lost: what a master that stops answering without closing its connections (a host
/// down, a network cut) costs the node's sends to the other masters, once.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a master that came up after the node started (a promoted replica) stays refused for
/// sends after the node subscribed its rooms there, at least: the other nodes poll the slot map
/// as often and subscribe there too meanwhile, so that a send accepted afterwards reaches all of
/// them. A channel with fewer subscribers there than its last publish reached waits longer.
pub(crate) const GRACE: Duration = Duration::from_millis(500);
/// How long a channel of such a master stays refused for sends at most, waiting for the other
/// nodes' subscriptions there.
const FOLLOW_LIMIT: Duration = Duration::from_secs(3);
/// How many channels' subscriber counts the node remembers at most; past that, only those of
/// its own rooms.
const LISTENERS_KEPT: usize = 1 << 16;
/// How long a publish that got `MOVED` waits before it is sent to the slot's new owner when the
/// node knows no subscriber count for its channel: the other nodes resubscribe the slot's
/// channels there meanwhile.
const MOVED_GRACE: Duration = Duration::from_millis(150);
/// How long a publish that got `MOVED` waits at most for its channel's subscribers to be back on
/// the slot's new owner (the node's other sends wait with it, once).
const MOVED_LIMIT: Duration = Duration::from_secs(1);
/// How often the new owner is asked meanwhile.
const MOVED_POLL: Duration = Duration::from_millis(20);
/// How many times a publish follows `MOVED` before it fails.
const MOVED_ROUNDS: usize = 3;
/// The number of hash slots of a Redis Cluster.
const SLOTS: u16 = 16384;

/// The hash slot of `key`: CRC16 (XMODEM) of the key, or of its hash tag (the part between the
/// first `{` and the next `}`, if not empty), modulo 16384.
pub(crate) fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &byte in hashed {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % SLOTS
}

/// Which master owns which slots, and whether each can take sends now: shared between the task
/// that keeps the connections and the broker's `send`, which fails fast for a shard that is
/// down.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    state: Mutex<RouteState>,
}

#[derive(Debug, Default)]
struct RouteState {
    /// Slot ranges (inclusive) and the address of their master.
    ranges: Vec<(u16, u16, String)>,
    /// Each master's health, by address.
    health: HashMap<String, Health>,
    /// The channels of a master that came up after a failover whose subscribers have not all
    /// come back there yet: refused until they have (see `Shards::follow`).
    waiting: HashSet<String>,
}

#[derive(Debug, Clone)]
enum Health {
    /// Connected with its rooms subscribed; takes sends from `from` on.
    Up { from: Instant },
    /// Lost, or not reached yet.
    Down(String),
}

impl Routes {
    fn lock(&self) -> std::sync::MutexGuard<'_, RouteState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The address of the master owning `slot`.
    fn owner(&self, slot: u16) -> Option<String> {
        self.lock().owner(slot).map(str::to_owned)
    }

    /// Whether a publish on `channel` can go now; why not otherwise.
    pub(crate) fn check(&self, channel: &str) -> Result<(), String> {
        let slot = slot(channel.as_bytes());
        let state = self.lock();
        let Some(owner) = state.owner(slot) else {
            return Err(format!("no master of the Redis Cluster owns slot {slot}"));
        };
        match state.health.get(owner) {
            Some(Health::Up { from })
                if Instant::now() >= *from
                    && (state.waiting.is_empty() || !state.waiting.contains(channel)) =>
            {
                Ok(())
            }
            Some(Health::Up { .. }) => Err(format!(
                "the master of slot {slot} ({owner}) was just promoted; the nodes are \
                 subscribing its rooms there"
            )),
            Some(Health::Down(reason)) => Err(reason.clone()),
            None => Err(format!(
                "not connected to the master of slot {slot} ({owner}) yet"
            )),
        }
    }

    fn set(&self, addr: &str, health: Health) {
        self.lock().health.insert(addr.to_owned(), health);
    }
}

impl RouteState {
    fn owner(&self, slot: u16) -> Option<&str> {
        owner_in(&self.ranges, slot)
    }
}

/// The address of the master that owns `slot` in `ranges`.
fn owner_in(ranges: &[(u16, u16, String)], slot: u16) -> Option<&str> {
    ranges
        .iter()
        .find(|(first, last, _)| (*first..=*last).contains(&slot))
        .map(|(_, _, addr)| addr.as_str())
}

/// What a master's subscription connection tells the task.
pub(crate) enum ShardEvent {
    /// The connection `generation` to `addr` closed.
    Lost { addr: String, generation: u64 },
    /// Connecting to master `addr` in the background (see `Shards::spawn_connect`) is done.
    Connected {
        addr: String,
        result: Box<RedisResult<Shard>>,
    },
    /// Redis dropped the subscription to `channel` (its slot moved), or confirmed the node's own
    /// `SUNSUBSCRIBE`.
    Unsubscribed { channel: String },
}

/// One master's connections.
pub(crate) struct Shard {
    publish: MultiplexedConnection,
    subscribe: MultiplexedConnection,
    generation: u64,
}

/// The node's connections to a Redis Cluster, kept by the broker's task.
pub(crate) struct Shards {
    seed: ConnectionInfo,
    routes: Arc<Routes>,
    shards: HashMap<String, Shard>,
    /// Every node of the last slot map (masters and replicas), to ask for the next one.
    known: Vec<String>,
    /// The channels the node wants: its control channel, its own, its rooms'.
    wanted: HashSet<String>,
    /// Wanted channels whose subscription Redis dropped: subscribed again on their slot's owner
    /// after the next look at the slot map.
    dropped: HashSet<String>,
    events_tx: mpsc::UnboundedSender<ShardEvent>,
    events: mpsc::UnboundedReceiver<ShardEvent>,
    /// Where the messages that arrive go.
    messages: mpsc::UnboundedSender<PushInfo>,
    next_generation: u64,
    /// The masters being connected to in the background.
    connecting: HashSet<String>,
    last_check: Instant,
    /// Whether the first connections are made: a master reached later waits [`GRACE`].
    started: bool,
    /// How many subscribers (one per node) each channel's last publish reached, while its
    /// master was up and followed.
    listeners: HashMap<String, i64>,
    /// The masters that came up after the node started, by address, while the other nodes
    /// subscribe there too.
    following: HashMap<String, Following>,
    /// Channels whose slot moved to another master that was up (a resharding), since when:
    /// their next publish waits for the other nodes to resubscribe there
    /// ([`Shards::await_moved`]).
    moving: HashMap<String, Instant>,
}

/// A master the node subscribed its rooms on after it came up (a promoted replica, a slot's new
/// owner) whose rooms wait for the other nodes' subscriptions there before they take sends.
struct Following {
    subscribed_at: Instant,
    /// The channels of its slots with fewer subscribers there than their last publish reached,
    /// and that number.
    waiting: HashMap<String, i64>,
}

impl Shards {
    /// Reads the slot map from the node at `url` and connects to every master; messages that
    /// arrive on the subscriptions go to the receiver returned. A master that cannot be reached
    /// now is reached later.
    ///
    /// # Errors
    ///
    /// A bad URL, or the node at `url` cannot be asked for the slot map.
    pub(crate) async fn open(
        url: &str,
        routes: Arc<Routes>,
    ) -> RedisResult<(Shards, mpsc::UnboundedReceiver<PushInfo>)> {
        let seed = url.into_connection_info()?;
        let (messages, pushes) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let mut shards = Shards {
            seed,
            routes,
            shards: HashMap::new(),
            known: Vec::new(),
            wanted: HashSet::new(),
            dropped: HashSet::new(),
            events_tx,
            events,
            messages,
            next_generation: 0,
            connecting: HashSet::new(),
            last_check: Instant::now(),
            started: false,
            listeners: HashMap::new(),
            following: HashMap::new(),
            moving: HashMap::new(),
        };
        let Some(seed_addr) = shards.seed_addr() else {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "sharded Pub/Sub needs a Redis Cluster node's TCP address",
                url.to_owned(),
            )));
        };
        let mut conn = shards.connect_plain(&seed_addr).await?;
        let map = ask_slots(&mut conn, &seed_addr).await?;
        shards.apply(map).await;
        shards.started = true;
        Ok((shards, pushes))
    }

    /// The connection information of the node at `addr` (`host:port`), with the seed's
    /// settings (credentials, TLS, database) and RESP3.
    fn info(&self, addr: &str) -> ConnectionInfo {
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "6379"));
        let port = port.parse().unwrap_or(6379);
        let mut at = self.seed.addr().clone();
        match &mut at {
            ConnectionAddr::Tcp(h, p)
            | ConnectionAddr::TcpTls {
                host: h, port: p, ..
            } => {
                *h = host.to_owned();
                *p = port;
            }
            _ => at = ConnectionAddr::Tcp(host.to_owned(), port),
        }
        let settings = self
            .seed
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        self.seed.clone().set_addr(at).set_redis_settings(settings)
    }

    /// A connection without pushes, for publishing and asking.
    async fn connect_plain(&self, addr: &str) -> RedisResult<MultiplexedConnection> {
        connect_plain(self.info(addr)).await
    }

    /// Starts connecting to master `addr` in a task of its own, so that a master that does not
    /// answer holds up no other: the connections come back as [`ShardEvent::Connected`].
    fn spawn_connect(&mut self, addr: &str) {
        if !self.connecting.insert(addr.to_owned()) {
            return;
        }
        self.next_generation += 1;
        let (info, generation) = (self.info(addr), self.next_generation);
        let (messages, events) = (self.messages.clone(), self.events_tx.clone());
        let addr = addr.to_owned();
        tokio::spawn(async move {
            let result = connect_pair(info, &addr, generation, messages, events.clone()).await;
            let _ = events.send(ShardEvent::Connected {
                addr,
                result: Box::new(result),
            });
        });
    }

    /// Takes a new slot map: forgets masters that no longer own slots, and connects to new ones
    /// (and again to those that were lost): at once the first time, in the background after.
    /// Returns what to report: the masters that could not be reached at first.
    async fn apply(&mut self, map: SlotMap) -> Vec<String> {
        let masters: HashSet<String> = map.ranges.iter().map(|(_, _, a)| a.clone()).collect();
        let moved = {
            let mut state = self.routes.lock();
            let moved = state.ranges != map.ranges;
            if moved {
                // Channels that reached subscribers and whose slot moved to a master that is up:
                // their next publish waits until the other nodes have resubscribed there.
                let now = Instant::now();
                for channel in self.listeners.keys() {
                    let slot = slot(channel.as_bytes());
                    let new = owner_in(&map.ranges, slot);
                    if new != state.owner(slot) && new.is_some_and(|n| self.shards.contains_key(n))
                    {
                        self.moving.insert(channel.clone(), now);
                    }
                }
            }
            state.ranges = map.ranges;
            state.health.retain(|addr, _| masters.contains(addr));
            moved
        };
        self.shards.retain(|addr, _| masters.contains(addr));
        let gone: Vec<String> = self
            .following
            .keys()
            .filter(|addr| !masters.contains(*addr))
            .cloned()
            .collect();
        for addr in gone {
            self.stop_following(&addr);
        }
        self.known = map.nodes;
        let mut reports = Vec::new();
        for addr in &masters {
            if self.shards.contains_key(addr) {
                continue;
            }
            if self.started {
                self.routes
                    .lock()
                    .health
                    .entry(addr.clone())
                    .or_insert_with(|| {
                        Health::Down(format!(
                            "connecting to the Redis Cluster master {addr}, the new owner of the \
                         room's slot"
                        ))
                    });
                self.spawn_connect(addr);
                continue;
            }
            self.next_generation += 1;
            let connected = connect_pair(
                self.info(addr),
                addr,
                self.next_generation,
                self.messages.clone(),
                self.events_tx.clone(),
            )
            .await;
            if let Some(reason) = self.connected(addr, connected).await {
                reports.push(reason);
            }
        }
        if moved {
            // Slots moved between masters that stay: their channels go to their new owner.
            let owned: Vec<String> = self.shards.keys().cloned().collect();
            for addr in owned {
                self.subscribe_owned(&addr).await;
            }
        } else if !self.dropped.is_empty() {
            let again: Vec<String> = self.dropped.iter().cloned().collect();
            self.subscribe(&again).await;
        }
        reports
    }

    /// Takes the connections to master `addr` (if it still is one): subscribes the wanted
    /// channels of its slots there and marks it up: at once when the node starts; later, after
    /// [`GRACE`], each room held back until the other nodes have followed (see
    /// [`Shards::follow`]).
    /// Returns what to report when it could not be reached.
    async fn connected(&mut self, addr: &str, connected: RedisResult<Shard>) -> Option<String> {
        let is_master = self
            .routes
            .lock()
            .ranges
            .iter()
            .any(|(_, _, owner)| owner == addr);
        if !is_master || self.shards.contains_key(addr) {
            return None;
        }
        match connected {
            Ok(shard) => {
                self.shards.insert(addr.to_owned(), shard);
                self.subscribe_owned(addr).await;
                let now = Instant::now();
                let from = if self.started {
                    self.follow(addr, now);
                    now + GRACE
                } else {
                    now
                };
                if self.shards.contains_key(addr) {
                    self.routes.set(addr, Health::Up { from });
                    tracing::info!(target: "sseio_redis", master = %addr, "subscribed the rooms of a Redis Cluster master");
                }
                None
            }
            Err(error) => {
                let reason = format!(
                    "cannot reach the Redis Cluster master {addr} ({error}); its rooms' sends \
                     fail until it or its replica is back"
                );
                let first = !matches!(self.routes.lock().health.get(addr), Some(Health::Down(_)));
                self.routes.set(addr, Health::Down(reason.clone()));
                (first && !self.started).then_some(reason)
            }
        }
    }

    /// Starts following master `addr`, which came up at `now` after the node started: each
    /// channel of its slots whose last publish reached subscribers is refused until as many are
    /// subscribed there again (the other nodes have followed too), at most [`FOLLOW_LIMIT`].
    fn follow(&mut self, addr: &str, now: Instant) {
        self.stop_following(addr);
        let waiting: HashMap<String, i64> = {
            let mut state = self.routes.lock();
            let waiting: HashMap<String, i64> = self
                .listeners
                .iter()
                .filter(|(channel, _)| state.owner(slot(channel.as_bytes())) == Some(addr))
                .map(|(channel, &count)| (channel.clone(), count))
                .collect();
            state.waiting.extend(waiting.keys().cloned());
            waiting
        };
        let following = Following {
            subscribed_at: now,
            waiting,
        };
        self.following.insert(addr.to_owned(), following);
    }

    /// Stops following master `addr`: its channels still waited for take sends again.
    fn stop_following(&mut self, addr: &str) {
        if let Some(following) = self.following.remove(addr)
            && !following.waiting.is_empty()
        {
            let mut state = self.routes.lock();
            for channel in following.waiting.keys() {
                state.waiting.remove(channel);
            }
        }
    }

    /// Asks each master being followed how many subscribers its waited-for channels have now,
    /// and gives each channel sends again once it has as many as before, or once
    /// [`FOLLOW_LIMIT`] has passed.
    async fn await_followers(&mut self) {
        let addrs: Vec<String> = self.following.keys().cloned().collect();
        for addr in addrs {
            let (Some(shard), Some(following)) =
                (self.shards.get_mut(&addr), self.following.get_mut(&addr))
            else {
                self.stop_following(&addr);
                continue;
            };
            let back = subscribers_back(&mut shard.publish, &mut following.waiting).await;
            if !back.is_empty() {
                let mut state = self.routes.lock();
                for channel in &back {
                    state.waiting.remove(channel);
                }
            }
            if following.waiting.is_empty() {
                self.following.remove(&addr);
            } else if following.subscribed_at.elapsed() >= FOLLOW_LIMIT {
                tracing::info!(
                    target: "sseio_redis",
                    master = %addr,
                    channels = following.waiting.len(),
                    "gave up waiting for other nodes to subscribe on a Redis Cluster master"
                );
                self.stop_following(&addr);
            }
        }
    }

    /// Remembers how many subscribers a publish on `channel` reached.
    fn heard(&mut self, channel: &str, count: i64) {
        if count <= 0 {
            self.listeners.remove(channel);
        } else if let Some(known) = self.listeners.get_mut(channel) {
            *known = count;
        } else {
            if self.listeners.len() >= LISTENERS_KEPT {
                let wanted = &self.wanted;
                self.listeners.retain(|channel, _| wanted.contains(channel));
            }
            if self.listeners.len() < LISTENERS_KEPT {
                self.listeners.insert(channel.to_owned(), count);
            }
        }
    }

    /// Subscribes master `addr` to every wanted channel of the slots it owns.
    async fn subscribe_owned(&mut self, addr: &str) {
        let channels: Vec<String> = {
            let state = self.routes.lock();
            self.wanted
                .iter()
                .filter(|c| state.owner(slot(c.as_bytes())) == Some(addr))
                .cloned()
                .collect()
        };
        self.subscribe_on(addr, &channels).await;
    }

    /// `SSUBSCRIBE`s `channels` on master `addr`, one channel per command (so that each command
    /// has exactly one confirmation), pipelined. The subscribing connection carries nothing
    /// else: redis-rs takes a subscription push for the answer of the oldest command in flight,
    /// so a `sunsubscribe` Redis sends of its own (a slot moved) would be taken for the answer
    /// of a publish on a shared connection. Here it can only be taken for another subscription
    /// command's, whose answer says no more than "not refused".
    async fn subscribe_on(&mut self, addr: &str, channels: &[String]) {
        if channels.is_empty() {
            return;
        }
        let Some(shard) = self.shards.get_mut(addr) else {
            return;
        };
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for channel in channels {
            pipe.cmd("SSUBSCRIBE").arg(channel);
        }
        let answers: RedisResult<Vec<RedisResult<Value>>> =
            answered_within(pipe.query_async(&mut shard.subscribe)).await;
        match answers {
            Ok(answers) => {
                for (channel, answer) in channels.iter().zip(answers) {
                    match answer {
                        Ok(_) => {
                            self.dropped.remove(channel);
                        }
                        // The slot map is behind: subscribed after the next look at it.
                        Err(_) => {
                            self.dropped.insert(channel.clone());
                        }
                    }
                }
            }
            Err(error) => {
                let generation = shard.generation;
                self.lose(addr, generation, &error.to_string());
            }
        }
    }

    /// Marks master `addr` down (if `generation` is its current connection): its rooms' sends
    /// fail fast until its slots are served again. Returns what to report.
    fn lose(&mut self, addr: &str, generation: u64, why: &str) -> Option<String> {
        if self
            .shards
            .get(addr)
            .is_none_or(|shard| shard.generation != generation)
        {
            return None;
        }
        self.shards.remove(addr);
        self.stop_following(addr);
        let reason = format!(
            "lost the Redis Cluster master {addr} ({why}); its rooms' sends fail until it or its \
             replica is back"
        );
        self.routes.set(addr, Health::Down(reason.clone()));
        tracing::warn!(target: "sseio_redis", "{reason}");
        Some(reason)
    }

    /// Adds `channels` to the wanted ones and subscribes each on its master (if that master is
    /// up; otherwise when it is back).
    pub(crate) async fn subscribe(&mut self, channels: &[String]) {
        let mut by_owner: HashMap<String, Vec<String>> = HashMap::new();
        for channel in channels {
            self.wanted.insert(channel.clone());
            if let Some(owner) = self.routes.owner(slot(channel.as_bytes())) {
                by_owner.entry(owner).or_default().push(channel.clone());
            }
        }
        for (owner, channels) in by_owner {
            self.subscribe_on(&owner, &channels).await;
        }
    }

    /// Removes `channels` from the wanted ones and unsubscribes each on its master.
    pub(crate) async fn unsubscribe(&mut self, channels: &[String]) {
        for channel in channels {
            self.wanted.remove(channel);
            self.dropped.remove(channel);
            let Some(owner) = self.routes.owner(slot(channel.as_bytes())) else {
                continue;
            };
            let Some(shard) = self.shards.get_mut(&owner) else {
                continue;
            };
            let unsubscribed: RedisResult<Value> = answered_within(
                redis::cmd("SUNSUBSCRIBE")
                    .arg(channel)
                    .query_async(&mut shard.subscribe),
            )
            .await;
            if let Err(error) = unsubscribed
                && crate::link::lost(&error)
            {
                let generation = shard.generation;
                self.lose(&owner, generation, &error.to_string());
            }
        }
    }

    /// Publishes each message on its channel's master: one pipeline per master, the masters at
    /// once, so a slow or failed master holds up nobody else. A message whose master is down is
    /// not sent (its answer: [`unavailable`]); one that got `MOVED` is sent again to the slot's
    /// new owner, in order, once the other nodes have resubscribed its channel there
    /// ([`Shards::await_moved`]).
    pub(crate) async fn send(&mut self, items: &[Outgoing]) -> Vec<RedisResult<Value>> {
        let mut answers: Vec<Option<RedisResult<Value>>> = items.iter().map(|_| None).collect();
        let mut todo: Vec<usize> = (0..items.len()).collect();
        if !self.moving.is_empty() {
            let moving: Vec<String> = items
                .iter()
                .filter_map(|item| match item {
                    Outgoing::Publish { channel, .. } if self.moving.contains_key(channel) => {
                        Some(channel.clone())
                    }
                    _ => None,
                })
                .collect();
            if !moving.is_empty() {
                self.await_moved(&moving).await;
            }
        }
        for round in 0..MOVED_ROUNDS {
            let mut by_owner: HashMap<String, Vec<usize>> = HashMap::new();
            for &i in &todo {
                let owner = match &items[i] {
                    Outgoing::Publish { channel, .. } => self
                        .routes
                        .check(channel)
                        .map(|()| self.routes.owner(slot(channel.as_bytes())))
                        .map_err(unavailable),
                    // Not used with sharded Pub/Sub (no history): any master answers.
                    Outgoing::Cmd(_) => Ok(self.shards.keys().next().cloned()),
                };
                match owner {
                    Ok(Some(owner)) if self.shards.contains_key(&owner) => {
                        by_owner.entry(owner).or_default().push(i);
                    }
                    Ok(_) => answers[i] = Some(Err(unavailable("no master reachable".into()))),
                    Err(error) => answers[i] = Some(Err(error)),
                }
            }
            let sending = by_owner.into_iter().filter_map(|(owner, indices)| {
                let shard = self.shards.get(&owner)?;
                let (mut conn, generation) = (shard.publish.clone(), shard.generation);
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                for &i in &indices {
                    match &items[i] {
                        Outgoing::Publish { channel, body } => {
                            pipe.cmd("SPUBLISH").arg(channel).arg(body);
                        }
                        Outgoing::Cmd(cmd) => {
                            pipe.add_command(cmd.clone());
                        }
                    }
                }
                Some(async move {
                    let answered: RedisResult<Vec<RedisResult<Value>>> =
                        answered_within(pipe.query_async(&mut conn)).await;
                    (owner, generation, indices, answered)
                })
            });
            let results = futures_join_all(sending).await;
            let mut moved = Vec::new();
            for (owner, generation, indices, answered) in results {
                match answered {
                    Ok(replies) => {
                        let followed = !self.following.contains_key(&owner);
                        for (i, reply) in indices.into_iter().zip(replies) {
                            match reply {
                                Err(error) if is_moved(&error) => moved.push(i),
                                reply => {
                                    if let (true, Ok(Value::Int(count))) = (followed, &reply)
                                        && let Outgoing::Publish { channel, .. } = &items[i]
                                    {
                                        self.heard(channel, *count);
                                    }
                                    answers[i] = Some(reply);
                                }
                            }
                        }
                    }
                    Err(error) => {
                        self.lose(&owner, generation, &error.to_string());
                        for i in indices {
                            answers[i] = Some(Err(error.clone()));
                        }
                    }
                }
            }
            if moved.is_empty() {
                break;
            }
            moved.sort_unstable();
            tracing::debug!(target: "sseio_redis", messages = moved.len(), "publishes moved to another master");
            if round + 1 < MOVED_ROUNDS {
                self.refresh().await;
                let channels: Vec<String> = moved
                    .iter()
                    .filter_map(|&i| match &items[i] {
                        Outgoing::Publish { channel, .. } => Some(channel.clone()),
                        Outgoing::Cmd(_) => None,
                    })
                    .collect();
                self.await_moved(&channels).await;
            }
            for &i in &moved {
                answers[i] = Some(Err(RedisError::from((
                    ErrorKind::Server(ServerErrorKind::Moved),
                    "the slot kept moving",
                ))));
            }
            todo = moved;
        }
        answers
            .into_iter()
            .map(|answer| answer.unwrap_or_else(|| Err(unavailable("not sent".into()))))
            .collect()
    }

    /// Before publishes that got `MOVED` go to their slot's new owner: subscribes the node's own
    /// rooms among `channels` there (Redis dropped them on the old owner, and the push that says
    /// so is read only after this send), then waits until the new owner counts as many
    /// subscribers of each channel as its last publish reached, that is until the other nodes
    /// have resubscribed there too: asked every [`MOVED_POLL`], at most [`MOVED_LIMIT`];
    /// [`MOVED_GRACE`] for a channel whose count the node does not know.
    async fn await_moved(&mut self, channels: &[String]) {
        let own: Vec<String> = channels
            .iter()
            .filter(|channel| self.wanted.contains(*channel))
            .cloned()
            .collect();
        if !own.is_empty() {
            self.subscribe(&own).await;
        }
        let mut waiting: HashMap<String, HashMap<String, i64>> = HashMap::new();
        let mut unknown = false;
        for channel in channels {
            let owner = self.routes.owner(slot(channel.as_bytes()));
            match (self.listeners.get(channel), owner) {
                (Some(&count), Some(owner)) => {
                    waiting
                        .entry(owner)
                        .or_default()
                        .insert(channel.clone(), count);
                }
                _ => unknown = true,
            }
        }
        let started = Instant::now();
        while !waiting.is_empty() && started.elapsed() < MOVED_LIMIT {
            for (owner, channels) in &mut waiting {
                let Some(shard) = self.shards.get_mut(owner) else {
                    channels.clear();
                    continue;
                };
                subscribers_back(&mut shard.publish, channels).await;
            }
            waiting.retain(|_, channels| !channels.is_empty());
            if !waiting.is_empty() {
                tokio::time::sleep(MOVED_POLL).await;
            }
        }
        if unknown {
            tokio::time::sleep(MOVED_GRACE.saturating_sub(started.elapsed())).await;
        }
        for channel in channels {
            self.moving.remove(channel);
        }
    }

    /// Runs one command on any master that is up.
    pub(crate) async fn ask(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        let Some(shard) = self.shards.values_mut().next() else {
            return Err(unavailable(
                "no master of the Redis Cluster is reachable".into(),
            ));
        };
        cmd.query_async(&mut shard.publish).await
    }

    /// The next thing a subscription connection says.
    pub(crate) async fn event(&mut self) -> ShardEvent {
        match self.events.recv().await {
            Some(event) => event,
            // `events_tx` lives in `self`: never closed while it is polled.
            None => std::future::pending().await,
        }
    }

    /// Acts on what a subscription connection said; returns what to report.
    pub(crate) async fn on_event(&mut self, event: ShardEvent) -> Vec<String> {
        match event {
            ShardEvent::Lost { addr, generation } => {
                let lost = self.lose(&addr, generation, "connection closed");
                let mut reports: Vec<String> = lost.into_iter().collect();
                if !reports.is_empty() {
                    reports.extend(self.refresh().await);
                }
                reports
            }
            ShardEvent::Connected { addr, result } => {
                self.connecting.remove(&addr);
                self.connected(&addr, *result).await.into_iter().collect()
            }
            ShardEvent::Unsubscribed { channel } => {
                if self.wanted.contains(&channel) {
                    // Not asked for: its slot moved. Subscribed again on its new owner.
                    self.dropped.insert(channel);
                    self.refresh().await
                } else {
                    Vec::new()
                }
            }
        }
    }

    /// Called every [`POLL`]: while a master is down or a subscription was dropped, reads the
    /// slot map again; every [`CHECK_EVERY`], checks every master with a `PING` and reads the
    /// slot map anyway. Returns what to report.
    pub(crate) async fn maintain(&mut self) -> Vec<String> {
        self.await_followers().await;
        self.moving
            .retain(|_, since| since.elapsed() < FOLLOW_LIMIT);
        let mut reports = Vec::new();
        let due = self.last_check.elapsed() >= CHECK_EVERY;
        if due {
            self.last_check = Instant::now();
            let pings = self.shards.iter().map(|(addr, shard)| {
                let mut conn = shard.publish.clone();
                let (addr, generation) = (addr.clone(), shard.generation);
                async move {
                    let ping = redis::cmd("PING");
                    let pinged =
                        tokio::time::timeout(PING_TIMEOUT, ping.query_async::<Value>(&mut conn))
                            .await
                            .unwrap_or_else(|_| {
                                Err(RedisError::from((ErrorKind::Io, "no answer to PING")))
                            });
                    (addr, generation, pinged)
                }
            });
            for (addr, generation, pinged) in futures_join_all(pings).await {
                if let Err(error) = pinged {
                    reports.extend(self.lose(&addr, generation, &error.to_string()));
                }
            }
        }
        let down = self
            .routes
            .lock()
            .health
            .values()
            .any(|h| matches!(h, Health::Down(_)));
        if due || down || !self.dropped.is_empty() {
            reports.extend(self.refresh().await);
        }
        reports
    }

    /// Reads the slot map from a master that is up, else from any node of the last one, else
    /// from the seed, and applies it. Returns what to report.
    async fn refresh(&mut self) -> Vec<String> {
        let mut map = None;
        for (addr, shard) in &mut self.shards {
            let asked = tokio::time::timeout(PING_TIMEOUT, ask_slots(&mut shard.publish, addr));
            if let Ok(Ok(found)) = asked.await {
                map = Some(found);
                break;
            }
        }
        if map.is_none() {
            let mut candidates = self.known.clone();
            let seed = self.seed_addr();
            candidates.extend(seed);
            for addr in candidates {
                if self.shards.contains_key(&addr) {
                    continue;
                }
                let Ok(mut conn) = self.connect_plain(&addr).await else {
                    continue;
                };
                if let Ok(found) = ask_slots(&mut conn, &addr).await {
                    map = Some(found);
                    break;
                }
            }
        }
        match map {
            Some(map) => self.apply(map).await,
            None => Vec::new(),
        }
    }

    /// The seed's `host:port`, if it is a TCP address.
    fn seed_addr(&self) -> Option<String> {
        match self.seed.addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                Some(format!("{host}:{port}"))
            }
            _ => None,
        }
    }
}

/// `answer`, or an I/O error (the master counts as lost) if it takes over [`ANSWER_TIMEOUT`].
async fn answered_within<T>(
    answer: impl std::future::Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    tokio::time::timeout(ANSWER_TIMEOUT, answer)
        .await
        .unwrap_or_else(|_| {
            Err(RedisError::from((
                ErrorKind::Io,
                "the master did not answer within 2 s",
            )))
        })
}

/// A connection without pushes, for publishing and asking.
async fn connect_plain(info: ConnectionInfo) -> RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    Client::open(info)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Both connections to master `addr` (at `info`): the subscribing one sends the messages that
/// arrive to `messages`, and what else it says to `events`, tagged with `generation`.
async fn connect_pair(
    info: ConnectionInfo,
    addr: &str,
    generation: u64,
    messages: mpsc::UnboundedSender<PushInfo>,
    events: mpsc::UnboundedSender<ShardEvent>,
) -> RedisResult<Shard> {
    let owner = addr.to_owned();
    let push = move |info: PushInfo| -> Result<(), ()> {
        match info.kind {
            PushKind::Message | PushKind::SMessage => {
                let _ = messages.send(info);
            }
            PushKind::Disconnection => {
                let _ = events.send(ShardEvent::Lost {
                    addr: owner.clone(),
                    generation,
                });
            }
            PushKind::SUnsubscribe => {
                if let Some(Value::BulkString(channel)) = info.data.first() {
                    let _ = events.send(ShardEvent::Unsubscribed {
                        channel: String::from_utf8_lossy(channel).into_owned(),
                    });
                }
            }
            _ => {}
        }
        Ok(())
    };
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_push_sender(push);
    let subscribe = Client::open(info.clone())?
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let publish = connect_plain(info).await?;
    Ok(Shard {
        publish,
        subscribe,
        generation,
    })
}

/// Runs the futures at once and returns their outputs.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let handles: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    let mut pending: Vec<_> = handles.into_iter().map(Some).collect();
    let mut done: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (slot, output) in pending.iter_mut().zip(done.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.extend(done.into_iter().flatten());
    outputs
}

/// The error of a message not sent because its master is down: the broker answers it with
/// `BrokerError::Unavailable`.
pub(crate) fn unavailable(reason: String) -> RedisError {
    RedisError::from((
        ErrorKind::ClusterConnectionNotFound,
        "the master of the channel's slot is unavailable",
        reason,
    ))
}

/// Whether `error` is that of a message not sent because its master is down.
pub(crate) fn is_unavailable(error: &RedisError) -> bool {
    error.kind() == ErrorKind::ClusterConnectionNotFound
}

/// Asks a master (over `conn`) how many subscribers each channel of `waiting` has there now, and
/// takes out of `waiting` those that have as many as the number it holds for them: the channels
/// whose subscribers are all back. Returns them. A master that does not answer within
/// [`PING_TIMEOUT`] leaves `waiting` as it is.
async fn subscribers_back(
    conn: &mut MultiplexedConnection,
    waiting: &mut HashMap<String, i64>,
) -> Vec<String> {
    if waiting.is_empty() {
        return Vec::new();
    }
    let mut cmd = redis::cmd("PUBSUB");
    cmd.arg("SHARDNUMSUB");
    for channel in waiting.keys() {
        cmd.arg(channel);
    }
    let Ok(Ok(counts)) = tokio::time::timeout(PING_TIMEOUT, cmd.query_async(conn)).await else {
        return Vec::new();
    };
    let mut back = Vec::new();
    for (channel, count) in subscriber_counts(&counts) {
        if waiting.get(&channel).is_some_and(|&before| count >= before) {
            waiting.remove(&channel);
            back.push(channel);
        }
    }
    back
}

/// The subscriber counts of a `PUBSUB SHARDNUMSUB` answer: channel and count, in turn, as an
/// array (or a map, in case a server answers so).
fn subscriber_counts(answer: &Value) -> Vec<(String, i64)> {
    let pairs: Vec<(&Value, &Value)> = match answer {
        Value::Array(items) => items
            .chunks_exact(2)
            .map(|pair| (&pair[0], &pair[1]))
            .collect(),
        Value::Map(entries) => entries.iter().map(|(k, v)| (k, v)).collect(),
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .filter_map(|(channel, count)| {
            let channel = match channel {
                Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok()?,
                Value::SimpleString(text) => text.clone(),
                _ => return None,
            };
            match count {
                Value::Int(count) => Some((channel, *count)),
                _ => None,
            }
        })
        .collect()
}

fn is_moved(error: &RedisError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::Ask)
    )
}

/// A slot map: who owns which slots, and every node it names.
#[derive(Debug)]
struct SlotMap {
    ranges: Vec<(u16, u16, String)>,
    nodes: Vec<String>,
}

/// Asks node `asked` (`host:port`) for the slot map (`CLUSTER SLOTS`).
async fn ask_slots(conn: &mut MultiplexedConnection, asked: &str) -> RedisResult<SlotMap> {
    let answer: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
    let host = asked.rsplit_once(':').map_or(asked, |(host, _)| host);
    parse_slots(&answer, host).ok_or_else(|| {
        RedisError::from((
            ErrorKind::Parse,
            "an unexpected answer to CLUSTER SLOTS",
            format!("{answer:?}"),
        ))
    })
}

/// `CLUSTER SLOTS`: per range, its first and last slot, then the master `[host, port, id, ..]`,
/// then its replicas. A node that does not know its own address (a cluster of one node) names
/// itself with an empty host or `?`: that is `asked_host`, the host of the node asked.
fn parse_slots(answer: &Value, asked_host: &str) -> Option<SlotMap> {
    let Value::Array(ranges) = answer else {
        return None;
    };
    let int = |v: &Value| match v {
        Value::Int(n) => u16::try_from(*n).ok(),
        _ => None,
    };
    let addr = |v: &Value| {
        let Value::Array(node) = v else {
            return None;
        };
        let host = match node.first()? {
            Value::BulkString(host) => String::from_utf8_lossy(host).into_owned(),
            Value::SimpleString(host) => host.clone(),
            _ => return None,
        };
        let host = if host.is_empty() || host == "?" {
            asked_host
        } else {
            &host
        };
        Some(format!("{host}:{}", int(node.get(1)?)?))
    };
    let mut map = SlotMap {
        ranges: Vec::new(),
        nodes: Vec::new(),
    };
    for range in ranges {
        let Value::Array(fields) = range else {
            return None;
        };
        let (first, last) = (int(fields.first()?)?, int(fields.get(1)?)?);
        map.ranges.push((first, last, addr(fields.get(2)?)?));
        map.nodes.extend(fields[2..].iter().filter_map(addr));
    }
    map.ranges.sort();
    map.nodes.sort();
    map.nodes.dedup();
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_cluster_key_slots() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"123456789"), 12739);
        assert_eq!(slot(b""), 0);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_ne!(
            slot(b"foo{}{bar}"),
            slot(b"bar"),
            "an empty hash tag is no tag"
        );
    }

    #[test]
    fn after_a_failover_only_the_channels_still_waited_for_are_refused() {
        let routes = Routes::default();
        {
            let mut state = routes.lock();
            state.ranges = vec![(0, SLOTS - 1, "m:1".to_owned())];
            state.waiting.insert("waited".to_owned());
        }
        routes.set(
            "m:1",
            Health::Up {
                from: Instant::now(),
            },
        );
        assert!(
            routes.check("waited").is_err(),
            "its subscribers are not all back"
        );
        assert_eq!(
            routes.check("other"),
            Ok(()),
            "the same master's other channel"
        );
        routes.lock().waiting.clear();
        assert_eq!(routes.check("waited"), Ok(()));
    }

    #[test]
    fn subscriber_counts_are_read_from_shardnumsub() {
        let bulk = |text: &str| Value::BulkString(text.as_bytes().to_vec());
        let array = Value::Array(vec![bulk("a"), Value::Int(2), bulk("b"), Value::Int(0)]);
        let map = Value::Map(vec![(bulk("a"), Value::Int(2)), (bulk("b"), Value::Int(0))]);
        let expected = vec![("a".to_owned(), 2), ("b".to_owned(), 0)];
        assert_eq!(subscriber_counts(&array), expected);
        assert_eq!(subscriber_counts(&map), expected);
        assert_eq!(subscriber_counts(&Value::Nil), vec![]);
    }

    #[test]
    fn a_slot_map_is_read_from_cluster_slots() {
        let node = |port: i64, id: &str| {
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(port),
                Value::BulkString(id.as_bytes().to_vec()),
            ])
        };
        let answer = Value::Array(vec![
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                node(7001, "b"),
                node(7004, "e"),
            ]),
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node(7000, "a"),
                node(7003, "d"),
            ]),
        ]);
        let map = parse_slots(&answer, "10.0.0.1").unwrap();
        assert_eq!(
            map.ranges,
            [
                (0, 5460, "127.0.0.1:7000".to_owned()),
                (5461, 16383, "127.0.0.1:7001".to_owned())
            ]
        );
        assert_eq!(map.nodes.len(), 4);
        assert!(parse_slots(&Value::Int(1), "h").is_none());
        let alone = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(16383),
            Value::Array(vec![Value::BulkString(Vec::new()), Value::Int(7000)]),
        ])]);
        assert_eq!(
            parse_slots(&alone, "10.0.0.1").unwrap().ranges,
            [(0, 16383, "10.0.0.1:7000".to_owned())],
            "a node that does not know its address is the one asked"
        );
    }

    #[test]
    fn a_shard_down_refuses_only_its_own_channels() {
        let routes = Routes::default();
        routes.lock().ranges = vec![(0, 8191, "a:1".into()), (8192, 16383, "b:1".into())];
        let on = |owner: &str| {
            (0..)
                .map(|n| format!("ch{n}"))
                .find(|c| routes.owner(slot(c.as_bytes())).as_deref() == Some(owner))
                .unwrap()
        };
        let (on_a, on_b) = (on("a:1"), on("b:1"));
        routes.set(
            "a:1",
            Health::Up {
                from: Instant::now(),
            },
        );
        routes.set("b:1", Health::Down("b is down".into()));
        assert_eq!(routes.check(&on_a), Ok(()));
        assert_eq!(routes.check(&on_b), Err("b is down".into()));
        routes.set(
            "b:1",
            Health::Up {
                from: Instant::now() + Duration::from_secs(60),
            },
        );
        assert!(routes.check(&on_b).unwrap_err().contains("just promoted"));
    }
}
