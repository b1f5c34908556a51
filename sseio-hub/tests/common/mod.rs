//! What the hub's tests share: a hub started from TOML text on a free port, an HTTP client, and
//! an event stream read with a deadline.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use sseio_hub::{Config, Hub};
use tokio::sync::oneshot;

/// How long any one expected thing may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// The API key of every test hub.
pub const API_KEY: &str = "test-api-key-0123456789";

/// A hub serving on a free port of 127.0.0.1, stopped (drained) when dropped.
pub struct TestHub {
    pub addr: SocketAddr,
    pub hub: Hub,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts a hub from `toml` (the `[publish]` API key is added), reading key files relative to
/// this crate's directory.
pub async fn start(toml: &str) -> TestHub {
    let text = format!("{toml}\n[publish]\napi_keys = [\"{API_KEY}\"]\n");
    let mut loaded = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));
    loaded.base_dir = env!("CARGO_MANIFEST_DIR").into();
    let hub = Hub::build(&loaded).await.unwrap_or_else(|e| panic!("{e}"));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = hub.clone();
    tokio::spawn(async move {
        let app = serving.app();
        serving
            .serve(listener, app, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    TestHub {
        addr,
        hub,
        stop: Some(stop),
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response read whole.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {:?} ({})",
                String::from_utf8_lossy(&self.body),
                self.status
            )
        })
    }
}

/// `method path` on `addr` with `headers` and `body`; the whole answer.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let response = send(addr, method, path, headers, body).await;
    let status = response.status();
    let headers = response.headers().clone();
    let body = tokio::time::timeout(WAIT, response.into_body().collect())
        .await
        .expect("the body within the deadline")
        .expect("the body")
        .to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> http::Response<Incoming> {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(body.into())).unwrap();
    tokio::time::timeout(WAIT, client().request(request))
        .await
        .expect("an answer within the deadline")
        .expect("an answer")
}

/// `POST path` with the JSON `body` and the test API key.
pub async fn api_post(addr: SocketAddr, path: &str, body: &Value) -> Answer {
    request(
        addr,
        Method::POST,
        path,
        &[
            ("authorization", &format!("Bearer {API_KEY}")),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

/// An open event stream.
pub struct Stream {
    body: Incoming,
    buffer: String,
}

/// Opens `GET path` as an event stream, asserting `200`.
pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Stream {
    let response = send(addr, Method::GET, path, headers, Bytes::new()).await;
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    Stream {
        body: response.into_body(),
        buffer: String::new(),
    }
}

impl Stream {
    /// The next message, as `(event, data)`; comments and `retry:` lines are skipped.
    pub async fn next(&mut self) -> (String, String) {
        tokio::time::timeout(WAIT, async {
            loop {
                while let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    let mut event = None;
                    let mut data = Vec::new();
                    for line in block.lines() {
                        if let Some(name) = line.strip_prefix("event: ") {
                            event = Some(name.to_owned());
                        } else if let Some(value) = line.strip_prefix("data: ") {
                            data.push(value);
                        }
                    }
                    if let Some(event) = event {
                        return (event, data.join("\n"));
                    }
                }
                let frame = self
                    .body
                    .frame()
                    .await
                    .expect("the stream to go on")
                    .expect("a frame");
                if let Ok(bytes) = frame.into_data() {
                    self.buffer.push_str(std::str::from_utf8(&bytes).unwrap());
                }
            }
        })
        .await
        .expect("a message within the deadline")
    }
}

/// Waits until `check` holds, polling every 10 ms, for at most [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
