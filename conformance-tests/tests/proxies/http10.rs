//! An HTTP/1.0 client talking to the server directly, as nginx does by default
//! (`docs/nginx/minimal.conf`) and as old clients and simple proxies do.

use conformance_tests::Harness;
use conformance_tests::control;
use conformance_tests::http1::Request;
use conformance_tests::sse::SseStream;

use crate::cases::*;

crate::cases::registry::case_table! {
    http10_client_gets_a_readable_stream,
}

/// An HTTP/1.0 `GET` on the SSE path, sent bare (no `Host`, no other header) and as a client
/// that asks to keep its connection (`Host`, `Connection: keep-alive`), gets a stream it can
/// read: `200`, `text/event-stream`, a body without `Transfer-Encoding` (HTTP/1.0 has no chunked
/// encoding: such a client would read the chunk-size lines as part of the stream) and without
/// `Content-Length`, so the body is delimited by the connection's close. A message sent to the
/// client arrives, and when the server ends the stream the connection closes, which is how the
/// client sees the end (and an `EventSource` reconnects).
pub async fn http10_client_gets_a_readable_stream(h: &Harness) {
    for (how, headers) in [
        ("bare", &[][..]),
        (
            "asking for keep-alive",
            &[("Host", h.authority()), ("Connection", "keep-alive")][..],
        ),
    ] {
        let (guid, client) = (new_id(), new_id());
        let target = sse_target(&guid, &client, &["normal-event"]);
        let mut get = Request::get(target.as_str()).http10();
        for (name, value) in headers {
            get = get.header(*name, *value);
        }
        let response = request(h, get).await;
        let who = format!("an HTTP/1.0 GET ({how})");
        assert_eq!(
            response.status(),
            200,
            "{who} should open a stream; headers {:?}",
            response.headers()
        );
        assert!(
            response
                .header("content-type")
                .is_some_and(|ct| ct.starts_with("text/event-stream")),
            "{who}: content type; headers {:?}",
            response.headers()
        );
        for framing in ["transfer-encoding", "content-length"] {
            assert_eq!(
                response.header(framing),
                None,
                "{who}: the stream's end is the connection's close, not {framing}; head {} {}, \
                 headers {:?}",
                response.version(),
                response.status(),
                response.headers()
            );
        }
        let mut stream = SseStream::http1(response);
        wait_conn_create(h, &client).await;
        send(h, "normal-event", &guid, "to an HTTP/1.0 client").await;
        expect_events(
            &mut stream,
            &who,
            &[("normal-event", "to an HTTP/1.0 client")],
        )
        .await;
        let outcome = within(
            WAIT,
            "POST /_control/disconnect",
            control::disconnect(h, &client),
        )
        .await
        .unwrap_or_else(|e| panic!("POST /_control/disconnect failed: {e}"));
        assert_eq!(
            outcome.status, 200,
            "POST /_control/disconnect?clientId={client}"
        );
        let end = within(
            WAIT,
            &format!("{who}: the connection to close when the server ends the stream"),
            async {
                loop {
                    match stream.next_raw().await {
                        Ok(Some(_)) => {}
                        ended => return ended.map(|_| ()),
                    }
                }
            },
        )
        .await;
        assert!(
            end.is_ok(),
            "{who}: the stream ends with the connection's close: {end:?}"
        );
    }
}
