//! The harness server for `sseio-hyper` (see `conformance-tests/HARNESS.md`): an axum app with
//! the control routes, served two ways (`SSEIO_SERVE`). `lean`, the default: by
//! `sseio_hyper::serve` (the standalone server, with its lean path for SSE streams); with
//! `SSEIO_TLS_CERT` and `SSEIO_TLS_KEY` (PEM files) it serves TLS, HTTP/2 or HTTP/1.1 by ALPN, and
//! bad TLS material is a startup error on stderr, exit status 1. `framework`: `SseioLayer` in
//! front of the app, served by `axum::serve` (HTTP/1.1 and h2c; no TLS).
//!
//! Run: `PORT=8080 cargo run -p conformance-tests --bin harness-hyper`

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::routing::{any, get};
use conformance_tests::harness::{
    HarnessApp, METRICS_CONTENT_TYPE, Serving, announce, bind_from_env, drained_on_signal,
    init_tracing, run, serve_lean,
};
use std::collections::HashMap;
use std::process::ExitCode;

use sseio_hyper::{SseioLayer, TlsConfig};

#[cfg(sseio_dhat)]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[tokio::main]
async fn main() -> ExitCode {
    #[cfg(sseio_dhat)]
    let _profiler = dhat::Profiler::new_heap();
    run("harness-hyper", Serving::Lean, None, serve).await
}

/// TLS from `SSEIO_TLS_CERT` and `SSEIO_TLS_KEY`, when both are set; an error naming the file
/// when one is bad, or when only one of the two is set.
fn tls_from_env() -> Result<Option<TlsConfig>, String> {
    match (
        std::env::var_os("SSEIO_TLS_CERT"),
        std::env::var_os("SSEIO_TLS_KEY"),
    ) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => TlsConfig::from_pem_files(cert, key)
            .map(Some)
            .map_err(|e| format!("bad TLS material: {e}")),
        (Some(_), None) => Err("SSEIO_TLS_CERT is set but SSEIO_TLS_KEY is not".to_owned()),
        (None, Some(_)) => Err("SSEIO_TLS_KEY is set but SSEIO_TLS_CERT is not".to_owned()),
    }
}

async fn serve(serving: Serving) -> std::io::Result<()> {
    init_tracing("warn");
    // Before anything is bound: bad TLS material is a startup error, not a server that fails
    // every handshake.
    let tls = tls_from_env().map_err(std::io::Error::other)?;
    if tls.is_some() && serving == Serving::Framework {
        return Err(std::io::Error::other(
            "SSEIO_TLS_CERT and SSEIO_TLS_KEY need SSEIO_SERVE=lean: TLS is the standalone \
             server's",
        ));
    }
    let app = HarnessApp::new().await;
    let server = app.server();
    let routes = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route("/_control/{action}", any(control))
        .route(
            "/metrics",
            get(|State(app): State<HarnessApp>| async move {
                (
                    [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
                    app.metrics(),
                )
            }),
        )
        .with_state(app.clone());

    let listener = bind_from_env()?;
    announce(listener.local_addr()?);
    match serving {
        Serving::Lean => {
            let mut serve = serve_lean(listener, server).with_app(routes);
            if let Some(tls) = tls {
                serve = serve.with_tls(tls);
            }
            serve.await?;
        }
        Serving::Framework => {
            let routes = routes.layer(SseioLayer::new(server.clone()));
            axum::serve(listener, routes)
                .with_graceful_shutdown(drained_on_signal(server))
                .await?;
        }
    }
    app.print_log().await;
    Ok(())
}

async fn control(
    State(app): State<HarnessApp>,
    method: Method,
    Path(action): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let (status, body) = app
        .control(&method, &action, &query, content_type, &body)
        .await;
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}
