//! SSE-IO across several nodes: a Redis Pub/Sub [`Broker`](sseio_core::Broker) for sseio.
//!
//! Run several sseio servers (nodes) behind a load balancer, give each a [`RedisBroker`] on
//! the same Redis, and a `send` on any node reaches the room's clients on every node, once.
//!
//! ```no_run
//! use sseio_core::{Context, HandlerOptions, Server};
//! use sseio_redis::RedisBroker;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = RedisBroker::connect("redis://127.0.0.1:6379/").await?;
//! let server = Server::builder()
//!     .path("/files/:guid/pull")
//!     .broker(broker)
//!     .build()?;
//! let files = server.register_event_handler(
//!     "file-changed",
//!     HandlerOptions::new(|ctx: &Context| ctx.param("guid").unwrap_or_default().to_owned()),
//! )?;
//! // Reaches room 42's clients on every node.
//! files.send("42", &serde_json::json!({ "name": "report.pdf" }))?;
//! // Who is in room 42, on every node.
//! let presence = files.presence("42").await?;
//! println!("{} clients: {:?}", presence.count, presence.client_ids);
//! # Ok(()) }
//! ```
//!
//! # How messages travel
//!
//! - Each (event, room) has its own channel, `<prefix>:room:<event>:<room>`. A node
//!   subscribes to it when the room gets its first connection on that node and unsubscribes
//!   when the room empties there, so a node receives only the rooms it serves: no firehose.
//! - `send` publishes once. Every node serving the room, the sending node included, receives it
//!   once, encodes the frame once and queues it on its own connections.
//! - One RESP3 connection per node carries publishes (pipelined: whatever queued while the last
//!   batch was in flight goes in one write) and the subscriptions' messages.
//! - `<prefix>:control` carries connects (so a `clientId` that reconnects to another node
//!   closes its old stream there), [`Server::send_to_client`](sseio_core::Server::send_to_client)
//!   and [`Server::disconnect`](sseio_core::Server::disconnect). It costs every node one small
//!   message per connect in the cluster; room messages never go there.
//! - [`EventHandler::presence`](sseio_core::EventHandler::presence) publishes a query on the
//!   room's own channel; the `PUBLISH` reply says how many nodes received it, and each answers
//!   on the asking node's channel with its members.
//! - With [`sharded`](RedisBrokerBuilder::sharded), the same channels are sharded channels
//!   (`SSUBSCRIBE`/`SPUBLISH`) through a Redis Cluster client.
//!
//! # What is guaranteed
//!
//! - **At most once.** A message reaches each connection in its room at most once. It can be
//!   lost: a node that is just subscribing a new room misses what was published before Redis
//!   confirmed the subscription; messages queued or in flight when the connection to Redis
//!   drops are lost; and Redis Pub/Sub keeps nothing for a node that is away.
//! - **Per-room order.** The messages of one room arrive at every node in the order Redis
//!   received the publishes, so all clients of a room see the same order, whichever nodes sent.
//!   Messages of different rooms are not ordered with each other.
//! - **One stream per `clientId`** across the cluster: of two connects with the same
//!   `clientId` on two nodes, the one announced last on the control channel survives, the
//!   other is closed with `conn:close` ([`CloseReason::Replaced`](sseio_core::CloseReason)).
//!
//! # History in Redis
//!
//! With history on (`ServerBuilder::history` or a handler's own, see sseio-core's "History and
//! resume"), the broker keeps it in Redis for the whole cluster, so a client resumes on any
//! node, by `Last-Event-ID` or (the official client) by its `clientId`:
//!
//! - A send runs one Lua script that gives the message the next offset of one sequence per
//!   prefix (`<prefix>:history`, with an epoch taken from Redis's clock when the sequence
//!   starts), appends it to its room's stream (`<prefix>:history:<event length>:<event>:<room>`),
//!   trims the stream to the history's capacity and TTL, and publishes it with its position, all
//!   atomically: a message is in the history exactly when it is published, and every node sees
//!   positions in increasing order.
//! - A reconnecting client's replay is a second script, sent on the node's connection after
//!   its rooms' `SUBSCRIBE`s, so every message it missed is in the answer or arrives live (the
//!   server drops what arrives twice). Replay is all or nothing per room: trimmed, expired, or
//!   another epoch gives a `fetch` resync instead.
//! - Where the official client stood is a resume record, `<prefix>:resume:<clientId>`, written
//!   when its stream closes (`SET .. PX resume_ttl`) and taken when it reconnects (`GETDEL`).
//! - A Redis that restarts without its data starts a new sequence with a new epoch: clients
//!   that come back with an older position resync. While Redis is down, sends fail as above,
//!   and a reconnecting client resyncs (or starts fresh, if its resume record cannot be read).
//! - Cost: the script runs once per send, in Redis, whatever the room's size; on the benchmark
//!   machine about 55 µs of redis-server CPU per send against about 18 µs for a plain publish
//!   (`BENCHMARKS.md`, "History in Redis"). Turn history on per handler where a Redis core's
//!   worth of sends matters.
//! - Needs Redis 6.2 or later (`GETDEL`, `XTRIM MINID`). Not with
//!   [`sharded`](RedisBrokerBuilder::sharded): one sequence would put every send through one
//!   shard, so there each node keeps its own history and a client resumes on the node it left.
//!
//! # When Redis goes away
//!
//! - Open streams stay open and keep their heartbeats: clients do not notice and do not
//!   reconnect.
//! - `send`, `send_to_client`, `disconnect` and presence return
//!   [`BrokerError::Unavailable`](sseio_core::BrokerError) (inside `SendError::Broker` for the
//!   sends) until the broker is back; nothing is queued for later.
//! - The node raises one [`Notification::Broker`](sseio_core::Notification::Broker) saying the
//!   connection was lost.
//! - The broker reconnects with exponential backoff (100 ms doubling to 5 s, see
//!   [`reconnect_backoff`](RedisBrokerBuilder::reconnect_backoff)), subscribes every live room
//!   again in batches of 1,000 channels, and only then accepts sends again.
//! - A silent loss (no reset, no answer) is noticed by a `PING` every second that must be
//!   answered within 5 seconds.
//! - More than 65,536 messages waiting for Redis make `send` return
//!   [`BrokerError::Backlog`](sseio_core::BrokerError) rather than queue without bound.
//!
//! # Why `redis` (redis-rs) and not `fred`
//!
//! Both are well kept. This crate needs one connection that publishes in pipelines and receives
//! Pub/Sub messages at the same time, sharded Pub/Sub for Redis Cluster, and full control over
//! what happens when the connection drops: refuse sends at once, raise one notification, and
//! resubscribe the node's *current* rooms in batches before accepting sends again. redis-rs
//! gives exactly those pieces (RESP3 push messages on its multiplexed connection, `SSUBSCRIBE`
//! in its cluster client) without a reconnect policy of its own in the way; `fred` bundles its
//! own reconnection and resubscription, which would have to be worked around to get that
//! behaviour.

mod broker;
mod history;
mod link;
mod wire;

pub use broker::{
    DEFAULT_MAX_QUEUED, DEFAULT_PREFIX, DEFAULT_PRESENCE_TIMEOUT, DEFAULT_RECONNECT_MAX,
    DEFAULT_RECONNECT_MIN, DEFAULT_RESUBSCRIBE_BATCH, RedisBroker, RedisBrokerBuilder,
};
