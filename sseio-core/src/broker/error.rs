//! What a broker answers when it cannot do what it was asked: [`BrokerError`], and the
//! [`BrokerCause`] beneath it.

use std::error::Error;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

/// Why a broker could not do what it was asked.
///
/// A variant that comes from an error of the broker's backend (a `redis::RedisError`, say)
/// keeps that error as its `source`, reachable through [`Error::source`] and downcast there to
/// its own type:
///
/// ```
/// use std::error::Error;
///
/// use sseio_core::BrokerError;
///
/// let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
/// let error = BrokerError::unavailable_from("cannot reach the backend; reconnecting", refused);
/// let cause = error.source().and_then(|cause| cause.downcast_ref::<std::io::Error>());
/// assert_eq!(cause.map(|cause| cause.kind()), Some(std::io::ErrorKind::ConnectionRefused));
/// ```
///
/// The error is `Clone` (one failure is handed to every send waiting on it), so the cause is
/// shared through a [`BrokerCause`]; a clone has the same cause.
///
/// The `reason` of a variant is the broker's own account, and `sseio-redis` writes the cause's
/// message into it (`lost the connection to Redis (broken pipe); reconnecting`): these errors
/// are mostly logged by their `Display` alone (as the server logs a
/// [`Notification::Broker`](crate::Notification::Broker) nobody listens for), and that keeps
/// the log complete. A report that walks the `source()` chain shows that message twice.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker has lost its connection (to Redis, say) and is reconnecting; nothing was sent.
    /// Open streams stay open meanwhile.
    #[error("the broker is unavailable: {reason}")]
    Unavailable {
        /// What went wrong, in the broker's words (with `sseio-redis`, including the message of
        /// `source`).
        reason: String,
        /// The error that made the broker unavailable (with `sseio-redis`, the
        /// `redis::RedisError` of the lost or refused connection), when there was one.
        #[source]
        source: Option<BrokerCause>,
    },
    /// More messages are waiting to be published than the broker queues; nothing was sent.
    #[error("the broker's queue is full ({limit} messages waiting)")]
    Backlog {
        /// The number of messages the broker queues.
        limit: usize,
    },
    /// An answer did not come within the broker's timeout: from the other nodes (presence),
    /// or from the backend for a [confirmed send](crate::EventHandler::send_confirmed), whose
    /// message may then have been published or not (as for [`BrokerError::Unconfirmed`]).
    #[error("the broker did not get every answer within {timeout:?}")]
    TimedOut {
        /// The timeout.
        timeout: Duration,
    },
    /// This broker serves one server, and was already attached to another.
    #[error("this broker is already attached to a server")]
    AlreadyAttached,
    /// This broker does not offer the operation (a minimal broker carries sends only): use a
    /// broker that does, such as `sseio-redis`.
    #[error("the broker does not support {operation}")]
    Unsupported {
        /// What was asked: `presence`, `send_to_client` or `disconnect`.
        operation: &'static str,
    },
    /// The broker's backend reported a failure that does not fit the cases above. For a
    /// [confirmed send](crate::EventHandler::send_confirmed): the backend refused the message
    /// (Redis answered an error), which was not published.
    #[error("the broker failed: {reason}")]
    Failed {
        /// What went wrong, in the broker's words (with `sseio-redis`, including the message of
        /// `source`).
        reason: String,
        /// The error the backend reported (with `sseio-redis`, Redis's answer as a
        /// `redis::RedisError`), when there was one.
        #[source]
        source: Option<BrokerCause>,
    },
    /// A [confirmed send](crate::EventHandler::send_confirmed) was handed to the backend, but
    /// the connection to it was lost before it answered: the message may have been published
    /// (and recorded) or not. Sending it again may deliver it twice; a client that resumes by
    /// position tells the two apart by the messages' ids only if the application numbers them.
    #[error("the broker lost its backend before it confirmed the message: {reason}")]
    Unconfirmed {
        /// What went wrong, in the broker's words (with `sseio-redis`, including the message of
        /// `source`).
        reason: String,
        /// The error of the lost connection (with `sseio-redis`, a `redis::RedisError`), when
        /// there was one.
        #[source]
        source: Option<BrokerCause>,
    },
}

impl BrokerError {
    /// [`BrokerError::Unavailable`] for `reason`, with no error beneath it.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::Unavailable {
            reason: reason.into(),
            source: None,
        }
    }

    /// [`BrokerError::Unavailable`] for `reason`, caused by `source`.
    pub fn unavailable_from(
        reason: impl Into<String>,
        source: impl Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unavailable {
            reason: reason.into(),
            source: Some(BrokerCause::new(source)),
        }
    }

    /// [`BrokerError::Failed`] for `reason`, with no error beneath it.
    pub fn failed(reason: impl Into<String>) -> Self {
        Self::Failed {
            reason: reason.into(),
            source: None,
        }
    }

    /// [`BrokerError::Failed`] for `reason`, caused by `source`.
    pub fn failed_from(
        reason: impl Into<String>,
        source: impl Error + Send + Sync + 'static,
    ) -> Self {
        Self::Failed {
            reason: reason.into(),
            source: Some(BrokerCause::new(source)),
        }
    }

    /// [`BrokerError::Unconfirmed`] for `reason`, with no error beneath it.
    pub fn unconfirmed(reason: impl Into<String>) -> Self {
        Self::Unconfirmed {
            reason: reason.into(),
            source: None,
        }
    }

    /// [`BrokerError::Unconfirmed`] for `reason`, caused by `source`.
    pub fn unconfirmed_from(
        reason: impl Into<String>,
        source: impl Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unconfirmed {
            reason: reason.into(),
            source: Some(BrokerCause::new(source)),
        }
    }
}

/// The error beneath a [`BrokerError`] (a `redis::RedisError`, say), shared, so that the
/// `BrokerError` stays `Clone`.
///
/// [`BrokerError`]'s [`Error::source`] returns the error inside, not this wrapper, so a caller
/// downcasts it to its own type there. A `BrokerCause` dereferences to that error too:
/// `cause.downcast_ref::<redis::RedisError>()`.
// Not an `Error` itself, on purpose: thiserror's `source()` then dereferences it and returns
// the error inside, whose type a caller can downcast to (an `Arc<dyn Error>` field would be
// returned as the `Arc`, and no downcast would find the cause).
#[derive(Clone)]
pub struct BrokerCause(Arc<dyn Error + Send + Sync + 'static>);

impl BrokerCause {
    /// Wraps `error`.
    pub fn new(error: impl Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(error))
    }
}

impl Deref for BrokerCause {
    type Target = dyn Error + Send + Sync + 'static;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl fmt::Debug for BrokerCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for BrokerCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;
    use std::io;

    use super::BrokerError;

    fn reset() -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer")
    }

    #[test]
    fn source_is_the_cause_itself_and_downcasts() {
        for error in [
            BrokerError::unavailable_from("lost the backend (reset by peer)", reset()),
            BrokerError::failed_from("refused (reset by peer)", reset()),
            BrokerError::unconfirmed_from("lost the backend (reset by peer)", reset()),
        ] {
            let cause = error.source().expect("a source");
            let io = cause.downcast_ref::<io::Error>().expect("the io::Error");
            assert_eq!(io.kind(), io::ErrorKind::ConnectionReset);
        }
    }

    #[test]
    fn a_clone_keeps_the_same_cause() {
        let error = BrokerError::unavailable_from("lost the backend", reset());
        let clone = error.clone();
        let (original, cloned) = (error.source().unwrap(), clone.source().unwrap());
        assert!(std::ptr::addr_eq(original, cloned), "one cause, shared");
        drop(error);
        let io = clone
            .source()
            .and_then(|cause| cause.downcast_ref::<io::Error>());
        assert_eq!(
            io.map(io::Error::kind),
            Some(io::ErrorKind::ConnectionReset)
        );
    }

    #[test]
    fn without_a_cause_source_is_none() {
        assert!(BrokerError::unavailable("down").source().is_none());
        assert!(BrokerError::failed("refused").source().is_none());
        assert!(BrokerError::unconfirmed("lost").source().is_none());
    }

    #[test]
    fn display_is_the_reason_in_the_brokers_words() {
        let error = BrokerError::failed_from("Redis refused the message (NOSCRIPT)", reset());
        assert_eq!(
            error.to_string(),
            "the broker failed: Redis refused the message (NOSCRIPT)"
        );
    }
}
