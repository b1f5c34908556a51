//! The hub end to end on a free port: the publish API, who may connect (JWT, the auth
//! webhook), `fetch` by `GET`, and lifecycle webhooks, with a backend in the test.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use common::{API_KEY, TestHub, api_post, eventually, open, request, start};
use http::Method;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use sseio_hub::sseio_hyper::Notification;

const PATH: &str = "[server]\npath = \"/files/:guid/pull\"\n";

async fn presence(hub: &TestHub, event: &str, room: &str) -> Value {
    request(
        hub.addr,
        Method::GET,
        &format!("/api/presence?event={event}&room={room}"),
        &[("authorization", &format!("Bearer {API_KEY}"))],
        "",
    )
    .await
    .json()
}

/// Waits until `room` of `event` has `count` connections.
async fn joined(hub: &TestHub, event: &str, room: &str, count: u64) {
    eventually(&format!("{count} connections in {room}"), || async {
        presence(hub, event, room).await["count"] == count
    })
    .await;
}

#[tokio::test]
async fn publish_reaches_the_room_and_answers_the_local_count() {
    let hub = start(&format!("{PATH}[events.news]\nroom = \"{{param.guid}}\"\n")).await;
    let mut stream = open(hub.addr, "/files/42/pull?clientId=c1&events=news", &[]).await;
    joined(&hub, "news", "42", 1).await;

    let one = api_post(
        hub.addr,
        "/api/publish",
        &json!({"event": "news", "room": "42", "data": {"a": 1}}),
    )
    .await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json(), json!({"local": 1}));
    assert_eq!(stream.next().await, ("news".into(), r#"{"a":1}"#.into()));

    let batch = api_post(
        hub.addr,
        "/api/publish",
        &json!([
            {"event": "news", "room": "42", "data": "verbatim"},
            {"event": "news", "room": "elsewhere", "data": 2},
            {"event": "news", "room": "42", "data": [3]},
        ]),
    )
    .await;
    assert_eq!(batch.json(), json!({"local": [1, 0, 1]}));
    assert_eq!(stream.next().await, ("news".into(), "verbatim".into()));
    assert_eq!(stream.next().await, ("news".into(), "[3]".into()));

    let to_client = api_post(
        hub.addr,
        "/api/send-to-client",
        &json!({"clientId": "c1", "event": "news", "data": "just you"}),
    )
    .await;
    assert_eq!(to_client.status, StatusCode::OK);
    assert_eq!(stream.next().await, ("news".into(), "just you".into()));

    let kicked = api_post(hub.addr, "/api/disconnect", &json!({"clientId": "c1"})).await;
    assert_eq!(kicked.status, StatusCode::OK);
    joined(&hub, "news", "42", 0).await;
}

#[tokio::test]
async fn the_publish_api_needs_a_valid_key() {
    let hub = start("[events.news]\nroom = \"all\"\n").await;
    let body = json!({"event": "news", "room": "all", "data": 1}).to_string();
    let none = request(hub.addr, Method::POST, "/api/publish", &[], body.clone()).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.headers["www-authenticate"], "Bearer");
    assert!(none.json()["message"].is_string());
    let wrong = request(
        hub.addr,
        Method::POST,
        "/api/publish",
        &[("authorization", "Bearer not-the-key-at-all")],
        body,
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.json()["message"], "the API key is not valid");
}

#[tokio::test]
async fn bad_publish_bodies_are_400_json_naming_the_field() {
    let hub = start("[limits]\nmax_message_bytes = 10\n[events.news]\nroom = \"all\"\n").await;
    let cases = [
        (json!({"event": "news", "data": 1}), 400, Some("room")),
        (
            json!({"event": "news", "room": 7, "data": 1}),
            400,
            Some("room"),
        ),
        (
            json!({"event": "news", "room": "all", "data": 1, "extra": true}),
            400,
            None,
        ),
        (
            json!([{"event": "news", "room": "all", "data": 1}, {"event": "news", "room": "all"}]),
            400,
            Some("[1].data"),
        ),
        (
            json!({"event": "nope", "room": "all", "data": 1}),
            404,
            Some("event"),
        ),
        (
            json!({"event": "news", "room": "all", "data": "far more than ten bytes"}),
            413,
            Some("data"),
        ),
    ];
    for (body, status, field) in cases {
        let answer = api_post(hub.addr, "/api/publish", &body).await;
        assert_eq!(answer.status.as_u16(), status, "{body}");
        let json = answer.json();
        assert!(json["message"].is_string(), "{body}: {json}");
        if let Some(field) = field {
            assert_eq!(json["field"], field, "{body}: {json}");
        }
    }
    let not_json = request(
        hub.addr,
        Method::POST,
        "/api/publish",
        &[("authorization", &format!("Bearer {API_KEY}"))],
        "{not json",
    )
    .await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    assert!(
        not_json.json()["message"]
            .as_str()
            .unwrap()
            .contains("not JSON")
    );
    let no_room = request(
        hub.addr,
        Method::GET,
        "/api/presence?event=news",
        &[("authorization", &format!("Bearer {API_KEY}"))],
        "",
    )
    .await;
    assert_eq!(no_room.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_room.json()["field"], "room");
}

fn token(algorithm: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    encode(&Header::new(algorithm), claims, key).unwrap()
}

fn in_an_hour() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600
}

#[tokio::test]
async fn hs256_tokens_from_the_header_or_a_cookie_set_the_principal_and_rooms() {
    let hub = start(&format!(
        "{PATH}[auth.jwt]\nalgorithm = \"HS256\"\nsecret = \"s3cret\"\ncookie = \"jwt\"\n\
         [events.news]\nroom = \"{{param.guid}}\"\n"
    ))
    .await;
    let mut notifications = hub.hub.server().subscribe();
    let key = EncodingKey::from_secret(b"s3cret").unwrap();
    let ada = token(
        Algorithm::HS256,
        &key,
        &json!({"sub": "ada", "exp": in_an_hour(), "rooms": ["team-*"]}),
    );

    let bearer = format!("Bearer {ada}");
    let _stream = open(
        hub.addr,
        "/files/team-1/pull?clientId=c1&events=news",
        &[("authorization", &bearer)],
    )
    .await;
    let principal = tokio::time::timeout(common::WAIT, async {
        loop {
            if let Some(Notification::ConnCreate { principal, .. }) = notifications.recv().await {
                return principal;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(principal.as_deref(), Some("ada"));

    let cookie = format!("theme=dark; jwt={ada}");
    let _by_cookie = open(
        hub.addr,
        "/files/team-2/pull?clientId=c2&events=news",
        &[("cookie", &cookie)],
    )
    .await;

    let elsewhere = request(
        hub.addr,
        Method::GET,
        "/files/other/pull?clientId=c3&events=news",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(elsewhere.status, StatusCode::FORBIDDEN);
    assert!(
        elsewhere.json()["message"]
            .as_str()
            .unwrap()
            .contains("news")
    );

    let wrong_key = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"other").unwrap(),
        &json!({"sub": "eve", "exp": in_an_hour()}),
    );
    let expired = token(Algorithm::HS256, &key, &json!({"sub": "ada", "exp": 1000}));
    for bad in [
        String::new(),
        format!("Bearer {wrong_key}"),
        format!("Bearer {expired}"),
    ] {
        let refused = request(
            hub.addr,
            Method::GET,
            "/files/team-1/pull?clientId=c4&events=news",
            &[("authorization", &bad)],
            "",
        )
        .await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{bad}");
        assert!(refused.json()["message"].is_string());
    }
}

#[tokio::test]
async fn rs256_and_es256_tokens_are_checked_with_pem_public_keys_from_a_file_or_the_config() {
    // The RSA key from its file, the EC key as PEM text in the configuration itself.
    let rsa_key = "public_key_file = \"tests/keys/rsa-public.pem\"".to_owned();
    let ec_key = format!(
        "public_key = '''\n{}'''",
        include_str!("keys/ec-public.pem")
    );
    for (algorithm, name, private, public) in [
        (
            Algorithm::RS256,
            "RS256",
            include_bytes!("keys/rsa-private.pem").as_slice(),
            rsa_key,
        ),
        (
            Algorithm::ES256,
            "ES256",
            include_bytes!("keys/ec-private.pem").as_slice(),
            ec_key,
        ),
    ] {
        let hub = start(&format!(
            "[auth.jwt]\nalgorithm = \"{name}\"\n{public}\n\
             issuer = \"backend\"\n[events.news]\nroom = \"all\"\n"
        ))
        .await;
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(private).unwrap(),
            _ => EncodingKey::from_ec_pem(private).unwrap(),
        };
        let good = token(
            algorithm,
            &key,
            &json!({"sub": "ada", "iss": "backend", "exp": in_an_hour()}),
        );
        let _stream = open(
            hub.addr,
            "/sseio?clientId=c1&events=news",
            &[("authorization", &format!("Bearer {good}"))],
        )
        .await;
        let other_issuer = token(
            algorithm,
            &key,
            &json!({"sub": "ada", "iss": "someone", "exp": in_an_hour()}),
        );
        let refused = request(
            hub.addr,
            Method::GET,
            "/sseio?clientId=c2&events=news",
            &[("authorization", &format!("Bearer {other_issuer}"))],
            "",
        )
        .await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{name}");
    }
}

/// A backend for the hub: records what it is sent, by path.
#[derive(Clone, Default)]
struct Backend {
    seen: Arc<Mutex<Vec<(String, HeaderMap, Value)>>>,
}

impl Backend {
    async fn start(self) -> SocketAddr {
        async fn auth(
            State(b): State<Backend>,
            headers: HeaderMap,
            body: String,
        ) -> (StatusCode, String) {
            let request: Value = serde_json::from_str(&body).unwrap();
            b.record("/auth", headers, request.clone());
            match request["headers"]["authorization"].as_str() {
                Some("Bearer friend") => (
                    StatusCode::OK,
                    json!({"principal": "friend", "rooms": {"news": ["42"]}}).to_string(),
                ),
                Some("Bearer banned") => (
                    StatusCode::FORBIDDEN,
                    json!({"message": "you are banned"}).to_string(),
                ),
                _ => (
                    StatusCode::UNAUTHORIZED,
                    json!({"message": "who are you?"}).to_string(),
                ),
            }
        }
        async fn state(State(b): State<Backend>, headers: HeaderMap) -> (StatusCode, &'static str) {
            b.record("/state", headers, Value::Null);
            (StatusCode::OK, r#"{"state":"saved"}"#)
        }
        async fn broken(
            State(b): State<Backend>,
            headers: HeaderMap,
        ) -> (StatusCode, &'static str) {
            b.record("/broken", headers, Value::Null);
            (StatusCode::BAD_GATEWAY, "the database is down")
        }
        async fn lifecycle(
            State(b): State<Backend>,
            headers: HeaderMap,
            body: String,
        ) -> StatusCode {
            for record in serde_json::from_str::<Vec<Value>>(&body).unwrap() {
                b.record("/lifecycle", headers.clone(), record);
            }
            StatusCode::NO_CONTENT
        }
        let routes = Router::new()
            .route("/auth", post(auth))
            .route("/files/{guid}/state", get(state))
            .route("/broken", get(broken))
            .route("/lifecycle", post(lifecycle))
            .with_state(self);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, routes).await.unwrap() });
        addr
    }

    fn record(&self, path: &str, headers: HeaderMap, body: Value) {
        self.seen
            .lock()
            .unwrap()
            .push((path.to_owned(), headers, body));
    }

    fn seen(&self, path: &str) -> Vec<(HeaderMap, Value)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, h, b)| (h.clone(), b.clone()))
            .collect()
    }
}

#[tokio::test]
async fn the_auth_webhook_grants_refuses_and_restricts_rooms() {
    let backend = Backend::default();
    let addr = backend.clone().start().await;
    let hub = start(&format!(
        "{PATH}[auth.webhook]\nurl = \"http://{addr}/auth\"\n\
         [events.news]\nroom = \"{{param.guid}}\"\n"
    ))
    .await;
    let _stream = open(
        hub.addr,
        "/files/42/pull?clientId=c1&events=news",
        &[("authorization", "Bearer friend"), ("cookie", "a=1")],
    )
    .await;
    let (_, asked) = backend.seen("/auth").remove(0);
    assert_eq!(asked["clientId"], "c1");
    assert_eq!(asked["params"], json!({"guid": "42"}));
    assert_eq!(
        asked["query"],
        json!([["clientId", "c1"], ["events", "news"]])
    );
    assert_eq!(
        asked["headers"],
        json!({"authorization": "Bearer friend", "cookie": "a=1"})
    );

    for (authorization, room, status, message) in [
        ("Bearer friend", "43", 403, "may join"),
        ("Bearer banned", "42", 403, "you are banned"),
        ("Bearer stranger", "42", 401, "who are you?"),
    ] {
        let refused = request(
            hub.addr,
            Method::GET,
            &format!("/files/{room}/pull?clientId=c2&events=news"),
            &[("authorization", authorization)],
            "",
        )
        .await;
        assert_eq!(refused.status.as_u16(), status, "{authorization}");
        let json = refused.json();
        assert!(
            json["message"].as_str().unwrap().contains(message),
            "{authorization}: {json}"
        );
    }
}

#[tokio::test]
async fn fetch_is_a_get_to_the_backend_whose_body_is_the_first_message() {
    let backend = Backend::default();
    let addr = backend.clone().start().await;
    let hub = start(&format!(
        "{PATH}[events.file]\nroom = \"{{param.guid}}\"\n\
         [events.file.fetch]\nurl = \"http://{addr}/files/{{param.guid}}/state\"\n\
         forward_headers = [\"x-tenant\"]\n\
         [events.broken]\nroom = \"{{param.guid}}\"\n\
         [events.broken.fetch]\nurl = \"http://{addr}/broken\"\n"
    ))
    .await;
    let mut notifications = hub.hub.server().subscribe();
    let mut stream = open(
        hub.addr,
        "/files/a%20b/pull?clientId=c1&events=file&events=broken",
        &[("x-tenant", "acme")],
    )
    .await;
    assert_eq!(
        stream.next().await,
        ("file".into(), r#"{"state":"saved"}"#.into())
    );
    let (headers, _) = backend.seen("/state").remove(0);
    assert_eq!(headers["x-sseio-client-id"], "c1");
    assert_eq!(headers["x-sseio-event"], "file");
    assert_eq!(headers["x-sseio-room"], "a b");
    assert_eq!(headers["x-tenant"], "acme");

    let error = tokio::time::timeout(common::WAIT, async {
        loop {
            if let Some(Notification::Error(error)) = notifications.recv().await {
                return error.to_string();
            }
        }
    })
    .await
    .unwrap();
    assert!(error.contains("502"), "{error}");
    assert!(error.contains("the database is down"), "{error}");
}

#[tokio::test]
async fn lifecycle_webhooks_post_the_chosen_notifications() {
    let backend = Backend::default();
    let addr = backend.clone().start().await;
    let hub = start(&format!(
        "{PATH}[webhooks]\nurl = \"http://{addr}/lifecycle\"\nevents = [\"conn:create\", \"conn:close\"]\n\
         [events.news]\nroom = \"{{param.guid}}\"\n"
    ))
    .await;
    let stream = open(hub.addr, "/files/42/pull?clientId=c1&events=news", &[]).await;
    joined(&hub, "news", "42", 1).await;
    drop(stream);
    eventually("conn:create and conn:close posted", || async {
        backend.seen("/lifecycle").len() >= 2
    })
    .await;
    let records: Vec<Value> = backend
        .seen("/lifecycle")
        .into_iter()
        .map(|(_, record)| record)
        .collect();
    assert_eq!(
        records,
        [
            json!({"kind": "conn:create", "clientId": "c1", "principal": null}),
            json!({"kind": "conn:close", "clientId": "c1", "principal": null, "reason": "client_gone"}),
        ]
    );
}
