//! The cluster's message history in Redis: one sequence of positions for every room, a capped
//! stream per room, and the official client's resume records.
//!
//! Keys, under the broker's prefix `p`:
//!
//! - `p:history`, a hash: `epoch` (Redis's clock in microseconds when the sequence began; a new
//!   one after Redis lost its data), `seq` (the offset of the last message), and `forgotten`
//!   (the highest offset of a room log dropped whole because it expired);
//! - `p:history:<length of event>:<event>:<room>`, a stream per room: one entry per message,
//!   with id `<offset>-1`, its payload `p` and the time `t` it was recorded, in milliseconds;
//! - `p:history:trimmed`, a hash: per room log, the highest offset trimmed from it;
//! - `p:history:expiry`, a sorted set: per room log, when its newest message expires;
//! - `p:resume:<clientId>`: where a `clientId` stood when its stream closed, with a TTL
//!   (`<epoch>-<offset>`; `?<epoch>-<offset>` when its connection dropped after it was given
//!   messages, some of which may not have arrived); or, while its stream is open, `@<node id>`,
//!   the node it is open on.
//!
//! A send runs [`RECORD`], which numbers, records, trims and publishes in one atomic step, so a
//! message is in the stream exactly when it is published, and positions reach each node in
//! order (one Redis, one connection per node). A joining connection runs [`REPLAY`] after its
//! rooms' subscriptions, on the same connection, so each message since the position it names
//! is in the answer, or arrives live, or both.

pub(crate) mod store;

use std::time::Duration;

use redis::{Cmd, Script, Value};
use sseio_core::{BoxFuture, BrokerError, History, Position, Recalled, Replay, ReplayRoom};

/// The start of both scripts: `now` in milliseconds from Redis's clock, and the sequence's
/// `epoch` from hash `meta`, set from the clock (in microseconds) when the sequence begins.
macro_rules! clock_and_epoch {
    () => {
        r"local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = time[1] .. string.format('%06d', tonumber(time[2]))
  redis.call('HSET', meta, 'epoch', epoch)
end
"
    };
}

/// Numbers a message, records it in its room's stream (trimmed to its capacity and TTL),
/// forgets a few room logs that expired whole, and publishes the numbered message.
///
/// KEYS: meta, room stream, expiry set, trimmed hash. ARGV: channel, message body after its
/// tag, payload, capacity, TTL in ms. Returns the number of nodes that received it.
pub(crate) const RECORD: &str = concat!(
    r"
local meta, stream, expiry, trimmed = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local capacity, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
",
    clock_and_epoch!(),
    r"local seq = redis.call('HINCRBY', meta, 'seq', 1)
for _, key in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, 8)) do
  if key ~= stream then
    local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
    if last then
      local offset = tonumber(string.match(last[1], '^%d+'))
      if offset > (tonumber(redis.call('HGET', meta, 'forgotten')) or 0) then
        redis.call('HSET', meta, 'forgotten', offset)
      end
    end
    redis.call('DEL', key)
    redis.call('HDEL', trimmed, key)
    redis.call('ZREM', expiry, key)
  end
end
redis.call('XADD', stream, seq .. '-1', 'p', ARGV[3], 't', now)
redis.call('ZADD', expiry, now + ttl, stream)
local excess = redis.call('XLEN', stream) - capacity
local upto = nil
for i, entry in ipairs(redis.call('XRANGE', stream, '-', '+', 'COUNT', math.max(excess, 0) + 1)) do
  if i <= excess or tonumber(entry[2][4]) < now - ttl then
    upto = tonumber(string.match(entry[1], '^%d+'))
  else
    break
  end
end
if upto then
  redis.call('XTRIM', stream, 'MINID', (upto + 1) .. '-0')
  redis.call('HSET', trimmed, stream, upto)
end
return redis.call('PUBLISH', ARGV[1], 'N' .. epoch .. ':' .. seq .. ':' .. ARGV[2])
"
);

/// Where the sequence stands and, given a position, what each room has after it.
///
/// KEYS: meta, trimmed hash, then one stream per room. ARGV: the position's epoch (empty for
/// none) and offset, then each room's TTL in ms. Returns the epoch, the last offset, then per
/// room either nil (the gap cannot be filled) or a flat list of entry id and payload.
pub(crate) const REPLAY: &str = concat!(
    r"
local meta, trimmed = KEYS[1], KEYS[2]
",
    clock_and_epoch!(),
    r"local seq = tonumber(redis.call('HGET', meta, 'seq')) or 0
local answer = {epoch, tostring(seq)}
if ARGV[1] == '' then
  return answer
end
local from = tonumber(ARGV[2])
local same = ARGV[1] == epoch and from <= seq
local forgotten = tonumber(redis.call('HGET', meta, 'forgotten')) or 0
for i = 3, #KEYS do
  local ttl = tonumber(ARGV[i])
  local room = false
  if same and redis.call('EXISTS', KEYS[i]) == 1 then
    if (tonumber(redis.call('HGET', trimmed, KEYS[i])) or 0) <= from then
      room = {}
      for _, entry in ipairs(redis.call('XRANGE', KEYS[i], (from + 1) .. '-0', '+')) do
        if tonumber(entry[2][4]) < now - ttl then
          room = false
          break
        end
        table.insert(room, entry[1])
        table.insert(room, entry[2][2])
      end
    end
  elseif same and forgotten <= from then
    room = {}
  end
  table.insert(answer, room)
end
return answer
"
);

/// Where a `clientId` resumes from: its record, taken when it is a position (so that it serves
/// one reconnect), left when it names the node its stream is open on.
///
/// KEYS: the resume record. Returns the record, or nil.
pub(crate) const RECALL: &str = r"
local at = redis.call('GET', KEYS[1])
if at and string.sub(at, 1, 1) ~= '@' then
  redis.call('DEL', KEYS[1])
end
return at
";

/// Where a `clientId`'s stream stood when it closed on this node (or, with no position, that
/// it is no longer open here), unless the record names another node: its stream opened there
/// since, and that node owns the record.
///
/// KEYS: the resume record. ARGV: this node's mark (`@<node id>`), the position (empty for
/// none), the TTL in ms. Returns 1 when written.
pub(crate) const REMEMBER: &str = r"
local now = redis.call('GET', KEYS[1])
if now and string.sub(now, 1, 1) == '@' and now ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  if now == ARGV[1] then
    redis.call('DEL', KEYS[1])
  end
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
";

/// The scripts, with their SHA1s for `EVALSHA`.
#[derive(Debug, Clone)]
pub(crate) struct Scripts {
    pub(crate) record: Script,
    pub(crate) replay: Script,
    pub(crate) recall: Script,
    pub(crate) remember: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            record: Script::new(RECORD),
            replay: Script::new(REPLAY),
            recall: Script::new(RECALL),
            remember: Script::new(REMEMBER),
        }
    }

    /// The commands that load the scripts, for each new connection.
    pub(crate) fn load_commands() -> [Cmd; 4] {
        [RECORD, REPLAY, RECALL, REMEMBER].map(|code| {
            let mut cmd = redis::cmd("SCRIPT");
            cmd.arg("LOAD").arg(code);
            cmd
        })
    }
}

/// The key names of one broker's history.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    fn meta(&self) -> String {
        format!("{}:history", self.prefix)
    }

    fn trimmed(&self) -> String {
        format!("{}:history:trimmed", self.prefix)
    }

    fn expiry(&self) -> String {
        format!("{}:history:expiry", self.prefix)
    }

    /// The stream of one room; the event's length keeps `a:b`/`c` and `a`/`b:c` apart.
    pub(crate) fn room(&self, event: &str, room: &str) -> String {
        format!("{}:history:{}:{event}:{room}", self.prefix, event.len())
    }

    pub(crate) fn resume(&self, client_id: &str) -> String {
        format!("{}:resume:{client_id}", self.prefix)
    }

    /// The `EVALSHA` that takes a resume record (see [`RECALL`]).
    pub(crate) fn recall(&self, scripts: &Scripts, client_id: &str) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(scripts.recall.get_hash())
            .arg(1)
            .arg(self.resume(client_id));
        cmd
    }

    /// The `EVALSHA` that writes where a closed stream left, or forgets that it was open
    /// here ([`Recalled::Nothing`]), unless another node's stream owns the record (see
    /// [`REMEMBER`]).
    pub(crate) fn remember(
        &self,
        scripts: &Scripts,
        client_id: &str,
        mark: &str,
        left: Recalled,
        ttl: Duration,
    ) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(scripts.remember.get_hash())
            .arg(1)
            .arg(self.resume(client_id))
            .arg(mark)
            .arg(record_text(left))
            .arg(millis(ttl));
        cmd
    }

    /// The `SET` that marks a `clientId`'s stream as open on the node of `mark`.
    pub(crate) fn mark_open(&self, client_id: &str, mark: &str, ttl: Duration) -> Cmd {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.resume(client_id))
            .arg(mark)
            .arg("PX")
            .arg(millis(ttl));
        cmd
    }

    /// The `EVALSHA` that records and publishes one message.
    pub(crate) fn record(
        &self,
        scripts: &Scripts,
        channel: &str,
        (event, room, payload): (&str, &str, &str),
        body: &[u8],
        history: History,
    ) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(scripts.record.get_hash())
            .arg(4)
            .arg(self.meta())
            .arg(self.room(event, room))
            .arg(self.expiry())
            .arg(self.trimmed())
            .arg(channel)
            .arg(body)
            .arg(payload)
            .arg(history.capacity())
            .arg(millis(history.ttl()));
        cmd
    }

    /// The `EVALSHA` that answers a replay.
    pub(crate) fn replay(
        &self,
        scripts: &Scripts,
        rooms: &[ReplayRoom],
        from: Option<Position>,
    ) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(scripts.replay.get_hash())
            .arg(2 + rooms.len())
            .arg(self.meta())
            .arg(self.trimmed());
        for room in rooms {
            cmd.arg(self.room(&room.event, &room.room));
        }
        match from {
            Some(from) => cmd.arg(from.epoch()).arg(from.offset()),
            None => cmd.arg("").arg(0),
        };
        for room in rooms {
            cmd.arg(millis(room.history.ttl()));
        }
        cmd
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Reads the answer of [`REPLAY`].
pub(crate) fn parse_replay(answer: &Value, rooms: usize) -> Result<Replay, BrokerError> {
    let bad = || BrokerError::failed(format!("unexpected answer to the replay: {answer:?}"));
    let Value::Array(items) = answer else {
        return Err(bad());
    };
    let text = |value: &Value| match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok().map(str::to_owned),
        Value::SimpleString(text) => Some(text.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    };
    let number = |value: &Value| text(value).and_then(|t| t.parse::<u64>().ok());
    let (Some(epoch), Some(offset)) = (
        items.first().and_then(number),
        items.get(1).and_then(number),
    ) else {
        return Err(bad());
    };
    let mut missed = Vec::with_capacity(rooms);
    for room in items.iter().skip(2) {
        missed.push(match room {
            Value::Nil => None,
            Value::Array(entries) => {
                let mut messages = Vec::with_capacity(entries.len() / 2);
                for pair in entries.chunks(2) {
                    let [id, payload] = pair else {
                        return Err(bad());
                    };
                    let offset = text(id)
                        .and_then(|id| id.split('-').next()?.parse().ok())
                        .ok_or_else(bad)?;
                    messages.push((offset, text(payload).ok_or_else(bad)?));
                }
                Some(messages)
            }
            _ => return Err(bad()),
        });
    }
    Ok(Replay {
        now: Position::new(epoch, offset),
        rooms: missed,
    })
}

/// A resume record, as [`RECALL`] answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// Where the stream left when it closed: `<epoch>-<offset>`, `?<epoch>-<offset>` or `?`
    /// (see [`record_text`]).
    Left(Recalled),
    /// The node its stream is open on: `@<node id>`.
    OpenOn(String),
}

/// How a record (and a node's hand-over) stores where a stream left: its position, after `?`
/// when the stream dropped ([`Recalled::Dropped`]); `?` alone for [`Recalled::Lost`]; empty
/// for [`Recalled::Nothing`] (no record).
pub(crate) fn record_text(left: Recalled) -> String {
    match left {
        Recalled::At(at) => at.to_string(),
        Recalled::Dropped(at) => format!("?{at}"),
        Recalled::Lost => "?".to_owned(),
        _ => String::new(),
    }
}

/// Reads what [`record_text`] wrote; `Nothing` for anything else.
pub(crate) fn parse_left(text: &str) -> Recalled {
    match text.strip_prefix('?') {
        Some("") => Recalled::Lost,
        Some(at) => Position::parse(at).map_or(Recalled::Nothing, Recalled::Dropped),
        None => Position::parse(text).map_or(Recalled::Nothing, Recalled::At),
    }
}

/// Reads a resume record; `None` for none (or one that is not ours).
pub(crate) fn parse_record(answer: &Value) -> Option<Record> {
    let Value::BulkString(bytes) = answer else {
        return None;
    };
    let text = std::str::from_utf8(bytes).ok()?;
    match text.strip_prefix('@') {
        Some(node) => Some(Record::OpenOn(node.to_owned())),
        None => match parse_left(text) {
            Recalled::Nothing => None,
            left => Some(Record::Left(left)),
        },
    }
}

/// A future that fails at once, for calls made while the broker is down.
pub(crate) fn failed<T: Send + 'static>(error: BrokerError) -> BoxFuture<Result<T, BrokerError>> {
    Box::pin(std::future::ready(Err(error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_record_reads_back_as_written() {
        let at = Position::new(1_700_000_000_000_000, 42);
        for left in [Recalled::At(at), Recalled::Dropped(at), Recalled::Lost] {
            let text = record_text(left);
            assert_eq!(parse_left(&text), left, "{text:?}");
            let answer = Value::BulkString(text.into_bytes());
            assert_eq!(parse_record(&answer), Some(Record::Left(left)));
        }
        assert_eq!(record_text(Recalled::Nothing), "");
        for other in ["", "?x", "x", "?1-2-3"] {
            assert_eq!(parse_left(other), Recalled::Nothing, "{other:?}");
        }
        let open = Value::BulkString(b"@node-1".to_vec());
        assert_eq!(parse_record(&open), Some(Record::OpenOn("node-1".into())));
    }
}
