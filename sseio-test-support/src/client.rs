//! A bare HTTP/1.1 client over a `TcpStream`, for the adapters' tests of serving an app with
//! sseio's standalone server: what the bytes on the wire are is what those tests look at.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any answer may take.
const WAIT: Duration = Duration::from_secs(10);

/// Sends `GET path` with `Connection: close` to `addr` and reads the whole answer, head and body;
/// with the client's own address (the server's peer).
///
/// # Panics
///
/// When the server cannot be reached, or does not answer within 10 seconds.
pub async fn get(addr: SocketAddr, path: &str) -> (String, SocketAddr) {
    let mut client = TcpStream::connect(addr).await.expect("the server listens");
    let peer = client.local_addr().expect("a connected socket's address");
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    client.write_all(request.as_bytes()).await.expect("write");
    let mut received = Vec::new();
    tokio::time::timeout(WAIT, client.read_to_end(&mut received))
        .await
        .unwrap_or_else(|_| panic!("GET {path}: no whole answer within {WAIT:?}"))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (String::from_utf8_lossy(&received).into_owned(), peer)
}

/// Opens an SSE stream with `GET path` on `addr` and reads until its first event is complete
/// (a blank line after the head); the open connection, and what was read.
///
/// # Panics
///
/// When the server cannot be reached, or sends no complete event within 10 seconds.
pub async fn open_stream(addr: SocketAddr, path: &str) -> (TcpStream, String) {
    let mut client = TcpStream::connect(addr).await.expect("the server listens");
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n");
    client.write_all(request.as_bytes()).await.expect("write");
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let first_event = |received: &[u8]| {
        let text = String::from_utf8_lossy(received);
        text.split_once("\r\n\r\n")
            .is_some_and(|(_, body)| body.contains("\n\n"))
    };
    while !first_event(&received) {
        let n = tokio::time::timeout(WAIT, client.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("GET {path}: no first event within {WAIT:?}: {received:?}"))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert!(n > 0, "GET {path}: closed after {received:?}");
        received.extend_from_slice(&buf[..n]);
    }
    (client, String::from_utf8_lossy(&received).into_owned())
}
