//! A poem app served by sseio's standalone server through `tower_service`: its routes and
//! extractors work as under `poem::Server`, and its SSE streams take the lean path.

use std::net::SocketAddr;

use poem::web::{LocalAddr, RemoteAddr};
use poem::{Request, Route, get, handler};
use sseio_poem::{Context, HandlerOptions, Server, sseio_hyper};
use sseio_test_support::client;

#[handler]
fn who(remote: &RemoteAddr, local: &LocalAddr, req: &Request) -> String {
    format!("remote={remote} local={local} scheme={}", req.scheme())
}

/// Serves a poem app with a `/who` route beside an SSE path `/sse`, on a free port.
fn serve() -> SocketAddr {
    let server = Server::new("/sse").unwrap();
    server
        .register_event_handler("e", HandlerOptions::new(|_: &Context| "room"))
        .unwrap();
    let app = Route::new().at("/who", get(who));
    let listener = sseio_poem::bind(([127, 0, 0, 1], 0).into()).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(std::future::IntoFuture::into_future(
        sseio_hyper::serve(listener, server).with_app(sseio_poem::tower_service(app)),
    ));
    addr
}

#[tokio::test]
async fn poems_own_extractors_see_the_client_and_the_listener() {
    let addr = serve();
    let (answer, peer) = client::get(addr, "/who").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.ends_with(&format!(
            "remote=socket://{peer} local=socket://{addr} scheme=http"
        )),
        "{answer}"
    );
}

#[tokio::test]
async fn an_unknown_route_is_poems_404_and_the_sse_path_streams() {
    let addr = serve();
    let (answer, _) = client::get(addr, "/nowhere").await;
    assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
    let (_stream, head) = client::open_stream(addr, "/sse?clientId=c&events=e").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
}
