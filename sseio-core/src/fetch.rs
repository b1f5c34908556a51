//! Running a handler's `fetch` for one connection: with a timeout, with panics contained, and
//! releasing the messages held back behind it whatever happens.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;

use crate::error::ConnectionError;
use crate::frame;
use crate::handler::{EventHandler, FetchFailure};
use crate::hub::Hub;
use crate::notify::CloseReason;
use crate::request::Context;
use crate::room::Hold;
use crate::sink::{SinkError, SseSink};

/// Runs one `fetch` for connection `serial` for at most `timeout`, then releases the messages
/// held back behind it.
pub(crate) async fn run_fetch(
    hub: Weak<Hub>,
    timeout: Duration,
    handler: EventHandler,
    context: Context,
    serial: u64,
    sink: Arc<dyn SseSink>,
    hold: Arc<Hold>,
) {
    let Some(fetch) = handler.fetch().cloned() else {
        return;
    };
    let client_id: Arc<str> = context.client_id().into();
    // The call itself runs inside the first poll, so a panic in it is caught as well.
    let running = CatchUnwind(Box::pin(async move { fetch(context).await }));
    let event = handler.event_arc().clone();
    let Ok(outcome) = tokio::time::timeout(timeout, running).await else {
        let error = ConnectionError::FetchTimedOut {
            event,
            client_id,
            timeout,
        };
        return release(&hub, Some(error), &hold, &*sink, None, serial);
    };
    let (first, error) = match outcome {
        Ok(Ok(payload)) => (payload.map(|p| frame::encode(&event, &p)), None),
        Ok(Err(FetchFailure::Failed(source))) => (
            None,
            Some(ConnectionError::Fetch {
                event,
                client_id,
                source,
            }),
        ),
        Ok(Err(FetchFailure::Serialize(source))) => (
            None,
            Some(ConnectionError::FetchResult {
                event,
                client_id,
                source,
            }),
        ),
        Err(message) => (
            None,
            Some(ConnectionError::Panicked {
                callback: "fetch",
                event: Some(event),
                client_id,
                message,
            }),
        ),
    };
    release(&hub, error, &hold, &*sink, first, serial);
}

/// Reports a failed fetch, then sends its result (if any) and the held messages.
fn release(
    hub: &Weak<Hub>,
    error: Option<ConnectionError>,
    hold: &Hold,
    sink: &dyn SseSink,
    first: Option<Bytes>,
    serial: u64,
) {
    let Some(hub) = hub.upgrade() else {
        return;
    };
    if let Some(error) = error {
        hub.report(error);
    }
    let first_len = first.as_ref().map(Bytes::len);
    match hold.release(sink, first, None) {
        Ok(()) => hub
            .metrics()
            .sent(usize::from(first_len.is_some()), first_len.unwrap_or(0)),
        Err(SinkError::Full) => hub.close(serial, CloseReason::SlowConsumer),
        Err(_) => {}
    }
}

/// Polls a future, turning a panic into an error carrying the panic message.
pub(crate) struct CatchUnwind<F>(pub(crate) F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match catch_unwind(AssertUnwindSafe(|| Pin::new(&mut self.0).poll(cx))) {
            Ok(poll) => poll.map(Ok),
            Err(panic) => Poll::Ready(Err(panic_message(&*panic))),
        }
    }
}

/// The message of a panic, when it carried a string.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
