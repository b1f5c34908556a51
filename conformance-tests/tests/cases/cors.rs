//! CORS with `SSEIO_CORS_ORIGIN` (`conformance-tests/HARNESS.md`): the preflight the official
//! client's custom headers trigger is answered `204`, streams from that origin carry the CORS
//! headers, and other origins are refused with `403` JSON.

use conformance_tests::Harness;

use super::*;

super::registry::case_table! {
    cors_preflight_is_204 needs [Settings],
    cors_streams_for_the_allowed_origin_only needs [Settings],
}

const ORIGIN: &str = "https://app.example";

async fn cors_harness(h: &Harness) -> Harness {
    h.with_env(&[("SSEIO_CORS_ORIGIN", ORIGIN)]).await
}

/// `OPTIONS` on the SSE path from the allowed origin: `204` with the CORS headers.
pub async fn cors_preflight_is_204(h: &Harness) {
    let h = cors_harness(h).await;
    let target = sse_target(&new_id(), &new_id(), &["normal-event"]);
    let response = request(
        &h,
        Request::new("OPTIONS", target)
            .header("Origin", ORIGIN)
            .header("Access-Control-Request-Method", "GET")
            .header("Access-Control-Request-Headers", "cache-control")
            .header("Connection", "close"),
    )
    .await;
    assert_eq!(response.status(), 204, "headers {:?}", response.headers());
    assert_eq!(response.header("access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(
        response.header("access-control-allow-credentials"),
        Some("true")
    );
    let allowed = response
        .header("access-control-allow-headers")
        .unwrap_or("");
    assert!(
        allowed.to_ascii_lowercase().contains("cache-control"),
        "{allowed}"
    );
}

/// A stream opened from the allowed origin carries `Access-Control-Allow-Origin`; another
/// origin is refused with `403` JSON.
pub async fn cors_streams_for_the_allowed_origin_only(h: &Harness) {
    let h = cors_harness(h).await;
    let target = sse_target(&new_id(), &new_id(), &["normal-event"]);
    let allowed = request(&h, Request::get(target.clone()).header("Origin", ORIGIN)).await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.header("access-control-allow-origin"), Some(ORIGIN));
    allowed.close().await;
    let mut refused = request(
        &h,
        Request::get(target)
            .header("Origin", "https://evil.example")
            .header("Connection", "close"),
    )
    .await;
    assert_eq!(refused.status(), 403);
    let body = refused.read_to_end().await.unwrap_or_default();
    let json: serde_json::Value = serde_json::from_slice(&body).expect("a JSON body");
    assert!(json["message"].is_string());
}
