//! The harness's test-only control endpoints: `POST /_control/send`, `GET /_control/log`, and
//! the cluster's `GET /_control/presence`, `POST /_control/send-to-client` and
//! `POST /_control/disconnect`.

use std::io;

use serde::Deserialize;

use crate::Harness;
use crate::http1::Request;

/// One lifecycle notification from `GET /_control/log`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LogRecord {
    /// `conn:create`, `conn:close`, `room:create`, `room:empty` or `error`.
    pub kind: String,
    /// The client id, for `conn:*` records.
    #[serde(rename = "clientId", default)]
    pub client_id: Option<String>,
    /// The event name, for `room:*` records.
    #[serde(default)]
    pub event: Option<String>,
    /// The room id, for `room:*` records.
    #[serde(default)]
    pub room: Option<String>,
    /// The error message, for `error` records.
    #[serde(default)]
    pub message: Option<String>,
}

impl LogRecord {
    /// Whether this is a `kind` record (`conn:create` or `conn:close`) for `client_id`.
    pub fn is_conn(&self, kind: &str, client_id: &str) -> bool {
        self.kind == kind && self.client_id.as_deref() == Some(client_id)
    }

    /// Whether this is a `kind` record (`room:create` or `room:empty`) for `room` of `event`.
    pub fn is_room(&self, kind: &str, event: &str, room: &str) -> bool {
        self.kind == kind
            && self.event.as_deref() == Some(event)
            && self.room.as_deref() == Some(room)
    }

    /// Whether this is an `error` record.
    pub fn is_error(&self) -> bool {
        self.kind == "error"
    }
}

/// Counts the `kind` records for `client_id` in `log`.
pub fn count_conn(log: &[LogRecord], kind: &str, client_id: &str) -> usize {
    log.iter().filter(|r| r.is_conn(kind, client_id)).count()
}

/// The answer to `POST /_control/send`.
#[derive(Debug, Clone)]
pub struct SendOutcome {
    /// The status code: `200` once the message was sent, `404` for an unknown event.
    pub status: u16,
    /// The response body.
    pub body: Vec<u8>,
}

/// `POST /_control/send?event=E&room=R` with `body` sent as a string, verbatim
/// (`Content-Type: text/plain`).
pub async fn send_text(
    h: &Harness,
    event: &str,
    room: &str,
    body: &str,
) -> io::Result<SendOutcome> {
    send(h, event, room, "text/plain; charset=utf-8", body.as_bytes()).await
}

/// `POST /_control/send?event=E&room=R` with `json` sent as a JSON value
/// (`Content-Type: application/json`).
pub async fn send_json(
    h: &Harness,
    event: &str,
    room: &str,
    json: &str,
) -> io::Result<SendOutcome> {
    send(h, event, room, "application/json", json.as_bytes()).await
}

/// `POST /_control/send?event=E&room=R` of the text `body` to the node at `base_url` (not a
/// [`Harness`]: senders that address nodes which may be restarting or draining), on a
/// connection of its own (`Connection: close`): the status, or `None` when no answer came
/// within 10 seconds.
pub async fn send_text_to(base_url: &str, event: &str, room: &str, body: Vec<u8>) -> Option<u16> {
    let target = format!(
        "/_control/send?event={}&room={}",
        encode_component(event),
        encode_component(room)
    );
    let request = Request::new("POST", target)
        .header("Content-Type", "text/plain; charset=utf-8")
        .header("Connection", "close")
        .body(body);
    match tokio::time::timeout(std::time::Duration::from_secs(10), request.send(base_url)).await {
        Ok(Ok(response)) => Some(response.status()),
        _ => None,
    }
}

async fn send(
    h: &Harness,
    event: &str,
    room: &str,
    content_type: &str,
    body: &[u8],
) -> io::Result<SendOutcome> {
    let target = format!(
        "/_control/send?event={}&room={}",
        encode_component(event),
        encode_component(room)
    );
    post(h, &target, content_type, body).await
}

/// `POST /_control/send-to-client?clientId=C&event=E` with `body` sent as a string.
pub async fn send_to_client(
    h: &Harness,
    client_id: &str,
    event: &str,
    body: &str,
) -> io::Result<SendOutcome> {
    let target = format!(
        "/_control/send-to-client?clientId={}&event={}",
        encode_component(client_id),
        encode_component(event)
    );
    post(h, &target, "text/plain; charset=utf-8", body.as_bytes()).await
}

/// `POST /_control/disconnect?clientId=C`.
pub async fn disconnect(h: &Harness, client_id: &str) -> io::Result<SendOutcome> {
    let target = format!(
        "/_control/disconnect?clientId={}",
        encode_component(client_id)
    );
    post(h, &target, "text/plain", b"").await
}

/// `POST target` with a body; the status and body of the answer.
pub async fn post(
    h: &Harness,
    target: &str,
    content_type: &str,
    body: &[u8],
) -> io::Result<SendOutcome> {
    let mut response = Request::new("POST", target)
        .header("Content-Type", content_type)
        .header("Connection", "close")
        .body(body)
        .send(h.base_url())
        .await?;
    let body = response.read_to_end().await?;
    Ok(SendOutcome {
        status: response.status(),
        body,
    })
}

/// The answer of `GET /_control/presence`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Presence {
    /// The number of connections in the room, across the cluster.
    pub count: usize,
    /// Their client ids, sorted.
    #[serde(rename = "clientIds")]
    pub client_ids: Vec<String>,
}

/// `GET /_control/presence?event=E&room=R`.
pub async fn presence(h: &Harness, event: &str, room: &str) -> io::Result<Presence> {
    get_json(h, "presence", event, room).await
}

/// `GET /_control/position?event=E&room=R`: where the room's history stands now, the id a page
/// embeds for its first connect.
pub async fn position(h: &Harness, event: &str, room: &str) -> io::Result<String> {
    #[derive(Deserialize)]
    struct Answer {
        position: String,
    }
    let answer: Answer = get_json(h, "position", event, room).await?;
    Ok(answer.position)
}

/// `GET /_control/<action>?event=E&room=R`, its `200` JSON answer read as a `T`.
async fn get_json<T: serde::de::DeserializeOwned>(
    h: &Harness,
    action: &str,
    event: &str,
    room: &str,
) -> io::Result<T> {
    let target = format!(
        "/_control/{action}?event={}&room={}",
        encode_component(event),
        encode_component(room)
    );
    let mut response = Request::get(target)
        .header("Connection", "close")
        .send(h.base_url())
        .await?;
    let body = response.read_to_end().await?;
    if response.status() != 200 {
        return Err(io::Error::other(format!(
            "GET /_control/{action} answered {}: {}",
            response.status(),
            String::from_utf8_lossy(&body)
        )));
    }
    serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// `GET /_control/log`: every lifecycle notification so far, in order.
pub async fn log(h: &Harness) -> io::Result<Vec<LogRecord>> {
    let mut response = Request::get("/_control/log")
        .header("Connection", "close")
        .send(h.base_url())
        .await?;
    let body = response.read_to_end().await?;
    if response.status() != 200 {
        return Err(io::Error::other(format!(
            "GET /_control/log answered {}: {}",
            response.status(),
            String::from_utf8_lossy(&body)
        )));
    }
    serde_json::from_slice(&body).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("GET /_control/log is not a JSON array of records: {e}"),
        )
    })
}

/// Percent-encodes a query component: everything but the URL-unreserved characters.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
