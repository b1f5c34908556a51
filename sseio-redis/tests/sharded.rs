//! Sharded Pub/Sub against a real one-node Redis Cluster (the three-master cluster, with
//! failover and resharding, is in `conformance-tests`' `cluster` target): a confirmed send to a
//! room whose master is down fails at once with the typed `Unavailable`, never hangs, and the
//! broker follows the master back by itself.

mod support;

use std::time::Duration;

use sseio_core::{BrokerError, Context, HandlerOptions, SendError, Server};
use sseio_redis::RedisBroker;
use support::{Redis, WAIT};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_to_a_master_that_is_down_fails_fast_with_unavailable() {
    let mut redis = Redis::start_cluster().await;
    let broker = RedisBroker::builder(redis.url())
        .sharded(true)
        .connect()
        .await
        .expect("the broker connects");
    let server = Server::builder()
        .path("/r/:room")
        .broker(broker)
        .build()
        .unwrap();
    let handler = server
        .register_event_handler(
            "e",
            HandlerOptions::new(|ctx: &Context| ctx.param("room").unwrap_or_default().to_owned()),
        )
        .unwrap();
    handler.send_confirmed("r", "before").await.unwrap();

    redis.kill().await;
    let deadline = Instant::now() + WAIT;
    let error = loop {
        let started = Instant::now();
        let sent = tokio::time::timeout(Duration::from_secs(7), handler.send_confirmed("r", "x"))
            .await
            .expect("a confirmed send never hangs");
        match sent {
            // Written before the node noticed: it may have been published or not.
            Err(SendError::Broker(BrokerError::Unconfirmed { .. })) => {}
            Err(SendError::Broker(error @ BrokerError::Unavailable { .. })) => {
                assert!(
                    started.elapsed() < Duration::from_secs(1),
                    "refused at once, not at a timeout"
                );
                break error;
            }
            other => panic!("a send to a master that is down: {other:?}"),
        }
        assert!(Instant::now() < deadline, "the broker never noticed");
    };
    assert!(error.to_string().contains("master"), "{error}");
    assert!(
        server.is_ready(),
        "one master down: the node still serves the rooms of the others"
    );

    redis.restart().await;
    let deadline = Instant::now() + WAIT;
    while handler.send_confirmed("r", "after").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the broker did not follow the master back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
