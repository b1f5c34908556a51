//! A warp app served by sseio's standalone server through `warp::service`: its filters work as
//! under `warp::serve` (the peer through `ConnectionInfo`), and its SSE streams take the lean path.

use std::net::SocketAddr;

use sseio_test_support::client;
use sseio_warp::sseio_hyper::ConnectionInfo;
use sseio_warp::{Context, HandlerOptions, Server, sseio_hyper};
use warp::Filter;

/// Serves warp routes with a `/who` route beside an SSE path `/sse`, on a free port.
fn serve() -> SocketAddr {
    let server = Server::new("/sse").unwrap();
    server
        .register_event_handler("e", HandlerOptions::new(|_: &Context| "room"))
        .unwrap();
    let who = warp::path!("who")
        .and(warp::ext::get::<ConnectionInfo>())
        .and(warp::addr::remote())
        .map(|connection: ConnectionInfo, remote: Option<SocketAddr>| {
            format!("peer={} warp-remote={remote:?}", connection.peer())
        });
    let listener = sseio_warp::bind(([127, 0, 0, 1], 0).into()).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(std::future::IntoFuture::into_future(
        sseio_hyper::serve(listener, server).with_app(warp::service(who)),
    ));
    addr
}

/// What the README says: `warp::addr::remote()` is `None`, `ConnectionInfo` has the peer.
#[tokio::test]
async fn the_peer_is_in_connection_info_not_in_warps_remote() {
    let addr = serve();
    let (answer, peer) = client::get(addr, "/who").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.ends_with(&format!("peer={peer} warp-remote=None")),
        "{answer}"
    );
}

#[tokio::test]
async fn an_unknown_route_is_warps_404_and_the_sse_path_streams() {
    let addr = serve();
    let (answer, _) = client::get(addr, "/nowhere").await;
    assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
    let (_stream, head) = client::open_stream(addr, "/sse?clientId=c&events=e").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
}
