//! A small TCP proxy the cases put between the clients and the nodes: a load balancer that
//! sends each new connection to the next node in rotation (and on to the one after when a node
//! refuses the connection, as a node killed with `kill -9` does), and that can cut the
//! connections it carries, as a flaky network path or a restarted load balancer does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use conformance_tests::crowd::rand_unit;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// The proxy: where clients connect, the nodes behind it, and the connections it carries.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accepting: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Each node's address, and whether it is in rotation.
    upstreams: Mutex<Vec<(String, bool)>>,
    next: AtomicUsize,
    next_id: AtomicU64,
    /// The connections carried now, each with the switch that cuts it.
    open: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    accepted: AtomicU64,
    cut: AtomicU64,
    refused: AtomicU64,
}

impl Proxy {
    /// Starts the proxy on a free port in front of `upstreams` (`host:port`), all in rotation.
    pub async fn start(upstreams: &[String]) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port for the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared::default());
        *shared.upstreams.lock().unwrap() = upstreams.iter().map(|u| (u.clone(), true)).collect();
        let accepting = tokio::spawn(accept(listener, shared.clone()));
        Proxy {
            addr,
            shared,
            accepting,
        }
    }

    /// `http://127.0.0.1:<port>`, the base URL clients connect to.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Takes node `upstream` out of rotation (new connections go elsewhere; open ones stay), as
    /// a load balancer does with a node that is shutting down.
    pub fn remove(&self, upstream: &str) {
        for (address, in_rotation) in self.shared.upstreams.lock().unwrap().iter_mut() {
            if address == upstream {
                *in_rotation = false;
            }
        }
    }

    /// Cuts `share` (0 to 1) of the connections carried now, picked at random: both sockets are
    /// closed at once, so the node and the client each see their connection end. Returns how
    /// many were cut.
    pub fn cut_some(&self, share: f64) -> usize {
        let mut open = self.shared.open.lock().unwrap();
        let chosen: Vec<u64> = open
            .keys()
            .copied()
            .filter(|_| rand_unit() < share)
            .collect();
        for id in &chosen {
            if let Some(cut) = open.remove(id) {
                let _ = cut.send(());
            }
        }
        self.shared
            .cut
            .fetch_add(chosen.len() as u64, Ordering::Relaxed);
        chosen.len()
    }

    /// Connections accepted, cut, and refused by every node, so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.shared.accepted.load(Ordering::Relaxed),
            self.shared.cut.load(Ordering::Relaxed),
            self.shared.refused.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        for (_, cut) in self.shared.open.lock().unwrap().drain() {
            let _ = cut.send(());
        }
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(carry(client, shared.clone()));
    }
}

/// Connects `client` to the next node in rotation that accepts, and copies both ways until
/// either side closes or the connection is cut.
async fn carry(mut client: TcpStream, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let candidates: Vec<String> = {
        let upstreams = shared.upstreams.lock().unwrap();
        let start = shared.next.fetch_add(1, Ordering::Relaxed);
        (0..upstreams.len())
            .map(|i| &upstreams[(start + i) % upstreams.len()])
            .filter(|(_, in_rotation)| *in_rotation)
            .map(|(address, _)| address.clone())
            .collect()
    };
    let mut upstream = None;
    for address in candidates {
        if let Ok(stream) = TcpStream::connect(&address).await {
            upstream = Some(stream);
            break;
        }
    }
    let Some(mut upstream) = upstream else {
        // No node takes it: the client sees its connection closed.
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let _ = upstream.set_nodelay(true);
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (cut, cutting) = oneshot::channel();
    shared.open.lock().unwrap().insert(id, cut);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = cutting => {}
    }
    shared.open.lock().unwrap().remove(&id);
}
