//! The harness server for `sseio-poem` (see `conformance-tests/HARNESS.md`): a poem `Route` with
//! the control endpoints, served two ways (`SSEIO_SERVE`). `lean`, the default: by
//! `sseio_hyper::serve`, the route made a tower service by `sseio_poem::tower_service`.
//! `framework`: `SseioMiddleware` in front of the route, each connection served by hyper-util
//! with poem's own request and response conversions.
//!
//! Why not `poem::Server` for `framework`: poem 3.1 polls a finished connection again (to shut it
//! down gracefully), and for an HTTP/1 connection whose client left mid-response that second
//! poll waits on the response body. An SSE body only wakes at its next heartbeat, so the stream,
//! and its `conn:close`, outlive the client by up to one heartbeat interval (3 s), past the
//! suite's "noticed well under a heartbeat" bound. Serving the same poem app on hyper-util's
//! connection builder (whose connection future is awaited once) drops the stream as soon as
//! hyper sees the close.
//!
//! Run: `PORT=8080 cargo run -p conformance-tests --bin harness-poem`

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use conformance_tests::harness::{
    HarnessApp, METRICS_CONTENT_TYPE, Serving, announce, bind_from_env, drained_on_signal,
    init_tracing, run, serve_lean,
};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use poem::http::uri::Scheme;
use poem::http::{HeaderMap, Method, StatusCode, header};
use poem::web::{Data, LocalAddr, Path, Query, RemoteAddr};
use poem::{Endpoint, EndpointExt, Response, Route, get, handler};
use sseio_poem::{Server, SseioMiddleware};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    run("harness-poem", Serving::Lean, None, serve).await
}

async fn serve(serving: Serving) -> std::io::Result<()> {
    init_tracing("warn");
    let app = HarnessApp::new().await;
    let server = app.server();
    let routes = Route::new()
        .at("/hello", get(hello))
        .at("/metrics", get(metrics))
        .at("/_control/:action", control)
        .data(app.clone());

    let listener = bind_from_env()?;
    announce(listener.local_addr()?);
    match serving {
        Serving::Lean => {
            serve_lean(listener, server)
                .with_app(sseio_poem::tower_service(routes))
                .await?;
        }
        Serving::Framework => {
            let routes = routes.with(SseioMiddleware::new(server.clone()));
            serve_framework(listener, server, routes).await?;
        }
    }
    app.print_log().await;
    Ok(())
}

/// Serves `routes` on `listener`, each connection on hyper-util's connection builder, until the
/// drain on a signal is over.
async fn serve_framework(
    listener: TcpListener,
    server: Server,
    routes: impl Endpoint + 'static,
) -> std::io::Result<()> {
    let routes = Arc::new(routes);
    let local_addr: SocketAddr = listener.local_addr()?;
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    // Keep accepting while draining, so new streams are told `503` instead of being refused.
    let drain = drained_on_signal(server);
    let mut drain = std::pin::pin!(drain);
    loop {
        let (stream, remote_addr) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut drain => break,
        };
        let routes = routes.clone();
        let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let req = poem::Request::from((
                req,
                LocalAddr(local_addr.into()),
                RemoteAddr(remote_addr.into()),
                Scheme::HTTP,
            ));
            let routes = routes.clone();
            async move {
                let response = routes.get_response(req).await;
                Ok::<_, Infallible>(http::Response::<BoxBody<Bytes, std::io::Error>>::from(
                    response,
                ))
            }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    graceful.shutdown().await;
    Ok(())
}

#[handler]
fn hello() -> &'static str {
    "hello"
}

#[handler]
fn metrics(Data(app): Data<&HarnessApp>) -> Response {
    Response::builder()
        .content_type(METRICS_CONTENT_TYPE)
        .body(app.metrics())
}

/// poem reads a `Bytes` body whole, without a size limit (unless `SizeLimit` is added).
#[handler]
async fn control(
    Data(app): Data<&HarnessApp>,
    method: Method,
    Path(action): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let (status, body) = app
        .control(&method, &action, &query, content_type, &body)
        .await;
    json(status, body)
}

fn json(status: StatusCode, body: String) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body)
}
