//! The `authorize` hook and per-event refusals: who may connect, what they are granted, and
//! what the refused get.

use std::sync::Arc;

use http::{Request, StatusCode};
use sseio_core::{
    CloseReason, Context, Grant, HandlerOptions, Notification, Outcome, Refusal, Server,
};

/// The tenant a connection belongs to, attached by `authorize`.
#[derive(Debug, Clone, PartialEq)]
struct Tenant(String);

/// A server whose `authorize` knows the tokens `ada` and `grace`; `same_principal_takeover` as
/// set, or the default when `None`.
fn server(same_principal_takeover: Option<bool>) -> Server {
    let mut builder = Server::builder().path("/s");
    if let Some(required) = same_principal_takeover {
        builder = builder.takeover_requires_same_principal(required);
    }
    let server = builder
        .authorize(|ctx: Context| async move {
            let token = ctx
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned)
                .or_else(|| ctx.cookie("token").map(str::to_owned));
            match token.as_deref() {
                Some("ada") | Some("grace") => {
                    let user = token.unwrap();
                    Ok(Grant::new()
                        .principal(user.clone())
                        .with(Tenant(format!("t-{user}"))))
                }
                Some("boom") => panic!("authorize blew up"),
                Some(_) => Err(Refusal::forbidden("this token may not listen")),
                None => Err(Refusal::unauthorized("a token is required")),
            }
        })
        .build()
        .unwrap();
    server
        .register_event_handler(
            "news",
            HandlerOptions::new(|ctx: &Context| {
                ctx.grant()
                    .get::<Tenant>()
                    .map(|t| t.0.clone())
                    .unwrap_or_default()
            }),
        )
        .unwrap();
    server
        .register_event_handler(
            "admin",
            HandlerOptions::new(|_ctx: &Context| -> Result<String, Refusal> {
                Err(Refusal::forbidden("admins only"))
            }),
        )
        .unwrap();
    server
}

async fn handle(server: &Server, events: &str, header: Option<(&str, &str)>) -> Outcome {
    let mut request = Request::get(format!("/s?clientId=c&events={events}"));
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let request = request.body(()).unwrap();
    server.handle((&request).into()).await
}

fn reply(outcome: Outcome) -> (StatusCode, String) {
    match outcome {
        Outcome::Reply(response) => (
            response.status(),
            String::from_utf8(response.body().to_vec()).unwrap(),
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn no_credentials_is_401_and_a_bad_token_403() {
    let server = server(Some(false));
    let (status, body) = reply(handle(&server, "news", None).await);
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("a token is required"), "{body}");
    let (status, _) = reply(handle(&server, "news", Some(("authorization", "Bearer eve"))).await);
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(server.connection_count(), 0);
}

#[tokio::test]
async fn the_grant_reaches_get_room_id_and_notifications() {
    let server = server(Some(false));
    let news = server.handler("news").unwrap();
    let mut notifications = server.subscribe();
    let outcome = handle(&server, "news", Some(("cookie", "theme=dark; token=ada"))).await;
    let Outcome::Stream(_stream) = outcome else {
        panic!("ada may listen");
    };
    assert_eq!(news.rooms(), vec!["t-ada".to_owned()]);
    let principal = loop {
        if let Some(Notification::ConnCreate { principal, .. }) = notifications.recv().await {
            break principal;
        }
    };
    assert_eq!(principal.as_deref(), Some("ada"));
}

#[tokio::test]
async fn get_room_id_refuses_one_event_with_403_naming_it() {
    let server = server(Some(false));
    let (status, body) = reply(
        handle(
            &server,
            "news&events=admin",
            Some(("authorization", "Bearer ada")),
        )
        .await,
    );
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body.contains("'admin'") && body.contains("admins only"),
        "{body}"
    );
    assert!(
        server.handler("news").unwrap().rooms().is_empty(),
        "nothing joined"
    );
}

#[tokio::test]
async fn a_panicking_authorize_is_a_500_and_an_error() {
    let server = server(Some(false));
    let mut notifications = server.subscribe();
    let (status, _) = reply(handle(&server, "news", Some(("authorization", "Bearer boom"))).await);
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(matches!(
        notifications.try_recv(),
        Some(Notification::Error(_))
    ));
    // The server carries on.
    let outcome = handle(&server, "news", Some(("authorization", "Bearer grace"))).await;
    assert!(matches!(outcome, Outcome::Stream(_)));
}

#[tokio::test]
async fn takeover_by_another_principal_can_be_refused() {
    let server = server(Some(true));
    let mut notifications = server.subscribe();
    let Outcome::Stream(_ada) =
        handle(&server, "news", Some(("authorization", "Bearer ada"))).await
    else {
        panic!("ada may listen");
    };
    let (status, body) =
        reply(handle(&server, "news", Some(("authorization", "Bearer grace"))).await);
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // The same principal may take its clientId over.
    let again = handle(&server, "news", Some(("authorization", "Bearer ada"))).await;
    assert!(matches!(again, Outcome::Stream(_)));
    let replaced = std::iter::from_fn(|| notifications.try_recv()).any(|n| {
        matches!(n, Notification::ConnClose { reason: CloseReason::Replaced, principal, .. } if principal == Some(Arc::from("ada")))
    });
    assert!(replaced);
}

#[tokio::test]
async fn an_authorize_that_panics_before_its_future_is_contained_too() {
    fn refuse_by_panicking(_ctx: Context) -> std::future::Ready<Result<Grant, Refusal>> {
        panic!("authorize blew up before returning a future")
    }
    let server = Server::builder()
        .path("/s")
        .authorize(refuse_by_panicking)
        .build()
        .unwrap();
    let mut notifications = server.subscribe();
    let (status, _) = reply(handle(&server, "news", None).await);
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(matches!(
        notifications.try_recv(),
        Some(Notification::Error(_))
    ));
}

/// With an `authorize` hook, another principal could close a client's stream by connecting with
/// its `clientId` (which travels in URLs and logs), unless the application had found
/// `takeover_requires_same_principal`. It is the default once `authorize` is on; the opt-out
/// stays.
#[tokio::test]
async fn with_authorize_only_the_same_principal_takes_a_client_id_over_by_default() {
    let secure = server(None);
    let Outcome::Stream(_ada) =
        handle(&secure, "news", Some(("authorization", "Bearer ada"))).await
    else {
        panic!("ada may listen");
    };
    let (status, body) =
        reply(handle(&secure, "news", Some(("authorization", "Bearer grace"))).await);
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    let open = server(Some(false));
    let Outcome::Stream(_ada) = handle(&open, "news", Some(("authorization", "Bearer ada"))).await
    else {
        panic!("ada may listen");
    };
    let taken = handle(&open, "news", Some(("authorization", "Bearer grace"))).await;
    assert!(
        matches!(taken, Outcome::Stream(_)),
        "opted out: grace takes it over"
    );
}
