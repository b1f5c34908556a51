//! The harness server for `sseio-hub` (see `conformance-tests/HARNESS.md`): the hub built from a
//! configuration that matches the harness contract, with a tiny backend in the same process for
//! what the hub asks a backend (the `fetch` of `fetch-event` and `fetch-error-event` by `GET`,
//! and with `SSEIO_AUTH_TOKEN` the auth webhook). The control endpoints add nothing of their
//! own: each is a request to the hub's own publish API (with its API key), or the hub's
//! lifecycle notifications in the hub's own JSON records. The hub is a binary of its own, served
//! by sseio's server (`lean`) only: `SSEIO_SERVE=framework` is a startup error saying so.
//!
//! Run: `PORT=8080 cargo run -p conformance-tests --bin harness-hub`

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use conformance_tests::harness::{
    MAX_CONTROL_BODY, PATH, Serving, announce, bind_from_env, init_tracing, run, shutdown_grace,
    shutdown_signal,
};
use serde_json::{Value, json};
use sseio_hub::sseio_hyper::{Notification, Notifications};
use sseio_hub::{
    AuthWebhookConfig, Config, CorsConfig, EventConfig, FetchConfig, Hub, Loaded, RedisConfig,
    Source,
};
use tokio::sync::{mpsc, oneshot};
use tower_service::Service;

/// How long the harness backend's `fetch` takes before it answers `["a","b"]`.
const FETCH_DELAY: Duration = Duration::from_millis(500);

/// Why `SSEIO_SERVE=framework` is refused.
const NO_FRAMEWORK: &str = "the hub is a binary of its own, served by sseio's server only";

#[tokio::main]
async fn main() -> ExitCode {
    run(
        "harness-hub",
        Serving::Lean,
        Some((Serving::Framework, NO_FRAMEWORK)),
        serve,
    )
    .await
}

async fn serve(_lean: Serving) -> std::io::Result<()> {
    // The hub logs every `error` notification itself (at `warn`); the suite's failing fetches
    // raise them on purpose, so only its errors are shown from there.
    init_tracing("warn,sseio_hub::lifecycle=error");
    let token = std::env::var("SSEIO_AUTH_TOKEN").ok();
    let backend = start_backend(token.clone()).await?;
    let api_key = format!("harness-{}", uuid::Uuid::new_v4());
    let loaded = Loaded {
        config: config_from_env(backend, &api_key, token.is_some()),
        source: Source::Text,
        base_dir: ".".into(),
        overrides: Vec::new(),
    };
    let hub = Hub::build(&loaded)
        .await
        .unwrap_or_else(|e| panic!("the harness configuration is refused: {e}"));
    let log = Log::start(hub.server().subscribe());
    let control = Control {
        api: hub.app(),
        api_key: Arc::from(format!("Bearer {api_key}")),
        log: log.clone(),
    };
    let app = hub.app().merge(
        Router::new()
            .route("/hello", get(|| async { "hello" }))
            .route("/_control/{action}", any(control_action))
            .with_state(control),
    );

    let listener = bind_from_env()?;
    announce(listener.local_addr()?);
    hub.serve(listener, app, shutdown_signal()).await?;
    log.print().await;
    Ok(())
}

/// The hub's configuration for the harness contract, with each capability of HARNESS.md whose
/// environment variable is set; `backend` answers the fetches and the auth webhook.
fn config_from_env(backend: SocketAddr, api_key: &str, auth: bool) -> Config {
    let var = |name: &str| std::env::var(name).ok();
    let number = |name: &str| -> Option<usize> {
        var(name).map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
        })
    };
    let mut config = Config::default();
    config.server.path = PATH.to_owned();
    // The log must keep every notification, also through a drain of 10,000 streams.
    config.server.notification_capacity = 1 << 16;
    config.server.drain_grace_ms = u64::try_from(shutdown_grace().as_millis()).unwrap_or(5000);
    config.server.send_lag_metric = var("SSEIO_SEND_LAG_METRIC").is_some_and(|v| v == "1");
    config.server.gap_notice = var("SSEIO_GAP_NOTICE");
    if let Some(bytes) = number("SSEIO_MAX_BUFFER_BYTES") {
        config.limits.max_buffer_bytes = bytes;
    }
    if let Some(events) = number("SSEIO_MAX_EVENTS") {
        config.limits.max_events = events;
    }
    config.limits.max_connections = number("SSEIO_MAX_CONNECTIONS");
    if let Some(bytes) = number("SSEIO_MAX_MESSAGE_BYTES") {
        config.limits.max_message_bytes = bytes;
    }
    if let Some(messages) = number("SSEIO_HISTORY") {
        config.history.messages = messages;
    }
    if let Some(origin) = var("SSEIO_CORS_ORIGIN") {
        config.cors = CorsConfig {
            origins: vec![origin],
            credentials: true,
            ..CorsConfig::default()
        };
    }
    if let Some(url) = var("REDIS_URL") {
        config.redis = Some(RedisConfig {
            url,
            sharded: var("SSEIO_REDIS_SHARDED").is_some_and(|v| v == "1"),
            prefix: None,
        });
    }
    if auth {
        config.auth.webhook = Some(AuthWebhookConfig {
            url: format!("http://{backend}/auth"),
            timeout_ms: 5000,
            forward_headers: vec!["authorization".to_owned(), "cookie".to_owned()],
        });
    }
    config.publish.api_keys = vec![api_key.to_owned()];
    config.publish.max_body_bytes = MAX_CONTROL_BODY * 8;

    let event = |room: &str, fetch: Option<&str>| EventConfig {
        room: room.to_owned(),
        history: None,
        fetch: fetch.map(|path| FetchConfig {
            url: format!("http://{backend}{path}"),
            timeout_ms: None,
            forward_headers: Vec::new(),
        }),
    };
    let mut events = BTreeMap::new();
    for name in ["normal-event", "test-multiple-1", "test-multiple-2"] {
        events.insert(name.to_owned(), event("{param.guid}", None));
    }
    events.insert("query-event".to_owned(), event("{query.room}", None));
    events.insert(
        "fetch-event".to_owned(),
        event("{param.guid}", Some("/fetch")),
    );
    events.insert(
        "fetch-error-event".to_owned(),
        event("{param.guid}", Some("/fetch-error")),
    );
    if auth {
        // Refused for everyone: the auth webhook grants no room of it.
        events.insert("forbidden-event".to_owned(), event("{param.guid}", None));
    }
    config.events = events;
    config
}

/// Starts the harness's backend on a free port of 127.0.0.1: `GET /fetch` answers `["a","b"]`
/// after [`FETCH_DELAY`], `GET /fetch-error` fails with a message containing `foo`, and
/// `POST /auth` (the hub's auth webhook) wants `token` as a bearer token or the cookie
/// `sseio_token`.
async fn start_backend(token: Option<String>) -> std::io::Result<SocketAddr> {
    let routes = Router::new()
        .route(
            "/fetch",
            get(|| async {
                tokio::time::sleep(FETCH_DELAY).await;
                ([(header::CONTENT_TYPE, "application/json")], r#"["a","b"]"#)
            }),
        )
        .route(
            "/fetch-error",
            get(|| async {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "foo: the harness fetch always fails",
                )
            }),
        )
        .route(
            "/auth",
            post(move |axum::Json(request): axum::Json<Value>| {
                let token = token.clone();
                async move { authorize(token.as_deref(), &request) }
            }),
        );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, routes).await {
            panic!("the harness backend stopped: {e}");
        }
    });
    Ok(addr)
}

/// The auth webhook's answer: a grant with the `clientId` as principal and no room of
/// `forbidden-event`, when the request carries the token; else `401`.
fn authorize(token: Option<&str>, request: &Value) -> Response {
    let headers = &request["headers"];
    let bearer = headers["authorization"]
        .as_str()
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers["cookie"].as_str().and_then(|cookies| {
        cookies
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == "sseio_token")
            .map(|(_, value)| value)
    });
    let presented = bearer.or(cookie);
    if token.is_some() && presented == token {
        axum::Json(json!({
            "principal": request["clientId"],
            "rooms": {"forbidden-event": []},
        }))
        .into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({
                "message": "send 'Authorization: Bearer <token>' or the cookie sseio_token",
            })),
        )
            .into_response()
    }
}

/// What the control endpoints need: the hub's publish API and its notifications' log.
#[derive(Clone)]
struct Control {
    api: Router,
    api_key: Arc<str>,
    log: Log,
}

/// `/_control/<action>`: each a request to the hub's publish API, or the log.
async fn control_action(
    State(control): State<Control>,
    method: Method,
    Path(action): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let param = |name: &str| {
        query.get(name).cloned().ok_or_else(|| {
            json_error(
                StatusCode::BAD_REQUEST,
                &format!("query parameter '{name}' is required"),
            )
        })
    };
    let data = || -> Result<Value, Refused> {
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|ct| ct.split(';').next())
            .is_some_and(|ct| ct.trim().eq_ignore_ascii_case("application/json"));
        if is_json {
            serde_json::from_slice(&body)
                .map_err(|e| json_error(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}")))
        } else {
            String::from_utf8(body.to_vec())
                .map(Value::String)
                .map_err(|_| json_error(StatusCode::BAD_REQUEST, "the body is not UTF-8"))
        }
    };
    let call = match (method.as_str(), action.as_str()) {
        ("POST", "send") => (|| {
            let body = json!({"event": param("event")?, "room": param("room")?, "data": data()?});
            Ok(control.post("/api/publish", &body))
        })(),
        ("POST", "send-to-client") => (|| {
            let body =
                json!({"clientId": param("clientId")?, "event": param("event")?, "data": data()?});
            Ok(control.post("/api/send-to-client", &body))
        })(),
        ("POST", "disconnect") => (|| {
            let body = json!({"clientId": param("clientId")?});
            Ok(control.post("/api/disconnect", &body))
        })(),
        ("GET", action @ ("presence" | "position")) => Ok(control.request(
            Method::GET,
            &format!("/api/{action}?{}", raw_query.unwrap_or_default()),
            Body::empty(),
        )),
        ("GET", "log") => {
            return (
                [(header::CONTENT_TYPE, "application/json")],
                control.log.json(),
            )
                .into_response();
        }
        _ => Err(json_error(
            StatusCode::NOT_FOUND,
            &format!("no control action {method} {action}"),
        )),
    };
    match call {
        Ok(request) => control.call(request).await,
        Err((status, body)) => {
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
    }
}

impl Control {
    fn post(&self, path: &str, body: &Value) -> Request<Body> {
        self.request(Method::POST, path, Body::from(body.to_string()))
    }

    fn request(&self, method: Method, path: &str, body: Body) -> Request<Body> {
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = path.parse().expect("a control path is a URI");
        let headers = request.headers_mut();
        headers.insert(
            header::AUTHORIZATION,
            self.api_key.parse().expect("the API key is a header value"),
        );
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        request
    }

    /// Runs `request` through the hub's publish API, in this process.
    async fn call(&self, request: Request<Body>) -> Response {
        let mut api = self.api.clone();
        match api.call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// A control request refused before it reached the API: its status and JSON body.
type Refused = (StatusCode, String);

fn json_error(status: StatusCode, message: &str) -> Refused {
    (status, json!({ "message": message }).to_string())
}

/// The lifecycle log: the hub's own JSON record of each notification, in order.
#[derive(Clone)]
struct Log {
    records: Arc<Mutex<String>>,
    /// Asks the recording task to take every notification already raised, then answer.
    flush: mpsc::UnboundedSender<oneshot::Sender<()>>,
}

impl Log {
    fn start(mut notifications: Notifications) -> Self {
        let records = Arc::new(Mutex::new(String::new()));
        let (flush, mut flushes) = mpsc::unbounded_channel::<oneshot::Sender<()>>();
        let log = records.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    notification = notifications.recv() => match notification {
                        Some(notification) => append(&log, &notification),
                        None => break,
                    },
                    Some(done) = flushes.recv() => {
                        while let Some(notification) = notifications.try_recv() {
                            append(&log, &notification);
                        }
                        let _ = done.send(());
                    }
                }
            }
        });
        Self { records, flush }
    }

    fn json(&self) -> String {
        format!("[{}]", self.records.lock().expect("log lock"))
    }

    /// Prints `log <JSON array>` once every notification raised so far is in it.
    async fn print(&self) {
        use std::io::Write;
        let (done, flushed) = oneshot::channel();
        if self.flush.send(done).is_ok() {
            let _ = flushed.await;
        }
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "log {}", self.json());
        let _ = stdout.flush();
    }
}

fn append(log: &Mutex<String>, notification: &Notification) {
    let record = match notification {
        Notification::Lagged { missed } => {
            json!({"kind": "error", "message": format!("the log missed {missed} notifications")})
        }
        notification => match sseio_hub::record(notification) {
            Some(record) => record,
            None => return,
        },
    };
    let mut records = log.lock().expect("log lock");
    if !records.is_empty() {
        records.push(',');
    }
    records.push_str(&record.to_string());
}
