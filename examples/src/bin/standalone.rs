//! A standalone SSE-IO server: one call listens on a port.
//!
//! Run: `cargo run -p examples --bin standalone`
//! Then: `curl -N 'http://127.0.0.1:3000/sseio?clientId=me&events=clock&topic=utc'`
//!
//! Every second the `clock` event sends the time to room `utc`; clients pick the room with the
//! `topic` query parameter (`sse.io-client`'s `queryParams`). Stop it with ctrl-c: open streams
//! are closed and the server drains.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use sseio_hyper::{Context, HandlerOptions, Notification, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::new("/sseio")?;
    let clock = server.register_event_handler(
        "clock",
        HandlerOptions::new(|ctx: &Context| ctx.query("topic").unwrap_or("utc").to_owned()),
    )?;

    // Lifecycle notifications are optional; here they are printed.
    let mut notifications = server.subscribe();
    tokio::spawn(async move {
        while let Some(notification) = notifications.recv().await {
            match notification {
                Notification::ConnCreate { client_id, .. } => println!("+ {client_id}"),
                Notification::ConnClose {
                    client_id, reason, ..
                } => {
                    println!("- {client_id} ({reason})")
                }
                Notification::Error(error) => eprintln!("! {error}"),
                _ => {}
            }
        }
    });

    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            // Anything `Serialize` goes out as its JSON text; a string would go out verbatim.
            let _ = clock.send("utc", &json!({ "unix": now.as_secs() }));
        }
    });

    let port = std::env::var("PORT").map_or(Ok(3000), |p| p.parse())?;
    let addr = ([127, 0, 0, 1], port).into();
    println!("SSE-IO on http://{addr}/sseio?clientId=me&events=clock");
    sseio_hyper::listen(addr, server).await?;
    Ok(())
}
