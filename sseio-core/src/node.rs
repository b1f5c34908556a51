//! The server's side of the broker seam: what a broker's [`Node`](crate::Node) reaches.

use std::sync::Arc;

use crate::broker::{BrokerError, ConnectionId, LocalNode, Recalled};
use crate::notify::{CloseReason, Notification};
use crate::position::Position;
use crate::server::ServerInner;

impl LocalNode for ServerInner {
    fn deliver(&self, event: &str, room: &str, at: Option<Position>, payload: &str) -> usize {
        self.handler(event)
            .map_or(0, |handler| handler.deliver(room, at, payload))
    }

    fn deliver_to_client(&self, client_id: &str, event: &str, payload: &str) -> bool {
        self.hub().deliver_to_client(client_id, event, payload)
    }

    fn local_presence(&self, event: &str, room: &str) -> Vec<String> {
        self.handler(event)
            .map_or_else(Vec::new, |handler| handler.client_ids(room))
    }

    fn close(&self, connection: ConnectionId, reason: CloseReason) {
        self.hub().close(connection.0, reason);
    }

    fn close_client(&self, client_id: &str, reason: CloseReason) -> bool {
        self.hub().close_client(client_id, reason)
    }

    fn close_room(&self, event: &str, room: &str, reason: CloseReason) -> usize {
        let serials = self
            .handler(event)
            .map_or_else(Vec::new, |handler| handler.members(room));
        for &serial in &serials {
            self.hub().close(serial, reason);
        }
        serials.len()
    }

    fn take_over(&self, client_id: &str) -> Option<Recalled> {
        self.hub().take_over(client_id)
    }

    fn rooms(&self) -> Vec<(Arc<str>, Arc<str>)> {
        ServerInner::rooms(self)
    }

    fn report(&self, error: BrokerError) {
        self.notify(Notification::Broker(error));
    }
}
