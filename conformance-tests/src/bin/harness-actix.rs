//! The harness server for `sseio-actix` (see `conformance-tests/HARNESS.md`): `SseioMiddleware`
//! wrapping an actix `App` that has the control routes, served by `actix_web::HttpServer` (HTTP/1
//! and h2c on one port), with its graceful stop started by the SSE-IO drain. actix-web has an
//! HTTP stack of its own (actix-http), which sseio's server (hyper) cannot serve: this harness is
//! served `framework` only, and `SSEIO_SERVE=lean` is a startup error saying so.
//!
//! Run: `PORT=8080 cargo run -p conformance-tests --bin harness-actix`

use std::collections::HashMap;
use std::process::ExitCode;

use actix_web::http::header;
use actix_web::web::{self, Bytes, Data};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use conformance_tests::harness::{
    HarnessApp, MAX_CONTROL_BODY, METRICS_CONTENT_TYPE, Serving, announce, bind_from_env,
    drained_on_signal, init_tracing, run,
};
use sseio_actix::SseioMiddleware;

/// Why `SSEIO_SERVE=lean` is refused.
const NOT_LEAN: &str = "actix-web has its own HTTP stack (actix-http), which sseio's server \
                        (hyper) cannot serve; harness-actix is served by actix-web's own server";

#[tokio::main]
async fn main() -> ExitCode {
    run(
        "harness-actix",
        Serving::Framework,
        Some((Serving::Lean, NOT_LEAN)),
        serve,
    )
    .await
}

async fn serve(_framework: Serving) -> std::io::Result<()> {
    init_tracing("warn");
    let app = HarnessApp::new().await;
    let sseio = app.server();
    let listener = bind_from_env()?;
    announce(listener.local_addr()?);
    // actix's stop starts once the drain is over: until then it keeps accepting, so new streams
    // are told `503` instead of being refused. This replaces actix's own signal handling.
    let drain = drained_on_signal(sseio.clone());
    let data = Data::new(app.clone());
    HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            // actix's default limit (256 KiB) leaves no room above the contract's 256 KiB.
            .app_data(web::PayloadConfig::new(MAX_CONTROL_BODY))
            .route("/hello", web::get().to(hello))
            .route("/metrics", web::get().to(metrics))
            .route("/_control/{action}", web::route().to(control))
            .wrap(SseioMiddleware::new(sseio.clone()))
    })
    // A client that closes its connection ends its stream at once, not at a later write.
    .h1_allow_half_closed(false)
    .shutdown_signal(drain)
    // Every stream is closed by then; this only bounds a control request still in flight.
    .shutdown_timeout(1)
    .listen_auto_h2c(listener.into_std()?)?
    .run()
    .await?;
    app.print_log().await;
    Ok(())
}

async fn hello() -> &'static str {
    "hello"
}

async fn metrics(app: Data<HarnessApp>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(METRICS_CONTENT_TYPE)
        .body(app.metrics())
}

/// `/_control/<action>`. actix-web 4 is on `http` 0.2, the shared harness on `http` 1: the
/// method and status are converted by their text.
async fn control(
    app: Data<HarnessApp>,
    req: HttpRequest,
    action: web::Path<String>,
    query: web::Query<HashMap<String, String>>,
    body: Bytes,
) -> HttpResponse {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let method =
        http::Method::from_bytes(req.method().as_str().as_bytes()).unwrap_or(http::Method::GET);
    let (status, body) = app
        .control(&method, &action, &query, content_type, &body)
        .await;
    let status = actix_web::http::StatusCode::from_u16(status.as_u16())
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body)
}
