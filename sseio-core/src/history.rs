//! Opt-in message history, so that a client that reconnects gets what it missed.
//!
//! With history on, every message gets a position: the server's *epoch* (random, new each time
//! the server starts) and an *offset* from one sequence shared by all of the server's rooms. The
//! frame carries it as `id: <epoch>-<offset>`, each room keeps its last messages, and every
//! connection remembers the last offset queued to it. Because the sequence is shared, one
//! position says where a connection stands in every room it is in, which is what an
//! `EventSource`'s single `Last-Event-ID` needs.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::frame;

/// The default time a message stays in a room's history.
pub const DEFAULT_HISTORY_TTL: Duration = Duration::from_secs(300);
/// The default time a disconnected `clientId`'s position is kept for its reconnect.
pub const DEFAULT_RESUME_TTL: Duration = Duration::from_secs(60);

/// How much history a room keeps: its last `capacity` messages, each for at most `ttl`.
///
/// Pass it to [`ServerBuilder::history`](crate::ServerBuilder::history) for every handler, or to
/// [`HandlerOptions::history`](crate::HandlerOptions::history) for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    pub(crate) capacity: usize,
    pub(crate) ttl: Duration,
}

impl History {
    /// Each room keeps its last `capacity` messages, for [`DEFAULT_HISTORY_TTL`] (5 minutes).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            ttl: DEFAULT_HISTORY_TTL,
        }
    }

    /// How long a message stays in the history.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }
}

/// A position in the server's message sequence: what `Last-Event-ID` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) epoch: u64,
    pub(crate) offset: u64,
}

impl Position {
    /// Reads `<epoch>-<offset>`; anything else is `None`.
    pub(crate) fn parse(id: &str) -> Option<Self> {
        let (epoch, offset) = id.trim().split_once('-')?;
        Some(Self {
            epoch: epoch.parse().ok()?,
            offset: offset.parse().ok()?,
        })
    }
}

/// How a connection's rooms of one handler were joined, as its `fetch` sees it through
/// [`Context::resync`](crate::Context::resync).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Joined {
    /// A new connection: no position was given. `fetch` runs as usual.
    Fresh,
    /// The missed messages were replayed; `fetch` does not run.
    Resumed,
    /// A position was given but the gap cannot be filled (trimmed, expired, or another epoch):
    /// nothing was replayed, and `fetch` runs as a resync.
    Resync,
}

/// The history of every room of a server, the sequence, and the positions of `clientId`s that
/// left recently. Guarded by one lock, which a send with history holds while it numbers, records
/// and queues its message, so every connection gets its messages in offset order.
#[derive(Debug)]
pub(crate) struct Histories {
    epoch: u64,
    offset: u64,
    rooms: HashMap<(Arc<str>, Arc<str>), RoomLog>,
    /// The highest offset that was in a room log since dropped whole (expired).
    forgotten_upto: u64,
    left: HashMap<Arc<str>, (Position, Instant)>,
    resume_ttl: Duration,
}

#[derive(Debug, Default)]
struct RoomLog {
    entries: VecDeque<Entry>,
    /// The highest offset trimmed or expired from this room.
    trimmed_upto: u64,
}

#[derive(Debug)]
struct Entry {
    offset: u64,
    at: Instant,
    frame: Bytes,
}

impl Histories {
    pub(crate) fn new(resume_ttl: Duration) -> Self {
        // The epoch only has to differ between two runs of a server: the start time will do,
        // mixed so that two servers started together differ too.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let epoch = (nanos ^ u64::from(std::process::id()).rotate_left(32)) >> 12;
        Self {
            epoch,
            offset: 0,
            rooms: HashMap::new(),
            forgotten_upto: 0,
            left: HashMap::new(),
            resume_ttl,
        }
    }

    /// The position of the last message sent so far.
    pub(crate) fn now(&self) -> Position {
        Position {
            epoch: self.epoch,
            offset: self.offset,
        }
    }

    /// Numbers a message, encodes its frame with its `id:`, and records it in the room's log.
    pub(crate) fn record(
        &mut self,
        event: &Arc<str>,
        room: &str,
        payload: &str,
        history: History,
    ) -> (u64, Bytes) {
        self.offset += 1;
        let offset = self.offset;
        let frame = frame::encode_with_id(&format!("{}-{offset}", self.epoch), event, payload);
        let now = Instant::now();
        let log = self
            .rooms
            .entry((event.clone(), Arc::from(room)))
            .or_default();
        log.entries.push_back(Entry {
            offset,
            at: now,
            frame: frame.clone(),
        });
        while log.entries.len() > history.capacity
            || log
                .entries
                .front()
                .is_some_and(|e| now.duration_since(e.at) > history.ttl)
        {
            if let Some(dropped) = log.entries.pop_front() {
                log.trimmed_upto = dropped.offset;
            }
        }
        (offset, frame)
    }

    /// The frames of `room` after `from`, if the log still has all of them; `None` when the gap
    /// cannot be filled.
    pub(crate) fn replay(
        &self,
        event: &Arc<str>,
        room: &str,
        from: Position,
        history: History,
    ) -> Option<Vec<Bytes>> {
        if from.epoch != self.epoch || from.offset > self.offset {
            return None;
        }
        let now = Instant::now();
        match self.rooms.get(&(event.clone(), Arc::from(room))) {
            Some(log) => {
                let expired_upto = log
                    .entries
                    .iter()
                    .take_while(|e| now.duration_since(e.at) > history.ttl)
                    .last()
                    .map_or(0, |e| e.offset);
                if log.trimmed_upto.max(expired_upto) > from.offset {
                    return None;
                }
                Some(
                    log.entries
                        .iter()
                        .filter(|e| e.offset > from.offset)
                        .map(|e| e.frame.clone())
                        .collect(),
                )
            }
            // No log: either the room never had a message (nothing to replay), or its log
            // expired whole, which is only harmless if that happened before `from`.
            None => (self.forgotten_upto <= from.offset).then(Vec::new),
        }
    }

    /// Remembers where a `clientId` stood when its connection closed.
    pub(crate) fn left(&mut self, client_id: Arc<str>, offset: u64) {
        let position = Position {
            epoch: self.epoch,
            offset,
        };
        self.left.insert(client_id, (position, Instant::now()));
    }

    /// Takes the position a `clientId` left at, if it is recent enough.
    pub(crate) fn take_left(&mut self, client_id: &str) -> Option<Position> {
        let (position, at) = self.left.remove(client_id)?;
        (at.elapsed() <= self.resume_ttl).then_some(position)
    }

    /// Drops expired messages, room logs and positions; called on every heartbeat tick.
    pub(crate) fn sweep(&mut self, ttl_of: impl Fn(&str) -> Option<Duration>) {
        let now = Instant::now();
        let resume_ttl = self.resume_ttl;
        self.left
            .retain(|_, (_, at)| now.duration_since(*at) <= resume_ttl);
        let mut forgotten = self.forgotten_upto;
        self.rooms.retain(|(event, _), log| {
            let ttl = ttl_of(event).unwrap_or(Duration::ZERO);
            while log
                .entries
                .front()
                .is_some_and(|e| now.duration_since(e.at) > ttl)
            {
                if let Some(dropped) = log.entries.pop_front() {
                    log.trimmed_upto = dropped.offset;
                }
            }
            let keep = !log.entries.is_empty();
            if !keep {
                forgotten = forgotten.max(log.trimmed_upto);
            }
            keep
        });
        self.forgotten_upto = forgotten;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Arc<str> {
        Arc::from("e")
    }

    #[test]
    fn positions_parse_from_their_id() {
        assert_eq!(
            Position::parse("17-42"),
            Some(Position {
                epoch: 17,
                offset: 42
            })
        );
        for bad in ["", "17", "-1", "a-1", "1-b", "1-2-3"] {
            assert_eq!(Position::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn replay_gives_what_came_after_the_position_in_that_room() {
        let history = History::new(10);
        let mut h = Histories::new(DEFAULT_RESUME_TTL);
        let start = h.now();
        h.record(&event(), "a", "1", history);
        h.record(&event(), "b", "other room", history);
        let (_, second) = h.record(&event(), "a", "2", history);
        let after_first = Position {
            offset: start.offset + 1,
            ..start
        };
        assert_eq!(
            h.replay(&event(), "a", after_first, history),
            Some(vec![second])
        );
        assert_eq!(h.replay(&event(), "a", h.now(), history), Some(vec![]));
        assert_eq!(h.replay(&event(), "never", start, history), Some(vec![]));
    }

    #[test]
    fn a_gap_past_the_capacity_or_another_epoch_cannot_be_filled() {
        let history = History::new(2);
        let mut h = Histories::new(DEFAULT_RESUME_TTL);
        let start = h.now();
        for n in 0..3 {
            h.record(&event(), "a", &n.to_string(), history);
        }
        assert_eq!(h.replay(&event(), "a", start, history), None);
        let one_in = Position {
            offset: start.offset + 1,
            ..start
        };
        assert_eq!(
            h.replay(&event(), "a", one_in, history).map(|f| f.len()),
            Some(2)
        );
        let other_epoch = Position {
            epoch: start.epoch + 1,
            ..one_in
        };
        assert_eq!(h.replay(&event(), "a", other_epoch, history), None);
    }

    #[test]
    fn frames_carry_their_position_as_id() {
        let mut h = Histories::new(DEFAULT_RESUME_TTL);
        let (offset, frame) = h.record(&event(), "a", "x", History::new(1));
        let expected = format!("id: {}-{offset}\nevent: e\ndata: x\n\n", h.now().epoch);
        assert_eq!(frame, expected.as_bytes());
    }
}
