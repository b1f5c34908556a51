// Run: `cargo run -p examples --bin demo`, then open the URL it prints in two or more tabs.

//! The live demo: a message board where browser tabs join rooms and see each other's messages
//! arrive over SSE-IO, with a presence count per room and a connection indicator.
//!
//! One process serves everything, on embedded defaults (no external service):
//!
//! - `GET /`, `/app.js`, `/style.css`: the page (`examples/demo/`, embedded in the binary).
//! - `GET /sseio?clientId=<id>&events=message&events=presence&room=<room>`: the SSE-IO stream.
//!   Both events put the connection in room `<room>` (default `lobby`).
//! - `POST /rooms/{room}/messages`: posts a message to a room. The body is either JSON,
//!   `{"author": "Ada", "text": "hello"}`, or plain text (then the author is `anonymous`):
//!   `curl --data-binary 'hello from curl' http://127.0.0.1:3000/rooms/lobby/messages`.
//!
//! The `message` event carries one message as JSON, except the first one on each connection:
//! its `fetch` answers with the room's last 20 messages, kept in memory, as a JSON array. The
//! `presence` event carries `{"count": n}`, the number of connections in the room.
//!
//! Environment: `PORT` (default 3000; `0` picks a free port). It listens on 127.0.0.1 only,
//! prints `listening <port>` and the URL to open, and stops gracefully on ctrl-c or `SIGTERM`.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sseio_hyper::{Context, EventHandler, HandlerOptions, Notification, Server};
use tokio::sync::mpsc;

const INDEX_HTML: &str = include_str!("../../demo/index.html");
const APP_JS: &str = include_str!("../../demo/app.js");
const STYLE_CSS: &str = include_str!("../../demo/style.css");

/// How many messages each room keeps for newcomers.
const HISTORY_LEN: usize = 20;
/// At most this many rooms keep a history; posting to a new room beyond it is refused.
const MAX_ROOMS: usize = 1000;
/// Limits on what one message may hold, in characters.
const MAX_TEXT_CHARS: usize = 1000;
const MAX_AUTHOR_CHARS: usize = 40;
const MAX_ROOM_CHARS: usize = 40;

/// One message on the board, as it goes on the wire (JSON).
#[derive(Debug, Clone, Serialize)]
struct Message {
    /// Unique across server restarts, so a page can skip a message it already shows.
    id: String,
    room: String,
    author: String,
    text: String,
    /// Milliseconds since the Unix epoch, set by the server.
    at: u64,
}

/// The JSON body of `POST /rooms/{room}/messages`.
#[derive(Debug, Deserialize)]
struct NewMessage {
    #[serde(default)]
    author: String,
    text: String,
}

/// The demo application: the `message` handler and the last messages of each room.
#[derive(Debug, Clone)]
struct Board {
    messages: EventHandler,
    history: History,
}

/// The last [`HISTORY_LEN`] messages of each room. Storing and sending happen under its lock,
/// so the history and the live stream always agree on the order of messages.
#[derive(Debug, Clone, Default)]
struct History(Arc<Mutex<HashMap<String, VecDeque<Message>>>>);

impl History {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, VecDeque<Message>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The room's last messages, oldest first.
    fn snapshot(&self, room: &str) -> Vec<Message> {
        self.lock()
            .get(room)
            .map(|messages| messages.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port.parse().map_err(|e| format!("PORT={port}: {e}"))?,
        Err(_) => 3000,
    };

    // The SSE-IO server: streams open at `/sseio`, the default path.
    let server = Server::new("/sseio")?;
    let history = History::default();

    // `message`: each connection first gets the room's recent messages (`fetch`), then the live
    // ones. Messages posted while the `fetch` runs are held back and follow it; one may also be
    // in the snapshot, so the page skips message ids it already shows.
    let snapshot_of = history.clone();
    let messages = server.register_event_handler(
        "message",
        HandlerOptions::new(room_of).fetch(move |ctx: Context| {
            let snapshot = snapshot_of.snapshot(&room_of(&ctx));
            async move { Ok::<_, Infallible>(snapshot) }
        }),
    )?;

    // `presence`: how many connections a room has. Its `fetch` runs once per connection right
    // after the connection joined its room, which makes it the place to learn that this room
    // gained a member (`Notification::ConnCreate` names the client, not its rooms). It sends
    // nothing itself; it tells the presence task, which announces the new count to the room.
    let (joined_tx, joined_rx) = mpsc::unbounded_channel();
    let presence = server.register_event_handler(
        "presence",
        HandlerOptions::new(room_of).fetch(move |ctx: Context| {
            // The receiver lives as long as the process; a failed send only means it is exiting.
            let _ = joined_tx.send(room_of(&ctx));
            async { Ok::<_, Infallible>(()) }
        }),
    )?;
    spawn_presence(&server, presence, joined_rx);

    let app = Router::new()
        .route("/", get(|| async { Html(INDEX_HTML) }))
        .route(
            "/app.js",
            get(|| async { asset("text/javascript", APP_JS) }),
        )
        .route("/style.css", get(|| async { asset("text/css", STYLE_CSS) }))
        .route("/rooms/{room}/messages", post(post_message))
        .with_state(Board { messages, history });

    let listener = sseio_hyper::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    let port = listener.local_addr()?.port();
    println!("listening {port}");
    println!("open http://127.0.0.1:{port}/");

    sseio_hyper::serve(listener, server)
        .with_app(app)
        .with_graceful_shutdown(sseio_hyper::shutdown_signal())
        .await?;
    Ok(())
}

/// The room a connection joins, from its `room` query parameter (default `lobby`).
fn room_of(ctx: &Context) -> String {
    ctx.query("room")
        .filter(|room| valid_room(room))
        .unwrap_or("lobby")
        .to_owned()
}

fn valid_room(room: &str) -> bool {
    !room.trim().is_empty() && room.chars().count() <= MAX_ROOM_CHARS
}

/// `POST /rooms/{room}/messages`: stores the message and sends it to everyone in the room.
async fn post_message(
    State(board): State<Board>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let new = if is_json {
        match serde_json::from_slice::<NewMessage>(&body) {
            Ok(new) => new,
            Err(e) => return bad_request(&format!("the body is not a message: {e}")),
        }
    } else {
        NewMessage {
            author: String::new(),
            text: String::from_utf8_lossy(&body).into_owned(),
        }
    };

    let text = new.text.trim();
    let author = match new.author.trim() {
        "" => "anonymous",
        author => author,
    };
    if !valid_room(&room) {
        return bad_request(&format!("a room name has 1 to {MAX_ROOM_CHARS} characters"));
    }
    if text.is_empty() || text.chars().count() > MAX_TEXT_CHARS {
        return bad_request(&format!("a message has 1 to {MAX_TEXT_CHARS} characters"));
    }
    if author.chars().count() > MAX_AUTHOR_CHARS {
        return bad_request(&format!("a name has at most {MAX_AUTHOR_CHARS} characters"));
    }
    let message = Message {
        id: uuid::Uuid::new_v4().to_string(),
        room: room.clone(),
        author: author.to_owned(),
        text: text.to_owned(),
        at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    };

    let mut history = board.history.lock();
    if !history.contains_key(&room) && history.len() >= MAX_ROOMS {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "message": "too many rooms have messages" })),
        )
            .into_response();
    }
    let recent = history.entry(room.clone()).or_default();
    if recent.len() == HISTORY_LEN {
        recent.pop_front();
    }
    recent.push_back(message.clone());
    // Never waits for a client: the frame is queued on each connection in the room.
    if let Err(e) = board.messages.send(&room, &message) {
        tracing::warn!(error = %e, "cannot send a message");
    }
    drop(history);

    (StatusCode::CREATED, axum::Json(message)).into_response()
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "message": message })),
    )
        .into_response()
}

/// One of the page's embedded files.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// Keeps every connection told how many connections its room has.
///
/// A room's count changes when a connection joins it (reported on `joined` by the `presence`
/// handler's `fetch`) or leaves it (`Notification::ConnClose`, which does not say which room:
/// then every room whose count differs from the one last announced is announced again).
/// Announcing after every change, with the count read after that change, means the last
/// `presence` message each member gets is the room's current count.
fn spawn_presence(
    server: &Server,
    handler: EventHandler,
    mut joined: mpsc::UnboundedReceiver<String>,
) {
    let mut notifications = server.subscribe();
    let mut presence = Presence {
        handler,
        announced: HashMap::new(),
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(room) = joined.recv() => presence.announce(&room),
                Some(notification) = notifications.recv() => presence.observe(&notification),
                else => break,
            }
        }
    });
}

/// The `presence` handler and the count last announced to each of its rooms.
#[derive(Debug)]
struct Presence {
    handler: EventHandler,
    announced: HashMap<String, usize>,
}

impl Presence {
    /// Sends the room's current count to everyone in it.
    fn announce(&mut self, room: &str) {
        let count = self.handler.room_size(room);
        if let Err(e) = self.handler.send(room, &json!({ "count": count })) {
            tracing::warn!(error = %e, "cannot send presence");
        }
        self.announced.insert(room.to_owned(), count);
    }

    /// Follows the server's lifecycle notifications.
    fn observe(&mut self, notification: &Notification) {
        match notification {
            Notification::ConnClose { .. } => self.announce_changed(),
            // Nobody is left to tell: forget the room.
            Notification::RoomEmpty { event, room } if **event == *self.handler.event() => {
                self.announced.remove(&**room);
            }
            _ => {}
        }
    }

    /// Announces every room whose count is not the one it was last told.
    fn announce_changed(&mut self) {
        for room in self.handler.rooms() {
            if self.announced.get(&room) != Some(&self.handler.room_size(&room)) {
                self.announce(&room);
            }
        }
    }
}
