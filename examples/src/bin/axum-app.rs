//! An existing axum application with SSE-IO mounted beside its own routes.
//!
//! Run: `cargo run -p examples --bin axum-app`
//! Listen: `curl -N 'http://127.0.0.1:3000/user/ada/events?clientId=tab-1&events=inbox'`
//! Send:   `curl -X POST http://127.0.0.1:3000/users/ada/inbox -H 'content-type: application/json' -d '{"from":"grace","text":"hi"}'`
//! Metrics: `curl http://127.0.0.1:3000/metrics` (Prometheus text: `sseio_connections`, ...)
//!
//! sseio's standalone server (`sseio_hyper::serve`) answers the SSE path (`/user/:userId/events`)
//! itself, on its lean path, and hands every other request to the router, so the app keeps its
//! routes, extractors and middleware. (Under `axum::serve` instead, mount it with
//! `.layer(SseioLayer::new(sseio))`: every stream then costs hyper's connection buffers; see the
//! sseio-hyper README.)
//!
//! Environment: `PORT` (default 3000; `0` picks a free port).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusBuilder;
use serde::Deserialize;
use sseio_hyper::{Context, EventHandler, HandlerOptions, Server};

/// A message posted to a user's inbox.
#[derive(Debug, Deserialize, serde::Serialize)]
struct Mail {
    from: String,
    text: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The metrics recorder first: a server registers its metrics with the recorder installed
    // when it is built.
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    let sseio = Server::new("/user/:userId/events")?;
    // Each user's connections share one room, named after the path parameter.
    let inbox = sseio.register_event_handler(
        "inbox",
        HandlerOptions::new(|ctx: &Context| ctx.param("userId").unwrap_or_default().to_owned())
            // The first message on a new connection: a greeting, before any mail sent meanwhile.
            .fetch(|ctx: Context| async move {
                let user = ctx.param("userId").unwrap_or_default().to_owned();
                Ok::<_, std::convert::Infallible>(format!("welcome back, {user}"))
            }),
    )?;

    let app = Router::new()
        .route("/", get(|| async { "an ordinary route of the app" }))
        .route("/users/{user}/inbox", post(deliver))
        .route(
            "/metrics",
            get(move || {
                prometheus.run_upkeep();
                let text = prometheus.render();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
            }),
        )
        .with_state(inbox);

    let port: u16 = std::env::var("PORT").map_or(Ok(3000), |p| p.parse())?;
    // A listen backlog of 1024: a burst of reconnects never waits on a SYN retry.
    let listener = sseio_hyper::bind(([127, 0, 0, 1], port).into())?;
    println!("listening on http://{}", listener.local_addr()?);
    sseio_hyper::serve(listener, sseio)
        .with_app(app)
        // On ctrl-c or SIGTERM: refuse new streams, close the open ones, then stop.
        .with_graceful_shutdown(sseio_hyper::shutdown_signal())
        .await?;
    Ok(())
}

async fn deliver(
    State(inbox): State<EventHandler>,
    Path(user): Path<String>,
    axum::Json(mail): axum::Json<Mail>,
) -> StatusCode {
    match inbox.send(&user, &mail) {
        Ok(()) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
