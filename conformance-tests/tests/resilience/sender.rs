//! The sender of a case: numbered messages to each room, one after the other, paced, through
//! `POST /_control/send` on the nodes in turn, whose `200` means the message is recorded in the
//! cluster's history. Every number is sent once; what came back says which must arrive.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conformance_tests::control;

use conformance_tests::crowd::EVENT;

/// Where a case's messages go: the nodes a sender may use (a node killed or drained is taken
/// out), and what became of each message.
#[derive(Debug)]
pub struct Sender {
    /// Each node's base URL, and whether the sender uses it.
    nodes: Mutex<Vec<(String, bool)>>,
    next: AtomicUsize,
    rooms: Vec<Room>,
}

/// The messages of one room.
#[derive(Debug, Default)]
pub struct Room {
    /// Every number sent.
    pub attempted: Mutex<BTreeSet<u64>>,
    /// The numbers answered `200`: recorded, so every client must get them.
    pub acknowledged: Mutex<BTreeSet<u64>>,
    /// The numbers answered otherwise (`503`, or the node gone mid-request).
    pub failed: Mutex<BTreeSet<u64>>,
}

impl Sender {
    /// A sender through `nodes` (base URLs) to `rooms` rooms.
    pub fn new(nodes: &[String], rooms: usize) -> Sender {
        Sender {
            nodes: Mutex::new(nodes.iter().map(|n| (n.clone(), true)).collect()),
            next: AtomicUsize::new(0),
            rooms: (0..rooms).map(|_| Room::default()).collect(),
        }
    }

    /// Stops sending through node `base_url`.
    pub fn remove(&self, base_url: &str) {
        for (node, used) in self.nodes.lock().unwrap().iter_mut() {
            if node == base_url {
                *used = false;
            }
        }
    }

    /// The messages of room number `i`.
    pub fn room(&self, i: usize) -> &Room {
        &self.rooms[i]
    }

    /// The next node to send through.
    fn node(&self) -> String {
        let nodes = self.nodes.lock().unwrap();
        let used: Vec<&String> = nodes
            .iter()
            .filter(|(_, used)| *used)
            .map(|(n, _)| n)
            .collect();
        used[self.next.fetch_add(1, Ordering::Relaxed) % used.len()].clone()
    }

    /// Sends `body` to room `room` (its id) through the next node; whether it was answered
    /// `200`.
    pub async fn post(&self, room: &str, body: &str) -> bool {
        let node = self.node();
        control::send_text_to(&node, EVENT, room, body.as_bytes().to_vec()).await == Some(200)
    }

    /// Sends numbered messages to room `i` (id `room`), one every `pace`, until `stop` is set.
    pub async fn run(
        self: Arc<Self>,
        i: usize,
        room: String,
        pace: Duration,
        stop: Arc<AtomicBool>,
    ) {
        let mut every = tokio::time::interval(pace);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            every.tick().await;
            n += 1;
            self.rooms[i].attempted.lock().unwrap().insert(n);
            let answered = if self.post(&room, &n.to_string()).await {
                &self.rooms[i].acknowledged
            } else {
                &self.rooms[i].failed
            };
            answered.lock().unwrap().insert(n);
        }
    }
}
