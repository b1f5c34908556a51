//! The harness server for `sseio-hyper` (see `conformance-tests/HARNESS.md`): SSE-IO mounted
//! with `SseioLayer` in front of an axum app that has the control routes, served by
//! `sseio_hyper::serve`. With `SSEIO_TLS_CERT` and `SSEIO_TLS_KEY` (PEM files) it serves TLS,
//! HTTP/2 or HTTP/1.1 by ALPN; bad TLS material is a startup error on stderr, exit status 1.
//!
//! Run: `PORT=8080 cargo run -p conformance-tests --bin harness-hyper`

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::routing::{any, get};
use conformance_tests::harness::{
    HarnessApp, METRICS_CONTENT_TYPE, announce, bind_from_env, init_tracing, shutdown_grace,
    shutdown_signal,
};
use std::collections::HashMap;
use std::process::ExitCode;

use sseio_hyper::TlsConfig;

#[cfg(sseio_dhat)]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[tokio::main]
async fn main() -> ExitCode {
    #[cfg(sseio_dhat)]
    let _profiler = dhat::Profiler::new_heap();
    init_tracing("warn");
    // Before anything is bound: bad TLS material is a startup error, not a server that fails
    // every handshake.
    let tls = match tls_from_env() {
        Ok(tls) => tls,
        Err(message) => {
            eprintln!("harness-hyper: {message}");
            return ExitCode::FAILURE;
        }
    };
    match serve(tls).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("harness-hyper: {error}");
            ExitCode::FAILURE
        }
    }
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

async fn serve(tls: Option<TlsConfig>) -> std::io::Result<()> {
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
    let mut serve = sseio_hyper::serve(listener, server)
        .with_app(routes)
        .with_graceful_shutdown(shutdown_signal())
        .shutdown_grace(shutdown_grace());
    if let Some(tls) = tls {
        serve = serve.with_tls(tls);
    }
    serve.await?;
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
