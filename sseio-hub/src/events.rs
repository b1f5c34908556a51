//! The events of `[events.NAME]`: each one's room template and `fetch`, checked when the hub
//! starts, then registered as the library's event handlers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use sseio_hyper::{BoxError, Context, EventHandler, HandlerOptions, History, Server};

use crate::auth::{check_room, forwarded, header_names};
use crate::backend::{Backend, check_url, excerpt};
use crate::error::ConfigError;
use crate::load::Loaded;
use crate::template::{Scope, Template, path_params};

/// One event, checked: what registering it needs.
#[derive(Debug)]
pub(crate) struct EventPlan {
    name: String,
    room: Arc<Template>,
    history: Option<History>,
    fetch: Option<Arc<FetchPlan>>,
}

#[derive(Debug)]
struct FetchPlan {
    url: Template,
    timeout: Duration,
    forward: Vec<HeaderName>,
}

/// Checks every `[events.NAME]` of `loaded`: the room templates against the path pattern, the
/// fetch URLs, the headers to forward.
pub(crate) fn plan(loaded: &Loaded, auth: bool) -> Result<Vec<EventPlan>, ConfigError> {
    let config = &loaded.config;
    if config.events.is_empty() {
        return Err(loaded.invalid(
            "events",
            "configure at least one event, such as [events.news] with room = \"{query.topic}\"",
        ));
    }
    let params = path_params(&config.server.path);
    let scope = Scope {
        params: &params,
        auth,
    };
    let history_ttl = Duration::from_millis(config.history.ttl_ms);
    config
        .events
        .iter()
        .map(|(name, event)| {
            let key = |field: &str| format!("events.{name}.{field}");
            let room =
                Template::parse(&event.room, scope).map_err(|e| loaded.invalid(&key("room"), e))?;
            let history = match event.history {
                Some(0) if config.history.messages > 0 => {
                    return Err(loaded.invalid(
                        &key("history"),
                        "history cannot be turned off for one event while [history].messages \
                         is set: leave [history].messages at 0 and give each event its own",
                    ));
                }
                Some(0) | None => None,
                Some(messages) => Some(History::new(messages).with_ttl(history_ttl)),
            };
            let fetch = match &event.fetch {
                None => None,
                Some(fetch) => {
                    let url = Template::parse(&fetch.url, scope)
                        .map_err(|e| loaded.invalid(&key("fetch.url"), e))?;
                    check_url(&url.sample()).map_err(|_| {
                        loaded.invalid(
                            &key("fetch.url"),
                            format!(
                                "`{}` is not an http:// URL (the hub's client speaks plain HTTP \
                                 to a backend on a private network)",
                                fetch.url
                            ),
                        )
                    })?;
                    let forward = header_names(
                        loaded,
                        &key("fetch.forward_headers"),
                        &fetch.forward_headers,
                    )?;
                    let timeout = Duration::from_millis(
                        fetch.timeout_ms.unwrap_or(config.limits.fetch_timeout_ms),
                    );
                    Some(Arc::new(FetchPlan {
                        url,
                        timeout,
                        forward,
                    }))
                }
            };
            Ok(EventPlan {
                name: name.clone(),
                room: Arc::new(room),
                history,
                fetch,
            })
        })
        .collect()
}

/// Registers every planned event on `server`; the handlers by event.
pub(crate) fn register(
    loaded: &Loaded,
    server: &Server,
    plans: Vec<EventPlan>,
    backend: &Backend,
) -> Result<HashMap<String, EventHandler>, ConfigError> {
    let body_limit = loaded.config.limits.max_message_bytes;
    let mut handlers = HashMap::new();
    for plan in plans {
        let event: Arc<str> = plan.name.as_str().into();
        let room = plan.room.clone();
        let mut options = {
            let event = event.clone();
            HandlerOptions::new(move |ctx: &Context| check_room(ctx, &event, room.render(ctx)))
        };
        if let Some(history) = plan.history {
            options = options.history(history);
        }
        if let Some(fetch) = plan.fetch {
            let backend = backend.clone();
            let room = plan.room.clone();
            let event = event.clone();
            options = options.fetch(move |ctx: Context| {
                let url = fetch.url.render_url(&ctx);
                let headers = fetch_headers(&ctx, &event, &room.render(&ctx), &fetch.forward);
                let (backend, timeout) = (backend.clone(), fetch.timeout);
                async move {
                    let reply = backend.get(&url, headers, timeout, body_limit).await?;
                    if !reply.status.is_success() {
                        return Err(BoxError::from(format!(
                            "GET {url} answered {}: {}",
                            reply.status,
                            excerpt(&reply.body, 200)
                        )));
                    }
                    if reply.body.is_empty() {
                        return Ok(None);
                    }
                    String::from_utf8(reply.body.to_vec())
                        .map(Some)
                        .map_err(|_| BoxError::from(format!("GET {url}: the body is not UTF-8")))
                }
            });
        }
        let handler = server
            .register_event_handler(plan.name.as_str(), options)
            .map_err(|e| loaded.invalid(&format!("events.{}", plan.name), e.to_string()))?;
        handlers.insert(plan.name, handler);
    }
    Ok(handlers)
}

/// The headers of a `fetch`: the forwarded ones, and who it is for.
fn fetch_headers(ctx: &Context, event: &str, room: &str, forward: &[HeaderName]) -> HeaderMap {
    let mut headers = forwarded(ctx.headers(), forward);
    let mut add = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    add("x-sseio-client-id", ctx.client_id());
    add("x-sseio-event", event);
    add("x-sseio-room", room);
    if let Some(principal) = ctx.grant().principal_name() {
        add("x-sseio-principal", principal);
    }
    if ctx.resync() {
        add("x-sseio-resync", "1");
    }
    headers
}
