//! `examples/node-backend/` runs: a hub built from its `hub.toml` (as `sseio-hub` builds it, in
//! this process), its Node.js backend (`backend.js`, plain Node, no npm packages), and its
//! `node --test` script, which subscribes to the hub, has the backend publish through the hub's
//! API, and checks the message arrives (and the lifecycle webhook reached the backend).
//!
//! The only change to the example's files is the backend's address: `hub.toml` says
//! `127.0.0.1:3000`, the test's backend listens on a free port.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use sseio_hub::{Config, Hub, Source};
use sseio_test_support::node;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Bound on the node test run; its script bounds each of its waits at 10 s.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// The API key the test gives both the hub and the backend.
const API_KEY: &str = "node-backend-test-key-0123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_backend_publishes_through_the_hub_to_a_subscriber() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("node-backend");
    // The hub's port first: the backend needs it to publish.
    let listener = sseio_hub::sseio_hyper::bind(([127, 0, 0, 1], 0).into()).unwrap();
    let hub_url = format!("http://{}", listener.local_addr().unwrap());

    let mut backend = Command::new("node")
        .arg("backend.js")
        .current_dir(&dir)
        .env("PORT", "0")
        .env("HUB_URL", &hub_url)
        .env("HUB_API_KEY", API_KEY)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (Node 20+ on PATH)");
    let mut lines = BufReader::new(backend.stdout.take().unwrap()).lines();
    let port = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(port) = line.strip_prefix("listening ") {
                return port.trim().to_owned();
            }
        }
        panic!("backend.js ended without printing `listening <port>`");
    })
    .await
    .expect("backend.js listens within 30 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let backend_url = format!("http://127.0.0.1:{port}");

    let path = dir.join("hub.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("127.0.0.1:3000", &format!("127.0.0.1:{port}"));
    let keys = format!("[\"{API_KEY}\"]");
    let loaded = Config::parse(
        &text,
        Source::File(path),
        dir.clone(),
        [("SSEIO_HUB__PUBLISH__API_KEYS".to_owned(), keys)],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let hub = Hub::build(&loaded).await.unwrap_or_else(|e| panic!("{e}"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = hub.clone();
    let served = tokio::spawn(async move {
        serving
            .serve(listener, serving.app(), async {
                let _ = stopped.await;
            })
            .await
    });

    let report = tokio::task::spawn_blocking(move || {
        node::node_test(
            &dir,
            &["test/"],
            &[("HUB_URL", &hub_url), ("BACKEND_URL", &backend_url)],
            RUN_TIMEOUT,
        )
    })
    .await
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
    println!("{report}");

    let _ = stop.send(());
    served.await.unwrap().unwrap();
    backend.kill().await.unwrap();
}
