//! Sinks that stand in for a client's connection: the seam a custom transport uses
//! ([`SseSink`]), so a test sees exactly the frames the core hands to one connection.

use std::hint::black_box;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use sseio_core::{CloseReason, SinkError, SseSink};

/// A sink that records every frame it is sent, and refuses frames once closed (as the
/// production sink does), for tests that look at what one connection received.
#[derive(Debug, Default)]
pub struct RecordingSink {
    frames: Mutex<Vec<Bytes>>,
    closed: AtomicBool,
    reason: Mutex<Option<CloseReason>>,
}

impl RecordingSink {
    /// Every byte sent so far, in order.
    pub fn bytes(&self) -> Vec<u8> {
        self.frames.lock().unwrap().concat()
    }

    /// Every frame sent so far, each decoded as UTF-8 (invalid sequences replaced), in order.
    pub fn text(&self) -> String {
        let frames = self.frames.lock().unwrap();
        frames
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect()
    }

    /// The `data:` lines sent so far, without the field name, in order.
    pub fn data(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .map(str::to_owned)
            .collect()
    }

    /// Why the server closed it, once it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        *self.reason.lock().unwrap()
    }
}

impl SseSink for RecordingSink {
    fn send(&self, frame: Bytes) -> Result<(), SinkError> {
        if self.is_closed() {
            return Err(SinkError::Closed);
        }
        self.frames.lock().unwrap().push(frame);
        Ok(())
    }

    fn close(&self, reason: CloseReason) {
        self.reason.lock().unwrap().get_or_insert(reason);
        self.closed.store(true, Ordering::SeqCst);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// A sink whose client stops reading once [`StalledSink::stall`] is called: until then it takes
/// (and drops) every frame, from then on every frame finds it [`SinkError::Full`], which is
/// what a slow consumer looks like to the core.
#[derive(Debug, Default)]
pub struct StalledSink {
    stalled: AtomicBool,
    closed: AtomicBool,
}

impl StalledSink {
    /// From now on, every frame finds the sink full.
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }
}

impl SseSink for StalledSink {
    fn send(&self, _frame: Bytes) -> Result<(), SinkError> {
        match self.stalled.load(Ordering::SeqCst) {
            true => Err(SinkError::Full),
            false => Ok(()),
        }
    }

    fn close(&self, _reason: CloseReason) {
        self.closed.store(true, Ordering::SeqCst);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// A sink that counts frames and drops them, and never closes, so that a benchmark measures the
/// core's own cost per delivery and nothing of a transport's.
#[derive(Debug, Default)]
pub struct CountingSink(AtomicUsize);

impl CountingSink {
    /// How many frames were sent so far.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl SseSink for CountingSink {
    fn send(&self, frame: Bytes) -> Result<(), SinkError> {
        black_box(frame);
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn close(&self, _reason: CloseReason) {}

    fn is_closed(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_recording_sink_refuses_frames_and_keeps_what_it_had() {
        let sink = RecordingSink::default();
        sink.send(Bytes::from_static(b"event: e\n")).unwrap();
        sink.send(Bytes::from_static(b"data: x\n\n")).unwrap();
        sink.close(CloseReason::ServerClosed);
        assert_eq!(
            sink.send(Bytes::from_static(b"late")),
            Err(SinkError::Closed)
        );
        assert_eq!(sink.text(), "event: e\ndata: x\n\n");
        assert_eq!(sink.bytes(), b"event: e\ndata: x\n\n");
    }

    #[test]
    fn a_stalled_sink_is_full_only_once_stalled() {
        let sink = StalledSink::default();
        assert_eq!(sink.send(Bytes::from_static(b"a")), Ok(()));
        sink.stall();
        assert_eq!(sink.send(Bytes::from_static(b"b")), Err(SinkError::Full));
        assert!(!sink.is_closed());
    }

    #[test]
    fn a_counting_sink_counts_every_frame() {
        let sink = CountingSink::default();
        for _ in 0..3 {
            sink.send(Bytes::from_static(b"x")).unwrap();
        }
        assert_eq!(sink.count(), 3);
    }
}
