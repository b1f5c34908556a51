//! Positions in a message sequence, and where one connection stands in it.

use std::fmt;
use std::sync::Mutex;

use crate::broker::Recalled;
use crate::sync::lock;

/// A position in a message sequence: what a frame's `id:` and `Last-Event-ID` carry, as
/// `<epoch>-<offset>`.
///
/// The epoch names one sequence (a server's run, or a cluster's history in its broker); the
/// offset counts the messages of every room in it, from 1. Offset 0 is the position before the
/// first message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    pub(crate) epoch: u64,
    pub(crate) offset: u64,
}

impl Position {
    /// The position `offset` of sequence `epoch`.
    pub fn new(epoch: u64, offset: u64) -> Self {
        Self { epoch, offset }
    }

    /// The sequence this position belongs to.
    pub fn epoch(self) -> u64 {
        self.epoch
    }

    /// The number of messages before and at this position in its sequence.
    pub fn offset(self) -> u64 {
        self.offset
    }

    /// Reads `<epoch>-<offset>`, as [`Display`](fmt::Display) writes it; anything else is `None`.
    pub fn parse(id: &str) -> Option<Self> {
        let (epoch, offset) = id.trim().split_once('-')?;
        Some(Self {
            epoch: epoch.parse().ok()?,
            offset: offset.parse().ok()?,
        })
    }

    /// The position just before this one in the same sequence.
    fn before(self) -> Self {
        Self {
            offset: self.offset.saturating_sub(1),
            ..self
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.offset)
    }
}

/// Where one connection stands in the sequence of the messages with history, shared by all its
/// memberships: what its `clientId` resumes from once it closes.
///
/// Two positions, read and written together under one lock (so neither is ever read torn):
/// `given`, the last position queued to the connection, and `gap`, the first position it was
/// not given: refused because its buffer was full, still held back behind a `fetch` or a replay
/// when it closed, or queued and never handed to the transport. A resume starts before the gap
/// when there is one, so the client gets again every message it did not get; otherwise after
/// `given`.
///
/// That holds when the server ends the stream: what it wrote goes out before the connection
/// closes. A connection that drops (the client or a network path between ends it) may lose
/// what was in flight in the network and the proxies between, and a client that resumes by
/// `clientId` cannot say what it got: so the state also says whether the connection was given
/// any message at all, and such a stream resumes as [`Recalled::Dropped`] (told of a possible
/// gap) rather than plainly after `given`.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    state: Mutex<SeenState>,
}

#[derive(Debug, Default, Clone, Copy)]
struct SeenState {
    given: Option<Position>,
    gap: Option<Position>,
    /// Whether any message was queued to the connection (live, held back or replayed), or a
    /// gap notice.
    gave: bool,
    /// A broker's replay of what came after this position is asked and not given yet: the
    /// connection stands there until it is.
    replaying: Option<Position>,
}

impl Seen {
    /// A message at `at` was queued to the connection (or the connection stands at `at` without
    /// one): moves `given` to `at`, unless it stands later in the same sequence already.
    pub(crate) fn advance(&self, at: Position) {
        let mut state = lock(&self.state);
        match state.given {
            Some(given) if given.epoch == at.epoch && given.offset >= at.offset => {}
            _ => state.given = Some(at),
        }
    }

    /// A message at `at` was queued to the connection: as [`Seen::advance`], and it was given
    /// a message.
    pub(crate) fn gave(&self, at: Position) {
        self.advance(at);
        lock(&self.state).gave = true;
    }

    /// Messages that move nothing here were queued to the connection: a replay (which moves
    /// where it stands on its own), a `fetch`'s answer, or a gap notice (which may be lost
    /// with the connection too, and is then sent again).
    pub(crate) fn gave_some(&self) {
        lock(&self.state).gave = true;
    }

    /// A message at `at` did not reach the connection's transport.
    pub(crate) fn missed(&self, at: Position) {
        let mut state = lock(&self.state);
        match state.gap {
            Some(gap) if gap.epoch == at.epoch && gap.offset <= at.offset => {}
            _ => state.gap = Some(at),
        }
    }

    /// Where the connection's `clientId` resumes from: before its first missed message, or at
    /// the last one given; `None` before it was given any position.
    pub(crate) fn resume_point(&self) -> Option<Position> {
        let state = *lock(&self.state);
        state
            .replaying
            .or(state.gap.map(Position::before))
            .or(state.given)
    }

    /// A broker's replay of what came after `from` is asked: until
    /// [`Seen::replay_done`], the connection stands at `from`, whatever arrives live meanwhile.
    pub(crate) fn replaying_from(&self, from: Position) {
        lock(&self.state).replaying = Some(from);
    }

    /// The replay asked with [`Seen::replaying_from`] was given (or resynced, or cut in parts).
    pub(crate) fn replay_done(&self) {
        lock(&self.state).replaying = None;
    }

    /// Where the connection's `clientId` resumes from once its stream ended, `by_server` or
    /// not: at [`Seen::resume_point`] when the server ended it or it was given no message;
    /// [`Recalled::Dropped`] there when it dropped after it was given one, which may not have
    /// arrived ([`Recalled::Lost`] if it stood nowhere yet); [`Recalled::Nothing`] before it
    /// was given any position or message.
    pub(crate) fn left(&self, by_server: bool) -> Recalled {
        let gave = lock(&self.state).gave;
        match (self.resume_point(), !by_server && gave) {
            (Some(at), false) => Recalled::At(at),
            (Some(at), true) => Recalled::Dropped(at),
            (None, true) => Recalled::Lost,
            (None, false) => Recalled::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_from_their_id() {
        assert_eq!(Position::parse("17-42"), Some(Position::new(17, 42)));
        for bad in ["", "17", "-1", "a-1", "1-b", "1-2-3"] {
            assert_eq!(Position::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_connection_resumes_before_its_first_missed_message() {
        let seen = Seen::default();
        assert_eq!(seen.resume_point(), None);
        seen.advance(Position::new(7, 3));
        seen.advance(Position::new(7, 2));
        assert_eq!(seen.resume_point(), Some(Position::new(7, 3)), "never back");
        seen.missed(Position::new(7, 6));
        seen.advance(Position::new(7, 9));
        seen.missed(Position::new(7, 5));
        seen.missed(Position::new(7, 8));
        assert_eq!(seen.resume_point(), Some(Position::new(7, 4)));
    }

    #[test]
    fn a_dropped_connection_that_was_given_messages_resumes_in_doubt() {
        let seen = Seen::default();
        assert_eq!(seen.left(false), Recalled::Nothing, "no position yet");
        seen.advance(Position::new(7, 3));
        assert_eq!(
            seen.left(false),
            Recalled::At(Position::new(7, 3)),
            "given nothing"
        );
        seen.gave(Position::new(7, 4));
        assert_eq!(
            seen.left(true),
            Recalled::At(Position::new(7, 4)),
            "closed by the server"
        );
        assert_eq!(
            seen.left(false),
            Recalled::Dropped(Position::new(7, 4)),
            "dropped after a message"
        );
        let replayed = Seen::default();
        replayed.advance(Position::new(7, 9));
        replayed.gave_some();
        assert_eq!(
            replayed.left(false),
            Recalled::Dropped(Position::new(7, 9)),
            "dropped after a replay"
        );
        let fetched = Seen::default();
        fetched.gave_some();
        assert_eq!(
            fetched.left(false),
            Recalled::Lost,
            "dropped before it stood anywhere"
        );
    }

    /// A stream cut before its broker's replay answered was remembered nowhere, so its next
    /// reconnect started afresh and missed what the replay would have given.
    #[test]
    fn a_connection_waiting_for_its_replay_stands_where_the_replay_starts() {
        let seen = Seen::default();
        seen.replaying_from(Position::new(7, 3));
        seen.missed(Position::new(7, 9));
        assert_eq!(
            seen.left(false),
            Recalled::At(Position::new(7, 3)),
            "held live is later"
        );
        seen.advance(Position::new(7, 10));
        seen.gave_some();
        seen.replay_done();
        assert_eq!(seen.left(true), Recalled::At(Position::new(7, 8)));
    }

    /// Where a connection stood was read torn.
    ///
    /// Its epoch and offset were two atomics written one after the other, so a close that read
    /// them while a message of another sequence arrived (a broker's history restarting) could
    /// record a position that never existed: the new epoch with the old offset, which then
    /// replays nothing from the new sequence, or the old epoch with a new offset, which skips.
    #[test]
    fn a_position_is_never_read_torn() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};

        let seen = Arc::new(Seen::default());
        let (a, b) = (Position::new(1, 1_000_000), Position::new(2, 1));
        seen.advance(a);
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                for i in 0u64.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    seen.advance(if i % 2 == 0 { b } else { a });
                }
            })
        };
        // Two atomics written one after the other showed a torn pair within a few hundred
        // thousand reads here.
        let torn = (0..1_000_000)
            .map(|_| seen.resume_point().unwrap())
            .find(|at| *at != a && *at != b);
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        assert_eq!(torn, None, "read torn");
    }
}
