//! HTTP/2 over cleartext with prior knowledge (h2c), through hyper's client connection.
//!
//! The harness serves HTTP/1.1 and h2c prior-knowledge on the same port; this module opens one
//! HTTP/2 connection per request and gives the response head and its body as it arrives.

use std::io;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// An HTTP/2 response whose body is read incrementally. Dropping it closes the connection.
#[derive(Debug)]
pub struct H2Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Incoming,
    connection: JoinHandle<()>,
}

impl Drop for H2Response {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// Sends `GET target` (path and query) over a new h2c prior-knowledge connection to
/// `base_url` (`http://host:port`) and returns once the response head has arrived.
pub async fn get(base_url: &str, target: &str) -> io::Result<H2Response> {
    let authority = base_url
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "only http:// URLs"))?;
    let tcp = TcpStream::connect(authority).await?;
    tcp.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .map_err(io::Error::other)?;
    let connection = tokio::spawn(async move {
        // The connection ends when the response is dropped or the server closes it.
        let _ = connection.await;
    });
    let request = Request::get(format!("http://{authority}{target}"))
        .header("accept", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Empty::<Bytes>::new())
        .map_err(io::Error::other)?;
    let response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(e) => {
            connection.abort();
            return Err(io::Error::other(e));
        }
    };
    let (parts, body) = response.into_parts();
    Ok(H2Response {
        status: parts.status,
        headers: parts.headers,
        body,
        connection,
    })
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
