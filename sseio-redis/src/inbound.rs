//! Inbound dispatch: what arrives on the node's subscriptions. Room messages go to the node's
//! connections (numbered ones through the catch-up), control messages act on this node's
//! connections, presence queries and take-overs are answered on the asking node's channel.

use std::sync::Arc;

use redis::{PushInfo, PushKind, Value};
use sseio_core::{CloseReason, Node};
use tokio::sync::{mpsc, oneshot};

use crate::broker::{Command, Shared, lock};
use crate::catch_up::deliver_numbered;
use crate::history;
use crate::link::Outgoing;
use crate::wire::{self, Answer, Control, HandedOver, Query, RoomMessage, TakeOver, ToNode};

/// Reads what arrives on one connection until it is lost, then says why on `lost`.
pub(crate) async fn read_pushes(
    shared: Arc<Shared>,
    replies: mpsc::WeakSender<Command>,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    lost: oneshot::Sender<String>,
) {
    while let Some(push) = pushes.recv().await {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                if let Some((to, reply)) = on_message(&shared, &push.data) {
                    send_to_node(&shared, &replies, &to, &reply).await;
                }
            }
            PushKind::Disconnection => break,
            _ => {}
        }
    }
    let _ = lost.send("connection closed".to_owned());
}

/// Dispatches one message that arrived on `channel` (the first of `data`, the body second): a
/// control message, a message to this node, or a room's message or presence query. Returns the
/// message to publish to another node in answer, if any, with that node's id.
fn on_message(shared: &Shared, data: &[Value]) -> Option<(String, ToNode)> {
    let (Some(Value::BulkString(channel)), Some(Value::BulkString(body))) =
        (data.first(), data.get(1))
    else {
        return None;
    };
    let node = shared.node.get()?;
    if channel.as_slice() == shared.control.as_bytes() {
        if let Ok(control) = serde_json::from_slice(body) {
            on_control(shared, node, control);
        }
    } else if channel.as_slice() == shared.node_channel.as_bytes() {
        match wire::decode_to_node(body) {
            Some(ToNode::Answer(answer)) => {
                if let Some(waiting) = lock(&shared.queries).get(&answer.id) {
                    let _ = waiting.send(answer.clients);
                }
            }
            Some(ToNode::TakeOver(take)) => return Some(hand_over(node, take)),
            Some(ToNode::HandedOver(handed)) => {
                if let Some(waiting) = lock(&shared.takeovers).remove(&handed.id) {
                    let _ = waiting.send(handed);
                }
            }
            None => {}
        }
    } else {
        match wire::decode_room(body) {
            Some(RoomMessage::Message {
                event,
                room,
                payload,
            }) => {
                node.deliver(event, room, payload);
            }
            Some(RoomMessage::Numbered {
                at,
                event,
                room,
                payload,
            }) => deliver_numbered(shared, node, at, event, room, payload),
            Some(RoomMessage::Query(query)) => return Some(answer(node, query)),
            None => {}
        }
    }
    None
}

/// The answer to a presence query: this node's members of the room, for the asking node.
fn answer(node: &Node, query: Query) -> (String, ToNode) {
    let answer = Answer {
        id: query.id,
        clients: node.local_presence(&query.event, &query.room),
    };
    (query.reply_to, ToNode::Answer(answer))
}

/// Closes this node's stream of the `clientId` another node is taking over; returns where it
/// stood, for that node.
fn hand_over(node: &Node, take: TakeOver) -> (String, ToNode) {
    let taken = node.take_over(&take.client);
    let handed = HandedOver {
        id: take.id,
        open: taken.is_some(),
        at: taken
            .map(history::record_text)
            .filter(|text| !text.is_empty()),
    };
    (take.reply_to, ToNode::HandedOver(handed))
}

/// Publishes `message` on the channel of node `to`, from the task that reads this node's
/// messages (which holds no handle that would keep the broker alive). Never refused for the
/// backlog: it waits for room in the command channel (reading stops meanwhile), since the asking
/// node counts on an answer from every node that got its question.
async fn send_to_node(
    shared: &Shared,
    replies: &mpsc::WeakSender<Command>,
    to: &str,
    message: &ToNode,
) {
    let Some(replies) = replies.upgrade() else {
        return;
    };
    let _ = replies
        .send(Command::Publish {
            outgoing: Outgoing::Publish {
                channel: wire::node_channel(&shared.config.prefix, to),
                body: wire::encode_to_node(message),
            },
            reply: None,
        })
        .await;
}

/// Acts on a control message. A connect elsewhere replaces this node's connection with the same
/// `clientId` only if this node's own announcement came back earlier on the control channel:
/// every node sees the channel in the same order, so the last connection announced survives,
/// wherever the two connects happened.
fn on_control(shared: &Shared, node: &Node, control: Control) {
    match control {
        Control::Connected {
            client,
            node: at,
            conn,
        } => {
            let mut clients = lock(&shared.clients);
            let Some(local) = clients.get_mut(&client) else {
                return;
            };
            if at == shared.node_id {
                if local.connection.get() == conn {
                    local.echoed = true;
                }
            } else if local.echoed {
                let connection = local.connection;
                clients.remove(&client);
                drop(clients);
                node.close(connection, CloseReason::Replaced);
            }
        }
        Control::SendToClient {
            client,
            event,
            payload,
        } => {
            node.deliver_to_client(&client, &event, &payload);
        }
        Control::Disconnect { client } => {
            node.disconnect(&client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RedisBroker;
    use crate::broker::Shared;

    #[tokio::test]
    async fn an_answer_to_another_node_waits_for_room_instead_of_being_refused() {
        let shared = Shared::new(RedisBroker::builder("redis://x").max_queued(1));
        let (commands_tx, mut commands) = mpsc::channel(1);
        let publish = |body: &[u8]| Command::Publish {
            outgoing: Outgoing::Publish {
                channel: "filler".to_owned(),
                body: body.to_vec(),
            },
            reply: None,
        };
        assert!(
            commands_tx.try_send(publish(b"full")).is_ok(),
            "room for one"
        );
        let answer = ToNode::Answer(Answer {
            id: 7,
            clients: vec!["a".to_owned()],
        });
        let replies = commands_tx.downgrade();
        let sending = send_to_node(&shared, &replies, "other", &answer);
        tokio::pin!(sending);
        tokio::select! {
            biased;
            () = &mut sending => panic!("queued although the channel was full"),
            () = tokio::task::yield_now() => {}
        }
        assert!(matches!(
            commands.recv().await,
            Some(Command::Publish { .. })
        ));
        sending.await;
        let Some(Command::Publish {
            outgoing: Outgoing::Publish { channel, .. },
            ..
        }) = commands.recv().await
        else {
            panic!("the answer was not queued");
        };
        assert_eq!(channel, wire::node_channel("sseio", "other"));
    }
}
