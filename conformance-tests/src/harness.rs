//! The host application every harness binary shares: the handlers of the harness contract, the
//! lifecycle log, and the control actions. Each adapter's binary only wires these into its
//! framework's routes, with the adapter's public API, as a user would.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::{Method, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::{Value, json};
use sseio_hyper::{
    Context, Cors, EventHandler, Grant, HandlerOptions, History, Notification, PositionError,
    Refusal, SendError, Server, ServerBuilder,
};
use sseio_redis::RedisBroker;
use tokio::sync::{mpsc, oneshot};

/// The SSE path of the harness contract.
pub const PATH: &str = "/files/:guid/pull";

/// The content type of `GET /metrics`: the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The buckets of `sseio_send_lag_seconds`, from 100 µs to 10 s (without buckets the exporter
/// renders a histogram as a summary).
const SEND_LAG_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0,
];

/// How often the recorder's histogram samples are drained into their buckets.
const METRICS_UPKEEP: Duration = Duration::from_secs(1);

/// The harness application: its SSE-IO server, handlers by event, and the lifecycle log.
#[derive(Debug, Clone)]
pub struct HarnessApp {
    server: Server,
    handlers: Arc<HashMap<String, EventHandler>>,
    /// The log's records as JSON text, comma-separated: compact, so that benchmarks that open
    /// hundreds of thousands of connections measure the server, not the harness's log.
    log: Arc<Mutex<String>>,
    /// Asks the log's task to record every notification already raised, then answer.
    flush: mpsc::UnboundedSender<oneshot::Sender<()>>,
    /// The process's Prometheus recorder, for `GET /metrics`.
    metrics: PrometheusHandle,
}

impl HarnessApp {
    /// Builds the server with the contract's handlers and starts recording its notifications;
    /// with `REDIS_URL`, the server is a node of the cluster on that Redis
    /// (`SSEIO_REDIS_SHARDED=1` for sharded Pub/Sub). Must run inside a tokio runtime.
    ///
    /// # Panics
    ///
    /// If Redis cannot be reached at start, or the contract's path or event names were
    /// rejected (a bug in sseio).
    pub async fn new() -> Self {
        // Before the server is built: it registers its metrics with the recorder it finds.
        let metrics = install_metrics();
        let mut builder = builder_from_env();
        if let Ok(url) = std::env::var("REDIS_URL") {
            let sharded = std::env::var("SSEIO_REDIS_SHARDED").is_ok_and(|v| v == "1");
            let broker = RedisBroker::builder(url.as_str())
                .sharded(sharded)
                .connect()
                .await
                .unwrap_or_else(|e| panic!("cannot connect to Redis at {url}: {e}"));
            builder = builder.broker(broker);
        }
        let server = builder.build().expect("the harness path is valid");
        let by_guid = |ctx: &Context| ctx.param("guid").unwrap_or_default().to_owned();
        let mut handlers = HashMap::new();
        for event in ["normal-event", "test-multiple-1", "test-multiple-2"] {
            handlers.insert(event, HandlerOptions::new(by_guid));
        }
        handlers.insert(
            "query-event",
            HandlerOptions::new(|ctx: &Context| ctx.query("room").unwrap_or_default().to_owned()),
        );
        handlers.insert(
            "fetch-event",
            HandlerOptions::new(by_guid).fetch(|_ctx: Context| async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok::<_, Infallible>(json!(["a", "b"]))
            }),
        );
        handlers.insert(
            "fetch-error-event",
            HandlerOptions::new(by_guid).fetch(|_ctx: Context| async {
                Err::<(), _>("foo: the harness fetch always fails")
            }),
        );
        if std::env::var_os("SSEIO_AUTH_TOKEN").is_some() {
            handlers.insert(
                "forbidden-event",
                HandlerOptions::new(|_ctx: &Context| -> Result<String, Refusal> {
                    Err(Refusal::forbidden("refused for everyone"))
                }),
            );
        }
        let handlers = handlers
            .into_iter()
            .map(|(event, options)| {
                let handler = server
                    .register_event_handler(event, options)
                    .expect("the harness events are valid");
                (event.to_owned(), handler)
            })
            .collect();

        let log = Arc::new(Mutex::new(String::new()));
        let mut notifications = server.subscribe();
        let (flush, mut flushes) = mpsc::unbounded_channel::<oneshot::Sender<()>>();
        let records = log.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    notification = notifications.recv() => match notification {
                        Some(notification) => append(&records, notification),
                        None => break,
                    },
                    Some(done) = flushes.recv() => {
                        while let Some(notification) = notifications.try_recv() {
                            append(&records, notification);
                        }
                        let _ = done.send(());
                    }
                }
            }
        });
        Self {
            server,
            handlers: Arc::new(handlers),
            log,
            flush,
            metrics,
        }
    }

    /// The SSE-IO server, to mount with the adapter.
    pub fn server(&self) -> Server {
        self.server.clone()
    }

    /// Serves `/_control/<action>` (see `conformance-tests/HARNESS.md`): `POST send`,
    /// `POST send-to-client`, `POST disconnect`, `GET presence`, `GET log`. `query` is the
    /// request's decoded query, `content_type` and `body` its body (a JSON value when the type is
    /// `application/json`, else sent verbatim). Answers the status and a JSON body.
    pub async fn control(
        &self,
        method: &Method,
        action: &str,
        query: &HashMap<String, String>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (StatusCode, String) {
        let param = |name: &str| {
            query.get(name).map(String::as_str).ok_or_else(|| {
                error(
                    StatusCode::BAD_REQUEST,
                    &format!("query parameter '{name}' is required"),
                )
            })
        };
        let outcome = match (method.as_str(), action) {
            // Answered once the broker published the message (with history, recorded it):
            // `200` means no client can miss it.
            ("POST", "send") => {
                let sending = (|| {
                    let (event, room) = (param("event")?, param("room")?);
                    let handler = self.handler(event)?;
                    Ok(match message(content_type, body)? {
                        Message::Json(value) => handler.send_confirmed(room, &value),
                        Message::Text(text) => handler.send_confirmed(room, text),
                    })
                })();
                match sending {
                    Ok(sending) => sending.await.map_err(send_error),
                    Err(answer) => Err(answer),
                }
            }
            ("POST", "send-to-client") => (|| {
                let (client, event) = (param("clientId")?, param("event")?);
                self.handler(event)?;
                let sent = match message(content_type, body)? {
                    Message::Json(value) => self.server.send_to_client(client, event, &value),
                    Message::Text(text) => self.server.send_to_client(client, event, text),
                };
                sent.map_err(send_error)
            })(),
            ("POST", "disconnect") => param("clientId").and_then(|client| {
                self.server
                    .disconnect(client)
                    .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()))
            }),
            ("GET", "presence") => {
                return match (param("event"), param("room")) {
                    (Ok(event), Ok(room)) => match self.handler(event) {
                        Ok(handler) => match handler.presence(room).await {
                            Ok(presence) => (
                                StatusCode::OK,
                                json!({"count": presence.count, "clientIds": presence.client_ids})
                                    .to_string(),
                            ),
                            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
                        },
                        Err(answer) => answer,
                    },
                    (Err(answer), _) | (_, Err(answer)) => answer,
                };
            }
            ("GET", "position") => {
                return match (param("event"), param("room")) {
                    (Ok(event), Ok(room)) => match self.handler(event) {
                        Ok(handler) => match handler.position(room).await {
                            Ok(position) => (
                                StatusCode::OK,
                                json!({"position": position.to_string()}).to_string(),
                            ),
                            Err(e @ PositionError::NoHistory { .. }) => {
                                error(StatusCode::CONFLICT, &e.to_string())
                            }
                            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
                        },
                        Err(answer) => answer,
                    },
                    (Err(answer), _) | (_, Err(answer)) => answer,
                };
            }
            ("GET", "log") => return (StatusCode::OK, self.log_json()),
            _ => Err(error(
                StatusCode::NOT_FOUND,
                &format!("no control action {method} {action}"),
            )),
        };
        match outcome {
            Ok(()) => (StatusCode::OK, "{}".to_owned()),
            Err(answer) => answer,
        }
    }

    fn handler(&self, event: &str) -> Result<&EventHandler, (StatusCode, String)> {
        self.handlers
            .get(event)
            .ok_or_else(|| error(StatusCode::NOT_FOUND, &format!("unknown event '{event}'")))
    }

    /// `GET /metrics`: the Prometheus text exposition of the library's metrics, served as
    /// [`METRICS_CONTENT_TYPE`].
    pub fn metrics(&self) -> String {
        // `install_recorder` starts no upkeep task; a scrape is a good moment for it.
        self.metrics.run_upkeep();
        self.metrics.render()
    }

    /// `GET /_control/log`: every notification so far, as a JSON array.
    pub fn log_json(&self) -> String {
        format!("[{}]", self.log.lock().expect("log lock"))
    }

    /// Prints the whole log on stdout as one line, `log <JSON array>`, once every notification
    /// raised so far is in it. Each harness does this as it exits after a drain, so the suite can
    /// check the drain's `conn:close` records when `GET /_control/log` has gone with the process.
    pub async fn print_log(&self) {
        use std::io::Write;
        let (done, flushed) = oneshot::channel();
        if self.flush.send(done).is_ok() {
            let _ = flushed.await;
        }
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "log {}", self.log_json());
        let _ = stdout.flush();
    }
}

/// Installs the process's Prometheus recorder, once; the handle to render it.
///
/// # Panics
///
/// When another recorder was installed first (not by this function).
fn install_metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("sseio_send_lag_seconds".to_owned()),
                    &SEND_LAG_BUCKETS,
                )
                .expect("the buckets are not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            // The recorder keeps every histogram sample until it is drained, which only upkeep
            // (or a render) does: without it the send lag's samples would grow the harness's
            // memory for as long as nobody scrapes.
            let upkeep = handle.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(METRICS_UPKEEP);
                loop {
                    every.tick().await;
                    upkeep.run_upkeep();
                }
            });
            handle
        })
        .clone()
}

/// A control request's body, as it is to be sent.
enum Message<'a> {
    Json(Value),
    Text(&'a str),
}

fn message<'a>(
    content_type: Option<&str>,
    body: &'a [u8],
) -> Result<Message<'a>, (StatusCode, String)> {
    let is_json = content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|ct| ct.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        serde_json::from_slice(body)
            .map(Message::Json)
            .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}")))
    } else {
        std::str::from_utf8(body)
            .map(Message::Text)
            .map_err(|_| error(StatusCode::BAD_REQUEST, "the body is not UTF-8"))
    }
}

/// `413` for a message over the limit, `503` while the broker is down or did not confirm the
/// message, else `400`.
fn send_error(e: SendError) -> (StatusCode, String) {
    let status = match e {
        SendError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        SendError::Broker(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, &e.to_string())
}

/// The server's settings: the harness path, and the limits `conformance-tests/HARNESS.md` names
/// when their environment variables are set (`SSEIO_MAX_BUFFER_BYTES`, `SSEIO_MAX_EVENTS`,
/// `SSEIO_MAX_CONNECTIONS`, `SSEIO_MAX_MESSAGE_BYTES`), history for `SSEIO_HISTORY` (and its gap
/// notice for `SSEIO_GAP_NOTICE`), CORS for
/// `SSEIO_CORS_ORIGIN` with credentials allowed, and with `SSEIO_AUTH_TOKEN` an `authorize` hook
/// that wants that token as a bearer token or the cookie `sseio_token`.
fn builder_from_env() -> ServerBuilder {
    // The send lag is opt-in, as in the library: `SSEIO_SEND_LAG_METRIC=1` adds it to
    // `GET /metrics`, and benchmarks measure the library's default.
    let send_lag = std::env::var("SSEIO_SEND_LAG_METRIC").is_ok_and(|v| v == "1");
    // The log must keep every notification, also through a drain of 10,000 streams: room for
    // the bursts between two reads of the logging task.
    let mut builder = Server::builder()
        .path(PATH)
        .send_lag_metric(send_lag)
        .notification_capacity(1 << 16);
    let var = |name: &str| -> Option<usize> {
        let value = std::env::var(name).ok()?;
        Some(
            value
                .parse()
                .unwrap_or_else(|_| panic!("{name} must be a number, not {value:?}")),
        )
    };
    if let Some(bytes) = var("SSEIO_MAX_BUFFER_BYTES") {
        builder = builder.max_buffer_bytes(bytes);
    }
    if let Some(events) = var("SSEIO_MAX_EVENTS") {
        builder = builder.max_events(events);
    }
    if let Some(connections) = var("SSEIO_MAX_CONNECTIONS") {
        builder = builder.max_connections(connections);
    }
    if let Some(bytes) = var("SSEIO_MAX_MESSAGE_BYTES") {
        builder = builder.max_message_bytes(bytes);
    }
    if let Some(messages) = var("SSEIO_HISTORY") {
        builder = builder.history(History::new(messages));
    }
    if let Ok(event) = std::env::var("SSEIO_GAP_NOTICE") {
        builder = builder.gap_notice(event);
    }
    if let Ok(origin) = std::env::var("SSEIO_CORS_ORIGIN") {
        builder = builder.cors(Cors::new().allow_origin(origin).allow_credentials(true));
    }
    if let Ok(token) = std::env::var("SSEIO_AUTH_TOKEN") {
        let token: Arc<str> = token.into();
        builder = builder.authorize(move |ctx: Context| {
            let token = token.clone();
            async move {
                let bearer = ctx
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "));
                let presented = bearer.or_else(|| ctx.cookie("sseio_token"));
                if presented == Some(&*token) {
                    Ok(Grant::new().principal(ctx.client_id().to_owned()))
                } else {
                    Err(Refusal::unauthorized(
                        "send 'Authorization: Bearer <token>' or the cookie sseio_token",
                    ))
                }
            }
        });
    }
    builder
}

/// Appends `notification` to the log, as one JSON record.
fn append(log: &Mutex<String>, notification: Notification) {
    let record = match notification {
        Notification::ConnCreate { client_id, .. } => {
            json!({"kind": "conn:create", "clientId": &*client_id})
        }
        Notification::ConnClose { client_id, .. } => {
            json!({"kind": "conn:close", "clientId": &*client_id})
        }
        Notification::RoomCreate { event, room } => {
            json!({"kind": "room:create", "event": &*event, "room": &*room})
        }
        Notification::RoomEmpty { event, room } => {
            json!({"kind": "room:empty", "event": &*event, "room": &*room})
        }
        Notification::Error(error) => {
            json!({"kind": "error", "message": error.to_string()})
        }
        Notification::Broker(error) => {
            json!({"kind": "error", "message": format!("broker: {error}")})
        }
        Notification::Lagged { missed } => {
            json!({"kind": "error", "message": format!("the log missed {missed} notifications")})
        }
        _ => return,
    };
    let mut records = log.lock().expect("log lock");
    if !records.is_empty() {
        records.push(',');
    }
    records.push_str(&record.to_string());
}

fn error(status: StatusCode, message: &str) -> (StatusCode, String) {
    (status, json!({ "message": message }).to_string())
}

/// The address to serve on: `127.0.0.1:$PORT`, port 0 (any free port) when `PORT` is unset.
///
/// # Panics
///
/// When `PORT` is set but is not a port number.
pub fn addr_from_env() -> SocketAddr {
    let port = std::env::var("PORT").map_or(0, |p| p.parse().expect("PORT must be a port number"));
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// How long a harness spreads the closing of its streams when it drains:
/// `SSEIO_SHUTDOWN_GRACE_MS`, 5000 by default.
///
/// # Panics
///
/// When the variable is set but is not a number.
pub fn shutdown_grace() -> Duration {
    std::env::var("SSEIO_SHUTDOWN_GRACE_MS").map_or(Duration::from_secs(5), |ms| {
        Duration::from_millis(
            ms.parse()
                .expect("SSEIO_SHUTDOWN_GRACE_MS must be a number"),
        )
    })
}

/// Completes on ctrl-c or `SIGTERM`: every harness drains on it.
pub use sseio_hyper::shutdown_signal;

/// Completes once [`shutdown_signal`] came and `server` drained: new streams refused with `503`,
/// open ones closed spread over [`shutdown_grace`]. A harness whose framework has a graceful stop
/// of its own starts it after this, so that it keeps accepting (and refusing streams) meanwhile.
pub async fn drained_on_signal(server: Server) {
    shutdown_signal().await;
    server.shutdown(shutdown_grace()).await;
}

/// The largest `/_control/send` body a harness reads, for frameworks whose default limit is not
/// above the 256 KiB the harness contract requires.
pub const MAX_CONTROL_BODY: usize = 1024 * 1024;

/// Logs to stderr, filtered by `RUST_LOG`, else by `default_filter` (for example `"warn"`).
pub fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Binds `127.0.0.1:$PORT` with sseio's listen backlog, as a user following the docs would.
///
/// # Errors
///
/// When the port cannot be bound.
pub fn bind_from_env() -> std::io::Result<tokio::net::TcpListener> {
    sseio_hyper::bind(addr_from_env())
}

/// How a harness serves its application: `SSEIO_SERVE` (see `conformance-tests/HARNESS.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// `lean`: sseio's standalone server (`sseio_hyper::serve`), SSE streams on its lean path
    /// and every other request to the framework's app, made a tower service.
    Lean,
    /// `framework`: the framework's own server, SSE-IO mounted in the app with the adapter.
    Framework,
}

impl Serving {
    /// The environment variable that chooses.
    pub const VAR: &'static str = "SSEIO_SERVE";

    /// The way named `value` (`lean` or `framework`); an error naming the variable and the
    /// value for any other.
    pub fn parse(value: &str) -> Result<Serving, String> {
        match value {
            "lean" => Ok(Serving::Lean),
            "framework" => Ok(Serving::Framework),
            _ => Err(unknown(value)),
        }
    }

    /// The way `SSEIO_SERVE` names, `default` when it is unset: [`Serving::choose`] with the
    /// variable's value.
    pub fn from_env(
        default: Serving,
        unsupported: Option<(Serving, &str)>,
    ) -> Result<Serving, String> {
        Self::choose(std::env::var_os(Self::VAR).as_deref(), default, unsupported)
    }

    /// The way `value` names, `default` when there is none. An error (for the harness to print
    /// before it binds anything) for an unknown value, or for `unsupported`'s way, whose message
    /// then gives `unsupported`'s reason.
    pub fn choose(
        value: Option<&std::ffi::OsStr>,
        default: Serving,
        unsupported: Option<(Serving, &str)>,
    ) -> Result<Serving, String> {
        let serving = match value {
            None => default,
            Some(value) => match value.to_str() {
                Some(value) => Self::parse(value)?,
                None => return Err(unknown(&value.to_string_lossy())),
            },
        };
        match unsupported {
            Some((way, why)) if way == serving => Err(format!(
                "{}={} is not supported: {why}",
                Self::VAR,
                serving.name()
            )),
            _ => Ok(serving),
        }
    }

    /// The value of `SSEIO_SERVE` that names this way.
    pub fn name(self) -> &'static str {
        match self {
            Serving::Lean => "lean",
            Serving::Framework => "framework",
        }
    }
}

/// The error for an unknown value of `SSEIO_SERVE`.
fn unknown(value: &str) -> String {
    format!(
        "{}={value:?} is not a way to serve: expected `lean` or `framework`",
        Serving::VAR
    )
}

/// sseio's standalone server on `listener` for `server`, with the harness's graceful shutdown
/// (on [`shutdown_signal`], the streams' closing spread over [`shutdown_grace`]): what a harness
/// served [`Serving::Lean`] runs, given its app with `Serve::with_app`.
pub fn serve_lean(
    listener: tokio::net::TcpListener,
    server: Server,
) -> sseio_hyper::Serve<sseio_hyper::NotFound> {
    sseio_hyper::serve(listener, server)
        .with_graceful_shutdown(shutdown_signal())
        .shutdown_grace(shutdown_grace())
}

/// Runs a harness binary: reads `SSEIO_SERVE` ([`Serving::from_env`] with `default` and
/// `unsupported`), then `serve`s that way. A startup error (a bad `SSEIO_SERVE`, before anything
/// is bound) or an error of `serve` is one line on stderr prefixed by `harness`, the binary's
/// name, and exit status 1.
pub async fn run<F, Fut>(
    harness: &str,
    default: Serving,
    unsupported: Option<(Serving, &str)>,
    serve: F,
) -> std::process::ExitCode
where
    F: FnOnce(Serving) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>>,
{
    let result = match Serving::from_env(default, unsupported) {
        Ok(serving) => serve(serving).await.map_err(|e| e.to_string()),
        Err(message) => Err(message),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{harness}: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Prints the line the suite and the benchmarks wait for.
pub fn announce(addr: SocketAddr) {
    use std::io::Write;
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening {}", addr.port());
    let _ = stdout.flush();
}

#[cfg(test)]
mod tests {
    use super::Serving;

    #[test]
    fn sseio_serve_names_lean_or_framework() {
        assert_eq!(Serving::parse("lean"), Ok(Serving::Lean));
        assert_eq!(Serving::parse("framework"), Ok(Serving::Framework));
        for way in [Serving::Lean, Serving::Framework] {
            assert_eq!(Serving::parse(way.name()), Ok(way));
        }
    }

    #[test]
    fn an_unknown_sseio_serve_is_an_error_naming_the_variable_and_the_value() {
        for value in ["", "Lean", "hyper", "lean "] {
            let error = Serving::parse(value).expect_err(value);
            assert!(
                error.starts_with(&format!("SSEIO_SERVE={value:?} ")),
                "{value:?}: {error}"
            );
            assert!(error.contains("`lean` or `framework`"), "{error}");
        }
    }

    #[test]
    fn sseio_serve_unset_is_the_harness_default() {
        for way in [Serving::Lean, Serving::Framework] {
            assert_eq!(Serving::choose(None, way, None), Ok(way));
        }
    }

    #[test]
    fn a_way_the_harness_cannot_serve_is_an_error_saying_why() {
        let actix = Some((Serving::Lean, "actix-web has its own HTTP stack"));
        let error = Serving::choose(Some("lean".as_ref()), Serving::Framework, actix).unwrap_err();
        assert_eq!(
            error,
            "SSEIO_SERVE=lean is not supported: actix-web has its own HTTP stack"
        );
        assert_eq!(
            Serving::choose(Some("framework".as_ref()), Serving::Framework, actix),
            Ok(Serving::Framework)
        );
        let unknown = Serving::choose(Some("both".as_ref()), Serving::Framework, actix);
        assert!(unknown.unwrap_err().starts_with("SSEIO_SERVE=\"both\" "));
    }
}
