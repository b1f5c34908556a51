//! The hub: the configuration turned into the library's server, its event handlers, the
//! publish API and the metrics route, served by `sseio-hyper`'s standalone server.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sseio_hyper::{BuildError, Cors, EventHandler, History, Server, ServerBuilder};
use tokio::net::TcpListener;

use crate::backend::{Backend, check_url};
use crate::config::Config;
use crate::error::{ConfigError, HubError};
use crate::events::{self, EventPlan};
use crate::lifecycle::{self, KINDS};
use crate::load::Loaded;
use crate::publish;

/// The content type of the metrics route: the Prometheus text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The buckets of `sseio_send_lag_seconds`, from 100 µs to 10 s.
const SEND_LAG_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0,
];

/// A running hub's parts: its SSE-IO server and the application served beside it.
///
/// Cheap to clone. Made by [`Hub::build`], run by [`Hub::serve`] or [`Hub::run`].
#[derive(Debug, Clone)]
pub struct Hub {
    server: Server,
    handlers: Arc<HashMap<String, EventHandler>>,
    app: Router,
    listen: SocketAddr,
    grace: Duration,
    liveness_path: String,
    readiness_path: String,
}

/// What checking a configuration yields, before anything connects or listens.
struct Checked {
    builder: ServerBuilder,
    plans: Vec<EventPlan>,
    backend: Backend,
}

impl Hub {
    /// Checks `loaded` without connecting to anything: the templates, the key files, the URLs,
    /// the API keys. What `sseio-hub --check` runs.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the file and the key.
    pub fn check(loaded: &Loaded) -> Result<(), ConfigError> {
        let checked = check(loaded)?;
        // The server's own checks (path pattern, gap notice), on a server with no broker.
        let server = checked
            .builder
            .build()
            .map_err(|e| build_error(loaded, e))?;
        events::register(loaded, &server, checked.plans, &checked.backend)?;
        Ok(())
    }

    /// Builds the hub from `loaded`: checks it, connects to Redis when `[redis]` is set,
    /// installs the process's Prometheus recorder (once per process), registers the events and
    /// starts logging (and posting, with `[webhooks]`) lifecycle notifications. Must run inside
    /// a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`HubError::Config`] naming the file and the key; [`HubError::Redis`] when Redis cannot
    /// be reached.
    pub async fn build(loaded: &Loaded) -> Result<Self, HubError> {
        let Checked {
            mut builder,
            plans,
            backend,
        } = check(loaded)?;
        let config = &loaded.config;
        // Before the server is built: it registers its metrics with the recorder it finds.
        let metrics = (!config.server.metrics_path.is_empty())
            .then(prometheus)
            .flatten();
        if let Some(redis) = &config.redis {
            let mut broker =
                sseio_redis::RedisBroker::builder(redis.url.as_str()).sharded(redis.sharded);
            if let Some(prefix) = &redis.prefix {
                broker = broker.prefix(prefix.as_str());
            }
            let broker = broker.connect().await.map_err(|e| HubError::Redis {
                url: redis.url.clone(),
                source: Box::new(e),
            })?;
            builder = builder.broker(broker);
        }
        let server = builder.build().map_err(|e| match e {
            BuildError::Broker(_) => HubError::Build(e),
            e => HubError::Config(build_error(loaded, e)),
        })?;
        let handlers = Arc::new(events::register(loaded, &server, plans, &backend)?);
        tokio::spawn(lifecycle::run(
            server.subscribe(),
            config.webhooks.clone(),
            backend,
        ));

        let mut app = publish::routes(
            &config.publish.prefix,
            config.publish.api_keys.clone(),
            config.publish.max_body_bytes,
            server.clone(),
            handlers.clone(),
        );
        if let Some(metrics) = metrics {
            app = app.route(
                &config.server.metrics_path,
                get(move || {
                    let metrics = metrics.clone();
                    async move {
                        metrics.run_upkeep();
                        (
                            [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
                            metrics.render(),
                        )
                    }
                }),
            );
        }
        Ok(Self {
            server,
            handlers,
            app,
            listen: config.server.listen,
            grace: Duration::from_millis(config.server.drain_grace_ms),
            liveness_path: config.server.liveness_path.clone(),
            readiness_path: config.server.readiness_path.clone(),
        })
    }

    /// The SSE-IO server: to subscribe to its notifications, or send from Rust.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The handler of `event`, if the configuration has it.
    pub fn handler(&self, event: &str) -> Option<&EventHandler> {
        self.handlers.get(event)
    }

    /// The application served beside SSE-IO: the publish API and the metrics route. Merge
    /// routes of your own into it (`Router::merge`) and pass it to [`Hub::serve`].
    pub fn app(&self) -> Router {
        self.app.clone()
    }

    /// The address of `server.listen`.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Serves SSE-IO, `app` (usually [`Hub::app`]) and the health paths on `listener` until
    /// `shutdown` completes, then drains: new streams get `503`, open ones are closed spread
    /// over `server.drain_grace_ms`, and this returns once every connection is closed.
    ///
    /// # Errors
    ///
    /// When serving fails to start.
    pub async fn serve<F>(
        &self,
        listener: TcpListener,
        app: Router,
        shutdown: F,
    ) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        sseio_hyper::serve(listener, self.server.clone())
            .with_app(app)
            .with_health(self.liveness_path.clone(), self.readiness_path.clone())
            .with_graceful_shutdown(shutdown)
            .shutdown_grace(self.grace)
            .await
    }

    /// Binds `server.listen` (with sseio's listen backlog) and serves [`Hub::app`] until ctrl-c
    /// or `SIGTERM`, then drains.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub async fn run(&self) -> std::io::Result<()> {
        let listener = sseio_hyper::bind(self.listen)?;
        tracing::info!(
            addr = %listener.local_addr()?,
            path = self.server.path(),
            events = self.handlers.len(),
            "sseio-hub: listening"
        );
        self.serve(listener, self.app(), sseio_hyper::shutdown_signal())
            .await?;
        tracing::info!("sseio-hub: drained, exiting");
        Ok(())
    }
}

/// Everything that can be checked without connecting: the server's settings, `[auth]`, the
/// events, the publish API's keys, the webhooks.
fn check(loaded: &Loaded) -> Result<Checked, ConfigError> {
    let config: &Config = &loaded.config;
    let backend = Backend::new();
    let server = &config.server;
    let limits = &config.limits;
    let ms = Duration::from_millis;
    let mut builder = Server::builder()
        .path(server.path.as_str())
        .heartbeat_interval(ms(server.heartbeat_interval_ms))
        .reconnect_delay(
            ms(server.reconnect_delay_ms),
            ms(server.reconnect_spread_ms),
        )
        .notification_capacity(server.notification_capacity)
        .send_lag_metric(server.send_lag_metric)
        .max_buffer_bytes(limits.max_buffer_bytes)
        .max_buffer_frames(limits.max_buffer_frames)
        .max_events(limits.max_events)
        .max_client_id_bytes(limits.max_client_id_bytes)
        .max_room_id_bytes(limits.max_room_id_bytes)
        .max_message_bytes(limits.max_message_bytes)
        .fetch_timeout(ms(limits.fetch_timeout_ms))
        .resume_ttl(ms(config.history.resume_ttl_ms));
    if let Some(lifetime) = server.max_stream_lifetime_ms {
        builder = builder.max_stream_lifetime(ms(lifetime));
    }
    if let Some(event) = &server.gap_notice {
        builder = builder.gap_notice(event.as_str());
    }
    if let Some(required) = server.takeover_requires_same_principal {
        builder = builder.takeover_requires_same_principal(required);
    }
    if let Some(connections) = limits.max_connections {
        builder = builder.max_connections(connections);
    }
    if let Some(streams) = limits.max_streams_per_principal {
        builder = builder.max_streams_per_principal(streams);
    }
    if let Some(streams) = limits.max_streams_per_address {
        builder = builder.max_streams_per_address(streams);
    }
    if config.history.messages > 0 {
        builder = builder
            .history(History::new(config.history.messages).with_ttl(ms(config.history.ttl_ms)));
    }
    builder = cors(loaded, builder)?;
    for (key, path) in [
        ("server.liveness_path", &server.liveness_path),
        ("server.readiness_path", &server.readiness_path),
        ("publish.prefix", &config.publish.prefix),
    ] {
        if !path.starts_with('/') {
            return Err(loaded.invalid(key, format!("`{path}` must start with `/`")));
        }
    }
    if !server.metrics_path.is_empty() && !server.metrics_path.starts_with('/') {
        return Err(loaded.invalid(
            "server.metrics_path",
            "must start with `/`, or be empty for no metrics",
        ));
    }
    let (builder, auth) = crate::auth::install(loaded, &backend, builder)?;
    let plans = events::plan(loaded, auth)?;
    let publish = &config.publish;
    if publish.api_keys.is_empty() {
        return Err(loaded.invalid(
            "publish.api_keys",
            "set at least one API key for the backend (the publish API is never open); \
             SSEIO_HUB__PUBLISH__API_KEYS='[\"...\"]' keeps it out of the file",
        ));
    }
    if let Some(i) = publish.api_keys.iter().position(|k| k.len() < 16) {
        return Err(loaded.invalid(
            &format!("publish.api_keys[{i}]"),
            "an API key must be at least 16 characters",
        ));
    }
    if let Some(webhooks) = &config.webhooks {
        check_url(&webhooks.url).map_err(|e| loaded.invalid("webhooks.url", e.to_string()))?;
        if let Some(kind) = webhooks
            .events
            .iter()
            .find(|e| !KINDS.contains(&e.as_str()))
        {
            return Err(loaded.invalid(
                "webhooks.events",
                format!("`{kind}` is not a notification: use {}", KINDS.join(", ")),
            ));
        }
    }
    Ok(Checked {
        builder,
        plans,
        backend,
    })
}

/// `[cors]` on `builder`.
fn cors(loaded: &Loaded, builder: ServerBuilder) -> Result<ServerBuilder, ConfigError> {
    let config = &loaded.config.cors;
    if config.origins.is_empty() && !config.any_origin {
        return Ok(builder);
    }
    let mut cors = Cors::new().allow_credentials(config.credentials);
    if config.any_origin {
        cors = cors.allow_any_origin();
    }
    for origin in &config.origins {
        cors = cors.allow_origin(origin.as_str());
    }
    if let Some(max_age) = config.max_age_ms {
        cors = cors.max_age(Duration::from_millis(max_age));
    }
    Ok(builder.cors(cors))
}

fn build_error(loaded: &Loaded, error: BuildError) -> ConfigError {
    match error {
        BuildError::InvalidPath { .. } => loaded.invalid("server.path", error.to_string()),
        BuildError::InvalidGapNotice { .. } => {
            loaded.invalid("server.gap_notice", error.to_string())
        }
        error => loaded.invalid("", error.to_string()),
    }
}

/// The process's Prometheus recorder, installed once; `None` when another recorder was
/// installed first (then the metrics route is not served, and a warning says why).
fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("sseio_send_lag_seconds".to_owned()),
                    &SEND_LAG_BUCKETS,
                )
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => {
                    // Histogram samples are kept until upkeep drains them into buckets.
                    let upkeep = handle.clone();
                    tokio::spawn(async move {
                        let mut every = tokio::time::interval(Duration::from_secs(5));
                        loop {
                            every.tick().await;
                            upkeep.run_upkeep();
                        }
                    });
                    Some(handle)
                }
                Err(error) => {
                    tracing::warn!(%error, "sseio-hub: another metrics recorder is installed; no metrics route");
                    None
                }
            }
        })
        .clone()
}
