//! Event handlers: one per event name, each with its own rooms, its `get_room_id` and its
//! optional `fetch`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock, Weak};

use bytes::Bytes;
use serde::Serialize;

use crate::auth::{IntoRoom, Refusal};
use crate::broker::{BoxFuture, Broker, BrokerError, HistoryStore, Presence};
use crate::error::{BoxError, PositionError, SendError};
use crate::frame;
use crate::history::{History, LocalHistory};
use crate::hub::Hub;
use crate::message;
use crate::metrics::Metrics;
use crate::notify::{CloseReason, Notification, Notifier};
use crate::position::Position;
use crate::request::Context;
use crate::room::{Member, Room};
use crate::sink::SinkError;
use crate::sync::{read, write};

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
    history: Option<History>,
    env: HandlerEnv,
}

/// What a handler shares with its server.
#[derive(Clone)]
pub(crate) struct HandlerEnv {
    /// For closing the connections a delivery found full.
    pub(crate) hub: Weak<Hub>,
    pub(crate) notifier: Arc<Notifier>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) broker: Option<Arc<dyn Broker>>,
    /// The server's own history, for handlers with history when the broker keeps none.
    pub(crate) local_history: Arc<LocalHistory>,
    /// The server's history setting, for handlers without one of their own.
    pub(crate) history: Option<History>,
    pub(crate) max_message_bytes: usize,
}

impl EventHandler {
    /// The handler of `event`, sharing `env` with its server.
    pub(crate) fn new(event: Arc<str>, options: HandlerOptions, env: HandlerEnv) -> Self {
        Self {
            inner: Arc::new(HandlerInner {
                event,
                get_room_id: options.get_room_id,
                fetch: options.fetch,
                history: options.history.or(env.history),
                rooms: RwLock::new(HashMap::new()),
                env,
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
    /// for a client, nor for the broker. With a broker that only queues the message (such as
    /// `sseio-redis`), `Ok` means queued, not published: a message queued just before the
    /// broker loses its backend is lost. [`EventHandler::send_confirmed`] waits until it is
    /// published (and recorded, with history).
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
        let payload = self.payload(message)?;
        match (&self.inner.env.broker, self.history_store()) {
            (Some(_), Some((store, history))) => {
                store.publish(&self.inner.event, room, &payload, history)?;
            }
            (Some(broker), None) => broker.publish(&self.inner.event, room, &payload)?,
            (None, _) => {
                self.deliver(room, None, &payload);
            }
        }
        Ok(())
    }

    /// Sends `message` to every connection in `room` like [`EventHandler::send`], and
    /// completes only once the [broker](crate::ServerBuilder::broker) has published it (and,
    /// with history on, recorded it), or fails with a typed error: for a backend that must
    /// not lose a message it acknowledged, and retries what failed.
    ///
    /// Which send gives which guarantee, with `sseio-redis`:
    ///
    /// - [`send`](EventHandler::send) returns once the message is queued for Redis. It never
    ///   waits, but a message queued just before the connection to Redis drops is lost, with
    ///   `send` having returned `Ok`.
    /// - `send_confirmed` completes once Redis answered the `PUBLISH` (with history, the
    ///   script that records and publishes): the message is in the history, so every client
    ///   gets it live or when it resumes, and `Ok` is never returned for a message Redis did
    ///   not take. It costs the caller one round trip to Redis; it costs Redis nothing more.
    ///
    /// Without a broker, and with [`MemoryBroker`](crate::MemoryBroker), both are the same:
    /// the message is queued on every connection before the call returns, and the future is
    /// ready at once.
    ///
    /// The message is handed on when this is called, not when the returned [`Confirmation`]
    /// is first polled, so messages keep the order of the calls, whichever send made them.
    /// The confirmation borrows nothing (it is `Send + 'static`, whatever the message's type),
    /// and completes within the broker's timeout (5 seconds with `sseio-redis`). Dropping it
    /// does not take the message back.
    ///
    /// # Errors
    ///
    /// As [`EventHandler::send`], and inside [`SendError::Broker`]:
    /// [`BrokerError::Unavailable`] or [`BrokerError::Backlog`] when the broker could not take
    /// the message (nothing was sent); [`BrokerError::Failed`] when Redis refused it (it was
    /// not published); [`BrokerError::Unconfirmed`] or [`BrokerError::TimedOut`] when the
    /// connection to Redis was lost, or Redis did not answer, after the message was handed on:
    /// it may have been published or not.
    ///
    /// ```
    /// use sseio_core::{Context, HandlerOptions, Server};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = Server::new("/files/:guid/pull")?;
    /// let files = server.register_event_handler("file-changed", HandlerOptions::new(|_: &Context| "all"))?;
    /// // Answer the request that caused the change only once the message is safe.
    /// files.send_confirmed("all", "saved").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_confirmed<M: Serialize + ?Sized>(&self, room: &str, message: &M) -> Confirmation {
        let published = self.payload(message).map(|payload| {
            match (&self.inner.env.broker, self.history_store()) {
                (Some(_), Some((store, history))) => {
                    store.publish_confirmed(&self.inner.event, room, &payload, history)
                }
                (Some(broker), None) => broker.publish_confirmed(&self.inner.event, room, &payload),
                (None, _) => {
                    self.deliver(room, None, &payload);
                    Box::pin(std::future::ready(Ok(())))
                }
            }
        });
        Confirmation(Box::pin(async move { Ok(published?.await?) }))
    }

    /// `message` as it goes out, checked against the size limit.
    fn payload<M: Serialize + ?Sized>(&self, message: &M) -> Result<String, SendError> {
        let payload = message::to_payload(message).map_err(SendError::Serialize)?;
        let limit = self.inner.env.max_message_bytes;
        if payload.len() > limit {
            return Err(SendError::TooLarge {
                size: payload.len(),
                limit,
            });
        }
        Ok(payload)
    }

    /// Where `room` stands now: the position its next message comes after. A page the server
    /// renders embeds it, and opens its stream with it in the
    /// [resume query parameter](crate::ServerBuilder::resume_query_param) (a native
    /// `EventSource` cannot send `Last-Event-ID` on its first request): the stream then gets
    /// exactly the messages sent after the render, not one lost in between, none twice.
    ///
    /// Positions come from one sequence shared by every room of the server (of the cluster,
    /// with a broker's history), so the position of one room also places a stream in the
    /// others it joins.
    ///
    /// # Errors
    ///
    /// [`PositionError::NoHistory`] when the handler keeps no history;
    /// [`PositionError::Broker`] when the broker's history store cannot answer.
    pub async fn position(&self, room: &str) -> Result<Position, PositionError> {
        let _ = room; // One sequence for every room: see above.
        let no_history = || PositionError::NoHistory {
            event: self.event().to_owned(),
        };
        self.history().ok_or_else(no_history)?;
        match self
            .inner
            .env
            .broker
            .as_ref()
            .and_then(|b| b.history_store())
        {
            Some(store) => Ok(store.replay(Vec::new(), None).await?.now),
            None => Ok(self.inner.env.local_history.log().now()),
        }
    }

    /// The broker's history store, when this handler has history and its broker keeps one for
    /// the cluster.
    pub(crate) fn history_store(&self) -> Option<(&dyn HistoryStore, History)> {
        let history = self.inner.history?;
        let store = self.inner.env.broker.as_ref()?.history_store()?;
        Some((store, history))
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
        let asking = match &self.inner.env.broker {
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

    /// The serials of this server's connections in `room`.
    pub(crate) fn members(&self, room: &str) -> Vec<u64> {
        read(&self.inner.rooms)
            .get(room)
            .map_or_else(Vec::new, |room| room.members.keys().copied().collect())
    }

    pub(crate) fn room_arcs(&self) -> Vec<Arc<str>> {
        read(&self.inner.rooms).keys().cloned().collect()
    }

    /// Encodes `payload` once and queues it on this server's connections in `room`; returns
    /// how many took it.
    ///
    /// `at` is the position the broker's history store gave the message: the frame carries it
    /// as its `id:`. Without one, a handler with history numbers and records the message in the
    /// server's own history first, and queues it under that history's lock, so every
    /// connection gets the server's messages in offset order; a message that arrives without a
    /// position while the broker keeps the history (from a node without history for this
    /// event) goes out without an `id:`.
    pub(crate) fn deliver(&self, room: &str, at: Option<Position>, payload: &str) -> usize {
        let mut slow = Vec::new();
        let event = &self.inner.event;
        let own_history = self
            .inner
            .history
            .filter(|_| self.history_store().is_none());
        let delivered = match (at, own_history) {
            (Some(at), _) => {
                let frame = frame::encode_with_id(&at.to_string(), event, payload);
                self.fan_out(room, &frame, Some(at), &mut slow)
            }
            (None, Some(history)) => {
                let mut log = self.inner.env.local_history.log();
                let (at, frame) = log.record(event, room, payload, history);
                self.fan_out(room, &frame, Some(at), &mut slow)
            }
            (None, None) => self.fan_out(room, &frame::encode(event, payload), None, &mut slow),
        };
        self.close_slow(slow);
        delivered
    }

    /// Closes the connections a delivery found full, once its locks are released.
    fn close_slow(&self, slow: Vec<u64>) {
        if let (false, Some(hub)) = (slow.is_empty(), self.inner.env.hub.upgrade()) {
            for serial in slow {
                hub.close(serial, CloseReason::SlowConsumer);
            }
        }
    }

    /// Queues `frame` (numbered `at`, with history) on every member of `room`; collects the
    /// members whose buffer is full. Returns how many members queued it.
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
            match member.deliver(frame.clone(), at) {
                Ok(()) => queued += 1,
                Err(SinkError::Full) => slow.push(serial),
                Err(SinkError::Closed) => {}
            }
        }
        self.inner.env.metrics.sent(queued, frame.len());
        queued
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
                self.inner.env.metrics.room_created();
                if let Some(broker) = &self.inner.env.broker {
                    broker.room_created(&self.inner.event, room);
                }
                self.inner.env.notifier.notify(Notification::RoomCreate {
                    event: self.inner.event.clone(),
                    room: room.clone(),
                });
            }
        }
    }

    /// Counts what is still held back for member `serial` of `room` as not given to it.
    pub(crate) fn mark_held_as_missed(&self, room: &str, serial: u64) {
        if let Some(member) = read(&self.inner.rooms)
            .get(room)
            .and_then(|room| room.members.get(&serial))
        {
            member.mark_held_as_missed();
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
            self.inner.env.metrics.room_emptied();
            if let Some(broker) = &self.inner.env.broker {
                broker.room_emptied(&self.inner.event, room);
            }
            self.inner.env.notifier.notify(Notification::RoomEmpty {
                event: self.inner.event.clone(),
                room: room.clone(),
            });
        }
    }
}

/// What [`EventHandler::send_confirmed`] returns: a future, ready once the broker confirmed the
/// message (or could not). The message was handed on already; awaiting this only tells whether
/// it was taken for good.
#[must_use = "the message is sent either way; await the confirmation to know it was taken"]
pub struct Confirmation(BoxFuture<Result<(), SendError>>);

impl Future for Confirmation {
    type Output = Result<(), SendError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for Confirmation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Confirmation").finish_non_exhaustive()
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
