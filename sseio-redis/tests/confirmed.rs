//! Confirmed sends against a real `redis-server` (Debian's, started here on a free port; the
//! multi-node behaviour is checked in `conformance-tests`): `send_confirmed` reports success
//! only for a message Redis took, and fails with a typed error, in a bounded time, when Redis
//! is gone.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sseio_core::{BrokerError, Context, EventHandler, HandlerOptions, History, SendError, Server};
use sseio_redis::RedisBroker;
use support::{Redis, WAIT};
use tokio::time::Instant;

/// The longest a confirmed send may take, whatever happens to Redis: the broker's timeout
/// (5 s) and some slack for a loaded machine.
const BOUND: Duration = Duration::from_secs(7);

/// A server on a broker on `redis`, with one handler, `e`, whose rooms keep `history`.
async fn node(redis: &Redis, history: Option<History>) -> (Server, EventHandler) {
    let broker = RedisBroker::builder(redis.url())
        // Quick to come back once Redis is restarted.
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(200))
        .connect()
        .await
        .expect("the broker connects");
    let mut builder = Server::builder().path("/r/:room");
    if let Some(history) = history {
        builder = builder.history(history);
    }
    let server = builder.broker(broker).build().unwrap();
    let handler = server
        .register_event_handler(
            "e",
            HandlerOptions::new(|ctx: &Context| ctx.param("room").unwrap_or_default().to_owned()),
        )
        .unwrap();
    (server, handler)
}

/// What every confirmed send of one sender came to.
#[derive(Debug, Default)]
struct Outcomes {
    /// The messages confirmed, by number.
    confirmed: Vec<u64>,
    /// The typed errors, by number.
    failed: Vec<(u64, BrokerError)>,
    /// The outcomes of the sends started once Redis was gone.
    after_kill: Vec<Result<(), BrokerError>>,
    /// The longest any send took.
    longest: Duration,
}

/// Sends numbered messages `first, first + stride, ...` to room `r` one after the other, each
/// within [`BOUND`], until it has sent `after` of them since `killed` was set.
async fn sender(
    handler: EventHandler,
    first: u64,
    stride: u64,
    killed: Arc<AtomicBool>,
    after: usize,
) -> Outcomes {
    let mut outcomes = Outcomes::default();
    let mut n = first;
    while outcomes.after_kill.len() < after {
        let after_kill = killed.load(Ordering::SeqCst);
        let started = Instant::now();
        let sent = tokio::time::timeout(BOUND, handler.send_confirmed("r", &n.to_string()))
            .await
            .unwrap_or_else(|_| {
                panic!("a confirmed send of {n} did not complete within {BOUND:?}")
            });
        outcomes.longest = outcomes.longest.max(started.elapsed());
        let sent = match sent {
            Ok(()) => Ok(()),
            Err(SendError::Broker(error)) => Err(error),
            Err(other) => panic!("an error that is not the broker's: {other}"),
        };
        match &sent {
            Ok(()) => outcomes.confirmed.push(n),
            Err(error) => outcomes.failed.push((n, error.clone())),
        }
        if after_kill {
            outcomes.after_kill.push(sent);
        }
        n += stride;
        // A send refused at once is ready at once: let the test's other tasks run.
        tokio::task::yield_now().await;
    }
    outcomes
}

/// The numbers in room `r`'s history stream, as Redis has them.
async fn recorded(redis: &Redis) -> Vec<u64> {
    let key = format!("sseio:history:{}:e:r", "e".len());
    let entries = redis
        .command(&["XRANGE", &key, "-", "+"])
        .await
        .expect("XRANGE");
    let redis::Value::Array(entries) = entries else {
        panic!("XRANGE answered {entries:?}");
    };
    entries
        .iter()
        .map(|entry| {
            let text = format!("{entry:?}");
            // [id, [p, payload, t, time]]: the payload is the number sent.
            let redis::Value::Array(parts) = entry else {
                panic!("an entry {text}")
            };
            let redis::Value::Array(fields) = &parts[1] else {
                panic!("an entry {text}")
            };
            match &fields[1] {
                redis::Value::BulkString(bytes) => std::str::from_utf8(bytes)
                    .expect("UTF-8")
                    .parse()
                    .expect("a number"),
                other => panic!("a payload {other:?}"),
            }
        })
        .collect()
}

/// Redis is killed while four senders keep sending confirmed messages: every send completes
/// within the bound, every one that reported success is in the history Redis saved before it
/// answered, and once Redis is gone no send reports success: each fails with a typed error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_send_is_recorded_or_fails_in_a_bounded_time_when_redis_is_killed() {
    let mut redis = Redis::start().await;
    let (server, handler) = node(&redis, Some(History::new(1_000_000))).await;
    let killed = Arc::new(AtomicBool::new(false));
    const SENDERS: u64 = 4;
    const AFTER: usize = 20;
    let senders: Vec<_> = (0..SENDERS)
        .map(|i| tokio::spawn(sender(handler.clone(), i, SENDERS, killed.clone(), AFTER)))
        .collect();
    // Sends are being confirmed.
    let deadline = Instant::now() + WAIT;
    while recorded(&redis).await.len() < 200 {
        assert!(Instant::now() < deadline, "no confirmed sends");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    redis.kill().await;
    // From now on, nothing can be confirmed: each sender sends `AFTER` more.
    let kill = Instant::now();
    killed.store(true, Ordering::SeqCst);
    let mut all = Outcomes::default();
    for sender in senders {
        let outcomes = sender.await.expect("a sender");
        all.confirmed.extend(outcomes.confirmed);
        all.failed.extend(outcomes.failed);
        all.after_kill.extend(outcomes.after_kill);
        all.longest = all.longest.max(outcomes.longest);
    }
    let succeeded = all.after_kill.iter().filter(|sent| sent.is_ok()).count();
    assert_eq!(
        succeeded,
        0,
        "of {} sends started once Redis was gone, none is confirmed",
        all.after_kill.len()
    );
    for (n, error) in &all.failed {
        assert!(
            matches!(
                error,
                BrokerError::Unavailable { .. }
                    | BrokerError::Unconfirmed { .. }
                    | BrokerError::TimedOut { .. }
            ),
            "message {n}: a broker error saying Redis is gone, not {error:?}"
        );
    }
    let unconfirmed = all
        .failed
        .iter()
        .filter(|(_, e)| !matches!(e, BrokerError::Unavailable { .. }))
        .count();
    println!(
        "{} confirmed, {} failed ({unconfirmed} of them handed to Redis unanswered); the longest \
         send took {:?}; the senders were done {:?} after the kill",
        all.confirmed.len(),
        all.failed.len(),
        all.longest,
        kill.elapsed()
    );

    // What Redis acknowledged, it saved first: every confirmed message is in its history.
    redis.restart().await;
    let saved = recorded(&redis).await;
    let saved: std::collections::HashSet<u64> = saved.into_iter().collect();
    let missing: Vec<u64> = all
        .confirmed
        .iter()
        .copied()
        .filter(|n| !saved.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "confirmed but not recorded: {missing:?} (of {} confirmed)",
        all.confirmed.len()
    );
    // Once the broker is back, confirmed sends succeed again.
    let deadline = Instant::now() + WAIT;
    while !server.is_ready() {
        assert!(Instant::now() < deadline, "the broker did not reconnect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handler.send_confirmed("r", "again").await.unwrap();
}

/// Without history, a confirmed send is a `PUBLISH` Redis answered: with Redis killed, it fails
/// at once with a typed error and never reports success, however many are sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_publish_to_a_killed_redis_fails_with_a_typed_error() {
    let mut redis = Redis::start().await;
    let (_server, handler) = node(&redis, None).await;
    handler.send_confirmed("r", "before").await.unwrap();

    redis.kill().await;
    for n in 0..50 {
        let started = Instant::now();
        let sent = tokio::time::timeout(BOUND, handler.send_confirmed("r", "after"))
            .await
            .unwrap_or_else(|_| panic!("send {n} after the kill did not complete in {BOUND:?}"));
        assert!(
            matches!(
                sent,
                Err(SendError::Broker(
                    BrokerError::Unavailable { .. }
                        | BrokerError::Unconfirmed { .. }
                        | BrokerError::TimedOut { .. }
                ))
            ),
            "send {n} after the kill: {sent:?} after {:?}",
            started.elapsed()
        );
    }
}
