//! The hub: the registry of a server's open connections, and everything done to one connection
//! by its id: registering it, the one close path, delivery to one client, and the heartbeat.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::broker::{Broker, ConnectionId, Recalled};
use crate::error::ConnectionError;
use crate::frame;
use crate::handler::EventHandler;
use crate::history::LocalHistory;
use crate::metrics::Metrics;
use crate::notify::{CloseReason, Notification, Notifier};
use crate::position::Seen;
use crate::quota::{Holders, Quotas};
use crate::rejection::ConnectRejection;
use crate::sink::{SinkError, SseSink};
use crate::sync::lock;

/// The registry is split in `1 << SHARD_BITS` shards, so that no one lock spans every connection.
const SHARD_BITS: u32 = 6;
const SHARDS: usize = 1 << SHARD_BITS;

/// The open connections of one server, in shards by `clientId`, and what is done to them.
///
/// # Lock order
///
/// A thread that holds one of these locks takes only locks further down the list:
///
/// 1. one registry shard (never two at once);
/// 2. the server's history log ([`LocalHistory::log`]);
/// 3. a handler's rooms, one handler at a time;
/// 4. a member's hold-back queue, then the connection's sink;
/// 5. leaves, which call nothing: resume records, a connection's [`Seen`], the notification
///    channel, a broker's queue, the counts of the caps per principal and per address.
///
/// Shards are private to the hub and each method takes at most one, calling out of it only
/// into levels 2 to 5 (joining and leaving rooms, closing a sink, raising a notification), so no
/// code outside this module can take them out of order. Delivery runs at levels 2 to 4 and
/// closes the connections it found full only after it let go of its locks. A broker's own locks
/// come before all of these: [`MemoryBroker`](crate::MemoryBroker) delivers, and so may close
/// slow connections, while it holds its history log.
///
/// Everything about one `clientId` (its joins, replacements and closes) happens under its
/// shard's lock, so the notifications about it are raised in order.
pub(crate) struct Hub {
    shards: Box<[Mutex<Shard>]>,
    /// Open connections, all shards together.
    open: AtomicUsize,
    /// The next serial before it is tagged with its shard.
    next_serial: AtomicU64,
    draining: AtomicBool,
    notifier: Arc<Notifier>,
    metrics: Arc<Metrics>,
    broker: Option<Arc<dyn Broker>>,
    history: Arc<LocalHistory>,
    resume_ttl: Duration,
    max_buffer_bytes: usize,
    /// The caps per principal and per address, if any.
    quotas: Option<Quotas>,
}

/// One shard: its connections by serial, the serial of each `clientId`, and when each stream
/// is to close (with a maximum stream lifetime only: nothing per connection without one).
#[derive(Default)]
struct Shard {
    live: HashMap<u64, Live>,
    by_client: HashMap<Arc<str>, u64>,
    deadlines: HashMap<u64, Instant>,
}

impl Shard {
    /// Takes connection `serial` out of the shard.
    fn remove(&mut self, serial: u64) -> Option<Live> {
        let live = self.live.remove(&serial)?;
        if self.by_client.get(&live.client_id) == Some(&serial) {
            self.by_client.remove(&live.client_id);
        }
        self.deadlines.remove(&serial);
        Some(live)
    }
}

/// One open connection, as the hub keeps it.
pub(crate) struct Live {
    client_id: Arc<str>,
    principal: Option<Arc<str>>,
    sink: Arc<dyn SseSink>,
    /// Each room it is in, with its handler.
    rooms: Vec<(EventHandler, Arc<str>)>,
    /// Where it stands in the messages with history; `None` without history.
    seen: Option<Arc<Seen>>,
    /// `sseio.connection` (with the `connection-spans` feature): the close and its
    /// notifications are raised inside it.
    span: tracing::Span,
    /// Its `fetch`es and replay, aborted when it closes.
    tasks: Vec<AbortHandle>,
}

impl Live {
    /// A connection about to be registered, with no tasks yet.
    pub(crate) fn new(
        client_id: Arc<str>,
        principal: Option<Arc<str>>,
        sink: Arc<dyn SseSink>,
        rooms: Vec<(EventHandler, Arc<str>)>,
        seen: Option<Arc<Seen>>,
        span: tracing::Span,
    ) -> Self {
        Self {
            client_id,
            principal,
            sink,
            rooms,
            seen,
            span,
            tasks: Vec::new(),
        }
    }

    /// Where its `clientId` resumes from once it closed for `reason` (see [`Seen::left`]).
    fn left(&self, reason: CloseReason) -> Recalled {
        self.seen
            .as_ref()
            .map_or(Recalled::Nothing, |seen| seen.left(reason.by_server()))
    }

    /// Stops everything going out of connection `serial`: its sink is closed as `ending`
    /// says, its tasks aborted, and whatever it was not given (frames the sink discarded,
    /// frames still held back) marks where it stands. The first half of a close;
    /// [`Hub::finish_close`] is the second.
    fn stop(&self, serial: u64, reason: CloseReason, ending: Ending) {
        match ending {
            Ending::Now => self.sink.close(reason),
            Ending::With(last) => self.sink.close_with(reason, last),
            Ending::AfterQueued => self.sink.close_after_queued(reason),
        }
        for task in &self.tasks {
            task.abort();
        }
        if let Some(seen) = &self.seen {
            if let Some(at) = self.sink.unsent() {
                seen.missed(at);
            }
            for (handler, room) in &self.rooms {
                handler.mark_held_as_missed(room, serial);
            }
        }
    }
}

/// How a closed connection's stream ends.
pub(crate) enum Ending {
    /// At once: what is queued and not written is discarded.
    Now,
    /// With this field written first (not a message: the drain's `retry:`); what is queued is
    /// discarded.
    With(Bytes),
    /// Once what is queued is written.
    AfterQueued,
}

/// What the join step of a connect sees of the registry, under the shard lock of its `clientId`.
pub(crate) struct Registering {
    /// The new connection's serial.
    pub(crate) serial: u64,
    /// Where the connection it replaces left, once stopped: the successor takes over from
    /// there ([`Recalled::Nothing`] when it replaces none).
    pub(crate) replaced: Recalled,
}

/// Who may take an open `clientId` over, and how many connections may be open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admission {
    pub(crate) same_principal_takeover: bool,
    pub(crate) max_connections: Option<usize>,
}

impl Hub {
    pub(crate) fn new(
        notifier: Arc<Notifier>,
        metrics: Arc<Metrics>,
        broker: Option<Arc<dyn Broker>>,
        history: Arc<LocalHistory>,
        resume_ttl: Duration,
        max_buffer_bytes: usize,
        quotas: Option<Quotas>,
    ) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            open: AtomicUsize::new(0),
            next_serial: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            notifier,
            metrics,
            broker,
            history,
            resume_ttl,
            max_buffer_bytes,
            quotas,
        }
    }

    /// The number of open connections.
    pub(crate) fn len(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The server's metrics.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Raises an `error` notification about one connection.
    pub(crate) fn report(&self, error: ConnectionError) {
        self.notifier.notify(Notification::Error(Arc::new(error)));
    }

    /// From now on, new connections are refused and server-side closes count as `shutdown`.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The shard of `client_id`'s connections.
    fn client_index(client_id: &str) -> usize {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(client_id);
        hash as usize % SHARDS
    }

    fn shard_of_client(&self, client_id: &str) -> MutexGuard<'_, Shard> {
        lock(&self.shards[Self::client_index(client_id)])
    }

    fn shard_of_serial(&self, serial: u64) -> MutexGuard<'_, Shard> {
        lock(&self.shards[serial as usize % SHARDS])
    }

    /// Registers a connection of `client_id`: under its shard's lock, checks that the server
    /// takes it, stops the connection it replaces, runs `join` (which joins its rooms and
    /// returns it), then closes the replaced one, and raises `conn:create`; the connection is
    /// closed as expired at `deadline`, if given. Returns the new serial and what `join` made
    /// besides.
    ///
    /// # Errors
    ///
    /// The server is draining, the `clientId` belongs to another principal, the server is
    /// full, or the stream's principal or address holds as many streams as it may.
    pub(crate) fn register<T>(
        &self,
        client_id: &Arc<str>,
        principal: &Option<Arc<str>>,
        address: Option<IpAddr>,
        admission: Admission,
        deadline: Option<Instant>,
        join: impl FnOnce(&Registering) -> (Live, T),
    ) -> Result<(u64, T), ConnectRejection> {
        let index = Self::client_index(client_id);
        let mut shard = lock(&self.shards[index]);
        if self.is_draining() {
            return Err(ConnectRejection::ShuttingDown);
        }
        let replacing = shard.by_client.get(client_id).copied();
        if let Some(old) = replacing
            && admission.same_principal_takeover
            && shard.live.get(&old).map(|c| &c.principal) != Some(principal)
        {
            return Err(ConnectRejection::Forbidden {
                message: "this clientId is in use by another principal".to_owned(),
            });
        }
        let serial =
            (self.next_serial.fetch_add(1, Ordering::Relaxed) << SHARD_BITS) | index as u64;
        if let Some(quotas) = &self.quotas {
            let holders = Holders {
                principal: principal.as_ref(),
                address,
            };
            let replacing = replacing.and_then(|old| {
                let live = shard.live.get(&old)?;
                let holders = Holders {
                    principal: live.principal.as_ref(),
                    address: None,
                };
                Some((old, holders))
            });
            quotas.take(serial, holders, replacing)?;
        }
        // A replacement takes its predecessor's place in the count.
        if replacing.is_none() && !self.reserve(admission.max_connections) {
            if let Some(quotas) = &self.quotas {
                quotas.release(serial, principal.as_ref());
            }
            return Err(ConnectRejection::TooManyConnections);
        }
        // The replaced stream stops before the new one joins, so that where it stood counts
        // what it discarded; it leaves its rooms after, so shared rooms stay open.
        let replaced = replacing.and_then(|old| shard.remove(old).map(|live| (old, live)));
        let replaced_at = replaced.as_ref().map_or(Recalled::Nothing, |(old, live)| {
            live.stop(*old, CloseReason::Replaced, Ending::Now);
            live.left(CloseReason::Replaced)
        });
        let (live, made) = join(&Registering {
            serial,
            replaced: replaced_at,
        });
        shard.by_client.insert(client_id.clone(), serial);
        if let Some((old, live)) = replaced {
            self.finish_close(old, live, CloseReason::Replaced);
        }
        self.metrics.opened();
        live.span
            .in_scope(|| tracing::debug!("sseio connection opened"));
        self.notifier.notify(Notification::ConnCreate {
            client_id: client_id.clone(),
            principal: principal.clone(),
        });
        shard.live.insert(serial, live);
        if let Some(deadline) = deadline {
            shard.deadlines.insert(serial, deadline);
        }
        Ok((serial, made))
    }

    /// Counts one more open connection, unless that passes `max`.
    fn reserve(&self, max: Option<usize>) -> bool {
        match max {
            None => {
                self.open.fetch_add(1, Ordering::Relaxed);
                true
            }
            Some(max) => self
                .open
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                    (open < max).then_some(open + 1)
                })
                .is_ok(),
        }
    }

    /// Hands connection `serial` the tasks to abort when it closes (its `fetch`es and replay);
    /// aborts them at once if it closed already.
    pub(crate) fn add_tasks(&self, serial: u64, tasks: Vec<AbortHandle>) {
        if tasks.is_empty() {
            return;
        }
        let mut shard = self.shard_of_serial(serial);
        match shard.live.get_mut(&serial) {
            Some(live) => live.tasks.extend(tasks),
            None => tasks.iter().for_each(AbortHandle::abort),
        }
    }

    /// Closes connection `serial` if it is still open: the one close path, whatever the cause.
    pub(crate) fn close(&self, serial: u64, reason: CloseReason) {
        self.close_with(serial, reason, Ending::Now);
    }

    /// Closes connection `serial` like [`Hub::close`], its stream ending as `ending` says.
    pub(crate) fn close_with(&self, serial: u64, reason: CloseReason, ending: Ending) {
        let mut shard = self.shard_of_serial(serial);
        let Some(live) = shard.remove(serial) else {
            return;
        };
        self.open.fetch_sub(1, Ordering::Relaxed);
        live.stop(serial, reason, ending);
        // Under the shard's lock, so that it is ordered with every join of this clientId.
        self.finish_close(serial, live, reason);
    }

    /// Closes the connection with `client_id`, if any; whether there was one.
    pub(crate) fn close_client(&self, client_id: &str, reason: CloseReason) -> bool {
        let serial = self
            .shard_of_client(client_id)
            .by_client
            .get(client_id)
            .copied();
        serial
            .inspect(|&serial| self.close(serial, reason))
            .is_some()
    }

    /// Closes the connection with `client_id`, if any, as replaced by a stream of the same
    /// `clientId` opening on another node, and returns where it left, for that stream to
    /// resume from; `None` when there was none.
    pub(crate) fn take_over(&self, client_id: &str) -> Option<Recalled> {
        let mut shard = self.shard_of_client(client_id);
        let serial = *shard.by_client.get(client_id)?;
        let live = shard.remove(serial)?;
        self.open.fetch_sub(1, Ordering::Relaxed);
        live.stop(serial, CloseReason::Replaced, Ending::Now);
        // After the stop, which counts what it never wrote as missed.
        let at = live.left(CloseReason::Replaced);
        self.finish_close(serial, live, CloseReason::Replaced);
        Some(at)
    }

    /// Closes every open connection now.
    pub(crate) fn close_all(&self, reason: CloseReason) {
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            shard.by_client.clear();
            shard.deadlines.clear();
            let closed: Vec<_> = shard.live.drain().collect();
            for (serial, live) in closed {
                self.open.fetch_sub(1, Ordering::Relaxed);
                live.stop(serial, reason, Ending::Now);
                self.finish_close(serial, live, reason);
            }
        }
    }

    /// Closes the streams whose deadline passed by `now`.
    pub(crate) fn close_expired(&self, now: Instant) {
        for shard in self.shards.iter() {
            let expired: Vec<u64> = {
                let shard = lock(shard);
                let due = shard
                    .deadlines
                    .iter()
                    .filter(|(_, deadline)| **deadline <= now);
                due.map(|(&serial, _)| serial).collect()
            };
            for serial in expired {
                self.close(serial, CloseReason::Expired);
            }
        }
    }

    /// The serials of every open connection, for a drain that closes them over time.
    pub(crate) fn serials(&self) -> Vec<u64> {
        self.shards
            .iter()
            .flat_map(|shard| lock(shard).live.keys().copied().collect::<Vec<_>>())
            .collect()
    }

    /// The rest of a close, once the connection is out of the registry and stopped (so it runs
    /// once): it leaves its rooms, the broker hears of it, where it stood is remembered for its
    /// `clientId`'s reconnect, and `conn:close` is raised.
    fn finish_close(&self, serial: u64, live: Live, reason: CloseReason) {
        let _span = live.span.clone().entered();
        self.metrics.closed(reason, self.is_draining());
        tracing::debug!(%reason, "sseio connection closed");
        if let Some(quotas) = &self.quotas {
            quotas.release(serial, live.principal.as_ref());
        }
        for (handler, room) in &live.rooms {
            handler.leave(room, serial);
        }
        if let Some(broker) = &self.broker {
            broker.client_closed(&live.client_id, ConnectionId(serial));
        }
        // A replaced stream's successor has taken over its position already.
        if reason != CloseReason::Replaced && live.seen.is_some() {
            match live.left(reason) {
                Recalled::Nothing => self.forget_open(&live.client_id),
                left => self.remember(&live.client_id, left),
            }
        }
        if reason == CloseReason::SlowConsumer {
            self.report(ConnectionError::SlowConsumer {
                client_id: live.client_id.clone(),
                limit: self.max_buffer_bytes,
            });
        }
        self.notifier.notify(Notification::ConnClose {
            client_id: live.client_id,
            principal: live.principal,
            reason,
        });
    }

    /// Remembers where `client_id` left when its stream closed, for its reconnect: in the
    /// broker's history store when it keeps one, else in this server's.
    fn remember(&self, client_id: &Arc<str>, at: Recalled) {
        match self.broker.as_ref().and_then(|b| b.history_store()) {
            Some(store) => store.remember(client_id, at, self.resume_ttl),
            None => self
                .history
                .remember(client_id.clone(), at, self.resume_ttl),
        }
    }

    /// A stream of `client_id` closed here without a position: the broker's record that it is
    /// open here goes, so its reconnect starts afresh rather than as lost.
    fn forget_open(&self, client_id: &str) {
        if let Some(store) = self.broker.as_ref().and_then(|b| b.history_store()) {
            store.unmark_open(client_id);
        }
    }

    /// Queues `payload` as an `event` message on the connection with `client_id`, through its
    /// membership in that event's room (so a running `fetch` still goes first). Whether it was
    /// queued.
    pub(crate) fn deliver_to_client(&self, client_id: &str, event: &str, payload: &str) -> bool {
        let (serial, delivered) = {
            let shard = self.shard_of_client(client_id);
            let Some(&serial) = shard.by_client.get(client_id) else {
                return false;
            };
            let Some((handler, room)) = shard.live.get(&serial).and_then(|live| {
                live.rooms
                    .iter()
                    .find(|(handler, _)| handler.event() == event)
            }) else {
                return false;
            };
            let frame = frame::encode(handler.event(), payload);
            let frame_len = frame.len();
            let delivered = handler.deliver_to(room, serial, frame);
            if delivered.is_ok() {
                self.metrics.sent(1, frame_len);
            }
            (serial, delivered)
        };
        if delivered == Err(SinkError::Full) {
            self.close(serial, CloseReason::SlowConsumer);
        }
        delivered.is_ok()
    }

    /// How many parts [`Hub::beat_part`] beats the connections in: one per shard.
    pub(crate) const BEAT_PARTS: usize = SHARDS;

    /// Queues one heartbeat on every open connection of part `part` (of [`Hub::BEAT_PARTS`]),
    /// then closes the connections whose buffer was full and those whose sink its transport
    /// closed. The heartbeat beats one part at a time, spread over its interval, so that the
    /// writes of thousands of streams never come in one burst (a burst that held up every
    /// connect meanwhile).
    pub(crate) fn beat_part(&self, part: usize) {
        let mut ended = Vec::new();
        let mut beats = 0;
        {
            let shard = lock(&self.shards[part % SHARDS]);
            for (&serial, live) in &shard.live {
                if live.sink.is_closed() {
                    ended.push((serial, CloseReason::ClientGone));
                    continue;
                }
                match live.sink.send(frame::HEARTBEAT) {
                    Ok(()) => beats += 1,
                    Err(SinkError::Full) => ended.push((serial, CloseReason::SlowConsumer)),
                    Err(SinkError::Closed) => ended.push((serial, CloseReason::ClientGone)),
                }
            }
        }
        self.metrics.heartbeats(beats);
        for (serial, reason) in ended {
            self.close(serial, reason);
        }
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("open", &self.len())
            .field("draining", &self.is_draining())
            .finish_non_exhaustive()
    }
}
