//! The typed errors of each failure domain.

use std::sync::Arc;

use crate::broker::BrokerError;

/// A boxed error from application code, such as a failing `fetch`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a [`Server`](crate::Server) could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The path pattern is not usable. Give an absolute path such as `/sseio` or
    /// `/user/:userId/foo`, with at most one parameter per segment.
    #[error("invalid path pattern `{pattern}`: {reason}")]
    InvalidPath {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The event name given to
    /// [`ServerBuilder::gap_notice`](crate::ServerBuilder::gap_notice) cannot be written into an
    /// SSE frame (it is empty or holds a line break).
    #[error("invalid gap notice event name {name:?}: {reason}")]
    InvalidGapNotice {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The broker refused the server, for example because it already serves another one.
    #[error("the broker refused this server: {0}")]
    Broker(#[source] BrokerError),
}

/// Why an event handler could not be registered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The event name cannot be written into an SSE frame (it is empty or holds a line break).
    /// Pick another name; the client subscribes by the same string.
    #[error("invalid event name {name:?}: {reason}")]
    InvalidEventName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A handler for this event is already registered. Keep the [`EventHandler`](crate::EventHandler)
    /// returned the first time, or look it up with [`Server::handler`](crate::Server::handler).
    #[error("a handler for event `{name}` is already registered")]
    AlreadyRegistered {
        /// The event name.
        name: String,
    },
}

/// Why [`EventHandler::send`](crate::EventHandler::send) did not send.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The message could not be serialized to JSON (for example a map with non-string keys).
    #[error("message could not be serialized to JSON")]
    Serialize(#[source] serde_json::Error),
    /// The message's payload is larger than
    /// [`ServerBuilder::max_message_bytes`](crate::ServerBuilder::max_message_bytes); nothing was
    /// sent. Split it, or raise the limit (keep it well below `max_buffer_bytes`).
    #[error("message of {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The payload's size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The server's [`Broker`](crate::Broker) could not take the message (for example, the
    /// connection to Redis is down and being restored); nothing was sent.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Why [`EventHandler::position`](crate::EventHandler::position) could not tell where a room
/// stands.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PositionError {
    /// The handler keeps no history, so its messages have no positions.
    #[error("event `{event}` keeps no history, so it has no positions")]
    NoHistory {
        /// The handler's event.
        event: String,
    },
    /// The broker's history store could not answer.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// A failure on one connection, raised as [`Notification::Error`](crate::Notification::Error).
/// (A failure of the broker itself is [`Notification::Broker`](crate::Notification::Broker).)
///
/// None of these affects another connection; the server keeps running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The handler's `fetch` returned an error. The messages held back while it ran were still
    /// delivered.
    #[error("'fetch' of event `{event}` for client `{client_id}` failed: {source}")]
    Fetch {
        /// The event whose `fetch` failed.
        event: Arc<str>,
        /// The client the fetch ran for.
        client_id: Arc<str>,
        /// The error `fetch` returned.
        #[source]
        source: BoxError,
    },
    /// The handler's `fetch` did not finish within
    /// [`ServerBuilder::fetch_timeout`](crate::ServerBuilder::fetch_timeout); it was abandoned
    /// and the held messages were delivered.
    #[error("'fetch' of event `{event}` for client `{client_id}` timed out after {timeout:?}")]
    FetchTimedOut {
        /// The event whose `fetch` timed out.
        event: Arc<str>,
        /// The client the fetch ran for.
        client_id: Arc<str>,
        /// The timeout.
        timeout: std::time::Duration,
    },
    /// The handler's `fetch` result could not be serialized to JSON; nothing was sent for it.
    #[error(
        "'fetch' result of event `{event}` for client `{client_id}` could not be serialized: {source}"
    )]
    FetchResult {
        /// The event whose `fetch` result was bad.
        event: Arc<str>,
        /// The client the fetch ran for.
        client_id: Arc<str>,
        /// The serialization error.
        #[source]
        source: serde_json::Error,
    },
    /// Application code (`authorize`, `get_room_id` or `fetch`) panicked. For `authorize` and
    /// `get_room_id` the connection was refused with `500`; for `fetch` the held messages were
    /// still delivered.
    #[error("'{callback}' for client `{client_id}` panicked: {message}")]
    Panicked {
        /// `authorize`, `get_room_id` or `fetch`.
        callback: &'static str,
        /// The event whose callback panicked (none for `authorize`).
        event: Option<Arc<str>>,
        /// The client it ran for.
        client_id: Arc<str>,
        /// The panic message, when it was a string.
        message: String,
    },
    /// The client stopped reading and its outgoing buffer filled up, so the server closed the
    /// connection. Raise the limit with
    /// [`ServerBuilder::max_buffer_bytes`](crate::ServerBuilder::max_buffer_bytes) if clients are
    /// just slow.
    #[error("client `{client_id}` stopped reading: its outgoing buffer passed {limit} bytes")]
    SlowConsumer {
        /// The slow client.
        client_id: Arc<str>,
        /// The buffer limit in bytes.
        limit: usize,
    },
    /// The [`Broker`](crate::Broker)'s history could not answer where a reconnecting client
    /// left off or what it missed, so its rooms with history resynced: `fetch` ran (as
    /// [`Context::resync`](crate::Context::resync)) where there is one.
    #[error("could not resume client `{client_id}` from the broker's history: {source}")]
    Resume {
        /// The client that reconnected.
        client_id: Arc<str>,
        /// What the broker reported.
        #[source]
        source: BrokerError,
    },
}
