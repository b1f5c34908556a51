//! Rooms: the connections of one handler that share a room id, and the fetch hold-back that
//! keeps a new member's messages behind its `fetch` result.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

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
    /// The offset of the last message with history queued to this connection (shared by all
    /// its memberships).
    pub(crate) seen: Arc<AtomicU64>,
    pub(crate) sink: Arc<dyn SseSink>,
    /// Present while, or because, the handler has a `fetch` for this connection.
    pub(crate) hold: Option<Arc<Hold>>,
}

impl Member {
    /// Delivers one frame: straight to the sink, or into the hold-back queue while the
    /// connection's `fetch` runs.
    pub(crate) fn deliver(&self, frame: Bytes) -> Result<(), SinkError> {
        match &self.hold {
            Some(hold) => hold.deliver(&*self.sink, frame),
            None => self.sink.send(frame),
        }
    }
}

/// Messages held back while one connection's `fetch` for one event runs.
///
/// While `holding` is set, frames go to `held`; [`Hold::release`] sends the fetch result and then
/// the held frames to the sink and clears `holding`, all under the `held` lock, so a frame sent
/// concurrently lands either in `held` (and goes out in order) or after everything released.
pub(crate) struct Hold {
    holding: AtomicBool,
    held: Mutex<Held>,
    max_bytes: usize,
}

#[derive(Default)]
struct Held {
    frames: Vec<Bytes>,
    bytes: usize,
}

impl Hold {
    /// A hold that keeps back up to `max_bytes` (the connection's buffer budget).
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            holding: AtomicBool::new(true),
            held: Mutex::new(Held::default()),
            max_bytes,
        }
    }

    fn deliver(&self, sink: &dyn SseSink, frame: Bytes) -> Result<(), SinkError> {
        if self.holding.load(Ordering::Acquire) {
            let mut held = lock(&self.held);
            if self.holding.load(Ordering::Acquire) {
                // Held and queued bytes share the connection's one budget.
                if held.bytes + frame.len() + sink.queued_bytes() > self.max_bytes {
                    return Err(SinkError::Full);
                }
                held.bytes += frame.len();
                held.frames.push(frame);
                return Ok(());
            }
        }
        sink.send(frame)
    }

    /// Sends `first` (the fetch result, if any) and then every held frame, in order, and lets
    /// later frames go straight to the sink.
    pub(crate) fn release(
        &self,
        sink: &dyn SseSink,
        first: Option<Bytes>,
    ) -> Result<(), SinkError> {
        let mut held = lock(&self.held);
        let frames = std::mem::take(&mut held.frames);
        held.bytes = 0;
        let result = first
            .into_iter()
            .chain(frames)
            .try_for_each(|frame| sink.send(frame));
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
