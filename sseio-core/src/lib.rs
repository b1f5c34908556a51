//! The framework-free core of **sseio**: the SSE-IO protocol for Rust web servers.
//!
//! SSE-IO pushes messages to browsers and services over Server-Sent Events, organised in
//! *events* and *rooms*. This crate is the whole protocol: request parsing, path patterns,
//! rooms, frame encoding, heartbeats, bounded per-connection buffers and lifecycle
//! notifications. It is drop-in compatible with the original Node server
//! (`sse.io-server-nodejs` 1.0.3): front ends that use the official JavaScript client
//! (`sse.io-client` 1.1.1) or a plain `EventSource` keep working unchanged.
//!
//! You normally depend on an adapter crate instead, which re-exports everything here and mounts
//! the server in your framework with one call: `sseio-hyper` (hyper, axum and any tower stack,
//! plus a standalone server), `sseio-warp`, `sseio-poem` or `sseio-salvo`. An adapter only
//! translates: its framework's request into a [`RequestHead`], and the [`Outcome`] of
//! [`Server::handle`] into its framework's response.
//!
//! # Quick example
//!
//! ```
//! use sseio_core::{Context, HandlerOptions, Notification, Server};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Clients connect to GET /files/<guid>/pull?clientId=<id>&events=file-changed
//! let server = Server::new("/files/:guid/pull")?;
//! let files = server.register_event_handler(
//!     "file-changed",
//!     HandlerOptions::new(|ctx: &Context| ctx.param("guid").unwrap_or_default().to_owned()),
//! )?;
//! let mut notifications = server.subscribe();
//!
//! // An adapter turns each HTTP request into a call like this one.
//! let request = http::Request::get("/files/42/pull?clientId=c1&events=file-changed").body(())?;
//! let sseio_core::Outcome::Stream(response) = server.handle((&request).into()).await else {
//!     panic!("the stream should open");
//! };
//! assert_eq!(response.headers()["content-type"], "text/event-stream");
//! assert!(matches!(notifications.recv().await, Some(Notification::RoomCreate { .. })));
//! assert!(matches!(notifications.recv().await, Some(Notification::ConnCreate { .. })));
//!
//! // Strings go out verbatim, anything else `Serialize` as its JSON text.
//! files.send("42", "saved")?;
//! files.send("42", &serde_json::json!({ "by": "ada" }))?;
//! assert_eq!(files.room_size("42"), 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Rooms and events
//!
//! A client subscribes to events by name: `events` repeats once per event in the query, next to
//! the `clientId` it chose. For each requested event that has a handler, the connection joins one
//! room of that handler, the one [`HandlerOptions::new`]'s `get_room_id` picks from the
//! [`Context`] (path parameters, every query parameter, the headers). Rooms are per handler:
//! room `"42"` of event `a` and room `"42"` of event `b` are different rooms. Unknown event names
//! are ignored. [`EventHandler::send`] reaches every connection in one room of its event.
//!
//! A connection whose `clientId` equals an open connection's replaces it: the old stream ends and
//! leaves its rooms (the official client keeps its `clientId` across reconnects, so this cleans
//! up after network changes).
//!
//! # `fetch`
//!
//! [`HandlerOptions::fetch`] runs once per connection and event, right after connect. Its result
//! is the first message of that event on that connection; messages sent to the connection while it
//! runs are held back and follow it, in order. A failed (or panicking) `fetch` raises an `error`
//! notification and the held messages are still delivered. A result that serializes to `null`
//! sends nothing.
//!
//! # Lifecycle
//!
//! [`Server::subscribe`] yields [`Notification`]s in the order they happen: `conn:create` once a
//! stream has joined all its rooms, `conn:close` exactly once per stream whoever closed it (within
//! about a second of a client closing its connection, not only at the next heartbeat),
//! `room:create` / `room:empty` per handler, and `error` for failures on one connection. A client
//! that simply leaves is not an error. Nobody has to listen: with no subscriber, errors are logged
//! through `tracing` and nothing else happens.
//!
//! # The wire
//!
//! An accepted stream answers `200` with `Content-Type: text/event-stream`,
//! `Cache-Control: no-cache, no-transform`, `X-Accel-Buffering: no` (so proxies do not buffer)
//! and, on HTTP/1.1, `Connection: keep-alive`. It starts with a lone `\n`, flushed at once. A
//! message is `event: E\ndata: P\n\n`; a payload with line breaks (`\r\n`, `\r` or `\n`) becomes
//! several `data:` lines, so no payload can end a frame early or inject an event. Every stream
//! gets a heartbeat comment (`:\n\n`) every 3 seconds from one timer shared by all connections.
//!
//! A request on the SSE path without a non-empty `clientId` or `events`, or whose query cannot be
//! decoded, gets `400` with `{"message": "..."}` and no stream; a method other than `GET` or
//! `HEAD` gets `405` with `Allow: GET, HEAD`. `OPTIONS` is left to the application (for its CORS
//! handling).
//!
//! # Limits and backpressure
//!
//! [`EventHandler::send`] encodes a frame once and queues the same bytes on each connection; it
//! never waits for a client. Whatever has queued up for a connection goes out in one write. Every
//! limit is a [`ServerBuilder`] setting:
//!
//! | setting | default | past it |
//! |---|---|---|
//! | [`max_buffer_bytes`](ServerBuilder::max_buffer_bytes) | 1 MiB per connection, messages held behind a `fetch` included | the connection is closed (`conn:close`, one `error` naming the client); nobody else is slowed or loses a message |
//! | [`max_buffer_frames`](ServerBuilder::max_buffer_frames) | 8192 frames per connection | the same |
//! | [`max_events`](ServerBuilder::max_events) | 32 distinct events per connection | `400` JSON |
//! | [`max_client_id_bytes`](ServerBuilder::max_client_id_bytes) | 128 bytes | `400` JSON |
//! | [`max_room_id_bytes`](ServerBuilder::max_room_id_bytes) | 256 bytes from `get_room_id` | `400` JSON naming the event |
//! | [`max_message_bytes`](ServerBuilder::max_message_bytes) | 512 KiB per payload | [`SendError::TooLarge`] |
//! | [`max_connections`](ServerBuilder::max_connections) | none | `503` JSON with `Retry-After` (the official client backs off) |
//! | [`fetch_timeout`](ServerBuilder::fetch_timeout) | 30 s | an `error` notification; the held messages are delivered |
//!
//! # Security
//!
//! - Bad input never panics and never opens a stream: malformed percent-escapes, non-UTF-8
//!   values and missing parameters are `400` JSON, other methods `405`; a panicking `get_room_id`
//!   is a `500` for that request and an `error` notification, a panicking `fetch` an `error`
//!   notification; the server and every other connection carry on.
//! - Authentication is the application's, through [`ServerBuilder::authorize`]: an async hook that
//!   sees the path parameters, query, headers and cookies of every new stream and grants it (with
//!   a principal and data that `get_room_id`, `fetch` and notifications read) or refuses it with
//!   `401` or `403` JSON, before it joins any room. A `get_room_id` can refuse one event the same
//!   way (`403` naming the event). Use `401`/`403` to stop the official client and `429`/`503`
//!   to make it back off; never `204`. Default: no hook, every stream is accepted.
//!   [`ServerBuilder::takeover_requires_same_principal`] stops one principal from replacing
//!   another's stream by reusing its `clientId`.
//! - CORS is off by default: no CORS headers, and `OPTIONS` on the SSE path is left to the
//!   application. With [`ServerBuilder::cors`], preflights from allowed origins get `204`,
//!   streams from them carry the CORS headers, and requests from any other origin get `403` JSON.
//! - Room ids come from your `get_room_id`: derive them from what the request proves (a path
//!   parameter your routing authorised, a header your gateway set), not from a query parameter
//!   anyone can change, when a room's messages are private.
//! - A `clientId` is chosen by the client; a second connection with the same `clientId` replaces
//!   the first (unless the takeover setting above refuses it). Treat it as an identifier, not a
//!   credential.
//!
//! # History and resume
//!
//! Off by default. With [`ServerBuilder::history`] (or [`HandlerOptions::history`] for one
//! handler), each room keeps its last N messages for a TTL, and every message frame carries
//! `id: <epoch>-<offset>`: the server's epoch (new at each start) and an offset from one
//! sequence shared by all rooms, so one id positions a stream in every room it is in. A
//! client that reconnects gets exactly the messages of its rooms that it missed, in order,
//! before any live one, and its `fetch` does not run:
//!
//! - a native `EventSource` sends `Last-Event-ID` by itself; polyfills that cannot set headers
//!   may pass a `lastEventId` query parameter;
//! - the official client sends neither, but keeps its `clientId`: the server remembers where a
//!   `clientId` stood when its stream closed, for [`ServerBuilder::resume_ttl`] (60 s).
//!
//! Replay is all or nothing per room: when the history no longer has every message since the
//! position (trimmed, expired, or another epoch after a restart), nothing is replayed and
//! `fetch` runs with [`Context::resync`] set, to send the full state.
//!
//! Where a `clientId` resumes from, when its stream closes: just before the first message of
//! its rooms that was not handed to the transport (the HTTP server's write), or, when every
//! message was, after the last one. A message counts as not handed over when the connection's
//! buffer refused it (the close of a slow consumer), when it was still queued in the server
//! when the stream closed, or when it was still held back behind a `fetch` or a replay. So a
//! client that stopped reading and was closed gets, on its reconnect, everything it never got.
//! A message handed to the transport counts as given: one lost in socket or proxy buffers when
//! the network drops is not replayed to the official client, which cannot say what it really
//! received (an `EventSource`'s `Last-Event-ID` names the last frame it parsed, so it loses
//! nothing). A custom [`SseSink`] reports what it never handed on through
//! [`SseSink::unsent`]; one that does not counts a message as given once it accepted it.
//!
//! With a [`Broker`] that keeps a [`HistoryStore`] (`sseio-redis` on a plain Redis, and
//! [`MemoryBroker`]), the history is the cluster's: one sequence for every node, so a frame has
//! the same `id:` on every node, and a client resumes on any node, by `Last-Event-ID` or by
//! `clientId`. A joining connection's rooms are held back while the broker answers its replay;
//! the missed messages go out first, then the held live ones, without the live copies of what
//! was replayed. With a broker that keeps none (sharded Redis Pub/Sub), each node numbers what
//! it delivers and a client resumes only on the node it left; elsewhere it resyncs.
//!
//! Cost: a send with a server's own history takes one server-wide lock while it numbers,
//! records and queues its message (that is what keeps every stream in offset order), and keeps
//! a reference to the frame in the room's history. With a broker's history the numbering and
//! recording happen in the broker instead (with `sseio-redis`, one script run in Redis per
//! send), and a connect with history asks the broker for its resume record and its replay.
//!
//! # Several nodes
//!
//! By default a server is self-contained: a `send` reaches this process's connections. Give
//! servers a [`Broker`] with [`ServerBuilder::broker`] and they share their rooms: a `send` on
//! any of them reaches the room's connections on all of them, once per node;
//! [`EventHandler::presence`] counts the room across nodes; [`Server::send_to_client`] and
//! [`Server::disconnect`] reach a client wherever it is connected; and a `clientId` that
//! connects to another node closes its stream on the first. `sseio-redis` links processes
//! through Redis; [`MemoryBroker`] links servers in one process.
//!
//! # Metrics and tracing
//!
//! The server reports through the [`metrics`](https://docs.rs/metrics) facade and the
//! [`tracing`](https://docs.rs/tracing) API; with no recorder and no subscriber installed both
//! cost next to nothing. Install a recorder (for Prometheus, `metrics-exporter-prometheus`)
//! **before building the [`Server`]**: each server registers its metric handles once, when it is
//! built, so that a send adds its member count to a counter instead of looking a metric up per
//! delivery; a server built before any recorder was installed reports nothing. Values are per
//! process (the servers of one process add up into the same series); sum them across nodes.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `sseio_connections` | gauge | | open streams |
//! | `sseio_connections_opened_total` | counter | | streams opened (joined their rooms) |
//! | `sseio_rooms` | gauge | | rooms with at least one connection on this node, counted per handler (room `42` of two events is two rooms) |
//! | `sseio_frames_sent_total` | counter | | message frames queued to connections: a send to a room adds its number of members on this node; a `send_to_client`, a `fetch` result and each replayed history message add one. A frame held back behind a `fetch` counts when it is held. Heartbeats and the opening line are not counted; a frame counts once queued, even if its connection closes before it is written |
//! | `sseio_bytes_sent_total` | counter | | the encoded bytes of those frames (members × frame length), what the transport is handed for messages |
//! | `sseio_heartbeats_sent_total` | counter | | heartbeat comments (`:\n\n`, 3 bytes) queued, one per open stream per beat |
//! | `sseio_disconnects_total` | counter | `reason`: `client_gone`, `replaced`, `slow_consumer`, `server_closed`, `shutdown`, `disconnected` | closed streams, exactly one per stream, by its [`CloseReason`]; `shutdown` is a [`CloseReason::ServerClosed`] by [`Server::shutdown`]'s drain |
//! | `sseio_resumes_total` | counter | `result`: `replayed`, `resync` | rooms (of handlers with history) that a connection joined from a position: the missed messages were replayed, or the gap could not be filled and `fetch` ran as a resync |
//! | `sseio_send_lag_seconds` | histogram | | opt-in, with [`ServerBuilder::send_lag_metric`]: from a frame being queued to the connection stream handing its batch to the transport, recorded once per batch for the batch's oldest frame (heartbeats included), so it shows how far behind writing a connection is. Only for streams from [`Server::handle`] (a custom sink's queue is its own) |
//! | `sseio_rejections_total` | counter | `status`: `400`, `401`, `403`, `404`, `405`, `500`, `503` | requests on the SSE path that [`Server::handle`] refused without a stream |
//!
//! `metrics-exporter-prometheus` renders a histogram as a summary unless it is given buckets;
//! for the send lag, `PrometheusBuilder::set_buckets_for_metric` with buckets from about 100 µs
//! to 10 s fits. Its recorder keeps each histogram sample until a render or
//! `PrometheusHandle::run_upkeep` drains it (its own HTTP listener runs upkeep every 5 s; a
//! recorder from `install_recorder` does not): with the send lag on, call `run_upkeep` from a
//! timer, or the samples grow with every write until the next scrape.
//!
//! ```
//! use metrics_exporter_prometheus::PrometheusBuilder;
//! use sseio_core::{Context, HandlerOptions, Outcome, Server};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let prometheus = PrometheusBuilder::new().install_recorder()?; // first, then the server
//! let server = Server::new("/files/:guid/pull")?;
//! let files = server.register_event_handler("file-changed", HandlerOptions::new(|_: &Context| "all"))?;
//! let request = http::Request::get("/files/42/pull?clientId=c1&events=file-changed").body(())?;
//! let Outcome::Stream(_stream) = server.handle((&request).into()).await else { panic!() };
//! files.send("all", "saved")?;
//!
//! // Serve this on `GET /metrics`, as `text/plain; version=0.0.4`.
//! let text = prometheus.render();
//! assert!(text.lines().any(|line| line == "sseio_connections 1"));
//! assert!(text.lines().any(|line| line == "sseio_frames_sent_total 1"));
//! # Ok(())
//! # }
//! ```
//!
//! With the `connection-spans` feature, each connection has a span, `sseio.connection` at level
//! `INFO`, with the fields `client_id` and `serial` (unique per connection, also across a
//! `clientId`'s reconnects). Its `fetch` tasks and its replay run in it, and its close is handled
//! in it, so what is logged about one connection (the `DEBUG` events `sseio connection opened` /
//! `sseio connection closed` with the `reason`, and with no notification subscriber the `WARN`
//! for a slow consumer or a failed `fetch`) carries those fields. The span is never entered to
//! deliver or write a frame, but a subscriber that records it keeps it for as long as the
//! stream is open: with `tracing-subscriber`'s `fmt` at `INFO`, that measured about 520 bytes
//! more per open stream (3,798 → 4,320 B at 10,000 idle streams), hence the opt-in. Without the
//! feature, those events are logged without the span.

//! # Runtime
//!
//! The public API uses the ecosystem types that stay put: `http` 1.x for requests and responses,
//! `bytes`, `futures-core`'s `Stream` and `http-body`'s `Body`. "Framework-free" means free of
//! every web framework; the crate is built on tokio (the heartbeat timer and `fetch` tasks are
//! tokio tasks, started on the runtime of the first connection).
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `connection-spans` | off | a `tracing` span per connection (see "Metrics and tracing"): about 520 bytes per open stream while a subscriber records it |
//!
//! Everything else described here is always on, metrics included: their handles cost nothing
//! measurable on the send path (see "Metrics and tracing").

mod auth;
mod broker;
mod builder;
mod connect;
mod connection;
mod cors;
mod error;
mod fetch;
mod frame;
mod handler;
mod history;
mod hub;
mod listener;
mod message;
mod metrics;
mod node;
mod notify;
mod position;
mod rejection;
mod request;
mod room;
mod server;
mod sink;
mod sync;
mod upkeep;

pub use auth::{Grant, IntoRoom, Refusal};
pub use broker::{
    BoxFuture, Broker, BrokerError, ConnectionId, HistoryStore, MemoryBroker, Node, Presence,
    Replay, ReplayRoom,
};
pub use builder::{
    DEFAULT_FETCH_TIMEOUT, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_MAX_BUFFER_BYTES,
    DEFAULT_MAX_BUFFER_FRAMES, DEFAULT_MAX_CLIENT_ID_BYTES, DEFAULT_MAX_EVENTS,
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_ROOM_ID_BYTES, DEFAULT_NOTIFICATION_CAPACITY,
    DEFAULT_PATH, ServerBuilder,
};
pub use connection::{Connection, ConnectionStream};
pub use cors::Cors;
pub use error::{BoxError, BuildError, ConnectionError, RegisterError, SendError};
pub use handler::{EventHandler, HandlerOptions};
pub use history::{DEFAULT_HISTORY_TTL, DEFAULT_RESUME_TTL, History};
pub use listener::{LISTEN_BACKLOG, bind};
pub use notify::{CloseReason, Notification, Notifications};
pub use position::Position;
pub use rejection::ConnectRejection;
pub use request::{Context, RequestHead};
pub use server::{Outcome, Server};
pub use sink::{SinkError, SseSink};
