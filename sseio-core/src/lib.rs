#![doc = include_str!("../README.md")]

mod auth;
mod broker;
mod builder;
mod connect;
mod connection;
mod cors;
mod error;
mod fetch;
mod frame;
mod handler;
mod history;
mod hub;
mod listener;
mod message;
mod metrics;
mod node;
mod notify;
mod pacing;
mod position;
mod quota;
mod rejection;
mod request;
mod room;
mod server;
mod sink;
mod sync;
mod upkeep;

pub use auth::{Grant, IntoRoom, Refusal};
pub use broker::{
    BoxFuture, Broker, BrokerCause, BrokerError, ConnectionId, HistoryStore, MemoryBroker, Node,
    Presence, Recalled, Replay, ReplayRoom,
};
pub use builder::{
    DEFAULT_FETCH_TIMEOUT, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_MAX_BUFFER_BYTES,
    DEFAULT_MAX_BUFFER_FRAMES, DEFAULT_MAX_CLIENT_ID_BYTES, DEFAULT_MAX_EVENTS,
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_ROOM_ID_BYTES, DEFAULT_NOTIFICATION_CAPACITY,
    DEFAULT_PATH, DEFAULT_RECONNECT_DELAY, DEFAULT_RECONNECT_SPREAD, DEFAULT_RESUME_QUERY_PARAM,
    ServerBuilder,
};
pub use connection::{Connection, ConnectionStream};
pub use cors::Cors;
pub use error::{BoxError, BuildError, ConnectionError, PositionError, RegisterError, SendError};
pub use handler::{Confirmation, EventHandler, HandlerOptions};
pub use history::{DEFAULT_HISTORY_TTL, DEFAULT_RESUME_TTL, History};
pub use listener::{LISTEN_BACKLOG, bind};
pub use notify::{CloseReason, Notification, Notifications};
pub use position::Position;
pub use rejection::{ConnectRejection, StreamHolder};
pub use request::{Context, RequestHead};
pub use server::{Outcome, Server};
pub use sink::{SinkError, SseSink};
