//! A crowd of SSE clients, raw over HTTP/1.1, each reconnecting the way a real one does and
//! recording every numbered message it gets; and the count of what each one lost, got twice, or
//! was told it missed. The resilience suite (`tests/resilience/`) and the reconnect-storm
//! benchmark (`benches/storm.sh`) share them.
//!
//! A message is numbered by its data (`1`, `2`, ... per room); any other data is a warm-up
//! message. The gap notice is the event named [`GAP_NOTICE`].

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::http1::Request;
use crate::sse::{SseItem, SseStream};

/// The event the crowd listens to (and its senders post).
pub const EVENT: &str = "normal-event";
/// The gap notice's event, for `SSEIO_GAP_NOTICE`.
pub const GAP_NOTICE: &str = "sseio-gap";

/// A number in `[0, 1)`, random enough to pick connections and delays.
pub fn rand_unit() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

/// Who a client is to the server: how it says where it resumes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A native `EventSource`: the same URL, with `Last-Event-ID` (the last `id:` it parsed),
    /// after the `retry:` the server gave it.
    LastEventId,
    /// The official client (`sse.io-client` 1.1.1): the same `clientId`, no `Last-Event-ID`; at
    /// once after a stream that ended, after a backoff (100 ms doubling to 5 s, half of it
    /// jitter) after a connection that failed or was refused.
    ClientId,
}

impl Kind {
    /// How the report names this kind.
    pub fn name(self) -> &'static str {
        match self {
            Kind::LastEventId => "Last-Event-ID",
            Kind::ClientId => "clientId",
        }
    }
}

/// What one client saw, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A stream opened (`200`).
    Opened,
    /// A numbered message.
    Message(u64),
    /// The gap notice: the stream could not be resumed.
    Gap,
    /// A warm-up message (before numbering starts).
    WarmUp,
}

/// How long a client waits before it reconnects after its stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// What its [`Kind`] does: a native `EventSource` waits for the stream's `retry:` (3 s
    /// without one); the official client comes back at once.
    AsItsKind,
    /// At once, whatever the stream said: the worst case, every client of a node that went
    /// away reconnecting at the same moment.
    AtOnce,
    /// The stream's `retry:` (3 s without one), whatever its kind.
    AsTold,
}

/// One client: its identity, and what it has seen so far.
#[derive(Debug)]
pub struct Client {
    /// Its `clientId`, kept across reconnects.
    pub id: String,
    /// How it says where it resumes from.
    pub kind: Kind,
    /// Index of its room in the case's rooms.
    pub room: usize,
    /// How long it waits before it reconnects.
    pub wait: Wait,
    log: Mutex<Log>,
}

#[derive(Debug, Default)]
struct Log {
    seen: Vec<Seen>,
    /// The last message number seen, for the case to wait on.
    last: u64,
    warmed: bool,
    /// Streams that ended, and connects that failed or were refused.
    ended: usize,
    refused: usize,
    /// When its latest stream opened.
    opened_at: Option<Instant>,
}

impl Client {
    /// A client of `kind` in room number `room`, with a fresh `clientId`, waiting as its kind
    /// does.
    pub fn new(kind: Kind, room: usize) -> Client {
        Client::waiting(kind, room, Wait::AsItsKind)
    }

    /// A client of `kind` in room number `room`, with a fresh `clientId`, waiting `wait`.
    pub fn waiting(kind: Kind, room: usize, wait: Wait) -> Client {
        Client {
            id: uuid::Uuid::new_v4().to_string(),
            kind,
            room,
            wait,
            log: Mutex::new(Log::default()),
        }
    }

    /// When its latest stream opened.
    pub fn opened_at(&self) -> Option<Instant> {
        self.log.lock().unwrap().opened_at
    }

    fn record(&self, seen: Seen) {
        let mut log = self.log.lock().unwrap();
        match seen {
            Seen::Message(n) => log.last = log.last.max(n),
            Seen::WarmUp => log.warmed = true,
            Seen::Opened => log.opened_at = Some(Instant::now()),
            Seen::Gap => {}
        }
        log.seen.push(seen);
    }

    /// The highest message number it got.
    pub fn last(&self) -> u64 {
        self.log.lock().unwrap().last
    }

    /// Whether it got a warm-up message.
    pub fn warmed(&self) -> bool {
        self.log.lock().unwrap().warmed
    }

    /// Whether a stream of it ever opened.
    pub fn opened(&self) -> bool {
        self.log.lock().unwrap().seen.contains(&Seen::Opened)
    }

    /// Streams ended and connects refused, so far.
    pub fn reconnects(&self) -> (usize, usize) {
        let log = self.log.lock().unwrap();
        (log.ended, log.refused)
    }

    /// Everything it saw, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().seen.clone()
    }
}

/// Runs `client` against `base_url` (`http://host:port`) until `stop` is set, in room
/// `rooms[client.room]` (a path parameter of the harness contract's SSE path).
pub fn spawn(
    client: Arc<Client>,
    base_url: String,
    rooms: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let target = format!(
            "/files/{}/pull?clientId={}&events={EVENT}",
            rooms[client.room], client.id
        );
        let mut last_event_id: Option<String> = None;
        let mut backoff = Duration::from_millis(100);
        while !stop.load(Ordering::SeqCst) {
            let mut request = Request::get(target.as_str())
                .header("Accept", "text/event-stream")
                .header("Cache-Control", "no-cache");
            if let (Kind::LastEventId, Some(id)) = (client.kind, &last_event_id) {
                request = request.header("Last-Event-ID", id);
            }
            let response = match request.send(&base_url).await {
                Ok(response) if response.status() == 200 => response,
                _ => {
                    client.log.lock().unwrap().refused += 1;
                    // A refused or failed connect: the official client backs off; an
                    // `EventSource` behind a load balancer retries after its retry delay.
                    let jitter = 0.5 + rand_unit();
                    tokio::time::sleep(backoff.mul_f64(jitter)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            client.record(Seen::Opened);
            let mut stream = SseStream::http1(response);
            loop {
                let item = tokio::select! {
                    item = stream.next_item() => item,
                    () = wait_stop(&stop) => break,
                };
                match item {
                    Ok(Some(SseItem::Event(event))) => {
                        if event.event == GAP_NOTICE {
                            client.record(Seen::Gap);
                        } else if event.event == EVENT {
                            last_event_id = event.id.clone().or(last_event_id);
                            match event.data.parse() {
                                Ok(n) => client.record(Seen::Message(n)),
                                Err(_) => client.record(Seen::WarmUp),
                            }
                        }
                    }
                    Ok(Some(SseItem::Comment(_))) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            if stop.load(Ordering::SeqCst) {
                break;
            }
            client.log.lock().unwrap().ended += 1;
            // After the retry the stream gave (the server's `retry:` lines), or 3 s, an
            // `EventSource`'s default.
            let as_told = || last_retry(stream.raw()).unwrap_or(Duration::from_secs(3));
            let wait = match (client.wait, client.kind) {
                (Wait::AtOnce, _) => Duration::ZERO,
                (Wait::AsTold, _) | (Wait::AsItsKind, Kind::LastEventId) => as_told(),
                // A stream that ended after `200`: the official client pulls again at once.
                (Wait::AsItsKind, Kind::ClientId) => Duration::ZERO,
            };
            tokio::time::sleep(wait).await;
        }
    })
}

async fn wait_stop(stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last `retry:` field of a stream's bytes.
fn last_retry(raw: &[u8]) -> Option<Duration> {
    let text = String::from_utf8_lossy(raw);
    text.lines()
        .filter_map(|line| line.strip_prefix("retry:"))
        .filter_map(|ms| ms.trim().parse::<u64>().ok())
        .next_back()
        .map(Duration::from_millis)
}

/// What one client's record says about the messages of its room.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Acknowledged messages it never got, without a gap notice in their place: silent holes.
    pub lost: usize,
    /// Of those, the ones missing across a reconnect: after the last message of one stream,
    /// before the first of the next.
    pub lost_across_reconnect: usize,
    /// Messages it got more than once.
    pub duplicated: usize,
    /// Messages that came after a later one.
    pub out_of_order: usize,
    /// Gap notices it got.
    pub resyncs: usize,
    /// Acknowledged messages it never got, where a gap notice told it so.
    pub skipped_with_notice: usize,
    /// Messages it got whose send was not acknowledged (sent, but the answer was lost).
    pub unacknowledged: usize,
    /// Streams it opened.
    pub streams: usize,
}

impl Tally {
    /// Adds another client's tally to this one.
    pub fn add(&mut self, other: Tally) {
        self.lost += other.lost;
        self.lost_across_reconnect += other.lost_across_reconnect;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.resyncs += other.resyncs;
        self.skipped_with_notice += other.skipped_with_notice;
        self.unacknowledged += other.unacknowledged;
        self.streams += other.streams;
    }
}

/// Counts what `seen` got of its room's messages: `acknowledged` (answered `200`) must each
/// come once, in order; `attempted` is every number sent, acknowledged or not.
pub fn tally(seen: &[Seen], acknowledged: &BTreeSet<u64>, attempted: &BTreeSet<u64>) -> Tally {
    let mut tally = Tally::default();
    let mut got = HashSet::new();
    let mut last = 0;
    let mut noticed = false;
    let mut reconnected = false;
    for item in seen {
        match *item {
            Seen::Opened => {
                tally.streams += 1;
                reconnected = tally.streams > 1;
            }
            Seen::WarmUp => {}
            Seen::Gap => {
                tally.resyncs += 1;
                noticed = true;
            }
            Seen::Message(n) => {
                if !got.insert(n) {
                    tally.duplicated += 1;
                    continue;
                }
                if !acknowledged.contains(&n) && attempted.contains(&n) {
                    tally.unacknowledged += 1;
                }
                if n < last {
                    tally.out_of_order += 1;
                    continue;
                }
                let skipped = acknowledged.range(last + 1..n).count();
                if noticed {
                    tally.skipped_with_notice += skipped;
                } else {
                    tally.lost += skipped;
                    if reconnected {
                        tally.lost_across_reconnect += skipped;
                    }
                }
                noticed = false;
                reconnected = false;
                last = n;
            }
        }
    }
    tally.lost += acknowledged.range(last + 1..).count();
    tally
}
