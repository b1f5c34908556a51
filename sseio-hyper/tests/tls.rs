//! The standalone server's TLS handshake, over real sockets: a client that never completes it
//! holds neither a task nor the drain. (Serving over TLS, HTTP/2 and HTTP/1.1, is tested with
//! curl and Chromium in `conformance-tests`.)
#![cfg(feature = "tls")]

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sseio_hyper::rustls::{self, pki_types::PrivateKeyDer};
use sseio_hyper::{Server, TLS_HANDSHAKE_TIMEOUT, TlsConfig};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// TLS with a fresh self-signed certificate, built as a user with a rustls configuration of
/// their own would.
fn tls() -> TlsConfig {
    let certified = rcgen::generate_simple_self_signed(["localhost".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    TlsConfig::from_server_config(config)
}

/// Serves over TLS on a free loopback port until `shutdown` fires; its address and its task.
fn serve(shutdown: oneshot::Receiver<()>) -> (SocketAddr, JoinHandle<std::io::Result<()>>) {
    let listener = sseio_hyper::bind(([127, 0, 0, 1], 0).into()).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new("/sse").unwrap();
    let serve = sseio_hyper::serve(listener, server)
        .with_tls(tls())
        .shutdown_grace(Duration::from_millis(100))
        .with_graceful_shutdown(async {
            let _ = shutdown.await;
        });
    (addr, tokio::spawn(serve.into_future()))
}

/// A client that connects and never sends its `ClientHello` is closed once
/// `TLS_HANDSHAKE_TIMEOUT` has passed, not held forever.
#[tokio::test(start_paused = true)]
async fn a_client_that_never_completes_the_handshake_is_closed_after_the_timeout() {
    let (_shutdown, shutdown) = oneshot::channel();
    let (addr, _serving) = serve(shutdown);
    let mut client = TcpStream::connect(addr).await.unwrap();
    let connected = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT * 2, client.read(&mut buf))
        .await
        .expect("the server closes the connection");
    assert!(matches!(read, Ok(0)), "closed without a byte: {read:?}");
    assert!(
        connected.elapsed() >= TLS_HANDSHAKE_TIMEOUT,
        "not before the timeout: {:?}",
        connected.elapsed()
    );
}

/// A handshake that never completes does not hold up the graceful shutdown: the server returns
/// once its drain is over, well before the handshake would time out.
#[tokio::test(start_paused = true)]
async fn a_stalled_handshake_does_not_hold_up_the_drain() {
    let (stop, shutdown) = oneshot::channel();
    let (addr, serving) = serve(shutdown);
    let mut client = TcpStream::connect(addr).await.unwrap();
    // The server has accepted the connection once its task is waiting for the handshake; let it
    // get there (no time passes: the clock is paused and nothing else is scheduled).
    tokio::task::yield_now().await;
    let stopped = Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, serving)
        .await
        .expect("the server returns before the handshake would time out")
        .unwrap()
        .unwrap();
    assert!(stopped.elapsed() < TLS_HANDSHAKE_TIMEOUT);
    let mut buf = [0u8; 64];
    let read = client.read(&mut buf).await;
    assert!(matches!(read, Ok(0)), "the connection is closed: {read:?}");
}
