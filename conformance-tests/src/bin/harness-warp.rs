//! The harness server for `sseio-warp` (see `conformance-tests/HARNESS.md`): warp routes for the
//! control endpoints, served two ways (`SSEIO_SERVE`). `lean`, the default: by
//! `sseio_hyper::serve`, the routes made a tower service by `warp::service`. `framework`:
//! `sseio_warp::filter` composed with `or` in front of the routes, served by `warp::serve`.
//!
//! Run: `PORT=8080 cargo run -p conformance-tests --bin harness-warp`

use std::collections::HashMap;
use std::process::ExitCode;

use bytes::Bytes;
use conformance_tests::harness::{
    HarnessApp, METRICS_CONTENT_TYPE, Serving, announce, bind_from_env, drained_on_signal,
    init_tracing, run, serve_lean,
};
use warp::Filter;
use warp::http::{Method, StatusCode};
use warp::reply::Reply;

#[tokio::main]
async fn main() -> ExitCode {
    run("harness-warp", Serving::Lean, None, serve).await
}

async fn serve(serving: Serving) -> std::io::Result<()> {
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
    let routes = hello.or(metrics).or(control);

    let listener = bind_from_env()?;
    announce(listener.local_addr()?);
    match serving {
        Serving::Lean => {
            serve_lean(listener, server)
                .with_app(warp::service(routes))
                .await?;
        }
        Serving::Framework => {
            warp::serve(sseio_warp::filter(server.clone()).or(routes))
                .incoming(listener)
                .graceful(drained_on_signal(server))
                .run()
                .await;
        }
    }
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
