//! Opt-in message history, so that a client that reconnects gets what it missed.
//!
//! With history on, every message gets a position: the server's *epoch* (random, new each time
//! the server starts) and an *offset* from one sequence shared by all of the server's rooms. The
//! frame carries it as `id: <epoch>-<offset>`, each room keeps its last messages, and every
//! connection remembers the last offset queued to it. Because the sequence is shared, one
//! position says where a connection stands in every room it is in, which is what an
//! `EventSource`'s single `Last-Event-ID` needs.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::broker::Recalled;
use crate::frame;
use crate::position::Position;
use crate::sync::lock;

/// The default time a message stays in a room's history.
pub const DEFAULT_HISTORY_TTL: Duration = Duration::from_secs(300);
/// The default time a disconnected `clientId`'s position is kept for its reconnect.
pub const DEFAULT_RESUME_TTL: Duration = Duration::from_secs(60);
/// A resume TTL too long to add to an instant is this long instead (about 30 years).
const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

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

    /// Keeps each message for `ttl` instead of [`DEFAULT_HISTORY_TTL`].
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The number of messages a room keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How long a message stays in the history.
    pub fn ttl(&self) -> Duration {
        self.ttl
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
    /// The broker's history is being asked for the missed messages; the room's live messages
    /// are held back meanwhile, and it becomes `Resumed` or `Resync` when the broker answers.
    Replaying,
    /// A position was given but the gap cannot be filled (trimmed, expired, or another epoch):
    /// nothing was replayed, and `fetch` runs as a resync.
    Resync,
}

/// The message log of every room of a server (or of a [`MemoryBroker`](crate::MemoryBroker)'s
/// cluster), and the sequence that numbers them. Guarded by one lock, which a send with history
/// holds while it numbers, records and queues its message, so every connection gets its messages
/// in offset order.
#[derive(Debug)]
pub(crate) struct HistoryLog {
    epoch: u64,
    offset: u64,
    rooms: HashMap<(Arc<str>, Arc<str>), RoomLog>,
    /// The highest offset that was in a room log since dropped whole (expired).
    forgotten_upto: u64,
}

/// Where each `clientId` that left stood, until when: what the official client's reconnect
/// resumes from.
#[derive(Debug, Default)]
pub(crate) struct Resumes {
    left: HashMap<Arc<str>, (Recalled, Instant)>,
}

impl Resumes {
    /// Remembers where `client_id` left, for `ttl`; [`Recalled::Nothing`] forgets it.
    pub(crate) fn insert(&mut self, client_id: Arc<str>, left: Recalled, ttl: Duration) {
        if left == Recalled::Nothing {
            self.left.remove(&client_id);
            return;
        }
        let now = Instant::now();
        let until = now.checked_add(ttl).unwrap_or(now + FAR);
        self.left.insert(client_id, (left, until));
    }

    /// Takes where `client_id` left, if it has not expired; [`Recalled::Nothing`] otherwise.
    pub(crate) fn take(&mut self, client_id: &str) -> Recalled {
        match self.left.remove(client_id) {
            Some((left, until)) if Instant::now() <= until => left,
            _ => Recalled::Nothing,
        }
    }

    /// Forgets the expired positions.
    pub(crate) fn sweep(&mut self) {
        let now = Instant::now();
        self.left.retain(|_, (_, until)| now <= *until);
    }
}

#[derive(Debug)]
struct RoomLog {
    /// The settings it was last written with, which the sweep follows.
    history: History,
    entries: VecDeque<Entry>,
    /// The highest offset trimmed or expired from this room.
    trimmed_upto: u64,
}

#[derive(Debug)]
struct Entry {
    offset: u64,
    at: Instant,
    /// The encoded frame, for a server's own history.
    frame: Bytes,
    /// The payload, for a broker's history (each node encodes its own frame).
    payload: Option<Arc<str>>,
}

impl HistoryLog {
    pub(crate) fn new() -> Self {
        // The epoch only has to differ between two runs of a server: the start time will do,
        // mixed so that two servers started together differ too.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let epoch = ((nanos ^ u64::from(std::process::id()).rotate_left(32)) >> 12).max(1);
        Self {
            epoch,
            offset: 0,
            rooms: HashMap::new(),
            forgotten_upto: 0,
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
    ) -> (Position, Bytes) {
        let at = self.next();
        let frame = frame::encode_with_id(&at.to_string(), event, payload);
        self.push(event, room, at.offset, frame.clone(), None, history);
        (at, frame)
    }

    /// Numbers a message and records its payload in the room's log, for a broker whose nodes
    /// encode their own frames.
    pub(crate) fn record_payload(
        &mut self,
        event: &Arc<str>,
        room: &str,
        payload: &str,
        history: History,
    ) -> Position {
        let at = self.next();
        self.push(
            event,
            room,
            at.offset,
            Bytes::new(),
            Some(payload.into()),
            history,
        );
        at
    }

    fn next(&mut self) -> Position {
        self.offset += 1;
        Position {
            epoch: self.epoch,
            offset: self.offset,
        }
    }

    fn push(
        &mut self,
        event: &Arc<str>,
        room: &str,
        offset: u64,
        frame: Bytes,
        payload: Option<Arc<str>>,
        history: History,
    ) {
        let now = Instant::now();
        let log = self
            .rooms
            .entry((event.clone(), Arc::from(room)))
            .or_insert_with(|| RoomLog {
                history,
                entries: VecDeque::new(),
                trimmed_upto: 0,
            });
        log.history = history;
        log.entries.push_back(Entry {
            offset,
            at: now,
            frame,
            payload,
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
        self.missed(event, room, from, history)
            .map(|missed| missed.map(|e| e.frame.clone()).collect())
    }

    /// As [`HistoryLog::replay`], as `(offset, payload)` for messages recorded with
    /// [`HistoryLog::record_payload`].
    pub(crate) fn replay_payloads(
        &self,
        event: &Arc<str>,
        room: &str,
        from: Position,
        history: History,
    ) -> Option<Vec<(u64, String)>> {
        self.missed(event, room, from, history).map(|missed| {
            missed
                .map(|e| {
                    (
                        e.offset,
                        e.payload.as_deref().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
    }

    /// The entries of `room` after `from`, if the log still has all of them.
    fn missed(
        &self,
        event: &Arc<str>,
        room: &str,
        from: Position,
        history: History,
    ) -> Option<impl Iterator<Item = &Entry>> {
        if from.epoch != self.epoch || from.offset > self.offset {
            return None;
        }
        let now = Instant::now();
        let entries = match self.rooms.get(&(event.clone(), Arc::from(room))) {
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
                Some(log.entries.iter())
            }
            // No log: either the room never had a message (nothing to replay), or its log
            // expired whole, which is only harmless if that happened before `from`.
            None if self.forgotten_upto <= from.offset => None,
            None => return None,
        };
        Some(
            entries
                .into_iter()
                .flatten()
                .filter(move |e| e.offset > from.offset),
        )
    }

    /// The number of room logs kept.
    #[cfg(test)]
    pub(crate) fn room_logs(&self) -> usize {
        self.rooms.len()
    }

    /// Drops expired messages and room logs, each by the settings it was written with.
    pub(crate) fn sweep(&mut self) {
        let now = Instant::now();
        let mut forgotten = self.forgotten_upto;
        self.rooms.retain(|_, log| {
            let ttl = log.history.ttl;
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

/// A history kept in this process: the log of every room and where each `clientId` that left
/// stood, each under its own lock (the log's first, when both are held).
#[derive(Debug)]
pub(crate) struct LocalHistory {
    log: Mutex<HistoryLog>,
    resumes: Mutex<Resumes>,
}

impl LocalHistory {
    pub(crate) fn new() -> Self {
        Self {
            log: Mutex::new(HistoryLog::new()),
            resumes: Mutex::default(),
        }
    }

    /// The log, locked: numbering, recording and queueing a message happen under it.
    pub(crate) fn log(&self) -> MutexGuard<'_, HistoryLog> {
        lock(&self.log)
    }

    /// Remembers where `client_id` left, for `ttl`.
    pub(crate) fn remember(&self, client_id: Arc<str>, at: Recalled, ttl: Duration) {
        lock(&self.resumes).insert(client_id, at, ttl);
    }

    /// Takes where `client_id` left, if it has not expired.
    pub(crate) fn recall(&self, client_id: &str) -> Recalled {
        lock(&self.resumes).take(client_id)
    }

    /// The number of resume records kept.
    #[cfg(test)]
    pub(crate) fn remembered(&self) -> usize {
        lock(&self.resumes).left.len()
    }

    /// Drops expired messages, room logs and resume records.
    pub(crate) fn sweep(&self) {
        lock(&self.log).sweep();
        lock(&self.resumes).sweep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Arc<str> {
        Arc::from("e")
    }

    #[test]
    fn replay_gives_what_came_after_the_position_in_that_room() {
        let history = History::new(10);
        let mut h = HistoryLog::new();
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
        let mut h = HistoryLog::new();
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
        let mut h = HistoryLog::new();
        let (at, frame) = h.record(&event(), "a", "x", History::new(1));
        let expected = format!("id: {at}\nevent: e\ndata: x\n\n");
        assert_eq!(frame, expected.as_bytes());
    }
}
