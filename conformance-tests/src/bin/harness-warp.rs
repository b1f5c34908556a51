//! The harness server for `sseio-warp` (see `conformance-tests/HARNESS.md`): `sseio_warp::filter`
//! composed with `or` in front of warp routes for the control endpoints, served by `warp::serve`.
//!
//! Run: `PORT=8080 cargo run -p conformance-tests --bin harness-warp`

use std::collections::HashMap;

use bytes::Bytes;
use conformance_tests::harness::{
    HarnessApp, METRICS_CONTENT_TYPE, announce, bind_from_env, drained_on_signal, init_tracing,
};
use warp::Filter;
use warp::http::{Method, StatusCode};
use warp::reply::Reply;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    // warp logs every client that leaves mid-response (each closed SSE stream) as an error
    // `server connection error: IncompleteMessage`; keep those out of the suite's output unless
    // `RUST_LOG` asks for them.
    init_tracing("warn,warp::server=off");
    let app = HarnessApp::new().await;
    let server = app.server();
    let exit_log = app.clone();
    let with_app = warp::any().map(move || app.clone());

    let hello = warp::path!("hello").and(warp::get()).map(|| "hello");
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_app.clone())
        .map(|app: HarnessApp| {
            warp::reply::with_header(app.metrics(), "content-type", METRICS_CONTENT_TYPE)
        });
    let control = warp::path!("_control" / String)
        .and(warp::method())
        .and(with_app)
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::optional::<String>("content-type"))
        // warp sets no body limit unless `content_length_limit` is added.
        .and(warp::body::bytes())
        .then(control);
    let routes = sseio_warp::filter(server.clone())
        .or(hello)
        .or(metrics)
        .or(control);

    let listener = bind_from_env()?;
    announce(listener.local_addr()?);
    warp::serve(routes)
        .incoming(listener)
        .graceful(drained_on_signal(server))
        .run()
        .await;
    exit_log.print_log().await;
    Ok(())
}

async fn control(
    action: String,
    method: Method,
    app: HarnessApp,
    query: HashMap<String, String>,
    content_type: Option<String>,
    body: Bytes,
) -> warp::reply::Response {
    let (status, body) = app
        .control(&method, &action, &query, content_type.as_deref(), &body)
        .await;
    json(status, body)
}

fn json(status: StatusCode, body: String) -> warp::reply::Response {
    let reply = warp::reply::with_header(body, "content-type", "application/json");
    warp::reply::with_status(reply, status).into_response()
}
