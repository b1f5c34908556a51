//! What goes over Redis: channel names, and the messages on them.
//!
//! A room's channel carries its messages (`M`, binary: event, room, payload; or, numbered by the
//! cluster's history, `N<epoch>:<offset>:` then the same) and presence queries (`Q`, JSON). The
//! cluster's control channel carries JSON; each node's own channel carries the answers to its
//! presence queries (JSON), and the take-overs of a `clientId`'s stream (`T`, JSON) and their
//! answers (`H`, JSON).

use serde::{Deserialize, Serialize};
use sseio_core::Position;

/// The channel of room `room` of `event`: `<prefix>:room:<length of event>:<event>:<room>`,
/// the event's length in bytes, so that no two rooms share a channel whatever their names
/// contain (without it, event `a:b` with room `c` and event `a` with room `b:c` would).
pub(crate) fn room_channel(prefix: &str, event: &str, room: &str) -> String {
    format!("{prefix}:room:{}:{event}:{room}", event.len())
}

/// The channel every node listens to: connects (for cluster-wide replacement), per-client sends
/// and disconnects.
pub(crate) fn control_channel(prefix: &str) -> String {
    format!("{prefix}:control")
}

/// The channel of one node: answers to its presence queries.
pub(crate) fn node_channel(prefix: &str, node: &str) -> String {
    format!("{prefix}:node:{node}")
}

/// A message for a room: `M`, then the event and the room, each as a 4-byte big-endian length
/// and its bytes, then the payload. The names travel in the message, so the receiver never
/// parses a channel name (event names and room ids may contain `:`).
pub(crate) fn encode_message(event: &str, room: &str, payload: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(9 + event.len() + room.len() + payload.len());
    body.push(b'M');
    for part in [event, room] {
        body.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        body.extend_from_slice(part.as_bytes());
    }
    body.extend_from_slice(payload.as_bytes());
    body
}

/// A presence query for a room: `Q`, then JSON.
pub(crate) fn encode_query(query: &Query) -> Vec<u8> {
    let mut body = vec![b'Q'];
    // Serializing a struct of strings and integers cannot fail.
    serde_json::to_writer(&mut body, query).unwrap_or_default();
    body
}

/// What arrived on a room's channel.
#[derive(Debug, PartialEq)]
pub(crate) enum RoomMessage<'a> {
    Message {
        event: &'a str,
        room: &'a str,
        payload: &'a str,
    },
    /// A message numbered by the history script, which writes the position in front.
    Numbered {
        at: Position,
        event: &'a str,
        room: &'a str,
        payload: &'a str,
    },
    Query(Query),
}

/// Decodes what arrived on a room's channel; `None` for anything malformed (another program
/// publishing on our prefix), which is dropped.
pub(crate) fn decode_room(body: &[u8]) -> Option<RoomMessage<'_>> {
    let (&tag, rest) = body.split_first()?;
    match tag {
        b'M' => {
            let (event, room, payload) = decode_parts(rest)?;
            Some(RoomMessage::Message {
                event,
                room,
                payload,
            })
        }
        b'N' => {
            let mut fields = rest.splitn(3, |&b| b == b':');
            let mut number = || std::str::from_utf8(fields.next()?).ok()?.parse().ok();
            let at = Position::new(number()?, number()?);
            let (event, room, payload) = decode_parts(fields.next()?)?;
            Some(RoomMessage::Numbered {
                at,
                event,
                room,
                payload,
            })
        }
        b'Q' => serde_json::from_slice(rest).ok().map(RoomMessage::Query),
        _ => None,
    }
}

/// The event, room and payload of a message, after its tag.
fn decode_parts(mut rest: &[u8]) -> Option<(&str, &str, &str)> {
    let mut part = || -> Option<&str> {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        let (text, tail) = (tail.get(..len)?, tail.get(len..)?);
        rest = tail;
        std::str::from_utf8(text).ok()
    };
    let event = part()?;
    let room = part()?;
    let payload = std::str::from_utf8(rest).ok()?;
    Some((event, room, payload))
}

/// "Who is in this room?", asked by node `reply_to`.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Query {
    pub(crate) id: u64,
    pub(crate) reply_to: String,
    pub(crate) event: String,
    pub(crate) room: String,
}

/// A message on the control channel.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "kebab-case")]
pub(crate) enum Control {
    /// `client` opened connection `conn` on `node`.
    Connected {
        client: String,
        node: String,
        conn: u64,
    },
    /// Send `payload` as an `event` message to `client`, wherever it is.
    SendToClient {
        client: String,
        event: String,
        payload: String,
    },
    /// Close `client`'s stream, wherever it is.
    Disconnect { client: String },
}

/// An answer on a node's channel.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Answer {
    pub(crate) id: u64,
    pub(crate) clients: Vec<String>,
}

/// "Close `client`'s stream here and say where it stood", asked by node `reply_to`, whose own
/// stream for that `clientId` is opening.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct TakeOver {
    pub(crate) id: u64,
    pub(crate) reply_to: String,
    pub(crate) client: String,
}

/// The answer to a [`TakeOver`]: whether the stream was open here, and where it stood.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct HandedOver {
    pub(crate) id: u64,
    pub(crate) open: bool,
    pub(crate) at: Option<String>,
}

/// What arrived on a node's own channel.
#[derive(Debug, PartialEq)]
pub(crate) enum ToNode {
    Answer(Answer),
    TakeOver(TakeOver),
    HandedOver(HandedOver),
}

/// `T` then JSON, or `H` then JSON.
pub(crate) fn encode_to_node(message: &ToNode) -> Vec<u8> {
    let (tag, json) = match message {
        // Serializing a struct of strings and integers cannot fail.
        ToNode::Answer(answer) => (None, serde_json::to_vec(answer)),
        ToNode::TakeOver(take) => (Some(b'T'), serde_json::to_vec(take)),
        ToNode::HandedOver(handed) => (Some(b'H'), serde_json::to_vec(handed)),
    };
    let mut body: Vec<u8> = tag.into_iter().collect();
    body.extend(json.unwrap_or_default());
    body
}

/// Decodes what arrived on a node's channel; `None` for anything malformed.
pub(crate) fn decode_to_node(body: &[u8]) -> Option<ToNode> {
    match body.split_first()? {
        (b'T', json) => serde_json::from_slice(json).ok().map(ToNode::TakeOver),
        (b'H', json) => serde_json::from_slice(json).ok().map(ToNode::HandedOver),
        _ => serde_json::from_slice(body).ok().map(ToNode::Answer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_whose_joined_names_match_have_their_own_channels() {
        assert_ne!(room_channel("p", "a:b", "c"), room_channel("p", "a", "b:c"));
        assert_eq!(room_channel("p", "a:b", "c"), "p:room:3:a:b:c");
        assert_eq!(room_channel("p", "a", "b:c"), "p:room:1:a:b:c");
    }

    #[test]
    fn a_message_round_trips_whatever_its_names_contain() {
        let body = encode_message("ev:1", "room:with:colons", "data\nwith: lines");
        assert_eq!(
            decode_room(&body),
            Some(RoomMessage::Message {
                event: "ev:1",
                room: "room:with:colons",
                payload: "data\nwith: lines",
            })
        );
    }

    #[test]
    fn a_numbered_message_carries_its_position() {
        let mut body = b"N17:42:".to_vec();
        body.extend_from_slice(&encode_message("e", "r:1", "x\ny")[1..]);
        assert_eq!(
            decode_room(&body),
            Some(RoomMessage::Numbered {
                at: Position::new(17, 42),
                event: "e",
                room: "r:1",
                payload: "x\ny",
            })
        );
        for bad in [&b"N17:"[..], b"N:1:", b"Nx:1:", b"N1:2:\0"] {
            assert_eq!(decode_room(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_query_round_trips() {
        let query = Query {
            id: 7,
            reply_to: "n".into(),
            event: "e".into(),
            room: "r".into(),
        };
        assert_eq!(
            decode_room(&encode_query(&query)),
            Some(RoomMessage::Query(query))
        );
    }

    #[test]
    fn what_a_node_is_sent_round_trips() {
        for message in [
            ToNode::Answer(Answer {
                id: 1,
                clients: vec!["a".into()],
            }),
            ToNode::TakeOver(TakeOver {
                id: 2,
                reply_to: "n".into(),
                client: "c:1".into(),
            }),
            ToNode::HandedOver(HandedOver {
                id: 3,
                open: true,
                at: Some("17-42".into()),
            }),
        ] {
            assert_eq!(decode_to_node(&encode_to_node(&message)), Some(message));
        }
        assert_eq!(decode_to_node(b"T{"), None);
    }

    #[test]
    fn malformed_bodies_are_dropped() {
        for body in [
            &b""[..],
            b"X",
            b"M",
            b"M\0\0\0\x05ab",
            b"M\0\0\0\x01e\0\0\0\x09r",
            b"Q{",
            b"M\0\0\0\x01\xff\0\0\0\x00",
        ] {
            assert_eq!(decode_room(body), None, "{body:?}");
        }
    }
}
