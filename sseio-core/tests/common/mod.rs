//! What the integration tests share: a sink that records every frame.

#![allow(dead_code, unreachable_pub)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use sseio_core::{CloseReason, SinkError, SseSink};

/// A sink that records every frame, for tests: the seam a custom transport uses.
#[derive(Debug, Default)]
pub struct RecordingSink {
    frames: Mutex<Vec<Bytes>>,
    closed: AtomicBool,
}

impl RecordingSink {
    /// Everything queued so far, as text.
    pub fn text(&self) -> String {
        let frames = self.frames.lock().unwrap();
        frames
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect()
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

    fn close(&self, _reason: CloseReason) {
        self.closed.store(true, Ordering::SeqCst);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}
