//! What the standalone server tells the application of the connection each request came on.

use std::net::SocketAddr;
use std::task::{Context, Poll};

use http::Request;
use http::uri::Scheme;
use tower_service::Service;

use crate::service::ClientAddr;

/// The connection a request came on, as a request extension: the standalone server ([`serve`],
/// [`listen`]) sets it on every request it hands the application, beside [`ClientAddr`].
///
/// A framework's own server tells its handlers the peer address its own way (axum's
/// `ConnectInfo`, warp's `warp::addr::remote`, poem's `RemoteAddr`, salvo's
/// `Request::remote_addr`). Served by sseio's server, an application reads this instead: with
/// axum's `Extension<ConnectionInfo>`, with warp's `warp::ext::get::<ConnectionInfo>()`; the
/// glue of `sseio-poem` and `sseio-salvo` turns it into poem's and salvo's own addresses, so
/// their extractors work unchanged.
///
/// [`serve`]: crate::serve
/// [`listen`]: crate::listen
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    peer: SocketAddr,
    local: SocketAddr,
    tls: bool,
}

impl ConnectionInfo {
    /// A cleartext connection from `peer` to a server listening on `local`.
    pub fn new(peer: SocketAddr, local: SocketAddr) -> Self {
        Self {
            peer,
            local,
            tls: false,
        }
    }

    /// The same connection, over TLS when `tls`.
    #[must_use]
    pub fn with_tls(self, tls: bool) -> Self {
        Self { tls, ..self }
    }

    /// The client's socket address: the TCP peer (a proxy's, behind a proxy).
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The address the server's listener is bound to, as
    /// [`TcpListener::local_addr`](tokio::net::TcpListener::local_addr) gives it (so
    /// `0.0.0.0:<port>` for a server bound on every interface), as poem's and salvo's own
    /// servers report it.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Whether the connection is TLS ([`Serve::with_tls`](crate::Serve::with_tls)).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The connection's scheme: `https` over TLS, else `http`.
    pub fn scheme(&self) -> Scheme {
        if self.tls {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        }
    }
}

/// A connection's service: each request carries the connection as its [`ConnectionInfo`], and
/// its peer as its [`ClientAddr`].
#[derive(Clone)]
pub(crate) struct FromPeer<S> {
    inner: S,
    connection: ConnectionInfo,
}

impl<S> FromPeer<S> {
    pub(crate) fn new(inner: S, connection: ConnectionInfo) -> Self {
        Self { inner, connection }
    }
}

impl<S, B> Service<Request<B>> for FromPeer<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> S::Future {
        let extensions = request.extensions_mut();
        extensions.insert(ClientAddr(self.connection.peer.ip()));
        extensions.insert(self.connection);
        self.inner.call(request)
    }
}
