//! An existing actix-web application with SSE-IO mounted beside its own routes.
//!
//! Run: `cargo run -p examples --bin actix-app`
//! Listen: `curl -N 'http://127.0.0.1:3000/user/ada/events?clientId=tab-1&events=inbox'`
//! Send:   `curl -X POST http://127.0.0.1:3000/users/ada/inbox -H 'content-type: application/json' -d '{"from":"grace","text":"hi"}'`
//!
//! `SseioMiddleware` serves the SSE path (`/user/:userId/events`) and passes every other request
//! to the app's routes, so the app keeps its routes, extractors and middleware. actix-web has an
//! HTTP stack of its own, so unlike the other frameworks' examples this one is served by its own
//! server, not by sseio's (see the sseio-actix README).
//!
//! Environment: `PORT` (default 3000; `0` picks a free port).

use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use serde::{Deserialize, Serialize};
use sseio_actix::{Context, EventHandler, HandlerOptions, Server, SseioMiddleware};

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

    // On ctrl-c, close the open streams first, then let actix stop: its graceful stop would
    // otherwise wait for them until its shutdown timeout.
    let drain = {
        let sseio = sseio.clone();
        async move {
            tokio::signal::ctrl_c().await.ok();
            sseio.shutdown(Duration::from_secs(5)).await;
        }
    };

    let port: u16 = std::env::var("PORT").map_or(Ok(3000), |p| p.parse())?;
    // A listen backlog of 1024: a burst of reconnects never waits on a SYN retry.
    let listener = sseio_actix::bind(([127, 0, 0, 1], port).into())?.into_std()?;
    println!("listening on http://{}", listener.local_addr()?);
    HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(inbox.clone()))
            .route("/", web::get().to(index))
            .route("/users/{user}/inbox", web::post().to(deliver))
            .wrap(SseioMiddleware::new(sseio.clone()))
    })
    // A client that closes its connection ends its stream at once, not at a later write.
    .h1_allow_half_closed(false)
    .shutdown_signal(drain)
    .listen(listener)?
    .run()
    .await?;
    Ok(())
}

async fn index() -> &'static str {
    "an ordinary route of the app"
}

async fn deliver(
    inbox: web::Data<EventHandler>,
    user: web::Path<String>,
    mail: web::Json<Mail>,
) -> HttpResponse {
    match inbox.send(user.as_str(), &*mail) {
        Ok(()) => HttpResponse::Accepted().finish(),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}
