//! Catching up: how the numbered messages (history on) of a node's rooms reach it once and in
//! order across a lost connection to Redis. The connection task replays what the rooms missed
//! once it has subscribed them again; inbound dispatch holds the live messages back meanwhile.

use std::sync::Arc;
use std::time::Duration;

use redis::{ErrorKind, RedisError, Value};
use sseio_core::{CloseReason, History, Node, Position, ReplayRoom};

use crate::broker::{Shared, lock};
use crate::history;
use crate::link::Transport;

/// How a node keeps the numbered messages of its rooms whole across a lost connection to Redis:
/// Pub/Sub keeps nothing for a node that is away, but the history does, so once the node has
/// subscribed its rooms again it replays, from its history, what they missed meanwhile, and
/// delivers it before the live messages that arrived since. Every numbered message reaches the
/// node once and in order, however the connection comes and goes.
#[derive(Debug, Default)]
pub(crate) struct CatchUp {
    /// While the node catches up: the live numbered messages that arrived, held back.
    held: Option<Vec<Numbered>>,
    /// The last numbered message delivered: one at or before it (of its epoch) that arrives
    /// again (live, after it was replayed) is dropped.
    delivered: Option<Position>,
    /// Where the next catch-up starts: every message of the node's rooms after it was, or will
    /// be, delivered live.
    known: Option<Position>,
}

impl CatchUp {
    /// Holds back the live numbered messages that arrive from now until the catch-up.
    pub(crate) fn hold(&mut self) {
        self.held = Some(Vec::new());
    }

    /// Stops holding live numbered messages back and forgets those held (the catch-up failed:
    /// the next one replays them, in order).
    pub(crate) fn forget_held(&mut self) {
        self.held = None;
    }
}

/// A numbered message held back during a catch-up.
#[derive(Debug)]
struct Numbered {
    at: Position,
    event: String,
    room: String,
    payload: String,
}

/// Whether a message at `at` was delivered already, `delivered` being the last one.
fn delivered_already(delivered: Option<Position>, at: Position) -> bool {
    delivered.is_some_and(|last| last.epoch() == at.epoch() && last.offset() >= at.offset())
}

/// The history each room is replayed with on a catch-up: everything its stream still has (a
/// handler's own TTL only trims what a new connection replays).
fn catch_up_history() -> History {
    History::new(1).with_ttl(Duration::from_secs(365 * 24 * 60 * 60))
}

/// Replays, on a fresh connection whose rooms are subscribed, what each of `rooms` missed since
/// the node last stood in the cluster's sequence (from the start of a new one, if Redis lost its
/// data meanwhile), then what was held back; closes the connections of a room whose history no
/// longer has all it missed, so that each resumes from where it stood or is told of the gap.
pub(crate) async fn catch_up(
    shared: &Shared,
    link: &mut impl Transport,
    rooms: &[(Arc<str>, Arc<str>)],
) -> Result<(), RedisError> {
    let asked: Vec<ReplayRoom> = rooms
        .iter()
        .map(|(event, room)| ReplayRoom {
            event: event.clone(),
            room: room.clone(),
            history: catch_up_history(),
        })
        .collect();
    let replay = |from: Option<Position>| shared.keys.replay(&shared.scripts, &asked, from);
    let parse = |answer: &Value| {
        history::parse_replay(answer, asked.len()).map_err(|error| {
            RedisError::from((ErrorKind::Parse, "a catch-up replay", error.to_string()))
        })
    };
    let known = lock(&shared.catch_up).known;
    let mut answer = parse(&link.ask(&replay(known)).await?)?;
    let mut from = known;
    if let Some(known) = known
        && known.epoch() != answer.now.epoch()
    {
        // Redis restarted without its data: every message of the new sequence came after.
        let start = Position::new(answer.now.epoch(), 0);
        answer = parse(&link.ask(&replay(Some(start))).await?)?;
        from = Some(start);
    }
    let mut missed = Vec::new();
    let mut unfilled = Vec::new();
    if from.is_some() {
        for ((event, room), messages) in rooms.iter().zip(answer.rooms) {
            match messages {
                Some(messages) => missed.extend(
                    messages
                        .into_iter()
                        .map(|(offset, payload)| (offset, event, room, payload)),
                ),
                None => unfilled.push((event, room)),
            }
        }
    }
    missed.sort_by_key(|(offset, ..)| *offset);
    // Before the broker serves a server there is no room, nothing to deliver.
    let node = shared.node.get();
    let mut state = lock(&shared.catch_up);
    for (offset, event, room, payload) in missed {
        let at = Position::new(answer.now.epoch(), offset);
        if let Some(node) = node
            && !delivered_already(state.delivered, at)
        {
            node.deliver_numbered(event, room, at, &payload);
            state.delivered = Some(at);
        }
    }
    for held in state.held.take().unwrap_or_default() {
        if let Some(node) = node
            && !delivered_already(state.delivered, held.at)
        {
            node.deliver_numbered(&held.event, &held.room, held.at, &held.payload);
            state.delivered = Some(held.at);
        }
    }
    state.known = match state.delivered {
        Some(delivered) if delivered.epoch() == answer.now.epoch() => Some(Position::new(
            delivered.epoch(),
            delivered.offset().max(answer.now.offset()),
        )),
        _ => Some(answer.now),
    };
    drop(state);
    if !unfilled.is_empty() {
        tracing::warn!(
            target: "sseio_redis",
            rooms = unfilled.len(),
            "rooms missed more than their history keeps while Redis was away; closing their \
             streams, which resume or resync"
        );
    }
    if let Some(node) = node {
        for (event, room) in unfilled {
            node.close_room(event, room, CloseReason::ServerClosed);
        }
    }
    Ok(())
}

/// Delivers a numbered message that arrived live: held back during a catch-up, dropped if the
/// catch-up delivered it already.
pub(crate) fn deliver_numbered(
    shared: &Shared,
    node: &Node,
    at: Position,
    event: &str,
    room: &str,
    payload: &str,
) {
    let mut state = lock(&shared.catch_up);
    if let Some(held) = &mut state.held {
        held.push(Numbered {
            at,
            event: event.to_owned(),
            room: room.to_owned(),
            payload: payload.to_owned(),
        });
        return;
    }
    if delivered_already(state.delivered, at) {
        return;
    }
    node.deliver_numbered(event, room, at, payload);
    state.delivered = Some(at);
    state.known = Some(at);
}
