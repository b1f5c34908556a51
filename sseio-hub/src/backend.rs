//! The hub's HTTP client for the backend: `fetch` by `GET`, the auth webhook and the lifecycle
//! webhooks. Plain HTTP/1.1 with kept-alive connections; no TLS, as the backend is on a private
//! network next to the hub.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A client for the backend; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Backend {
    client: Client<HttpConnector, Full<Bytes>>,
}

/// The backend's answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

/// Why a request to the backend got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
    #[error("`{0}` is not an http:// URL")]
    Url(String),
    #[error("{method} {url}: no answer within {timeout:?}")]
    Timeout {
        method: Method,
        url: String,
        timeout: Duration,
    },
    #[error("{method} {url}: {source}")]
    Request {
        method: Method,
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("{method} {url}: the answer's body is larger than {limit} bytes, or broke off")]
    Body {
        method: Method,
        url: String,
        limit: usize,
    },
}

impl Backend {
    pub(crate) fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Self {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
        }
    }

    /// `GET url` with `headers`; the answer, its body read up to `limit` bytes, within
    /// `timeout` for the whole exchange.
    pub(crate) async fn get(
        &self,
        url: &str,
        headers: HeaderMap,
        timeout: Duration,
        limit: usize,
    ) -> Result<Reply, BackendError> {
        self.send(Method::GET, url, headers, Bytes::new(), timeout, limit)
            .await
    }

    /// `POST url` with the JSON `body`; as [`Backend::get`].
    pub(crate) async fn post_json(
        &self,
        url: &str,
        mut headers: HeaderMap,
        body: Vec<u8>,
        timeout: Duration,
        limit: usize,
    ) -> Result<Reply, BackendError> {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        self.send(Method::POST, url, headers, body.into(), timeout, limit)
            .await
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
        limit: usize,
    ) -> Result<Reply, BackendError> {
        let uri = check_url(url)?;
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let exchange = async {
            let response =
                self.client
                    .request(request)
                    .await
                    .map_err(|source| BackendError::Request {
                        method: method.clone(),
                        url: url.to_owned(),
                        source,
                    })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|_| BackendError::Body {
                    method: method.clone(),
                    url: url.to_owned(),
                    limit,
                })?
                .to_bytes();
            Ok(Reply { status, body })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(BackendError::Timeout {
                    method: method.clone(),
                    url: url.to_owned(),
                    timeout,
                })
            })
    }
}

/// `url` as a URI, if it is an absolute `http://` URL.
pub(crate) fn check_url(url: &str) -> Result<Uri, BackendError> {
    let uri: Uri = url.parse().map_err(|_| BackendError::Url(url.to_owned()))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(BackendError::Url(url.to_owned()));
    }
    Ok(uri)
}

/// The first `max` bytes of `body` as text, for error messages.
pub(crate) fn excerpt(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(max)]);
    let text = text.trim();
    if body.len() > max {
        format!("{text}…")
    } else {
        text.to_owned()
    }
}
