//! The reconnect-storm benchmark's driver (`benches/storm.sh` builds and runs it): a node on
//! Redis with history holds thousands of streams while a sender posts numbered messages; the
//! node is restarted (`SIGTERM` with no grace, so every stream ends at once, then a new process
//! on the same port), every client reconnects, and the driver measures how long until every
//! client has its stream back and has caught up, what was lost or duplicated, and what the storm
//! cost the node and `redis-server` (CPU, peak RSS).
//!
//! ```text
//! sseio-storm --harness target/release/harness-hyper --redis-url redis://127.0.0.1:6390/ \
//!     --redis-pid 1234 [--clients 10000] [--rooms 100] [--rate 2] [--wait at-once|as-told] \
//!     [--before-ms 3000] [--after-ms 3000]
//! ```
//!
//! Half the clients resume with `Last-Event-ID`, half by `clientId` (see
//! [`conformance_tests::crowd`]). `--wait at-once` brings every client back the moment its
//! stream ends; `--wait as-told` waits for the stream's `retry:`, which a drain spreads (1 to 4 s
//! by default). Prints a summary, then one JSON line.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conformance_tests::Harness;
use conformance_tests::control;
use conformance_tests::crowd::{self, Client, EVENT, GAP_NOTICE, Kind, Tally, Wait};

/// What the command line asked for.
#[derive(Debug, Clone)]
struct Args {
    harness: String,
    redis_url: String,
    redis_pid: u32,
    clients: usize,
    rooms: usize,
    /// Messages per room per second.
    rate: f64,
    wait: Wait,
    before: Duration,
    after: Duration,
}

impl Args {
    fn parse() -> Args {
        let mut args = Args {
            harness: String::new(),
            redis_url: String::new(),
            redis_pid: 0,
            clients: 10_000,
            rooms: 100,
            rate: 2.0,
            wait: Wait::AtOnce,
            before: Duration::from_secs(3),
            after: Duration::from_secs(3),
        };
        let given: Vec<String> = std::env::args().skip(1).collect();
        for pair in given.chunks(2) {
            let [flag, value] = pair else {
                panic!("every flag takes a value: {given:?}");
            };
            let number = || -> u64 {
                value
                    .parse()
                    .unwrap_or_else(|_| panic!("{flag} takes a number"))
            };
            match flag.as_str() {
                "--harness" => args.harness = value.clone(),
                "--redis-url" => args.redis_url = value.clone(),
                "--redis-pid" => args.redis_pid = number() as u32,
                "--clients" => args.clients = number() as usize,
                "--rooms" => args.rooms = number() as usize,
                "--rate" => args.rate = value.parse().expect("--rate takes a number"),
                "--before-ms" => args.before = Duration::from_millis(number()),
                "--after-ms" => args.after = Duration::from_millis(number()),
                "--wait" => {
                    args.wait = match value.as_str() {
                        "at-once" => Wait::AtOnce,
                        "as-told" => Wait::AsTold,
                        other => panic!("--wait is at-once or as-told, not {other}"),
                    }
                }
                other => panic!("unknown flag {other}"),
            }
        }
        assert!(
            !args.harness.is_empty() && !args.redis_url.is_empty() && args.redis_pid != 0,
            "--harness, --redis-url and --redis-pid are required"
        );
        args
    }
}

/// The messages of one room: every number sent, and those answered `200` (recorded).
#[derive(Debug, Default)]
struct Sent {
    attempted: Mutex<BTreeSet<u64>>,
    acknowledged: Mutex<BTreeSet<u64>>,
}

/// `POST /_control/send` of `body` to `room`; whether it was answered `200`.
async fn post(base_url: &str, room: &str, body: &str) -> bool {
    control::send_text_to(base_url, EVENT, room, body.as_bytes().to_vec()).await == Some(200)
}

/// The CPU time a process used so far (`utime + stime` of `/proc/PID/stat`).
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // Linux's USER_HZ is 100 everywhere it runs.
    Duration::from_millis(ticks * 10)
}

/// A `/proc/PID/status` field in bytes (`VmHWM`, `VmRSS`).
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let env = |port: &str| -> Vec<(String, String)> {
        [
            ("PORT", port),
            ("REDIS_URL", args.redis_url.as_str()),
            ("SSEIO_HISTORY", "1000"),
            ("SSEIO_GAP_NOTICE", GAP_NOTICE),
            ("SSEIO_SHUTDOWN_GRACE_MS", "0"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec()
    };
    let start = |port: String| {
        let harness = args.harness.clone();
        let env = env(&port);
        async move {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (&**k, &**v)).collect();
            Harness::start("hyper", &harness, &env).await
        }
    };
    let mut node = start("0".to_owned()).await;
    let base_url = node.base_url().to_owned();
    let port = node.authority().rsplit(':').next().unwrap().to_owned();
    let rooms: Arc<Vec<String>> = Arc::new(
        (0..args.rooms)
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect(),
    );

    // Every stream opened, 256 at a time (the listen backlog is 1024).
    let opening = Instant::now();
    let stop_clients = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::with_capacity(args.clients);
    let mut running = Vec::with_capacity(args.clients);
    for batch in (0..args.clients).collect::<Vec<_>>().chunks(256) {
        let first = clients.len();
        for &i in batch {
            let kind = if i % 2 == 0 {
                Kind::LastEventId
            } else {
                Kind::ClientId
            };
            let client = Arc::new(Client::waiting(kind, (i / 2) % args.rooms, args.wait));
            running.push(crowd::spawn(
                client.clone(),
                base_url.clone(),
                rooms.clone(),
                stop_clients.clone(),
            ));
            clients.push(client);
        }
        wait_for(
            "a batch of streams to open",
            Duration::from_secs(60),
            || clients[first..].iter().all(|c| c.opened()),
        )
        .await;
    }
    let opened_in = opening.elapsed();
    // Once every client got a message sent after it joined, the numbered ones count.
    let warm_until = Instant::now() + Duration::from_secs(60);
    while !clients.iter().all(|c| c.warmed()) {
        assert!(
            Instant::now() < warm_until,
            "not every client got a warm-up message"
        );
        for room in rooms.iter() {
            post(&base_url, room, "warm-up").await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "{} streams open in {opened_in:.1?} and warmed up",
        clients.len()
    );

    // The sender: numbered messages to every room, paced.
    let sent: Arc<Vec<Sent>> = Arc::new((0..args.rooms).map(|_| Sent::default()).collect());
    let stop_sending = Arc::new(AtomicBool::new(false));
    let pace = Duration::from_secs_f64(1.0 / args.rate);
    let sending: Vec<_> = (0..args.rooms)
        .map(|i| {
            let (sent, rooms, stop, base_url) = (
                sent.clone(),
                rooms.clone(),
                stop_sending.clone(),
                base_url.clone(),
            );
            tokio::spawn(async move {
                // Spread the rooms over the pace, so sends do not come in bursts.
                tokio::time::sleep(pace.mul_f64(i as f64 / rooms.len() as f64)).await;
                let mut every = tokio::time::interval(pace);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    every.tick().await;
                    n += 1;
                    sent[i].attempted.lock().unwrap().insert(n);
                    if post(&base_url, &rooms[i], &n.to_string()).await {
                        sent[i].acknowledged.lock().unwrap().insert(n);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(args.before).await;

    // The storm: every stream ends at once, the node comes back on the same port.
    let redis_pid = args.redis_pid;
    let _ = std::fs::write(format!("/proc/{redis_pid}/clear_refs"), "5");
    let redis_cpu_before = cpu(redis_pid);
    let storm = Instant::now();
    node.terminate();
    let status = node.wait_exit(Duration::from_secs(30)).await;
    assert!(
        status.success(),
        "the node exits 0 after its drain: {status}"
    );
    let down = storm.elapsed();
    let mut node = start(port.clone()).await;
    let up = storm.elapsed();
    let node_pid = node
        .child_mut()
        .and_then(|c| c.id())
        .expect("the node's pid");
    let last_before: Vec<u64> = sent
        .iter()
        .map(|s| s.acknowledged.lock().unwrap().last().copied().unwrap_or(0))
        .collect();
    wait_for(
        "every client to reopen its stream",
        Duration::from_secs(120),
        || {
            clients
                .iter()
                .all(|c| c.opened_at().is_some_and(|at| at > storm))
        },
    )
    .await;
    let reopened = storm.elapsed();
    let redis_cpu = cpu(redis_pid) - redis_cpu_before;
    let node_cpu = cpu(node_pid);
    wait_for("every client to catch up", Duration::from_secs(120), || {
        clients.iter().all(|c| c.last() >= last_before[c.room])
    })
    .await;
    let caught_up = storm.elapsed();
    let node_peak = status_bytes(node_pid, "VmHWM:");
    let redis_peak = status_bytes(redis_pid, "VmHWM:");

    tokio::time::sleep(args.after).await;
    stop_sending.store(true, Ordering::SeqCst);
    for sending in sending {
        sending.await.expect("a sender");
    }
    let last: Vec<u64> = sent
        .iter()
        .map(|s| s.acknowledged.lock().unwrap().last().copied().unwrap_or(0))
        .collect();
    let converge = Instant::now() + Duration::from_secs(60);
    while clients.iter().any(|c| c.last() < last[c.room]) && Instant::now() < converge {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_clients.store(true, Ordering::SeqCst);
    for running in running {
        running.await.expect("a client");
    }
    let mut by_kind = Vec::new();
    for kind in [Kind::LastEventId, Kind::ClientId] {
        let mut total = Tally::default();
        for client in clients.iter().filter(|c| c.kind == kind) {
            total.add(crowd::tally(
                &client.seen(),
                &sent[client.room].acknowledged.lock().unwrap(),
                &sent[client.room].attempted.lock().unwrap(),
            ));
        }
        by_kind.push((kind, total));
    }
    let acknowledged: usize = sent
        .iter()
        .map(|s| s.acknowledged.lock().unwrap().len())
        .sum();
    let attempted: usize = sent.iter().map(|s| s.attempted.lock().unwrap().len()).sum();
    let refused: usize = clients.iter().map(|c| c.reconnects().1).sum();

    let wait = match args.wait {
        Wait::AtOnce => "at-once",
        _ => "as-told",
    };
    println!(
        "{} streams in {} rooms, {} messages/s per room, reconnecting {wait}",
        args.clients, args.rooms, args.rate
    );
    println!(
        "  node down {down:.2?} after SIGTERM, back up at {up:.2?}; every stream reopened at \
         {reopened:.2?}, every client caught up at {caught_up:.2?} ({refused} connects refused \
         while it was down)"
    );
    println!(
        "  new node: {:.2} s CPU until every stream reopened, peak RSS {:.1} MiB; redis-server: \
         {:.2} s CPU over the storm, peak RSS {:.1} MiB",
        node_cpu.as_secs_f64(),
        mib(node_peak),
        redis_cpu.as_secs_f64(),
        mib(redis_peak)
    );
    println!("  messages: {attempted} sent, {acknowledged} acknowledged");
    for (kind, total) in &by_kind {
        println!(
            "  {} clients: lost {} ({} across a reconnect), duplicated {}, out of order {}, \
             resynced {} (covering {} messages)",
            kind.name(),
            total.lost,
            total.lost_across_reconnect,
            total.duplicated,
            total.out_of_order,
            total.resyncs,
            total.skipped_with_notice
        );
    }
    let tallies: Vec<String> = by_kind
        .iter()
        .map(|(kind, t)| {
            format!(
                r#""{}":{{"lost":{},"duplicated":{},"out_of_order":{},"resynced":{}}}"#,
                kind.name(),
                t.lost,
                t.duplicated,
                t.out_of_order,
                t.resyncs
            )
        })
        .collect();
    println!(
        r#"{{"clients":{},"rooms":{},"rate":{},"wait":"{wait}","down_s":{:.3},"up_s":{:.3},"reopened_s":{:.3},"caught_up_s":{:.3},"refused":{refused},"node_cpu_s":{:.2},"node_peak_rss_mib":{:.1},"redis_cpu_s":{:.2},"redis_peak_rss_mib":{:.1},"attempted":{attempted},"acknowledged":{acknowledged},{}}}"#,
        args.clients,
        args.rooms,
        args.rate,
        down.as_secs_f64(),
        up.as_secs_f64(),
        reopened.as_secs_f64(),
        caught_up.as_secs_f64(),
        node_cpu.as_secs_f64(),
        mib(node_peak),
        redis_cpu.as_secs_f64(),
        mib(redis_peak),
        tallies.join(",")
    );
    drop(node);
}

/// Polls `done` every 20 ms until it holds, panicking after `limit`.
async fn wait_for(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
