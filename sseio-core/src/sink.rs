//! `SseSink`: where fan-out meets one connection's outgoing queue.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::task::{Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use crate::frame;
use crate::notify::CloseReason;
use crate::position::Position;
use crate::sync::lock;

/// One connection's outgoing side, as the room fan-out and the heartbeat see it.
///
/// Every method returns at once: a sink never waits for its client. The core ships the
/// production sink behind [`ConnectionStream`](crate::ConnectionStream); a custom transport (or a
/// test) can bring its own through [`Server::connect`](crate::Server::connect).
pub trait SseSink: Send + Sync + fmt::Debug + 'static {
    /// Queues one encoded frame. The same [`Bytes`] handle is shared by every member of a room,
    /// so this must not copy it needlessly.
    fn send(&self, frame: Bytes) -> Result<(), SinkError>;

    /// Closes the sink: later sends fail with [`SinkError::Closed`] and the client's stream ends.
    /// Closing twice is harmless.
    fn close(&self, reason: CloseReason);

    /// Closes the sink like [`SseSink::close`], but writes `last` before the client's stream
    /// ends: a frame that is not a message (the drain's `retry:` field, say), so it is neither
    /// counted against the budget nor ever resumed. Default: queue `last`, then close, for a sink
    /// that hands every frame on as it accepts it.
    fn close_with(&self, reason: CloseReason, last: Bytes) {
        let _ = self.send(last);
        self.close(reason);
    }

    /// Whether the sink is closed, by [`SseSink::close`] or by its transport: the server's
    /// heartbeat closes the connection of a sink that says so (`conn:close` with
    /// [`CloseReason::ClientGone`]), so a transport may close its sink when its client goes away
    /// instead of dropping the [`Connection`](crate::Connection).
    fn is_closed(&self) -> bool;

    /// The bytes queued and not yet written, so that messages held back behind a `fetch` count
    /// against the same budget. A sink without a queue of its own answers 0 (the default).
    fn queued_bytes(&self) -> usize {
        0
    }

    /// The frames queued and not yet written, as [`SseSink::queued_bytes`] for the frame
    /// budget. Default: 0.
    fn queued_frames(&self) -> usize {
        0
    }

    /// Once closed: the position (the `id:` line) of the first frame it accepted and never handed
    /// to its transport. A client resuming by `clientId` then gets that message again and
    /// everything after it. Default: `None`, for a sink that hands every frame on as it accepts
    /// it, so that a frame counts as given once accepted.
    fn unsent(&self) -> Option<Position> {
        None
    }
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The connection's outgoing buffer is full: the client stopped reading. The server closes
    /// such a connection.
    #[error("the connection's outgoing buffer is full")]
    Full,
    /// The connection is closed.
    #[error("the connection is closed")]
    Closed,
}

/// The most bytes one poll of a connection stream hands to the HTTP layer: what has queued up is
/// coalesced into one write up to this size.
const MAX_COALESCE: usize = 64 * 1024;

/// The production sink: a bounded queue of frames drained by the connection's response body.
pub(crate) struct QueueSink {
    state: Mutex<QueueState>,
    max_bytes: usize,
    max_frames: usize,
    /// Whether sends note [`QueueState::since`].
    track_lag: bool,
}

struct QueueState {
    frames: VecDeque<Bytes>,
    queued_bytes: usize,
    /// When the oldest frame still queued was sent, for the send-lag metric: set by the first
    /// send into an empty queue, cleared when the queue is drained. The opening bytes have none.
    since: Option<Instant>,
    closed: bool,
    /// Set by the close: the position of the first frame it discarded.
    unsent: Option<Position>,
    waker: Option<Waker>,
}

impl QueueSink {
    /// A sink holding `first` (the opening bytes), accepting up to `max_bytes` in at most
    /// `max_frames` frames queued; with `track_lag`, noting when its oldest frame was sent.
    pub(crate) fn new(first: Bytes, max_bytes: usize, max_frames: usize, track_lag: bool) -> Self {
        let mut frames = VecDeque::new();
        let queued_bytes = first.len();
        frames.push_back(first);
        Self {
            state: Mutex::new(QueueState {
                frames,
                queued_bytes,
                since: None,
                closed: false,
                unsent: None,
                waker: None,
            }),
            max_bytes,
            max_frames,
            track_lag,
        }
    }

    /// The next chunk to write: every queued frame up to [`MAX_COALESCE`] bytes in one `Bytes`
    /// (a single frame is handed over without copying), with when its oldest frame was sent
    /// (`None` for the opening bytes alone); once closed, the last field its close kept, if
    /// any, then `None`.
    ///
    /// When frames remain queued past the chunk, the instant stays, so the next chunk's lag is
    /// an upper bound: one timestamp per connection, none per frame.
    pub(crate) fn poll_chunk(&self, waker: &Waker) -> Poll<Option<(Bytes, Option<Instant>)>> {
        let mut state = lock(&self.state);
        if state.closed {
            // What a close kept (a last field) is written before the stream ends.
            return Poll::Ready(state.frames.pop_front().map(|last| {
                state.queued_bytes = 0;
                (last, None)
            }));
        }
        let Some(first) = state.frames.pop_front() else {
            if !state.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                state.waker = Some(waker.clone());
            }
            return Poll::Pending;
        };
        let chunk = match state.frames.front() {
            Some(next) if first.len() + next.len() <= MAX_COALESCE => {
                let mut buf = BytesMut::with_capacity(state.queued_bytes.min(MAX_COALESCE));
                buf.extend_from_slice(&first);
                while let Some(next) = state.frames.front() {
                    if buf.len() + next.len() > MAX_COALESCE {
                        break;
                    }
                    let next = state.frames.pop_front().expect("front exists");
                    buf.extend_from_slice(&next);
                }
                buf.freeze()
            }
            _ => first,
        };
        state.queued_bytes -= chunk.len();
        let since = if state.frames.is_empty() {
            state.since.take()
        } else {
            state.since
        };
        Poll::Ready(Some((chunk, since)))
    }
}

impl QueueSink {
    /// Closes the sink, discarding every queued frame but `last` (the frames still to write
    /// once closed: none, or a last field).
    fn close_and_keep(&self, last: VecDeque<Bytes>) {
        let mut state = lock(&self.state);
        if state.closed {
            return;
        }
        state.closed = true;
        state.unsent = state.frames.iter().find_map(|f| frame::position_of(f));
        state.queued_bytes = last.iter().map(Bytes::len).sum();
        state.frames = last;
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Ready once the sink is closed; otherwise registers `waker` (in the same slot as
    /// [`QueueSink::poll_chunk`], so call one or the other at a time).
    pub(crate) fn poll_closed(&self, waker: &Waker) -> Poll<()> {
        let mut state = lock(&self.state);
        if state.closed {
            return Poll::Ready(());
        }
        if !state.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            state.waker = Some(waker.clone());
        }
        Poll::Pending
    }
}

impl SseSink for QueueSink {
    fn send(&self, frame: Bytes) -> Result<(), SinkError> {
        let mut state = lock(&self.state);
        if state.closed {
            return Err(SinkError::Closed);
        }
        if state.queued_bytes + frame.len() > self.max_bytes
            || state.frames.len() >= self.max_frames
        {
            return Err(SinkError::Full);
        }
        state.queued_bytes += frame.len();
        state.frames.push_back(frame);
        if self.track_lag && state.since.is_none() {
            state.since = Some(Instant::now());
        }
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    fn close(&self, _reason: CloseReason) {
        self.close_and_keep(VecDeque::new());
    }

    fn close_with(&self, _reason: CloseReason, last: Bytes) {
        self.close_and_keep(VecDeque::from([last]));
    }

    fn is_closed(&self) -> bool {
        lock(&self.state).closed
    }

    fn queued_bytes(&self) -> usize {
        lock(&self.state).queued_bytes
    }

    fn queued_frames(&self) -> usize {
        lock(&self.state).frames.len()
    }

    fn unsent(&self) -> Option<Position> {
        lock(&self.state).unsent
    }
}

impl fmt::Debug for QueueSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("QueueSink")
            .field("queued_frames", &state.frames.len())
            .field("queued_bytes", &state.queued_bytes)
            .field("max_bytes", &self.max_bytes)
            .field("closed", &state.closed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn chunk(sink: &QueueSink) -> Poll<Option<Bytes>> {
        sink.poll_chunk(Waker::noop())
            .map(|chunk| chunk.map(|(bytes, _since)| bytes))
    }

    #[test]
    fn opening_bytes_come_first() {
        let sink = QueueSink::new(Bytes::from_static(b"\n"), 1024, 64, false);
        assert_eq!(chunk(&sink), Poll::Ready(Some(Bytes::from_static(b"\n"))));
        assert_eq!(chunk(&sink), Poll::Pending);
    }

    #[test]
    fn queued_frames_are_coalesced_into_one_chunk() {
        let sink = QueueSink::new(Bytes::from_static(b"\n"), 1024, 64, false);
        sink.send(Bytes::from_static(b"a")).unwrap();
        sink.send(Bytes::from_static(b"b")).unwrap();
        assert_eq!(chunk(&sink), Poll::Ready(Some(Bytes::from_static(b"\nab"))));
    }

    #[test]
    fn full_buffer_refuses_the_frame() {
        let sink = QueueSink::new(Bytes::from_static(b"\n"), 4, 64, false);
        sink.send(Bytes::from_static(b"abc")).unwrap();
        assert_eq!(sink.send(Bytes::from_static(b"d")), Err(SinkError::Full));
        assert_eq!(
            chunk(&sink),
            Poll::Ready(Some(Bytes::from_static(b"\nabc")))
        );
        sink.send(Bytes::from_static(b"d")).unwrap();
    }

    #[test]
    fn poll_closed_is_ready_only_once_closed() {
        let sink = QueueSink::new(Bytes::from_static(b"\n"), 1024, 64, false);
        assert_eq!(sink.poll_closed(Waker::noop()), Poll::Pending);
        sink.close(CloseReason::SlowConsumer);
        assert_eq!(sink.poll_closed(Waker::noop()), Poll::Ready(()));
    }

    #[test]
    fn too_many_frames_refuses_the_frame() {
        let sink = QueueSink::new(Bytes::from_static(b"\n"), 1024, 2, false);
        sink.send(Bytes::from_static(b"a")).unwrap();
        assert_eq!(sink.send(Bytes::from_static(b"b")), Err(SinkError::Full));
    }

    #[tokio::test(start_paused = true)]
    async fn chunk_carries_when_its_oldest_frame_was_sent() {
        let sink = QueueSink::new(Bytes::from_static(b"\n"), 1024, 64, true);
        let since = |sink: &QueueSink| match sink.poll_chunk(Waker::noop()) {
            Poll::Ready(Some((_, since))) => since,
            other => panic!("expected a chunk, got {other:?}"),
        };
        assert_eq!(
            since(&sink),
            None,
            "the opening bytes were not sent by anyone"
        );
        let first = Instant::now();
        sink.send(Bytes::from_static(b"a")).unwrap();
        tokio::time::advance(std::time::Duration::from_millis(5)).await;
        sink.send(Bytes::from_static(b"b")).unwrap();
        assert_eq!(since(&sink), Some(first), "the oldest frame's instant");
        sink.send(Bytes::from_static(b"c")).unwrap();
        assert_eq!(
            since(&sink),
            Some(Instant::now()),
            "a drained queue starts afresh"
        );
    }

    #[test]
    fn without_lag_tracking_no_instant_is_taken() {
        let sink = QueueSink::new(Bytes::from_static(b"\n"), 1024, 64, false);
        sink.send(Bytes::from_static(b"a")).unwrap();
        assert!(matches!(
            sink.poll_chunk(Waker::noop()),
            Poll::Ready(Some((_, None)))
        ));
    }

    #[test]
    fn a_close_notes_the_first_numbered_frame_it_discards() {
        let sink = QueueSink::new(Bytes::from_static(b"\n"), 1024, 64, false);
        sink.send(frame::encode_with_id("7-1", "e", "written"))
            .unwrap();
        assert!(matches!(chunk(&sink), Poll::Ready(Some(_))));
        sink.send(frame::encode("e", "no id")).unwrap();
        sink.send(frame::encode_with_id("7-3", "e", "discarded"))
            .unwrap();
        sink.send(frame::encode_with_id("7-4", "e", "discarded"))
            .unwrap();
        assert_eq!(sink.unsent(), None, "still open");
        sink.close(CloseReason::SlowConsumer);
        assert_eq!(sink.unsent(), Some(Position::new(7, 3)));
    }

    #[test]
    fn closed_sink_ends_the_stream_and_refuses_frames() {
        let sink = QueueSink::new(Bytes::from_static(b"\n"), 1024, 64, false);
        sink.close(CloseReason::ServerClosed);
        sink.close(CloseReason::ServerClosed);
        assert!(sink.is_closed());
        assert_eq!(chunk(&sink), Poll::Ready(None));
        assert_eq!(sink.send(Bytes::from_static(b"a")), Err(SinkError::Closed));
    }

    #[test]
    fn a_close_with_a_last_field_writes_only_that_field_then_ends() {
        let sink = QueueSink::new(Bytes::from_static(b"\n"), 1024, 64, false);
        sink.send(frame::encode_with_id("7-1", "e", "discarded"))
            .unwrap();
        sink.close_with(
            CloseReason::ServerClosed,
            Bytes::from_static(b"retry: 5000\n\n"),
        );
        assert_eq!(sink.unsent(), Some(Position::new(7, 1)));
        assert_eq!(sink.queued_bytes(), 13);
        assert_eq!(sink.send(Bytes::from_static(b"a")), Err(SinkError::Closed));
        assert_eq!(
            chunk(&sink),
            Poll::Ready(Some(Bytes::from_static(b"retry: 5000\n\n")))
        );
        assert_eq!(chunk(&sink), Poll::Ready(None));
        assert_eq!(sink.queued_bytes(), 0);
    }
}
