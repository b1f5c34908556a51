//! A salvo app served by sseio's standalone server through `tower_service`: its routes, hoops
//! and request accessors work as under `salvo::Server`, and its SSE streams take the lean path.

use std::net::SocketAddr;

use salvo::{Depot, FlowCtrl, Request, Response, Router, Service, handler};
use sseio_salvo::{Context, HandlerOptions, Server, sseio_hyper};
use sseio_test_support::client;

#[handler]
async fn who(req: &mut Request) -> String {
    format!(
        "remote={} local={} scheme={}",
        req.remote_addr(),
        req.local_addr(),
        req.scheme()
    )
}

/// A hoop of the app's: marks every answer it sees.
#[handler]
async fn mark(req: &mut Request, depot: &mut Depot, res: &mut Response, ctrl: &mut FlowCtrl) {
    ctrl.call_next(req, depot, res).await;
    res.add_header("x-app-hoop", "ran", true).unwrap();
}

/// Serves a salvo app with a `/who` route and a hoop beside an SSE path `/sse`, on a free port.
fn serve() -> SocketAddr {
    let server = Server::new("/sse").unwrap();
    server
        .register_event_handler("e", HandlerOptions::new(|_: &Context| "room"))
        .unwrap();
    let service = Service::new(Router::new().push(Router::with_path("who").get(who))).hoop(mark);
    let listener = sseio_salvo::bind(([127, 0, 0, 1], 0).into()).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(std::future::IntoFuture::into_future(
        sseio_hyper::serve(listener, server).with_app(sseio_salvo::tower_service(service)),
    ));
    addr
}

#[tokio::test]
async fn salvos_own_accessors_see_the_client_and_the_listener() {
    let addr = serve();
    let (answer, peer) = client::get(addr, "/who").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nx-app-hoop: ran\r\n"),
        "the app's hoop ran: {answer}"
    );
    assert!(
        answer.ends_with(&format!(
            "remote=socket://{peer} local=socket://{addr} scheme=http"
        )),
        "{answer}"
    );
}

#[tokio::test]
async fn an_unknown_route_is_salvos_404_and_the_sse_path_streams() {
    let addr = serve();
    let (answer, _) = client::get(addr, "/nowhere").await;
    assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
    let (_stream, head) = client::open_stream(addr, "/sse?clientId=c&events=e").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("x-app-hoop"),
        "the SSE path is answered before the app: {head}"
    );
}
