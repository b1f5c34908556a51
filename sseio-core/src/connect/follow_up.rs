//! The follow-ups of a connect, once it joined: each `fetch` runs, and the broker's history
//! answers the replay of the rooms held back for it.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::broker::{BoxFuture, BrokerError, Replay, ReplayRoom};
use crate::error::ConnectionError;
use crate::fetch::run_fetch;
use crate::frame;
use crate::handler::EventHandler;
use crate::history::Joined;
use crate::notify::CloseReason;
use crate::position::{Position, Seen};
use crate::request::Context;
use crate::room::Hold;
use crate::server::ServerInner;
use crate::sink::{SinkError, SseSink};

use super::join::Plan;

/// The connection the follow-ups are for.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) serial: u64,
    pub(crate) client_id: Arc<str>,
    pub(crate) context: Context,
    pub(crate) sink: Arc<dyn SseSink>,
    pub(crate) span: tracing::Span,
}

/// Starts what `plan` says follows the join of `target`, on the current tokio runtime; the
/// connection's close aborts it.
pub(crate) fn follow_up(server: &Arc<ServerInner>, target: Target, plan: Plan) {
    let hub = server.hub();
    if plan.fetches.is_empty() && plan.seen.is_none() {
        return;
    }
    let Ok(runtime) = Handle::try_current() else {
        // Nothing can run: deliver what is held, and say why nothing came first.
        let holds = plan
            .fetches
            .iter()
            .map(|(handler, hold, _)| (handler, hold));
        let replays = plan
            .replaying
            .iter()
            .map(|(handler, _, hold)| (handler, hold));
        for (handler, hold) in holds.chain(replays) {
            server.report(ConnectionError::Fetch {
                event: handler.event_arc().clone(),
                client_id: target.client_id.clone(),
                source: "no tokio runtime to run it on".into(),
            });
            if hold.release(&*target.sink, None, None) == Err(SinkError::Full) {
                hub.close(target.serial, CloseReason::SlowConsumer);
            }
        }
        return;
    };
    let mut tasks: Vec<AbortHandle> = plan
        .fetches
        .into_iter()
        .map(|(handler, hold, resync)| {
            let fetch = run_fetch(
                Arc::downgrade(hub),
                server.limits().fetch_timeout,
                handler,
                target.context.for_fetch(resync),
                target.serial,
                target.sink.clone(),
                hold,
            );
            runtime
                .spawn(fetch.instrument(target.span.clone()))
                .abort_handle()
        })
        .collect();
    if let (Some(store), Some(seen)) = (server.history_store(), plan.seen) {
        let asked = plan
            .replaying
            .iter()
            .filter_map(|(handler, room, _)| {
                Some(ReplayRoom {
                    event: handler.event_arc().clone(),
                    room: room.clone(),
                    history: handler.history()?,
                })
            })
            .collect();
        let from = plan.resume_at.filter(|_| !plan.replaying.is_empty());
        let answer = store.replay(asked, from);
        let span = target.span.clone();
        let resume = resume_from_broker(
            Arc::downgrade(server),
            answer,
            from,
            plan.replaying,
            target.clone(),
            seen,
        );
        tasks.push(runtime.spawn(resume.instrument(span)).abort_handle());
    }
    hub.add_tasks(target.serial, tasks);
}

/// Finishes joining a connection's rooms with the broker's history, once it answers: each room
/// held back for a replay gets its missed messages and then the held live ones, or (when its
/// gap cannot be filled, or the broker cannot answer) its `fetch` as a resync. The connection
/// stands where the cluster's sequence stood at the answer.
async fn resume_from_broker(
    server: Weak<ServerInner>,
    answer: BoxFuture<Result<Replay, BrokerError>>,
    from: Option<Position>,
    replaying: Vec<(EventHandler, Arc<str>, Arc<Hold>)>,
    target: Target,
    seen: Arc<Seen>,
) {
    let answer = answer.await;
    let Some(server) = server.upgrade() else {
        return;
    };
    let replay = match answer {
        Ok(replay) => {
            seen.advance(replay.now);
            replay.rooms
        }
        Err(source) => {
            if !replaying.is_empty() {
                server.report(ConnectionError::Resume {
                    client_id: target.client_id.clone(),
                    source,
                });
            }
            Vec::new()
        }
    };
    let hub = server.hub();
    let mut fetches = Vec::new();
    let mut replay = replay.into_iter();
    for (handler, _room, hold) in replaying {
        let missed = replay.next().flatten();
        let outcome = match (missed, from) {
            (Some(missed), Some(from)) => {
                server.metrics().joined(Joined::Resumed);
                let floor = Position {
                    offset: missed.last().map_or(from.offset, |(offset, _)| *offset),
                    ..from
                };
                let frames: Vec<Bytes> = missed
                    .iter()
                    .map(|(offset, payload)| {
                        let at = Position {
                            offset: *offset,
                            ..from
                        };
                        let frame =
                            frame::encode_with_id(&at.to_string(), handler.event(), payload);
                        server.metrics().sent(1, frame.len());
                        frame
                    })
                    .collect();
                hold.release(&*target.sink, frame::concat(&frames), Some(floor))
            }
            _ if handler.fetch().is_some() => {
                server.metrics().joined(Joined::Resync);
                let fetch = run_fetch(
                    Arc::downgrade(hub),
                    server.limits().fetch_timeout,
                    handler,
                    target.context.for_fetch(true),
                    target.serial,
                    target.sink.clone(),
                    hold,
                );
                fetches.push(tokio::spawn(fetch.instrument(target.span.clone())).abort_handle());
                Ok(())
            }
            _ => {
                server.metrics().joined(Joined::Resync);
                hold.release(&*target.sink, None, None)
            }
        };
        if outcome == Err(SinkError::Full) {
            hub.close(target.serial, CloseReason::SlowConsumer);
        }
    }
    hub.add_tasks(target.serial, fetches);
}
