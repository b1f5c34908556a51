//! The connection request: path pattern matching, strict query parsing, and the [`Context`]
//! handed to `get_room_id` and `fetch`.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Method, Request, Uri, Version, request::Parts};
use percent_encoding::percent_decode;

use crate::auth::Grant;
use crate::error::BuildError;
use crate::rejection::ConnectRejection;

/// What the core needs to know about an HTTP request, borrowed from whatever request type the
/// framework has.
///
/// Every framework can produce the `http` 1.x types this holds; `From` conversions exist for
/// [`http::Request`] and [`http::request::Parts`].
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request target; only its path and query are read.
    pub uri: &'a Uri,
    /// The HTTP version, which decides whether a `Connection` header is sent.
    pub version: Version,
    /// The request headers, handed to `get_room_id` and `fetch` through the [`Context`].
    pub headers: &'a HeaderMap,
    /// The client's IP address, for
    /// [`ServerBuilder::max_streams_per_address`](crate::ServerBuilder::max_streams_per_address):
    /// the peer of the connection, or, behind a proxy the application trusts, the address the
    /// proxy forwarded. `None` (what [`RequestHead::new`] and the `From` conversions give) when
    /// the transport does not tell; such a stream is not counted by that cap.
    pub client_addr: Option<IpAddr>,
}

impl<'a> RequestHead<'a> {
    /// Borrows the parts of a request.
    pub fn new(method: &'a Method, uri: &'a Uri, version: Version, headers: &'a HeaderMap) -> Self {
        Self {
            method,
            uri,
            version,
            headers,
            client_addr: None,
        }
    }

    /// The same request, coming from `addr` (see [`RequestHead::client_addr`]).
    #[must_use]
    pub fn with_client_addr(mut self, addr: IpAddr) -> Self {
        self.client_addr = Some(addr);
        self
    }
}

impl<'a, B> From<&'a Request<B>> for RequestHead<'a> {
    fn from(req: &'a Request<B>) -> Self {
        Self::new(req.method(), req.uri(), req.version(), req.headers())
    }
}

impl<'a> From<&'a Parts> for RequestHead<'a> {
    fn from(parts: &'a Parts) -> Self {
        Self::new(&parts.method, &parts.uri, parts.version, &parts.headers)
    }
}

/// The server's path pattern, such as `/user/:userId/foo`.
///
/// `:name` segments (and `{name}`) are path parameters, `*name` (or `{*name}`) a catch-all at
/// the end. Matching is delegated to `matchit`.
pub(crate) struct PathPattern {
    pattern: String,
    router: matchit::Router<()>,
}

impl PathPattern {
    pub(crate) fn parse(pattern: &str) -> Result<Self, BuildError> {
        if !pattern.starts_with('/') {
            return Err(BuildError::InvalidPath {
                pattern: pattern.to_owned(),
                reason: "it must start with `/`".to_owned(),
            });
        }
        let mut names: Vec<&str> = Vec::new();
        for segment in pattern.split('/') {
            if let Some(name) = segment.strip_prefix([':', '*']) {
                if name.is_empty() || names.contains(&name) {
                    return Err(BuildError::InvalidPath {
                        pattern: pattern.to_owned(),
                        reason: format!("parameter name `{name}` is empty or repeated"),
                    });
                }
                names.push(name);
            }
        }
        let route = pattern
            .split('/')
            .map(|segment| {
                if let Some(name) = segment.strip_prefix(':') {
                    format!("{{{name}}}")
                } else if let Some(name) = segment.strip_prefix('*') {
                    format!("{{*{name}}}")
                } else {
                    segment.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let mut router = matchit::Router::new();
        router
            .insert(route, ())
            .map_err(|e| BuildError::InvalidPath {
                pattern: pattern.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            pattern: pattern.to_owned(),
            router,
        })
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.pattern
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        self.router.at(path).is_ok()
    }

    /// The decoded path parameters, `None` when the path is not this pattern's.
    pub(crate) fn params(
        &self,
        path: &str,
    ) -> Option<Result<Vec<(String, String)>, ConnectRejection>> {
        let matched = self.router.at(path).ok()?;
        Some(
            matched
                .params
                .iter()
                .map(|(name, raw)| {
                    let value = decode_component(raw, false).map_err(|reason| {
                        ConnectRejection::MalformedPath {
                            reason: format!("path parameter `{name}` {reason}"),
                        }
                    })?;
                    Ok((name.to_owned(), value.into_owned()))
                })
                .collect(),
        )
    }
}

impl fmt::Debug for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PathPattern").field(&self.pattern).finish()
    }
}

/// Parses a query string strictly: a malformed percent-escape or a value that does not decode
/// to UTF-8 is an error, never silently replaced. `+` stands for a space, as in HTML forms.
pub(crate) fn parse_query(query: &str) -> Result<Vec<(String, String)>, ConnectRejection> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key =
                decode_component(key, true).map_err(|reason| ConnectRejection::MalformedQuery {
                    reason: format!("a query parameter name {reason}"),
                })?;
            let value = decode_component(value, true).map_err(|reason| {
                ConnectRejection::MalformedQuery {
                    reason: format!("query parameter `{key}` {reason}"),
                }
            })?;
            Ok((key.into_owned(), value.into_owned()))
        })
        .collect()
}

/// Percent-decodes one component; `plus_is_space` for query components.
fn decode_component(raw: &str, plus_is_space: bool) -> Result<Cow<'_, str>, &'static str> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while let Some(offset) = memchr::memchr(b'%', &bytes[i..]) {
        let at = i + offset;
        let hex = bytes.get(at + 1..at + 3);
        if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
            return Err("has a malformed percent-escape");
        }
        i = at + 3;
    }
    let spaced: Cow<'_, str> = if plus_is_space && raw.contains('+') {
        Cow::Owned(raw.replace('+', " "))
    } else {
        Cow::Borrowed(raw)
    };
    let decoded = match percent_decode(spaced.as_bytes()).decode_utf8() {
        Ok(Cow::Borrowed(_)) => spaced,
        Ok(Cow::Owned(s)) => Cow::Owned(s),
        Err(_) => return Err("is not valid UTF-8 once decoded"),
    };
    Ok(decoded)
}

/// What `get_room_id` and `fetch` see of a connection request: its path parameters, its query
/// (every parameter, repeated keys included), its headers and its `clientId`.
///
/// Cheap to clone: the data is shared.
#[derive(Clone)]
pub struct Context {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    client_id: String,
    params: Vec<(String, String)>,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    grant: Grant,
    resync: bool,
}

impl Context {
    pub(crate) fn new(
        client_id: String,
        params: Vec<(String, String)>,
        query: Vec<(String, String)>,
        headers: HeaderMap,
    ) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                client_id,
                params,
                query,
                headers,
                grant: Grant::default(),
                resync: false,
            }),
        }
    }

    /// The same request with what `authorize` granted it.
    pub(crate) fn with_grant(self, grant: Grant) -> Self {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| ContextInner {
            client_id: shared.client_id.clone(),
            params: shared.params.clone(),
            query: shared.query.clone(),
            headers: shared.headers.clone(),
            grant: Grant::default(),
            resync: false,
        });
        Self {
            inner: Arc::new(ContextInner { grant, ..inner }),
        }
    }

    /// This context for a `fetch` that resyncs (or not).
    pub(crate) fn for_fetch(&self, resync: bool) -> Self {
        if resync == self.inner.resync {
            return self.clone();
        }
        let inner = &self.inner;
        Self {
            inner: Arc::new(ContextInner {
                client_id: inner.client_id.clone(),
                params: inner.params.clone(),
                query: inner.query.clone(),
                headers: inner.headers.clone(),
                grant: inner.grant.clone(),
                resync,
            }),
        }
    }

    /// In `fetch`: whether this connection asked to resume (with `Last-Event-ID`, a
    /// `lastEventId` query parameter, or by reconnecting with its `clientId` within the resume
    /// time) but the history could not fill the gap: nothing was replayed, so `fetch` should
    /// send the full state. `false` for a new connection, and always without history. (A
    /// resume that succeeds skips `fetch`.)
    pub fn resync(&self) -> bool {
        self.inner.resync
    }

    /// What the server's `authorize` hook granted this connection (empty without a hook, and
    /// inside `authorize` itself).
    pub fn grant(&self) -> &Grant {
        &self.inner.grant
    }

    /// The value of cookie `name` from the `Cookie` headers, as sent (not percent-decoded).
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.inner
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.trim_matches('"'))
    }

    /// The `clientId` the client chose (the official client keeps it across reconnects).
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// The decoded path parameter `name`, such as `userId` for the pattern `/user/:userId/foo`.
    pub fn param(&self, name: &str) -> Option<&str> {
        find(&self.inner.params, name)
    }

    /// Every path parameter, in pattern order.
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.inner
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The first value of query parameter `name`, decoded.
    pub fn query(&self, name: &str) -> Option<&str> {
        find(&self.inner.query, name)
    }

    /// Every value of query parameter `name`, in request order (a repeated key gives several).
    pub fn query_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.inner
            .query
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every query parameter, in request order, `clientId` and `events` included.
    pub fn query_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.inner
            .query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The request headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.inner.headers
    }
}

fn find<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("client_id", &self.inner.client_id)
            .field("params", &self.inner.params)
            .field("query", &self.inner.query)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colon_segments_are_path_parameters() {
        let pattern = PathPattern::parse("/files/:guid/pull").unwrap();
        assert!(pattern.matches("/files/abc/pull"));
        assert!(!pattern.matches("/files/abc/pull/extra"));
        assert!(!pattern.matches("/files/pull"));
        let params = pattern.params("/files/a%2Fb/pull").unwrap().unwrap();
        assert_eq!(params, vec![("guid".to_owned(), "a/b".to_owned())]);
    }

    #[test]
    fn pattern_must_be_absolute() {
        assert!(PathPattern::parse("sseio").is_err());
    }

    #[test]
    fn repeated_query_keys_keep_every_value() {
        let query = parse_query("clientId=c&events=a&events=b%20c&x=1+2").unwrap();
        let values: Vec<_> = query
            .iter()
            .filter(|(k, _)| k == "events")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(values, ["a", "b c"]);
        assert_eq!(query.last().unwrap().1, "1 2");
    }

    #[test]
    fn malformed_percent_escape_is_rejected() {
        for bad in ["clientId=%zz", "clientId=%E0%A4%A", "clientId=%", "a%=1"] {
            assert!(parse_query(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        assert!(parse_query("clientId=%FF").is_err());
    }

    #[test]
    fn key_without_value_is_empty() {
        assert_eq!(
            parse_query("flag&&x=").unwrap(),
            vec![
                ("flag".to_owned(), String::new()),
                ("x".to_owned(), String::new())
            ]
        );
    }
}
