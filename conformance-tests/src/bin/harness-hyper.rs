//! The harness server for `sseio-hyper` (see `conformance-tests/HARNESS.md`): SSE-IO mounted
//! with `SseioLayer` in front of an axum app that has the control routes, served by
//! `sseio_hyper::serve`.
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

#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    init_tracing("warn");
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
    sseio_hyper::serve(listener, server)
        .with_app(routes)
        .with_graceful_shutdown(shutdown_signal())
        .shutdown_grace(shutdown_grace())
        .await?;
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
