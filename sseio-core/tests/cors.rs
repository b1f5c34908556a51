//! CORS on the SSE path: preflights, allowed and refused origins, and nothing when it is off.

use http::{Method, Request, StatusCode};
use sseio_core::{Cors, Outcome, Server};

fn request(method: Method, origin: Option<&str>) -> Request<()> {
    let mut builder = Request::builder()
        .method(method)
        .uri("/s?clientId=c&events=e");
    if let Some(origin) = origin {
        builder = builder
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header(
                "access-control-request-headers",
                "cache-control, last-event-id",
            );
    }
    builder.body(()).unwrap()
}

fn server(cors: Option<Cors>) -> Server {
    let mut builder = Server::builder().path("/s");
    if let Some(cors) = cors {
        builder = builder.cors(cors);
    }
    builder.build().unwrap()
}

fn app_cors() -> Cors {
    Cors::new()
        .allow_origin("https://app.example")
        .allow_credentials(true)
}

#[tokio::test]
async fn preflight_from_an_allowed_origin_is_204_with_the_asked_headers() {
    let server = server(Some(app_cors()));
    let outcome = server
        .handle((&request(Method::OPTIONS, Some("https://app.example"))).into())
        .await;
    let Outcome::Reply(response) = outcome else {
        panic!("a preflight is answered");
    };
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let headers = response.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert_eq!(
        headers["access-control-allow-headers"],
        "cache-control, last-event-id"
    );
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("GET")
    );
}

#[tokio::test]
async fn stream_from_an_allowed_origin_carries_cors_headers() {
    let server = server(Some(app_cors()));
    let outcome = server
        .handle((&request(Method::GET, Some("https://app.example"))).into())
        .await;
    let Outcome::Stream(response) = outcome else {
        panic!("the stream opens");
    };
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(response.headers()["vary"], "Origin");
}

#[tokio::test]
async fn other_origins_are_refused_with_403_json() {
    let server = server(Some(app_cors()));
    for method in [Method::GET, Method::OPTIONS] {
        let outcome = server
            .handle((&request(method.clone(), Some("https://evil.example"))).into())
            .await;
        let Outcome::Reply(response) = outcome else {
            panic!("{method} from another origin is refused");
        };
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{method}");
        assert_eq!(response.headers()["content-type"], "application/json");
        assert!(
            !response
                .headers()
                .contains_key("access-control-allow-origin")
        );
    }
    assert_eq!(server.connection_count(), 0);
}

#[tokio::test]
async fn requests_without_origin_are_served_as_before() {
    let server = server(Some(app_cors()));
    let outcome = server.handle((&request(Method::GET, None)).into()).await;
    let Outcome::Stream(response) = outcome else {
        panic!("the stream opens");
    };
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
}

#[tokio::test]
async fn without_cors_options_is_left_to_the_app() {
    let server = server(None);
    let outcome = server
        .handle((&request(Method::OPTIONS, Some("https://app.example"))).into())
        .await;
    assert!(matches!(outcome, Outcome::NotOurs));
}
