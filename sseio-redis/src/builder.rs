//! `RedisBrokerBuilder`: where Redis is, the prefix of the channels, and the limits and timings
//! of the connection task, each with its default.

use std::time::Duration;

use redis::RedisError;

use crate::broker::RedisBroker;
use crate::link::Target;

/// The default prefix of every channel name.
pub const DEFAULT_PREFIX: &str = "sseio";
/// The default number of messages queued for Redis before `send` returns
/// [`BrokerError::Backlog`](sseio_core::BrokerError::Backlog).
pub const DEFAULT_MAX_QUEUED: usize = 65_536;
/// The default time a presence query waits for the nodes' answers.
pub const DEFAULT_PRESENCE_TIMEOUT: Duration = Duration::from_secs(2);
/// The default number of channels per `SUBSCRIBE` when a node subscribes its rooms again after
/// reconnecting.
pub const DEFAULT_RESUBSCRIBE_BATCH: usize = 1_000;
/// The first wait before reconnecting; each failed attempt doubles it, up to the maximum.
pub const DEFAULT_RECONNECT_MIN: Duration = Duration::from_millis(100);
/// The longest wait between two reconnection attempts.
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Configures a [`RedisBroker`]. Start with [`RedisBroker::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisBrokerBuilder {
    pub(crate) target: Target,
    pub(crate) prefix: String,
    pub(crate) max_queued: usize,
    pub(crate) presence_timeout: Duration,
    pub(crate) resubscribe_batch: usize,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
}

impl RedisBrokerBuilder {
    /// A builder for a broker on the Redis at `url`, with the defaults: what
    /// [`RedisBroker::builder`] gives.
    pub(crate) fn new(url: String) -> Self {
        RedisBrokerBuilder {
            target: Target {
                url,
                sharded: false,
            },
            prefix: DEFAULT_PREFIX.to_owned(),
            max_queued: DEFAULT_MAX_QUEUED,
            presence_timeout: DEFAULT_PRESENCE_TIMEOUT,
            resubscribe_batch: DEFAULT_RESUBSCRIBE_BATCH,
            reconnect_min: DEFAULT_RECONNECT_MIN,
            reconnect_max: DEFAULT_RECONNECT_MAX,
        }
    }

    /// The prefix of every channel this broker uses, so that several applications can share a
    /// Redis: only nodes with the same prefix form a cluster. Default: `sseio`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sharded Pub/Sub (`SSUBSCRIBE`/`SPUBLISH`, Redis 7+) on a Redis Cluster: each room's
    /// channel lives on the master that owns its slot, so a message travels through one shard
    /// instead of every node of the Redis Cluster, and a master failing over costs only its own
    /// rooms (see the crate docs, "On a Redis Cluster"). The URL is then any node of the
    /// cluster. Publishes go in one pipeline per master, the masters at once. No history in
    /// Redis. Default: off (plain `PUBLISH`, one pipeline per batch).
    pub fn sharded(mut self, sharded: bool) -> Self {
        self.target.sharded = sharded;
        self
    }

    /// The most messages waiting for Redis: the capacity of the channel that carries them to
    /// the connection task. When it is full, `send` returns
    /// [`BrokerError::Backlog`](sseio_core::BrokerError::Backlog) instead of queueing without
    /// bound. The batch being written to Redis (at most 1,024 messages) has left the channel and
    /// does not count; the history's lookups (a replay, a resume record) take a place while they
    /// wait and wait for one when the channel is full. At least 1; at most
    /// [`Semaphore::MAX_PERMITS`](tokio::sync::Semaphore::MAX_PERMITS) (about 2^61), tokio's
    /// largest channel. Default: 65,536.
    pub fn max_queued(mut self, messages: usize) -> Self {
        self.max_queued = messages.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        self
    }

    /// How long a presence query waits for every node that serves the room to answer.
    /// Default: 2 seconds.
    pub fn presence_timeout(mut self, timeout: Duration) -> Self {
        self.presence_timeout = timeout;
        self
    }

    /// How many channels go in one `SUBSCRIBE` when the node subscribes all its rooms again
    /// after reconnecting. Default: 1,000.
    pub fn resubscribe_batch(mut self, channels: usize) -> Self {
        self.resubscribe_batch = channels.max(1);
        self
    }

    /// The wait before the first reconnection attempt and the longest wait between two; each
    /// failed attempt doubles the wait. Default: 100 ms and 5 s.
    pub fn reconnect_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.reconnect_min = first;
        self.reconnect_max = max.max(first);
        self
    }

    /// Connects to Redis and starts the task that keeps the connection. Call it inside a tokio
    /// runtime; give the broker to one server with `ServerBuilder::broker`.
    ///
    /// # Errors
    ///
    /// The [`RedisError`] of the first connection: a bad URL, or no Redis there. (Later losses
    /// are handled: the broker reconnects by itself.)
    pub async fn connect(self) -> Result<RedisBroker, RedisError> {
        RedisBroker::start(self).await
    }
}
