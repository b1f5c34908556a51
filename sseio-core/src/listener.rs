//! Binding a listener fit for bursts of SSE connects, for any adapter's server.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// The listen backlog of [`bind`]. The official client reconnects at once when a stream ends, so
/// a server restart or a proxy reload brings every client back in the same instant; tokio's
/// default backlog of 128 overflows under such a burst and costs each overflowing client a
/// one-second SYN retry.
pub const LISTEN_BACKLOG: u32 = 1024;

/// Binds a TCP listener on `addr` with `SO_REUSEADDR` and a backlog of [`LISTEN_BACKLOG`]. Use it
/// with any framework that accepts a tokio `TcpListener`.
///
/// # Errors
///
/// When the address cannot be bound (in use, no permission).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
