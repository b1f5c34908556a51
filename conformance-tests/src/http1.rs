//! A deliberately small HTTP/1.1 client over a raw [`TcpStream`].
//!
//! The suite checks the wire, so it does not use a client library that would normalise what the
//! server sent: this client writes the request bytes itself, parses the response head itself
//! (status line, version, every header as sent), and decodes the body incrementally
//! (`Content-Length`, `chunked`, or delimited by the server closing the connection), handing out
//! body bytes as they arrive. Every read is cancel-safe, so callers can wrap any of them in
//! [`tokio::time::timeout`].

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest response head this client accepts.
const MAX_HEAD: usize = 64 * 1024;
/// The longest chunk-size or trailer line this client accepts.
const MAX_CHUNK_LINE: usize = 4096;
/// The first read of a body asks for this many bytes; each read that fills its buffer doubles
/// the next one, up to [`MAX_READ`], so an idle stream holds little and a bulk one reads in few
/// system calls.
const MIN_READ: usize = 8 * 1024;
/// The most one read of a body asks for.
const MAX_READ: usize = 256 * 1024;

/// An HTTP/1.1 request to send with [`Request::send`] (or an HTTP/1.0 one, [`Request::http10`]).
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    http10: bool,
    recv_buffer: Option<u32>,
    source: Option<std::net::IpAddr>,
}

impl Request {
    /// A request with the given method and request target (path and query, such as
    /// `/files/x/pull?clientId=a&events=b`), no extra header and no body.
    pub fn new(method: impl Into<String>, target: impl Into<String>) -> Request {
        Request {
            method: method.into(),
            target: target.into(),
            headers: Vec::new(),
            body: Vec::new(),
            http10: false,
            recv_buffer: None,
            source: None,
        }
    }

    /// A `GET` request for `target`.
    pub fn get(target: impl Into<String>) -> Request {
        Request::new("GET", target)
    }

    /// Connects with a socket receive buffer of `bytes` (`SO_RCVBUF`, which the kernel
    /// doubles), so that a client that stops reading fills it, and then the server's side,
    /// soon.
    #[must_use]
    pub fn recv_buffer(mut self, bytes: u32) -> Request {
        self.recv_buffer = Some(bytes);
        self
    }

    /// Connects from the local address `ip` (any port), such as one of `127.0.0.1..=127.0.0.N`:
    /// a client that opens tens of thousands of connections to one server spreads them over
    /// several source addresses, since each address has only the ephemeral port range to give.
    #[must_use]
    pub fn source_ip(mut self, ip: std::net::IpAddr) -> Request {
        self.source = Some(ip);
        self
    }

    /// Sends the request as HTTP/1.0, as an old client or a proxy's default upstream connection
    /// does, and without the `Host` line [`Request::send`] otherwise writes (HTTP/1.0 has none;
    /// add one with [`Request::header`]). Nothing else changes: the response is read as it comes,
    /// and a body without `Content-Length` ends when the server closes the connection.
    #[must_use]
    pub fn http10(mut self) -> Request {
        self.http10 = true;
        self
    }

    /// Adds a header line. `Host` and `Content-Length` are written by [`Request::send`].
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body; `Content-Length` is sent for it.
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// The method.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The request target (path and query).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Connects to `base_url` (`http://host:port`), writes the request and reads the response
    /// head. The body is left on the connection, to be read from the returned [`Response`].
    pub async fn send(self, base_url: &str) -> io::Result<Response> {
        let authority = authority(base_url)?;
        let mut stream = if self.recv_buffer.is_none() && self.source.is_none() {
            TcpStream::connect(authority).await?
        } else {
            let addr = tokio::net::lookup_host(authority)
                .await?
                .next()
                .ok_or_else(|| io::Error::other("no address"))?;
            let socket = match addr {
                std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            if let Some(bytes) = self.recv_buffer {
                socket.set_recv_buffer_size(bytes)?;
            }
            if let Some(ip) = self.source {
                socket.bind(std::net::SocketAddr::new(ip, 0))?;
            }
            socket.connect(addr).await?
        };
        stream.set_nodelay(true)?;
        let mut head = if self.http10 {
            format!("{} {} HTTP/1.0\r\n", self.method, self.target)
        } else {
            format!(
                "{} {} HTTP/1.1\r\nHost: {authority}\r\n",
                self.method, self.target
            )
        };
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let has_body_semantics = !matches!(self.method.as_str(), "GET" | "HEAD" | "DELETE");
        if !self.body.is_empty() || has_body_semantics {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        stream.write_all(&bytes).await?;
        stream.flush().await?;
        Response::read_head(stream, self.method == "HEAD").await
    }
}

/// The `host:port` part of `http://host:port[/...]`.
fn authority(base_url: &str) -> io::Result<&str> {
    let rest = base_url.strip_prefix("http://").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("only http:// URLs are supported, not {base_url:?}"),
        )
    })?;
    Ok(rest.split('/').next().unwrap_or(rest))
}

/// How the end of the response body is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body at all (a response to `HEAD`, `1xx`, `204`, `304`).
    Empty,
    /// `Content-Length`: this many bytes are still to come.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(ChunkState),
    /// Neither: the body ends when the server closes the connection.
    Close,
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes still to come.
    Data(u64),
    /// Expecting the CRLF that ends a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

/// One step of decoding what is buffered.
enum Decoded {
    Data(Vec<u8>),
    End,
    NeedMore,
}

/// A response whose head has been read; its body is read incrementally.
#[derive(Debug)]
pub struct Response {
    version: String,
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    stream: TcpStream,
    /// Bytes read from the connection and not yet decoded.
    buf: Vec<u8>,
    /// How many bytes the next read of the body asks for.
    read_size: usize,
    framing: Framing,
    ended: bool,
}

impl Response {
    async fn read_head(mut stream: TcpStream, is_head_request: bool) -> io::Result<Response> {
        let mut buf = Vec::with_capacity(4096);
        loop {
            let head_len = loop {
                if let Some(pos) = find(&buf, b"\r\n\r\n") {
                    break pos + 4;
                }
                if buf.len() > MAX_HEAD {
                    return Err(invalid("response head longer than 64 KiB"));
                }
                if stream.read_buf(&mut buf).await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "connection closed before the end of the response head (got {:?})",
                            String::from_utf8_lossy(&buf)
                        ),
                    ));
                }
            };
            let rest = buf.split_off(head_len);
            let head = std::mem::replace(&mut buf, rest);
            let (version, status, reason, headers) = parse_head(&head[..head_len - 4])?;
            if (100..200).contains(&status) {
                // An interim response (such as `100 Continue`): the real one follows.
                continue;
            }
            let mut response = Response {
                version,
                status,
                reason,
                headers,
                stream,
                buf,
                read_size: MIN_READ,
                framing: Framing::Close,
                ended: false,
            };
            response.framing = if is_head_request || status == 204 || status == 304 {
                Framing::Empty
            } else if response
                .header_tokens("transfer-encoding")
                .iter()
                .any(|t| t == "chunked")
            {
                Framing::Chunked(ChunkState::Size)
            } else if let Some(len) = response.header("content-length") {
                Framing::Length(
                    len.parse()
                        .map_err(|_| invalid(format!("bad Content-Length {len:?}")))?,
                )
            } else {
                Framing::Close
            };
            return Ok(response);
        }
    }

    /// The HTTP version from the status line, such as `HTTP/1.1`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase from the status line.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Every header line as `(name, value)`, in the order sent, values trimmed.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// How many header lines are called `name` (case-insensitive).
    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    /// The comma-separated tokens of every header called `name`, trimmed and lower-cased, such
    /// as `["no-cache", "no-transform"]` for `Cache-Control: no-cache, no-transform`.
    pub fn header_tokens(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// The next piece of body as it arrives, or `None` once the body has ended.
    ///
    /// An error when the connection closes before the body's framing says it ended. This is
    /// cancel-safe: a timeout around it loses no bytes.
    pub async fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if self.ended {
                return Ok(None);
            }
            match self.decode()? {
                Decoded::Data(data) => return Ok(Some(data)),
                Decoded::End => {
                    self.ended = true;
                    return Ok(None);
                }
                Decoded::NeedMore => {}
            }
            if self.read_more().await? == 0 {
                if self.framing == Framing::Close {
                    self.ended = true;
                    return Ok(None);
                }
                self.ended = true;
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection closed before the end of the response body",
                ));
            }
        }
    }

    /// Reads what the connection has into the buffer, with room for `read_size` bytes reserved
    /// first: without room, `read_buf` on a full `Vec` would ask for 64 bytes at a time.
    async fn read_more(&mut self) -> io::Result<usize> {
        let room = self.read_size;
        self.buf.reserve(room);
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n >= room {
            self.read_size = (room * 2).min(MAX_READ);
        }
        Ok(n)
    }

    /// Reads the whole body.
    pub async fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Every byte the server sends after the response's body (by its framing) until it closes
    /// the connection, such as the bytes a server wrongly sends after the head of a response to
    /// `HEAD`. Only meaningful on a request sent with `Connection: close`.
    pub async fn bytes_until_close(&mut self) -> io::Result<Vec<u8>> {
        while self.next_chunk().await?.is_some() {}
        let mut rest = std::mem::take(&mut self.buf);
        while self.stream.read_buf(&mut rest).await? != 0 {}
        Ok(rest)
    }

    /// Closes the connection the way a client that simply goes away does: discards what has
    /// arrived unread (so the kernel sends a FIN, not a reset), shuts down the sending side and
    /// drops the socket.
    pub async fn close(mut self) {
        let mut scratch = [0u8; 8192];
        while matches!(self.stream.try_read(&mut scratch), Ok(n) if n > 0) {}
        let _ = self.stream.shutdown().await;
    }

    /// Decodes as much of the buffered bytes as makes one step.
    fn decode(&mut self) -> io::Result<Decoded> {
        loop {
            match self.framing {
                Framing::Empty | Framing::Length(0) => return Ok(Decoded::End),
                Framing::Length(left) => {
                    if self.buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = self
                        .buf
                        .len()
                        .min(usize::try_from(left).unwrap_or(usize::MAX));
                    let rest = self.buf.split_off(take);
                    let data = std::mem::replace(&mut self.buf, rest);
                    self.framing = Framing::Length(left - take as u64);
                    return Ok(Decoded::Data(data));
                }
                Framing::Close => {
                    if self.buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Data(std::mem::take(&mut self.buf)));
                }
                Framing::Chunked(ChunkState::Size) => {
                    let Some(line) = self.take_line()? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = line.split(';').next().unwrap_or_default().trim();
                    let size = u64::from_str_radix(size, 16)
                        .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
                    self.framing = Framing::Chunked(if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    });
                }
                Framing::Chunked(ChunkState::Data(left)) => {
                    if self.buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = self
                        .buf
                        .len()
                        .min(usize::try_from(left).unwrap_or(usize::MAX));
                    let rest = self.buf.split_off(take);
                    let data = std::mem::replace(&mut self.buf, rest);
                    let left = left - take as u64;
                    self.framing = Framing::Chunked(if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    });
                    return Ok(Decoded::Data(data));
                }
                Framing::Chunked(ChunkState::DataEnd) => {
                    if self.buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(invalid("chunk data not followed by CRLF"));
                    }
                    self.buf.drain(..2);
                    self.framing = Framing::Chunked(ChunkState::Size);
                }
                Framing::Chunked(ChunkState::Trailers) => {
                    let Some(line) = self.take_line()? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        return Ok(Decoded::End);
                    }
                }
            }
        }
    }

    /// Takes one CRLF-terminated line off the buffer, without its CRLF.
    fn take_line(&mut self) -> io::Result<Option<String>> {
        match find(&self.buf, b"\r\n") {
            Some(pos) => {
                let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 2);
                Ok(Some(line))
            }
            None if self.buf.len() > MAX_CHUNK_LINE => Err(invalid("chunk line too long")),
            None => Ok(None),
        }
    }
}

/// The parts of a response head (without its final empty line): version, status, reason and
/// header lines.
type Head = (String, u16, String, Vec<(String, String)>);

fn parse_head(head: &[u8]) -> io::Result<Head> {
    let head = std::str::from_utf8(head).map_err(|_| invalid("response head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default().to_owned();
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(format!("bad status line {status_line:?}")));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let reason = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    Ok((version, status, reason, headers))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}
