//! The tower layer and service: SSE-IO on its path, everything else to the inner service.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use sseio_core::{BoxError, ConnectionStream, Outcome, RequestHead, Server};
use tower_layer::Layer;
use tower_service::Service;

/// A tower [`Layer`] that mounts SSE-IO in front of a service: requests on the server's path
/// are served by sseio, every other request goes to the wrapped service unchanged.
///
/// With axum: `Router::new().route(..).layer(SseioLayer::new(server))`.
#[derive(Debug, Clone)]
pub struct SseioLayer {
    server: Server,
}

impl SseioLayer {
    /// A layer serving `server`'s SSE path.
    pub fn new(server: Server) -> Self {
        Self { server }
    }
}

impl<S> Layer<S> for SseioLayer {
    type Service = SseioService<S>;

    fn layer(&self, inner: S) -> SseioService<S> {
        SseioService::new(self.server.clone(), inner)
    }
}

/// The client's IP address, as a request extension: what
/// [`ServerBuilder::max_streams_per_address`](sseio_core::ServerBuilder::max_streams_per_address)
/// counts. The standalone server ([`serve`](crate::serve), [`listen`](crate::listen)) sets it
/// to each connection's peer. Behind another server (`axum::serve`, say), [`SseioService`]
/// reads it if a middleware in front sets it: from axum's `ConnectInfo`, or from the address a
/// trusted proxy forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// What the core is told of `request`, its [`ClientAddr`] included.
pub(crate) fn request_head<B>(request: &Request<B>) -> RequestHead<'_> {
    let head = RequestHead::from(request);
    match request.extensions().get::<ClientAddr>() {
        Some(ClientAddr(addr)) => head.with_client_addr(*addr),
        None => head,
    }
}

/// The service made by [`SseioLayer`]: SSE-IO on the server's path, `inner` for the rest.
#[derive(Debug, Clone)]
pub struct SseioService<S> {
    server: Server,
    inner: S,
}

impl<S> SseioService<S> {
    /// Serves `server`'s SSE path and passes every other request to `inner`.
    pub fn new(server: Server, inner: S) -> Self {
        Self { server, inner }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SseioService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<SseioBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if !self.server.matches(request.uri().path()) {
            let future = self.inner.call(request);
            return ResponseFuture {
                kind: FutureKind::Inner { future },
            };
        }
        // The inner service was made ready by `poll_ready`; take that instance along in case the
        // request is passed through after all (an `OPTIONS` preflight).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let server = self.server.clone();
        let future: BoxedResponse<ResBody, S::Error> = Box::pin(async move {
            match server.handle(request_head(&request)).await {
                Outcome::NotOurs => Ok(inner.call(request).await?.map(SseioBody::app)),
                Outcome::Reply(response) => Ok(response.map(SseioBody::full)),
                Outcome::Stream(response) => Ok(response.map(SseioBody::stream)),
            }
        });
        ResponseFuture {
            kind: FutureKind::Sseio { future },
        }
    }
}

type BoxedResponse<B, E> = Pin<Box<dyn Future<Output = Result<Response<SseioBody<B>>, E>> + Send>>;

pin_project! {
    /// The response future of [`SseioService`].
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        kind: FutureKind<F, B, E>,
    }
}

pin_project! {
    #[project = FutureKindProj]
    enum FutureKind<F, B, E> {
        // A request for the inner service: no allocation on the application's path.
        Inner { #[pin] future: F },
        // A request on the SSE path.
        Sseio { future: BoxedResponse<B, E> },
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<SseioBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            FutureKindProj::Inner { future } => future
                .poll(cx)
                .map(|result| result.map(|response| response.map(SseioBody::app))),
            FutureKindProj::Sseio { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            FutureKind::Inner { .. } => "ResponseFuture::Inner",
            FutureKind::Sseio { .. } => "ResponseFuture::Sseio",
        })
    }
}

pin_project! {
    /// The response body of [`SseioService`]: the application's own body, a complete sseio
    /// reply (a rejection or a `HEAD` answer), or an SSE stream.
    pub struct SseioBody<B> {
        #[pin]
        kind: BodyKind<B>,
    }
}

pin_project! {
    #[project = BodyKindProj]
    enum BodyKind<B> {
        // The inner service's body, untouched.
        App { #[pin] body: B },
        // A complete reply from sseio.
        Full { data: Option<Bytes> },
        // An accepted SSE stream.
        Stream { #[pin] stream: ConnectionStream },
    }
}

impl<B> SseioBody<B> {
    fn app(body: B) -> Self {
        Self {
            kind: BodyKind::App { body },
        }
    }

    fn full(data: Bytes) -> Self {
        let data = (!data.is_empty()).then_some(data);
        Self {
            kind: BodyKind::Full { data },
        }
    }

    fn stream(stream: ConnectionStream) -> Self {
        Self {
            kind: BodyKind::Stream { stream },
        }
    }
}

impl<B> Body for SseioBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            BodyKindProj::App { body } => body.poll_frame(cx).map_err(Into::into),
            BodyKindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            BodyKindProj::Stream { stream } => {
                stream.poll_frame(cx).map_err(|never| match never {})
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::App { body } => body.is_end_stream(),
            BodyKind::Full { data } => data.is_none(),
            BodyKind::Stream { stream } => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::App { body } => body.size_hint(),
            BodyKind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            BodyKind::Stream { stream } => stream.size_hint(),
        }
    }
}

impl<B> fmt::Debug for SseioBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            BodyKind::App { .. } => f.write_str("SseioBody::App"),
            BodyKind::Full { data } => f
                .debug_struct("SseioBody::Full")
                .field("data", data)
                .finish(),
            BodyKind::Stream { stream } => f
                .debug_struct("SseioBody::Stream")
                .field("stream", stream)
                .finish(),
        }
    }
}
