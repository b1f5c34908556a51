//! Liveness and readiness for orchestrators, on paths of the standalone server's own.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use sseio_core::Server;
use tower_service::Service;

/// The liveness path [`listen`](crate::listen) answers: `200` while the process serves.
pub const DEFAULT_LIVENESS_PATH: &str = "/livez";
/// The readiness path [`listen`](crate::listen) answers: `200` while the server should get new
/// clients ([`Server::is_ready`]), `503` while it drains or its broker is unavailable.
pub const DEFAULT_READINESS_PATH: &str = "/readyz";

/// The paths of the health answers.
#[derive(Debug, Clone)]
pub(crate) struct HealthPaths {
    pub(crate) live: String,
    pub(crate) ready: String,
}

/// An application with the health paths in front: `GET` or `HEAD` on them is answered here
/// with a small JSON body, everything else goes to `app`.
#[derive(Clone)]
pub struct Health<A> {
    app: A,
    server: Server,
    paths: Option<Arc<HealthPaths>>,
}

impl<A> Health<A> {
    pub(crate) fn new(app: A, server: Server, paths: Option<HealthPaths>) -> Self {
        Self {
            app,
            server,
            paths: paths.map(Arc::new),
        }
    }

    /// The answer for `request`, if it asks for health.
    fn answer<B>(&self, request: &Request<B>) -> Option<Response<Full<Bytes>>> {
        let paths = self.paths.as_ref()?;
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            return None;
        }
        let path = request.uri().path();
        let (status, body) = if path == paths.live {
            (StatusCode::OK, r#"{"status":"live"}"#)
        } else if path == paths.ready {
            if self.server.is_ready() {
                (StatusCode::OK, r#"{"status":"ready"}"#)
            } else if self.server.is_shutting_down() {
                (StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"draining"}"#)
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    r#"{"status":"broker unavailable"}"#,
                )
            }
        } else {
            return None;
        };
        let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Some(response)
    }
}

impl<A: fmt::Debug> fmt::Debug for Health<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Health")
            .field("app", &self.app)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// The response future of [`Health`]: ready at once for a health path, the application's
    /// otherwise.
    pub struct HealthFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        // A health answer, taken once.
        Answer { response: Option<Response<Full<Bytes>>> },
        // The application's response.
        App { #[pin] future: F },
    }
}

impl<F, B, E> Future for HealthFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<Either<B, Full<Bytes>>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Answer { response } => Poll::Ready(Ok(response
                .take()
                .expect("polled after completion")
                .map(Either::Right))),
            KindProj::App { future } => future
                .poll(cx)
                .map(|result| result.map(|response| response.map(Either::Left))),
        }
    }
}

impl<F> fmt::Debug for HealthFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthFuture").finish_non_exhaustive()
    }
}

impl<A, B, ReqBody> Service<Request<ReqBody>> for Health<A>
where
    A: Service<Request<ReqBody>, Response = Response<B>>,
{
    type Response = Response<Either<B, Full<Bytes>>>;
    type Error = A::Error;
    type Future = HealthFuture<A::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), A::Error>> {
        self.app.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        match self.answer(&request) {
            Some(response) => HealthFuture {
                kind: Kind::Answer {
                    response: Some(response),
                },
            },
            None => HealthFuture {
                kind: Kind::App {
                    future: self.app.call(request),
                },
            },
        }
    }
}
