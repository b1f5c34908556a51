//! The standalone server: listen on a port and serve SSE-IO (and optionally an application)
//! with hyper-util, over HTTP/1.1 and HTTP/2.

use std::convert::Infallible;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use sseio_core::{BoxError, Server, bind};
use tokio::net::TcpListener;
use tower_service::Service;

use crate::lean::{self, First, Replay};
use crate::service::SseioService;

/// How long [`Serve`]'s graceful shutdown spreads the closing of open streams, by default.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long a client may take to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `server` standalone on `addr` until ctrl-c or `SIGTERM`, then shuts down gracefully.
///
/// Every request off the SSE path is answered `404`. To serve your own routes too, use
/// [`serve`] with [`Serve::with_app`].
///
/// # Errors
///
/// When the address cannot be bound.
pub async fn listen(addr: SocketAddr, server: Server) -> io::Result<()> {
    serve(bind(addr)?, server)
        .with_graceful_shutdown(shutdown_signal())
        .await
}

/// Serves `server` on `listener` (HTTP/1.1 and HTTP/2, detected per connection).
///
/// Await the returned [`Serve`] to run it. Configure it first with [`Serve::with_app`] (serve
/// your application's routes beside SSE-IO) and [`Serve::with_graceful_shutdown`].
pub fn serve(listener: TcpListener, server: Server) -> Serve<NotFound> {
    Serve {
        listener,
        server,
        app: NotFound,
        shutdown: None,
        grace: DEFAULT_SHUTDOWN_GRACE,
    }
}

/// A standalone server being configured; await it to run it. Made by [`serve`].
#[must_use = "a Serve does nothing until it is awaited"]
pub struct Serve<A> {
    listener: TcpListener,
    server: Server,
    app: A,
    shutdown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    grace: Duration,
}

impl<A> Serve<A> {
    /// Serves `app` (any tower service, such as an axum `Router`) for every request off the SSE
    /// path.
    pub fn with_app<B>(self, app: B) -> Serve<B> {
        Serve {
            listener: self.listener,
            server: self.server,
            app,
            shutdown: self.shutdown,
            grace: self.grace,
        }
    }

    /// Shuts down gracefully when `signal` completes: stop accepting, refuse new streams with
    /// `503` and close the open ones spread over the grace period ([`Server::shutdown`]), and
    /// wait for in-flight requests to finish.
    pub fn with_graceful_shutdown<F>(mut self, signal: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.shutdown = Some(Box::pin(signal));
        self
    }

    /// How long the graceful shutdown spreads the closing of open streams (see
    /// [`Server::shutdown`]). Default: [`DEFAULT_SHUTDOWN_GRACE`], 5 seconds.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The address the server listens on (useful after binding port 0).
    ///
    /// # Errors
    ///
    /// When the socket's address cannot be read.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl<A> fmt::Debug for Serve<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("server", &self.server)
            .field("graceful_shutdown", &self.shutdown.is_some())
            .finish_non_exhaustive()
    }
}

impl<A, B> IntoFuture for Serve<A>
where
    A: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    A::Future: Send + 'static,
    A::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        let Serve {
            listener,
            server,
            app,
            shutdown,
            grace,
        } = self;
        Box::pin(async move {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let builder = Arc::new(builder);
            let service = SseioService::new(server.clone(), app);
            let graceful = GracefulShutdown::new();
            let signal = shutdown.unwrap_or_else(|| Box::pin(std::future::pending()));
            // Once the signal comes, the server drains; connections are still accepted meanwhile, so
            // new streams are told `503` and to retry instead of finding the port closed.
            let drain = {
                let server = server.clone();
                async move {
                    signal.await;
                    server.shutdown(grace).await;
                }
            };
            let mut drain = std::pin::pin!(drain);

            loop {
                let mut socket = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => socket,
                        Err(error) => {
                            // Out of file descriptors or similar: keep serving the open connections.
                            tracing::warn!(%error, "sseio: accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    () = &mut drain => break,
                };
                // Frames are coalesced before they are written; send each write at once.
                let _ = socket.set_nodelay(true);
                let (server, builder, service) = (server.clone(), builder.clone(), service.clone());
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    // A lean stream that the server ended leaves the connection open for the
                    // client's next request, which starts over here.
                    loop {
                        let first = tokio::time::timeout(
                            HEADER_READ_TIMEOUT,
                            lean::read_first(&mut socket, &server),
                        );
                        match first.await {
                            Ok(Ok(First::SseGet(request))) => {
                                match lean::serve_stream(socket, &server, request).await {
                                    Some(open) => socket = open,
                                    None => break,
                                }
                            }
                            Ok(Ok(First::Other(prefix))) => {
                                let io = TokioIo::new(Replay::new(prefix, socket));
                                let connection = builder
                                    .serve_connection(io, TowerToHyperService::new(service))
                                    .into_owned();
                                // Boxed: a hyper connection is large, and most connections are
                                // lean streams.
                                if let Err(error) = Box::pin(watcher.watch(connection)).await {
                                    tracing::debug!(%error, "sseio: connection ended with an error");
                                }
                                break;
                            }
                            Ok(Err(_)) | Err(_) => break,
                        }
                    }
                });
            }

            drop(listener);
            graceful.shutdown().await;
            Ok(())
        })
    }
}

/// Completes on ctrl-c or, on Unix, `SIGTERM`: the usual signal for
/// [`Serve::with_graceful_shutdown`], and what [`listen`] uses.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// The application of a standalone server without one: `404` for every request off the SSE
/// path.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotFound;

impl<B> Service<Request<B>> for NotFound {
    type Response = Response<Empty<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Empty<Bytes>>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<B>) -> Self::Future {
        let mut response = Response::new(Empty::new());
        *response.status_mut() = StatusCode::NOT_FOUND;
        std::future::ready(Ok(response))
    }
}
