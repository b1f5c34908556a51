//! The resume step of a connect: where a reconnecting client asks to resume from, as far as it
//! can be told before the connection joins its rooms.

use crate::broker::Recalled;
use crate::error::ConnectionError;
use crate::position::Position;
use crate::request::RequestHead;
use crate::server::ServerInner;

use super::admit::Admitted;

/// What is known of a connection's resume point before it joins.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resume {
    /// Whether any of its rooms has history: without, nothing is resumed.
    pub(crate) history_on: bool,
    /// Whether the broker keeps the history (so replays and resume records are the broker's).
    pub(crate) by_broker: bool,
    /// The position the client's `Last-Event-ID` names: `Some(None)` for an id that is not one
    /// of ours, which counts as a position that cannot be filled.
    pub(crate) named: Option<Option<Position>>,
    /// The position of the resume query parameter (`lastEventId` by default): a page's first
    /// connect from where the server rendered it, or a polyfill that cannot set headers. It
    /// counts after where the `clientId` left off, so that the official client, which keeps its
    /// query on every reconnect, resumes from its last stream rather than from the render.
    pub(crate) queried: Option<Option<Position>>,
    /// Where the broker says this `clientId` resumes from, on whichever node it was (asked
    /// only when the client sent no `Last-Event-ID`).
    pub(crate) recalled: Recalled,
}

impl Resume {
    /// Where to resume from, once the join knows where the connection it replaces left
    /// (`replaced`) and where this server remembers its `clientId` left (`left`).
    pub(crate) fn start(&self, replaced: Recalled, left: Recalled) -> Start {
        if !self.history_on {
            return Start::FRESH;
        }
        let remembered = [replaced, left, self.recalled]
            .into_iter()
            .find_map(|recalled| match recalled {
                Recalled::At(at) => Some((Some(at), false)),
                Recalled::Dropped(at) => Some((Some(at), true)),
                Recalled::Lost => Some((None, false)),
                _ => None,
            });
        // The client's own word is exact: it names what it got.
        if let Some(named) = self.named {
            return Start {
                from: Some(named),
                doubtful: false,
            };
        }
        match remembered {
            Some((from, doubtful)) => Start {
                from: Some(from),
                doubtful,
            },
            None => Start {
                from: self.queried,
                doubtful: false,
            },
        }
    }
}

/// Where a connection resumes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Start {
    /// `None` for a fresh connection, `Some(None)` for a position that cannot be filled,
    /// `Some(Some(at))` to resume after `at`.
    pub(crate) from: Option<Option<Position>>,
    /// Its last stream dropped after it was given messages that may have been lost in flight
    /// ([`Recalled::Dropped`]): each event with history is told of a possible gap, ahead of
    /// what it resumes.
    pub(crate) doubtful: bool,
}

impl Start {
    const FRESH: Start = Start {
        from: None,
        doubtful: false,
    };
}

/// Finds what the request and the broker say about where the client resumes.
pub(crate) async fn resume(
    server: &ServerInner,
    request: &RequestHead<'_>,
    admitted: &Admitted,
) -> Resume {
    let named = request
        .headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(Position::parse);
    let queried = admitted
        .context
        .query(server.resume_query_param())
        .map(Position::parse);
    let history_on = admitted
        .rooms
        .iter()
        .any(|(handler, _)| handler.history().is_some());
    let store = server.history_store().filter(|_| history_on);
    let recalled = match (store, named) {
        // A broker that cannot say where the client stood cannot say it is a first connect
        // either: it resyncs, and is told of the gap, rather than miss messages silently.
        (Some(store), None) => match store.resume_point(&admitted.client_id).await {
            Ok(recalled) => recalled,
            Err(source) => {
                server.report(ConnectionError::Resume {
                    client_id: admitted.client_id.clone(),
                    source,
                });
                Recalled::Lost
            }
        },
        _ => Recalled::Nothing,
    };
    Resume {
        history_on,
        by_broker: store.is_some(),
        named,
        queried,
        recalled,
    }
}
