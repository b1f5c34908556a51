//! The salvo handler: the request's head in, the core's outcome written to the response.

use salvo::http::StatusCode;
use salvo::http::response::Parts;
use salvo::{Depot, FlowCtrl, Handler, Request, Response, async_trait};
use sseio_core::{Outcome, RequestHead, Server};

/// A salvo handler serving SSE-IO, usable two ways:
///
/// - as a hoop on the `Service`, in front of the whole app:
///   `Service::new(router).hoop(SseioHandler::new(server))`. Requests that are not the server's
///   go on to the app's routes. (A hoop on a `Router` only runs once one of that router's routes
///   matched, so put it on the `Service`.)
/// - on a router path, as its goal:
///   `Router::with_path("files/{guid}/pull").goal(SseioHandler::new(server))`. A request the
///   server does not take (an `OPTIONS` preflight your CORS hoop did not answer, or a path that
///   differs from the server's pattern) gets `404`.
///
/// A request it serves (the stream, a `400` / `405` / `503` rejection with a JSON body, or the
/// headers for `HEAD`) ends the chain: the handlers after it do not run.
#[derive(Debug, Clone)]
pub struct SseioHandler {
    server: Server,
}

impl SseioHandler {
    /// A handler serving `server`.
    pub fn new(server: Server) -> Self {
        Self { server }
    }
}

#[async_trait]
impl Handler for SseioHandler {
    async fn handle(
        &self,
        req: &mut Request,
        _depot: &mut Depot,
        res: &mut Response,
        ctrl: &mut FlowCtrl,
    ) {
        let outcome = if self.server.matches(req.uri().path()) {
            let mut head = RequestHead::new(req.method(), req.uri(), req.version(), req.headers());
            if let Some(peer) = req.remote_addr().ip() {
                head = head.with_client_addr(peer);
            }
            self.server.handle(head).await
        } else {
            Outcome::NotOurs
        };
        match outcome {
            Outcome::NotOurs => {
                // As a hoop, the chain goes on. As a goal, salvo would answer `200` with an empty
                // body; an error status that salvo already chose (`404`, `405`) is kept.
                if !ctrl.has_next() && !res.is_stamped() {
                    res.status_code(StatusCode::NOT_FOUND);
                }
                return;
            }
            Outcome::Reply(response) => {
                let (parts, bytes) = response.into_parts();
                write_head(res, parts);
                res.body(bytes);
            }
            Outcome::Stream(response) => {
                let (parts, stream) = response.into_parts();
                write_head(res, parts);
                res.stream(stream);
            }
        }
        ctrl.skip_rest();
    }
}

fn write_head(res: &mut Response, parts: Parts) {
    res.status_code(parts.status);
    res.headers_mut().extend(parts.headers);
}

#[cfg(test)]
mod tests {
    use salvo::http::Method;
    use salvo::http::uri::Uri;

    use super::*;

    /// Runs `handler` as the last handler of a chain (a goal), like salvo does after a route
    /// matched and set the default `200`.
    async fn run_as_goal(handler: SseioHandler, method: Method, target: &'static str) -> Response {
        let mut req = Request::new();
        *req.method_mut() = method;
        *req.uri_mut() = Uri::from_static(target);
        let mut res = Response::new();
        res.status_code(StatusCode::OK);
        let mut ctrl = FlowCtrl::new(vec![std::sync::Arc::new(handler)]);
        ctrl.call_next(&mut req, &mut Depot::new(), &mut res).await;
        res
    }

    #[tokio::test]
    async fn goal_streams_on_the_sse_path() {
        let handler = SseioHandler::new(Server::new("/sseio").unwrap());
        let res = run_as_goal(handler, Method::GET, "/sseio?clientId=c&events=e").await;
        assert_eq!(res.status_code, Some(StatusCode::OK));
        assert_eq!(res.headers()["content-type"], "text/event-stream");
    }

    #[tokio::test]
    async fn goal_answers_404_for_a_request_it_does_not_take() {
        let handler = SseioHandler::new(Server::new("/sseio").unwrap());
        let res = run_as_goal(handler.clone(), Method::GET, "/elsewhere").await;
        assert_eq!(res.status_code, Some(StatusCode::NOT_FOUND));
        let res = run_as_goal(handler, Method::OPTIONS, "/sseio").await;
        assert_eq!(res.status_code, Some(StatusCode::NOT_FOUND));
    }

    #[tokio::test]
    async fn goal_rejects_a_bad_request_with_json() {
        let handler = SseioHandler::new(Server::new("/sseio").unwrap());
        let res = run_as_goal(handler, Method::GET, "/sseio?clientId=c").await;
        assert_eq!(res.status_code, Some(StatusCode::BAD_REQUEST));
        assert_eq!(res.headers()["content-type"], "application/json");
    }
}
