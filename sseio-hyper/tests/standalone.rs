//! The standalone server's lean path for SSE streams, over real sockets.

use std::net::SocketAddr;
use std::time::Duration;

use sseio_hyper::{CloseReason, Context, HandlerOptions, Notification, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Serves `server` standalone on a free loopback port, in the background; its address.
fn serve(server: Server) -> SocketAddr {
    let listener = sseio_hyper::bind(([127, 0, 0, 1], 0).into()).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(std::future::IntoFuture::into_future(sseio_hyper::serve(
        listener, server,
    )));
    addr
}

/// A client that stops reading blocks the server's write to its socket for good. Once its
/// buffer fills and the core closes the connection, the server must drop the socket instead of
/// waiting on that write: the stream then ends cut off, without the terminating chunk a finished
/// response would carry.
#[tokio::test]
async fn slow_consumer_socket_is_dropped_while_its_write_is_blocked() {
    let server = Server::builder()
        .path("/sse")
        .max_buffer_bytes(8 * 1024 * 1024)
        .build()
        .unwrap();
    let handler = server
        .register_event_handler("e", HandlerOptions::new(|_: &Context| "room"))
        .unwrap();
    let mut notifications = server.subscribe();
    let addr = serve(server);

    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /sse?clientId=slow&events=e HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // Wait until the stream is open, then stop reading.
    loop {
        if let Some(Notification::ConnCreate { .. }) = notifications.recv().await {
            break;
        }
    }
    let message = "x".repeat(100 * 1024);
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            handler.send("room", message.as_str()).unwrap();
            while let Some(notification) = notifications.try_recv() {
                if let Notification::ConnClose { reason, .. } = notification {
                    return reason;
                }
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the slow consumer is closed");
    assert_eq!(closed, CloseReason::SlowConsumer);

    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut received))
        .await
        .expect("the server ends the connection")
        .ok();
    assert!(received.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(
        !received.ends_with(b"\r\n0\r\n\r\n"),
        "the blocked write was not abandoned"
    );
}

/// Reads from `client` until what it received ends with `end`.
async fn read_until(client: &mut TcpStream, received: &mut Vec<u8>, end: &[u8]) {
    let mut buf = [0u8; 4096];
    while !received.ends_with(end) {
        let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
            .await
            .expect("the server answers")
            .unwrap();
        assert!(
            n > 0,
            "the server closed the connection after: {received:?}"
        );
        received.extend_from_slice(&buf[..n]);
    }
}

/// Regression: when the server ended a stream (a disconnect, a replacement, a drain), the lean
/// path wrote the response's last chunk and then closed the connection. The response had said
/// `keep-alive` and was complete, so a client could send its next request on that connection,
/// as a spec `EventSource` reconnecting through a pooled HTTP client does, and have it fail
/// with "other side closed" (seen once in CI on the JS history case). The connection must stay
/// open for the next request.
#[tokio::test]
async fn a_stream_the_server_ended_leaves_the_connection_open_for_the_next_request() {
    let request = b"GET /sse?clientId=c&events=e HTTP/1.1\r\nhost: x\r\n\r\n";
    let (mut client, _) = stream_ended_by_the_server(request).await;

    // The same connection, the next request: a new stream.
    client.write_all(request).await.unwrap();
    let mut again = Vec::new();
    read_until(&mut client, &mut again, b"\n\n\r\n").await;
    assert!(again.starts_with(b"HTTP/1.1 200 OK\r\n"), "{again:?}");
}

/// Regression: a request that said `Connection: close` was answered `keep-alive`, and once its
/// stream ended the standalone server kept the connection open for up to 30 seconds, waiting for
/// a next request the client had said would not come. Now the stream's response says `close`,
/// and the connection closes when the stream ends.
#[tokio::test]
async fn a_stream_asked_with_connection_close_closes_its_connection_when_it_ends() {
    let request = b"GET /sse?clientId=c&events=e HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let (mut client, received) = stream_ended_by_the_server(request).await;
    let head = String::from_utf8_lossy(&received).to_ascii_lowercase();
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
    let mut rest = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut rest))
        .await
        .expect("the server closes the connection once the stream ended");
    assert_eq!(
        read.unwrap(),
        0,
        "nothing after the last chunk, then the end"
    );
}

/// Opens a stream for client `c` with `request` on a standalone server, has the server end it
/// (a disconnect), and returns the client's connection and everything it received, up to the
/// response's last chunk.
async fn stream_ended_by_the_server(request: &[u8]) -> (TcpStream, Vec<u8>) {
    let server = Server::builder().path("/sse").build().unwrap();
    server
        .register_event_handler("e", HandlerOptions::new(|_: &Context| "room"))
        .unwrap();
    let mut notifications = server.subscribe();
    let addr = serve(server.clone());

    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(request).await.unwrap();
    let mut received = Vec::new();
    read_until(&mut client, &mut received, b"\n\n\r\n").await;
    while !matches!(
        notifications.recv().await,
        Some(Notification::ConnCreate { .. })
    ) {}
    server.disconnect("c").unwrap();
    read_until(&mut client, &mut received, b"\r\n0\r\n\r\n").await;
    (client, received)
}

/// Sends one request with `Connection: close` and reads the whole answer.
async fn answer(addr: SocketAddr, path: &str) -> String {
    let mut client = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    client.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut received))
        .await
        .expect("the server answers")
        .unwrap_or_else(|e| panic!("GET {path}: {e}, after {received:?}"));
    String::from_utf8(received).unwrap()
}

/// Liveness and readiness for an orchestrator: live while the process serves, ready until the
/// server drains (when new clients should go elsewhere), on paths of the server's own.
#[tokio::test]
async fn health_paths_answer_live_and_ready_until_the_drain() {
    let server = Server::builder().path("/sse").build().unwrap();
    server
        .register_event_handler("e", HandlerOptions::new(|_: &Context| "room"))
        .unwrap();
    let listener = sseio_hyper::bind(([127, 0, 0, 1], 0).into()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (signal, signalled) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(std::future::IntoFuture::into_future(
        sseio_hyper::serve(listener, server.clone())
            .with_health("/livez", "/readyz")
            .shutdown_grace(Duration::from_secs(30))
            .with_graceful_shutdown(async {
                let _ = signalled.await;
            }),
    ));
    let live = answer(addr, "/livez").await;
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
    assert!(live.ends_with(r#"{"status":"live"}"#), "{live}");
    let ready = answer(addr, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(answer(addr, "/elsewhere").await.starts_with("HTTP/1.1 404"));

    // Open streams keep the drain going (their closes spread over its 30 s), so the server
    // still answers while it drains.
    let mut streams = Vec::new();
    for n in 0..10 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET /sse?clientId={n}&events=e HTTP/1.1\r\nhost: x\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        read_until(&mut stream, &mut Vec::new(), b"\n\n\r\n").await;
        streams.push(stream);
    }
    signal.send(()).unwrap();
    let draining = loop {
        let ready = answer(addr, "/readyz").await;
        if !ready.starts_with("HTTP/1.1 200") {
            break ready;
        }
        tokio::task::yield_now().await;
    };
    assert!(draining.starts_with("HTTP/1.1 503"), "{draining}");
    assert!(draining.ends_with(r#"{"status":"draining"}"#), "{draining}");
    assert!(answer(addr, "/livez").await.starts_with("HTTP/1.1 200"));
}

/// Regression: the lean path raced the write of each chunk against the close, so the last field
/// a drain gives a stream (the `retry:` that keeps a browser's `EventSource` away until the
/// drain is over) was written or dropped at random, about one stream in two, and with it the
/// response's last chunk: the browser saw a broken connection, came back within its usual
/// reconnect delay, got the draining server's `503` and gave up for good. Every stream a drain
/// ends must get both.
#[tokio::test]
async fn every_stream_a_drain_ends_gets_its_retry_and_last_chunk() {
    const STREAMS: usize = 40;
    let server = Server::builder().path("/sse").build().unwrap();
    server
        .register_event_handler("e", HandlerOptions::new(|_: &Context| "room"))
        .unwrap();
    let mut notifications = server.subscribe();
    let addr = serve(server.clone());
    let mut clients = Vec::new();
    for i in 0..STREAMS {
        let mut client = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET /sse?clientId=c{i}&events=e HTTP/1.1\r\nhost: x\r\n\r\n");
        client.write_all(request.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        read_until(&mut client, &mut received, b"\n\n\r\n").await;
        clients.push(client);
    }
    let mut created = 0;
    while created < STREAMS {
        if let Some(Notification::ConnCreate { .. }) = notifications.recv().await {
            created += 1;
        }
    }
    server.shutdown(Duration::ZERO).await;
    for mut client in clients {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut rest))
            .await
            .expect("a drained stream's connection closes")
            .unwrap();
        let rest = String::from_utf8_lossy(&rest);
        assert!(
            rest.contains("\r\nretry: ") && rest.ends_with("\r\n0\r\n\r\n"),
            "what followed the opening: {rest:?}"
        );
    }
}

/// The standalone server tells the core each connection's peer, so a cap per client address
/// holds: a third stream from this host is answered `429` with a `Retry-After`.
#[tokio::test]
async fn the_cap_per_address_counts_the_peers_streams() {
    let server = Server::builder()
        .path("/sse")
        .max_streams_per_address(2)
        .build()
        .unwrap();
    server
        .register_event_handler("e", HandlerOptions::new(|_: &Context| "room"))
        .unwrap();
    let addr = serve(server.clone());
    let mut open = Vec::new();
    for client in ["a", "b"] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET /sse?clientId={client}&events=e HTTP/1.1\r\nhost: x\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        read_until(&mut stream, &mut received, b"\n\n\r\n").await;
        assert!(received.starts_with(b"HTTP/1.1 200 OK\r\n"), "{received:?}");
        open.push(stream);
    }
    let third = answer(addr, "/sse?clientId=c&events=e").await;
    assert!(third.starts_with("HTTP/1.1 429 "), "{third}");
    assert!(
        third.to_ascii_lowercase().contains("\r\nretry-after: "),
        "{third}"
    );
    drop(open);
}

/// The application served beside SSE-IO is told the connection each request came on: the
/// client's socket address and the listener's as [`ConnectionInfo`], the client's IP as
/// [`ClientAddr`], as a framework's own server tells its handlers.
#[tokio::test]
async fn the_app_is_told_the_connection_each_request_came_on() {
    use axum::Extension;
    use axum::routing::get;
    use sseio_hyper::{ClientAddr, ConnectionInfo};

    let server = Server::new("/sse").unwrap();
    let app = axum::Router::new().route(
        "/who",
        get(
            |Extension(connection): Extension<ConnectionInfo>,
             Extension(ClientAddr(client)): Extension<ClientAddr>| async move {
                format!(
                    "peer={} local={} client={client} tls={} scheme={}",
                    connection.peer(),
                    connection.local(),
                    connection.is_tls(),
                    connection.scheme(),
                )
            },
        ),
    );
    let listener = sseio_hyper::bind(([127, 0, 0, 1], 0).into()).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(std::future::IntoFuture::into_future(
        sseio_hyper::serve(listener, server).with_app(app),
    ));

    let mut client = TcpStream::connect(addr).await.unwrap();
    let peer = client.local_addr().unwrap();
    client
        .write_all(b"GET /who HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut received))
        .await
        .expect("the server answers")
        .unwrap();
    let received = String::from_utf8(received).unwrap();
    assert!(received.starts_with("HTTP/1.1 200 OK\r\n"), "{received}");
    let expected = format!(
        "peer={peer} local={addr} client={} tls=false scheme=http",
        peer.ip()
    );
    assert!(received.ends_with(&expected), "{received}");
}

/// An application's upgrade (a WebSocket, say) works beside SSE-IO: its `101` answer hands the
/// connection over, and what the client sends next reaches the application, not hyper.
#[tokio::test]
async fn an_upgrade_of_the_app_takes_the_connection_over() {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::routing::get;
    use hyper_util::rt::TokioIo;

    let server = Server::new("/sse").unwrap();
    // Answers `101` and echoes, upper-cased, what the client sends over the upgraded connection.
    let app = axum::Router::new().route(
        "/echo",
        get(|mut request: Request| async move {
            let upgrade = hyper::upgrade::on(&mut request);
            tokio::spawn(async move {
                let mut io = TokioIo::new(upgrade.await.expect("the connection is upgraded"));
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = io.read(&mut buf).await {
                    let upper = buf[..n].to_ascii_uppercase();
                    if io.write_all(&upper).await.is_err() {
                        break;
                    }
                }
            });
            http::Response::builder()
                .status(http::StatusCode::SWITCHING_PROTOCOLS)
                .header(http::header::CONNECTION, "upgrade")
                .header(http::header::UPGRADE, "echo")
                .body(Body::empty())
                .unwrap()
        }),
    );
    let listener = sseio_hyper::bind(([127, 0, 0, 1], 0).into()).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(std::future::IntoFuture::into_future(
        sseio_hyper::serve(listener, server).with_app(app),
    ));

    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /echo HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    read_until(&mut client, &mut received, b"\r\n\r\n").await;
    let head = String::from_utf8_lossy(&received);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    client.write_all(b"hello over the upgrade").await.unwrap();
    let mut echoed = Vec::new();
    read_until(&mut client, &mut echoed, b"HELLO OVER THE UPGRADE").await;
}
