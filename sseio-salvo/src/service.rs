//! A salvo `Service` as a tower service, to serve a salvo app with sseio's standalone server.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use salvo::conn::SocketAddr;
use salvo::http::ResBody;
use salvo::http::uri::Scheme;
use salvo::hyper::body::Incoming;
use salvo::{ConnCtrl, hyper};
use sseio_hyper::ConnectionInfo;
use tower_service::Service;

/// Turns a salvo app (its `Service`, or a `Router`) into the tower service that
/// [`sseio_hyper::Serve::with_app`] serves: `sseio_hyper::serve(listener, server)
/// .with_app(sseio_salvo::tower_service(service))`.
///
/// Each request is handled as salvo's own server handles it (the `Service`'s hoops, router and
/// catcher, the request's extensions kept), with `Request::remote_addr`, `Request::local_addr`
/// and `Request::scheme` from the [`ConnectionInfo`] the standalone server sets, so salvo's
/// handlers read them unchanged. Under a server that sets no [`ConnectionInfo`], they are
/// salvo's unknown address and `http`.
///
/// Salvo's own server settings do not apply: its `FuseConfig` (the standalone server has a
/// 30-second limit for request heads, and no idle timeout of its own) and its `Alt-Svc` header
/// for HTTP/3. This runs salvo's `Service::hyper_handler`, the (hidden) entry point its own
/// servers use, once per request.
pub fn tower_service(service: impl Into<salvo::Service>) -> TowerService {
    TowerService {
        service: Arc::new(service.into()),
    }
}

/// A salvo `Service` as a tower service of `http::Request<hyper::body::Incoming>`; made by
/// [`tower_service()`]. Cheap to clone: the `Service` is shared.
#[derive(Clone)]
pub struct TowerService {
    service: Arc<salvo::Service>,
}

impl fmt::Debug for TowerService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TowerService")
            .field("service", &self.service)
            .finish()
    }
}

/// The response future of [`TowerService`].
pub type TowerFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<ResBody>, hyper::Error>> + Send>>;

impl Service<http::Request<Incoming>> for TowerService {
    type Response = http::Response<ResBody>;
    type Error = hyper::Error;
    type Future = TowerFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Incoming>) -> TowerFuture {
        let connection = request.extensions().get::<ConnectionInfo>().copied();
        let (local, remote, scheme) = match connection {
            Some(connection) => (
                SocketAddr::from(connection.local()),
                SocketAddr::from(connection.peer()),
                connection.scheme(),
            ),
            None => (SocketAddr::Unknown, SocketAddr::Unknown, Scheme::HTTP),
        };
        let handler =
            self.service
                .hyper_handler(local, remote, scheme, None, ConnCtrl::new(), None);
        hyper::service::Service::call(&handler, request)
    }
}
