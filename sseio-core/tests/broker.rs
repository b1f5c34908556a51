//! Several servers linked by a `MemoryBroker`: what a multi-node cluster promises, without
//! Redis. The same behaviour is checked against real `redis-server`s in `conformance-tests`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sseio_core::{
    BoxFuture, Broker, BrokerError, BuildError, CloseReason, Context, EventHandler, HandlerOptions,
    History, MemoryBroker, Node, Notification, Notifications, Presence, SendError, Server, SseSink,
};
use sseio_test_support::fixtures::connect;
use tokio::sync::oneshot;

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

/// A broker written before confirmed sends existed: only `attach` and `publish`, which queues
/// the message (here, in a list) and refuses it when told to.
#[derive(Debug, Default, Clone)]
struct QueueingBroker {
    queued: Arc<Mutex<Vec<String>>>,
    down: Arc<AtomicBool>,
}

impl Broker for QueueingBroker {
    fn attach(&self, _node: Node) -> Result<(), BrokerError> {
        Ok(())
    }

    fn publish(&self, _event: &str, _room: &str, payload: &str) -> Result<(), BrokerError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(BrokerError::unavailable("down"));
        }
        self.queued.lock().unwrap().push(payload.to_owned());
        Ok(())
    }
}

/// How the test answers one confirmed publish.
type Answer = oneshot::Sender<Result<(), BrokerError>>;

/// A broker whose backend answers each publish when the test says so, in any order; records
/// the order in which messages were handed to it.
#[derive(Debug, Default, Clone)]
struct AnsweringBroker {
    handed: Arc<Mutex<Vec<String>>>,
    answers: Arc<Mutex<Vec<Answer>>>,
}

impl Broker for AnsweringBroker {
    fn attach(&self, _node: Node) -> Result<(), BrokerError> {
        Ok(())
    }

    fn publish(&self, _event: &str, _room: &str, payload: &str) -> Result<(), BrokerError> {
        self.handed.lock().unwrap().push(payload.to_owned());
        Ok(())
    }

    fn publish_confirmed(
        &self,
        _event: &str,
        _room: &str,
        payload: &str,
    ) -> BoxFuture<Result<(), BrokerError>> {
        self.handed.lock().unwrap().push(payload.to_owned());
        let (answer, answered) = oneshot::channel();
        self.answers.lock().unwrap().push(answer);
        Box::pin(async move {
            answered
                .await
                .unwrap_or(Err(BrokerError::unconfirmed("the backend went away")))
        })
    }
}

fn handler_on(server: &Server) -> EventHandler {
    server
        .register_event_handler(
            "a",
            HandlerOptions::new(|ctx: &Context| ctx.param("room").unwrap_or_default().to_owned()),
        )
        .unwrap()
}

#[tokio::test]
async fn a_confirmed_send_without_a_broker_is_queued_when_it_completes() {
    let server = Server::new("/r/:room").unwrap();
    let handler = handler_on(&server);
    let (_c, sink) = connect(&server, "/r/x?clientId=c&events=a").await;

    handler.send_confirmed("x", "hello").await.unwrap();

    assert_eq!(sink.text(), "event: a\ndata: hello\n\n");
}

#[tokio::test]
async fn a_confirmed_send_through_a_memory_broker_is_delivered_and_recorded_when_it_completes() {
    let broker = MemoryBroker::new();
    let build = |broker: &MemoryBroker| {
        Server::builder()
            .path("/r/:room")
            .history(History::new(10))
            .broker(broker.clone())
            .build()
            .unwrap()
    };
    let (one, two) = (build(&broker), build(&broker));
    let on_one = handler_on(&one);
    handler_on(&two);
    let (_c, on_two) = connect(&two, "/r/x?clientId=c&events=a").await;
    let before = on_one.position("x").await.unwrap();

    // Not polled yet: handed to the broker at the call.
    let confirmed = on_one.send_confirmed("x", "hello");
    assert!(
        on_two.text().contains("data: hello\n"),
        "{:?}",
        on_two.text()
    );
    confirmed.await.unwrap();

    // Recorded: a client that resumes from before it gets it.
    let request = http::Request::get("/r/x?clientId=r&events=a")
        .header("last-event-id", before.to_string())
        .body(())
        .unwrap();
    let (_r, resumed) = sseio_test_support::fixtures::connect_request(&two, &request).await;
    // The replay runs as a task of its own.
    for _ in 0..1000 {
        if !resumed.text().is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        resumed.text().contains("data: hello\n"),
        "{:?}",
        resumed.text()
    );
}

#[tokio::test]
async fn a_broker_that_only_publishes_confirms_a_send_once_its_publish_returned() {
    let broker = QueueingBroker::default();
    let server = Server::builder()
        .path("/r/:room")
        .broker(broker.clone())
        .build()
        .unwrap();
    let handler = handler_on(&server);

    handler.send_confirmed("x", "queued").await.unwrap();
    assert_eq!(*broker.queued.lock().unwrap(), ["queued"]);

    broker.down.store(true, Ordering::SeqCst);
    let refused = handler.send_confirmed("x", "refused").await;
    assert!(
        matches!(
            refused,
            Err(SendError::Broker(BrokerError::Unavailable { .. }))
        ),
        "{refused:?}"
    );
    assert_eq!(*broker.queued.lock().unwrap(), ["queued"]);
}

#[tokio::test]
async fn a_confirmed_send_completes_when_the_broker_answers_and_fails_with_its_error() {
    let broker = AnsweringBroker::default();
    let server = Server::builder()
        .path("/r/:room")
        .broker(broker.clone())
        .build()
        .unwrap();
    let handler = handler_on(&server);

    let first = handler.send_confirmed("x", "1");
    let mut second = Box::pin(handler.send_confirmed("x", "2"));
    let third = handler.send_confirmed("x", "3");
    handler.send("x", "4").unwrap();
    // Handed on in the order of the calls, whatever the order of the awaits.
    assert_eq!(*broker.handed.lock().unwrap(), ["1", "2", "3", "4"]);

    // Not confirmed until the backend answers.
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(second.as_mut().poll(&mut cx).is_pending());

    let mut answers = std::mem::take(&mut *broker.answers.lock().unwrap()).into_iter();
    let (a1, a2, a3) = (
        answers.next().unwrap(),
        answers.next().unwrap(),
        answers.next().unwrap(),
    );
    let refusal = std::io::Error::other("refused");
    a2.send(Err(BrokerError::failed_from("refused", refusal)))
        .unwrap();
    let second = second.await;
    assert!(
        matches!(&second, Err(SendError::Broker(BrokerError::Failed { .. }))),
        "{second:?}"
    );
    // The backend's error, beneath the send's (which is the broker's, transparently).
    let cause = std::error::Error::source(&second.unwrap_err())
        .and_then(|cause| cause.downcast_ref::<std::io::Error>())
        .map(ToString::to_string);
    assert_eq!(cause.as_deref(), Some("refused"));
    a1.send(Ok(())).unwrap();
    first.await.unwrap();
    drop(a3);
    assert!(matches!(
        third.await,
        Err(SendError::Broker(BrokerError::Unconfirmed { .. }))
    ));
}

#[tokio::test]
async fn a_confirmed_send_checks_the_message_before_the_broker_sees_it() {
    let broker = AnsweringBroker::default();
    let server = Server::builder()
        .path("/r/:room")
        .max_message_bytes(4)
        .broker(broker.clone())
        .build()
        .unwrap();
    let handler = handler_on(&server);

    assert!(matches!(
        handler.send_confirmed("x", "too long").await,
        Err(SendError::TooLarge { size: 8, limit: 4 })
    ));
    assert!(broker.handed.lock().unwrap().is_empty());
}
