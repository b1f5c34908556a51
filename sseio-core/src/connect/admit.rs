//! Admission, the first step of a connect: the request is parsed, `authorize` decides, and each
//! requested event's handler picks the connection's room.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::auth::Refusal;
use crate::builder::Limits;
use crate::error::ConnectionError;
use crate::fetch::{CatchUnwind, panic_message};
use crate::handler::EventHandler;
use crate::rejection::ConnectRejection;
use crate::request::{Context, PathPattern, RequestHead, parse_query};
use crate::server::ServerInner;

/// A connection the server takes: who it is and which room of each handler it joins.
pub(crate) struct Admitted {
    pub(crate) client_id: Arc<str>,
    pub(crate) principal: Option<Arc<str>>,
    pub(crate) context: Context,
    /// One room per requested event that has a handler, with the handler.
    pub(crate) rooms: Vec<(EventHandler, Arc<str>)>,
}

/// A validated stream request.
pub(crate) struct Parsed {
    client_id: String,
    events: Vec<String>,
    params: Vec<(String, String)>,
    query: Vec<(String, String)>,
}

/// Parses, authorizes and places a stream request.
pub(crate) async fn admit(
    server: &ServerInner,
    request: &RequestHead<'_>,
) -> Result<Admitted, ConnectRejection> {
    let parsed = parse(request, server.path(), server.limits())?;
    if server.hub().is_draining() {
        return Err(ConnectRejection::ShuttingDown);
    }
    let handlers: Vec<EventHandler> = parsed
        .events
        .iter()
        .filter_map(|event| server.handler(event))
        .collect();
    let client_id: Arc<str> = parsed.client_id.as_str().into();
    let context = Context::new(
        parsed.client_id,
        parsed.params,
        parsed.query,
        request.headers.clone(),
    );
    let context = authorize(server, context, &client_id).await?;
    let principal = context.grant().principal_arc();
    let rooms = place(server, &context, &client_id, handlers)?;
    Ok(Admitted {
        client_id,
        principal,
        context,
        rooms,
    })
}

/// Runs the server's `authorize`, if any, and hands its grant to the context.
async fn authorize(
    server: &ServerInner,
    context: Context,
    client_id: &Arc<str>,
) -> Result<Context, ConnectRejection> {
    let Some(authorize) = server.authorizer() else {
        return Ok(context);
    };
    // The call itself runs inside the first poll, so a panic in it is caught as well.
    let asked = context.clone();
    let deciding = CatchUnwind(Box::pin(async move { authorize(asked).await }));
    match deciding.await {
        Ok(Ok(grant)) => Ok(context.with_grant(grant)),
        Ok(Err(refusal)) => Err(refused(refusal, None)),
        Err(message) => {
            server.report(ConnectionError::Panicked {
                callback: "authorize",
                event: None,
                client_id: client_id.clone(),
                message,
            });
            Err(ConnectRejection::Internal {
                callback: "authorize",
            })
        }
    }
}

/// The room of each handler, from its `get_room_id`.
fn place(
    server: &ServerInner,
    context: &Context,
    client_id: &Arc<str>,
    handlers: Vec<EventHandler>,
) -> Result<Vec<(EventHandler, Arc<str>)>, ConnectRejection> {
    let max_room_id_bytes = server.limits().max_room_id_bytes;
    let mut rooms = Vec::with_capacity(handlers.len());
    for handler in handlers {
        match catch_unwind(AssertUnwindSafe(|| handler.room_id(context))) {
            Ok(Err(refusal)) => return Err(refused(refusal, Some(handler.event()))),
            Ok(Ok(room)) if room.len() > max_room_id_bytes => {
                return Err(ConnectRejection::RoomIdTooLong {
                    event: handler.event().to_owned(),
                    limit: max_room_id_bytes,
                });
            }
            Ok(Ok(room)) => rooms.push((handler, Arc::<str>::from(room))),
            Err(panic) => {
                server.report(ConnectionError::Panicked {
                    callback: "get_room_id",
                    event: Some(handler.event_arc().clone()),
                    client_id: client_id.clone(),
                    message: panic_message(&*panic),
                });
                return Err(ConnectRejection::Internal {
                    callback: "get_room_id",
                });
            }
        }
    }
    Ok(rooms)
}

/// Checks a stream request against the path pattern and the limits: `clientId` and `events`
/// present and non-empty, events distinct and not too many, `clientId` not too long.
pub(crate) fn parse(
    request: &RequestHead<'_>,
    path: &PathPattern,
    limits: &Limits,
) -> Result<Parsed, ConnectRejection> {
    let params = path
        .params(request.uri.path())
        .ok_or(ConnectRejection::NotFound)??;
    let query = parse_query(request.uri.query().unwrap_or(""))?;
    let client_id = query
        .iter()
        .find(|(k, v)| k == "clientId" && !v.is_empty())
        .map(|(_, v)| v.clone())
        .ok_or(ConnectRejection::MissingClientId)?;
    let mut events: Vec<String> = Vec::new();
    for (_, event) in query.iter().filter(|(k, v)| k == "events" && !v.is_empty()) {
        if !events.contains(event) {
            events.push(event.clone());
        }
    }
    if events.is_empty() {
        return Err(ConnectRejection::MissingEvents);
    }
    if events.len() > limits.max_events {
        return Err(ConnectRejection::TooManyEvents {
            count: events.len(),
            limit: limits.max_events,
        });
    }
    if client_id.len() > limits.max_client_id_bytes {
        return Err(ConnectRejection::ClientIdTooLong {
            limit: limits.max_client_id_bytes,
        });
    }
    Ok(Parsed {
        client_id,
        events,
        params,
        query,
    })
}

/// The rejection for a refusal by `authorize` (no event) or by one event's `get_room_id`.
fn refused(refusal: Refusal, event: Option<&str>) -> ConnectRejection {
    let message = match event {
        Some(event) => format!("event '{event}' refused: {refusal}"),
        None => refusal.to_string(),
    };
    match refusal {
        Refusal::Unauthorized(_) => ConnectRejection::Unauthorized { message },
        Refusal::Forbidden(_) => ConnectRejection::Forbidden { message },
    }
}
