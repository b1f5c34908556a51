//! With the `connection-spans` feature, what is logged about one connection carries its span,
//! `sseio.connection`, with the connection's `clientId` and serial.

#![cfg(feature = "connection-spans")]

use std::io::Write;
use std::sync::{Arc, Mutex};

use http::Request;
use sseio_core::{Context, HandlerOptions, Server};
use sseio_test_support::RecordingSink;

/// Everything the subscriber writes, for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_connections_events_carry_its_span() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let server = Server::new("/r/:room").unwrap();
    server
        .register_event_handler(
            "e",
            HandlerOptions::new(|ctx: &Context| ctx.param("room").unwrap_or_default().to_owned()),
        )
        .unwrap();
    let request = Request::get("/r/x?clientId=ann&events=e").body(()).unwrap();
    let connection = server
        .connect((&request).into(), Arc::new(RecordingSink::default()))
        .await
        .unwrap();
    connection.close();

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    for event in ["sseio connection opened", "sseio connection closed"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains("sseio.connection{client_id=\"ann\" serial=")
                    && l.contains(event)),
            "{event} inside the connection's span in:\n{log}"
        );
    }
}
