//! A flood of malformed requests: each one is refused with a 4xx (or, for a head too large to
//! read, by closing the connection), and meanwhile an open stream keeps streaming and the
//! application keeps answering.
//!
//! The requests are written as raw bytes over TCP, because several are not valid HTTP at all
//! (bytes that are not UTF-8 in the request target, a space in it, a header name with a space)
//! and no client library would send them. Each is sent with `Connection: close`, and its answer
//! is the status line of the response head.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use conformance_tests::Harness;
use conformance_tests::control;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{
    WAIT, connect, expect_events, get_body, log, new_id, send, server_is_exclusive, within,
};

super::registry::case_table! {
    malformed_requests_get_4xx_and_others_keep_streaming,
}

/// How many malformed requests are sent.
const REQUESTS: usize = 3000;
/// How many of them are in flight at once.
const IN_FLIGHT: usize = 50;
/// How long the whole flood may take.
const FLOOD_LIMIT: Duration = Duration::from_secs(120);
/// The most response-head bytes read before giving up on finding its end.
const MAX_HEAD: usize = 64 * 1024;

/// What a malformed request may be answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Exactly `405` (a method other than `GET`/`HEAD` on the SSE path).
    MethodNotAllowed,
    /// Any `4xx`.
    ClientError,
    /// Any `4xx`, or the server closing the connection without an answer (a head too large for
    /// it to read).
    ClientErrorOrClose,
}

/// One kind of malformed request.
struct Kind {
    /// What is wrong with it, for failure messages.
    what: &'static str,
    expect: Expect,
    /// Writes the request for a fresh guid and client id.
    build: fn(&Ids) -> Vec<u8>,
}

/// Fresh ids for one request, and where to send it.
struct Ids {
    guid: String,
    client: String,
    authority: String,
}

/// A `method target` request with the given extra header lines (each ending in `\r\n`).
fn raw(ids: &Ids, method: &str, target: &[u8], headers: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(target.len() + headers.len() + 128);
    bytes.extend_from_slice(method.as_bytes());
    bytes.push(b' ');
    bytes.extend_from_slice(target);
    bytes.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    bytes.extend_from_slice(ids.authority.as_bytes());
    bytes.extend_from_slice(b"\r\nConnection: close\r\n");
    if !matches!(method, "GET" | "HEAD" | "DELETE") {
        bytes.extend_from_slice(b"Content-Length: 0\r\n");
    }
    bytes.extend_from_slice(headers);
    bytes.extend_from_slice(b"\r\n");
    bytes
}

/// `GET /files/<guid>/pull?<query>`, where `{client}` in `query` is the client id.
fn get_query(ids: &Ids, query: &[u8]) -> Vec<u8> {
    let mut target = format!("/files/{}/pull?", ids.guid).into_bytes();
    target.extend_from_slice(query);
    let target = replace(&target, b"{client}", ids.client.as_bytes());
    raw(ids, "GET", &target, b"")
}

/// `method` on the SSE path with a valid query.
fn method_on_sse_path(ids: &Ids, method: &str) -> Vec<u8> {
    let target = format!(
        "/files/{}/pull?clientId={}&events=normal-event",
        ids.guid, ids.client
    );
    raw(ids, method, target.as_bytes(), b"")
}

/// `GET` on the SSE path without `clientId` (so a server that reads the head answers `400`)
/// with the given header lines.
fn with_headers(ids: &Ids, headers: &[u8]) -> Vec<u8> {
    let target = format!("/files/{}/pull?events=normal-event", ids.guid);
    raw(ids, "GET", target.as_bytes(), headers)
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Every kind of malformed request; the flood cycles through them.
fn kinds() -> Vec<Kind> {
    use Expect::{ClientError, ClientErrorOrClose, MethodNotAllowed};
    macro_rules! kind {
        ($what:literal, $expect:expr, |$ids:ident| $build:expr) => {
            Kind {
                what: $what,
                expect: $expect,
                build: |$ids: &Ids| $build,
            }
        };
    }
    vec![
        // Percent-encoding that does not decode.
        kind!("`%zz` in clientId", ClientError, |ids| get_query(
            ids,
            b"clientId=%zz&events=normal-event"
        )),
        kind!("a lone `%` in another key", ClientError, |ids| get_query(
            ids,
            b"clientId={client}&events=normal-event&x=%"
        )),
        kind!("a truncated escape in clientId", ClientError, |ids| {
            get_query(ids, b"clientId={client}%E0%A4%A&events=normal-event")
        }),
        kind!("`%G1` in events", ClientError, |ids| get_query(
            ids,
            b"clientId={client}&events=%G1"
        )),
        kind!("a `%` ending the query", ClientError, |ids| get_query(
            ids,
            b"clientId={client}&events=normal-event%"
        )),
        kind!("a bad escape in a key", ClientError, |ids| get_query(
            ids,
            b"clientId={client}&events=normal-event&%zz=1"
        )),
        // Escapes that decode to bytes that are not UTF-8.
        kind!("`%FF` in clientId", ClientError, |ids| get_query(
            ids,
            b"clientId=%FF&events=normal-event"
        )),
        kind!("`%C3%28` in events", ClientError, |ids| get_query(
            ids,
            b"clientId={client}&events=%C3%28"
        )),
        kind!("an encoded surrogate in clientId", ClientError, |ids| {
            get_query(ids, b"clientId=%ED%A0%80{client}&events=normal-event")
        }),
        kind!("an overlong encoding in clientId", ClientError, |ids| {
            get_query(ids, b"clientId={client}%C0%AF&events=normal-event")
        }),
        // Raw bytes that are not UTF-8, and a space, in the request target.
        kind!("a raw 0xFF in the query", ClientError, |ids| get_query(
            ids,
            b"clientId={client}\xff&events=normal-event"
        )),
        kind!(
            "a raw truncated sequence in the query",
            ClientError,
            |ids| { get_query(ids, b"clientId={client}&events=normal-event&x=\xc3\x28") }
        ),
        kind!("raw 0xFF 0xFE in the path", ClientError, |ids| {
            let query = format!("/pull?clientId={}&events=normal-event", ids.client);
            let target = [b"/files/\xff\xfe".as_slice(), query.as_bytes()].concat();
            raw(ids, "GET", &target, b"")
        }),
        kind!(
            "a raw lead byte ending the path parameter",
            ClientError,
            |ids| {
                let query = format!("/pull?clientId={}&events=normal-event", ids.client);
                let guid = format!("/files/{}", ids.guid);
                let target = [guid.as_bytes(), b"\xc3", query.as_bytes()].concat();
                raw(ids, "GET", &target, b"")
            }
        ),
        kind!("a space in the request target", ClientError, |ids| {
            get_query(ids, b"clientId=a b&events=normal-event")
        }),
        // Escapes in the path parameter that do not decode.
        kind!("`%zz` in the path parameter", ClientError, |ids| {
            let target = format!(
                "/files/%zz{}/pull?clientId={}&events=normal-event",
                ids.guid, ids.client
            );
            raw(ids, "GET", target.as_bytes(), b"")
        }),
        kind!("`%FF` as the path parameter", ClientError, |ids| {
            let target = format!(
                "/files/%FF/pull?clientId={}&events=normal-event",
                ids.client
            );
            raw(ids, "GET", target.as_bytes(), b"")
        }),
        // Missing or empty parameters.
        kind!("no clientId", ClientError, |ids| get_query(
            ids,
            b"events=normal-event"
        )),
        kind!("no events", ClientError, |ids| get_query(
            ids,
            b"clientId={client}"
        )),
        kind!("no query at all", ClientError, |ids| {
            let target = format!("/files/{}/pull", ids.guid);
            raw(ids, "GET", target.as_bytes(), b"")
        }),
        kind!("empty clientId and events", ClientError, |ids| get_query(
            ids,
            b"clientId=&events="
        )),
        kind!("keys without values", ClientError, |ids| get_query(
            ids,
            b"clientId&events"
        )),
        // Huge and repeated query keys.
        kind!("a 16 KiB key and no clientId", ClientError, |ids| {
            let mut query = vec![b'k'; 16 * 1024];
            query.extend_from_slice(b"=1&events=normal-event");
            get_query(ids, &query)
        }),
        kind!(
            "a 60 KiB query key and no clientId",
            ClientErrorOrClose,
            |ids| {
                let mut query = vec![b'k'; 60 * 1024];
                query.extend_from_slice(b"=1&events=normal-event");
                get_query(ids, &query)
            }
        ),
        kind!(
            "an 80 KiB request target and no clientId",
            ClientErrorOrClose,
            |ids| {
                let mut query = b"events=normal-event&".to_vec();
                query.extend_from_slice(&vec![b'k'; 80 * 1024]);
                get_query(ids, &query)
            }
        ),
        kind!("`events=` 5000 times, all empty", ClientError, |ids| {
            let mut query = b"clientId={client}".to_vec();
            for _ in 0..5000 {
                query.extend_from_slice(b"&events=");
            }
            get_query(ids, &query)
        }),
        kind!("`clientId=` 5000 times, all empty", ClientError, |ids| {
            let mut query = Vec::new();
            for _ in 0..5000 {
                query.extend_from_slice(b"clientId=&");
            }
            query.extend_from_slice(b"events=normal-event");
            get_query(ids, &query)
        }),
        kind!("5000 keys, one of them bad", ClientError, |ids| {
            let mut query = b"clientId={client}&events=normal-event".to_vec();
            for i in 0..5000 {
                query.extend_from_slice(format!("&k{i}=v").as_bytes());
            }
            query.extend_from_slice(b"&bad=%");
            get_query(ids, &query)
        }),
        // Odd methods on the SSE path, with an otherwise valid query.
        kind!("POST", MethodNotAllowed, |ids| method_on_sse_path(
            ids, "POST"
        )),
        kind!("PUT", MethodNotAllowed, |ids| method_on_sse_path(
            ids, "PUT"
        )),
        kind!("DELETE", MethodNotAllowed, |ids| method_on_sse_path(
            ids, "DELETE"
        )),
        kind!("PATCH", MethodNotAllowed, |ids| method_on_sse_path(
            ids, "PATCH"
        )),
        kind!("PROPFIND", MethodNotAllowed, |ids| method_on_sse_path(
            ids, "PROPFIND"
        )),
        kind!("an invented method", MethodNotAllowed, |ids| {
            method_on_sse_path(ids, "FROBNICATE")
        }),
        kind!("lower-case `get`", MethodNotAllowed, |ids| {
            method_on_sse_path(ids, "get")
        }),
        // Headers.
        kind!("a header name with a space", ClientError, |ids| {
            with_headers(ids, b"Bad Header: x\r\n")
        }),
        kind!(
            "a control character in a header value",
            ClientError,
            |ids| { with_headers(ids, b"X-Ctl: a\x01b\r\n") }
        ),
        kind!("a header value that is not UTF-8", ClientError, |ids| {
            with_headers(ids, b"X-Bytes: \xff\xfe\r\n")
        }),
        kind!("a 100 KiB header", ClientErrorOrClose, |ids| {
            let mut header = b"X-Big: ".to_vec();
            header.extend_from_slice(&vec![b'a'; 100 * 1024]);
            header.extend_from_slice(b"\r\n");
            with_headers(ids, &header)
        }),
        kind!("300 headers", ClientErrorOrClose, |ids| {
            let headers: String = (0..300).map(|i| format!("X-H{i}: v\r\n")).collect();
            with_headers(ids, headers.as_bytes())
        }),
    ]
}

/// A head larger than any server reads: sent only now and then, being 1 MiB.
fn giant_header() -> Kind {
    Kind {
        what: "a 1 MiB header",
        expect: Expect::ClientErrorOrClose,
        build: |ids| {
            let mut header = b"X-Giant: ".to_vec();
            header.extend_from_slice(&vec![b'a'; 1024 * 1024]);
            header.extend_from_slice(b"\r\n");
            with_headers(ids, &header)
        },
    }
}

/// How the server answered one request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Answer {
    Status(u16),
    /// The connection ended (or broke) before a complete response head.
    Closed,
}

impl Answer {
    fn meets(&self, expect: Expect) -> bool {
        match (self, expect) {
            (Answer::Status(405), Expect::MethodNotAllowed) => true,
            (Answer::Status(status), Expect::ClientError | Expect::ClientErrorOrClose) => {
                (400..500).contains(status)
            }
            (Answer::Closed, Expect::ClientErrorOrClose) => true,
            _ => false,
        }
    }
}

/// Sends `bytes` on a new connection and reads the status of the answer. A write that fails
/// because the server already answered and closed is not an error: the answer is still read.
async fn exchange(authority: &str, bytes: &[u8]) -> io::Result<Answer> {
    let mut stream = TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let _ = stream.write_all(bytes).await;
    let mut head = Vec::with_capacity(1024);
    let status = loop {
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break status_of(&head[..end])?;
        }
        if head.len() > MAX_HEAD {
            return Err(io::Error::other("response head longer than 64 KiB"));
        }
        match stream.read_buf(&mut head).await {
            Ok(0) | Err(_) => return Ok(Answer::Closed),
            Ok(_) => {}
        }
    };
    // Read on until the server closes (it was asked to), so that the closing side is the server.
    let mut rest = [0; 4096];
    while let Ok(n) = stream.read(&mut rest).await
        && n > 0
    {}
    Ok(Answer::Status(status))
}

fn status_of(head: &[u8]) -> io::Result<u16> {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(version), Some(Ok(status))) if version.starts_with("HTTP/1.") => Ok(status),
        _ => Err(io::Error::other(format!("bad status line {line:?}"))),
    }
}

/// Opens a good stream, sends [`REQUESTS`] malformed requests with at most [`IN_FLIGHT`] at once,
/// and checks that each was refused with a 4xx (`405` for an odd method) or, for a head too large
/// to read, by closing the connection; then that the stream still gets a message sent to its
/// room, no bad request opened a stream, and `/hello` still answers.
pub async fn malformed_requests_get_4xx_and_others_keep_streaming(h: &Harness) {
    let (guid, client) = (new_id(), new_id());
    let mut stream = connect(h, &guid, &client, &["normal-event"]).await;
    let authority = h
        .base_url()
        .strip_prefix("http://")
        .expect("the suite speaks http://")
        .to_owned();

    let kinds: Arc<Vec<Kind>> = Arc::new(kinds());
    let giant = Arc::new(giant_header());
    let results = within(FLOOD_LIMIT, "the flood of malformed requests", async {
        let permits = Arc::new(Semaphore::new(IN_FLIGHT));
        let mut tasks = JoinSet::new();
        for i in 0..REQUESTS {
            let permit = permits.clone().acquire_owned().await.expect("never closed");
            let (kinds, giant, authority) = (kinds.clone(), giant.clone(), authority.clone());
            tasks.spawn(async move {
                // One request in 200 is the 1 MiB header; the rest cycle through the kinds.
                let kind = if i % 200 == 199 {
                    &*giant
                } else {
                    &kinds[i % kinds.len()]
                };
                let ids = Ids {
                    guid: new_id(),
                    client: new_id(),
                    authority,
                };
                let bytes = (kind.build)(&ids);
                let answer = tokio::time::timeout(WAIT, exchange(&ids.authority, &bytes)).await;
                drop(permit);
                let answer = match answer {
                    Ok(Ok(answer)) => Ok(answer),
                    Ok(Err(e)) => Err(format!("{e}")),
                    Err(_) => Err(format!("no answer within {WAIT:?}")),
                };
                (kind.what, kind.expect, answer)
            });
        }
        tasks.join_all().await
    })
    .await;

    // Every answer by kind, so that a failure shows all that went wrong at once.
    let mut answers: BTreeMap<(&str, String), usize> = BTreeMap::new();
    let mut failures: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for (what, expect, answer) in &results {
        let (ok, shown) = match answer {
            Ok(answer) => (answer.meets(*expect), format!("{answer:?}")),
            Err(e) => (false, format!("error: {e}")),
        };
        *answers.entry((*what, shown.clone())).or_default() += 1;
        if !ok {
            *failures.entry((*what, shown)).or_default() += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{}: malformed requests answered outside what is allowed (4xx, 405 for odd methods, \
         or a close for oversized heads): {failures:#?}\nall answers: {answers:#?}",
        h.adapter()
    );

    // The good stream still streams, and nobody else got a stream.
    send(h, "normal-event", &guid, "still streaming").await;
    expect_events(
        &mut stream,
        "the stream opened before the flood",
        &[("normal-event", "still streaming")],
    )
    .await;
    if server_is_exclusive() {
        let log = log(h).await;
        let created: Vec<_> = log.iter().filter(|r| r.kind == "conn:create").collect();
        assert_eq!(
            created.len(),
            1,
            "only the good stream may have opened, got {created:#?}"
        );
        assert_eq!(control::count_conn(&log, "conn:create", &client), 1);
    }
    let (response, body) = get_body(h, "/hello").await;
    assert_eq!(response.status(), 200, "GET /hello after the flood");
    assert_eq!(String::from_utf8_lossy(&body), "hello");
    stream.close().await;
}
