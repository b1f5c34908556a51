//! A replay larger than the connection's buffer goes out in parts: the connection gets the
//! oldest of what it missed, as much as its buffer holds, and its stream ends once that is
//! written ([`CloseReason::CatchingUp`](crate::CloseReason::CatchingUp)); its reconnect (by
//! `Last-Event-ID`, or by `clientId`, which is exact after a close by the server) gets the
//! next part. So a client closed because its buffer filled up gets every message it missed,
//! once and in order, however far behind it fell, rather than a resync.

/// Where the replays of a connection's rooms are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// All of it goes now.
    Whole,
    /// Each room's frames up to this offset go now; the stream ends once they are written.
    UpTo(u64),
    /// Not even the oldest frame fits: the rooms resync.
    Nothing,
}

/// Cuts the replays whose frames are `frames` (`(offset, size)` of every room's missed
/// messages) so that what goes now fits in `room` bytes: oldest first, across rooms, since
/// one position says where the connection stands in all of them.
pub(crate) fn cut(mut frames: Vec<(u64, usize)>, room: usize) -> Cut {
    if frames.iter().map(|&(_, size)| size).sum::<usize>() <= room {
        return Cut::Whole;
    }
    frames.sort_unstable();
    let mut used = 0;
    let mut upto = None;
    for (offset, size) in frames {
        used += size;
        if used > room {
            break;
        }
        upto = Some(offset);
    }
    upto.map_or(Cut::Nothing, Cut::UpTo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_is_cut_oldest_first_across_rooms() {
        let rooms = vec![(2, 100), (5, 100), (3, 100), (9, 100)];
        assert_eq!(cut(rooms.clone(), 400), Cut::Whole);
        assert_eq!(cut(rooms.clone(), 399), Cut::UpTo(5));
        assert_eq!(cut(rooms.clone(), 250), Cut::UpTo(3));
        assert_eq!(cut(rooms, 99), Cut::Nothing);
        assert_eq!(cut(Vec::new(), 0), Cut::Whole);
    }
}
