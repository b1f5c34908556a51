//! Lifecycle notifications: what happened to connections and rooms, for the application to
//! observe.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::broker::BrokerError;
use crate::error::ConnectionError;
use crate::sync::lock;

/// Something that happened on the server. The names in brackets are the original server's event
/// names.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Notification {
    /// A stream opened and joined all its rooms (`conn:create`): a `send` made now reaches it.
    ConnCreate {
        /// The connection's `clientId`.
        client_id: Arc<str>,
        /// The principal `authorize` granted it, if any.
        principal: Option<Arc<str>>,
    },
    /// A stream closed (`conn:close`), exactly once per stream, whoever closed it.
    ConnClose {
        /// The connection's `clientId`.
        client_id: Arc<str>,
        /// The principal `authorize` granted it, if any.
        principal: Option<Arc<str>>,
        /// Who or what closed it.
        reason: CloseReason,
    },
    /// A room of the handler for `event` got its first connection (`room:create`).
    RoomCreate {
        /// The handler's event.
        event: Arc<str>,
        /// The room id.
        room: Arc<str>,
    },
    /// The last connection left a room of the handler for `event` (`room:empty`); the room is
    /// forgotten.
    RoomEmpty {
        /// The handler's event.
        event: Arc<str>,
        /// The room id.
        room: Arc<str>,
    },
    /// A failure on one connection (`error`). A client that simply goes away is not an error.
    Error(Arc<ConnectionError>),
    /// The server's [`Broker`](crate::Broker) lost its backend or failed in another way; streams
    /// stay open, and the broker says what it does about it.
    Broker(BrokerError),
    /// This subscriber fell behind by more than
    /// [`ServerBuilder::notification_capacity`](crate::ServerBuilder::notification_capacity)
    /// notifications: the `missed` oldest ones were dropped for it (and only for it), and the
    /// next ones follow. Nothing else on the server waited for it.
    Lagged {
        /// How many notifications this subscriber missed.
        missed: u64,
    },
}

/// Why a stream closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client went away (closed the connection, or the stream's response was dropped).
    ClientGone,
    /// A new connection with the same `clientId` replaced it.
    Replaced,
    /// The client stopped reading and its outgoing buffer filled up.
    SlowConsumer,
    /// The application closed it, for example with [`Server::close_all`](crate::Server::close_all).
    ServerClosed,
    /// The application disconnected this client, with
    /// [`Server::disconnect`](crate::Server::disconnect) (on this node or another).
    Disconnected,
    /// The stream reached its
    /// [`max_stream_lifetime`](crate::ServerBuilder::max_stream_lifetime).
    Expired,
    /// What the client missed was more than its buffer holds: the stream got the first part,
    /// and ended once it was written; the client's reconnect gets the rest.
    CatchingUp,
}

impl CloseReason {
    /// Whether the server ended the stream: then what it wrote goes out before the connection
    /// closes. Otherwise the connection dropped (the client or the network path ended it, or
    /// the client opened another before this one was seen to end), and what was in flight may
    /// not have arrived.
    pub(crate) fn by_server(self) -> bool {
        match self {
            Self::ClientGone | Self::Replaced => false,
            Self::SlowConsumer
            | Self::ServerClosed
            | Self::Disconnected
            | Self::Expired
            | Self::CatchingUp => true,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ClientGone => "client gone",
            Self::Replaced => "replaced by a new connection with the same clientId",
            Self::SlowConsumer => "slow consumer",
            Self::ServerClosed => "closed by the server",
            Self::Disconnected => "disconnected by the application",
            Self::Expired => "reached its maximum lifetime",
            Self::CatchingUp => "ended after the first part of a replay larger than its buffer",
        })
    }
}

/// The subscribers of one server. Raising a notification never waits: each subscriber has a
/// queue of at most `capacity` notifications (allocated as it fills), and one that falls
/// further behind loses the oldest and is told how many with [`Notification::Lagged`], the
/// model of tokio's `broadcast` channel.
pub(crate) struct Notifier {
    subscribers: Mutex<Vec<Arc<Subscriber>>>,
    capacity: usize,
}

/// One subscriber's queue, shared with its [`Notifications`].
#[derive(Default)]
struct Subscriber {
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    notifications: VecDeque<Notification>,
    /// Dropped from the front since the subscriber last read.
    missed: u64,
    /// The server is gone: no more notifications will come.
    closed: bool,
    waker: Option<Waker>,
}

impl Notifier {
    /// A notifier whose subscribers may each fall `capacity` notifications behind.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            subscribers: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn subscribe(&self) -> Notifications {
        let subscriber = Arc::new(Subscriber::default());
        lock(&self.subscribers).push(subscriber.clone());
        Notifications { subscriber }
    }

    pub(crate) fn notify(&self, notification: Notification) {
        let mut subscribers = lock(&self.subscribers);
        // A subscriber whose `Notifications` was dropped is the only other owner gone.
        subscribers.retain(|subscriber| Arc::strong_count(subscriber) > 1);
        if subscribers.is_empty() {
            drop(subscribers);
            match &notification {
                Notification::Error(error) => tracing::warn!(%error, "sseio connection error"),
                Notification::Broker(error) => tracing::warn!(%error, "sseio broker error"),
                _ => tracing::trace!(?notification, "sseio notification"),
            }
            return;
        }
        for subscriber in subscribers.iter() {
            let mut queue = lock(&subscriber.queue);
            if queue.notifications.len() == self.capacity {
                queue.notifications.pop_front();
                queue.missed += 1;
            }
            queue.notifications.push_back(notification.clone());
            if let Some(waker) = queue.waker.take() {
                waker.wake();
            }
        }
    }
}

impl Drop for Notifier {
    /// The server is gone: every subscriber's stream ends once it has read what is queued.
    fn drop(&mut self) {
        for subscriber in lock(&self.subscribers).iter() {
            let mut queue = lock(&subscriber.queue);
            queue.closed = true;
            if let Some(waker) = queue.waker.take() {
                waker.wake();
            }
        }
    }
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("subscribers", &lock(&self.subscribers).len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// The stream of notifications returned by [`Server::subscribe`](crate::Server::subscribe), in
/// the order they were raised. Drop it to unsubscribe.
///
/// Each subscriber may fall
/// [`ServerBuilder::notification_capacity`](crate::ServerBuilder::notification_capacity)
/// notifications behind; past that it gets [`Notification::Lagged`] in place of the oldest ones
/// it missed, so a listener that stops reading costs bounded memory and slows nobody.
pub struct Notifications {
    subscriber: Arc<Subscriber>,
}

impl Notifications {
    /// The next notification; `None` once the server is gone.
    pub async fn recv(&mut self) -> Option<Notification> {
        std::future::poll_fn(|cx| self.poll_recv(cx.waker())).await
    }

    /// The next notification if one is already queued.
    pub fn try_recv(&mut self) -> Option<Notification> {
        match self.poll_recv(Waker::noop()) {
            Poll::Ready(notification) => notification,
            Poll::Pending => None,
        }
    }

    fn poll_recv(&mut self, waker: &Waker) -> Poll<Option<Notification>> {
        let mut queue = lock(&self.subscriber.queue);
        if queue.missed > 0 {
            let missed = std::mem::take(&mut queue.missed);
            return Poll::Ready(Some(Notification::Lagged { missed }));
        }
        if let Some(notification) = queue.notifications.pop_front() {
            return Poll::Ready(Some(notification));
        }
        if queue.closed {
            return Poll::Ready(None);
        }
        if !queue.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            queue.waker = Some(waker.clone());
        }
        Poll::Pending
    }
}

impl fmt::Debug for Notifications {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifications")
            .field("queued", &lock(&self.subscriber.queue).notifications.len())
            .finish()
    }
}

impl futures_core::Stream for Notifications {
    type Item = Notification;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Notification>> {
        self.get_mut().poll_recv(cx.waker())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(n: usize) -> Notification {
        Notification::ConnCreate {
            client_id: n.to_string().into(),
            principal: None,
        }
    }

    fn client(notification: Option<Notification>) -> String {
        match notification {
            Some(Notification::ConnCreate { client_id, .. }) => client_id.to_string(),
            other => panic!("expected conn:create, got {other:?}"),
        }
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_told_what_it_missed() {
        let notifier = Notifier::new(4);
        let mut reading = notifier.subscribe();
        let mut stalled = notifier.subscribe();
        for n in 0..10 {
            notifier.notify(opened(n));
            assert_eq!(client(reading.try_recv()), n.to_string());
        }
        assert!(matches!(
            stalled.try_recv(),
            Some(Notification::Lagged { missed: 6 })
        ));
        let rest: Vec<String> = (0..4).map(|_| client(stalled.try_recv())).collect();
        assert_eq!(rest, ["6", "7", "8", "9"], "the newest, in order");
        assert!(stalled.try_recv().is_none());
    }

    #[tokio::test]
    async fn recv_waits_for_the_next_and_ends_with_the_server() {
        let notifier = Notifier::new(4);
        let mut notifications = notifier.subscribe();
        assert!(notifications.try_recv().is_none());
        let waiting = tokio::spawn(async move {
            let first = notifications.recv().await;
            (first, notifications.recv().await)
        });
        tokio::task::yield_now().await;
        notifier.notify(opened(1));
        drop(notifier);
        let (first, end) = waiting.await.unwrap();
        assert_eq!(client(first), "1");
        assert!(end.is_none(), "the notifier is gone");
    }
}
