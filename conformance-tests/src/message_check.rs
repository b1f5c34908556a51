//! A check of an event stream of numbered messages, fast enough for issue 6's slow reader at
//! scale (`tests/heavy/stalled_reader.rs`): a thousand readers each checking 50 MB as it arrives.

use std::sync::Arc;

/// Where [`MessageCheck`] is in the event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// At the start of a line: an empty line, a comment (a heartbeat), the opening's `retry:`
    /// line or the next message.
    LineStart,
    /// Inside a line that carries no message: a comment, or the `retry:` field.
    Comment,
    /// This many bytes into the frame of message `seq`.
    Frame(usize),
}

/// Checks an event stream, as its bytes arrive, against numbered messages: message `seq` must
/// come next as exactly `event: <event>\ndata: <seq, six digits> <filler>\n\n`, with only empty
/// lines, comments (heartbeats) and `retry:` lines (the opening's reconnect delay) between
/// messages, and nothing but those after the last one. Whole payloads are compared with slice equality (`memcmp`), never
/// parsed byte by byte, so a thousand readers can check 50 GB on two cores.
#[derive(Debug)]
pub struct MessageCheck {
    /// The messages' event name.
    event: String,
    /// How many messages there are.
    messages: usize,
    /// The next message expected.
    seq: usize,
    /// The fillers by `seq % fillers.len()`.
    fillers: Arc<Vec<Vec<u8>>>,
    /// The start of message `seq`'s frame, up to its filler.
    head: Vec<u8>,
    at: At,
}

impl MessageCheck {
    /// A check of `messages` messages of `event`, message `seq` carrying
    /// `fillers[seq % fillers.len()]` after its number.
    pub fn new(event: &str, messages: usize, fillers: Arc<Vec<Vec<u8>>>) -> Self {
        Self {
            event: event.to_owned(),
            messages,
            seq: 0,
            fillers,
            head: Vec::new(),
            at: At::LineStart,
        }
    }

    /// The next message expected: how many have arrived whole.
    pub fn seq(&self) -> usize {
        self.seq
    }

    /// Checks the next bytes of the stream; a description of the first difference otherwise.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        while let Some(&first) = bytes.first() {
            match self.at {
                At::LineStart => match first {
                    b'\n' => bytes = &bytes[1..],
                    // A message frame starts with `event:`; a line starting with `r` is the
                    // opening's `retry:` field.
                    b':' | b'r' => self.at = At::Comment,
                    _ if self.seq == self.messages => {
                        return Err(format!(
                            "bytes after the last message: {:?}",
                            String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
                        ));
                    }
                    _ => {
                        self.head =
                            format!("event: {}\ndata: {:06} ", self.event, self.seq).into_bytes();
                        self.at = At::Frame(0);
                    }
                },
                At::Comment => match bytes.iter().position(|&b| b == b'\n') {
                    Some(end) => {
                        bytes = &bytes[end + 1..];
                        self.at = At::LineStart;
                    }
                    None => bytes = &[],
                },
                At::Frame(offset) => {
                    let filler = &self.fillers[self.seq % self.fillers.len()];
                    let parts: [&[u8]; 3] = [&self.head, filler, b"\n\n"];
                    let mut start = 0;
                    let (part, within_part) = parts
                        .iter()
                        .find_map(|part| {
                            let found =
                                (offset < start + part.len()).then(|| (*part, offset - start));
                            start += part.len();
                            found
                        })
                        .expect("an offset inside the frame");
                    let n = (part.len() - within_part).min(bytes.len());
                    if bytes[..n] != part[within_part..within_part + n] {
                        return Err(format!(
                            "message {} differs at byte {offset}: got {:?}",
                            self.seq,
                            String::from_utf8_lossy(&bytes[..n.min(80)])
                        ));
                    }
                    bytes = &bytes[n..];
                    let frame_len = self.head.len() + filler.len() + 2;
                    if offset + n == frame_len {
                        self.seq += 1;
                        self.at = At::LineStart;
                    } else {
                        self.at = At::Frame(offset + n);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fillers() -> Arc<Vec<Vec<u8>>> {
        Arc::new((b'a'..=b'z').map(|l| vec![l; 3]).collect())
    }

    #[test]
    fn messages_split_anywhere_with_heartbeats_between_pass() {
        let stream: &[u8] = b"\nevent: normal-event\ndata: 000000 aaa\n\n:\n\n\
            event: normal-event\ndata: 000001 bbb\n\n";
        for split in 0..stream.len() {
            let mut check = MessageCheck::new("normal-event", 763, fillers());
            check.feed(&stream[..split]).unwrap();
            check.feed(&stream[split..]).unwrap();
            assert_eq!(check.seq(), 2);
        }
    }

    #[test]
    fn the_openings_retry_line_is_not_a_message() {
        let stream: &[u8] = b"\nretry: 2530\n\nevent: normal-event\ndata: 000000 aaa\n\n";
        for split in 0..stream.len() {
            let mut check = MessageCheck::new("normal-event", 763, fillers());
            check.feed(&stream[..split]).unwrap();
            check.feed(&stream[split..]).unwrap();
            assert_eq!(check.seq(), 1);
        }
    }

    #[test]
    fn a_lost_message_is_reported() {
        let mut check = MessageCheck::new("normal-event", 763, fillers());
        let e = check
            .feed(b"\nevent: normal-event\ndata: 000001 bbb\n\n")
            .unwrap_err();
        assert!(e.contains("message 0 differs"), "{e}");
    }

    #[test]
    fn a_damaged_payload_is_reported() {
        let mut check = MessageCheck::new("normal-event", 763, fillers());
        assert!(
            check
                .feed(b"event: normal-event\ndata: 000000 aab\n\n")
                .is_err()
        );
    }
}
