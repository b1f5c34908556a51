//! The join step of a connect, run under the registry lock of its `clientId`: the connection
//! joins its rooms, with what it missed replayed first (from this server's history) or held
//! back for a `fetch` or the broker's replay. It returns the plan of what follows.

use std::sync::Arc;

use bytes::Bytes;

use crate::broker::Recalled;
use crate::frame;
use crate::handler::EventHandler;
use crate::history::{HistoryLog, Joined};
use crate::hub::{Live, Registering};
use crate::position::{Position, Seen};
use crate::request::Context;
use crate::room::{Hold, Member};
use crate::server::ServerInner;
use crate::sink::SseSink;

use super::admit::Admitted;
use super::catch_up::{self, Cut};
use super::resume::{Resume, Start};

/// What follows a join, outside the registry lock.
pub(crate) struct Plan {
    /// The connection's context, for its `fetch`es.
    pub(crate) context: Context,
    /// The handlers whose `fetch` runs, each with the hold that keeps its room's messages
    /// back meanwhile, and whether it runs as a resync.
    pub(crate) fetches: Vec<(EventHandler, Arc<Hold>, bool)>,
    /// The rooms held back until the broker's history answers their replay.
    pub(crate) replaying: Vec<(EventHandler, Arc<str>, Arc<Hold>)>,
    /// The position the broker's replay starts from, if one was asked.
    pub(crate) resume_at: Option<Position>,
    /// Whether the connection was told of a possible gap already, for every room with history
    /// (see [`Start::doubtful`]).
    pub(crate) doubtful: bool,
    /// Whether it got the first part of a replay larger than its buffer: its stream ends once
    /// that is written, and nothing else follows.
    pub(crate) catching_up: bool,
    /// Where the connection stands, with history.
    pub(crate) seen: Option<Arc<Seen>>,
}

/// Joins `admitted`'s rooms as connection `registering.serial`; returns the connection for the
/// registry and the plan of what follows.
pub(crate) fn join(
    server: &ServerInner,
    admitted: Admitted,
    resume: Resume,
    sink: &Arc<dyn SseSink>,
    registering: &Registering,
    span: tracing::Span,
) -> (Live, Plan) {
    let local_history = server.local_history();
    // With this server's own history, joining happens under its log's lock: no message can be
    // numbered between the replay and the join.
    let log = (resume.history_on && !resume.by_broker).then(|| local_history.log());
    let left = match &log {
        Some(_) => local_history.recall(&admitted.client_id),
        None => Recalled::Nothing,
    };
    let start = resume.start(registering.replaced, left);
    if resume.history_on
        && resume.by_broker
        && let Some(store) = server.history_store()
    {
        // Under the registry lock of the clientId, so that it comes before this stream's close,
        // which overwrites it.
        store.mark_open(&admitted.client_id);
    }
    let seen = resume.history_on.then(|| Arc::new(Seen::default()));
    if let (Some(seen), Some(log)) = (&seen, &log) {
        // Everything before now predates the join or is replayed below.
        seen.advance(log.now());
    }
    let max_bytes = server.limits().max_buffer_bytes;
    let max_frames = server.limits().max_buffer_frames;
    let room = max_bytes.saturating_sub(sink.queued_bytes());
    let (replays, cut) = local_replays(&admitted.rooms, log.as_deref(), start, room);
    let catching_up = matches!(cut, Cut::UpTo(_));
    let mut plan = Plan {
        context: admitted.context,
        fetches: Vec::new(),
        replaying: Vec::new(),
        resume_at: start.from.flatten(),
        doubtful: start.doubtful,
        catching_up,
        seen: seen.clone(),
    };
    if let (Cut::UpTo(upto), Some(seen), Some(Some(from))) = (cut, &seen, start.from) {
        // The connection stands before the first message left for its reconnect.
        let next = replays.iter().flatten().flatten().map(offset_of);
        if let Some(next) = next.filter(|&offset| offset > upto).min() {
            seen.missed(Position {
                offset: next,
                ..from
            });
        }
    }
    for ((handler, room), replay) in admitted.rooms.iter().zip(replays) {
        // Each notice goes ahead of anything of its room. Refused only by a sink already
        // full, which the next delivery closes.
        let in_doubt = start.doubtful && handler.history().is_some();
        if in_doubt {
            let _ = server.notify_gap(&**sink, seen.as_deref(), handler.event());
        }
        let replay = Replaying {
            log: log.as_deref(),
            from: start.from,
            frames: replay,
            cut,
        };
        let joined = resume_room(server, &**sink, seen.as_deref(), handler, replay);
        server.metrics().joined(joined);
        if joined == Joined::Resync && !in_doubt {
            let _ = server.notify_gap(&**sink, seen.as_deref(), handler.event());
        }
        // Catching up, the stream ends once its part is written: nothing else goes out, and
        // what arrives meanwhile waits for the reconnect.
        let held = (catching_up && handler.history().is_some())
            || joined == Joined::Replaying
            || (handler.fetch().is_some() && joined != Joined::Resumed);
        let hold = held.then(|| Arc::new(Hold::new(max_bytes, max_frames, seen.clone())));
        match (&hold, joined) {
            _ if catching_up => {}
            (Some(hold), Joined::Replaying) => {
                plan.replaying
                    .push((handler.clone(), room.clone(), hold.clone()));
            }
            (Some(hold), _) => {
                plan.fetches
                    .push((handler.clone(), hold.clone(), joined == Joined::Resync));
            }
            (None, _) => {}
        }
        let member = Member {
            client_id: admitted.client_id.clone(),
            seen: seen.clone(),
            sink: sink.clone(),
            hold,
        };
        handler.join(room, registering.serial, member);
    }
    if let (false, Some(seen), Some(Some(from))) = (plan.replaying.is_empty(), &seen, start.from) {
        // Until the broker's replay is given, the connection stands where it starts.
        seen.replaying_from(from);
    }
    drop(log);
    let live = Live::new(
        admitted.client_id,
        admitted.principal,
        sink.clone(),
        admitted.rooms,
        seen,
        span,
    );
    (live, plan)
}

/// What a room's join knows of its replay.
struct Replaying<'a> {
    /// This server's history, locked; `None` with a broker's.
    log: Option<&'a HistoryLog>,
    /// `None` for a fresh connection; `Some(None)` for a position that cannot be filled.
    from: Option<Option<Position>>,
    /// With this server's history: the room's missed frames, `None` when its gap cannot be
    /// filled.
    frames: Option<Vec<Bytes>>,
    /// Where the connection's replays are cut.
    cut: Cut,
}

/// How one room is joined: with this server's history, what it missed (up to the cut) is
/// queued now.
fn resume_room(
    server: &ServerInner,
    sink: &dyn SseSink,
    seen: Option<&Seen>,
    handler: &EventHandler,
    replay: Replaying<'_>,
) -> Joined {
    match (handler.history(), replay.log, replay.from) {
        (Some(_), Some(_), Some(Some(_))) => {
            let part = match (replay.frames, replay.cut) {
                (Some(frames), Cut::Whole) => Some(frames),
                (Some(frames), Cut::UpTo(upto)) => Some(
                    frames
                        .into_iter()
                        .take_while(|frame| offset_of(frame) <= upto)
                        .collect(),
                ),
                // Not even the oldest message fits: every room with one resyncs.
                (Some(frames), Cut::Nothing) => frames.is_empty().then_some(frames),
                (None, _) => None,
            };
            match part.map(|frames| queue_replay(server, sink, seen, frames)) {
                Some(true) => Joined::Resumed,
                _ => Joined::Resync,
            }
        }
        // Decided when the broker answers; held back meanwhile.
        (Some(_), None, Some(Some(_))) => Joined::Replaying,
        (Some(_), _, Some(None)) => Joined::Resync,
        _ => Joined::Fresh,
    }
}

/// With this server's history `log`, each of `rooms`' missed frames since `start` (`None` for
/// a room without history or whose gap cannot be filled), and where they are cut to fit in
/// `room` bytes (see [`catch_up`]).
fn local_replays(
    rooms: &[(EventHandler, Arc<str>)],
    log: Option<&HistoryLog>,
    start: Start,
    room: usize,
) -> (Vec<Option<Vec<Bytes>>>, Cut) {
    let replays: Vec<_> = rooms
        .iter()
        .map(
            |(handler, room)| match (handler.history(), log, start.from) {
                (Some(history), Some(log), Some(Some(from))) => {
                    log.replay(handler.event_arc(), room, from, history)
                }
                _ => None,
            },
        )
        .collect();
    let sizes = replays.iter().flatten().flatten();
    let sizes = sizes.map(|frame| (offset_of(frame), frame.len())).collect();
    let cut = catch_up::cut(sizes, room);
    (replays, cut)
}

/// The offset of a frame from this server's history (which carries its `id:`).
fn offset_of(frame: &Bytes) -> u64 {
    frame::position_of(frame).map_or(0, |at| at.offset)
}

/// Queues the replayed frames of one room as one chunk (so a replay costs one frame of the
/// connection's frame budget, as a write coalesces it anyway); whether the sink took it. One
/// too large for the connection's buffer is not queued at all, and its room resyncs.
fn queue_replay(
    server: &ServerInner,
    sink: &dyn SseSink,
    seen: Option<&Seen>,
    frames: Vec<Bytes>,
) -> bool {
    let Some(chunk) = frame::concat(&frames) else {
        return true;
    };
    let sent = sink.send(chunk).is_ok();
    if sent {
        if let Some(seen) = seen {
            seen.gave_some();
        }
        for frame in &frames {
            server.metrics().sent(1, frame.len());
        }
    }
    sent
}
