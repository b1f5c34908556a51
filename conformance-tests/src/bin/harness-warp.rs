//! The harness server for `sseio-warp` (see `shared/HARNESS.md`): `sseio_warp::filter` composed
//! with `or` in front of warp routes for the control endpoints, served by `warp::serve`.
//!
//! Run: `PORT=8080 cargo run -p conformance-tests --bin harness-warp`

use std::collections::HashMap;

use bytes::Bytes;
use conformance_tests::harness::{
    HarnessApp, announce, bind_from_env, init_tracing, shutdown_grace, shutdown_signal,
};
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::Reply;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    // warp logs every client that leaves mid-response (each closed SSE stream) as an error
    // `server connection error: IncompleteMessage`; keep those out of the suite's output unless
    // `RUST_LOG` asks for them.
    init_tracing("warn,warp::server=off");
    let app = HarnessApp::new();
    let server = app.server();
    let exit_log = app.clone();
    let with_app = warp::any().map(move || app.clone());

    let hello = warp::path!("hello").and(warp::get()).map(|| "hello");
    let send = warp::path!("_control" / "send")
        .and(warp::post())
        .and(with_app.clone())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::optional::<String>("content-type"))
        // warp sets no body limit unless `content_length_limit` is added.
        .and(warp::body::bytes())
        .map(send);
    let log = warp::path!("_control" / "log")
        .and(warp::get())
        .and(with_app)
        .map(|app: HarnessApp| json(StatusCode::OK, app.log_json()));
    let routes = sseio_warp::filter(server.clone())
        .or(hello)
        .or(send)
        .or(log);

    let listener = bind_from_env()?;
    announce(listener.local_addr()?);
    warp::serve(routes)
        .incoming(listener)
        .graceful(async move {
            shutdown_signal().await;
            server.shutdown(shutdown_grace()).await;
        })
        .run()
        .await;
    exit_log.print_log().await;
    Ok(())
}

fn send(
    app: HarnessApp,
    query: HashMap<String, String>,
    content_type: Option<String>,
    body: Bytes,
) -> warp::reply::Response {
    let (status, body) = app.send(
        query.get("event").map(String::as_str),
        query.get("room").map(String::as_str),
        content_type.as_deref(),
        &body,
    );
    json(status, body)
}

fn json(status: StatusCode, body: String) -> warp::reply::Response {
    let reply = warp::reply::with_header(body, "content-type", "application/json");
    warp::reply::with_status(reply, status).into_response()
}
