//! Lifecycle notifications: what happened to connections and rooms, for the application to
//! observe.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use crate::sync::lock;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use crate::error::ConnectionError;

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
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ClientGone => "client gone",
            Self::Replaced => "replaced by a new connection with the same clientId",
            Self::SlowConsumer => "slow consumer",
            Self::ServerClosed => "closed by the server",
            Self::Disconnected => "disconnected by the application",
        })
    }
}

/// The subscribers of one server. Raising a notification never waits: each subscriber has an
/// unbounded queue, and a subscriber that was dropped is forgotten.
#[derive(Default)]
pub(crate) struct Notifier {
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Notification>>>,
}

impl Notifier {
    pub(crate) fn subscribe(&self) -> Notifications {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.subscribers).push(tx);
        Notifications { rx }
    }

    pub(crate) fn notify(&self, notification: Notification) {
        let mut subscribers = lock(&self.subscribers);
        if subscribers.is_empty() {
            drop(subscribers);
            if let Notification::Error(error) = &notification {
                tracing::warn!(%error, "sseio connection error");
            } else {
                tracing::trace!(?notification, "sseio notification");
            }
            return;
        }
        subscribers.retain(|tx| tx.send(notification.clone()).is_ok());
    }
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("subscribers", &lock(&self.subscribers).len())
            .finish()
    }
}

/// The stream of notifications returned by [`Server::subscribe`](crate::Server::subscribe), in
/// the order they were raised. Drop it to unsubscribe.
#[derive(Debug)]
pub struct Notifications {
    rx: mpsc::UnboundedReceiver<Notification>,
}

impl Notifications {
    /// The next notification; `None` once the server is gone.
    pub async fn recv(&mut self) -> Option<Notification> {
        self.rx.recv().await
    }

    /// The next notification if one is already queued.
    pub fn try_recv(&mut self) -> Option<Notification> {
        self.rx.try_recv().ok()
    }
}

impl futures_core::Stream for Notifications {
    type Item = Notification;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Notification>> {
        self.rx.poll_recv(cx)
    }
}
