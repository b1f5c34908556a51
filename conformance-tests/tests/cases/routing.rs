//! SSE-IO mounts beside the application's own routes and claims only its own path.

use conformance_tests::Harness;
use conformance_tests::control;

use conformance_tests::http1::Request;

use super::{WAIT, get_body, log, new_id, request, within};

super::registry::case_table! {
    hello_route_beside_sseio,
    unknown_path_is_404,
    near_miss_paths_are_not_the_sse_path,
    control_send_unknown_event_is_404,
}

/// `GET /hello` is the host application's own route and answers `hello`.
pub async fn hello_route_beside_sseio(h: &Harness) {
    let (response, body) = get_body(h, "/hello").await;
    assert_eq!(response.status(), 200, "GET /hello");
    assert_eq!(String::from_utf8_lossy(&body), "hello", "GET /hello body");
}

/// A path nobody serves is the framework's `404`.
pub async fn unknown_path_is_404(h: &Harness) {
    let target = format!("/nothing-here-{}", new_id());
    let response = request(h, Request::get(&target).header("Connection", "close")).await;
    assert_eq!(response.status(), 404, "GET {target}");
}

/// Paths that only resemble the pattern `/files/:guid/pull` (one segment too many, or the
/// parameter missing) are not the SSE path: `404`, and no stream.
pub async fn near_miss_paths_are_not_the_sse_path(h: &Harness) {
    for path in [
        "/files/{guid}/pull/extra",
        "/files/pull",
        "/files/{guid}/pul",
    ] {
        let (guid, client) = (new_id(), new_id());
        let target = format!(
            "{}?clientId={client}&events=normal-event",
            path.replace("{guid}", &guid)
        );
        let response = request(h, Request::get(&target).header("Connection", "close")).await;
        assert_eq!(response.status(), 404, "GET {target} is not the SSE path");
        drop(response);
        let log = log(h).await;
        assert_eq!(
            control::count_conn(&log, "conn:create", &client),
            0,
            "GET {target} must not create a connection"
        );
    }
}

/// `POST /_control/send` for an event without a handler answers `404`.
pub async fn control_send_unknown_event_is_404(h: &Harness) {
    let event = format!("no-such-event-{}", new_id());
    let outcome = within(
        WAIT,
        "POST /_control/send",
        control::send_text(h, &event, &new_id(), "x"),
    )
    .await
    .unwrap_or_else(|e| panic!("POST /_control/send failed: {e}"));
    assert_eq!(outcome.status, 404, "send to unknown event {event}");
}
