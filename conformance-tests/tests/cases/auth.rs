//! Authentication with `SSEIO_AUTH_TOKEN` (`conformance-tests/HARNESS.md`): a stream needs the
//! bearer token or the cookie `sseio_token`, else `401` JSON; `forbidden-event` is refused for
//! everyone with `403` JSON naming it.

use conformance_tests::Harness;

use super::*;

super::registry::case_table! {
    auth_token_is_required needs [Settings],
    forbidden_event_is_403_naming_it needs [Settings],
}

const TOKEN: &str = "t0ken";

async fn auth_harness(h: &Harness) -> Harness {
    h.with_env(&[("SSEIO_AUTH_TOKEN", TOKEN)]).await
}

async fn refused(h: &Harness, request: Request, status: u16) -> serde_json::Value {
    let what = format!("{} {}", request.method(), request.target());
    let mut response = super::request(h, request.header("Connection", "close")).await;
    assert_eq!(
        response.status(),
        status,
        "{what}: {:?}",
        response.headers()
    );
    let body = within(WAIT, "the refusal's body", response.read_to_end())
        .await
        .unwrap_or_default();
    let json: serde_json::Value = serde_json::from_slice(&body).expect("a JSON body");
    assert!(json["message"].is_string(), "{what}: {json}");
    json
}

/// Without the token: `401` JSON and no `conn:create`; with the bearer token or the cookie: a
/// stream.
pub async fn auth_token_is_required(h: &Harness) {
    let h = auth_harness(h).await;
    let client_id = new_id();
    let target = sse_target(&new_id(), &client_id, &["normal-event"]);
    refused(&h, Request::get(target.clone()), 401).await;
    let wrong = Request::get(target.clone()).header("Authorization", "Bearer nope");
    refused(&h, wrong, 401).await;
    let bearer = open_stream_with(&h, &target, ("Authorization", &format!("Bearer {TOKEN}"))).await;
    bearer.close().await;
    let cookie = format!("theme=dark; sseio_token={TOKEN}");
    let target = sse_target(&new_id(), &new_id(), &["normal-event"]);
    let by_cookie = open_stream_with(&h, &target, ("Cookie", &cookie)).await;
    by_cookie.close().await;
}

/// `forbidden-event` is refused with `403` JSON naming it, even with the token.
pub async fn forbidden_event_is_403_naming_it(h: &Harness) {
    let h = auth_harness(h).await;
    let target = sse_target(&new_id(), &new_id(), &["normal-event", "forbidden-event"]);
    let request = Request::get(target).header("Authorization", format!("Bearer {TOKEN}"));
    let json = refused(&h, request, 403).await;
    let message = json["message"].as_str().unwrap_or_default();
    assert!(message.contains("forbidden-event"), "{message}");
}

async fn open_stream_with(h: &Harness, target: &str, header: (&str, &str)) -> SseStream {
    let response = request(
        h,
        Request::get(target)
            .header("Accept", "text/event-stream")
            .header(header.0, header.1),
    )
    .await;
    assert_eq!(
        response.status(),
        200,
        "GET {target}: {:?}",
        response.headers()
    );
    SseStream::http1(response)
}
