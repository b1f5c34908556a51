//! A page the server renders, with a live feed that loses nothing: not between the render and
//! the page's first connect, not across reconnects, and when it cannot be helped, the page is
//! told.
//!
//! Run: `cargo run -p examples --bin rendered-page`, then open <http://127.0.0.1:3000/>.
//!
//! - The page embeds where the feed's history stands when it is rendered
//!   (`EventHandler::position`) and passes it on its first connect as `lastEventId` (a native
//!   `EventSource` cannot send `Last-Event-ID` on its first request): it gets exactly the ticks
//!   sent after the render, however long the page took to load.
//! - On a reconnect the `EventSource` sends `Last-Event-ID` by itself and gets what it missed.
//! - With the gap notice on (`ServerBuilder::gap_notice`), a reconnect after the history has
//!   moved on (the server keeps 30 ticks here: stop the page's network for longer than that, or
//!   restart the server) first gets a `gap` event, and the page says so and reloads its state.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::get;
use sseio_hyper::{Context, EventHandler, HandlerOptions, History, Server};

/// The room every page listens to.
const ROOM: &str = "ticks";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::builder()
        .path("/feed")
        .history(History::new(30))
        .gap_notice("gap")
        .build()?;
    let ticks = server.register_event_handler("tick", HandlerOptions::new(|_: &Context| ROOM))?;

    tokio::spawn({
        let ticks = ticks.clone();
        async move {
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            for n in 0u64.. {
                interval.tick().await;
                let _ = ticks.send(ROOM, &format!("tick {n}"));
            }
        }
    });

    let app = Router::new().route("/", get(page)).with_state(ticks);
    let port = std::env::var("PORT").map_or(Ok(3000), |p| p.parse())?;
    let listener = sseio_hyper::bind(([127, 0, 0, 1], port).into())?;
    println!("open http://{}/", listener.local_addr()?);
    sseio_hyper::serve(listener, server)
        .with_app(app)
        .with_graceful_shutdown(sseio_hyper::shutdown_signal())
        .await?;
    Ok(())
}

/// The page, with the feed's position at the moment it was rendered.
async fn page(State(ticks): State<EventHandler>) -> Result<Html<String>, StatusCode> {
    let position = ticks
        .position(ROOM)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok(Html(PAGE.replace("{position}", &position.to_string())))
}

const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>A feed that loses nothing</title>
<h1>Ticks</h1>
<p>Rendered at position <code>{position}</code>; everything after it follows.</p>
<ol id="feed"></ol>
<script>
  const feed = document.getElementById('feed');
  const show = (text) => feed.appendChild(document.createElement('li')).textContent = text;
  const id = 'page-' + Math.random().toString(36).slice(2);
  const source = new EventSource(
    `/feed?clientId=${id}&events=tick&events=gap&lastEventId=${encodeURIComponent('{position}')}`);
  source.addEventListener('tick', (e) => show(e.data));
  source.addEventListener('gap', () => show('(missed some ticks: reload the page for the full state)'));
</script>
"#;
