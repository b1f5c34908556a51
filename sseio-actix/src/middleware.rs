//! The actix middleware: the request's head in, the core's outcome out as an actix response.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::ConnectionType;
use actix_web::{Error, HttpRequest, HttpResponse, HttpResponseBuilder};
use http::Version;
use sseio_core::{Outcome, RequestHead, Server};

use crate::body::Pieces;
use crate::convert::{self, Head};

/// A middleware serving SSE-IO in front of an actix app: requests on the server's path are
/// served by sseio, every other request goes on to the app's routes unchanged.
///
/// `App::new().route("/hello", web::get().to(hello)).wrap(SseioMiddleware::new(server))`
///
/// A request it serves (the stream, a `400` / `405` / `503` rejection with a JSON body, or the
/// headers for `HEAD`) does not reach the app. An `OPTIONS` preflight on the SSE path goes on to
/// the app unless the server has `Cors` settings.
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

impl<S, B> Transform<S, ServiceRequest> for SseioMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = SseioMiddlewareService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(SseioMiddlewareService {
            server: self.server.clone(),
            service: Rc::new(service),
        }))
    }
}

/// The service made by [`SseioMiddleware`]: SSE-IO on the server's path, the wrapped service
/// for the rest.
#[derive(Debug)]
pub struct SseioMiddlewareService<S> {
    server: Server,
    service: Rc<S>,
}

impl<S, B> Service<ServiceRequest> for SseioMiddlewareService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Error>>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        // The cheap check first, so the app's own requests cost one path match.
        if !self.server.matches(req.path()) {
            let response = self.service.call(req);
            return Box::pin(
                async move { response.await.map(ServiceResponse::map_into_left_body) },
            );
        }
        let server = self.server.clone();
        let service = self.service.clone();
        Box::pin(async move {
            match respond(&server, req.request()).await {
                Some(response) => Ok(req.into_response(response).map_into_right_body()),
                None => service
                    .call(req)
                    .await
                    .map(ServiceResponse::map_into_left_body),
            }
        })
    }
}

/// The core's answer to `req` as an actix response; `None` when the request is not the
/// server's (another path, or an `OPTIONS` preflight left to the app).
///
/// [`SseioMiddleware`] is this in front of the app's routes. To serve the SSE path from a route
/// of your own instead, answer with it from a handler:
///
/// ```rust,no_run
/// use actix_web::{App, HttpRequest, HttpResponse, web};
/// use sseio_actix::Server;
///
/// async fn sse(req: HttpRequest, server: web::Data<Server>) -> HttpResponse {
///     sseio_actix::respond(&server, &req)
///         .await
///         .unwrap_or_else(|| HttpResponse::NotFound().finish())
/// }
///
/// # fn app(server: Server) {
/// let app = App::new()
///     .app_data(web::Data::new(server))
///     .route("/user/{userId}/events", web::route().to(sse));
/// # }
/// ```
///
/// The path the core matches is the request's whole path, also under a `web::scope`.
pub async fn respond(server: &Server, req: &HttpRequest) -> Option<HttpResponse> {
    let head = Head::from_request(req)?;
    let mut request = RequestHead::new(&head.method, &head.uri, head.version, &head.headers);
    if let Some(peer) = req.peer_addr() {
        request = request.with_client_addr(peer.ip());
    }
    let outcome = server.handle(request).await;
    match outcome {
        Outcome::NotOurs => None,
        Outcome::Reply(response) => {
            let (parts, bytes) = response.into_parts();
            Some(builder(&parts).body(bytes))
        }
        Outcome::Stream(response) => {
            let (parts, stream) = response.into_parts();
            // Dropping the body (the client went away, or the server stops) closes the
            // connection in the core.
            let mut response = builder(&parts).streaming(Pieces::new(stream));
            if head.version < Version::HTTP_11 {
                // actix-http chunks a streamed body whatever the request's version; HTTP/1.0 has
                // no chunked encoding, so the stream's end must be its connection's close.
                let head = response.head_mut();
                head.no_chunking(true);
                head.set_connection_type(ConnectionType::Close);
            }
            Some(response)
        }
    }
}

/// A response builder with the status and headers the core chose.
fn builder(parts: &http::response::Parts) -> HttpResponseBuilder {
    let mut builder = HttpResponse::build(convert::status(parts.status));
    for header in convert::headers(&parts.headers) {
        builder.append_header(header);
    }
    builder
}

#[cfg(test)]
mod tests {
    use actix_web::body::BoxBody;
    use actix_web::http::{ConnectionType, Method, StatusCode, Version, header};
    use actix_web::test::{TestRequest, call_service, init_service, read_body};
    use actix_web::{App, web};

    use super::*;

    async fn app() -> &'static str {
        "app"
    }

    fn server() -> Server {
        Server::new("/sseio").unwrap()
    }

    /// `req` through an app whose every route answers `app`, behind the middleware.
    async fn call(req: TestRequest) -> ServiceResponse<EitherBody<BoxBody>> {
        let app = App::new()
            .wrap(SseioMiddleware::new(server()))
            .default_service(web::to(app));
        call_service(&init_service(app).await, req.to_request()).await
    }

    #[tokio::test]
    async fn middleware_streams_on_the_sse_path() {
        let res = call(TestRequest::get().uri("/sseio?clientId=c&events=e")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers().get(header::CONTENT_TYPE).unwrap(),
            "text/event-stream"
        );
    }

    #[tokio::test]
    async fn middleware_passes_other_paths_and_options_to_the_app() {
        let res = call(TestRequest::get().uri("/elsewhere")).await;
        assert_eq!(read_body(res).await, "app");
        let res = call(TestRequest::default().method(Method::OPTIONS).uri("/sseio")).await;
        assert_eq!(read_body(res).await, "app");
    }

    #[tokio::test]
    async fn middleware_rejects_a_bad_request_with_json() {
        let res = call(TestRequest::get().uri("/sseio?events=e")).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            res.headers().get(header::CONTENT_TYPE).unwrap(),
            "application/json"
        );
    }

    #[tokio::test]
    async fn respond_answers_none_off_the_sse_path() {
        let req = TestRequest::get().uri("/elsewhere").to_http_request();
        assert!(respond(&server(), &req).await.is_none());
    }

    #[tokio::test]
    async fn headers_keep_their_order_and_repeats() {
        let req = TestRequest::get()
            .uri("/sseio?clientId=c&events=e")
            .insert_header(("x-a", "1"))
            .append_header(("x-a", "2"))
            .to_http_request();
        let head = Head::from_request(&req).unwrap();
        let values: Vec<_> = head.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(head.uri, "/sseio?clientId=c&events=e");
        assert_eq!(head.method, http::Method::GET);
    }

    /// An HTTP/1.0 client could not read its stream, nor see it end.
    ///
    /// actix-http frames a streamed body in chunks whatever the request's version, so a client
    /// speaking HTTP/1.0 (which has no chunked encoding: old clients, simple proxies) read the
    /// chunk-size lines as part of the event stream; and one that had asked to keep its
    /// connection never saw the stream end, since the last chunk ended the response but not the
    /// connection. Now a stream to an HTTP/1.0 client is not chunked and ends with its connection.
    #[tokio::test]
    async fn http10_stream_is_not_chunked_and_ends_with_its_connection() {
        let res = call(
            TestRequest::get()
                .uri("/sseio?clientId=c&events=e")
                .version(Version::HTTP_10)
                .insert_header((header::CONNECTION, "keep-alive")),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        let head = res.response().head();
        assert!(!head.chunked(), "an HTTP/1.0 stream is not chunked");
        assert_eq!(head.connection_type(), ConnectionType::Close);

        let res = call(TestRequest::get().uri("/sseio?clientId=c&events=e")).await;
        let head = res.response().head();
        assert!(head.chunked(), "an HTTP/1.1 stream is chunked");
        assert_eq!(head.connection_type(), ConnectionType::KeepAlive);
    }
}
