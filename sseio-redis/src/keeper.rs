//! The connection task: one per broker, it owns the connection to Redis, runs the queued
//! commands in pipelines and checks the connection; when the connection is lost it reports it,
//! drops what was queued, reconnects with backoff, subscribes the node's rooms again and catches
//! them up.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use redis::{ErrorKind, PushInfo, RedisError, ServerErrorKind};
use sseio_core::{BrokerError, Node};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::broker::{AnswerTo, Command, Shared, lock};
use crate::catch_up::catch_up;
use crate::history::Scripts;
use crate::inbound::read_pushes;
use crate::link::{Connector, Outgoing, Transport};
use crate::wire;

/// The most commands handled in one round (one pipeline of publishes).
const BATCH: usize = 1024;

/// The task that owns the connection: runs the commands, reconnects when it is lost. Opens its
/// connections with `C` (Redis, or a stub in the tests).
pub(crate) struct Keeper<C: Connector> {
    shared: Arc<Shared>,
    connector: C,
    commands: mpsc::Receiver<Command>,
    /// For answering presence queries; weak, so the task ends when the broker is dropped.
    replies: mpsc::WeakSender<Command>,
}

impl<C: Connector> Keeper<C> {
    /// The task of the broker whose state is `shared`, running what arrives on `commands` on
    /// the connections `connector` opens.
    pub(crate) fn new(
        shared: Arc<Shared>,
        connector: C,
        commands: mpsc::Receiver<Command>,
        replies: mpsc::WeakSender<Command>,
    ) -> Self {
        Keeper {
            shared,
            connector,
            commands,
            replies,
        }
    }

    /// Subscribes the control channel, this node's channel and every live room on a fresh
    /// connection, starts reading its messages, and marks the broker up.
    pub(crate) async fn start(
        &mut self,
        mut link: C::Transport,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
    ) -> Result<(C::Transport, oneshot::Receiver<String>), RedisError> {
        self.drop_queued();
        if !self.shared.config.target.sharded {
            for load in Scripts::load_commands() {
                link.ask(&load).await?;
            }
        }
        let (lost_tx, lost) = oneshot::channel();
        tokio::spawn(read_pushes(
            self.shared.clone(),
            self.replies.clone(),
            pushes,
            lost_tx,
        ));
        let mut channels = vec![
            self.shared.control.clone(),
            self.shared.node_channel.clone(),
        ];
        let rooms = self.shared.node.get().map(Node::rooms).unwrap_or_default();
        let prefix = &self.shared.config.prefix;
        channels.extend(
            rooms
                .iter()
                .map(|(event, room)| wire::room_channel(prefix, event, room)),
        );
        let history = !self.shared.config.target.sharded;
        if history {
            // From the first subscription on, numbered messages wait for the catch-up.
            lock(&self.shared.catch_up).hold();
        }
        let subscribed = async {
            for batch in channels.chunks(self.shared.config.resubscribe_batch) {
                link.subscribe(batch).await?;
            }
            if history {
                catch_up(&self.shared, &mut link, &rooms).await?;
            }
            Ok(())
        };
        if let Err(error) = subscribed.await {
            // What was held is replayed by the next catch-up, in order.
            lock(&self.shared.catch_up).forget_held();
            return Err(error);
        }
        self.shared.up.store(true, Ordering::SeqCst);
        Ok((link, lost))
    }

    /// Drops whatever was queued for a lost connection: its messages are lost (at most once)
    /// and whoever waits for an answer hears at once that it was never sent. The subscriptions
    /// wanted meanwhile are forgotten too: the node's rooms are subscribed from those it serves
    /// once the connection is back (forgotten before [`Keeper::start`] reads them).
    fn drop_queued(&mut self) {
        while self.commands.try_recv().is_ok() {}
        self.shared.wanted.forget();
    }

    /// Serves the connection until it is lost, then reconnects, until the broker is dropped.
    pub(crate) async fn run(mut self, mut link: C::Transport, mut lost: oneshot::Receiver<String>) {
        loop {
            let Some(Lost { why, error }) = self.serve(&mut link, &mut lost).await else {
                return;
            };
            let reason = format!("lost the connection to Redis ({why}); reconnecting");
            tracing::warn!(target: "sseio_redis", "{reason}");
            let unavailable = match error {
                Some(error) => BrokerError::unavailable_from(reason, error),
                None => BrokerError::unavailable(reason),
            };
            *lock(&self.shared.last_error) = unavailable.clone();
            self.shared.up.store(false, Ordering::SeqCst);
            // Not kept until the connection is back, which may take long: a confirmed send
            // fails now rather than at its timeout.
            self.drop_queued();
            if let Some(node) = self.shared.node.get() {
                node.report(unavailable);
            }
            let Some(reconnected) = self.reconnect().await else {
                return;
            };
            (link, lost) = reconnected;
            let rooms = self.shared.node.get().map_or(0, |node| node.rooms().len());
            tracing::info!(target: "sseio_redis", rooms, "reconnected to Redis");
        }
    }

    /// Runs commands until the connection is lost (`Some`, saying why) or the broker is
    /// dropped.
    async fn serve(
        &mut self,
        link: &mut C::Transport,
        lost: &mut oneshot::Receiver<String>,
    ) -> Option<Lost> {
        let mut check = tokio::time::interval(link.check_every());
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                biased;
                why = &mut *lost => {
                    let why = why.unwrap_or_else(|_| "connection closed".to_owned());
                    return Some(Lost { why, error: None });
                }
                received = self.commands.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        return None;
                    }
                    // The subscriptions changed before these commands were queued go first: a
                    // replay, say, runs after its rooms' `SUBSCRIBE`.
                    let done = match subscribe_wanted(&self.shared, link).await {
                        Ok(()) => execute(link, &mut batch).await,
                        Err(error) => Err(error),
                    };
                    batch.clear();
                    if let Err(error) = done {
                        return Some(Lost::from(error));
                    }
                }
                () = self.shared.wanted.changed() => {
                    if let Err(error) = subscribe_wanted(&self.shared, link).await {
                        return Some(Lost::from(error));
                    }
                }
                event = link.event() => {
                    let reports = link.on_event(event).await;
                    self.report(reports);
                }
                _ = check.tick() => {
                    match link.check().await {
                        Ok(reports) => self.report(reports),
                        Err(error) => return Some(Lost::from(error)),
                    }
                }
            }
        }
    }

    /// Raises a [`Notification::Broker`](sseio_core::Notification::Broker) for each of
    /// `reasons` (a master of the Redis Cluster lost or unreachable).
    fn report(&self, reasons: Vec<String>) {
        if let Some(node) = self.shared.node.get() {
            for reason in reasons {
                node.report(BrokerError::unavailable(reason));
            }
        }
    }

    /// Reconnects with exponential backoff; `None` when the broker was dropped meanwhile.
    async fn reconnect(&mut self) -> Option<(C::Transport, oneshot::Receiver<String>)> {
        let (first, max) = (
            self.shared.config.reconnect_min,
            self.shared.config.reconnect_max,
        );
        let mut wait = first;
        loop {
            tokio::time::sleep(wait).await;
            if self.commands.is_closed() {
                return None;
            }
            wait = (wait * 2).min(max);
            let attempt = async {
                let (link, pushes) = self.connector.open().await?;
                self.start(link, pushes).await
            };
            match attempt.await {
                Ok(reconnected) => return Some(reconnected),
                Err(error) => {
                    tracing::debug!(target: "sseio_redis", %error, "reconnecting to Redis failed");
                    let reason = format!("cannot reach Redis ({error}); reconnecting");
                    *lock(&self.shared.last_error) = BrokerError::unavailable_from(reason, error);
                }
            }
        }
    }
}

/// Why a connection was lost: in words, and Redis's error when there was one (the reader of
/// the connection's messages only sees it end).
struct Lost {
    why: String,
    error: Option<RedisError>,
}

impl From<RedisError> for Lost {
    fn from(error: RedisError) -> Self {
        Lost {
            why: error.to_string(),
            error: Some(error),
        }
    }
}

/// The subscriptions the node wants changed since the connection task last applied them, by
/// channel (`true`: subscribed). State, not a queue: the last wish for a channel wins, so a room
/// created and emptied again before the task got to it costs one `UNSUBSCRIBE` at most; while
/// Redis is away the changes are forgotten at each reconnection attempt, and the node subscribes
/// the rooms it serves then.
#[derive(Debug, Default)]
pub(crate) struct Wanted {
    changes: Mutex<HashMap<String, bool>>,
    changed: Notify,
}

impl Wanted {
    /// Wants `channel` subscribed (or not), and wakes the connection task.
    pub(crate) fn set(&self, channel: String, subscribed: bool) {
        lock(&self.changes).insert(channel, subscribed);
        self.changed.notify_one();
    }

    /// Forgets the changes not applied yet.
    fn forget(&self) {
        lock(&self.changes).clear();
    }

    /// Takes the changes not applied yet: the channels to subscribe, and those to unsubscribe.
    pub(crate) fn take(&self) -> (Vec<String>, Vec<String>) {
        let changes = std::mem::take(&mut *lock(&self.changes));
        let (mut subscribe, mut unsubscribe) = (Vec::new(), Vec::new());
        for (channel, subscribed) in changes {
            if subscribed {
                subscribe.push(channel);
            } else {
                unsubscribe.push(channel);
            }
        }
        (subscribe, unsubscribe)
    }

    /// Completes once a change was made since the last time it completed.
    async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// Applies the subscription changes not applied yet, in batches of `resubscribe_batch`
/// channels.
async fn subscribe_wanted(shared: &Shared, link: &mut impl Transport) -> Result<(), RedisError> {
    let (subscribe, unsubscribe) = shared.wanted.take();
    for batch in unsubscribe.chunks(shared.config.resubscribe_batch) {
        link.unsubscribe(batch).await?;
    }
    for batch in subscribe.chunks(shared.config.resubscribe_batch) {
        link.subscribe(batch).await?;
    }
    Ok(())
}

/// Runs one batch of commands in order, in one pipeline (sharded: one per master). When the
/// connection fails, each sender waiting for an answer hears so, and the rest is lost (at most
/// once).
async fn execute(link: &mut impl Transport, batch: &mut Vec<Command>) -> Result<(), RedisError> {
    let mut outgoing = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for command in batch.drain(..) {
        match command {
            Command::Publish {
                outgoing: item,
                reply,
            } => {
                outgoing.push(item);
                replies.push(Reply::Publish(reply));
            }
            Command::Ask { cmd, reply } => {
                outgoing.push(Outgoing::Cmd(cmd));
                replies.push(Reply::Ask(reply));
            }
        }
    }
    if outgoing.is_empty() {
        return Ok(());
    }
    let answers = match link.send(&outgoing).await {
        Ok(answers) => answers,
        // Written, maybe run, never answered: each waiting sender hears so.
        Err(error) => {
            for reply in replies {
                if let Some(reply) = reply.into_sender() {
                    let _ = reply.send(Err(error.clone()));
                }
            }
            return Err(error);
        }
    };
    let mut reload = false;
    for (reply, answer) in replies.into_iter().zip(answers) {
        if let (Reply::Publish(_), Err(error)) = (&reply, &answer) {
            // The scripts are gone from Redis's cache (`SCRIPT FLUSH`, or a failover):
            // reconnecting loads them again.
            reload |= error.kind() == ErrorKind::Server(ServerErrorKind::NoScript);
            tracing::warn!(target: "sseio_redis", %error, "Redis refused a publish");
        }
        if let Some(reply) = reply.into_sender() {
            let _ = reply.send(answer);
        }
    }
    if reload {
        return Err(RedisError::from((
            ErrorKind::Server(ServerErrorKind::NoScript),
            "the history scripts are not loaded",
        )));
    }
    Ok(())
}

/// Who waits for the answer to one command of a pipeline.
enum Reply {
    /// A publish, maybe with someone waiting: a presence query
    /// for how many nodes received it, a confirmed send for Redis's answer.
    Publish(Option<AnswerTo>),
    /// A command whose whole answer is awaited.
    Ask(AnswerTo),
}

impl Reply {
    /// Who waits for the answer, if anyone.
    fn into_sender(self) -> Option<AnswerTo> {
        match self {
            Reply::Publish(reply) => reply,
            Reply::Ask(reply) => Some(reply),
        }
    }
}
