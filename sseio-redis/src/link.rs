//! The connection to Redis: one RESP3 connection per node carries publishes, subscriptions and
//! the messages that arrive on them, and a task keeps it alive; with sharded Pub/Sub, a pair of
//! connections per master of the Redis Cluster (see the `shards` module).
//!
//! The connection task and the catch-up see it through the small [`Transport`] trait, opened by
//! a [`Connector`], so that their tests run over an in-process stub (the `stub` module) instead
//! of a `redis-server`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, IntoConnectionInfo, ProtocolVersion, PushInfo, RedisResult,
    Value,
};
use tokio::sync::mpsc;

use crate::shards::{Routes, ShardEvent, Shards};

/// How long connecting may take before it counts as failed.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a command may wait for its answer before the connection counts as lost.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where to connect, and how.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) sharded: bool,
}

/// One command of a batch sent to Redis in order.
pub(crate) enum Outgoing {
    /// A message on a channel (`PUBLISH`, or `SPUBLISH` when sharded).
    Publish { channel: String, body: Vec<u8> },
    /// Any other command: a history script that records and publishes, a replay, a resume
    /// record.
    Cmd(Cmd),
}

/// What the connection task needs of a connection to Redis. Plain and sharded Redis are
/// [`Link`]; the tests have a stub.
pub(crate) trait Transport: Send + 'static {
    /// What the transport says between commands, for [`Transport::on_event`].
    type Event: Send;

    /// Subscribes `channels`. Sharded, never an error: a channel whose master is down is
    /// subscribed when its slots are served again.
    fn subscribe(&mut self, channels: &[String]) -> impl Future<Output = RedisResult<()>> + Send;

    /// Unsubscribes `channels`.
    fn unsubscribe(&mut self, channels: &[String]) -> impl Future<Output = RedisResult<()>> + Send;

    /// Sends each command in order, in one pipeline on a plain connection; returns each
    /// command's answer. `Err` only when the connection failed: an error reply to one command
    /// is that command's answer.
    fn send(
        &mut self,
        items: &[Outgoing],
    ) -> impl Future<Output = RedisResult<Vec<RedisResult<Value>>>> + Send;

    /// Runs one command and returns its answer.
    fn ask(&mut self, cmd: &Cmd) -> impl Future<Output = RedisResult<Value>> + Send;

    /// Checks the connection; returns what to report (a master of a Redis Cluster lost).
    fn check(&mut self) -> impl Future<Output = RedisResult<Vec<String>>> + Send;

    /// The next thing the transport says between commands; never, on a plain connection.
    fn event(&mut self) -> impl Future<Output = Self::Event> + Send;

    /// Acts on `event`; returns what to report.
    fn on_event(&mut self, event: Self::Event) -> impl Future<Output = Vec<String>> + Send;

    /// How often [`Transport::check`] runs.
    fn check_every(&self) -> Duration;
}

/// Opens a [`Transport`] and the channel its Pub/Sub messages arrive on: at the start, and
/// again on each reconnection.
pub(crate) trait Connector: Send + Sync + 'static {
    /// What it opens.
    type Transport: Transport;

    /// Opens a fresh connection.
    fn open(
        &self,
    ) -> impl Future<Output = RedisResult<(Self::Transport, mpsc::UnboundedReceiver<PushInfo>)>> + Send;
}

/// Opens a [`Link`] to the Redis of a [`Target`].
#[derive(Debug)]
pub(crate) struct Connect {
    target: Target,
    /// Sharded, where the masters' health goes.
    routes: Option<Arc<Routes>>,
}

impl Connect {
    /// Connects to `target`; sharded, reports the masters' health to `routes`.
    pub(crate) fn new(target: Target, routes: Option<Arc<Routes>>) -> Self {
        Connect { target, routes }
    }
}

impl Connector for Connect {
    type Transport = Link;

    async fn open(&self) -> RedisResult<(Link, mpsc::UnboundedReceiver<PushInfo>)> {
        Link::open(&self.target, self.routes.as_ref()).await
    }
}

/// One open connection, plain or to a Redis Cluster (for sharded Pub/Sub).
pub(crate) enum Link {
    Plain(MultiplexedConnection),
    Sharded(Box<Shards>),
}

impl Link {
    /// Connects, with RESP3 so that Pub/Sub messages arrive as pushes on `pushes` while the
    /// same connection keeps publishing. Sharded, `routes` is where the masters' health goes.
    pub(crate) async fn open(
        target: &Target,
        routes: Option<&Arc<Routes>>,
    ) -> RedisResult<(Link, mpsc::UnboundedReceiver<PushInfo>)> {
        if let (true, Some(routes)) = (target.sharded, routes) {
            let (shards, pushes) = Shards::open(&target.url, routes.clone()).await?;
            return Ok((Link::Sharded(Box::new(shards)), pushes));
        }
        let (push_tx, pushes) = mpsc::unbounded_channel();
        let info = target.url.as_str().into_connection_info()?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info.set_redis_settings(settings);
        let link = {
            let config = AsyncConnectionConfig::new()
                .set_push_sender(push_tx)
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT));
            let client = Client::open(info)?;
            Link::Plain(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?,
            )
        };
        Ok((link, pushes))
    }
}

impl Transport for Link {
    type Event = ShardEvent;

    /// Subscribes `channels`. Sharded, never an error: a channel whose master is down is
    /// subscribed when its slots are served again.
    async fn subscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Link::Plain(conn) => conn.subscribe(channels).await,
            Link::Sharded(shards) => {
                shards.subscribe(channels).await;
                Ok(())
            }
        }
    }

    async fn unsubscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Link::Plain(conn) => conn.unsubscribe(channels).await,
            Link::Sharded(shards) => {
                shards.unsubscribe(channels).await;
                Ok(())
            }
        }
    }

    /// Sends each command in order, in one pipeline on a plain connection; returns each
    /// command's answer. `Err` only when the connection failed: an error reply to one command
    /// is that command's answer.
    async fn send(&mut self, items: &[Outgoing]) -> RedisResult<Vec<RedisResult<Value>>> {
        match self {
            // One pipeline: one write, in order, however many commands queued meanwhile.
            Link::Plain(conn) => {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                for item in items {
                    match item {
                        Outgoing::Publish { channel, body } => {
                            pipe.cmd("PUBLISH").arg(channel).arg(body);
                        }
                        Outgoing::Cmd(cmd) => {
                            pipe.add_command(cmd.clone());
                        }
                    }
                }
                pipe.query_async(conn).await
            }
            // One pipeline per master, the masters at once; a master that is down fails only
            // its own messages.
            Link::Sharded(shards) => Ok(shards.send(items).await),
        }
    }

    /// Runs one command and returns its answer.
    async fn ask(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Link::Plain(conn) => cmd.query_async(conn).await,
            Link::Sharded(shards) => shards.ask(cmd).await,
        }
    }

    /// Checks the connection; sharded, looks after each master (see `Shards::maintain`) and
    /// returns what to report, never an error.
    async fn check(&mut self) -> RedisResult<Vec<String>> {
        match self {
            Link::Plain(conn) => redis::cmd("PING")
                .query_async::<Value>(conn)
                .await
                .map(|_| Vec::new()),
            Link::Sharded(shards) => Ok(shards.maintain().await),
        }
    }

    /// The next thing one of the masters' connections says; never, on a plain connection.
    async fn event(&mut self) -> ShardEvent {
        match self {
            Link::Plain(_) => std::future::pending().await,
            Link::Sharded(shards) => shards.event().await,
        }
    }

    /// Acts on `event`; returns what to report.
    async fn on_event(&mut self, event: ShardEvent) -> Vec<String> {
        match self {
            Link::Plain(_) => Vec::new(),
            Link::Sharded(shards) => shards.on_event(event).await,
        }
    }

    /// How often [`Transport::check`] runs.
    fn check_every(&self) -> Duration {
        match self {
            Link::Plain(_) => Duration::from_secs(1),
            Link::Sharded(_) => crate::shards::POLL,
        }
    }
}

/// Whether `error` means the connection is gone (rather than one command refused).
pub(crate) fn lost(error: &redis::RedisError) -> bool {
    error.is_io_error() || error.is_timeout() || error.is_unrecoverable_error()
}
