//! The warp filter: the request's parts in, the core's outcome out as a warp reply.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use http::{HeaderMap, Method, Uri, Version};
use sseio_core::{Outcome, RequestHead, Server};
use warp::Filter;
use warp::filters::path::FullPath;
use warp::reject::Rejection;
use warp::reply::{Reply, Response};

/// A filter that serves `server`'s SSE path and rejects every other request as not found, so
/// that `filter(server).or(app_routes)` hands those to your routes.
///
/// On the SSE path it answers everything itself: the stream, a `400` / `405` / `503` rejection
/// with a JSON body, or the headers for `HEAD`. The one exception is `OPTIONS` when the server has
/// no [`Cors`](sseio_core::Cors) settings: it is rejected as not found so that your own CORS
/// handling answers the preflight.
///
/// warp shows filters no HTTP version, so the request is given to the core as HTTP/1.1: an
/// HTTP/1.1 stream gets `Connection: keep-alive`, and hyper removes that header from HTTP/2
/// responses, where it is not allowed.
pub fn filter(
    server: Server,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    warp::path::full()
        .and_then(move |path: FullPath| on_sse_path(server.clone(), path))
        .untuple_one()
        .and(warp::method())
        .and(raw_query())
        .and(warp::header::headers_cloned())
        .and(warp::addr::remote())
        .and_then(serve)
}

/// Passes the request on only when it is on the SSE path, so other requests cost one match.
fn on_sse_path(
    server: Server,
    path: FullPath,
) -> impl Future<Output = Result<(Server, FullPath), Rejection>> {
    let ours = server.matches(path.as_str());
    async move {
        if ours {
            Ok((server, path))
        } else {
            Err(warp::reject::not_found())
        }
    }
}

/// The raw query string, `None` when the request has none (warp's own filter rejects then).
fn raw_query() -> impl Filter<Extract = (Option<String>,), Error = Infallible> + Clone {
    warp::query::raw()
        .map(Some)
        .or(warp::any().map(|| None))
        .unify()
}

async fn serve(
    server: Server,
    path: FullPath,
    method: Method,
    query: Option<String>,
    headers: HeaderMap,
    peer: Option<SocketAddr>,
) -> Result<Response, Rejection> {
    let target = match query {
        Some(query) => format!("{}?{query}", path.as_str()),
        None => path.as_str().to_owned(),
    };
    // warp accepted this path and query from hyper, so they form a valid target; if they ever
    // did not, the request is simply not ours.
    let uri: Uri = target.parse().map_err(|_| warp::reject::not_found())?;
    let mut head = RequestHead::new(&method, &uri, Version::HTTP_11, &headers);
    if let Some(peer) = peer {
        head = head.with_client_addr(peer.ip());
    }
    match server.handle(head).await {
        Outcome::NotOurs => Err(warp::reject::not_found()),
        Outcome::Reply(response) => Ok(response.into_response()),
        Outcome::Stream(response) => {
            let (parts, stream) = response.into_parts();
            let body = warp::reply::stream(stream).into_response().into_body();
            Ok(Response::from_parts(parts, body))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
        let server = Server::new("/sseio").unwrap();
        let app = warp::any().map(|| "app".into_response());
        filter(server).or(app).unify()
    }

    #[tokio::test]
    async fn streams_on_the_sse_path() {
        let response = warp::test::request()
            .path("/sseio?clientId=c&events=e")
            .filter(&routes())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
    }

    #[tokio::test]
    async fn other_paths_and_options_fall_through_to_the_next_filter() {
        let response = warp::test::request().path("/hello").reply(&routes()).await;
        assert_eq!(response.body(), "app");
        let preflight = warp::test::request()
            .method("OPTIONS")
            .path("/sseio")
            .reply(&routes())
            .await;
        assert_eq!(preflight.body(), "app");
    }

    #[tokio::test]
    async fn rejects_a_bad_request_itself() {
        let response = warp::test::request()
            .path("/sseio?events=e")
            .reply(&routes())
            .await;
        assert_eq!(response.status(), 400);
        assert_eq!(response.headers()["content-type"], "application/json");
    }
}
