//! Several servers linked by a `MemoryBroker`: what a multi-node cluster promises, without
//! Redis. The same behaviour is checked against real `redis-server`s in `conformance-tests`.

use sseio_core::{
    BrokerError, BuildError, CloseReason, Context, EventHandler, HandlerOptions, MemoryBroker,
    Notification, Notifications, Presence, SendError, Server, SseSink,
};
use sseio_test_support::fixtures::connect;

/// One node: a server on the shared broker with handlers `a` and `b`, rooms by path.
fn node(broker: &MemoryBroker) -> (Server, EventHandler) {
    let server = Server::builder()
        .path("/r/:room")
        .broker(broker.clone())
        .build()
        .unwrap();
    let by_path = |ctx: &Context| ctx.param("room").unwrap_or_default().to_owned();
    let a = server
        .register_event_handler("a", HandlerOptions::new(by_path))
        .unwrap();
    server
        .register_event_handler("b", HandlerOptions::new(by_path))
        .unwrap();
    (server, a)
}

fn closes(notifications: &mut Notifications) -> Vec<(String, CloseReason)> {
    std::iter::from_fn(|| notifications.try_recv())
        .filter_map(|n| match n {
            Notification::ConnClose {
                client_id, reason, ..
            } => Some((client_id.to_string(), reason)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_send_on_one_node_reaches_the_room_on_every_node_once() {
    let broker = MemoryBroker::new();
    let (one, on_one) = node(&broker);
    let (two, _) = node(&broker);
    let (_c1, first) = connect(&one, "/r/x?clientId=1&events=a").await;
    let (_c2, second) = connect(&two, "/r/x?clientId=2&events=a").await;
    let (_c3, elsewhere) = connect(&two, "/r/y?clientId=3&events=a").await;

    on_one.send("x", "hello").unwrap();

    assert_eq!(first.text(), "event: a\ndata: hello\n\n");
    assert_eq!(second.text(), "event: a\ndata: hello\n\n");
    assert_eq!(elsewhere.text(), "");
}

#[tokio::test]
async fn a_client_id_that_moves_to_another_node_closes_its_old_stream() {
    let broker = MemoryBroker::new();
    let (one, on_one) = node(&broker);
    let (two, _) = node(&broker);
    let mut on_one_notes = one.subscribe();
    let (_old, old) = connect(&one, "/r/x?clientId=c&events=a").await;
    let (_new, new) = connect(&two, "/r/x?clientId=c&events=a").await;

    assert!(old.is_closed());
    assert!(!new.is_closed());
    assert_eq!(
        closes(&mut on_one_notes),
        [("c".to_owned(), CloseReason::Replaced)]
    );
    on_one.send("x", "after").unwrap();
    assert_eq!(new.text(), "event: a\ndata: after\n\n");
    assert_eq!(one.connection_count() + two.connection_count(), 1);
}

#[tokio::test]
async fn presence_counts_every_node() {
    let broker = MemoryBroker::new();
    let (one, on_one) = node(&broker);
    let (two, _) = node(&broker);
    let (_c1, _) = connect(&one, "/r/x?clientId=1&events=a").await;
    let (_c2, _) = connect(&two, "/r/x?clientId=2&events=a").await;
    let (_c3, _) = connect(&two, "/r/x?clientId=3&events=b").await;

    let presence = on_one.presence("x").await.unwrap();
    assert_eq!(
        presence,
        Presence {
            count: 2,
            client_ids: vec!["1".to_owned(), "2".to_owned()],
        }
    );
    assert_eq!(on_one.room_size("x"), 1, "room_size stays this node's");
}

#[tokio::test]
async fn send_to_client_and_disconnect_reach_the_node_the_client_is_on() {
    let broker = MemoryBroker::new();
    let (one, _) = node(&broker);
    let (two, _) = node(&broker);
    let mut on_two_notes = two.subscribe();
    let (_c, sink) = connect(&two, "/r/x?clientId=c&events=a").await;
    let (_d, bystander) = connect(&two, "/r/x?clientId=d&events=a").await;

    one.send_to_client("c", "a", "just you").unwrap();
    one.send_to_client("c", "b", "not listened to").unwrap();
    assert_eq!(sink.text(), "event: a\ndata: just you\n\n");
    assert_eq!(bystander.text(), "");

    one.disconnect("c").unwrap();
    assert!(sink.is_closed());
    assert!(!bystander.is_closed());
    assert_eq!(
        closes(&mut on_two_notes),
        [("c".to_owned(), CloseReason::Disconnected)]
    );
}

#[tokio::test]
async fn send_to_client_checks_the_message_like_send() {
    let server = Server::builder().max_message_bytes(4).build().unwrap();
    assert!(matches!(
        server.send_to_client("c", "a", "too long"),
        Err(SendError::TooLarge { size: 8, limit: 4 })
    ));
}

#[tokio::test]
async fn without_a_broker_presence_and_commands_act_on_this_server() {
    let server = Server::new("/r/:room").unwrap();
    let handler = server
        .register_event_handler(
            "a",
            HandlerOptions::new(|ctx: &Context| ctx.param("room").unwrap_or_default().to_owned()),
        )
        .unwrap();
    let (_c, sink) = connect(&server, "/r/x?clientId=c&events=a").await;
    assert_eq!(handler.presence("x").await.unwrap().client_ids, ["c"]);
    server.send_to_client("c", "a", "hi").unwrap();
    assert_eq!(sink.text(), "event: a\ndata: hi\n\n");
    server.disconnect("c").unwrap();
    assert!(sink.is_closed());
    assert_eq!(handler.presence("x").await.unwrap(), Presence::default());
}

#[test]
fn one_broker_handle_serves_one_server() {
    let builder = Server::builder().broker(MemoryBroker::new());
    let _first = builder.clone().build().unwrap();
    // A cloned builder shares its broker handle, whose node identity is taken.
    let error = builder.build().unwrap_err();
    assert!(matches!(
        error,
        BuildError::Broker(BrokerError::AlreadyAttached)
    ));
}
