//! The poem endpoint and middleware: the request's head in, the core's outcome out as a poem
//! response.

use poem::error::NotFoundError;
use poem::http::response::Parts;
use poem::{Body, Endpoint, IntoResponse, Middleware, Request, Response, ResponseParts, Result};
use sseio_core::{Outcome, RequestHead, Server};

/// An endpoint serving SSE-IO, to mount on the server's path:
/// `Route::new().at("/files/:guid/pull", SseioEndpoint::new(server))`.
///
/// It answers `404` for a request that is not the server's (another path, or an `OPTIONS`
/// preflight left to your CORS middleware). To serve the SSE path in front of a whole app
/// instead, use [`SseioMiddleware`].
#[derive(Debug, Clone)]
pub struct SseioEndpoint {
    server: Server,
}

impl SseioEndpoint {
    /// An endpoint serving `server`.
    pub fn new(server: Server) -> Self {
        Self { server }
    }
}

impl Endpoint for SseioEndpoint {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Response> {
        match respond(&self.server, &req).await {
            Some(response) => Ok(response),
            None => Err(NotFoundError.into()),
        }
    }
}

/// A middleware serving SSE-IO in front of an endpoint: requests on the server's path are
/// served by sseio, every other request goes to the wrapped endpoint unchanged.
///
/// `Route::new().at("/hello", get(hello)).with(SseioMiddleware::new(server))`
#[derive(Debug, Clone)]
pub struct SseioMiddleware {
    server: Server,
}

impl SseioMiddleware {
    /// A middleware serving `server`'s SSE path.
    pub fn new(server: Server) -> Self {
        Self { server }
    }
}

impl<E: Endpoint> Middleware<E> for SseioMiddleware {
    type Output = SseioMiddlewareEndpoint<E>;

    fn transform(&self, inner: E) -> SseioMiddlewareEndpoint<E> {
        SseioMiddlewareEndpoint {
            server: self.server.clone(),
            inner,
        }
    }
}

/// The endpoint made by [`SseioMiddleware`]: SSE-IO on the server's path, `inner` for the rest.
#[derive(Debug)]
pub struct SseioMiddlewareEndpoint<E> {
    server: Server,
    inner: E,
}

impl<E: Endpoint> Endpoint for SseioMiddlewareEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Response> {
        // The cheap check first, so the app's own requests cost one path match.
        if self.server.matches(req.uri().path())
            && let Some(response) = respond(&self.server, &req).await
        {
            return Ok(response);
        }
        self.inner.call(req).await.map(IntoResponse::into_response)
    }
}

/// The core's answer to `req` as a poem response; `None` when the request is not the server's.
///
/// The URI is the one poem shows endpoints: below the prefix of an enclosing `Route::nest`.
async fn respond(server: &Server, req: &Request) -> Option<Response> {
    let mut head = RequestHead::new(req.method(), req.uri(), req.version(), req.headers());
    if let Some(peer) = req.remote_addr().as_socket_addr() {
        head = head.with_client_addr(peer.ip());
    }
    match server.handle(head).await {
        Outcome::NotOurs => None,
        Outcome::Reply(response) => {
            let (parts, bytes) = response.into_parts();
            Some(from_parts(parts, Body::from(bytes)))
        }
        Outcome::Stream(response) => {
            let (parts, stream) = response.into_parts();
            Some(from_parts(parts, Body::from_bytes_stream(stream)))
        }
    }
}

fn from_parts(parts: Parts, body: Body) -> Response {
    let parts = ResponseParts {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        extensions: parts.extensions,
    };
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use poem::http::{StatusCode, Uri};
    use poem::{EndpointExt, handler};

    use super::*;

    fn request(target: &'static str) -> Request {
        Request::builder().uri(Uri::from_static(target)).finish()
    }

    #[handler]
    fn app() -> &'static str {
        "app"
    }

    #[tokio::test]
    async fn endpoint_streams_on_the_sse_path() {
        let endpoint = SseioEndpoint::new(Server::new("/sseio").unwrap());
        let response = endpoint
            .call(request("/sseio?clientId=c&events=e"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.content_type(), Some("text/event-stream"));
    }

    #[tokio::test]
    async fn endpoint_answers_404_off_the_sse_path() {
        let endpoint = SseioEndpoint::new(Server::new("/sseio").unwrap());
        let error = endpoint.call(request("/elsewhere")).await.unwrap_err();
        assert_eq!(error.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn middleware_passes_other_paths_and_options_to_the_app() {
        let server = Server::new("/sseio").unwrap();
        let endpoint = app.with(SseioMiddleware::new(server));
        let response = endpoint.call(request("/elsewhere")).await.unwrap();
        assert_eq!(response.into_body().into_string().await.unwrap(), "app");
        let preflight = Request::builder()
            .method(poem::http::Method::OPTIONS)
            .uri(Uri::from_static("/sseio"))
            .finish();
        let response = endpoint.call(preflight).await.unwrap();
        assert_eq!(response.into_body().into_string().await.unwrap(), "app");
    }

    #[tokio::test]
    async fn middleware_rejects_a_bad_request_itself() {
        let server = Server::new("/sseio").unwrap();
        let endpoint = app.with(SseioMiddleware::new(server));
        let response = endpoint.call(request("/sseio?events=e")).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.content_type(), Some("application/json"));
    }
}
