//! A poem endpoint as a tower service, to serve a poem app with sseio's standalone server.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, IntoEndpoint};
use sseio_hyper::ConnectionInfo;
use tower_service::Service;

/// Turns a poem app (a `Route`, any endpoint) into the tower service that
/// [`sseio_hyper::Serve::with_app`] serves: `sseio_hyper::serve(listener, server)
/// .with_app(sseio_poem::tower_service(app))`.
///
/// Each request becomes a poem request as poem's own server makes it: its extensions kept, its
/// `OnUpgrade` taken over (so poem's WebSockets work), and its [`RemoteAddr`], [`LocalAddr`]
/// and scheme from the [`ConnectionInfo`] the standalone server sets, so poem's extractors of
/// them work unchanged. Under a server that sets no [`ConnectionInfo`], they are poem's
/// defaults (an empty custom address, `http`).
pub fn tower_service<E>(app: E) -> TowerService<E::Endpoint>
where
    E: IntoEndpoint,
{
    TowerService {
        endpoint: Arc::new(app.into_endpoint()),
    }
}

/// A poem endpoint as a tower service of `http::Request<hyper::body::Incoming>`; made by
/// [`tower_service()`]. Cheap to clone: the endpoint is shared.
pub struct TowerService<E> {
    endpoint: Arc<E>,
}

impl<E> Clone for TowerService<E> {
    fn clone(&self) -> Self {
        Self {
            endpoint: self.endpoint.clone(),
        }
    }
}

impl<E> fmt::Debug for TowerService<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TowerService").finish_non_exhaustive()
    }
}

/// The response future of [`TowerService`].
pub type TowerFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<TowerBody>, Infallible>> + Send>>;

/// The response body of [`TowerService`]: poem's body.
pub type TowerBody = BoxBody<Bytes, io::Error>;

impl<E> Service<http::Request<Incoming>> for TowerService<E>
where
    E: Endpoint + 'static,
{
    type Response = http::Response<TowerBody>;
    type Error = Infallible;
    type Future = TowerFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Incoming>) -> TowerFuture {
        let connection = request.extensions().get::<ConnectionInfo>().copied();
        let (local, remote, scheme) = match connection {
            Some(connection) => (
                LocalAddr(connection.local().into()),
                RemoteAddr(connection.peer().into()),
                connection.scheme(),
            ),
            None => (LocalAddr::default(), RemoteAddr::default(), Scheme::HTTP),
        };
        let request = poem::Request::from((request, local, remote, scheme));
        let endpoint = self.endpoint.clone();
        Box::pin(async move { Ok(endpoint.get_response(request).await.into()) })
    }
}
