//! The follow-ups of a connect, once it joined: each `fetch` runs, and the broker's history
//! answers the replay of the rooms held back for it.

use std::future::Future;
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
use crate::hub::Ending;
use crate::notify::CloseReason;
use crate::position::{Position, Seen};
use crate::request::Context;
use crate::room::Hold;
use crate::server::ServerInner;
use crate::sink::{SinkError, SseSink};

use super::catch_up::{self, Cut};
use super::join::Plan;

/// The connection the follow-ups are for.
#[derive(Clone)]
struct Target {
    serial: u64,
    client_id: Arc<str>,
    context: Context,
    sink: Arc<dyn SseSink>,
    span: tracing::Span,
}

/// Starts what `plan` says follows the join of connection `serial`, on the current tokio
/// runtime; the connection's close aborts it.
pub(crate) fn follow_up(
    server: &Arc<ServerInner>,
    serial: u64,
    client_id: Arc<str>,
    sink: Arc<dyn SseSink>,
    span: tracing::Span,
    plan: Plan,
) {
    if plan.catching_up {
        // Its part of the replay is queued; the stream ends once that is written.
        let hub = server.hub();
        return hub.close_with(serial, CloseReason::CatchingUp, Ending::AfterQueued);
    }
    if plan.fetches.is_empty() && plan.seen.is_none() {
        return;
    }
    let Plan {
        context,
        fetches,
        replaying,
        resume_at,
        doubtful,
        seen,
        ..
    } = plan;
    let target = Target {
        serial,
        client_id,
        context,
        sink,
        span,
    };
    let Ok(runtime) = Handle::try_current() else {
        let fetches = fetches.iter().map(|(handler, hold, _)| (handler, hold));
        let replays = replaying.iter().map(|(handler, _, hold)| (handler, hold));
        return release_without_runtime(server, &target, fetches.chain(replays));
    };
    let mut tasks: Vec<AbortHandle> = fetches
        .into_iter()
        .map(|(handler, hold, resync)| {
            let fetch = start_fetch(server, &target, handler, hold, resync);
            runtime.spawn(fetch).abort_handle()
        })
        .collect();
    if let (Some(store), Some(seen)) = (server.history_store(), seen) {
        let asked = replaying
            .iter()
            .filter_map(|(handler, room, _)| {
                Some(ReplayRoom {
                    event: handler.event_arc().clone(),
                    room: room.clone(),
                    history: handler.history()?,
                })
            })
            .collect();
        let from = resume_at.filter(|_| !replaying.is_empty());
        let answer = store.replay(asked, from);
        let span = target.span.clone();
        let resume = Resuming {
            server: Arc::downgrade(server),
            from,
            told: doubtful,
            target: target.clone(),
            seen,
        };
        let task = resume.finish(answer, replaying).instrument(span);
        tasks.push(runtime.spawn(task).abort_handle());
    }
    server.hub().add_tasks(target.serial, tasks);
}

/// The `fetch` of `handler` for `target`, in the connection's span, releasing `hold` after it.
fn start_fetch(
    server: &ServerInner,
    target: &Target,
    handler: EventHandler,
    hold: Arc<Hold>,
    resync: bool,
) -> impl Future<Output = ()> + Send + 'static {
    run_fetch(
        Arc::downgrade(server.hub()),
        server.limits().fetch_timeout,
        handler,
        target.context.for_fetch(resync),
        target.serial,
        target.sink.clone(),
        hold,
    )
    .instrument(target.span.clone())
}

/// Outside a tokio runtime nothing can run: delivers what is held, and says why nothing came
/// first.
fn release_without_runtime<'a>(
    server: &ServerInner,
    target: &Target,
    held: impl Iterator<Item = (&'a EventHandler, &'a Arc<Hold>)>,
) {
    for (handler, hold) in held {
        server.report(ConnectionError::Fetch {
            event: handler.event_arc().clone(),
            client_id: target.client_id.clone(),
            source: "no tokio runtime to run it on".into(),
        });
        if hold.release(&*target.sink, None, None) == Err(SinkError::Full) {
            server.hub().close(target.serial, CloseReason::SlowConsumer);
        }
    }
}

/// One room of a broker's replay, once it answered.
struct Replayed {
    handler: EventHandler,
    /// What arrived live meanwhile.
    hold: Arc<Hold>,
    /// Its missed messages as frames, each with its position; `None` where the gap cannot be
    /// filled.
    frames: Option<Vec<(Position, Bytes)>>,
}

/// A connection waiting for the broker's history to answer its replay.
struct Resuming {
    server: Weak<ServerInner>,
    /// The position the replay was asked from.
    from: Option<Position>,
    /// Whether each room was told of a possible gap at the join already.
    told: bool,
    target: Target,
    seen: Arc<Seen>,
}

impl Resuming {
    /// Finishes joining the rooms held back for the replay, once the broker answers: each gets
    /// its missed messages and then the held live ones, or (when its gap cannot be filled, or
    /// the broker cannot answer) its `fetch` as a resync. The connection stands where the
    /// cluster's sequence stood at the answer.
    async fn finish(
        self,
        answer: BoxFuture<Result<Replay, BrokerError>>,
        replaying: Vec<(EventHandler, Arc<str>, Arc<Hold>)>,
    ) {
        let answer = answer.await;
        let Some(server) = self.server.upgrade() else {
            return;
        };
        let replay = match answer {
            Ok(replay) => {
                self.seen.advance(replay.now);
                replay.rooms
            }
            Err(source) => {
                if !replaying.is_empty() {
                    server.report(ConnectionError::Resume {
                        client_id: self.target.client_id.clone(),
                        source,
                    });
                }
                Vec::new()
            }
        };
        // Each room's missed messages as frames, oldest first; `None` where the gap cannot be
        // filled (not in the history any more, or the broker could not answer).
        let mut replay = replay.into_iter();
        let mut rooms: Vec<Replayed> = replaying
            .into_iter()
            .map(|(handler, _room, hold)| {
                let missed = replay.next().flatten();
                let frames = match (missed, self.from) {
                    (Some(missed), Some(from)) => Some(self.frames(&handler, from, &missed)),
                    _ => None,
                };
                Replayed {
                    handler,
                    hold,
                    frames,
                }
            })
            .collect();
        let sizes = rooms
            .iter()
            .flat_map(|room| room.frames.iter().flatten())
            .map(|(at, frame)| (at.offset, frame.len()))
            .collect();
        let room = server.limits().max_buffer_bytes;
        match catch_up::cut(sizes, room.saturating_sub(self.target.sink.queued_bytes())) {
            Cut::Whole => {}
            Cut::UpTo(upto) => return self.catch_up(&server, &rooms, upto),
            // Not even the oldest message fits next to what is queued: the rooms resync.
            Cut::Nothing => rooms.iter_mut().for_each(|room| room.frames = None),
        }
        let mut fetches = Vec::new();
        for Replayed {
            handler,
            hold,
            frames,
        } in rooms
        {
            let released = match (frames, self.from) {
                (Some(frames), Some(from)) => {
                    server.metrics().joined(Joined::Resumed);
                    Self::release(&server, &self.target, &hold, from, &frames)
                }
                _ => {
                    server.metrics().joined(Joined::Resync);
                    // Ahead of the room's held messages and its resync, once.
                    let told = if self.told {
                        Ok(())
                    } else {
                        server.notify_gap(&*self.target.sink, Some(&self.seen), handler.event())
                    };
                    if told.is_ok() && handler.fetch().is_some() {
                        let fetch = start_fetch(&server, &self.target, handler, hold, true);
                        fetches.push(tokio::spawn(fetch).abort_handle());
                        Ok(())
                    } else {
                        told.and_then(|()| hold.release(&*self.target.sink, None, None))
                    }
                }
            };
            if released == Err(SinkError::Full) {
                server
                    .hub()
                    .close(self.target.serial, CloseReason::SlowConsumer);
            }
        }
        self.seen.replay_done();
        server.hub().add_tasks(self.target.serial, fetches);
    }

    /// Sends each room's missed messages up to offset `upto` (the part of a replay larger than
    /// the connection's buffer that fits) and ends the stream once they are written, without
    /// releasing the rooms' held live messages: the connection stands at `upto`, and its
    /// reconnect gets the rest (see [`catch_up`]).
    fn catch_up(&self, server: &ServerInner, rooms: &[Replayed], upto: u64) {
        let replayed = rooms
            .iter()
            .filter_map(|room| Some((&room.hold, room.frames.as_ref()?)));
        let mut next: Option<Position> = None;
        for (hold, frames) in replayed {
            let part: Vec<Bytes> = frames
                .iter()
                .take_while(|(at, _)| at.offset <= upto)
                .map(|(_, frame)| frame.clone())
                .collect();
            if let Some((at, _)) = frames.get(part.len()) {
                next = Some(next.map_or(*at, |next| min_by_offset(next, *at)));
            }
            if let Some((at, _)) = frames.first() {
                hold.replayed_up_to(Position {
                    offset: upto,
                    ..*at
                });
            }
            let Some(chunk) = frame::concat(&part) else {
                continue;
            };
            if self.target.sink.send(chunk).is_err() {
                if let Some((at, _)) = frames.first() {
                    self.seen.missed(*at);
                }
                self.seen.replay_done();
                return server
                    .hub()
                    .close(self.target.serial, CloseReason::SlowConsumer);
            }
            server.metrics().joined(Joined::Resumed);
            for frame in &part {
                server.metrics().sent(1, frame.len());
            }
        }
        self.seen.gave_some();
        if let Some(next) = next {
            self.seen.missed(next);
        }
        self.seen.replay_done();
        let serial = self.target.serial;
        server
            .hub()
            .close_with(serial, CloseReason::CatchingUp, Ending::AfterQueued);
    }

    /// One room's `missed` messages (as `(offset, payload)` after `from`) as frames, each with
    /// its position.
    fn frames(
        &self,
        handler: &EventHandler,
        from: Position,
        missed: &[(u64, String)],
    ) -> Vec<(Position, Bytes)> {
        missed
            .iter()
            .map(|(offset, payload)| {
                let at = Position {
                    offset: *offset,
                    ..from
                };
                (
                    at,
                    frame::encode_with_id(&at.to_string(), handler.event(), payload),
                )
            })
            .collect()
    }

    /// Sends one room's replayed `frames` (its missed messages after `from`), then what its
    /// `hold` kept back, without the live copies of what was replayed.
    fn release(
        server: &ServerInner,
        target: &Target,
        hold: &Hold,
        from: Position,
        frames: &[(Position, Bytes)],
    ) -> Result<(), SinkError> {
        let floor = frames.last().map_or(from, |(at, _)| *at);
        let frames: Vec<Bytes> = frames.iter().map(|(_, frame)| frame.clone()).collect();
        for frame in &frames {
            server.metrics().sent(1, frame.len());
        }
        hold.release(&*target.sink, frame::concat(&frames), Some(floor))
    }
}

/// The earlier of two positions of one sequence.
fn min_by_offset(a: Position, b: Position) -> Position {
    if b.offset < a.offset { b } else { a }
}
