//! An existing salvo application with SSE-IO mounted beside its own routes.
//!
//! Run: `cargo run -p examples --bin salvo-app`
//! Listen: `curl -N 'http://127.0.0.1:3000/user/ada/events?clientId=tab-1&events=inbox'`
//! Send:   `curl -X POST http://127.0.0.1:3000/users/ada/inbox -H 'content-type: application/json' -d '{"from":"grace","text":"hi"}'`
//!
//! `SseioHandler`, a hoop on the `Service`, serves the SSE path (`/user/:userId/events`) and lets
//! every other request go on to the router, so the app keeps its routes and hoops.

use salvo::conn::tcp::TcpAcceptor;
use salvo::http::StatusCode;
use salvo::{Request, Response, Router, Service, handler};
use serde::{Deserialize, Serialize};
use sseio_salvo::{Context, EventHandler, HandlerOptions, Server, SseioHandler};

/// A message posted to a user's inbox.
#[derive(Debug, Deserialize, Serialize)]
struct Mail {
    from: String,
    text: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
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

    let router = Router::new()
        .get(index)
        .push(Router::with_path("users/{user}/inbox").post(Deliver(inbox)));
    let service = Service::new(router).hoop(SseioHandler::new(sseio.clone()));

    // A listen backlog of 1024: a burst of reconnects never waits on a SYN retry.
    let listener = sseio_salvo::bind(([127, 0, 0, 1], 3000).into())?;
    let acceptor = TcpAcceptor::try_from(listener)?;
    println!("listening on http://127.0.0.1:3000");
    let server = salvo::Server::new(acceptor);
    let handle = server.handle();
    tokio::spawn(async move {
        tokio::signal::ctrl_c().await.ok();
        // Close the open streams so that salvo's graceful stop can finish.
        sseio.shutdown(std::time::Duration::from_secs(5)).await;
        handle.stop_graceful(None);
    });
    server.serve(service).await;
    Ok(())
}

#[handler]
async fn index() -> &'static str {
    "an ordinary route of the app"
}

/// `POST /users/{user}/inbox`: delivers the mail to every open stream of that user.
struct Deliver(EventHandler);

#[handler]
impl Deliver {
    async fn handle(&self, req: &mut Request, res: &mut Response) {
        let user = req.param::<String>("user").unwrap_or_default();
        let status = match req.parse_json::<Mail>().await {
            Ok(mail) => match self.0.send(&user, &mail) {
                Ok(()) => StatusCode::ACCEPTED,
                Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Err(_) => StatusCode::BAD_REQUEST,
        };
        res.status_code(status);
    }
}
