//! `RedisHistory`: the [`HistoryStore`] a [`RedisBroker`](crate::RedisBroker) gives its server,
//! the cluster's history in Redis. It builds the commands of the parent module (its scripts and
//! keys) and queues them with the broker's other commands.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::Cmd;
use sseio_core::{
    BoxFuture, BrokerError, History, HistoryStore, Position, Recalled, Replay, ReplayRoom,
};
use tokio::sync::mpsc;

use crate::broker::{Command, Shared, ask, confirmed, enqueue, take_over};
use crate::history::{self, Record};
use crate::link::Outgoing;
use crate::wire;

/// How long the record that a `clientId`'s stream is open on a node lives: a stream open longer
/// than this on a node that dies without closing it resumes as a first connect.
const OPEN_MARK_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The cluster's history in Redis (see the `history` module): what
/// [`Broker::history_store`](sseio_core::Broker::history_store) gives the server.
pub(crate) struct RedisHistory {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
}

impl HistoryStore for RedisHistory {
    fn publish(
        &self,
        event: &str,
        room: &str,
        payload: &str,
        history: History,
    ) -> Result<(), BrokerError> {
        let record = self.record(event, room, payload, history);
        enqueue(&self.shared, &self.commands, record, None)
    }

    /// Confirmed once Redis answered the script: the message is numbered, recorded and
    /// published.
    fn publish_confirmed(
        &self,
        event: &str,
        room: &str,
        payload: &str,
        history: History,
    ) -> BoxFuture<Result<(), BrokerError>> {
        let record = self.record(event, room, payload, history);
        confirmed(&self.shared, &self.commands, record)
    }

    fn replay(
        &self,
        rooms: Vec<ReplayRoom>,
        from: Option<Position>,
    ) -> BoxFuture<Result<Replay, BrokerError>> {
        let cmd = self.shared.keys.replay(&self.shared.scripts, &rooms, from);
        let answer = ask(&self.shared, &self.commands, cmd);
        Box::pin(async move { history::parse_replay(&answer.await?, rooms.len()) })
    }

    /// Unless the record names another node (the `clientId` opened a stream there since).
    fn remember(&self, client_id: &str, at: Recalled, ttl: Duration) {
        self.write_record(client_id, at, ttl);
    }

    fn recall(&self, client_id: &str) -> BoxFuture<Result<Recalled, BrokerError>> {
        let answer = ask(&self.shared, &self.commands, self.recall_cmd(client_id));
        Box::pin(async move {
            Ok(match history::parse_record(&answer.await?) {
                Some(Record::Left(left)) => left,
                _ => Recalled::Nothing,
            })
        })
    }

    /// The record of the `clientId`: where its stream stood when it closed; or, when it names
    /// the node its stream is open on, that node closes it and says where it stood, or is known
    /// gone (nobody listens on its channel: it died, or lost Redis) and the client resyncs.
    fn resume_point(&self, client_id: &str) -> BoxFuture<Result<Recalled, BrokerError>> {
        let answer = ask(&self.shared, &self.commands, self.recall_cmd(client_id));
        let (shared, commands) = (self.shared.clone(), self.commands.clone());
        let client = client_id.to_owned();
        Box::pin(async move {
            match history::parse_record(&answer.await?) {
                None => Ok(Recalled::Nothing),
                Some(Record::Left(left)) => Ok(left),
                // Open here: this node's registry replaces it, with its position.
                Some(Record::OpenOn(node)) if node == shared.node_id => Ok(Recalled::Nothing),
                Some(Record::OpenOn(node)) => take_over(&shared, &commands, &client, &node).await,
            }
        })
    }

    fn mark_open(&self, client_id: &str) {
        let cmd = self
            .shared
            .keys
            .mark_open(client_id, &self.shared.mark, OPEN_MARK_TTL);
        // Best effort, as every record: while Redis is down the client resyncs on its return.
        let _ = enqueue(&self.shared, &self.commands, Outgoing::Cmd(cmd), None);
    }

    fn unmark_open(&self, client_id: &str) {
        self.write_record(client_id, Recalled::Nothing, OPEN_MARK_TTL);
    }
}

impl RedisHistory {
    /// The history of the broker whose state is `shared`, queueing on `commands`.
    pub(crate) fn new(shared: Arc<Shared>, commands: mpsc::Sender<Command>) -> Self {
        RedisHistory { shared, commands }
    }

    fn recall_cmd(&self, client_id: &str) -> Cmd {
        self.shared.keys.recall(&self.shared.scripts, client_id)
    }

    /// Writes where a stream that closed here left (or, [`Recalled::Nothing`], that it is no
    /// longer open here), unless another node's stream owns the record.
    fn write_record(&self, client_id: &str, at: Recalled, ttl: Duration) {
        let shared = &self.shared;
        let cmd = shared
            .keys
            .remember(&shared.scripts, client_id, &shared.mark, at, ttl);
        // Best effort: while Redis is down the client will resync on its return.
        let _ = enqueue(shared, &self.commands, Outgoing::Cmd(cmd), None);
    }

    /// The script run that numbers, records and publishes one message.
    fn record(&self, event: &str, room: &str, payload: &str, history: History) -> Outgoing {
        let channel = wire::room_channel(&self.shared.config.prefix, event, room);
        let body = wire::encode_message(event, room, payload);
        Outgoing::Cmd(self.shared.keys.record(
            &self.shared.scripts,
            &channel,
            (event, room, payload),
            // The script puts the position in front of the message, after its own tag.
            &body[1..],
            history,
        ))
    }
}

impl fmt::Debug for RedisHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisHistory")
            .field("prefix", &self.shared.config.prefix)
            .finish_non_exhaustive()
    }
}
