//! The connection to Redis: one RESP3 connection per node carries publishes, subscriptions and
//! the messages that arrive on them, and a task keeps it alive.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{
    AsyncConnectionConfig, Client, Cmd, IntoConnectionInfo, ProtocolVersion, PushInfo, RedisResult,
    Value,
};
use tokio::sync::mpsc;

/// How long connecting may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a command may wait for its answer before the connection counts as lost.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

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

/// One open connection, plain or to a Redis Cluster (for sharded Pub/Sub).
pub(crate) enum Link {
    Plain(MultiplexedConnection),
    Sharded(ClusterConnection),
}

impl Link {
    /// Connects, with RESP3 so that Pub/Sub messages arrive as pushes on `pushes` while the
    /// same connection keeps publishing.
    pub(crate) async fn open(
        target: &Target,
    ) -> RedisResult<(Link, mpsc::UnboundedReceiver<PushInfo>)> {
        let (push_tx, pushes) = mpsc::unbounded_channel();
        let info = target.url.as_str().into_connection_info()?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info.set_redis_settings(settings);
        let link = if target.sharded {
            let client = ClusterClientBuilder::new([info])
                .use_protocol(ProtocolVersion::RESP3)
                .push_sender(push_tx)
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .build()?;
            Link::Sharded(client.get_async_connection().await?)
        } else {
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

    pub(crate) async fn subscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Link::Plain(conn) => conn.subscribe(channels).await,
            // One `SSUBSCRIBE` names channels of one slot only.
            Link::Sharded(conn) => {
                for same_slot in by_slot(channels) {
                    conn.ssubscribe(same_slot).await?;
                }
                Ok(())
            }
        }
    }

    pub(crate) async fn unsubscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Link::Plain(conn) => conn.unsubscribe(channels).await,
            Link::Sharded(conn) => {
                for same_slot in by_slot(channels) {
                    conn.sunsubscribe(same_slot).await?;
                }
                Ok(())
            }
        }
    }

    /// Sends each command in order, in one pipeline on a plain connection; returns each
    /// command's answer. `Err` only when the connection failed: an error reply to one command
    /// is that command's answer.
    pub(crate) async fn send(
        &mut self,
        items: &[Outgoing],
    ) -> RedisResult<Vec<RedisResult<Value>>> {
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
            // Each channel lives on its shard; one after the other keeps every room in order.
            Link::Sharded(conn) => {
                let mut replies = Vec::with_capacity(items.len());
                for item in items {
                    let reply = match item {
                        Outgoing::Publish { channel, body } => {
                            redis::cmd("SPUBLISH")
                                .arg(channel)
                                .arg(body)
                                .query_async(conn)
                                .await
                        }
                        Outgoing::Cmd(cmd) => cmd.query_async(conn).await,
                    };
                    match reply {
                        Err(error) if lost(&error) => return Err(error),
                        reply => replies.push(reply),
                    }
                }
                Ok(replies)
            }
        }
    }

    /// Runs one command and returns its answer.
    pub(crate) async fn ask(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Link::Plain(conn) => cmd.query_async(conn).await,
            Link::Sharded(conn) => cmd.query_async(conn).await,
        }
    }

    pub(crate) async fn ping(&mut self) -> RedisResult<()> {
        match self {
            Link::Plain(conn) => redis::cmd("PING").query_async(conn).await,
            Link::Sharded(conn) => redis::cmd("PING").query_async(conn).await,
        }
    }
}

/// Whether `error` means the connection is gone (rather than one command refused).
pub(crate) fn lost(error: &redis::RedisError) -> bool {
    error.is_io_error() || error.is_timeout() || error.is_unrecoverable_error()
}

/// `channels` grouped by their cluster slot.
fn by_slot(channels: &[String]) -> impl Iterator<Item = Vec<&String>> {
    let mut slots: HashMap<Slot, Vec<&String>> = HashMap::new();
    for channel in channels {
        slots
            .entry(Slot::for_key(channel))
            .or_default()
            .push(channel);
    }
    slots.into_values()
}
