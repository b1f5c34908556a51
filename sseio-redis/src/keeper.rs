//! The connection task: one per broker, it owns the connection to Redis, runs the queued
//! commands in pipelines and checks the connection; when the connection is lost it reports it,
//! drops what was queued, reconnects with backoff, subscribes the node's rooms again and catches
//! them up.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use redis::{ErrorKind, PushInfo, RedisError, ServerErrorKind};
use sseio_core::{BrokerError, Node};
use tokio::sync::{mpsc, oneshot};

use crate::broker::{AnswerTo, Command, Shared, lock};
use crate::catch_up::catch_up;
use crate::history::Scripts;
use crate::inbound::read_pushes;
use crate::link::{Link, Outgoing};
use crate::wire;

/// The most commands handled in one round (one pipeline of publishes).
const BATCH: usize = 1024;

/// The task that owns the connection: runs the commands, reconnects when it is lost.
pub(crate) struct Keeper {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// For answering presence queries; weak, so the task ends when the broker is dropped.
    replies: mpsc::WeakUnboundedSender<Command>,
}

impl Keeper {
    /// The task of the broker whose state is `shared`, running what arrives on `commands`.
    pub(crate) fn new(
        shared: Arc<Shared>,
        commands: mpsc::UnboundedReceiver<Command>,
        replies: mpsc::WeakUnboundedSender<Command>,
    ) -> Self {
        Keeper {
            shared,
            commands,
            replies,
        }
    }

    /// Subscribes the control channel, this node's channel and every live room on a fresh
    /// connection, starts reading its messages, and marks the broker up.
    pub(crate) async fn start(
        &mut self,
        mut link: Link,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
    ) -> Result<(Link, oneshot::Receiver<String>), RedisError> {
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
    /// and whoever waits for an answer hears at once that it was never sent; the subscriptions
    /// are taken from the node's rooms when the connection is back.
    fn drop_queued(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            if let Command::Publish { .. } = command {
                self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Serves the connection until it is lost, then reconnects, until the broker is dropped.
    pub(crate) async fn run(mut self, mut link: Link, mut lost: oneshot::Receiver<String>) {
        loop {
            let Some(reason) = self.serve(&mut link, &mut lost).await else {
                return;
            };
            let reason = format!("lost the connection to Redis ({reason}); reconnecting");
            *lock(&self.shared.last_error) = reason.clone();
            self.shared.up.store(false, Ordering::SeqCst);
            // Not kept until the connection is back, which may take long: a confirmed send
            // fails now rather than at its timeout.
            self.drop_queued();
            tracing::warn!(target: "sseio_redis", "{reason}");
            if let Some(node) = self.shared.node.get() {
                node.report(BrokerError::Unavailable { reason });
            }
            let Some(reconnected) = self.reconnect().await else {
                return;
            };
            (link, lost) = reconnected;
            let rooms = self.shared.node.get().map_or(0, |node| node.rooms().len());
            tracing::info!(target: "sseio_redis", rooms, "reconnected to Redis");
        }
    }

    /// Runs commands until the connection is lost (`Some(why)`) or the broker is dropped.
    async fn serve(
        &mut self,
        link: &mut Link,
        lost: &mut oneshot::Receiver<String>,
    ) -> Option<String> {
        let mut check = tokio::time::interval(link.check_every());
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                biased;
                why = &mut *lost => {
                    return Some(why.unwrap_or_else(|_| "connection closed".to_owned()));
                }
                received = self.commands.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        return None;
                    }
                    let done = execute(&self.shared, link, &mut batch).await;
                    batch.clear();
                    if let Err(error) = done {
                        return Some(error.to_string());
                    }
                }
                event = link.event() => {
                    let reports = link.on_event(event).await;
                    self.report(reports);
                }
                _ = check.tick() => {
                    match link.check().await {
                        Ok(reports) => self.report(reports),
                        Err(error) => return Some(error.to_string()),
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
                node.report(BrokerError::Unavailable { reason });
            }
        }
    }

    /// Reconnects with exponential backoff; `None` when the broker was dropped meanwhile.
    async fn reconnect(&mut self) -> Option<(Link, oneshot::Receiver<String>)> {
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
                let (link, pushes) =
                    Link::open(&self.shared.config.target, self.shared.routes.as_ref()).await?;
                self.start(link, pushes).await
            };
            match attempt.await {
                Ok(reconnected) => return Some(reconnected),
                Err(error) => {
                    tracing::debug!(target: "sseio_redis", %error, "reconnecting to Redis failed");
                    *lock(&self.shared.last_error) =
                        format!("cannot reach Redis ({error}); reconnecting");
                }
            }
        }
    }
}

/// Runs one batch of commands in order: consecutive publishes in one go, subscriptions between.
/// On failure the rest of the batch is dropped (its messages are lost: at most once).
async fn execute(
    shared: &Shared,
    link: &mut Link,
    batch: &mut Vec<Command>,
) -> Result<(), RedisError> {
    let mut commands = batch.drain(..).peekable();
    let done = run_commands(shared, link, &mut commands).await;
    let dropped = commands
        .filter(|command| matches!(command, Command::Publish { .. }))
        .count();
    shared.queued.fetch_sub(dropped, Ordering::SeqCst);
    done
}

async fn run_commands(
    shared: &Shared,
    link: &mut Link,
    commands: &mut std::iter::Peekable<impl Iterator<Item = Command>>,
) -> Result<(), RedisError> {
    let mut batch = Vec::new();
    let mut replies = Vec::new();
    while let Some(command) = commands.next() {
        match command {
            Command::Publish { outgoing, reply } => {
                batch.push(outgoing);
                replies.push(Reply::Publish(reply));
            }
            Command::Ask { cmd, reply } => {
                batch.push(Outgoing::Cmd(cmd));
                replies.push(Reply::Ask(reply));
            }
            Command::Subscribe(channel) => link.subscribe(&[channel]).await?,
            Command::Unsubscribe(channel) => link.unsubscribe(&[channel]).await?,
        }
        if batch.is_empty()
            || matches!(
                commands.peek(),
                Some(Command::Publish { .. } | Command::Ask { .. })
            )
        {
            continue;
        }
        let answers = link.send(&batch).await;
        let published = replies
            .iter()
            .filter(|reply| matches!(reply, Reply::Publish(_)))
            .count();
        shared.queued.fetch_sub(published, Ordering::SeqCst);
        batch.clear();
        let answers = match answers {
            Ok(answers) => answers,
            // Written, maybe run, never answered: each waiting sender hears so.
            Err(error) => {
                for reply in replies.drain(..) {
                    if let Some(reply) = reply.into_sender() {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
                return Err(error);
            }
        };
        let mut reload = false;
        for (reply, answer) in replies.drain(..).zip(answers) {
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
    }
    Ok(())
}

/// Who waits for the answer to one command of a pipeline.
enum Reply {
    /// A publish (counted against `max_queued`), maybe with someone waiting: a presence query
    /// for how many nodes received it, a confirmed send for Redis's answer.
    Publish(Option<AnswerTo>),
    /// A command whose whole answer is awaited.
    Ask(AnswerTo),
}

impl Reply {
    fn into_sender(self) -> Option<AnswerTo> {
        match self {
            Reply::Publish(reply) => reply,
            Reply::Ask(reply) => Some(reply),
        }
    }
}
