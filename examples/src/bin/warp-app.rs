//! An existing warp application with SSE-IO mounted beside its own routes.
//!
//! Run: `cargo run -p examples --bin warp-app`
//! Listen: `curl -N 'http://127.0.0.1:3000/user/ada/events?clientId=tab-1&events=inbox'`
//! Send:   `curl -X POST http://127.0.0.1:3000/users/ada/inbox -H 'content-type: application/json' -d '{"from":"grace","text":"hi"}'`
//!
//! sseio's standalone server (`sseio_hyper::serve`) answers the SSE path (`/user/:userId/events`)
//! itself, on its lean path, and hands every other request to the app's filters, made a tower
//! service by `warp::service`. (Under `warp::serve` instead, put `sseio_warp::filter(sseio)` in
//! front of them with `or`: every stream then costs hyper's connection buffers; see the
//! sseio-warp README.)
//!
//! Environment: `PORT` (default 3000; `0` picks a free port).
//!
//! Health for an orchestrator: `GET /livez` answers `200` while the process serves, `GET /readyz`
//! `200` while the server takes new clients and `503` once it drains (`Server::is_ready`).

use serde::{Deserialize, Serialize};
use sseio_warp::{Context, EventHandler, HandlerOptions, Server, sseio_hyper};
use warp::Filter;
use warp::http::StatusCode;

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

    let index = warp::path::end().map(|| "an ordinary route of the app");
    let deliver = warp::path!("users" / String / "inbox")
        .and(warp::post())
        .and(warp::body::json())
        .map(move |user: String, mail: Mail| deliver(&inbox, &user, &mail));
    let live = warp::path!("livez").map(|| StatusCode::OK);
    let ready = warp::path!("readyz").map({
        let sseio = sseio.clone();
        move || match sseio.is_ready() {
            true => StatusCode::OK,
            false => StatusCode::SERVICE_UNAVAILABLE,
        }
    });
    let app = index.or(deliver).or(live).or(ready);

    let port: u16 = std::env::var("PORT").map_or(Ok(3000), |p| p.parse())?;
    // A listen backlog of 1024: a burst of reconnects never waits on a SYN retry.
    let listener = sseio_warp::bind(([127, 0, 0, 1], port).into())?;
    println!("listening on http://{}", listener.local_addr()?);
    sseio_hyper::serve(listener, sseio)
        .with_app(warp::service(app))
        // On ctrl-c or SIGTERM: refuse new streams, close the open ones, then stop.
        .with_graceful_shutdown(sseio_hyper::shutdown_signal())
        .await?;
    Ok(())
}

fn deliver(inbox: &EventHandler, user: &str, mail: &Mail) -> StatusCode {
    match inbox.send(user, mail) {
        Ok(()) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
