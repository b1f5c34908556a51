//! Criterion micro-benchmarks of the send path: encoding a frame once and fanning the same bytes
//! out to every member of a room. Run: `cargo bench -p sseio-core`.
//!
//! Members are connections on a sink that only counts frames (`sseio-test-support`'s
//! `CountingSink`), so this measures the core's own cost per send and per delivery, without
//! sockets.

use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sseio_core::{
    Connection, ConnectionStream, Context, EventHandler, HandlerOptions, Outcome, Server,
};
use sseio_test_support::CountingSink;

/// A server on `/s` without heartbeats, its handler `e` whose every connection joins room `r`,
/// and a runtime to connect on; with `send_lag`, measuring `sseio_send_lag_seconds`.
fn bench_server(send_lag: bool) -> (Server, EventHandler, tokio::runtime::Runtime) {
    let server = Server::builder()
        .path("/s")
        .heartbeat_interval(std::time::Duration::ZERO)
        .send_lag_metric(send_lag)
        .build()
        .unwrap();
    let handler = server
        .register_event_handler("e", HandlerOptions::new(|_: &Context| "r"))
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    (server, handler, runtime)
}

/// A server whose room `r` of event `e` has `members` connections.
fn room_of(members: usize) -> (Server, EventHandler, Vec<Connection>) {
    let (server, handler, runtime) = bench_server(false);
    let connections = runtime.block_on(async {
        let mut connections = Vec::with_capacity(members);
        for i in 0..members {
            let request = http::Request::get(format!("/s?clientId={i}&events=e"))
                .body(())
                .unwrap();
            let sink = Arc::new(CountingSink::default());
            connections.push(server.connect((&request).into(), sink).await.unwrap());
        }
        connections
    });
    (server, handler, connections)
}

fn encode(c: &mut Criterion) {
    let (_server, handler, _connections) = room_of(1);
    let mut group = c.benchmark_group("send_to_one");
    let payloads = [
        ("100B", "x".repeat(100)),
        ("100B_4_lines", "xxxxxxxxxxxxxxxxxxxxxxxx\n".repeat(4)),
        ("4KiB", "x".repeat(4096)),
    ];
    for (name, payload) in &payloads {
        group.throughput(Throughput::Bytes(payload.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), payload, |b, payload| {
            b.iter(|| handler.send("r", payload.as_str()).unwrap());
        });
    }
    let json = serde_json::json!({"user": "ada", "items": [1, 2, 3], "text": "hello"});
    group.bench_function("json_value", |b| {
        b.iter(|| handler.send("r", &json).unwrap())
    });
    group.finish();
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_100B");
    let payload = "x".repeat(100);
    for members in [100, 1_000, 10_000] {
        let (_server, handler, _connections) = room_of(members);
        group.throughput(Throughput::Elements(members as u64));
        group.bench_function(BenchmarkId::from_parameter(members), |b| {
            b.iter(|| handler.send("r", payload.as_str()).unwrap());
        });
    }
    group.finish();
}

/// A server whose room `r` of event `e` has `members` production streams (the bounded queue
/// behind [`ConnectionStream`]), as an adapter would get them from `Server::handle`; with
/// `send_lag`, measuring `sseio_send_lag_seconds`.
fn streams_of(members: usize, send_lag: bool) -> (Server, EventHandler, Vec<ConnectionStream>) {
    let (server, handler, runtime) = bench_server(send_lag);
    let streams = runtime.block_on(async {
        let mut streams = Vec::with_capacity(members);
        for i in 0..members {
            let request = http::Request::get(format!("/s?clientId={i}&events=e"))
                .body(())
                .unwrap();
            let Outcome::Stream(response) = server.handle((&request).into()).await else {
                panic!("the stream should open");
            };
            streams.push(response.into_body());
        }
        streams
    });
    (server, handler, streams)
}

/// Takes whatever each stream has queued, as the HTTP layer would on its next poll.
fn drain(streams: &mut [ConnectionStream]) {
    let mut cx = TaskContext::from_waker(Waker::noop());
    for stream in streams {
        while let Poll::Ready(Some(chunk)) =
            futures_core::Stream::poll_next(Pin::new(&mut *stream), &mut cx)
        {
            black_box(chunk.unwrap());
        }
    }
}

/// The send path through the production sink and stream: a send queues the frame on every
/// member, then every stream hands its queue to the (absent) transport. Two sends per drain,
/// so each stream goes from empty to non-empty once and coalesces two frames.
/// The same with the send-lag metric on: two clock reads per stream and batch.
fn fanout_streams(c: &mut Criterion) {
    for (name, send_lag) in [
        ("fanout_streams_100B", false),
        ("fanout_streams_100B_send_lag", true),
    ] {
        fanout_streams_group(c, name, send_lag);
    }
}

fn fanout_streams_group(c: &mut Criterion, name: &str, send_lag: bool) {
    let mut group = c.benchmark_group(name);
    let payload = "x".repeat(100);
    for members in [100, 1_000] {
        let (_server, handler, mut streams) = streams_of(members, send_lag);
        drain(&mut streams);
        group.throughput(Throughput::Elements(2 * members as u64));
        group.bench_function(BenchmarkId::from_parameter(members), |b| {
            b.iter(|| {
                handler.send("r", payload.as_str()).unwrap();
                handler.send("r", payload.as_str()).unwrap();
                drain(&mut streams);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, encode, fanout, fanout_streams);
criterion_main!(benches);
