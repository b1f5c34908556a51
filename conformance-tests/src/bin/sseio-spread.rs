//! The spread benchmark's driver (`benches/spread-100k.sh` builds and runs it): idle streams
//! spread over several harness nodes of one Redis cluster, more than one process may hold, then
//! broadcasts to one room that has members on every node.
//!
//! One process may hold only so many descriptors, so the driver is one binary with three roles:
//!
//! ```text
//! sseio-spread hold --url http://127.0.0.1:P --streams N --room R --members M \
//!     [--idle-rooms 100] [--src-ips 64] [--concurrency 256]
//! sseio-spread send --url http://127.0.0.1:P --room R [--count 100] [--rate 2] [--payload 100]
//! sseio-spread run --urls U1,U2,.. --pids P1,P2,.. [--redis-pid P] --streams-per-node N \
//!     [--room-size 5000] [--broadcasts 100] [--rate 2] [--payload 100] [--settle-secs 5] \
//!     [--idle-secs 30] [--drain-secs 3] [--idle-rooms 100] [--src-ips 64] [--concurrency 256] \
//!     [--details FILE]
//! ```
//!
//! - `hold` opens N streams to one node (`M` of them in room `R`, the others spread over
//!   `--idle-rooms` other rooms), from source addresses rotating over `127.0.0.1..=127.0.0.K`,
//!   and prints `ready OPENED FAILED MS` on stdout once every stream has its head, then `warm`
//!   once each member of `R` got a probe (a message numbered 0). It records every numbered
//!   message of `R` with its receive time, and prints `report <JSON>` when its stdin says `stop`
//!   (or ends).
//! - `send` posts `--count` numbered messages to room `R` through the node's
//!   `POST /_control/send`, paced at `--rate` per second, and prints one JSON line of what it
//!   sent. Each body is `SEQ SEND_NS xxx…`, `--payload` bytes.
//! - `run` is the coordinator: it reads each node's RSS, starts one `hold` child per node
//!   (members of the room split evenly over the nodes), reads the RSS again once every stream is
//!   open and settled, the CPU time of every node over an idle window (the heartbeats' cost),
//!   sends the probes and the broadcasts through the first node (with the CPU time of every
//!   process from the first send to the last answer), stops the holders and merges their
//!   reports: for each broadcast, the time from just before its request until the last member
//!   of the room, on any node, had it. It prints a summary, then one JSON line; `--details`
//!   also writes each broadcast's arrivals per node.
//!
//! Times are nanoseconds of the wall clock (`CLOCK_REALTIME`), which every process of the
//! machine reads alike; the standard library does not expose `CLOCK_MONOTONIC`'s value, and
//! both clocks are slewed alike by time synchronisation. Only a step of the clock during the
//! run would spoil a latency; `run` reports how far the wall clock moved against its monotonic
//! one (`clock_drift_ms`), so a step would show.

use std::collections::HashMap;
use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use conformance_tests::control;
use conformance_tests::http1::Request;
use conformance_tests::sse::{SseItem, SseParser};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// The event every stream listens to and every broadcast is sent as.
const EVENT: &str = "normal-event";
/// How long a stream may take to connect and get its head before it is retried.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Tries per stream before it counts as failed.
const OPEN_TRIES: usize = 3;
/// The highest message number a member records; a larger one is a bad payload (it would make
/// the member's record of what it got that large).
const MAX_SEQ: u64 = 1 << 20;
/// The most streams one holder opens (one process holds far fewer descriptors anyway).
const MAX_STREAMS: usize = 1 << 20;

/// What went wrong, in words that name what failed.
type Failed = String;

/// A role and its arguments.
#[derive(Debug, Clone, PartialEq)]
enum Role {
    Hold(HoldArgs),
    Send(SendArgs),
    Run(RunArgs),
}

/// `hold`: streams to one node.
#[derive(Debug, Clone, PartialEq)]
struct HoldArgs {
    url: String,
    streams: usize,
    room: String,
    members: usize,
    idle_rooms: usize,
    src_ips: u8,
    concurrency: usize,
}

/// `send`: numbered broadcasts to one room.
#[derive(Debug, Clone, PartialEq)]
struct SendArgs {
    url: String,
    room: String,
    count: u64,
    /// Sends per second.
    rate: f64,
    payload: usize,
}

/// `run`: the whole benchmark over nodes already started.
#[derive(Debug, Clone, PartialEq)]
struct RunArgs {
    urls: Vec<String>,
    pids: Vec<u32>,
    redis_pid: Option<u32>,
    streams_per_node: usize,
    room_size: usize,
    broadcasts: u64,
    rate: f64,
    payload: usize,
    settle: Duration,
    idle: Duration,
    drain: Duration,
    idle_rooms: usize,
    src_ips: u8,
    concurrency: usize,
    /// Where to write each broadcast's arrivals per node, one JSON line per broadcast.
    details: Option<String>,
}

/// The flags after the role, as `(flag, value)` pairs: every flag takes a value.
fn pairs(given: &[String]) -> Result<Vec<(&str, &str)>, Failed> {
    given
        .chunks(2)
        .map(|pair| match pair {
            [flag, value] if flag.starts_with("--") => Ok((flag.as_str(), value.as_str())),
            [flag, _] => Err(format!("expected a --flag, got {flag:?}")),
            [flag] => Err(format!("{flag} takes a value")),
            _ => Err("an empty flag".to_owned()),
        })
        .collect()
}

fn number<T: FromStr>(flag: &str, value: &str) -> Result<T, Failed> {
    value
        .parse()
        .map_err(|_| format!("{flag} takes a number, not {value:?}"))
}

/// A rate per second, from one every 1,000 s to a million per second.
fn rate(flag: &str, value: &str) -> Result<f64, Failed> {
    match number::<f64>(flag, value)? {
        v if (0.001..=1e6).contains(&v) => Ok(v),
        _ => Err(format!(
            "{flag} must be a rate per second from 0.001 to 1000000, not {value:?}"
        )),
    }
}

fn secs(flag: &str, value: &str) -> Result<Duration, Failed> {
    let v: f64 = number(flag, value)?;
    Duration::try_from_secs_f64(v).map_err(|_| format!("{flag} takes seconds, not {value:?}"))
}

fn url(flag: &str, value: &str) -> Result<String, Failed> {
    let rest = value
        .strip_prefix("http://")
        .ok_or_else(|| format!("{flag} takes an http://127.0.0.x:PORT URL, not {value:?}"))?;
    let (host, port) = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .ok_or_else(|| format!("{flag} needs an explicit port: {value:?}"))?;
    let loopback = host == "localhost" || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback || port.parse::<u16>().is_err() {
        return Err(format!(
            "{flag} takes a loopback http://127.0.0.x:PORT URL, not {value:?}"
        ));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

fn src_ips(flag: &str, value: &str) -> Result<u8, Failed> {
    match number::<u8>(flag, value) {
        Ok(n) if (1..=254).contains(&n) => Ok(n),
        _ => Err(format!(
            "{flag} takes a number of addresses from 1 to 254, not {value:?}"
        )),
    }
}

fn required<T>(value: Option<T>, flag: &str) -> Result<T, Failed> {
    value.ok_or_else(|| format!("{flag} is required"))
}

impl Role {
    /// Parses the command line after the program's name.
    fn parse(given: &[String]) -> Result<Role, Failed> {
        let (role, rest) = given
            .split_first()
            .ok_or("the first argument is the role: hold, send or run")?;
        let flags = pairs(rest)?;
        let unknown = |flag: &str| format!("{role} has no flag {flag}");
        match role.as_str() {
            "hold" => {
                let (mut url_, mut streams, mut room, mut members) = (None, None, None, None);
                let mut args = HoldArgs {
                    url: String::new(),
                    streams: 0,
                    room: String::new(),
                    members: 0,
                    idle_rooms: 100,
                    src_ips: 64,
                    concurrency: 256,
                };
                for (flag, value) in flags {
                    match flag {
                        "--url" => url_ = Some(url(flag, value)?),
                        "--streams" => streams = Some(number(flag, value)?),
                        "--room" => room = Some(value.to_owned()),
                        "--members" => members = Some(number(flag, value)?),
                        "--idle-rooms" => args.idle_rooms = number(flag, value)?,
                        "--src-ips" => args.src_ips = src_ips(flag, value)?,
                        "--concurrency" => args.concurrency = number(flag, value)?,
                        _ => return Err(unknown(flag)),
                    }
                }
                args.url = required(url_, "--url")?;
                args.streams = required(streams, "--streams")?;
                args.room = required(room, "--room")?;
                args.members = required(members, "--members")?;
                if args.streams > MAX_STREAMS {
                    return Err(format!("--streams is at most {MAX_STREAMS}"));
                }
                if args.members > args.streams {
                    return Err(format!(
                        "--members {} is more than --streams {}",
                        args.members, args.streams
                    ));
                }
                if args.idle_rooms == 0 || args.concurrency == 0 || args.room.is_empty() {
                    return Err(
                        "--idle-rooms and --concurrency must be at least 1, --room not empty"
                            .into(),
                    );
                }
                Ok(Role::Hold(args))
            }
            "send" => {
                let (mut url_, mut room) = (None, None);
                let mut args = SendArgs {
                    url: String::new(),
                    room: String::new(),
                    count: 100,
                    rate: 2.0,
                    payload: 100,
                };
                for (flag, value) in flags {
                    match flag {
                        "--url" => url_ = Some(url(flag, value)?),
                        "--room" => room = Some(value.to_owned()),
                        "--count" => args.count = number(flag, value)?,
                        "--rate" => args.rate = rate(flag, value)?,
                        "--payload" => args.payload = number(flag, value)?,
                        _ => return Err(unknown(flag)),
                    }
                }
                args.url = required(url_, "--url")?;
                args.room = required(room, "--room")?;
                if args.count > MAX_SEQ {
                    return Err(format!("--count is at most {MAX_SEQ}"));
                }
                Ok(Role::Send(args))
            }
            "run" => {
                let (mut urls, mut pids, mut per_node) = (None, None, None);
                let mut args = RunArgs {
                    urls: Vec::new(),
                    pids: Vec::new(),
                    redis_pid: None,
                    streams_per_node: 0,
                    room_size: 5000,
                    broadcasts: 100,
                    rate: 2.0,
                    payload: 100,
                    settle: Duration::from_secs(5),
                    idle: Duration::from_secs(30),
                    drain: Duration::from_secs(3),
                    idle_rooms: 100,
                    src_ips: 64,
                    concurrency: 256,
                    details: None,
                };
                for (flag, value) in flags {
                    match flag {
                        "--details" => args.details = Some(value.to_owned()),
                        "--urls" => {
                            urls = Some(
                                value
                                    .split(',')
                                    .map(|u| url(flag, u))
                                    .collect::<Result<Vec<_>, _>>()?,
                            )
                        }
                        "--pids" => {
                            pids =
                                Some(value.split(',').map(|p| number(flag, p)).collect::<Result<
                                    Vec<u32>,
                                    _,
                                >>(
                                )?)
                        }
                        "--redis-pid" => args.redis_pid = Some(number(flag, value)?),
                        "--streams-per-node" => per_node = Some(number(flag, value)?),
                        "--room-size" => args.room_size = number(flag, value)?,
                        "--broadcasts" => args.broadcasts = number(flag, value)?,
                        "--rate" => args.rate = rate(flag, value)?,
                        "--payload" => args.payload = number(flag, value)?,
                        "--settle-secs" => args.settle = secs(flag, value)?,
                        "--idle-secs" => args.idle = secs(flag, value)?,
                        "--drain-secs" => args.drain = secs(flag, value)?,
                        "--idle-rooms" => args.idle_rooms = number(flag, value)?,
                        "--src-ips" => args.src_ips = src_ips(flag, value)?,
                        "--concurrency" => args.concurrency = number(flag, value)?,
                        _ => return Err(unknown(flag)),
                    }
                }
                args.urls = required(urls, "--urls")?;
                args.pids = required(pids, "--pids")?;
                args.streams_per_node = required(per_node, "--streams-per-node")?;
                if args.streams_per_node > MAX_STREAMS {
                    return Err(format!("--streams-per-node is at most {MAX_STREAMS}"));
                }
                if args.urls.len() != args.pids.len() {
                    return Err(format!(
                        "--urls names {} nodes but --pids {}",
                        args.urls.len(),
                        args.pids.len()
                    ));
                }
                let total = args.streams_per_node * args.urls.len();
                if args.room_size < args.urls.len() || args.room_size > total {
                    return Err(format!(
                        "--room-size {} must be at least one member per node ({}) and at most \
                         every stream ({total})",
                        args.room_size,
                        args.urls.len()
                    ));
                }
                if args.broadcasts == 0 || args.idle_rooms == 0 || args.concurrency == 0 {
                    return Err(
                        "--broadcasts, --idle-rooms and --concurrency must be at least 1".into(),
                    );
                }
                if args.broadcasts > MAX_SEQ {
                    return Err(format!("--broadcasts is at most {MAX_SEQ}"));
                }
                Ok(Role::Run(args))
            }
            other => Err(format!("unknown role {other:?}: hold, send or run")),
        }
    }
}

/// Nanoseconds of the wall clock, shared by every process of the machine.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Splits `total` members over `nodes` as evenly as can be, the first nodes taking one more.
fn split(total: usize, nodes: usize) -> Vec<usize> {
    (0..nodes)
        .map(|i| total / nodes + usize::from(i < total % nodes))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// hold

/// The deliveries of one numbered message on one holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Arrivals {
    seq: u64,
    /// How many members got it (each at most once: duplicates are counted apart).
    count: usize,
    first_ns: u64,
    last_ns: u64,
}

/// What a holder prints when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct HoldReport {
    streams: usize,
    opened: usize,
    failed: usize,
    /// The first failure's message, if any.
    first_error: Option<String>,
    members: usize,
    /// Comments received (heartbeats), every stream together.
    heartbeats: u64,
    /// Streams whose body ended or failed before `stop`.
    ended_early: usize,
    duplicates: usize,
    out_of_order: usize,
    bad_payload: usize,
    /// Numbered messages, probe (0) included.
    arrivals: Vec<Arrivals>,
}

/// What every stream of a holder adds to.
#[derive(Debug, Default)]
struct Tallies {
    heartbeats: AtomicU64,
    ended_early: AtomicUsize,
    duplicates: AtomicUsize,
    out_of_order: AtomicUsize,
    bad_payload: AtomicUsize,
    /// Members that got a probe.
    probed: AtomicUsize,
    arrivals: Mutex<HashMap<u64, Arrivals>>,
}

impl Tallies {
    fn arrived(&self, seq: u64, at: u64) {
        let mut arrivals = self.arrivals.lock().unwrap();
        let a = arrivals.entry(seq).or_insert(Arrivals {
            seq,
            count: 0,
            first_ns: at,
            last_ns: at,
        });
        a.count += 1;
        a.first_ns = a.first_ns.min(at);
        a.last_ns = a.last_ns.max(at);
    }
}

/// The numbers of the messages one member got so far: a bit per number.
#[derive(Debug, Default)]
struct SeenSet {
    bits: Vec<u64>,
    highest: u64,
}

impl SeenSet {
    /// Records `seq`; whether it is new.
    fn insert(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        let new = self.bits[word] & bit == 0;
        self.bits[word] |= bit;
        self.highest = self.highest.max(seq);
        new
    }
}

/// Opens one stream, trying again a few times; the response whose head said `200`.
async fn open(
    url: &str,
    target: &str,
    source: IpAddr,
) -> Result<conformance_tests::http1::Response, Failed> {
    let mut last = String::new();
    for attempt in 0..OPEN_TRIES {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
        let request = Request::get(target)
            .header("Accept", "text/event-stream")
            .header("Cache-Control", "no-cache")
            .source_ip(source);
        match tokio::time::timeout(OPEN_TIMEOUT, request.send(url)).await {
            Ok(Ok(response)) if response.status() == 200 => return Ok(response),
            Ok(Ok(response)) => last = format!("{url}{target}: status {}", response.status()),
            Ok(Err(e)) => last = format!("{url}{target} from {source}: {e}"),
            Err(_) => last = format!("{url}{target}: no head within {OPEN_TIMEOUT:?}"),
        }
    }
    Err(last)
}

/// Reads one stream until it ends, adding what it gets to `tallies`; a member checks and
/// records the numbered messages of the room.
async fn read_stream(
    mut response: conformance_tests::http1::Response,
    member: bool,
    tallies: Arc<Tallies>,
) {
    let mut parser = SseParser::new();
    let mut seen = SeenSet::default();
    loop {
        let chunk = match response.next_chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) | Err(_) => break,
        };
        let at = now_ns();
        parser.push(&chunk);
        while let Some(item) = parser.next_item() {
            match item {
                SseItem::Comment(_) => {
                    tallies.heartbeats.fetch_add(1, Ordering::Relaxed);
                }
                SseItem::Event(event) if member && event.event == EVENT => {
                    let Some(seq) = event
                        .data
                        .split(' ')
                        .next()
                        .and_then(|s| s.parse::<u64>().ok())
                        .filter(|&seq| seq <= MAX_SEQ)
                    else {
                        tallies.bad_payload.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let highest = seen.highest;
                    if !seen.insert(seq) {
                        // Probes are all numbered 0 and sent until every member got one.
                        if seq != 0 {
                            tallies.duplicates.fetch_add(1, Ordering::Relaxed);
                        }
                        continue;
                    }
                    if seq == 0 {
                        tallies.probed.fetch_add(1, Ordering::Relaxed);
                    } else if seq < highest {
                        tallies.out_of_order.fetch_add(1, Ordering::Relaxed);
                    }
                    tallies.arrived(seq, at);
                }
                SseItem::Event(_) => {}
            }
        }
    }
    tallies.ended_early.fetch_add(1, Ordering::Relaxed);
}

/// A line on stdin (`stop`) or its end: the signal to report.
fn stop_signal() -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        let _ = tx.send(());
    });
    rx
}

async fn hold(args: HoldArgs) -> Result<(), Failed> {
    let stop = stop_signal();
    let tallies = Arc::new(Tallies::default());
    let started = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    // Each stream's outcome: whether it is a member, and the failure if it could not open.
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel::<(bool, Option<Failed>)>();
    for i in 0..args.streams {
        let member = i < args.members;
        let room = if member {
            args.room.clone()
        } else {
            format!("{}-idle-{}", args.room, i % args.idle_rooms)
        };
        let target = format!(
            "/files/{}/pull?clientId=spread-{}-{i}&events={EVENT}",
            control::encode_component(&room),
            uuid::Uuid::new_v4().simple()
        );
        let source = IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            1 + (i % args.src_ips as usize) as u8,
        ));
        let (url, permits, tallies, opened_tx) = (
            args.url.clone(),
            permits.clone(),
            tallies.clone(),
            opened_tx.clone(),
        );
        tokio::spawn(async move {
            let Ok(permit) = permits.acquire_owned().await else {
                return;
            };
            let opened = open(&url, &target, source).await;
            drop(permit);
            match opened {
                Ok(response) => {
                    let _ = opened_tx.send((member, None));
                    read_stream(response, member, tallies).await;
                }
                Err(e) => {
                    let _ = opened_tx.send((member, Some(e)));
                }
            }
        });
    }
    drop(opened_tx);
    let (mut opened, mut failed, mut failed_members, mut first_error) = (0, 0, 0, None);
    while opened + failed < args.streams {
        let Some((member, outcome)) = opened_rx.recv().await else {
            break;
        };
        match outcome {
            None => opened += 1,
            Some(e) => {
                failed += 1;
                failed_members += usize::from(member);
                first_error.get_or_insert(e);
            }
        }
    }
    println!("ready {opened} {failed} {}", started.elapsed().as_millis());
    // `warm` once every member that opened got a probe; the coordinator stops probing then.
    let tallies_warm = tallies.clone();
    let members = args.members;
    tokio::spawn(async move {
        while tallies_warm.probed.load(Ordering::Relaxed) + failed_members < members {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("warm");
    });
    let _ = stop.await;
    let mut arrivals: Vec<Arrivals> = tallies.arrivals.lock().unwrap().values().copied().collect();
    arrivals.sort_by_key(|a| a.seq);
    let report = HoldReport {
        streams: args.streams,
        opened,
        failed,
        first_error,
        members: args.members,
        heartbeats: tallies.heartbeats.load(Ordering::Relaxed),
        ended_early: tallies.ended_early.load(Ordering::Relaxed),
        duplicates: tallies.duplicates.load(Ordering::Relaxed),
        out_of_order: tallies.out_of_order.load(Ordering::Relaxed),
        bad_payload: tallies.bad_payload.load(Ordering::Relaxed),
        arrivals,
    };
    let json = serde_json::to_string(&report).map_err(|e| format!("encoding the report: {e}"))?;
    println!("report {json}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// send

/// One broadcast as the sender saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Sent {
    seq: u64,
    /// Just before the request's connection was opened (the time its body carries).
    send_ns: u64,
    /// When its answer's head arrived.
    answered_ns: u64,
    /// Its status, 0 when the request failed.
    status: u16,
}

/// Posts message `seq` to `room`, padded to `payload` bytes.
async fn post(url: &str, room: &str, seq: u64, payload: usize) -> Sent {
    let send_ns = now_ns();
    let mut body = format!("{seq} {send_ns} ");
    while body.len() < payload {
        body.push('x');
    }
    let status = control::send_text_to(url, EVENT, room, body.into_bytes())
        .await
        .unwrap_or(0);
    Sent {
        seq,
        send_ns,
        answered_ns: now_ns(),
        status,
    }
}

/// Posts messages `1..=count`, paced at `rate` per second (open loop: a slow answer does not
/// delay the next send).
async fn send_all(url: &str, room: &str, count: u64, rate: f64, payload: usize) -> Vec<Sent> {
    let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sending = Vec::new();
    for seq in 1..=count {
        every.tick().await;
        let (url, room) = (url.to_owned(), room.to_owned());
        sending.push(tokio::spawn(async move {
            post(&url, &room, seq, payload).await
        }));
    }
    let mut sent = Vec::with_capacity(sending.len());
    for s in sending {
        if let Ok(s) = s.await {
            sent.push(s);
        }
    }
    sent
}

// ---------------------------------------------------------------------------------------------
// run

/// `/proc/PID/status` `VmRSS`, in bytes.
fn rss(pid: u32) -> Result<u64, Failed> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("reading /proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// CPU seconds a process used so far (`utime + stime` of `/proc/PID/stat`).
fn cpu_secs(pid: u32) -> Result<f64, Failed> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("reading /proc/{pid}/stat: {e}"))?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: Result<Vec<u64>, _> = [11, 12]
        .iter()
        .map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()).ok_or(()))
        .collect();
    let ticks = ticks.map_err(|()| format!("no utime/stime in /proc/{pid}/stat"))?;
    // Linux's USER_HZ is 100 everywhere it runs.
    Ok(ticks.iter().sum::<u64>() as f64 / 100.0)
}

/// One holder child: its stdin (to stop it) and its stdout lines.
#[derive(Debug)]
struct Holder {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Holder {
    fn start(args: &HoldArgs) -> Result<Holder, Failed> {
        let exe = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
        let mut child = Command::new(exe)
            .args(["hold", "--url", &args.url, "--room", &args.room])
            .args(["--streams", &args.streams.to_string()])
            .args(["--members", &args.members.to_string()])
            .args(["--idle-rooms", &args.idle_rooms.to_string()])
            .args(["--src-ips", &args.src_ips.to_string()])
            .args(["--concurrency", &args.concurrency.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting a holder for {}: {e}", args.url))?;
        let stdin = child.stdin.take().ok_or("a holder's stdin")?;
        let stdout = child.stdout.take().ok_or("a holder's stdout")?;
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stdout = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = stdout.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Holder {
            child,
            stdin,
            lines,
        })
    }

    /// The rest of the next line that starts with `prefix`, within `limit`.
    async fn expect(&mut self, prefix: &str, limit: Duration, url: &str) -> Result<String, Failed> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.trim().to_owned());
                    }
                }
                Ok(None) => {
                    return Err(format!(
                        "the holder for {url} exited before printing {prefix:?}"
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "the holder for {url} did not print {prefix:?} within {limit:?}"
                    ));
                }
            }
        }
    }

    /// Whether a line starting with `prefix` came, without waiting.
    fn saw(&mut self, prefix: &str) -> bool {
        while let Ok(line) = self.lines.try_recv() {
            if line.starts_with(prefix) {
                return true;
            }
        }
        false
    }
}

/// Per-broadcast latency figures across every holder.
#[derive(Debug, Clone, PartialEq)]
struct Spread {
    /// Send-to-last-delivery, ms, one per broadcast that reached anyone, sorted.
    last_ms: Vec<f64>,
    /// Send-to-first-delivery, ms, likewise.
    first_ms: Vec<f64>,
    /// Deliveries missing: expected members of every answered broadcast minus those that got it.
    lost: usize,
    /// Broadcasts that did not reach every member.
    incomplete: usize,
    /// Broadcasts answered with something other than `200`, or not answered.
    not_200: usize,
}

/// Merges what the sender sent with what every holder got: each broadcast of `sent` must reach
/// `members` streams across all `reports`.
fn spread(sent: &[Sent], reports: &[HoldReport], members: usize) -> Spread {
    let mut merged: HashMap<u64, Arrivals> = HashMap::new();
    for a in reports.iter().flat_map(|r| &r.arrivals) {
        merged
            .entry(a.seq)
            .and_modify(|m| {
                m.count += a.count;
                m.first_ns = m.first_ns.min(a.first_ns);
                m.last_ns = m.last_ns.max(a.last_ns);
            })
            .or_insert(*a);
    }
    let ms = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1e6;
    let mut out = Spread {
        last_ms: Vec::new(),
        first_ms: Vec::new(),
        lost: 0,
        incomplete: 0,
        not_200: 0,
    };
    for s in sent {
        if s.status != 200 {
            out.not_200 += 1;
        }
        let got = merged.get(&s.seq);
        let count = got.map_or(0, |a| a.count);
        if count < members {
            out.incomplete += 1;
            // A broadcast that was not acknowledged may be lost; one that was must not be.
            if s.status == 200 {
                out.lost += members - count;
            }
        }
        if let Some(a) = got {
            out.last_ms.push(ms(s.send_ns, a.last_ns));
            out.first_ms.push(ms(s.send_ns, a.first_ns));
        }
    }
    out.last_ms.sort_by(f64::total_cmp);
    out.first_ms.sort_by(f64::total_cmp);
    out
}

/// Writes one JSON line per broadcast: its send time and answer, and per node how many members
/// got it and when the first and the last did, in ms after the send.
fn write_details(path: &str, sent: &[Sent], reports: &[HoldReport]) -> Result<(), Failed> {
    let mut lines = String::new();
    for s in sent {
        let ms = |at: u64| round(at.saturating_sub(s.send_ns) as f64 / 1e6, 3);
        let nodes: Vec<_> = reports
            .iter()
            .map(|r| {
                r.arrivals.iter().find(|a| a.seq == s.seq).map(|a| {
                    json!({"count": a.count, "first_ms": ms(a.first_ns), "last_ms": ms(a.last_ns)})
                })
            })
            .collect();
        let line = json!({"seq": s.seq, "send_ns": s.send_ns, "status": s.status,
            "answered_ms": ms(s.answered_ns), "nodes": nodes});
        lines.push_str(&format!("{line}\n"));
    }
    std::fs::write(path, lines).map_err(|e| format!("writing {path}: {e}"))
}

/// The `p`-th percentile (0–100) of sorted `values`, nearest rank; `None` when empty.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

async fn run(args: RunArgs) -> Result<(), Failed> {
    let clock_start = (Instant::now(), now_ns());
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let nodes = args.urls.len();
    let shares = split(args.room_size, nodes);
    let room = format!("spread-{}", uuid::Uuid::new_v4().simple());
    let rss_empty = args
        .pids
        .iter()
        .map(|&p| rss(p))
        .collect::<Result<Vec<_>, _>>()?;

    // Every holder connects at once, each to its node.
    let opening = Instant::now();
    let mut holders = Vec::with_capacity(nodes);
    for (url, &members) in args.urls.iter().zip(&shares) {
        holders.push(Holder::start(&HoldArgs {
            url: url.clone(),
            streams: args.streams_per_node,
            room: room.clone(),
            members,
            idle_rooms: args.idle_rooms,
            src_ips: args.src_ips,
            concurrency: args.concurrency,
        })?);
    }
    let mut opened = Vec::with_capacity(nodes);
    for (holder, url) in holders.iter_mut().zip(&args.urls) {
        let ready = holder
            .expect("ready ", Duration::from_secs(600), url)
            .await?;
        let fields: Vec<u64> = ready
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let [ok, failed, _ms] = fields[..] else {
            return Err(format!(
                "the holder for {url} printed a bad ready line: {ready:?}"
            ));
        };
        if failed > 0 {
            eprintln!(
                "{url}: {failed} of {} streams could not be opened",
                args.streams_per_node
            );
        }
        opened.push(ok as usize);
    }
    let connect_secs = opening.elapsed().as_secs_f64();
    let held: usize = opened.iter().sum();
    eprintln!("{held} streams open in {connect_secs:.1} s; settling");
    tokio::time::sleep(args.settle).await;
    let rss_connected = args
        .pids
        .iter()
        .map(|&p| rss(p))
        .collect::<Result<Vec<_>, _>>()?;
    let redis_rss = args.redis_pid.map(rss).transpose()?;

    // The idle window: what every node spends on its streams' heartbeats.
    let cpu_all = |pids: &[u32]| {
        pids.iter()
            .map(|&p| cpu_secs(p))
            .collect::<Result<Vec<_>, _>>()
    };
    let holder_pids: Vec<u32> = holders.iter().filter_map(|h| h.child.id()).collect();
    let (t0, cpu0, redis0, holders0) = (
        Instant::now(),
        cpu_all(&args.pids)?,
        args.redis_pid.map(cpu_secs).transpose()?,
        cpu_all(&holder_pids)?,
    );
    eprintln!("idle for {:?}", args.idle);
    tokio::time::sleep(args.idle).await;
    let (cpu1, redis1, holders1) = (
        cpu_all(&args.pids)?,
        args.redis_pid.map(cpu_secs).transpose()?,
        cpu_all(&holder_pids)?,
    );
    let window = t0.elapsed().as_secs_f64();
    let idle_cpu: Vec<f64> = cpu1.iter().zip(&cpu0).map(|(b, a)| b - a).collect();
    let redis_idle_cpu = redis1.zip(redis0).map(|(b, a)| b - a);
    let holders_idle_cpu: f64 = holders1.iter().zip(&holders0).map(|(b, a)| b - a).sum();

    // Probes (message 0) until every member of the room, on every node, got one.
    let send_url = &args.urls[0];
    let probing = Instant::now();
    let mut warm = vec![false; nodes];
    while !warm.iter().all(|&w| w) {
        if probing.elapsed() > Duration::from_secs(60) {
            return Err("not every member of the room got a probe within 60 s".into());
        }
        let probe = post(send_url, &room, 0, args.payload).await;
        if probe.status != 200 {
            eprintln!("a probe was answered {}", probe.status);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        for (w, h) in warm.iter_mut().zip(holders.iter_mut()) {
            *w = *w || h.saw("warm");
        }
    }
    eprintln!(
        "every member probed; {} broadcasts at {}/s",
        args.broadcasts, args.rate
    );
    // What the broadcasts cost, heartbeats included, to see which side was busy.
    let (b0, broadcasting) = (cpu_all(&args.pids)?, Instant::now());
    let (redis_b0, holders_b0) = (
        args.redis_pid.map(cpu_secs).transpose()?,
        cpu_all(&holder_pids)?,
    );
    let sent = send_all(send_url, &room, args.broadcasts, args.rate, args.payload).await;
    let broadcast_window = broadcasting.elapsed().as_secs_f64();
    let broadcast_cpu: Vec<f64> = cpu_all(&args.pids)?
        .iter()
        .zip(&b0)
        .map(|(b, a)| b - a)
        .collect();
    let redis_broadcast_cpu = args
        .redis_pid
        .map(cpu_secs)
        .transpose()?
        .zip(redis_b0)
        .map(|(b, a)| b - a);
    let holders_broadcast_cpu: f64 = cpu_all(&holder_pids)?
        .iter()
        .zip(&holders_b0)
        .map(|(b, a)| b - a)
        .sum();
    tokio::time::sleep(args.drain).await;

    let mut reports = Vec::with_capacity(nodes);
    for (holder, url) in holders.iter_mut().zip(&args.urls) {
        holder
            .stdin
            .write_all(b"stop\n")
            .await
            .map_err(|e| format!("stopping the holder for {url}: {e}"))?;
        let json = holder
            .expect("report ", Duration::from_secs(60), url)
            .await?;
        let report: HoldReport = serde_json::from_str(&json)
            .map_err(|e| format!("the holder for {url} printed a bad report: {e}"))?;
        reports.push(report);
    }
    for holder in &mut holders {
        let _ = tokio::time::timeout(Duration::from_secs(30), holder.child.wait()).await;
    }
    let clock_drift_ms = (now_ns().saturating_sub(clock_start.1) as f64
        - clock_start.0.elapsed().as_nanos() as f64)
        / 1e6;

    let result = spread(&sent, &reports, args.room_size);
    if let Some(path) = &args.details {
        write_details(path, &sent, &reports)?;
    }
    let sum = |f: fn(&HoldReport) -> usize| reports.iter().map(f).sum::<usize>();
    let (duplicates, out_of_order, ended_early, bad_payload, failed) = (
        sum(|r| r.duplicates),
        sum(|r| r.out_of_order),
        sum(|r| r.ended_early),
        sum(|r| r.bad_payload),
        sum(|r| r.failed),
    );
    let growth: Vec<i64> = rss_connected
        .iter()
        .zip(&rss_empty)
        .map(|(&b, &a)| b as i64 - a as i64)
        .collect();
    let per_stream = |g: i64, n: usize| if n == 0 { 0.0 } else { g as f64 / n as f64 };
    let total_growth: i64 = growth.iter().sum();
    let node_json: Vec<_> = (0..nodes)
        .map(|i| {
            json!({
                "pid": args.pids[i],
                "streams": opened[i],
                "room_members": shares[i],
                "rss_empty": rss_empty[i],
                "rss_connected": rss_connected[i],
                "bytes_per_stream": round(per_stream(growth[i], opened[i]), 0),
                "idle_cpu_s": round(idle_cpu[i], 2),
                "idle_cpu_pct": round(100.0 * idle_cpu[i] / window, 2),
                "broadcast_cpu_s": round(broadcast_cpu[i], 2),
            })
        })
        .collect();
    let pct = |p: f64, v: &[f64]| percentile(v, p).map(|x| round(x, 3));
    let summary = json!({
        "nodes": nodes,
        "streams_per_node": args.streams_per_node,
        "streams": held,
        "failed": failed,
        "room_size": args.room_size,
        "broadcasts": args.broadcasts,
        "rate": args.rate,
        "payload": args.payload,
        "connect_s": round(connect_secs, 2),
        "total_rss_empty": rss_empty.iter().sum::<u64>(),
        "total_rss_connected": rss_connected.iter().sum::<u64>(),
        "bytes_per_stream": round(per_stream(total_growth, held), 0),
        "idle_window_s": round(window, 2),
        "idle_cpu_s": round(idle_cpu.iter().sum::<f64>(), 2),
        "node": node_json,
        "redis_rss": redis_rss,
        "redis_idle_cpu_s": redis_idle_cpu.map(|c| round(c, 2)),
        "holders_idle_cpu_s": round(holders_idle_cpu, 2),
        "broadcast_window_s": round(broadcast_window, 2),
        "broadcast_cpu_s": round(broadcast_cpu.iter().sum::<f64>(), 2),
        "redis_broadcast_cpu_s": redis_broadcast_cpu.map(|c| round(c, 2)),
        "holders_broadcast_cpu_s": round(holders_broadcast_cpu, 2),
        "heartbeats": reports.iter().map(|r| r.heartbeats).sum::<u64>(),
        "latency_last_ms": {"p50": pct(50.0, &result.last_ms), "p99": pct(99.0, &result.last_ms),
            "max": result.last_ms.last().map(|&x| round(x, 3))},
        "latency_first_ms": {"p50": pct(50.0, &result.first_ms), "p99": pct(99.0, &result.first_ms)},
        "sends_not_200": result.not_200,
        "incomplete": result.incomplete,
        "lost": result.lost,
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "ended_early": ended_early,
        "bad_payload": bad_payload,
        "clock_drift_ms": round(clock_drift_ms, 3),
        "loadavg_before": load_before.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "loadavg_after": std::fs::read_to_string("/proc/loadavg").unwrap_or_default()
            .split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "ok": failed == 0 && result.lost == 0 && result.not_200 == 0 && duplicates == 0
            && out_of_order == 0 && ended_early == 0 && bad_payload == 0,
    });
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "{held} streams on {nodes} nodes ({} per node), room of {} ({:?} per node)",
        args.streams_per_node, args.room_size, shares
    );
    for i in 0..nodes {
        println!(
            "  node {i} (pid {}): RSS {:.1} -> {:.1} MiB, {:.0} B per stream; idle CPU {:.2} s \
             over {window:.1} s ({:.2} % of a core)",
            args.pids[i],
            mib(rss_empty[i]),
            mib(rss_connected[i]),
            per_stream(growth[i], opened[i]),
            idle_cpu[i],
            100.0 * idle_cpu[i] / window
        );
    }
    let ms = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.2} ms"));
    println!(
        "  send to last delivery: p50 {}, p99 {} over {} broadcasts; lost {}, \
         duplicated {duplicates}, out of order {out_of_order}, streams ended early {ended_early}",
        ms(pct(50.0, &result.last_ms)),
        ms(pct(99.0, &result.last_ms)),
        sent.len(),
        result.lost
    );
    println!("{summary}");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let given: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match Role::parse(&given) {
        Err(e) => {
            eprintln!("sseio-spread: {e}");
            std::process::exit(2);
        }
        Ok(Role::Hold(args)) => hold(args).await,
        Ok(Role::Send(args)) => {
            let sent = send_all(&args.url, &args.room, args.count, args.rate, args.payload).await;
            serde_json::to_string(&sent)
                .map(|json| println!("{json}"))
                .map_err(|e| format!("encoding what was sent: {e}"))
        }
        Ok(Role::Run(args)) => run(args).await,
    };
    if let Err(e) = outcome {
        eprintln!("sseio-spread: {e}");
        std::process::exit(1);
    }
    // A holder exits here with its streams still open: the process's end closes them.
    std::process::exit(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn run_takes_nodes_and_defaults() {
        let Ok(Role::Run(run)) = Role::parse(&args(
            "run --urls http://127.0.0.1:1,http://127.0.0.1:2 --pids 10,20 \
             --streams-per-node 100 --room-size 30 --idle-secs 0.5",
        )) else {
            panic!("a valid run line");
        };
        assert_eq!(run.urls.len(), 2);
        assert_eq!(run.pids, [10, 20]);
        assert_eq!(run.room_size, 30);
        assert_eq!(run.idle, Duration::from_millis(500));
        assert_eq!(run.broadcasts, 100);
        assert_eq!(split(run.room_size, 3), [10, 10, 10]);
        assert_eq!(split(7, 3), [3, 2, 2]);
    }

    #[test]
    fn bad_command_lines_name_what_is_wrong() {
        let error = |line: &str| Role::parse(&args(line)).unwrap_err();
        assert!(error("").contains("role"));
        assert!(error("fly").contains("unknown role"));
        assert!(error("hold --url").contains("--url takes a value"));
        assert!(
            error("hold --url http://10.0.0.1:80 --streams 1 --room r --members 1")
                .contains("loopback")
        );
        assert!(
            error("hold --url http://127.0.0.1:80 --streams x --room r --members 1")
                .contains("--streams takes a number")
        );
        assert!(
            error("hold --url http://127.0.0.1:80 --streams 1 --room r --members 2")
                .contains("more than --streams")
        );
        assert!(
            error("hold --url http://127.0.0.1:80 --room r --members 0")
                .contains("--streams is required")
        );
        assert!(error("send --url http://127.0.0.1:80 --room r --rate 0").contains("0.001"));
        assert!(error("send --url http://127.0.0.1:80 --room r --rate 1e-300").contains("0.001"));
        assert!(
            error("run --urls http://127.0.0.1:1 --pids 1 --streams-per-node 5 --idle-secs -1")
                .contains("--idle-secs takes seconds")
        );
        assert!(error("send --url http://127.0.0.1:80 --room r --speed 3").contains("no flag"));
        assert!(
            error("run --urls http://127.0.0.1:1 --pids 1,2 --streams-per-node 5").contains("2")
        );
        assert!(
            error("run --urls http://127.0.0.1:1 --pids 1 --streams-per-node 5 --room-size 6")
                .contains("at most every stream")
        );
        assert!(
            error("hold --url http://127.0.0.1:80 --streams 1 --room r --members 1 --src-ips 0")
                .contains("1 to 254")
        );
    }

    #[test]
    fn latency_runs_to_the_last_delivery_on_any_node() {
        let sent = |seq, send_ns| Sent {
            seq,
            send_ns,
            answered_ns: send_ns,
            status: 200,
        };
        let arrivals = |seq, count, first_ns, last_ns| Arrivals {
            seq,
            count,
            first_ns,
            last_ns,
        };
        let node_a = HoldReport {
            arrivals: vec![
                arrivals(0, 2, 0, 0),
                arrivals(1, 2, 1_000_000, 3_000_000),
                arrivals(2, 2, 10_500_000, 11_000_000),
            ],
            ..HoldReport::default()
        };
        let node_b = HoldReport {
            arrivals: vec![
                arrivals(1, 1, 2_000_000, 2_000_000),
                arrivals(2, 1, 10_200_000, 15_000_000),
            ],
            ..HoldReport::default()
        };
        let result = spread(&[sent(1, 0), sent(2, 10_000_000)], &[node_a, node_b], 3);
        assert_eq!(result.last_ms, [3.0, 5.0]);
        assert_eq!(result.first_ms, [0.2, 1.0]);
        assert_eq!((result.lost, result.incomplete, result.not_200), (0, 0, 0));

        // Message 3 reached one member of three, message 4 nobody: both incomplete, 2 + 3 lost.
        let short = HoldReport {
            arrivals: vec![arrivals(3, 1, 1_000_000, 1_000_000)],
            ..HoldReport::default()
        };
        let result = spread(&[sent(3, 0), sent(4, 0)], &[short], 3);
        assert_eq!((result.lost, result.incomplete), (5, 2));
        assert_eq!(result.last_ms, [1.0]);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v[..1], 99.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn a_member_counts_a_message_once() {
        let mut seen = SeenSet::default();
        assert!(seen.insert(0));
        assert!(seen.insert(130));
        assert!(!seen.insert(130));
        assert!(seen.insert(64));
        assert_eq!(seen.highest, 130);
    }
}
