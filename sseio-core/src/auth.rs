//! Authentication and authorization: the `authorize` hook that accepts or refuses a connection
//! before it joins any room, and the refusals `get_room_id` can give for one event.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::Extensions;

use crate::request::Context;

/// What [`ServerBuilder::authorize`](crate::ServerBuilder::authorize) granted a connection: an
/// optional principal (who it is) and any data the application attaches, both readable by
/// `get_room_id` and `fetch` through [`Context::grant`], and the principal by lifecycle
/// notifications.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    principal: Option<Arc<str>>,
    data: Extensions,
}

impl Grant {
    /// A grant with no principal and no data.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Names who the connection is (a user id, a service name).
    #[must_use]
    pub fn principal(mut self, principal: impl Into<Arc<str>>) -> Self {
        self.principal = Some(principal.into());
        self
    }

    /// Attaches `data` (one value per type), for `get_room_id` and `fetch` to read with
    /// [`Grant::get`].
    #[must_use]
    pub fn with<T: Clone + Send + Sync + 'static>(mut self, data: T) -> Self {
        self.data.insert(data);
        self
    }

    /// The principal, if one was named.
    pub fn principal_name(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    pub(crate) fn principal_arc(&self) -> Option<Arc<str>> {
        self.principal.clone()
    }

    /// The attached data of type `T`, if any.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.data.get::<T>()
    }
}

/// Why a connection, or one of its events, was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `401`: the request did not prove who it is. The official client stops (no retry).
    Unauthorized(String),
    /// `403`: who it is may not have this. The official client stops (no retry).
    Forbidden(String),
}

impl Refusal {
    /// A `401` refusal with `message` (sent to the client in the JSON body).
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::Unauthorized(message.into())
    }

    /// A `403` refusal with `message` (sent to the client in the JSON body).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden(message.into())
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unauthorized(message) | Self::Forbidden(message) => f.write_str(message),
        }
    }
}

/// What a `get_room_id` returns: a room id, or a [`Refusal`] of this one event.
pub trait IntoRoom {
    /// The room id, or why the connection may not have this event.
    fn into_room(self) -> Result<String, Refusal>;
}

impl IntoRoom for String {
    fn into_room(self) -> Result<String, Refusal> {
        Ok(self)
    }
}

impl IntoRoom for &'static str {
    fn into_room(self) -> Result<String, Refusal> {
        Ok(self.to_owned())
    }
}

impl<R: IntoRoom> IntoRoom for Result<R, Refusal> {
    fn into_room(self) -> Result<String, Refusal> {
        self.and_then(IntoRoom::into_room)
    }
}

pub(crate) type AuthorizeFuture = Pin<Box<dyn Future<Output = Result<Grant, Refusal>> + Send>>;
pub(crate) type AuthorizeFn = dyn Fn(Context) -> AuthorizeFuture + Send + Sync;

/// Boxes an application's `authorize` closure.
pub(crate) fn authorize_fn<F, Fut>(authorize: F) -> Arc<AuthorizeFn>
where
    F: Fn(Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Grant, Refusal>> + Send + 'static,
{
    Arc::new(move |ctx| Box::pin(authorize(ctx)))
}
