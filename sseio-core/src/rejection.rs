//! Requests on the SSE path that do not open a stream, each with its HTTP answer.

use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

/// Why a request on the SSE path was refused. Each variant knows its status and JSON body, so
/// every adapter answers the same way ([`ConnectRejection::into_response`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectRejection {
    /// The query has no non-empty `clientId`. The official client always sends one.
    #[error("query parameter 'clientId' is required")]
    MissingClientId,
    /// The query has no non-empty `events`. Subscribe to at least one event.
    #[error("query parameter 'events' is required")]
    MissingEvents,
    /// The query could not be decoded (a malformed percent-escape, or not UTF-8).
    #[error("malformed query: {reason}")]
    MalformedQuery {
        /// What is wrong with it.
        reason: String,
    },
    /// A path parameter could not be decoded (a malformed percent-escape, or not UTF-8).
    #[error("malformed path: {reason}")]
    MalformedPath {
        /// What is wrong with it.
        reason: String,
    },
    /// The connection subscribes to more events than
    /// [`ServerBuilder::max_events`](crate::ServerBuilder::max_events) allows.
    #[error("too many events: {count}, at most {limit} per connection")]
    TooManyEvents {
        /// How many distinct events were requested.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The `clientId` is longer than
    /// [`ServerBuilder::max_client_id_bytes`](crate::ServerBuilder::max_client_id_bytes).
    #[error("'clientId' is too long: at most {limit} bytes")]
    ClientIdTooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// The room id picked for an event is longer than
    /// [`ServerBuilder::max_room_id_bytes`](crate::ServerBuilder::max_room_id_bytes).
    #[error("the room id for event '{event}' is too long: at most {limit} bytes")]
    RoomIdTooLong {
        /// The event whose room id was too long.
        event: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// The server holds [`ServerBuilder::max_connections`](crate::ServerBuilder::max_connections)
    /// connections already. Answered `503` with `Retry-After`, so the official client backs off.
    #[error("the server is at its connection limit; retry later")]
    TooManyConnections,
    /// The stream's principal or client address holds as many streams as
    /// [`ServerBuilder::max_streams_per_principal`](crate::ServerBuilder::max_streams_per_principal)
    /// or [`max_streams_per_address`](crate::ServerBuilder::max_streams_per_address) allow.
    /// Answered `429` with `Retry-After`, on which the official client backs off and retries.
    #[error("too many streams open for this {holder}: at most {limit}")]
    TooManyStreams {
        /// Whose streams are counted.
        holder: StreamHolder,
        /// The cap.
        limit: usize,
    },
    /// The server's `authorize` hook refused the connection with `401`.
    #[error("{message}")]
    Unauthorized {
        /// The hook's message.
        message: String,
    },
    /// The connection, or one of its events, was refused with `403` by `authorize` or a
    /// handler's `get_room_id`.
    #[error("{message}")]
    Forbidden {
        /// The refusal's message (naming the event when one event was refused).
        message: String,
    },
    /// The request comes from a page whose origin is not allowed by the server's
    /// [`Cors`](crate::Cors) settings.
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// The request path is not the server's SSE path.
    #[error("not the SSE-IO path")]
    NotFound,
    /// The SSE path answers `GET` (and `HEAD`) only.
    #[error("method {method} is not allowed on the SSE path; use GET")]
    MethodNotAllowed {
        /// The method that was used.
        method: String,
    },
    /// The server is shutting down ([`Server::shutdown`](crate::Server::shutdown)). Answered
    /// `503` with `Retry-After`, which makes the official client reconnect with backoff, to
    /// another instance or to this one once it is back.
    #[error("the server is shutting down; retry later")]
    ShuttingDown,
    /// Application code (`authorize` or a handler's `get_room_id`) panicked; the panic was
    /// reported as an `error` notification.
    #[error("the server could not open the stream: its '{callback}' failed")]
    Internal {
        /// `authorize` or `get_room_id`.
        callback: &'static str,
    },
}

/// Whose open streams a cap counts ([`ConnectRejection::TooManyStreams`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamHolder {
    /// The principal that `authorize` granted.
    Principal,
    /// The client's IP address.
    Address,
}

impl fmt::Display for StreamHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Principal => "principal",
            Self::Address => "client address",
        })
    }
}

impl ConnectRejection {
    /// The HTTP status of this rejection.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingClientId
            | Self::MissingEvents
            | Self::MalformedQuery { .. }
            | Self::MalformedPath { .. }
            | Self::TooManyEvents { .. }
            | Self::ClientIdTooLong { .. }
            | Self::RoomIdTooLong { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::OriginNotAllowed => StatusCode::FORBIDDEN,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::ShuttingDown | Self::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyStreams { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body, `{"message": "<human readable reason>"}`.
    pub fn body(&self) -> Bytes {
        let body = serde_json::json!({ "message": self.to_string() });
        Bytes::from(body.to_string())
    }

    /// The complete HTTP response: status, `Content-Type: application/json`, the JSON body,
    /// `Allow: GET, HEAD` for [`ConnectRejection::MethodNotAllowed`] and `Retry-After` for the
    /// `503`s and the `429`.
    pub fn into_response(self) -> Response<Bytes> {
        let mut response = Response::new(self.body());
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match self {
            Self::MethodNotAllowed { .. } => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            }
            Self::ShuttingDown | Self::TooManyConnections | Self::TooManyStreams { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_client_id_is_400_json() {
        let response = ConnectRejection::MissingClientId.into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["message"], "query parameter 'clientId' is required");
    }

    #[test]
    fn method_not_allowed_names_the_allowed_methods() {
        let response = ConnectRejection::MethodNotAllowed {
            method: "POST".into(),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
    }
}
