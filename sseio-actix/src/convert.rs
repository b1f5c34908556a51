//! Between actix-web 4's `http` 0.2 types and the `http` 1.x types of the core: the request's
//! method, target, version and headers in, the response's status and headers out.
//!
//! The two crate versions spell the same values, so each conversion goes through their text;
//! only a request the core serves is converted, so the app's own routes pay nothing.

use actix_web::HttpRequest;
use actix_web::http::header::{HeaderName as ActixName, HeaderValue as ActixValue};
use actix_web::http::{StatusCode as ActixStatus, Version as ActixVersion};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};

/// The parts of an actix request the core reads, as `http` 1.x values.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
}

impl Head {
    /// `None` when a part has no `http` 1.x spelling, which actix's own parsing rules out.
    pub(crate) fn from_request(req: &HttpRequest) -> Option<Self> {
        let method = Method::from_bytes(req.method().as_str().as_bytes()).ok()?;
        // The core reads only the path and the query; an HTTP/2 request's scheme and authority
        // are left out.
        let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let uri = Uri::try_from(target).ok()?;
        let version = match req.version() {
            ActixVersion::HTTP_09 => Version::HTTP_09,
            ActixVersion::HTTP_10 => Version::HTTP_10,
            ActixVersion::HTTP_2 => Version::HTTP_2,
            ActixVersion::HTTP_3 => Version::HTTP_3,
            _ => Version::HTTP_11,
        };
        let mut headers = HeaderMap::with_capacity(req.headers().len());
        for (name, value) in req.headers() {
            let name = HeaderName::from_bytes(name.as_str().as_bytes()).ok()?;
            let value = HeaderValue::from_bytes(value.as_bytes()).ok()?;
            headers.append(name, value);
        }
        Some(Self {
            method,
            uri,
            version,
            headers,
        })
    }
}

/// The actix spelling of a status the core chose.
pub(crate) fn status(status: StatusCode) -> ActixStatus {
    // Both accept every code from 100 to 999, so this never falls back.
    ActixStatus::from_u16(status.as_u16()).unwrap_or(ActixStatus::INTERNAL_SERVER_ERROR)
}

/// The actix spelling of the headers the core chose, in order, repeated names kept.
pub(crate) fn headers(headers: &HeaderMap) -> impl Iterator<Item = (ActixName, ActixValue)> + '_ {
    headers.iter().filter_map(|(name, value)| {
        let name = ActixName::from_bytes(name.as_str().as_bytes()).ok()?;
        let value = ActixValue::from_bytes(value.as_bytes()).ok()?;
        Some((name, value))
    })
}
