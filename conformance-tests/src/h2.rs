//! HTTP/2 over cleartext with prior knowledge (h2c), through hyper's client connection.
//!
//! The harness serves HTTP/1.1 and h2c prior-knowledge on the same port. [`get`] opens one
//! HTTP/2 connection per request; [`H2Connection`] multiplexes several streams over one, so a
//! case can reset one stream (drop its response) while the connection and its other streams
//! stay up, as a browser does when a tab closes.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Aborts the task driving the connection when the last handle to it goes.
#[derive(Debug)]
struct ConnectionTask(JoinHandle<()>);

impl Drop for ConnectionTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One h2c prior-knowledge connection, over which [`H2Connection::get`] opens streams. The
/// connection stays up while this or any of its responses is alive.
#[derive(Debug)]
pub struct H2Connection {
    authority: String,
    sender: SendRequest<Empty<Bytes>>,
    task: Arc<ConnectionTask>,
}

impl H2Connection {
    /// Connects to `base_url` (`http://host:port`) and performs the HTTP/2 handshake.
    pub async fn connect(base_url: &str) -> io::Result<H2Connection> {
        let authority = base_url
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "only http:// URLs"))?
            .to_owned();
        let tcp = TcpStream::connect(&authority).await?;
        tcp.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .map_err(io::Error::other)?;
        let task = ConnectionTask(tokio::spawn(async move {
            // Ends when every handle is dropped (the task is aborted) or the server closes.
            let _ = connection.await;
        }));
        Ok(H2Connection {
            authority,
            sender,
            task: Arc::new(task),
        })
    }

    /// Opens a stream with `GET target` (path and query) and the headers the official client
    /// sends, and returns once the response head has arrived. Dropping the response resets
    /// the stream (`RST_STREAM`), not the connection.
    pub async fn get(&mut self, target: &str) -> io::Result<H2Response> {
        let request = Request::get(format!("http://{}{target}", self.authority))
            .header("accept", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(Empty::<Bytes>::new())
            .map_err(io::Error::other)?;
        self.sender.ready().await.map_err(io::Error::other)?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(io::Error::other)?;
        let (parts, body) = response.into_parts();
        Ok(H2Response {
            status: parts.status,
            headers: parts.headers,
            body,
            _connection: Arc::clone(&self.task),
        })
    }
}

/// An HTTP/2 response whose body is read incrementally. Dropping it resets its stream; the
/// connection closes once nothing else uses it.
#[derive(Debug)]
pub struct H2Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Incoming,
    _connection: Arc<ConnectionTask>,
}

/// Sends `GET target` (path and query) over a new h2c prior-knowledge connection to
/// `base_url` (`http://host:port`) and returns once the response head has arrived. Dropping
/// the response closes that connection.
pub async fn get(base_url: &str, target: &str) -> io::Result<H2Response> {
    H2Connection::connect(base_url).await?.get(target).await
}

impl H2Response {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The next DATA received, or `None` once the body has ended. Trailers are skipped.
    /// Cancel-safe.
    pub async fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(io::Error::other(e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        return Ok(Some(data.to_vec()));
                    }
                }
            }
        }
    }
}
