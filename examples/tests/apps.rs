//! The framework examples (`axum-app`, `warp-app`, `poem-app`, `salvo-app`, `actix-app`) run as
//! their doc comments say: started on a free port, each answers an ordinary route of its app,
//! streams on its SSE path (the `fetch` greeting first), and delivers what its app's own `POST`
//! route sends to the stream.

use std::process::Stdio;
use std::time::Duration;

use sseio_test_support::client;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long an example may take to listen, and any answer to come.
const WAIT: Duration = Duration::from_secs(30);

/// Starts the example `bin` with `PORT=0`; the process and its address, from the
/// `listening on http://<addr>` line it prints.
async fn start(bin: &str) -> (Child, std::net::SocketAddr) {
    let mut child = Command::new(bin)
        .env("PORT", "0")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let addr = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.expect("stdout") {
            if let Some(addr) = line.strip_prefix("listening on http://") {
                return addr.trim().parse().expect("an address");
            }
        }
        panic!("{bin} ended without printing `listening on http://<addr>`");
    })
    .await
    .unwrap_or_else(|_| panic!("{bin} did not listen within {WAIT:?}"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// The example's walk-through: `GET /`, a stream for user `ada`, and a mail posted to her.
async fn check(bin: &str) {
    let (_child, addr) = start(bin).await;

    let (index, _) = client::get(addr, "/").await;
    assert!(
        index.starts_with("HTTP/1.1 200 OK\r\n"),
        "{bin}: GET /: {index}"
    );
    assert!(
        index.ends_with("an ordinary route of the app"),
        "{bin}: GET /: {index}"
    );

    let (mut stream, opened) =
        client::open_stream(addr, "/user/ada/events?clientId=tab-1&events=inbox").await;
    assert!(opened.starts_with("HTTP/1.1 200 OK\r\n"), "{bin}: {opened}");
    let mut received = opened;
    read_until(&mut stream, &mut received, "welcome back, ada").await;

    let mail = r#"{"from":"grace","text":"hi"}"#;
    let mut post = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /users/ada/inbox HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{mail}",
        mail.len()
    );
    post.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, post.read_to_end(&mut answer))
        .await
        .expect("the POST is answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 202 "), "{bin}: POST: {answer}");
    read_until(
        &mut stream,
        &mut received,
        r#"{"from":"grace","text":"hi"}"#,
    )
    .await;
}

/// Reads the stream until what it received contains `expected`.
async fn read_until(stream: &mut TcpStream, received: &mut String, expected: &str) {
    let mut buf = [0u8; 4096];
    while !received.contains(expected) {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {expected:?} within {WAIT:?}, after {received:?}"))
            .unwrap();
        assert!(n > 0, "the stream closed before {expected:?}: {received:?}");
        received.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[tokio::test]
async fn axum_app_answers_its_routes_and_streams() {
    check(env!("CARGO_BIN_EXE_axum-app")).await;
}

#[tokio::test]
async fn warp_app_answers_its_routes_and_streams() {
    check(env!("CARGO_BIN_EXE_warp-app")).await;
}

#[tokio::test]
async fn poem_app_answers_its_routes_and_streams() {
    check(env!("CARGO_BIN_EXE_poem-app")).await;
}

#[tokio::test]
async fn salvo_app_answers_its_routes_and_streams() {
    check(env!("CARGO_BIN_EXE_salvo-app")).await;
}

#[tokio::test]
async fn actix_app_answers_its_routes_and_streams() {
    check(env!("CARGO_BIN_EXE_actix-app")).await;
}
