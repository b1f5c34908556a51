//! Event handlers: one per event name, each with its own rooms, its `get_room_id` and its
//! optional `fetch`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock, Weak};

use bytes::Bytes;
use serde::Serialize;

use crate::auth::{IntoRoom, Refusal};
use crate::broker::{Broker, BrokerError, Presence, SharedHistory};
use crate::error::{BoxError, SendError};
use crate::frame;
use crate::history::{Histories, History, Position};
use crate::message;
use crate::metrics::Metrics;
use crate::notify::{CloseReason, Notification, Notifier};
use crate::request::Context;
use crate::room::{Member, Room};
use crate::server::ServerInner;
use crate::sink::SinkError;
use crate::sync::{lock, read, write};

type RoomIdFn = dyn Fn(&Context) -> Result<String, Refusal> + Send + Sync;
pub(crate) type FetchFuture =
    Pin<Box<dyn Future<Output = Result<Option<String>, FetchFailure>> + Send>>;
type FetchFn = dyn Fn(Context) -> FetchFuture + Send + Sync;

/// How a `fetch` failed, before it is reported.
pub(crate) enum FetchFailure {
    Failed(BoxError),
    Serialize(serde_json::Error),
}

/// What a handler does with a connection: which room it joins, and optionally what it is sent
/// first. Pass it to [`Server::register_event_handler`](crate::Server::register_event_handler).
pub struct HandlerOptions {
    get_room_id: Box<RoomIdFn>,
    fetch: Option<Arc<FetchFn>>,
    history: Option<History>,
}

impl HandlerOptions {
    /// Options with `get_room_id`, which picks the room a new connection joins from its
    /// [`Context`] (path parameters, query, headers, what `authorize` granted). It runs once per
    /// connection and event, and returns a room id (`String` or `&'static str`), or a
    /// `Result` whose [`Refusal`] refuses the connection (`401`/`403` JSON naming the event).
    ///
    /// ```
    /// use sseio_core::{Context, HandlerOptions};
    ///
    /// let options = HandlerOptions::new(|ctx: &Context| ctx.param("userId").unwrap_or("").to_owned());
    /// ```
    pub fn new<F, R>(get_room_id: F) -> Self
    where
        F: Fn(&Context) -> R + Send + Sync + 'static,
        R: IntoRoom,
    {
        Self {
            get_room_id: Box::new(move |ctx| get_room_id(ctx).into_room()),
            fetch: None,
            history: None,
        }
    }

    /// History for this handler's rooms, instead of the server's
    /// ([`ServerBuilder::history`](crate::ServerBuilder::history)).
    #[must_use]
    pub fn history(mut self, history: History) -> Self {
        self.history = Some(history);
        self
    }

    /// Adds `fetch`, which runs once per connection and event right after connect. Its result
    /// is the first message of that event on that connection (a string verbatim, anything else
    /// as its JSON text; `None` or `()` sends nothing). Messages sent to the connection while it
    /// runs are held back and delivered right after it, in order. If it fails (or panics), an
    /// [`Notification::Error`] is raised and the held messages are still delivered.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use sseio_core::{Context, HandlerOptions};
    ///
    /// let options = HandlerOptions::new(|ctx: &Context| ctx.param("guid").unwrap_or("").to_owned())
    ///     .fetch(|ctx: Context| async move {
    ///         Ok::<_, Infallible>(vec![format!("welcome {}", ctx.client_id())])
    ///     });
    /// ```
    #[must_use]
    pub fn fetch<F, Fut, M, E>(mut self, fetch: F) -> Self
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<M, E>> + Send + 'static,
        M: Serialize + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.fetch = Some(Arc::new(move |ctx| {
            let fut = fetch(ctx);
            Box::pin(async move {
                match fut.await {
                    Ok(message) => {
                        message::to_fetch_payload(&message).map_err(FetchFailure::Serialize)
                    }
                    Err(error) => Err(FetchFailure::Failed(error.into())),
                }
            })
        }));
        self
    }
}

impl fmt::Debug for HandlerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerOptions")
            .field("fetch", &self.fetch.is_some())
            .field("history", &self.history)
            .finish_non_exhaustive()
    }
}

/// The handler of one event: sends messages to its rooms.
///
/// Cheap to clone (an `Arc` inside), `Send + Sync`: keep it wherever your application produces
/// messages.
#[derive(Clone)]
pub struct EventHandler {
    inner: Arc<HandlerInner>,
}

struct HandlerInner {
    event: Arc<str>,
    get_room_id: Box<RoomIdFn>,
    fetch: Option<Arc<FetchFn>>,
    rooms: RwLock<HashMap<Arc<str>, Room>>,
    notifier: Arc<Notifier>,
    server: Weak<ServerInner>,
    max_message_bytes: usize,
    broker: Option<Arc<dyn Broker>>,
    history: Option<History>,
    histories: Arc<Mutex<Histories>>,
    metrics: Arc<Metrics>,
}

impl EventHandler {
    /// The handler of `event` on `server`, which it shares its notifier, broker and history with.
    pub(crate) fn new(event: Arc<str>, options: HandlerOptions, server: &Arc<ServerInner>) -> Self {
        Self {
            inner: Arc::new(HandlerInner {
                event,
                get_room_id: options.get_room_id,
                fetch: options.fetch,
                history: options.history.or(server.history),
                histories: server.histories.clone(),
                rooms: RwLock::new(HashMap::new()),
                notifier: server.notifier.clone(),
                server: Arc::downgrade(server),
                max_message_bytes: server.limits.max_message_bytes,
                broker: server.broker.clone(),
                metrics: server.metrics.clone(),
            }),
        }
    }

    /// The event this handler serves.
    pub fn event(&self) -> &str {
        &self.inner.event
    }

    /// Sends `message` to every connection in `room`: a string verbatim, anything else as its
    /// JSON text. With a [broker](crate::ServerBuilder::broker), that is every connection in
    /// `room` on every node; the broker carries the message.
    ///
    /// The frame is encoded once (per node) and queued on each connection; this never waits
    /// for a client, nor for the broker.
    /// A room with no connection is not an error: the message goes nowhere. A connection whose
    /// outgoing buffer is full is closed (see
    /// [`ServerBuilder::max_buffer_bytes`](crate::ServerBuilder::max_buffer_bytes)); the others
    /// still get the message.
    ///
    /// # Errors
    ///
    /// [`SendError::Serialize`] when `message` cannot be serialized to JSON;
    /// [`SendError::TooLarge`] when its payload is larger than
    /// [`ServerBuilder::max_message_bytes`](crate::ServerBuilder::max_message_bytes);
    /// [`SendError::Broker`] when the broker cannot take it now (Redis is down, say).
    pub fn send<M: Serialize + ?Sized>(&self, room: &str, message: &M) -> Result<(), SendError> {
        let payload = message::to_payload(message).map_err(SendError::Serialize)?;
        let limit = self.inner.max_message_bytes;
        if payload.len() > limit {
            return Err(SendError::TooLarge {
                size: payload.len(),
                limit,
            });
        }
        match (&self.inner.broker, self.shared_history()) {
            (Some(_), Some((shared, history))) => {
                shared.publish(&self.inner.event, room, &payload, history)?;
            }
            (Some(broker), None) => broker.publish(&self.inner.event, room, &payload)?,
            (None, _) => {
                self.deliver_local(room, &payload);
            }
        }
        Ok(())
    }

    /// The broker's history, when this handler has history and its broker keeps one for the
    /// cluster.
    pub(crate) fn shared_history(&self) -> Option<(&dyn SharedHistory, History)> {
        let history = self.inner.history?;
        let shared = self.inner.broker.as_ref()?.history()?;
        Some((shared, history))
    }

    /// The number of connections in `room` on this server (this node only; see
    /// [`EventHandler::presence`] for the whole cluster).
    pub fn room_size(&self, room: &str) -> usize {
        read(&self.inner.rooms)
            .get(room)
            .map_or(0, |room| room.members.len())
    }

    /// The ids of the rooms that have at least one connection on this server.
    pub fn rooms(&self) -> Vec<String> {
        read(&self.inner.rooms)
            .keys()
            .map(|room| room.to_string())
            .collect()
    }

    /// The connections of `room` on every node of the cluster: their number and `clientId`s.
    /// Without a broker, this server's; with one, each node serving the room answers.
    ///
    /// # Errors
    ///
    /// When the broker cannot ask the other nodes, or they do not answer in time.
    pub fn presence(
        &self,
        room: &str,
    ) -> impl Future<Output = Result<Presence, BrokerError>> + Send + 'static {
        let asking = match &self.inner.broker {
            Some(broker) => Err(broker.presence(&self.inner.event, room)),
            None => Ok(Presence::from_client_ids(self.client_ids(room))),
        };
        async move {
            match asking {
                Ok(presence) => Ok(presence),
                Err(asking) => asking.await,
            }
        }
    }

    /// The `clientId`s in `room` on this server.
    pub(crate) fn client_ids(&self, room: &str) -> Vec<String> {
        read(&self.inner.rooms)
            .get(room)
            .map_or_else(Vec::new, |room| {
                room.members
                    .values()
                    .map(|member| member.client_id.to_string())
                    .collect()
            })
    }

    pub(crate) fn room_arcs(&self) -> Vec<Arc<str>> {
        read(&self.inner.rooms).keys().cloned().collect()
    }

    /// Encodes `payload` once and queues it on this server's connections in `room`; returns
    /// how many. With history, the message is numbered and recorded first, and queued under the
    /// history lock, so every connection gets the server's messages in offset order.
    ///
    /// When the broker keeps the cluster's history, messages are numbered there and arrive
    /// through [`EventHandler::deliver_numbered`]; one that arrives here anyway (from a node
    /// without history for this event) goes out without an `id:`.
    pub(crate) fn deliver_local(&self, room: &str, payload: &str) -> usize {
        let mut slow = Vec::new();
        let local_history = self
            .inner
            .history
            .filter(|_| self.shared_history().is_none());
        let delivered = match local_history {
            None => self.fan_out(
                room,
                &frame::encode(&self.inner.event, payload),
                None,
                &mut slow,
            ),
            Some(history) => {
                let mut histories = lock(&self.inner.histories);
                let (at, frame) = histories.record(&self.inner.event, room, payload, history);
                self.fan_out(room, &frame, Some(at), &mut slow)
            }
        };
        self.close_slow(slow);
        delivered
    }

    /// Encodes `payload` once with `id: <at>`, a position the broker's history gave it, and
    /// queues it on this server's connections in `room`; returns how many.
    pub(crate) fn deliver_numbered(&self, room: &str, at: Position, payload: &str) -> usize {
        let mut slow = Vec::new();
        let frame = frame::encode_with_id(&at.to_string(), &self.inner.event, payload);
        let delivered = self.fan_out(room, &frame, Some(at), &mut slow);
        self.close_slow(slow);
        delivered
    }

    fn close_slow(&self, slow: Vec<u64>) {
        if let (false, Some(server)) = (slow.is_empty(), self.inner.server.upgrade()) {
            for serial in slow {
                server.close_connection(serial, CloseReason::SlowConsumer);
            }
        }
    }

    /// Queues `frame` on every member of `room`, noting its position `at` (with history) as
    /// the last one each has been given; collects the members whose buffer is full.
    fn fan_out(
        &self,
        room: &str,
        frame: &Bytes,
        at: Option<Position>,
        slow: &mut Vec<u64>,
    ) -> usize {
        let rooms = read(&self.inner.rooms);
        let Some(room) = rooms.get(room) else {
            return 0;
        };
        let mut queued = 0;
        for (&serial, member) in &room.members {
            if let Some(at) = at {
                member.seen.advance(at);
            }
            match member.deliver(frame.clone(), at) {
                Ok(()) => queued += 1,
                Err(SinkError::Full) => slow.push(serial),
                Err(_) => {}
            }
        }
        self.inner.metrics.sent(queued, frame.len());
        room.members.len() - slow.len()
    }

    pub(crate) fn history(&self) -> Option<History> {
        self.inner.history
    }

    /// Queues `frame` on one member of `room`.
    pub(crate) fn deliver_to(
        &self,
        room: &str,
        serial: u64,
        frame: Bytes,
    ) -> Result<(), SinkError> {
        read(&self.inner.rooms)
            .get(room)
            .and_then(|room| room.members.get(&serial))
            .map_or(Err(SinkError::Closed), |member| member.deliver(frame, None))
    }

    pub(crate) fn room_id(&self, ctx: &Context) -> Result<String, Refusal> {
        (self.inner.get_room_id)(ctx)
    }

    pub(crate) fn fetch(&self) -> Option<&Arc<FetchFn>> {
        self.inner.fetch.as_ref()
    }

    pub(crate) fn event_arc(&self) -> &Arc<str> {
        &self.inner.event
    }

    /// Adds a member to `room`, raising `room:create` if it is the room's first.
    pub(crate) fn join(&self, room: &Arc<str>, serial: u64, member: Member) {
        let mut rooms = write(&self.inner.rooms);
        match rooms.entry(room.clone()) {
            Entry::Occupied(mut entry) => {
                entry.get_mut().members.insert(serial, member);
            }
            Entry::Vacant(entry) => {
                entry.insert(Room::default()).members.insert(serial, member);
                self.inner.metrics.rooms.increment(1.0);
                if let Some(broker) = &self.inner.broker {
                    broker.room_created(&self.inner.event, room);
                }
                self.inner.notifier.notify(Notification::RoomCreate {
                    event: self.inner.event.clone(),
                    room: room.clone(),
                });
            }
        }
    }

    /// Removes a member from `room`, raising `room:empty` and forgetting the room if it was the
    /// last.
    pub(crate) fn leave(&self, room: &Arc<str>, serial: u64) {
        let mut rooms = write(&self.inner.rooms);
        let Some(members) = rooms.get_mut(room) else {
            return;
        };
        if members.members.remove(&serial).is_some() && members.members.is_empty() {
            rooms.remove(room);
            self.inner.metrics.rooms.decrement(1.0);
            if let Some(broker) = &self.inner.broker {
                broker.room_emptied(&self.inner.event, room);
            }
            self.inner.notifier.notify(Notification::RoomEmpty {
                event: self.inner.event.clone(),
                room: room.clone(),
            });
        }
    }
}

impl fmt::Debug for EventHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventHandler")
            .field("event", &self.inner.event)
            .field("fetch", &self.inner.fetch.is_some())
            .field("rooms", &read(&self.inner.rooms).len())
            .finish()
    }
}
