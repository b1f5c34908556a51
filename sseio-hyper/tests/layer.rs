//! `SseioLayer` in front of an axum app: the SSE path is sseio's, everything else the app's.

use axum::Router;
use axum::body::Body;
use axum::routing::{get, options};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use sseio_hyper::{Context, HandlerOptions, Server, SseioLayer};
use tower_service::Service;

fn app() -> Router {
    let server = Server::new("/sse/:room").unwrap();
    server
        .register_event_handler(
            "e",
            HandlerOptions::new(|ctx: &Context| ctx.param("room").unwrap_or_default().to_owned()),
        )
        .unwrap();
    Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route("/sse/{room}", options(|| async { "the app's preflight" }))
        .layer(SseioLayer::new(server))
}

async fn call(method: &str, uri: &str) -> http::Response<axum::body::Body> {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    let response = app().call(request).await.unwrap();
    response.map(Body::new)
}

async fn text(response: http::Response<Body>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn other_paths_reach_the_app() {
    let hello = call("GET", "/hello").await;
    assert_eq!(hello.status(), StatusCode::OK);
    assert_eq!(text(hello).await, "hello");
    assert_eq!(call("GET", "/nope").await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_sse_path_opens_a_stream_that_starts_at_once() {
    let response = call("GET", "/sse/1?clientId=c&events=e").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.starts_with(b"\nretry: "), "{first:?}");
}

#[tokio::test]
async fn rejections_are_answered_by_sseio() {
    let response = call("GET", "/sse/1?events=e").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(text(response).await.contains("clientId"));
    let post = call("POST", "/sse/1?clientId=c&events=e").await;
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn options_on_the_sse_path_is_left_to_the_app() {
    let response = call("OPTIONS", "/sse/1").await;
    assert_eq!(text(response).await, "the app's preflight");
}
