//! An existing poem application with SSE-IO mounted beside its own routes.
//!
//! Run: `cargo run -p examples --bin poem-app`
//! Listen: `curl -N 'http://127.0.0.1:3000/user/ada/events?clientId=tab-1&events=inbox'`
//! Send:   `curl -X POST http://127.0.0.1:3000/users/ada/inbox -H 'content-type: application/json' -d '{"from":"grace","text":"hi"}'`
//!
//! `SseioMiddleware` serves the SSE path (`/user/:userId/events`) and passes every other request
//! to the route tree, so the app keeps its routes, extractors and middleware.

use poem::http::StatusCode;
use poem::listener::TcpAcceptor;
use poem::web::{Data, Json, Path};
use poem::{EndpointExt, Route, get, handler, post};
use serde::{Deserialize, Serialize};
use sseio_poem::{Context, EventHandler, HandlerOptions, Server, SseioMiddleware};

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

    let app = Route::new()
        .at("/", get(index))
        .at("/users/:user/inbox", post(deliver))
        .data(inbox)
        .with(SseioMiddleware::new(sseio.clone()));

    println!("listening on http://127.0.0.1:3000");
    // A listen backlog of 1024: a burst of reconnects never waits on a SYN retry.
    let listener = sseio_poem::bind(([127, 0, 0, 1], 3000).into())?;
    poem::Server::new_with_acceptor(TcpAcceptor::from_tokio(listener)?)
        .run_with_graceful_shutdown(
            app,
            // On ctrl-c, close the open streams so that poem's graceful shutdown can finish.
            async move {
                tokio::signal::ctrl_c().await.ok();
                sseio.shutdown(std::time::Duration::from_secs(5)).await;
            },
            None,
        )
        .await?;
    Ok(())
}

#[handler]
fn index() -> &'static str {
    "an ordinary route of the app"
}

#[handler]
fn deliver(
    Data(inbox): Data<&EventHandler>,
    Path(user): Path<String>,
    Json(mail): Json<Mail>,
) -> StatusCode {
    match inbox.send(&user, &mail) {
        Ok(()) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
