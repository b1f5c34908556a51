//! The server: path pattern, handlers, live connections, heartbeats, and the request entry
//! points adapters call.

use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, Version, header};
use tokio::task::AbortHandle;
use tracing::Instrument;

use serde::Serialize;

use crate::auth::{AuthorizeFn, Refusal};
use crate::broker::{Broker, BrokerError, ConnectionId, Node, Replay, ReplayRoom};
use crate::builder::{Limits, ServerBuilder};
use crate::connection::{Connection, ConnectionStream};
use crate::cors::Cors;
use crate::error::{BuildError, ConnectionError, RegisterError, SendError};
use crate::fetch::{CatchUnwind, panic_message, run_fetch};
use crate::frame;
use crate::handler::{EventHandler, HandlerOptions};
use crate::history::{Histories, History, Joined, Position, Resumes, Seen};
use crate::message;
use crate::metrics::Metrics;
use crate::notify::{CloseReason, Notification, Notifications, Notifier};
use crate::rejection::ConnectRejection;
use crate::request::{Context, PathPattern, RequestHead, parse_query};
use crate::room::{Hold, Member};
use crate::sink::{QueueSink, SinkError, SseSink};
use crate::sync::{lock, read, write};

/// An SSE-IO server: the SSE endpoint's path, its event handlers, and its open connections.
///
/// Cheap to clone (an `Arc` inside), `Send + Sync`. Adapters call [`Server::handle`] for each
/// request; the application registers handlers, sends through them, and may
/// [`subscribe`](Server::subscribe) to lifecycle notifications.
#[derive(Clone)]
pub struct Server {
    inner: Arc<ServerInner>,
}

/// What [`Server::handle`] made of a request.
#[derive(Debug)]
pub enum Outcome {
    /// Not the SSE path (or an `OPTIONS` request, left to the application's CORS handling):
    /// pass the request on to the application's routes.
    NotOurs,
    /// Answer with this complete response: a rejection (`400`, `405`, ... with a JSON body), or
    /// the headers for a `HEAD` request.
    Reply(Response<Bytes>),
    /// A stream was accepted: answer with this response and stream its body.
    Stream(Response<ConnectionStream>),
}

pub(crate) struct ServerInner {
    path: PathPattern,
    heartbeat_interval: Duration,
    pub(crate) limits: Limits,
    cors: Option<Cors>,
    authorize: Option<Arc<AuthorizeFn>>,
    same_principal_takeover: bool,
    handlers: RwLock<HashMap<Arc<str>, EventHandler>>,
    connections: Mutex<Connections>,
    pub(crate) notifier: Arc<Notifier>,
    heartbeat_started: Once,
    next_serial: AtomicU64,
    shutting_down: AtomicBool,
    pub(crate) broker: Option<Arc<dyn Broker>>,
    pub(crate) history: Option<History>,
    pub(crate) histories: Arc<Mutex<Histories>>,
    /// Where `clientId`s that left stood, with this server's own history.
    resumes: Mutex<Resumes>,
    resume_ttl: Duration,
    pub(crate) metrics: Arc<Metrics>,
}

/// Live connections, keyed by a serial unique to each connection (not by `clientId`, so the close
/// of a replaced stream can never remove the connection that took its `clientId`).
#[derive(Default)]
struct Connections {
    live: HashMap<u64, LiveConnection>,
    by_client: HashMap<Arc<str>, u64>,
}

struct LiveConnection {
    client_id: Arc<str>,
    principal: Option<Arc<str>>,
    sink: Arc<dyn SseSink>,
    rooms: Vec<(EventHandler, Arc<str>)>,
    fetches: Vec<AbortHandle>,
    /// The position of the last message with history queued to it.
    seen: Arc<Seen>,
    /// `sseio.connection` (with the `connection-spans` feature): the close and its
    /// notifications are raised inside it.
    span: tracing::Span,
}

/// A validated connection request.
struct Parsed {
    client_id: String,
    events: Vec<String>,
    params: Vec<(String, String)>,
    query: Vec<(String, String)>,
}

/// How often [`Server::shutdown`] closes the streams that are due.
const DRAIN_TICK: Duration = Duration::from_millis(10);

impl Server {
    pub(crate) fn from_builder(
        path: PathPattern,
        builder: ServerBuilder,
    ) -> Result<Self, BuildError> {
        let server = Server {
            inner: Arc::new(ServerInner {
                path,
                heartbeat_interval: builder.heartbeat_interval,
                limits: builder.limits,
                cors: builder.cors,
                authorize: builder.authorize,
                same_principal_takeover: builder.same_principal_takeover,
                handlers: RwLock::new(HashMap::new()),
                connections: Mutex::new(Connections::default()),
                notifier: Arc::new(Notifier::default()),
                heartbeat_started: Once::new(),
                next_serial: AtomicU64::new(1),
                shutting_down: AtomicBool::new(false),
                broker: builder.broker,
                history: builder.history,
                histories: Arc::new(Mutex::new(Histories::new())),
                resumes: Mutex::default(),
                resume_ttl: builder.resume_ttl,
                metrics: Arc::new(Metrics::new(builder.send_lag_metric)),
            }),
        };
        if let Some(broker) = &server.inner.broker {
            broker
                .attach(Node::new(Arc::downgrade(&server.inner)))
                .map_err(BuildError::Broker)?;
        }
        Ok(server)
    }

    /// A server on `path` with the default settings; see [`ServerBuilder::path`] for the
    /// pattern syntax.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidPath`] when the path pattern is not usable.
    pub fn new(path: impl Into<String>) -> Result<Self, BuildError> {
        Self::builder().path(path).build()
    }

    /// A builder with the defaults: path `/sseio`, heartbeats every 3 s, 1 MiB per-connection
    /// buffer.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The path pattern this server answers on.
    pub fn path(&self) -> &str {
        self.inner.path.as_str()
    }

    /// Registers the handler of `event`; connections that list `event` in their `events` join
    /// the room its `get_room_id` picks. Handlers can be registered at any time; a connection
    /// joins the handlers registered when it opens.
    ///
    /// # Errors
    ///
    /// [`RegisterError::InvalidEventName`] for a name that cannot go on the wire (empty, or with a
    /// line break); [`RegisterError::AlreadyRegistered`] when `event` already has a handler.
    pub fn register_event_handler(
        &self,
        event: impl Into<String>,
        options: HandlerOptions,
    ) -> Result<EventHandler, RegisterError> {
        let event = event.into();
        if let Some(reason) = frame::invalid_event_name(&event) {
            return Err(RegisterError::InvalidEventName {
                name: event,
                reason,
            });
        }
        let mut handlers = write(&self.inner.handlers);
        if handlers.contains_key(event.as_str()) {
            return Err(RegisterError::AlreadyRegistered { name: event });
        }
        let event: Arc<str> = event.into();
        let handler = EventHandler::new(event.clone(), options, &self.inner);
        handlers.insert(event, handler.clone());
        Ok(handler)
    }

    /// The handler registered for `event`, if any.
    pub fn handler(&self, event: &str) -> Option<EventHandler> {
        self.inner.handler(event)
    }

    /// Sends `message` as an `event` message to the connection with `client_id` alone, on
    /// whichever node of the cluster it is open (this server when there is no
    /// [broker](ServerBuilder::broker)), if that connection listens to `event`. A `clientId`
    /// with no open connection is not an error: the message goes nowhere.
    ///
    /// # Errors
    ///
    /// As [`EventHandler::send`]: the message cannot be serialized, is too large, or the broker
    /// cannot take it now.
    pub fn send_to_client<M: Serialize + ?Sized>(
        &self,
        client_id: &str,
        event: &str,
        message: &M,
    ) -> Result<(), SendError> {
        let payload = message::to_payload(message).map_err(SendError::Serialize)?;
        self.inner.limits.check_message(&payload)?;
        match &self.inner.broker {
            Some(broker) => broker.send_to_client(client_id, event, &payload)?,
            None => {
                self.inner.deliver_to_client(client_id, event, &payload);
            }
        }
        Ok(())
    }

    /// Closes the connection with `client_id`, on whichever node of the cluster it is open
    /// (`conn:close` there, with [`CloseReason::Disconnected`]). The official client reconnects
    /// after a while, as after any ended stream; refuse it in `authorize` to keep it out.
    ///
    /// # Errors
    ///
    /// When the broker cannot take the command now.
    pub fn disconnect(&self, client_id: &str) -> Result<(), BrokerError> {
        match &self.inner.broker {
            Some(broker) => broker.disconnect(client_id),
            None => {
                self.inner
                    .close_client(client_id, CloseReason::Disconnected);
                Ok(())
            }
        }
    }

    /// Subscribes to lifecycle notifications, from now on. Raising a notification never waits
    /// for a subscriber (each has its own queue); with no subscriber, errors are logged through
    /// `tracing` and nothing else happens.
    pub fn subscribe(&self) -> Notifications {
        self.inner.notifier.subscribe()
    }

    /// Whether `path` is this server's SSE path; a cheap check for middleware.
    pub fn matches(&self, path: &str) -> bool {
        self.inner.path.matches(path)
    }

    /// The number of open connections.
    pub fn connection_count(&self) -> usize {
        lock(&self.inner.connections).live.len()
    }

    /// Drains the server: from now on new streams are refused with `503` and `Retry-After`
    /// (the official client backs off and reconnects, to another instance or to this one once it
    /// is back), and the open streams are closed, spread evenly over `grace`, each raising
    /// `conn:close` once. Returns when every stream is closed, at most about `grace` later.
    /// Sending keeps working meanwhile, to the streams still open.
    ///
    /// The spreading matters: the official client reconnects at once when a `200` stream ends,
    /// so closing thousands of streams in the same instant sends them all back in the same
    /// instant, to whichever instance the balancer picks. `Duration::ZERO` closes them all now.
    ///
    /// A browser's native `EventSource` reconnects by itself when a stream ends, but treats a
    /// `503` as final: a page that uses it directly should reopen it after an `error` event with
    /// `readyState === EventSource.CLOSED` (the demo in `examples/` shows how).
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        let serials: Vec<u64> = lock(&self.inner.connections).live.keys().copied().collect();
        // Close them at an even pace, checked every DRAIN_TICK, the last one at 90 % of `grace`.
        let spread = grace.mul_f64(0.9).as_secs_f64();
        let started = tokio::time::Instant::now();
        let mut ticker = tokio::time::interval(DRAIN_TICK);
        let mut closed = 0;
        while closed < serials.len() {
            ticker.tick().await;
            let elapsed = started.elapsed().as_secs_f64();
            let due = if spread > 0.0 {
                ((elapsed / spread * serials.len() as f64) as usize + 1).min(serials.len())
            } else {
                serials.len()
            };
            self.close_batch(&serials[closed..due.max(closed)]);
            closed = due.max(closed);
        }
        // Anything that slipped in while the first batch was collected.
        self.close_all();
    }

    fn close_batch(&self, serials: &[u64]) {
        for &serial in serials {
            self.inner
                .close_connection(serial, CloseReason::ServerClosed);
        }
    }

    /// Whether [`Server::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// Closes every open connection now (each raises `conn:close` once). Unlike
    /// [`Server::shutdown`], new connections are still accepted.
    pub fn close_all(&self) {
        let mut connections = lock(&self.inner.connections);
        connections.by_client.clear();
        let closed: Vec<_> = connections.live.drain().collect();
        for (serial, connection) in closed {
            self.inner
                .finish_close(serial, connection, CloseReason::ServerClosed);
        }
    }

    /// Serves one request: the entry point of every adapter.
    ///
    /// Not the SSE path: [`Outcome::NotOurs`]. `GET` with a valid query: [`Outcome::Stream`]
    /// with the SSE headers. `HEAD`: the same headers without a stream. Anything else, or a bad
    /// query: [`Outcome::Reply`] with the status and JSON body of the [`ConnectRejection`].
    pub async fn handle(&self, request: RequestHead<'_>) -> Outcome {
        if !self.matches(request.uri.path()) {
            return Outcome::NotOurs;
        }
        // CORS first: a preflight is answered here only when CORS is configured; a page from an
        // origin that is not allowed gets nothing else.
        let origin = match &self.inner.cors {
            None if request.method == Method::OPTIONS => return Outcome::NotOurs,
            None => None,
            Some(cors) => match cors.check(request.headers) {
                Err(()) => return self.inner.reject(ConnectRejection::OriginNotAllowed),
                Ok(Some(origin)) if request.method == Method::OPTIONS => {
                    return Outcome::Reply(cors.preflight(origin, request.headers));
                }
                Ok(origin) => origin.map(|o| (cors, o)),
            },
        };
        let result = match *request.method {
            Method::GET => self.open_stream(request).await.map(Outcome::Stream),
            Method::HEAD => self
                .inner
                .parse(&request)
                .map(|_| Outcome::Reply(stream_response(request.version, Bytes::new()))),
            _ => Err(ConnectRejection::MethodNotAllowed {
                method: request.method.to_string(),
            }),
        };
        let mut outcome = result.unwrap_or_else(|rejection| self.inner.reject(rejection));
        if let Some((cors, origin)) = origin {
            let headers = match &mut outcome {
                Outcome::Reply(response) => response.headers_mut(),
                Outcome::Stream(response) => response.headers_mut(),
                Outcome::NotOurs => return outcome,
            };
            cors.decorate(origin, headers);
        }
        outcome
    }

    async fn open_stream(
        &self,
        request: RequestHead<'_>,
    ) -> Result<Response<ConnectionStream>, ConnectRejection> {
        let limits = &self.inner.limits;
        let sink = Arc::new(QueueSink::new(
            frame::OPENING,
            limits.max_buffer_bytes,
            limits.max_buffer_frames,
            self.inner.metrics.tracks_send_lag(),
        ));
        let connection = self.connect(request, sink.clone()).await?;
        Ok(stream_response(
            request.version,
            ConnectionStream::new(sink, connection),
        ))
    }

    /// Opens a connection that delivers into `sink`, for transports other than an HTTP
    /// response body (and for tests); [`Server::handle`] is this with the production sink.
    ///
    /// The connection joins a room of every handler among its `events` (unknown events are
    /// ignored), replaces any open connection with the same `clientId`, starts the handlers'
    /// `fetch`es, and raises `conn:create`. It lives until the returned [`Connection`] is dropped
    /// or the server closes it.
    ///
    /// # Errors
    ///
    /// A [`ConnectRejection`] when the path is not the SSE path, the query is missing `clientId`
    /// or `events` or cannot be decoded, or a `get_room_id` panicked.
    pub async fn connect(
        &self,
        request: RequestHead<'_>,
        sink: Arc<dyn SseSink>,
    ) -> Result<Connection, ConnectRejection> {
        let parsed = self.inner.parse(&request)?;
        if self.is_shutting_down() {
            return Err(ConnectRejection::ShuttingDown);
        }
        let handlers: Vec<EventHandler> = {
            let registered = read(&self.inner.handlers);
            let mut handlers: Vec<EventHandler> = Vec::with_capacity(parsed.events.len());
            for event in &parsed.events {
                if let Some(handler) = registered.get(event.as_str()) {
                    handlers.push(handler.clone());
                }
            }
            handlers
        };
        let client_id: Arc<str> = parsed.client_id.as_str().into();
        let mut context = Context::new(
            parsed.client_id,
            parsed.params,
            parsed.query,
            request.headers.clone(),
        );
        if let Some(authorize) = &self.inner.authorize {
            // The call itself runs inside the first poll, so a panic in it is caught as well.
            let (authorize, asked) = (authorize.clone(), context.clone());
            let deciding = CatchUnwind(Box::pin(async move { authorize(asked).await }));
            let grant = match deciding.await {
                Ok(Ok(grant)) => grant,
                Ok(Err(refusal)) => return Err(refused(refusal, None)),
                Err(message) => {
                    self.inner.notify_error(ConnectionError::Panicked {
                        callback: "authorize",
                        event: None,
                        client_id: client_id.clone(),
                        message,
                    });
                    return Err(ConnectRejection::Internal {
                        callback: "authorize",
                    });
                }
            };
            context = context.with_grant(grant);
        }
        let principal = context.grant().principal_arc();

        let mut rooms = Vec::with_capacity(handlers.len());
        for handler in handlers {
            match catch_unwind(AssertUnwindSafe(|| handler.room_id(&context))) {
                Ok(Err(refusal)) => return Err(refused(refusal, Some(handler.event()))),
                Ok(Ok(room)) if room.len() > self.inner.limits.max_room_id_bytes => {
                    return Err(ConnectRejection::RoomIdTooLong {
                        event: handler.event().to_owned(),
                        limit: self.inner.limits.max_room_id_bytes,
                    });
                }
                Ok(Ok(room)) => rooms.push((handler, Arc::<str>::from(room))),
                Err(panic) => {
                    self.inner.notify_error(ConnectionError::Panicked {
                        callback: "get_room_id",
                        event: Some(handler.event_arc().clone()),
                        client_id: client_id.clone(),
                        message: panic_message(&*panic),
                    });
                    return Err(ConnectRejection::Internal {
                        callback: "get_room_id",
                    });
                }
            }
        }

        // A position to resume from, when the client names one: an `EventSource` reconnecting
        // sends `Last-Event-ID`, polyfills a `lastEventId` query parameter. An id that is not
        // one of ours counts as a position that cannot be filled.
        let named = request
            .headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .or_else(|| context.query("lastEventId"))
            .map(Position::parse);
        // With a broker that keeps the cluster's history, positions come from it, and so does
        // where the official client's clientId left off, on whichever node that was.
        let history_on = rooms.iter().any(|(handler, _)| handler.history().is_some());
        let shared = self
            .inner
            .broker
            .as_ref()
            .and_then(|broker| broker.history())
            .filter(|_| history_on);
        let recalled = match (shared, named) {
            (Some(shared), None) => shared.recall(&client_id).await.ok().flatten(),
            _ => None,
        };
        let serial = self.inner.next_serial.fetch_add(1, Ordering::Relaxed);
        let span = match cfg!(feature = "connection-spans") {
            true => tracing::info_span!("sseio.connection", client_id = &*client_id, serial),
            false => tracing::Span::none(),
        };
        let seen = Arc::new(Seen::default());
        let mut holds = Vec::new();
        let mut replaying = Vec::new();
        let resume_at;
        {
            // Joining, replacing and announcing happen under the connections lock, as every
            // close does, so notifications about one clientId are always raised in order.
            let mut connections = lock(&self.inner.connections);
            if self.is_shutting_down() {
                return Err(ConnectRejection::ShuttingDown);
            }
            let replacing = connections.by_client.get(&client_id).copied();
            if let Some(old) = replacing
                && self.inner.same_principal_takeover
                && connections.live.get(&old).map(|c| &c.principal) != Some(&principal)
            {
                return Err(ConnectRejection::Forbidden {
                    message: "this clientId is in use by another principal".to_owned(),
                });
            }
            if let Some(max) = self.inner.limits.max_connections
                && connections.live.len() >= max
                && replacing.is_none()
            {
                return Err(ConnectRejection::TooManyConnections);
            }
            // With this server's own history, joining happens under the history lock: no
            // message can be numbered between the replay and the join.
            let histories = (history_on && shared.is_none()).then(|| lock(&self.inner.histories));
            let replaced = replacing
                .and_then(|old| connections.live.get(&old))
                .and_then(|old| old.seen.get());
            let left = match &histories {
                Some(_) => lock(&self.inner.resumes).take(&client_id),
                None => recalled,
            };
            let from = match history_on {
                true => named.or(replaced.or(left).map(Some)),
                false => None,
            };
            resume_at = from.flatten();
            if let Some(histories) = &histories {
                seen.set(histories.now());
            }
            for (handler, room) in &rooms {
                let joined = match (handler.history(), &histories, from) {
                    (Some(history), Some(histories), Some(Some(from))) => {
                        match histories.replay(handler.event_arc(), room, from, history) {
                            Some(frames) => {
                                for frame in frames {
                                    self.inner.metrics.sent(1, frame.len());
                                    let _ = sink.send(frame);
                                }
                                Joined::Resumed
                            }
                            None => Joined::Resync,
                        }
                    }
                    // Decided when the broker answers; held back meanwhile.
                    (Some(_), None, Some(Some(_))) => Joined::Replaying,
                    (Some(_), _, Some(None)) => Joined::Resync,
                    _ => Joined::Fresh,
                };
                self.inner.metrics.joined(joined);
                let hold = (joined == Joined::Replaying
                    || (handler.fetch().is_some() && joined != Joined::Resumed))
                    .then(|| Arc::new(Hold::new(self.inner.limits.max_buffer_bytes)));
                match (&hold, joined) {
                    (Some(hold), Joined::Replaying) => {
                        replaying.push((handler.clone(), room.clone(), hold.clone()));
                    }
                    (Some(hold), _) => {
                        holds.push((handler.clone(), hold.clone(), joined == Joined::Resync));
                    }
                    (None, _) => {}
                }
                let member = Member {
                    client_id: client_id.clone(),
                    seen: seen.clone(),
                    sink: sink.clone(),
                    hold,
                };
                handler.join(room, serial, member);
            }
            drop(histories);
            connections.by_client.insert(client_id.clone(), serial);
            // The old stream leaves after the new one joined, so shared rooms stay open.
            if let Some((old, live)) =
                replacing.and_then(|old| connections.live.remove(&old).map(|c| (old, c)))
            {
                self.inner.finish_close(old, live, CloseReason::Replaced);
            }
            connections.live.insert(
                serial,
                LiveConnection {
                    client_id: client_id.clone(),
                    principal: principal.clone(),
                    sink: sink.clone(),
                    rooms,
                    fetches: Vec::new(),
                    seen: seen.clone(),
                    span: span.clone(),
                },
            );
            self.inner.metrics.opened();
            span.in_scope(|| tracing::debug!("sseio connection opened"));
            self.inner.notifier.notify(Notification::ConnCreate {
                client_id: client_id.clone(),
                principal,
            });
        }
        if let Some(broker) = &self.inner.broker {
            // Outside the connections lock: a broker may close this clientId on other servers
            // of this process (MemoryBroker), which take their own locks.
            broker.client_connected(&client_id, ConnectionId(serial));
        }
        self.inner.start_heartbeat();

        let mut tasks: Vec<AbortHandle> = holds
            .into_iter()
            .map(|(handler, hold, resync)| {
                let task = run_fetch(
                    Arc::downgrade(&self.inner),
                    handler,
                    context.for_fetch(resync),
                    serial,
                    sink.clone(),
                    hold,
                );
                tokio::spawn(task.instrument(span.clone())).abort_handle()
            })
            .collect();
        if let Some(shared) = shared {
            let asked = replaying
                .iter()
                .filter_map(|(handler, room, _)| {
                    Some(ReplayRoom {
                        event: handler.event_arc().clone(),
                        room: room.clone(),
                        history: handler.history()?,
                    })
                })
                .collect();
            let from = resume_at.filter(|_| !replaying.is_empty());
            let answer = shared.replay(asked, from);
            let resume = resume_from_broker(
                Arc::downgrade(&self.inner),
                answer,
                from,
                replaying,
                Resuming {
                    context: context.clone(),
                    serial,
                    sink: sink.clone(),
                    seen,
                },
            );
            tasks.push(tokio::spawn(resume.instrument(span)).abort_handle());
        }
        if !tasks.is_empty() {
            let mut connections = lock(&self.inner.connections);
            match connections.live.get_mut(&serial) {
                Some(live) => live.fetches = tasks,
                None => tasks.iter().for_each(AbortHandle::abort),
            }
        }
        Ok(Connection::new(self.inner.clone(), serial, client_id))
    }
}

/// The connection a replay from the broker's history is for.
struct Resuming {
    context: Context,
    serial: u64,
    sink: Arc<dyn SseSink>,
    seen: Arc<Seen>,
}

/// Finishes joining a connection's rooms with the broker's history, once it answers: each room
/// held back for a replay gets its missed messages and then the held live ones, or (when its
/// gap cannot be filled, or the broker cannot answer) its `fetch` as a resync. The connection
/// stands where the cluster's sequence stood at the answer.
async fn resume_from_broker(
    server: Weak<ServerInner>,
    answer: crate::broker::BoxFuture<Result<Replay, BrokerError>>,
    from: Option<Position>,
    replaying: Vec<(EventHandler, Arc<str>, Arc<Hold>)>,
    resuming: Resuming,
) {
    let answer = answer.await;
    let Some(inner) = server.upgrade() else {
        return;
    };
    let replay = match answer {
        Ok(replay) => {
            resuming.seen.advance(replay.now);
            replay.rooms
        }
        Err(error) => {
            if !replaying.is_empty() {
                inner.notify_error(ConnectionError::Broker(error));
            }
            Vec::new()
        }
    };
    let mut fetches = Vec::new();
    let mut replay = replay.into_iter();
    for (handler, _room, hold) in replaying {
        let missed = replay.next().flatten();
        let outcome = match (missed, from) {
            (Some(missed), Some(from)) => {
                let floor = Position {
                    offset: missed.last().map_or(from.offset, |(offset, _)| *offset),
                    ..from
                };
                let frames: Vec<Bytes> = missed
                    .iter()
                    .map(|(offset, payload)| {
                        let at = Position {
                            offset: *offset,
                            ..from
                        };
                        frame::encode_with_id(&at.to_string(), handler.event(), payload)
                    })
                    .collect();
                inner.metrics.joined(Joined::Resumed);
                for frame in &frames {
                    inner.metrics.sent(1, frame.len());
                }
                hold.release(&*resuming.sink, frames, Some(floor))
            }
            _ if handler.fetch().is_some() => {
                inner.metrics.joined(Joined::Resync);
                let task = run_fetch(
                    server.clone(),
                    handler,
                    resuming.context.for_fetch(true),
                    resuming.serial,
                    resuming.sink.clone(),
                    hold,
                );
                let span = tracing::Span::current();
                fetches.push(tokio::spawn(task.instrument(span)).abort_handle());
                Ok(())
            }
            _ => {
                inner.metrics.joined(Joined::Resync);
                hold.release(&*resuming.sink, None, None)
            }
        };
        if outcome == Err(SinkError::Full) {
            inner.close_connection(resuming.serial, CloseReason::SlowConsumer);
        }
    }
    if !fetches.is_empty() {
        let mut connections = lock(&inner.connections);
        match connections.live.get_mut(&resuming.serial) {
            Some(live) => live.fetches.extend(fetches),
            None => fetches.iter().for_each(AbortHandle::abort),
        }
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("path", &self.inner.path)
            .field("heartbeat_interval", &self.inner.heartbeat_interval)
            .field("limits", &self.inner.limits)
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

impl ServerInner {
    pub(crate) fn handler(&self, event: &str) -> Option<EventHandler> {
        read(&self.handlers).get(event).cloned()
    }

    /// Delivers a payload as an `event` message to this server's connection with `client_id`,
    /// through its membership in that event's room (so a running `fetch` still goes first).
    pub(crate) fn deliver_to_client(&self, client_id: &str, event: &str, payload: &str) -> bool {
        let (serial, delivered) = {
            let connections = lock(&self.connections);
            let Some(&serial) = connections.by_client.get(client_id) else {
                return false;
            };
            let Some((handler, room)) = connections.live.get(&serial).and_then(|live| {
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
            self.close_connection(serial, CloseReason::SlowConsumer);
        }
        delivered.is_ok()
    }

    /// Closes this server's connection with `client_id`, if any.
    pub(crate) fn close_client(&self, client_id: &str, reason: CloseReason) -> bool {
        let serial = lock(&self.connections).by_client.get(client_id).copied();
        match serial {
            Some(serial) => {
                self.close_connection(serial, reason);
                true
            }
            None => false,
        }
    }

    /// Every `(event, room)` with at least one connection.
    pub(crate) fn rooms(&self) -> Vec<(Arc<str>, Arc<str>)> {
        read(&self.handlers)
            .values()
            .flat_map(|handler| {
                let event = handler.event_arc().clone();
                handler
                    .room_arcs()
                    .into_iter()
                    .map(move |room| (event.clone(), room))
            })
            .collect()
    }

    fn parse(&self, request: &RequestHead<'_>) -> Result<Parsed, ConnectRejection> {
        let params = self
            .path
            .params(request.uri.path())
            .ok_or(ConnectRejection::NotFound)??;
        let query = parse_query(request.uri.query().unwrap_or(""))?;
        let client_id = query
            .iter()
            .find(|(k, v)| k == "clientId" && !v.is_empty())
            .map(|(_, v)| v.clone())
            .ok_or(ConnectRejection::MissingClientId)?;
        let events: Vec<String> = query
            .iter()
            .filter(|(k, v)| k == "events" && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect();
        if events.is_empty() {
            return Err(ConnectRejection::MissingEvents);
        }
        let mut distinct: Vec<String> = Vec::with_capacity(events.len());
        for event in events {
            if !distinct.contains(&event) {
                distinct.push(event);
            }
        }
        let events = distinct;
        if events.len() > self.limits.max_events {
            return Err(ConnectRejection::TooManyEvents {
                count: events.len(),
                limit: self.limits.max_events,
            });
        }
        if client_id.len() > self.limits.max_client_id_bytes {
            return Err(ConnectRejection::ClientIdTooLong {
                limit: self.limits.max_client_id_bytes,
            });
        }
        Ok(Parsed {
            client_id,
            events,
            params,
            query,
        })
    }

    /// Closes connection `serial` if it is still open: the one close path for every cause.
    pub(crate) fn close_connection(&self, serial: u64, reason: CloseReason) {
        let mut connections = lock(&self.connections);
        let Some(live) = connections.live.remove(&serial) else {
            return;
        };
        if connections.by_client.get(&live.client_id) == Some(&serial) {
            connections.by_client.remove(&live.client_id);
        }
        self.finish_close(serial, live, reason);
    }

    /// The rest of a close, once the connection is out of the table (so it runs once). Called
    /// with the connections lock held, so that it is ordered with every join.
    fn finish_close(&self, serial: u64, live: LiveConnection, reason: CloseReason) {
        let _span = live.span.clone().entered();
        let draining = self.shutting_down.load(Ordering::Relaxed);
        self.metrics.closed(reason, draining);
        tracing::debug!(%reason, "sseio connection closed");
        live.sink.close(reason);
        for fetch in &live.fetches {
            fetch.abort();
        }
        for (handler, room) in &live.rooms {
            handler.leave(room, serial);
        }
        if let Some(broker) = &self.broker {
            broker.client_closed(&live.client_id, ConnectionId(serial));
        }
        // Where it stood, for the official client's reconnect with the same clientId. A replaced
        // stream's successor has taken over its position already.
        if reason != CloseReason::Replaced
            && let Some(at) = live.seen.get()
        {
            match self.broker.as_ref().and_then(|broker| broker.history()) {
                Some(shared) => shared.remember(&live.client_id, at, self.resume_ttl),
                None => lock(&self.resumes).insert(live.client_id.clone(), at, self.resume_ttl),
            }
        }
        if reason == CloseReason::SlowConsumer {
            self.notify_error(ConnectionError::SlowConsumer {
                client_id: live.client_id.clone(),
                limit: self.limits.max_buffer_bytes,
            });
        }
        self.notifier.notify(Notification::ConnClose {
            client_id: live.client_id,
            principal: live.principal,
            reason,
        });
    }

    /// The answer to a refused request, counted by status.
    fn reject(&self, rejection: ConnectRejection) -> Outcome {
        self.metrics.rejected(rejection.status());
        Outcome::Reply(rejection.into_response())
    }

    pub(crate) fn notify_error(&self, error: ConnectionError) {
        self.notifier.notify(Notification::Error(Arc::new(error)));
    }

    /// Starts the one heartbeat timer of this server, on the runtime of its first connection.
    fn start_heartbeat(self: &Arc<Self>) {
        let period = self.heartbeat_interval;
        if period.is_zero() {
            return;
        }
        self.heartbeat_started.call_once(|| {
            let server = Arc::downgrade(self);
            tokio::spawn(async move {
                let start = tokio::time::Instant::now() + period;
                let mut ticker = tokio::time::interval_at(start, period);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    let Some(server) = server.upgrade() else {
                        break;
                    };
                    server.beat();
                }
            });
        });
    }

    /// Queues one heartbeat on every open connection, and drops expired history.
    fn beat(&self) {
        if self.history.is_some() || read(&self.handlers).values().any(|h| h.history().is_some()) {
            let handlers = read(&self.handlers);
            lock(&self.histories).sweep(|event| handlers.get(event)?.history().map(|h| h.ttl));
            lock(&self.resumes).sweep();
        }
        let mut slow = Vec::new();
        {
            let connections = lock(&self.connections);
            for (&serial, live) in &connections.live {
                if live.sink.send(frame::HEARTBEAT) == Err(SinkError::Full) {
                    slow.push(serial);
                }
            }
            let beats = connections.live.len() - slow.len();
            self.metrics.heartbeats_sent.increment(beats as u64);
        }
        for serial in slow {
            self.close_connection(serial, CloseReason::SlowConsumer);
        }
    }
}

/// The response head of an SSE stream, as the official client requires it.
fn stream_response<B>(version: Version, body: B) -> Response<B> {
    let mut response = Response::new(body);
    let headers: &mut HeaderMap = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    headers.insert(
        header::HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    if version == Version::HTTP_11 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    }
    response
}

/// The rejection for a refusal by `authorize` (no event) or by one event's `get_room_id`.
fn refused(refusal: Refusal, event: Option<&str>) -> ConnectRejection {
    let message = match event {
        Some(event) => format!("event '{event}' refused: {refusal}"),
        None => refusal.to_string(),
    };
    match refusal {
        Refusal::Unauthorized(_) => ConnectRejection::Unauthorized { message },
        Refusal::Forbidden(_) => ConnectRejection::Forbidden { message },
    }
}
