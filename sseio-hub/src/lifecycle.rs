//! Lifecycle notifications, out of the hub: logged through `tracing`, and, with `[webhooks]`,
//! posted to the backend in batches, at most once.

use std::time::Duration;

use http::HeaderMap;
use serde_json::{Value, json};
use sseio_hyper::{CloseReason, Notification, Notifications};

use crate::backend::{Backend, excerpt};
use crate::config::WebhooksConfig;

/// The kinds of notification a webhook can carry, by their names in the original server.
pub const KINDS: [&str; 5] = [
    "conn:create",
    "conn:close",
    "room:create",
    "room:empty",
    "error",
];

/// The largest answer read from the webhook (it is ignored but for its status).
const ANSWER_LIMIT: usize = 16 * 1024;

/// `notification` as the JSON record a webhook posts: `{"kind": "conn:create", "clientId":
/// .., "principal": ..}`, `{"kind": "conn:close", .., "reason": "client_gone"}`,
/// `{"kind": "room:create", "event": .., "room": ..}`, `{"kind": "error", "message": ..}`.
/// `None` for what is not a lifecycle notification (a lag, which is logged instead).
pub fn record(notification: &Notification) -> Option<Value> {
    Some(match notification {
        Notification::ConnCreate {
            client_id,
            principal,
            ..
        } => {
            json!({"kind": "conn:create", "clientId": &**client_id, "principal": principal.as_deref()})
        }
        Notification::ConnClose {
            client_id,
            principal,
            reason,
            ..
        } => json!({
            "kind": "conn:close",
            "clientId": &**client_id,
            "principal": principal.as_deref(),
            "reason": reason_code(*reason),
        }),
        Notification::RoomCreate { event, room, .. } => {
            json!({"kind": "room:create", "event": &**event, "room": &**room})
        }
        Notification::RoomEmpty { event, room, .. } => {
            json!({"kind": "room:empty", "event": &**event, "room": &**room})
        }
        Notification::Error(error) => json!({"kind": "error", "message": error.to_string()}),
        Notification::Broker(error) => {
            json!({"kind": "error", "message": format!("broker: {error}")})
        }
        _ => return None,
    })
}

/// A close reason as the label of the `sseio_disconnects_total` metric.
fn reason_code(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::ClientGone => "client_gone",
        CloseReason::Replaced => "replaced",
        CloseReason::SlowConsumer => "slow_consumer",
        CloseReason::ServerClosed => "server_closed",
        CloseReason::Disconnected => "disconnected",
        CloseReason::Expired => "expired",
        CloseReason::CatchingUp => "catching_up",
        _ => "other",
    }
}

/// Logs every notification and, with `webhooks`, posts them to the backend, until the server
/// is gone.
pub(crate) async fn run(
    mut notifications: Notifications,
    webhooks: Option<WebhooksConfig>,
    backend: Backend,
) {
    let batch_size = webhooks.as_ref().map_or(1, |w| w.batch.max(1));
    let mut batch = Vec::with_capacity(batch_size);
    while let Some(first) = notifications.recv().await {
        let mut next = Some(first);
        while let Some(notification) = next.take() {
            log(&notification);
            if let Some(webhooks) = &webhooks
                && let Some(record) = record(&notification)
                && record["kind"]
                    .as_str()
                    .is_some_and(|kind| webhooks.events.iter().any(|e| e == kind))
            {
                batch.push(record);
            }
            if batch.len() < batch_size {
                next = notifications.try_recv();
            }
        }
        if let Some(webhooks) = &webhooks
            && !batch.is_empty()
        {
            post(webhooks, &backend, std::mem::take(&mut batch)).await;
        }
    }
}

/// Posts one batch; a batch that fails is dropped (at most once), with a warning.
async fn post(webhooks: &WebhooksConfig, backend: &Backend, batch: Vec<Value>) {
    let count = batch.len();
    let body = Value::Array(batch).to_string().into_bytes();
    let answer = backend
        .post_json(
            &webhooks.url,
            HeaderMap::new(),
            body,
            Duration::from_millis(webhooks.timeout_ms),
            ANSWER_LIMIT,
        )
        .await;
    match answer {
        Ok(reply) if reply.status.is_success() => {}
        Ok(reply) => tracing::warn!(
            status = %reply.status,
            body = %excerpt(&reply.body, 200),
            dropped = count,
            "sseio-hub: the lifecycle webhook refused a batch; it is not sent again"
        ),
        Err(error) => tracing::warn!(
            %error,
            dropped = count,
            "sseio-hub: the lifecycle webhook failed; the batch is not sent again"
        ),
    }
}

fn log(notification: &Notification) {
    match notification {
        Notification::ConnCreate { client_id, .. } => {
            tracing::debug!(client_id = &**client_id, "sseio-hub: conn:create");
        }
        Notification::ConnClose {
            client_id, reason, ..
        } => {
            tracing::debug!(
                client_id = &**client_id,
                reason = reason_code(*reason),
                "sseio-hub: conn:close"
            );
        }
        Notification::RoomCreate { event, room, .. } => {
            tracing::debug!(event = &**event, room = &**room, "sseio-hub: room:create");
        }
        Notification::RoomEmpty { event, room, .. } => {
            tracing::debug!(event = &**event, room = &**room, "sseio-hub: room:empty");
        }
        Notification::Error(error) => tracing::warn!(%error, "sseio-hub: error"),
        Notification::Broker(error) => tracing::warn!(%error, "sseio-hub: broker"),
        Notification::Lagged { missed } => tracing::warn!(
            missed,
            "sseio-hub: lifecycle notifications were dropped (not logged, not posted): raise \
             server.notification_capacity, or check that the webhook keeps up"
        ),
        _ => {}
    }
}
