//! An existing salvo application with SSE-IO mounted beside its own routes.
//!
//! Run: `cargo run -p examples --bin salvo-app`
//! Listen: `curl -N 'http://127.0.0.1:3000/user/ada/events?clientId=tab-1&events=inbox'`
//! Send:   `curl -X POST http://127.0.0.1:3000/users/ada/inbox -H 'content-type: application/json' -d '{"from":"grace","text":"hi"}'`
//!
//! sseio's standalone server (`sseio_hyper::serve`) answers the SSE path (`/user/:userId/events`)
//! itself, on its lean path, and hands every other request to the `Service`, made a tower
//! service by `sseio_salvo::tower_service`, so the app keeps its routes and hoops. (Under
//! `salvo::Server` instead, add `.hoop(SseioHandler::new(sseio))` to the `Service`: every stream
//! then costs hyper's connection buffers; see the sseio-salvo README.)
//!
//! Environment: `PORT` (default 3000; `0` picks a free port).

use salvo::http::StatusCode;
use salvo::{Request, Response, Router, Service, handler};
use serde::{Deserialize, Serialize};
use sseio_salvo::{Context, EventHandler, HandlerOptions, Server, sseio_hyper};

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
    let service = Service::new(router);

    let port: u16 = std::env::var("PORT").map_or(Ok(3000), |p| p.parse())?;
    // A listen backlog of 1024: a burst of reconnects never waits on a SYN retry.
    let listener = sseio_salvo::bind(([127, 0, 0, 1], port).into())?;
    println!("listening on http://{}", listener.local_addr()?);
    sseio_hyper::serve(listener, sseio)
        .with_app(sseio_salvo::tower_service(service))
        // On ctrl-c or SIGTERM: refuse new streams, close the open ones, then stop.
        .with_graceful_shutdown(sseio_hyper::shutdown_signal())
        .await?;
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
