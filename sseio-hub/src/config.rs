//! The hub's configuration: every section and key, with its default. Reading it from a file and
//! the environment is `load`.
//!
//! Every key is optional except each event's `room`; [`Config::default`] is what an empty file
//! gives. Unknown keys are errors, named by their key path (`limits.max_conections`), so a typo
//! never silently leaves a setting at its default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The whole configuration of a hub.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`: where and how the hub listens.
    pub server: ServerConfig,
    /// `[limits]`: the limits of the SSE endpoint.
    pub limits: LimitsConfig,
    /// `[history]`: history and resume (off by default).
    pub history: HistoryConfig,
    /// `[cors]`: cross-origin pages (off by default).
    pub cors: CorsConfig,
    /// `[redis]`: the Redis broker that makes several hubs one cluster (off by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisConfig>,
    /// `[auth]`: who may open a stream (everyone by default).
    pub auth: AuthConfig,
    /// `[publish]`: the publish API for the backend.
    pub publish: PublishConfig,
    /// `[webhooks]`: lifecycle notifications posted to the backend (off by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<WebhooksConfig>,
    /// `[log]`: the hub's own log on stderr.
    pub log: LogConfig,
    /// `[events.NAME]`: the events clients may subscribe to, by name.
    pub events: BTreeMap<String, EventConfig>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The address to listen on. Default: `127.0.0.1:8080`; `0.0.0.0:8080` to be reachable from
    /// other machines.
    pub listen: SocketAddr,
    /// The SSE endpoint's path pattern: `:name` segments are path parameters (`{param.name}` in
    /// templates), a final `*name` the rest of the path. Default: `/sseio`.
    pub path: String,
    /// The heartbeat comment's period, in milliseconds; 0 for none. Default: 3000.
    pub heartbeat_interval_ms: u64,
    /// How long `SIGTERM`'s graceful drain spreads the closing of open streams, in
    /// milliseconds. Default: 5000.
    pub drain_grace_ms: u64,
    /// The base of the reconnect delay clients are told (`retry:`, `Retry-After`), in
    /// milliseconds. Default: 1000.
    pub reconnect_delay_ms: u64,
    /// The spread added to the reconnect delay, different for every stream, in milliseconds.
    /// Default: 3000.
    pub reconnect_spread_ms: u64,
    /// Close every stream after at most this many milliseconds, so clients rebalance across
    /// hubs. Default: unset, streams live as long as their clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_stream_lifetime_ms: Option<u64>,
    /// With history, the event a client is sent first when its resume could not be served
    /// (the gap notice). Default: unset, no notice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gap_notice: Option<String>,
    /// How many lifecycle notifications may queue for the webhooks before the oldest are
    /// dropped. Default: 1024.
    pub notification_capacity: usize,
    /// Whether a connection may replace another with the same `clientId` only when both have
    /// the same principal. Default: unset, which means on with `[auth]`, off without.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub takeover_requires_same_principal: Option<bool>,
    /// The liveness path (`200` while the process serves). Default: `/livez`.
    pub liveness_path: String,
    /// The readiness path (`503` while draining or while Redis is unreachable). Default:
    /// `/readyz`.
    pub readiness_path: String,
    /// The path of the Prometheus metrics; empty for none. Default: `/metrics`.
    pub metrics_path: String,
    /// Whether the metrics include the `sseio_send_lag_seconds` histogram. Default: false.
    pub send_lag_metric: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            path: sseio_hyper::DEFAULT_PATH.to_owned(),
            heartbeat_interval_ms: millis(sseio_hyper::DEFAULT_HEARTBEAT_INTERVAL),
            drain_grace_ms: millis(sseio_hyper::DEFAULT_SHUTDOWN_GRACE),
            reconnect_delay_ms: millis(sseio_hyper::DEFAULT_RECONNECT_DELAY),
            reconnect_spread_ms: millis(sseio_hyper::DEFAULT_RECONNECT_SPREAD),
            max_stream_lifetime_ms: None,
            gap_notice: None,
            notification_capacity: sseio_hyper::DEFAULT_NOTIFICATION_CAPACITY,
            takeover_requires_same_principal: None,
            liveness_path: sseio_hyper::DEFAULT_LIVENESS_PATH.to_owned(),
            readiness_path: sseio_hyper::DEFAULT_READINESS_PATH.to_owned(),
            metrics_path: "/metrics".to_owned(),
            send_lag_metric: false,
        }
    }
}

/// `[limits]`: each one the library's setting of the same name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Bytes queued for one connection before it is closed as a slow consumer. Default: 1 MiB.
    pub max_buffer_bytes: usize,
    /// Frames queued for one connection before it is closed. Default: 8192.
    pub max_buffer_frames: usize,
    /// Distinct events per connection (`400` past it). Default: 32.
    pub max_events: usize,
    /// Bytes of a `clientId` (`400` past it). Default: 128.
    pub max_client_id_bytes: usize,
    /// Bytes of a room id (`400` past it). Default: 256.
    pub max_room_id_bytes: usize,
    /// Bytes of one message's payload (the publish API answers `413` past it). Default: 512 KiB.
    pub max_message_bytes: usize,
    /// Open streams on this hub (`503` past it). Default: unset, no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Open streams per principal, on this hub (`429` past it). Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_streams_per_principal: Option<usize>,
    /// Open streams per client address, on this hub (`429` past it). Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_streams_per_address: Option<usize>,
    /// How long a `fetch` may take, in milliseconds, before it counts as failed. Default: 30000.
    pub fetch_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_buffer_bytes: sseio_hyper::DEFAULT_MAX_BUFFER_BYTES,
            max_buffer_frames: sseio_hyper::DEFAULT_MAX_BUFFER_FRAMES,
            max_events: sseio_hyper::DEFAULT_MAX_EVENTS,
            max_client_id_bytes: sseio_hyper::DEFAULT_MAX_CLIENT_ID_BYTES,
            max_room_id_bytes: sseio_hyper::DEFAULT_MAX_ROOM_ID_BYTES,
            max_message_bytes: sseio_hyper::DEFAULT_MAX_MESSAGE_BYTES,
            max_connections: None,
            max_streams_per_principal: None,
            max_streams_per_address: None,
            fetch_timeout_ms: millis(sseio_hyper::DEFAULT_FETCH_TIMEOUT),
        }
    }
}

/// `[history]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// How many messages each room keeps for clients that reconnect; 0 for no history.
    /// Default: 0. An event's own `history` wins.
    pub messages: usize,
    /// How long a message stays in the history, in milliseconds. Default: 300000.
    pub ttl_ms: u64,
    /// How long where a `clientId` stood is remembered after its stream closed, in
    /// milliseconds. Default: 60000.
    pub resume_ttl_ms: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            messages: 0,
            ttl_ms: millis(sseio_hyper::DEFAULT_HISTORY_TTL),
            resume_ttl_ms: millis(sseio_hyper::DEFAULT_RESUME_TTL),
        }
    }
}

/// `[cors]`: off while `origins` is empty and `any_origin` is false.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// The origins whose pages may open streams, such as `https://app.example`. Default: none.
    pub origins: Vec<String>,
    /// Allow every origin (with `credentials`, each origin is echoed back). Default: false.
    pub any_origin: bool,
    /// Allow credentials (cookies) on cross-origin streams. Default: false.
    pub credentials: bool,
    /// How long a browser may cache a preflight's answer, in milliseconds. Default: unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
}

/// `[redis]`: several hubs on one Redis are one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// The Redis URL, such as `redis://127.0.0.1:6379/`. Required in this section.
    pub url: String,
    /// Sharded Pub/Sub on a Redis Cluster (`url` names one of its nodes). Default: false.
    #[serde(default)]
    pub sharded: bool,
    /// The prefix of every Redis key and channel; hubs with the same prefix form a cluster.
    /// Default: the broker's, `sseio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// `[auth]`: at most one of `jwt` and `webhook`. Without either, every stream is accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `[auth.jwt]`: signed tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtConfig>,
    /// `[auth.webhook]`: ask the backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<AuthWebhookConfig>,
}

/// A JWT signature algorithm the hub verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256, with a shared `secret`.
    HS256,
    /// RSA PKCS#1 v1.5 with SHA-256, with an RSA public key in PEM.
    RS256,
    /// ECDSA on P-256 with SHA-256, with an EC public key in PEM.
    ES256,
}

/// `[auth.jwt]`: a stream must present a token signed with this key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// `HS256`, `RS256` or `ES256`. Required.
    pub algorithm: JwtAlgorithm,
    /// The HMAC secret, for `HS256` (or `secret_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// A file holding the HMAC secret, for `HS256` (a trailing line break is ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// The PEM file of the public key, for `RS256` and `ES256` (relative to the configuration
    /// file's directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<PathBuf>,
    /// The public key's PEM text itself, for `RS256` and `ES256` (instead of
    /// `public_key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Read the token from `Authorization: Bearer <token>`. Default: true.
    #[serde(default = "yes")]
    pub header: bool,
    /// Also read the token from this cookie. Default: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// The `iss` a token must have. Default: unset, not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The `aud` a token must have. Default: unset, not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// The claim that names the principal. Default: `sub`.
    #[serde(default = "default_principal_claim")]
    pub principal_claim: String,
    /// The claim that restricts rooms (see the README, "Who may connect"). Default: `rooms`.
    #[serde(default = "default_rooms_claim")]
    pub rooms_claim: String,
    /// Clock skew allowed when checking `exp` and `nbf`, in seconds. Default: 60.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
}

/// `[auth.webhook]`: the backend decides, for each new stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthWebhookConfig {
    /// The `http://` URL the hub posts each new stream's request to. Required.
    pub url: String,
    /// How long the backend may take to answer, in milliseconds. Default: 5000.
    #[serde(default = "default_webhook_timeout")]
    pub timeout_ms: u64,
    /// The request headers passed on to the backend (lower-case names). Default:
    /// `["authorization", "cookie"]`.
    #[serde(default = "default_forward_headers")]
    pub forward_headers: Vec<String>,
}

/// `[publish]`: the backend's API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublishConfig {
    /// The keys the backend presents as `Authorization: Bearer <key>`; at least one. Several
    /// let you rotate a key without downtime.
    pub api_keys: Vec<String>,
    /// The prefix of the API's routes. Default: `/api`.
    pub prefix: String,
    /// The largest request body, in bytes. Default: 4 MiB.
    pub max_body_bytes: usize,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            api_keys: Vec::new(),
            prefix: "/api".to_owned(),
            max_body_bytes: 4 * 1024 * 1024,
        }
    }
}

/// `[webhooks]`: lifecycle notifications posted to the backend, at most once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// The `http://` URL the hub posts batches of notifications to. Required.
    pub url: String,
    /// Which notifications: any of `conn:create`, `conn:close`, `room:create`, `room:empty`,
    /// `error`. Default: all five.
    #[serde(default = "default_webhook_events")]
    pub events: Vec<String>,
    /// How long the backend may take to answer one batch, in milliseconds. Default: 5000.
    #[serde(default = "default_webhook_timeout")]
    pub timeout_ms: u64,
    /// The most notifications in one post. Default: 100.
    #[serde(default = "default_batch")]
    pub batch: usize,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter, such as `info` or `sseio_hub=debug,info`; `RUST_LOG` wins when set.
    /// Default: `info`.
    pub filter: String,
    /// `text` or `json` (one JSON object per line). Default: `text`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// How the log is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[events.NAME]`: one event clients may subscribe to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventConfig {
    /// The room a connection joins: a template such as `"{param.guid}"`, `"{query.room}"`,
    /// `"{header.x-tenant}:{principal}"`. Required.
    pub room: String,
    /// This event's own history, in messages (0 for none); wins over `[history].messages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<usize>,
    /// `[events.NAME.fetch]`: the first message of each new connection, from the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch: Option<FetchConfig>,
}

/// `[events.NAME.fetch]`: an HTTP `GET` to the backend whose body is the first message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchConfig {
    /// The `http://` URL template, such as `"http://backend:3000/files/{param.guid}/state"`;
    /// values are percent-encoded. Required.
    pub url: String,
    /// How long the backend may take, in milliseconds. Default: `[limits].fetch_timeout_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The request headers passed on to the backend (lower-case names). Default: none.
    #[serde(default)]
    pub forward_headers: Vec<String>,
}

fn yes() -> bool {
    true
}

fn default_principal_claim() -> String {
    "sub".to_owned()
}

fn default_rooms_claim() -> String {
    "rooms".to_owned()
}

fn default_leeway() -> u64 {
    60
}

fn default_webhook_timeout() -> u64 {
    5000
}

fn default_forward_headers() -> Vec<String> {
    vec!["authorization".to_owned(), "cookie".to_owned()]
}

fn default_webhook_events() -> Vec<String> {
    crate::lifecycle::KINDS
        .iter()
        .map(|&k| k.to_owned())
        .collect()
}

fn default_batch() -> usize {
    100
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
