//! The server: a small facade over the [hub](crate::hub) of its connections, its handlers, and
//! the connect [pipeline](crate::connect).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, header};
use serde::Serialize;

use crate::auth::AuthorizeFn;
use crate::broker::{Broker, BrokerError, ConnectionId, HistoryStore, LocalNode, Node};
use crate::builder::{Limits, ServerBuilder};
use crate::connect;
use crate::connection::{Connection, ConnectionStream, stream_response};
use crate::cors::Cors;
use crate::error::{BuildError, ConnectionError, RegisterError, SendError};
use crate::frame;
use crate::handler::{EventHandler, HandlerEnv, HandlerOptions};
use crate::history::LocalHistory;
use crate::hub::{Admission, Ending, Hub};
use crate::message;
use crate::metrics::Metrics;
use crate::notify::{CloseReason, Notification, Notifications, Notifier};
use crate::pacing::Pacing;
use crate::position::Seen;
use crate::quota::Quotas;
use crate::rejection::ConnectRejection;
use crate::request::{PathPattern, RequestHead};
use crate::sink::{QueueSink, SinkError, SseSink};
use crate::sync::{read, write};
use crate::upkeep::Upkeep;

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

/// What a server is made of, shared by its handles, its connections and its broker's [`Node`].
pub(crate) struct ServerInner {
    path: PathPattern,
    limits: Limits,
    cors: Option<Cors>,
    authorize: Option<Arc<AuthorizeFn>>,
    admission: Admission,
    handlers: RwLock<HashMap<Arc<str>, EventHandler>>,
    /// What every handler shares with the server.
    handler_env: HandlerEnv,
    hub: Arc<Hub>,
    upkeep: Upkeep,
    pacing: Pacing,
    max_stream_lifetime: Option<Duration>,
    /// The event name of the gap notice, if on.
    gap_notice: Option<Arc<str>>,
    /// The query parameter a stream may resume from.
    resume_query_param: Box<str>,
}

/// How often [`Server::shutdown`] closes the streams that are due.
const DRAIN_TICK: Duration = Duration::from_millis(10);

impl Server {
    pub(crate) fn from_builder(
        path: PathPattern,
        builder: ServerBuilder,
    ) -> Result<Self, BuildError> {
        let notifier = Arc::new(Notifier::new(builder.notification_capacity));
        let metrics = Arc::new(Metrics::new(builder.send_lag_metric));
        let local_history = Arc::new(LocalHistory::new());
        let hub = Arc::new(Hub::new(
            notifier.clone(),
            metrics.clone(),
            builder.broker.clone(),
            local_history.clone(),
            builder.resume_ttl,
            builder.limits.max_buffer_bytes,
            Quotas::new(
                builder.limits.max_streams_per_principal,
                builder.limits.max_streams_per_address,
            ),
        ));
        let handler_env = HandlerEnv {
            hub: Arc::downgrade(&hub),
            notifier,
            metrics,
            broker: builder.broker,
            local_history,
            history: builder.history,
            max_message_bytes: builder.limits.max_message_bytes,
        };
        let inner = Arc::new(ServerInner {
            path,
            admission: Admission {
                same_principal_takeover: builder
                    .same_principal_takeover
                    .unwrap_or(builder.authorize.is_some()),
                max_connections: builder.limits.max_connections,
            },
            limits: builder.limits,
            cors: builder.cors,
            authorize: builder.authorize,
            handlers: RwLock::new(HashMap::new()),
            handler_env,
            hub,
            upkeep: Upkeep::new(builder.heartbeat_interval),
            pacing: Pacing::new(builder.reconnect_delay, builder.reconnect_spread),
            max_stream_lifetime: builder.max_stream_lifetime,
            gap_notice: builder.gap_notice.map(Arc::from),
            resume_query_param: builder.resume_query_param.into(),
        });
        if let Some(broker) = inner.broker() {
            let local: Arc<dyn LocalNode> = inner.clone();
            broker
                .attach(Node::new(Arc::downgrade(&local)))
                .map_err(BuildError::Broker)?;
        }
        Ok(Server { inner })
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
        let handler = EventHandler::new(event.clone(), options, self.inner.handler_env.clone());
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
        match self.inner.broker() {
            Some(broker) => broker.send_to_client(client_id, event, &payload)?,
            None => {
                self.inner.hub.deliver_to_client(client_id, event, &payload);
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
        match self.inner.broker() {
            Some(broker) => broker.disconnect(client_id),
            None => {
                self.inner
                    .hub
                    .close_client(client_id, CloseReason::Disconnected);
                Ok(())
            }
        }
    }

    /// Subscribes to lifecycle notifications, from now on. Raising a notification never waits
    /// for a subscriber: each may fall
    /// [`notification_capacity`](ServerBuilder::notification_capacity) behind, and past that
    /// gets [`Notification::Lagged`] in place of the oldest it missed. With no subscriber,
    /// errors are logged through `tracing` and nothing else happens.
    pub fn subscribe(&self) -> Notifications {
        self.inner.handler_env.notifier.subscribe()
    }

    /// Whether `path` is this server's SSE path; a cheap check for middleware.
    pub fn matches(&self, path: &str) -> bool {
        self.inner.path.matches(path)
    }

    /// The number of open connections.
    pub fn connection_count(&self) -> usize {
        self.inner.hub.len()
    }

    /// Drains the server: from now on new streams are refused with `503` and `Retry-After`
    /// (the official client backs off and reconnects, to another instance or to this one once it
    /// is back), and the open streams are closed, spread evenly over `grace`, each raising
    /// `conn:close` once. Returns when every stream is closed and the
    /// [broker](ServerBuilder::broker), if any, has handed on what the closes queued (where
    /// each stream stood, for its client to resume on another node; see [`Broker::flush`]):
    /// about `grace` later, plus at most the broker's timeout. Sending keeps working meanwhile,
    /// to the streams still open.
    ///
    /// The spreading matters: the official client reconnects at once when a `200` stream ends,
    /// so closing thousands of streams in the same instant sends them all back in the same
    /// instant, to whichever instance the balancer picks. `Duration::ZERO` closes them all now.
    ///
    /// A browser's native `EventSource` reconnects by itself when a stream ends, but treats a
    /// `503` as final. So each stream closed here ends with a `retry:` field that tells it to
    /// wait for the rest of `grace`, plus the [reconnect delay](ServerBuilder::reconnect_delay):
    /// by then this server has stopped accepting, and the `EventSource` reaches its successor,
    /// or finds the port closed, which it retries as a network error. Only an `EventSource`
    /// opened while the server drains gets a `503` and stays closed: a page should reopen it
    /// after an `error` event with `readyState === EventSource.CLOSED`.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.hub.start_draining();
        let serials = self.inner.hub.serials();
        // Close them at an even pace, checked every DRAIN_TICK, the last one at 90 % of `grace`.
        let spread = grace.mul_f64(0.9).as_secs_f64();
        let started = tokio::time::Instant::now();
        let mut ticker = tokio::time::interval(DRAIN_TICK);
        let mut closed = 0;
        while closed < serials.len() {
            ticker.tick().await;
            let elapsed = started.elapsed();
            let due = if spread > 0.0 {
                ((elapsed.as_secs_f64() / spread * serials.len() as f64) as usize + 1)
                    .min(serials.len())
            } else {
                serials.len()
            };
            let rest_of_grace = grace.saturating_sub(elapsed);
            for &serial in &serials[closed..due.max(closed)] {
                let retry = frame::retry(rest_of_grace + self.inner.pacing.next_delay());
                self.inner
                    .hub
                    .close_with(serial, CloseReason::ServerClosed, Ending::With(retry));
            }
            closed = due.max(closed);
        }
        // Anything that slipped in while the first batch was collected.
        self.close_all();
        // The closes queued their resume records with the broker; the process may exit next.
        if let Some(broker) = self.inner.broker() {
            broker.flush().await;
        }
    }

    /// Whether this server should be sent new clients: it is not draining, and its
    /// [broker](ServerBuilder::broker), if any, is [available](Broker::is_available). What an
    /// orchestrator's readiness probe asks (the standalone server of `sseio-hyper` answers it on
    /// a path of its own); a server that is not ready still serves its open streams.
    pub fn is_ready(&self) -> bool {
        !self.is_shutting_down()
            && self
                .inner
                .broker()
                .is_none_or(|broker| broker.is_available())
    }

    /// Whether [`Server::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.hub.is_draining()
    }

    /// Closes every open connection now (each raises `conn:close` once). Unlike
    /// [`Server::shutdown`], new connections are still accepted.
    pub fn close_all(&self) {
        self.inner.hub.close_all(CloseReason::ServerClosed);
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
            Method::HEAD => connect::parse(&request, &self.inner.path, &self.inner.limits)
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
            frame::opening(self.inner.pacing.next_delay()),
            limits.max_buffer_bytes,
            limits.max_buffer_frames,
            self.inner.metrics().tracks_send_lag(),
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
    /// `fetch`es, and raises `conn:create`. It lives until the returned [`Connection`] is dropped,
    /// the server closes it, or `sink` says it [closed](SseSink::is_closed) at a heartbeat.
    ///
    /// # Errors
    ///
    /// A [`ConnectRejection`], with its HTTP status: the path is not the SSE path (`404`); the
    /// query is missing `clientId` or `events`, cannot be decoded, or passes a limit (`400`);
    /// `authorize` or a `get_room_id` refused it (`401`/`403`) or panicked (`500`); the server
    /// is draining or full (`503`); the `clientId` is another principal's (`403`, with
    /// [`ServerBuilder::takeover_requires_same_principal`]); its principal or address holds as
    /// many streams as it may (`429`).
    pub async fn connect(
        &self,
        request: RequestHead<'_>,
        sink: Arc<dyn SseSink>,
    ) -> Result<Connection, ConnectRejection> {
        let inner = &self.inner;
        let admitted = connect::admit(inner, &request).await?;
        let resume = connect::resume(inner, &request, &admitted).await;
        let client_id = admitted.client_id.clone();
        let span = connection_span(&client_id);
        let (serial, plan) = inner.hub.register(
            &client_id,
            &admitted.principal.clone(),
            request.client_addr,
            inner.admission,
            inner.stream_deadline(),
            |registering| {
                let span = span_with_serial(&span, registering.serial);
                connect::join(inner, admitted, resume, &sink, registering, span)
            },
        )?;
        if let Some(broker) = inner.broker() {
            // Outside the registry lock: a broker may close this clientId on other servers of
            // this process (MemoryBroker), which take their own locks.
            broker.client_connected(&client_id, ConnectionId(serial));
        }
        inner
            .upkeep
            .ensure_running(&inner.hub, &inner.handler_env.local_history);
        connect::follow_up(inner, serial, client_id.clone(), sink, span, plan);
        Ok(Connection::new(inner.clone(), serial, client_id))
    }
}

/// The `sseio.connection` span of a new connection, with the `connection-spans` feature.
fn connection_span(client_id: &str) -> tracing::Span {
    match cfg!(feature = "connection-spans") {
        true => tracing::info_span!(
            "sseio.connection",
            client_id,
            serial = tracing::field::Empty
        ),
        false => tracing::Span::none(),
    }
}

/// `span` with its connection's serial, once the registry gave it one.
fn span_with_serial(span: &tracing::Span, serial: u64) -> tracing::Span {
    span.record("serial", serial);
    span.clone()
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("path", &self.inner.path)
            .field("limits", &self.inner.limits)
            .field("upkeep", &self.inner.upkeep)
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

impl ServerInner {
    pub(crate) fn path(&self) -> &PathPattern {
        &self.path
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(crate) fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.handler_env.metrics
    }

    pub(crate) fn authorizer(&self) -> Option<Arc<AuthorizeFn>> {
        self.authorize.clone()
    }

    pub(crate) fn broker(&self) -> Option<&Arc<dyn Broker>> {
        self.handler_env.broker.as_ref()
    }

    /// The broker's history store, when it keeps the cluster's history.
    pub(crate) fn history_store(&self) -> Option<&dyn HistoryStore> {
        self.broker().and_then(|broker| broker.history_store())
    }

    /// This server's own history (used when the broker keeps none).
    pub(crate) fn local_history(&self) -> &LocalHistory {
        &self.handler_env.local_history
    }

    pub(crate) fn handler(&self, event: &str) -> Option<EventHandler> {
        read(&self.handlers).get(event).cloned()
    }

    /// Every `(event, room)` with a connection on this server.
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

    /// Raises a notification.
    pub(crate) fn notify(&self, notification: Notification) {
        self.handler_env.notifier.notify(notification);
    }

    /// Raises an `error` notification about one connection.
    pub(crate) fn report(&self, error: ConnectionError) {
        self.hub.report(error);
    }

    /// The answer to a refused request, counted by status.
    fn reject(&self, rejection: ConnectRejection) -> Outcome {
        self.metrics().rejected(rejection.status());
        let mut response = rejection.into_response();
        if let Some(retry_after) = response.headers_mut().get_mut(header::RETRY_AFTER) {
            let seconds = self.pacing.next_delay().as_secs_f64().ceil().max(1.0);
            *retry_after = HeaderValue::from(seconds as u64);
        }
        Outcome::Reply(response)
    }

    /// The query parameter a stream may name its resume position in.
    pub(crate) fn resume_query_param(&self) -> &str {
        &self.resume_query_param
    }

    /// Tells a connection, through its `sink`, that its resume of `event` could not be served,
    /// when the [gap notice](ServerBuilder::gap_notice) is on; whether it did. Marks `seen`
    /// as given something then: a stream that drops after the notice is told again.
    pub(crate) fn notify_gap(
        &self,
        sink: &dyn SseSink,
        seen: Option<&Seen>,
        event: &str,
    ) -> Result<(), SinkError> {
        let Some(name) = &self.gap_notice else {
            return Ok(());
        };
        let data = serde_json::json!({ "event": event }).to_string();
        let notice = frame::encode(name, &data);
        let len = notice.len();
        sink.send(notice)?;
        self.metrics().sent(1, len);
        if let Some(seen) = seen {
            seen.gave_some();
        }
        Ok(())
    }

    /// When a stream opened now is to close, with a
    /// [`max_stream_lifetime`](ServerBuilder::max_stream_lifetime): a moment in its lifetime's
    /// last fifth.
    pub(crate) fn stream_deadline(&self) -> Option<tokio::time::Instant> {
        let lifetime = self.max_stream_lifetime?;
        let share = 0.8 + 0.2 * self.pacing.next_fraction();
        Some(tokio::time::Instant::now() + lifetime.mul_f64(share))
    }
}
