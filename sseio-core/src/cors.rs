//! CORS for the SSE path: which origins may open streams from a browser, and the answer to their
//! preflight (the official client sends custom headers, which triggers one).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

/// Which cross-origin pages may open streams. Off by default: no CORS headers are sent, and an
/// `OPTIONS` request on the SSE path is left to the application.
///
/// ```
/// use sseio_core::{Cors, Server};
///
/// let server = Server::builder()
///     .cors(Cors::new().allow_origin("https://app.example").allow_credentials(true))
///     .build()?;
/// # Ok::<(), sseio_core::BuildError>(())
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Cors {
    origins: Vec<String>,
    any_origin: bool,
    credentials: bool,
    max_age: Option<Duration>,
}

impl Cors {
    /// No origin allowed yet; add them with [`Cors::allow_origin`] or [`Cors::allow_any_origin`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows pages from `origin` (scheme, host and port, such as `https://app.example`).
    pub fn allow_origin(mut self, origin: impl Into<String>) -> Self {
        self.origins.push(origin.into());
        self
    }

    /// Allows every origin. With credentials on, each origin is echoed back (browsers refuse `*`
    /// with credentials); prefer a list where the streams carry anything private.
    pub fn allow_any_origin(mut self) -> Self {
        self.any_origin = true;
        self
    }

    /// Whether pages may send cookies and HTTP authentication (`withCredentials`). Default: off.
    pub fn allow_credentials(mut self, allow: bool) -> Self {
        self.credentials = allow;
        self
    }

    /// How long a browser may cache a preflight answer. Default: 10 minutes.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    fn allows(&self, origin: &str) -> bool {
        self.any_origin || self.origins.iter().any(|o| o == origin)
    }

    /// Checks a request's `Origin`: `Ok(Some(origin))` to echo, `Ok(None)` for a same-origin or
    /// non-browser request (no `Origin`), `Err(())` for an origin that is not allowed.
    pub(crate) fn check<'a>(&self, headers: &'a HeaderMap) -> Result<Option<&'a HeaderValue>, ()> {
        match headers.get(header::ORIGIN) {
            None => Ok(None),
            Some(origin) if origin.to_str().is_ok_and(|o| self.allows(o)) => Ok(Some(origin)),
            Some(_) => Err(()),
        }
    }

    /// Adds the headers that let the page at `origin` read a response.
    pub(crate) fn decorate(&self, origin: &HeaderValue, headers: &mut HeaderMap) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }

    /// The answer to a preflight from an allowed `origin`: `204` allowing `GET`, the headers the
    /// page asked for, and a cache lifetime.
    pub(crate) fn preflight(&self, origin: &HeaderValue, request: &HeaderMap) -> Response<Bytes> {
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        self.decorate(origin, headers);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD"),
        );
        if let Some(asked) = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
            headers.append(
                header::VARY,
                HeaderValue::from_static("Access-Control-Request-Headers"),
            );
        }
        let max_age = self.max_age.unwrap_or(Duration::from_secs(600)).as_secs();
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(max_age));
        response
    }
}
