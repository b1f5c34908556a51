//! The standalone server: listen on a port and serve SSE-IO (and optionally an application)
//! with hyper-util, over HTTP/1.1 and HTTP/2, in cleartext or (the `tls` feature) over TLS.

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
use hyper_util::service::TowerToHyperService;
use sseio_core::{BoxError, Server, bind};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
#[cfg(feature = "tls")]
use tokio::net::TcpStream;
use tokio::sync::watch;
use tower_service::Service;

use crate::health::{DEFAULT_LIVENESS_PATH, DEFAULT_READINESS_PATH, Health, HealthPaths};
use crate::lean::{self, First, Replay};
use crate::peer::{ConnectionInfo, FromPeer};
use crate::service::{ClientAddr, SseioService};
#[cfg(feature = "tls")]
use crate::tls::TlsConfig;

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
        .with_health(DEFAULT_LIVENESS_PATH, DEFAULT_READINESS_PATH)
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
        health: None,
        #[cfg(feature = "tls")]
        tls: None,
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
    health: Option<HealthPaths>,
    #[cfg(feature = "tls")]
    tls: Option<TlsConfig>,
}

impl<A> Serve<A> {
    /// Serves `app` for every request off the SSE path: any tower service of
    /// `http::Request<hyper::body::Incoming>`, such as an axum `Router`, a warp filter turned
    /// into one by `warp::service`, a poem endpoint by `sseio_poem::tower_service`, a salvo
    /// `Service` by `sseio_salvo::tower_service`.
    ///
    /// Every request on the SSE path is sseio's, on the lean path or through hyper, before the
    /// app sees it (only one the core declines, such as an `OPTIONS` preflight without
    /// [`Cors`](sseio_core::Cors) settings, goes on to the app): the app's own middleware does
    /// not run for SSE streams, so authorization and CORS for them are the server's settings
    /// ([`ServerBuilder::authorize`](sseio_core::ServerBuilder::authorize),
    /// [`ServerBuilder::cors`](sseio_core::ServerBuilder::cors)).
    ///
    /// Each request the app gets carries a [`ConnectionInfo`] and a [`ClientAddr`] extension.
    /// Upgrades (WebSockets) work: once upgraded, a connection is the app's, and the graceful
    /// shutdown no longer waits for it.
    pub fn with_app<B>(self, app: B) -> Serve<B> {
        Serve {
            listener: self.listener,
            server: self.server,
            app,
            shutdown: self.shutdown,
            grace: self.grace,
            health: self.health,
            #[cfg(feature = "tls")]
            tls: self.tls,
        }
    }

    /// Answers liveness on `live` (`200` while the process serves) and readiness on `ready`
    /// (`200` while [`Server::is_ready`], `503` while the server drains or its broker is
    /// unavailable), each with a small JSON body, for an orchestrator's probes; `GET` and
    /// `HEAD` only, ahead of the application's routes. [`listen`] answers them on
    /// [`DEFAULT_LIVENESS_PATH`] and [`DEFAULT_READINESS_PATH`]. Default: off.
    pub fn with_health(mut self, live: impl Into<String>, ready: impl Into<String>) -> Self {
        self.health = Some(HealthPaths {
            live: live.into(),
            ready: ready.into(),
        });
        self
    }

    /// Shuts down gracefully when `signal` completes: refuse new streams with `503` and close
    /// the open ones spread over the grace period ([`Server::shutdown`]); then stop accepting and
    /// close every connection as soon as it is idle, and return once the last one closed.
    ///
    /// While draining, a connection whose stream ended is closed rather than kept for a next
    /// request, and one still waiting for a request when the drain is over is closed then; so
    /// the server returns within the grace period plus the time in-flight non-streaming
    /// responses take, whatever clients do with their kept-alive sockets.
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

    /// Serves every connection over TLS with `tls` (feature `tls`). Default: cleartext.
    ///
    /// The handshake runs in the connection's own task, within
    /// [`TLS_HANDSHAKE_TIMEOUT`](crate::TLS_HANDSHAKE_TIMEOUT); a connection whose handshake
    /// fails or times out is closed, with a `debug` log. ALPN then decides the protocol: `h2` is
    /// served as HTTP/2 (what lets a browser open more than six streams to one origin),
    /// `http/1.1` as HTTP/1.1 with the lean path for SSE streams, and a connection that
    /// negotiated nothing as a cleartext one is. The graceful shutdown covers TLS connections as
    /// it does the others (HTTP/2 ones get a `GOAWAY`).
    #[cfg(feature = "tls")]
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
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
        let mut f = f.debug_struct("Serve");
        f.field("listener", &self.listener)
            .field("server", &self.server)
            .field("graceful_shutdown", &self.shutdown.is_some())
            .field("health", &self.health);
        #[cfg(feature = "tls")]
        f.field("tls", &self.tls);
        f.finish_non_exhaustive()
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
            health,
            #[cfg(feature = "tls")]
            tls,
        } = self;
        Box::pin(async move {
            #[cfg(feature = "tls")]
            let is_tls = tls.is_some();
            #[cfg(not(feature = "tls"))]
            let is_tls = false;
            let app = Health::new(app, server.clone(), health);
            let shared = Arc::new(Shared {
                builders: Builders::new(),
                service: SseioService::new(server.clone(), app),
                local: listener.local_addr()?,
                is_tls,
                #[cfg(feature = "tls")]
                tls,
            });
            // Set once the drain is over: every connection still open closes as soon as it is
            // idle (a lean connection waiting for its next request at once, a hyper one after
            // its response), and the server returns once the last one did.
            let (drained, drain_over) = watch::channel(false);
            let signal = shutdown.unwrap_or_else(|| Box::pin(std::future::pending()));
            // Once the signal comes, the server drains; connections are still accepted meanwhile,
            // so new streams are told `503` and to retry instead of finding the port closed.
            let drain = {
                let server = server.clone();
                async move {
                    signal.await;
                    server.shutdown(grace).await;
                }
            };
            let mut drain = std::pin::pin!(drain);

            loop {
                let (socket, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
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
                let connection = Connection {
                    server: server.clone(),
                    shared: shared.clone(),
                    drain_over: drain_over.clone(),
                };
                // Two kinds of task, so that a cleartext connection's task is not sized for TLS.
                #[cfg(feature = "tls")]
                if let Some(tls) = &shared.tls {
                    tokio::spawn(connection.serve_tls(socket, peer, tls.clone()));
                    continue;
                }
                tokio::spawn(connection.serve(socket, peer));
            }

            drop(listener);
            drop(drain_over);
            let _ = drained.send(true);
            drained.closed().await;
            Ok(())
        })
    }
}

/// What every connection of one server shares: a lean stream holds only this `Arc` of it, so
/// what it costs does not depend on the application's size.
struct Shared<A> {
    builders: Builders,
    /// SSE-IO in front of the application, cloned for each connection that hyper serves.
    service: SseioService<Health<A>>,
    /// The listener's address, for [`ConnectionInfo`].
    local: SocketAddr,
    is_tls: bool,
    #[cfg(feature = "tls")]
    tls: Option<TlsConfig>,
}

/// hyper's connection builders: one that detects the protocol from the first bytes, and one for
/// HTTP/2 that TLS negotiated by ALPN.
struct Builders {
    detect: auto::Builder<TokioExecutor>,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    http2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new() -> Self {
        let mut detect = auto::Builder::new(TokioExecutor::new());
        detect
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        Self {
            http2: detect.clone().http2_only(),
            detect,
        }
    }
}

/// How hyper learns a connection's protocol.
#[derive(Clone, Copy)]
enum Protocol {
    /// From its first bytes: HTTP/1.1, or HTTP/2 with prior knowledge. Cleartext connections,
    /// and TLS ones that negotiated `http/1.1` (whose first bytes then say so) or nothing.
    Detect,
    /// TLS negotiated `h2`.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    Http2,
}

/// One accepted connection and what serving it needs.
struct Connection<A> {
    server: Server,
    shared: Arc<Shared<A>>,
    /// Changes to `true` once the server's drain is over.
    drain_over: watch::Receiver<bool>,
}

impl<A, B> Connection<A>
where
    A: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    A::Future: Send + 'static,
    A::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    /// Serves a TLS connection: the handshake, then HTTP as ALPN decided.
    #[cfg(feature = "tls")]
    async fn serve_tls(mut self, socket: TcpStream, peer: SocketAddr, tls: TlsConfig) {
        let handshake = tokio::select! {
            handshake = tls.accept(socket) => handshake,
            () = drain_over(&mut self.drain_over) => return,
        };
        let stream = match handshake {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, "sseio: TLS handshake failed");
                return;
            }
        };
        if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
            // Nothing for the lean path to look at: every request of an HTTP/2 connection is
            // hyper's.
            self.serve_hyper(Bytes::new(), stream, peer, Protocol::Http2)
                .await;
        } else {
            self.serve(stream, peer).await;
        }
    }

    /// Serves `socket`: lean streams for as long as its requests are lean SSE `GET`s, then hyper.
    /// A cleartext connection's task as it is: a wrapper would hold the connection and the
    /// socket twice, and every idle stream would pay for it.
    async fn serve<S>(mut self, mut socket: S, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // A lean stream that the server ended leaves the connection open for the client's next
        // request, which starts over here; once the drain is over, nobody waits for it.
        loop {
            let first = tokio::select! {
                first = tokio::time::timeout(
                    HEADER_READ_TIMEOUT,
                    lean::read_first(&mut socket, &self.server),
                ) => first,
                () = drain_over(&mut self.drain_over) => return,
            };
            // Out of `first` before the stream starts, so that its room is not kept for as long
            // as the stream lives.
            let request = match first {
                Ok(Ok(First::SseGet(request))) => request,
                Ok(Ok(First::Other(prefix))) => {
                    // Boxed: most connections are lean streams, whose tasks must not be sized
                    // for hyper's.
                    let hyper = self.serve_hyper(prefix, socket, peer, Protocol::Detect);
                    return Box::pin(hyper).await;
                }
                Ok(Err(_)) | Err(_) => return,
            };
            // Boxed: answering is brief, and its state must not stay in the task for as long as
            // the stream lives.
            let answered = Box::pin(lean::answer(
                &mut socket,
                &self.server,
                request,
                ClientAddr(peer.ip()),
            ));
            let (head, body, keep_alive) = match answered.await {
                Ok(lean::Answer::Stream {
                    head,
                    body,
                    keep_alive,
                }) => (head, body, keep_alive),
                Ok(lean::Answer::Replied) => return,
                Err(error) => {
                    tracing::debug!(%error, "sseio: stream connection ended with an error");
                    return;
                }
            };
            match lean::stream(&mut socket, head, body).await {
                // The stream ended complete: the client may send its next request.
                Ok(true) if keep_alive && !self.server.is_shutting_down() => {}
                Ok(_) => return,
                Err(error) => {
                    tracing::debug!(%error, "sseio: stream connection ended with an error");
                    return;
                }
            }
        }
    }

    /// Serves the rest of the connection with hyper, `prefix` (the bytes read so far) first,
    /// shutting it down gracefully once the drain is over.
    async fn serve_hyper<S>(
        mut self,
        prefix: Bytes,
        socket: S,
        peer: SocketAddr,
        protocol: Protocol,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(Replay::new(prefix, socket));
        let shared = &self.shared;
        let connection = ConnectionInfo::new(peer, shared.local).with_tls(shared.is_tls);
        let service = TowerToHyperService::new(FromPeer::new(shared.service.clone(), connection));
        let builder = match protocol {
            Protocol::Detect => &shared.builders.detect,
            Protocol::Http2 => &shared.builders.http2,
        };
        // Boxed: a hyper connection is large, and most connections are lean streams. With
        // upgrades, so that an application's WebSockets work.
        let mut connection = Box::pin(
            builder
                .serve_connection_with_upgrades(io, service)
                .into_owned(),
        );
        let ended = tokio::select! {
            ended = connection.as_mut() => ended,
            () = drain_over(&mut self.drain_over) => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = ended {
            tracing::debug!(%error, "sseio: connection ended with an error");
        }
    }
}

/// Completes once the drain is over (or the server is gone).
async fn drain_over(drain: &mut watch::Receiver<bool>) {
    let _ = drain.wait_for(|over| *over).await;
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
