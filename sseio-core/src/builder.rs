//! Configuring a server: its path, heartbeat and limits, each with a documented default.

use std::time::Duration;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::Context;
use crate::auth::{AuthorizeFn, Grant, Refusal, authorize_fn};
use crate::broker::Broker;
use crate::cors::Cors;
use crate::error::{BuildError, SendError};
use crate::frame;
use crate::history::{DEFAULT_RESUME_TTL, History};
use crate::request::PathPattern;
use crate::server::Server;

/// The default path pattern, as in the original server.
pub const DEFAULT_PATH: &str = "/sseio";
/// The default heartbeat interval, as in the original server.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// The default per-connection outgoing buffer limit: 1 MiB.
pub const DEFAULT_MAX_BUFFER_BYTES: usize = 1024 * 1024;
/// The default per-connection limit on frames queued: 8192.
pub const DEFAULT_MAX_BUFFER_FRAMES: usize = 8192;
/// The default limit on the events one connection subscribes to.
pub const DEFAULT_MAX_EVENTS: usize = 32;
/// The default limit on a `clientId`, in bytes.
pub const DEFAULT_MAX_CLIENT_ID_BYTES: usize = 128;
/// The default limit on a room id returned by `get_room_id`, in bytes.
pub const DEFAULT_MAX_ROOM_ID_BYTES: usize = 256;
/// The default limit on one message's payload: 512 KiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 512 * 1024;
/// The default least time a client is told to wait before it reconnects.
pub const DEFAULT_RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// The default spread added to [`DEFAULT_RECONNECT_DELAY`], a different part for each client.
pub const DEFAULT_RECONNECT_SPREAD: Duration = Duration::from_secs(3);
/// The default number of notifications a subscriber may fall behind.
pub const DEFAULT_NOTIFICATION_CAPACITY: usize = 1024;
/// The default time a `fetch` may take before it counts as failed.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The default name of the query parameter a stream may resume from
/// ([`ServerBuilder::resume_query_param`]).
pub const DEFAULT_RESUME_QUERY_PARAM: &str = "lastEventId";

/// The limits a server enforces.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) max_buffer_bytes: usize,
    pub(crate) max_buffer_frames: usize,
    pub(crate) max_events: usize,
    pub(crate) max_client_id_bytes: usize,
    pub(crate) max_room_id_bytes: usize,
    pub(crate) max_message_bytes: usize,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_streams_per_principal: Option<usize>,
    pub(crate) max_streams_per_address: Option<usize>,
    pub(crate) fetch_timeout: Duration,
}

impl Limits {
    /// Checks one message's payload against `max_message_bytes`.
    pub(crate) fn check_message(&self, payload: &str) -> Result<(), SendError> {
        if payload.len() > self.max_message_bytes {
            return Err(SendError::TooLarge {
                size: payload.len(),
                limit: self.max_message_bytes,
            });
        }
        Ok(())
    }
}

/// Configures a [`Server`]. Start with [`Server::builder`].
#[derive(Clone)]
#[must_use]
pub struct ServerBuilder {
    pub(crate) path: String,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) limits: Limits,
    pub(crate) cors: Option<Cors>,
    pub(crate) authorize: Option<Arc<AuthorizeFn>>,
    /// `None`: required exactly when there is an `authorize` hook.
    pub(crate) same_principal_takeover: Option<bool>,
    pub(crate) broker: Option<Arc<dyn Broker>>,
    pub(crate) history: Option<History>,
    pub(crate) resume_ttl: Duration,
    pub(crate) send_lag_metric: bool,
    pub(crate) notification_capacity: usize,
    pub(crate) reconnect_delay: Duration,
    pub(crate) reconnect_spread: Duration,
    pub(crate) max_stream_lifetime: Option<Duration>,
    pub(crate) gap_notice: Option<String>,
    pub(crate) resume_query_param: String,
}

impl ServerBuilder {
    /// The path pattern of the SSE endpoint, such as `/user/:userId/foo`: `:name` segments are
    /// path parameters (available as [`Context::param`](crate::Context::param)), a final `*name`
    /// matches the rest of the path. Default: `/sseio`.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// How long clients are told to wait before they reconnect: `delay` plus a part of `spread`
    /// that differs for every stream and every refusal, so that when a server restarts or
    /// drains its clients come back over `spread` instead of all in the same second. Each
    /// stream opens with an SSE `retry:` field of that many milliseconds, which an
    /// `EventSource` waits before it reconnects once the stream ends; each `503` (draining, or
    /// at [`max_connections`](ServerBuilder::max_connections)) carries it, rounded up to whole
    /// seconds, as `Retry-After`. Defaults: [`DEFAULT_RECONNECT_DELAY`] (1 s) and
    /// [`DEFAULT_RECONNECT_SPREAD`] (3 s).
    pub fn reconnect_delay(mut self, delay: Duration, spread: Duration) -> Self {
        self.reconnect_delay = delay;
        self.reconnect_spread = spread;
        self
    }

    /// Closes every stream after at most `lifetime`, each at a different moment in its last
    /// fifth (`conn:close` with [`CloseReason::Expired`](crate::CloseReason::Expired)), so that
    /// long-lived streams rebalance across nodes after a scale-out, as clients reconnect (after
    /// their [`reconnect_delay`](ServerBuilder::reconnect_delay)) through the load balancer.
    /// With history on, a client resumes where its stream ended and loses nothing. Checked once
    /// a second. Default: none, streams live as long as their clients.
    pub fn max_stream_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_stream_lifetime = Some(lifetime);
        self
    }

    /// Tells a client when its resume could not be served, so that it never misses messages
    /// without knowing: a reconnecting connection whose position is older than the history
    /// keeps (or unknown) first gets, for each of its events that cannot be resumed, an event
    /// named `event` whose data is `{"event":"<that event>"}`, ahead of anything else of that
    /// event (its `fetch`, run as a resync, or its next live message).
    ///
    /// A native `EventSource` listens with `addEventListener(event, ..)`; the official client
    /// surfaces only the events it subscribed to, so list `event` among its `events` (the
    /// server ignores an event without a handler when it opens the stream). Off by default:
    /// a resume that cannot be served then runs the `fetch` as a resync, and says nothing for
    /// an event without one.
    pub fn gap_notice(mut self, event: impl Into<String>) -> Self {
        self.gap_notice = Some(event.into());
        self
    }

    /// The query parameter a stream may name its resume position in, for a native
    /// `EventSource`'s first connect (it cannot set `Last-Event-ID` then) and for polyfills
    /// that cannot set headers. With history on, a page the server renders embeds
    /// [`EventHandler::position`](crate::EventHandler::position) and opens its stream with
    /// `?<name>=<position>`: it gets exactly the messages sent after the render. `Last-Event-ID`
    /// and where a `clientId` left off come first, so reconnects never go back to it. Default:
    /// [`DEFAULT_RESUME_QUERY_PARAM`], `lastEventId`; pick another when it clashes with a query
    /// parameter of the application's.
    pub fn resume_query_param(mut self, name: impl Into<String>) -> Self {
        self.resume_query_param = name.into();
        self
    }

    /// How many notifications each [`subscribe`](crate::Server::subscribe)r may fall behind
    /// before it loses the oldest (it gets
    /// [`Notification::Lagged`](crate::Notification::Lagged) in their place): raising a
    /// notification never waits for a subscriber, so this bounds what one that stops reading
    /// costs. Default: [`DEFAULT_NOTIFICATION_CAPACITY`].
    pub fn notification_capacity(mut self, capacity: usize) -> Self {
        self.notification_capacity = capacity.max(1);
        self
    }

    /// Whether to measure `sseio_send_lag_seconds` (see the crate docs' "Metrics and tracing"):
    /// each connection's queue then reads the clock when it goes from empty to non-empty and
    /// again when its batch is handed to the transport. That is two clock reads per write per
    /// connection, a measurable share of the core's own cost of queueing and draining a batch
    /// (though small beside a delivery's whole cost, which the kernel dominates), so it is
    /// opt-in ([BENCHMARKS.md, "Metrics and tracing: what they cost"][bench] has the figure and
    /// the bench that measures it). Default: off, and the histogram is not registered.
    ///
    /// [bench]: https://github.com/sseio/sseio/blob/main/BENCHMARKS.md#metrics-and-tracing-what-they-cost
    pub fn send_lag_metric(mut self, on: bool) -> Self {
        self.send_lag_metric = on;
        self
    }

    /// How often every open stream gets a heartbeat comment, from one timer shared by all
    /// connections. `Duration::ZERO` turns heartbeats off. Default: 3 seconds.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// The most bytes queued for one connection (frames not yet written to its socket, and
    /// messages held back while its `fetch` runs). A client that stops reading and passes it is
    /// disconnected, with an `error` notification; nobody else is slowed. Default: 1 MiB.
    pub fn max_buffer_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_buffer_bytes = bytes.max(1);
        self
    }

    /// The most frames queued for one connection, whatever their size (a flood of tiny messages
    /// costs per frame too); past it the connection is closed like a full
    /// [`max_buffer_bytes`](ServerBuilder::max_buffer_bytes). Default: 8192.
    pub fn max_buffer_frames(mut self, frames: usize) -> Self {
        self.limits.max_buffer_frames = frames.max(1);
        self
    }

    /// The most events one connection may subscribe to (distinct `events` values); more is
    /// answered `400`. Default: 32.
    pub fn max_events(mut self, events: usize) -> Self {
        self.limits.max_events = events;
        self
    }

    /// The longest `clientId` accepted, in bytes; longer is answered `400`. Default: 128.
    pub fn max_client_id_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_client_id_bytes = bytes;
        self
    }

    /// The longest room id a `get_room_id` may return, in bytes; a connection whose room id is
    /// longer (usually from a query parameter) is answered `400`. Default: 256.
    pub fn max_room_id_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_room_id_bytes = bytes;
        self
    }

    /// The largest message payload [`EventHandler::send`](crate::EventHandler::send) accepts, in
    /// bytes; larger returns [`SendError::TooLarge`](crate::SendError::TooLarge). Default: 512 KiB.
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_message_bytes = bytes;
        self
    }

    /// The most connections open at once; a new stream past it is answered `503` with
    /// `Retry-After` (the official client backs off), except a replacement of an open
    /// `clientId`. Default: no limit.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.limits.max_connections = Some(connections);
        self
    }

    /// The most streams one principal (what [`authorize`](ServerBuilder::authorize) granted)
    /// may hold open at once; one more is answered `429` with a jittered `Retry-After`, on which
    /// the official client backs off and retries. A replacement of one of its own `clientId`s
    /// takes the replaced stream's place. Streams without a principal are not counted. Default:
    /// no limit.
    pub fn max_streams_per_principal(mut self, streams: usize) -> Self {
        self.limits.max_streams_per_principal = Some(streams);
        self
    }

    /// The most streams one client IP address may hold open at once, answered like
    /// [`max_streams_per_principal`](ServerBuilder::max_streams_per_principal). The address is
    /// [`RequestHead::client_addr`](crate::RequestHead::client_addr), which each adapter fills
    /// from the connection's peer: behind a proxy, every client shares the proxy's address, so
    /// set it there from the forwarded address the proxy adds, or cap at the proxy instead.
    /// Default: no limit.
    pub fn max_streams_per_address(mut self, streams: usize) -> Self {
        self.limits.max_streams_per_address = Some(streams);
        self
    }

    /// How long a `fetch` may run; past it, it is abandoned, an `error` notification is raised
    /// and the messages held back behind it are delivered. Default: 30 seconds.
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.limits.fetch_timeout = timeout;
        self
    }

    /// Serves cross-origin pages as `cors` allows: CORS headers on the SSE path's answers, `204`
    /// to preflights from allowed origins, `403` JSON to requests from other origins. Default:
    /// off (no CORS headers; `OPTIONS` is left to the application).
    pub fn cors(mut self, cors: Cors) -> Self {
        self.cors = Some(cors);
        self
    }

    /// Runs `authorize` for every new stream, before it joins any room: it sees the
    /// [`Context`](crate::Context) (path parameters, query, headers, [cookies](crate::Context::cookie))
    /// and either grants the connection (a [`Grant`], optionally naming a principal and carrying
    /// data that `get_room_id`, `fetch` and notifications can read) or refuses it with a
    /// [`Refusal`] (`401` or `403` JSON, which stop the official client). A panic in it refuses
    /// the request with `500` and raises an `error` notification. Default: every connection is
    /// granted with no principal.
    ///
    /// ```
    /// use sseio_core::{Context, Grant, Refusal, Server};
    ///
    /// let server = Server::builder()
    ///     .authorize(|ctx: Context| async move {
    ///         match ctx.cookie("session") {
    ///             Some("s3cret") => Ok(Grant::new().principal("ada")),
    ///             _ => Err(Refusal::unauthorized("log in first")),
    ///         }
    ///     })
    ///     .build()?;
    /// # Ok::<(), sseio_core::BuildError>(())
    /// ```
    pub fn authorize<F, Fut>(mut self, authorize: F) -> Self
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Grant, Refusal>> + Send + 'static,
    {
        self.authorize = Some(authorize_fn(authorize));
        self
    }

    /// Whether a new connection may replace an open one with the same `clientId` only when
    /// `authorize` granted both the same principal; otherwise it is refused with `403`. A
    /// `clientId` travels in URLs and logs, so without this any authenticated client that
    /// learns another's could close that client's stream by connecting with it.
    /// Default: on when there is an [`authorize`](ServerBuilder::authorize) hook, off without
    /// one (there are no principals then, and any connection with the same `clientId` replaces
    /// the open one).
    pub fn takeover_requires_same_principal(mut self, required: bool) -> Self {
        self.same_principal_takeover = Some(required);
        self
    }

    /// The broker that carries sends, presence and per-client commands between this server and
    /// others serving the same rooms: `sseio_redis::RedisBroker` for several processes,
    /// [`MemoryBroker`](crate::MemoryBroker) for several servers in one process. Default: none,
    /// a `send` reaches this server's connections only.
    pub fn broker(mut self, broker: impl Broker) -> Self {
        self.broker = Some(Arc::new(broker));
        self
    }

    /// Turns on history for every handler (a handler's own
    /// [`HandlerOptions::history`](crate::HandlerOptions::history) wins): each room keeps its
    /// last messages, frames carry an `id:` line, and a client that reconnects gets what it
    /// missed (see the crate docs, "History and resume"). Default: off, and the wire is
    /// byte-identical to the original server's.
    pub fn history(mut self, history: History) -> Self {
        self.history = Some(history);
        self
    }

    /// How long the position of a `clientId` whose stream closed is kept, so that the official
    /// client, which reconnects with the same `clientId` but without `Last-Event-ID`, resumes
    /// where it left off. Only used with history. Default: 60 seconds.
    pub fn resume_ttl(mut self, ttl: Duration) -> Self {
        self.resume_ttl = ttl;
        self
    }

    /// Builds the server.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidPath`] when the path pattern is not usable;
    /// [`BuildError::InvalidGapNotice`] when the [gap notice](ServerBuilder::gap_notice)'s event
    /// name cannot go on the wire;
    /// [`BuildError::Broker`] when the broker refuses the server (it already serves another).
    pub fn build(self) -> Result<Server, BuildError> {
        let path = PathPattern::parse(&self.path)?;
        if let Some(name) = &self.gap_notice
            && let Some(reason) = frame::invalid_event_name(name)
        {
            return Err(BuildError::InvalidGapNotice {
                name: name.clone(),
                reason,
            });
        }
        Server::from_builder(path, self)
    }
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("path", &self.path)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("limits", &self.limits)
            .field("cors", &self.cors)
            .field("authorize", &self.authorize.is_some())
            .field("same_principal_takeover", &self.same_principal_takeover)
            .field("broker", &self.broker)
            .field("history", &self.history)
            .field("resume_ttl", &self.resume_ttl)
            .finish()
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self {
            path: DEFAULT_PATH.to_owned(),
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            limits: Limits {
                max_buffer_bytes: DEFAULT_MAX_BUFFER_BYTES,
                max_buffer_frames: DEFAULT_MAX_BUFFER_FRAMES,
                max_events: DEFAULT_MAX_EVENTS,
                max_client_id_bytes: DEFAULT_MAX_CLIENT_ID_BYTES,
                max_room_id_bytes: DEFAULT_MAX_ROOM_ID_BYTES,
                max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
                max_connections: None,
                max_streams_per_principal: None,
                max_streams_per_address: None,
                fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            },
            cors: None,
            authorize: None,
            same_principal_takeover: None,
            broker: None,
            history: None,
            resume_ttl: DEFAULT_RESUME_TTL,
            send_lag_metric: false,
            notification_capacity: DEFAULT_NOTIFICATION_CAPACITY,
            reconnect_delay: DEFAULT_RECONNECT_DELAY,
            reconnect_spread: DEFAULT_RECONNECT_SPREAD,
            max_stream_lifetime: None,
            gap_notice: None,
            resume_query_param: DEFAULT_RESUME_QUERY_PARAM.to_owned(),
        }
    }
}
