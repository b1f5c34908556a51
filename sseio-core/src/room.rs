//! Rooms: the connections of one handler that share a room id, and the fetch hold-back that
//! keeps a new member's messages behind its `fetch` result.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::frame;
use crate::position::{Position, Seen};
use crate::sink::{SinkError, SseSink};
use crate::sync::lock;

/// The members of one room, by connection serial.
#[derive(Debug, Default)]
pub(crate) struct Room {
    pub(crate) members: HashMap<u64, Member>,
}

/// One connection's membership in one room.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) client_id: Arc<str>,
    /// Where the connection stands in the messages with history (shared by all its
    /// memberships); `None` without history.
    pub(crate) seen: Option<Arc<Seen>>,
    pub(crate) sink: Arc<dyn SseSink>,
    /// Present while, or because, the connection's `fetch` or replay for this room runs.
    pub(crate) hold: Option<Arc<Hold>>,
}

impl Member {
    /// Delivers one frame, numbered `at` when it has history: straight to the sink, or into
    /// the hold-back queue while the connection's `fetch` or replay runs. Where the connection
    /// stands moves on only if the frame was taken.
    pub(crate) fn deliver(&self, frame: Bytes, at: Option<Position>) -> Result<(), SinkError> {
        let result = match &self.hold {
            Some(hold) => hold.deliver(&*self.sink, frame, at),
            None => self.sink.send(frame),
        };
        if let (Some(seen), Some(at)) = (&self.seen, at) {
            match result {
                Ok(()) => seen.gave(at),
                Err(_) => seen.missed(at),
            }
        }
        result
    }

    /// What is still held back for this membership was never given to the connection.
    pub(crate) fn mark_held_as_missed(&self) {
        if let Some(hold) = &self.hold {
            hold.mark_held_as_missed();
        }
    }
}

/// Messages held back while one connection's `fetch`, or its replay from a broker's history,
/// for one event runs.
///
/// While `holding` is set, frames go to `held`; [`Hold::release`] sends the fetch result (or the
/// replayed frames) and then the held frames to the sink and clears `holding`, all under the
/// `held` lock, so a frame sent concurrently lands either in `held` (and goes out in order) or
/// after everything released.
///
/// A replay also sets a *floor*: the position of the last frame it replayed. A live frame at or
/// before it in the same sequence was in the replay already (it was published while the replay
/// was read), so it is dropped, whether it was held or arrives later.
pub(crate) struct Hold {
    holding: AtomicBool,
    held: Mutex<Held>,
    max_bytes: usize,
    max_frames: usize,
    /// Where the connection stands, with history: what is dropped unsent counts as missed.
    seen: Option<Arc<Seen>>,
    /// Written once, before `holding` is cleared; epoch 0 means no floor.
    floor_epoch: AtomicU64,
    floor_offset: AtomicU64,
}

#[derive(Default)]
struct Held {
    frames: Vec<(Bytes, Option<Position>)>,
    bytes: usize,
}

impl Hold {
    /// A hold that keeps back up to `max_bytes` in `max_frames` (the connection's buffer
    /// budget, which held and queued frames share).
    pub(crate) fn new(max_bytes: usize, max_frames: usize, seen: Option<Arc<Seen>>) -> Self {
        Self {
            holding: AtomicBool::new(true),
            held: Mutex::new(Held::default()),
            max_bytes,
            max_frames,
            seen,
            floor_epoch: AtomicU64::new(0),
            floor_offset: AtomicU64::new(0),
        }
    }

    fn deliver(
        &self,
        sink: &dyn SseSink,
        frame: Bytes,
        at: Option<Position>,
    ) -> Result<(), SinkError> {
        if self.holding.load(Ordering::Acquire) {
            let mut held = lock(&self.held);
            if self.holding.load(Ordering::Acquire) {
                // Held and queued frames share the connection's one budget.
                if held.bytes + frame.len() + sink.queued_bytes() > self.max_bytes
                    || held.frames.len() + sink.queued_frames() >= self.max_frames
                {
                    return Err(SinkError::Full);
                }
                held.bytes += frame.len();
                held.frames.push((frame, at));
                return Ok(());
            }
        }
        if self.replayed(at) {
            return Ok(());
        }
        sink.send(frame)
    }

    /// Counts the first frame still held back (if any) as missed by the connection.
    fn mark_held_as_missed(&self) {
        if let Some(seen) = &self.seen
            && let Some(at) = lock(&self.held)
                .frames
                .iter()
                .find_map(|(_, at)| at.filter(|at| !self.replayed(Some(*at))))
        {
            seen.missed(at);
        }
    }

    /// The frames up to `floor` went out in a replay, and the connection closes without
    /// releasing this hold: held copies of them were not missed.
    pub(crate) fn replayed_up_to(&self, floor: Position) {
        self.floor_epoch.store(floor.epoch, Ordering::Relaxed);
        self.floor_offset.store(floor.offset, Ordering::Relaxed);
    }

    /// Whether a frame at `at` is at or before the floor, so was replayed already.
    fn replayed(&self, at: Option<Position>) -> bool {
        at.is_some_and(|at| {
            at.epoch == self.floor_epoch.load(Ordering::Relaxed)
                && at.offset <= self.floor_offset.load(Ordering::Relaxed)
        })
    }

    /// Sends `first` (the fetch result or the replayed frames) and then every held frame not
    /// at or before `floor`, in order, and lets later frames go straight to the sink (except
    /// those at or before `floor`).
    pub(crate) fn release(
        &self,
        sink: &dyn SseSink,
        first: impl IntoIterator<Item = Bytes>,
        floor: Option<Position>,
    ) -> Result<(), SinkError> {
        let mut held = lock(&self.held);
        if let Some(floor) = floor {
            self.floor_epoch.store(floor.epoch, Ordering::Relaxed);
            self.floor_offset.store(floor.offset, Ordering::Relaxed);
        }
        let frames = std::mem::take(&mut held.frames);
        held.bytes = 0;
        let live = frames.into_iter().filter(|(_, at)| !self.replayed(*at));
        let mut pending = first.into_iter().map(|frame| (frame, None)).chain(live);
        let mut result = Ok(());
        let mut gave = false;
        while let Some((frame, at)) = pending.next() {
            if let Err(error) = sink.send(frame.clone()) {
                // This one and all that follow were not given.
                let first_missed = at.or_else(|| frame::position_of(&frame)).or_else(|| {
                    pending.find_map(|(frame, at)| at.or_else(|| frame::position_of(&frame)))
                });
                if let (Some(seen), Some(at)) = (&self.seen, first_missed) {
                    seen.missed(at);
                }
                result = Err(error);
                break;
            }
            gave = true;
        }
        if let (Some(seen), true) = (&self.seen, gave) {
            seen.gave_some();
        }
        self.holding.store(false, Ordering::Release);
        result
    }
}

impl fmt::Debug for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hold")
            .field("holding", &self.holding.load(Ordering::Relaxed))
            .field("held_frames", &lock(&self.held).frames.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Poll, Waker};

    use super::*;
    use crate::sink::QueueSink;

    fn at(offset: u64) -> Option<Position> {
        Some(Position::new(7, offset))
    }

    fn text(sink: &QueueSink) -> String {
        match sink.poll_chunk(Waker::noop()) {
            Poll::Ready(Some((chunk, _))) => String::from_utf8_lossy(&chunk).into_owned(),
            _ => String::new(),
        }
    }

    #[test]
    fn live_frames_already_replayed_are_dropped_held_or_late() {
        let sink = QueueSink::new(Bytes::new(), 1024, 64, false);
        let hold = Hold::new(1024, 64, None);
        // Published while the replay was read: live and in the replay.
        hold.deliver(&sink, Bytes::from_static(b"2"), at(2))
            .unwrap();
        hold.deliver(&sink, Bytes::from_static(b"4"), at(4))
            .unwrap();
        let replayed = [Bytes::from_static(b"1"), Bytes::from_static(b"2")];
        hold.release(&sink, replayed, at(2)).unwrap();
        // A live copy of a replayed frame that arrives after the release.
        hold.deliver(&sink, Bytes::from_static(b"1"), at(1))
            .unwrap();
        hold.deliver(&sink, Bytes::from_static(b"5"), at(5))
            .unwrap();
        assert_eq!(text(&sink), "1245");
    }

    #[test]
    fn the_floor_holds_only_in_its_own_sequence() {
        let sink = QueueSink::new(Bytes::new(), 1024, 64, false);
        let hold = Hold::new(1024, 64, None);
        hold.release(&sink, None, at(9)).unwrap();
        // The history was lost (say, Redis restarted empty): a new epoch starts again at 1.
        let new_epoch = Some(Position::new(8, 1));
        hold.deliver(&sink, Bytes::from_static(b"a"), new_epoch)
            .unwrap();
        hold.deliver(&sink, Bytes::from_static(b"b"), None).unwrap();
        assert_eq!(text(&sink), "ab");
    }
}
