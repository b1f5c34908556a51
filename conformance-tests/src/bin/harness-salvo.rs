//! The harness server for `sseio-salvo` (see `conformance-tests/HARNESS.md`): a salvo `Service`
//! whose router has the control endpoints, served two ways (`SSEIO_SERVE`). `lean`, the default:
//! by `sseio_hyper::serve`, the `Service` made a tower service by `sseio_salvo::tower_service`.
//! `framework`: `SseioHandler` as a hoop on the `Service`, served by `salvo::Server`.
//!
//! Run: `PORT=8080 cargo run -p conformance-tests --bin harness-salvo`

use std::collections::HashMap;
use std::process::ExitCode;

use conformance_tests::harness::{
    HarnessApp, MAX_CONTROL_BODY, METRICS_CONTENT_TYPE, Serving, announce, bind_from_env,
    drained_on_signal, init_tracing, run, serve_lean,
};
use salvo::conn::tcp::TcpAcceptor;
use salvo::http::{StatusCode, header};
use salvo::writing::Text;
use salvo::{Request, Response, Router, Service, handler};
use sseio_salvo::SseioHandler;

#[tokio::main]
async fn main() -> ExitCode {
    run("harness-salvo", Serving::Lean, None, serve).await
}

async fn serve(serving: Serving) -> std::io::Result<()> {
    init_tracing("warn");
    let app = HarnessApp::new().await;
    let sseio = app.server();
    let router = Router::new()
        .push(Router::with_path("hello").get(hello))
        .push(Router::with_path("metrics").get(Metrics(app.clone())))
        .push(Router::with_path("_control/{action}").goal(Control(app.clone())));
    let service = Service::new(router);

    let listener = bind_from_env()?;
    announce(listener.local_addr()?);
    match serving {
        Serving::Lean => {
            serve_lean(listener, sseio)
                .with_app(sseio_salvo::tower_service(service))
                .await?;
        }
        Serving::Framework => {
            let service = service.hoop(SseioHandler::new(sseio.clone()));
            let server = salvo::Server::new(TcpAcceptor::try_from(listener)?);
            let handle = server.handle();
            tokio::spawn(async move {
                drained_on_signal(sseio).await;
                handle.stop_graceful(None);
            });
            server.try_serve(service).await?;
        }
    }
    app.print_log().await;
    Ok(())
}

#[handler]
async fn hello() -> &'static str {
    "hello"
}

/// `GET /metrics`.
struct Metrics(HarnessApp);

#[handler]
impl Metrics {
    async fn handle(&self, res: &mut Response) {
        res.add_header(header::CONTENT_TYPE, METRICS_CONTENT_TYPE, true)
            .expect("a valid header value");
        res.body(self.0.metrics());
    }
}

/// `/_control/<action>`.
struct Control(HarnessApp);

#[handler]
impl Control {
    async fn handle(&self, req: &mut Request, res: &mut Response) {
        let action = req.param::<String>("action").unwrap_or_default();
        let query: HashMap<String, String> = req
            .queries()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let method = req.method().clone();
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // salvo's default limit (64 KiB) is below the contract's 256 KiB.
        let (status, body) = match req.payload_with_max_size(MAX_CONTROL_BODY).await {
            Ok(body) => {
                self.0
                    .control(&method, &action, &query, content_type.as_deref(), body)
                    .await
            }
            Err(e) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                serde_json::json!({ "message": e.to_string() }).to_string(),
            ),
        };
        res.status_code(status);
        res.render(Text::Json(body));
    }
}
