//! The publish API: how the backend sends messages, reaches one client, disconnects it, and
//! asks who is in a room. JSON in, JSON out, behind an API key.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sseio_hyper::{EventHandler, PositionError, SendError, Server};

/// What the API's handlers share.
#[derive(Debug, Clone)]
struct Api {
    server: Server,
    handlers: Arc<HashMap<String, EventHandler>>,
}

/// The API's routes under `prefix`, each behind one of `keys`.
pub(crate) fn routes(
    prefix: &str,
    keys: Vec<String>,
    max_body_bytes: usize,
    server: Server,
    handlers: Arc<HashMap<String, EventHandler>>,
) -> Router {
    let prefix = prefix.trim_end_matches('/');
    let keys: Arc<[Vec<u8>]> = keys.into_iter().map(String::into_bytes).collect();
    Router::new()
        .route(&format!("{prefix}/publish"), post(publish))
        .route(&format!("{prefix}/send-to-client"), post(send_to_client))
        .route(&format!("{prefix}/disconnect"), post(disconnect))
        .route(&format!("{prefix}/presence"), get(presence))
        .route(&format!("{prefix}/position"), get(position))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .route_layer(middleware::from_fn(move |request: Request, next: Next| {
            let keys = keys.clone();
            async move { authenticate(&keys, request, next).await }
        }))
        .with_state(Api { server, handlers })
}

/// A JSON error: `{"message": .., "field": ..}`, with the field when one is to blame.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<String>,
    sent: Option<usize>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
            sent: None,
        }
    }

    fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "message": self.message });
        if let Some(field) = self.field {
            body["field"] = Value::from(field);
        }
        if let Some(sent) = self.sent {
            body["sent"] = Value::from(sent);
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

async fn authenticate(keys: &[Vec<u8>], request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim().as_bytes());
    match presented {
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "send the API key as 'Authorization: Bearer <key>'",
        )
        .into_response(),
        Some(key) if keys.iter().any(|k| same(k, key)) => next.run(request).await,
        Some(_) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "the API key is not valid").into_response()
        }
    }
}

/// Compares two keys in time that depends on their lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One message for `POST /publish`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Message {
    event: String,
    room: String,
    data: Value,
}

/// `POST /publish`: one message (an object) or a batch (a list of them), sent in order.
/// Answers `{"local": N}` (or a list of them for a batch): the connections of the room on this
/// hub when the message was sent. Each send is acknowledged (`EventHandler::send_confirmed`):
/// with Redis, the answer comes once Redis published (and, with history, recorded) the message,
/// so a `200` is never lost to a Redis that fails right after, and an error lets the backend
/// retry.
async fn publish(State(api): State<Api>, body: Bytes) -> Result<axum::Json<Value>, ApiError> {
    let value: Value = parse(&body)?;
    let (messages, batch): (Vec<Message>, bool) = match value {
        Value::Array(_) => (from_value(value)?, true),
        _ => (vec![from_value(value)?], false),
    };
    let at = |i: usize, field: &str| {
        if batch {
            format!("[{i}].{field}")
        } else {
            field.to_owned()
        }
    };
    // Every event is known before anything is sent.
    let handlers = messages
        .iter()
        .enumerate()
        .map(|(i, m)| api.handler(&m.event).map_err(|e| e.field(at(i, "event"))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut local = Vec::with_capacity(messages.len());
    for (i, (message, handler)) in messages.iter().zip(handlers).enumerate() {
        let reached = handler.room_size(&message.room);
        if let Err(e) = handler.send_confirmed(&message.room, &message.data).await {
            let mut error = send_error(e).field(at(i, "data"));
            if batch {
                error.sent = Some(i);
            }
            return Err(error);
        }
        local.push(reached);
    }
    Ok(axum::Json(if batch {
        json!({ "local": local })
    } else {
        json!({ "local": local[0] })
    }))
}

/// `POST /send-to-client`: `{"clientId", "event", "data"}` to that client, wherever it is.
async fn send_to_client(
    State(api): State<Api>,
    body: Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ToClient {
        #[serde(rename = "clientId")]
        client_id: String,
        event: String,
        data: Value,
    }
    let request: ToClient = from_value(parse(&body)?)?;
    api.handler(&request.event).map_err(|e| e.field("event"))?;
    api.server
        .send_to_client(&request.client_id, &request.event, &request.data)
        .map_err(|e| send_error(e).field("data"))?;
    Ok(axum::Json(json!({})))
}

/// `POST /disconnect`: `{"clientId"}`, closed wherever it is connected.
async fn disconnect(State(api): State<Api>, body: Bytes) -> Result<axum::Json<Value>, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Disconnect {
        #[serde(rename = "clientId")]
        client_id: String,
    }
    let request: Disconnect = from_value(parse(&body)?)?;
    api.server
        .disconnect(&request.client_id)
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(axum::Json(json!({})))
}

/// `GET /presence?event=E&room=R`: `{"count", "clientIds"}` across the cluster.
async fn presence(
    State(api): State<Api>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<axum::Json<Value>, ApiError> {
    let (handler, room) = api.room_of(&query)?;
    let presence = handler
        .presence(room)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(axum::Json(
        json!({ "count": presence.count, "clientIds": presence.client_ids }),
    ))
}

/// `GET /position?event=E&room=R`: `{"position": "<id>"}`, where the room's history stands now,
/// for a page the backend renders to embed and pass on its first connect as `lastEventId`;
/// `409` for an event without history.
async fn position(
    State(api): State<Api>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<axum::Json<Value>, ApiError> {
    let (handler, room) = api.room_of(&query)?;
    let position = handler.position(room).await.map_err(|e| {
        let status = match e {
            PositionError::NoHistory { .. } => StatusCode::CONFLICT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    })?;
    Ok(axum::Json(json!({ "position": position.to_string() })))
}

impl Api {
    /// The handler and room named by the `event` and `room` query parameters.
    fn room_of<'q>(
        &self,
        query: &'q HashMap<String, String>,
    ) -> Result<(&EventHandler, &'q str), ApiError> {
        let param = |name: &str| {
            query.get(name).map(String::as_str).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("query parameter '{name}' is required"),
                )
                .field(name)
            })
        };
        let (event, room) = (param("event")?, param("room")?);
        let handler = self.handler(event).map_err(|e| e.field("event"))?;
        Ok((handler, room))
    }

    fn handler(&self, event: &str) -> Result<&EventHandler, ApiError> {
        self.handlers.get(event).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("unknown event '{event}': the hub's configuration has no [events.{event}]"),
            )
        })
    }
}

/// The body as JSON.
fn parse(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not JSON: {e}"),
        )
    })
}

/// `value` as a `T`, or `400` naming the field that does not fit.
fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        // A missing field is reported at its parent: name the field itself.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned);
        let mut field = match path.as_str() {
            "." => String::new(),
            path => path.to_owned(),
        };
        if let Some(missing) = missing {
            if !field.is_empty() {
                field.push('.');
            }
            field.push_str(&missing);
        }
        let error = ApiError::new(StatusCode::BAD_REQUEST, message);
        if field.is_empty() {
            error
        } else {
            error.field(field)
        }
    })
}

/// `413` for a message over the limit, `503` while the broker cannot take it, else `400`.
fn send_error(e: SendError) -> ApiError {
    let status = match e {
        SendError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        SendError::Broker(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }

    #[test]
    fn a_missing_field_is_named() {
        let error = from_value::<Message>(json!({"event": "e", "data": 1})).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("room"));
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        let error = from_value::<Vec<Message>>(
            json!([{"event": "e", "room": "r", "data": 1}, {"event": "e", "room": 5, "data": 1}]),
        )
        .unwrap_err();
        assert_eq!(error.field.as_deref(), Some("[1].room"));
        let error = from_value::<Message>(json!({"event": "e", "room": "r", "data": 1, "x": 2}))
            .unwrap_err();
        assert!(
            error.message.contains("unknown field `x`"),
            "{}",
            error.message
        );
    }
}
