//! Templates over a connection's request: the room of an event (`"{param.guid}"`) and the URL
//! of its `fetch` (`"http://backend/files/{param.guid}"`), checked when the hub starts.

use std::fmt::Write as _;

use http::HeaderName;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sseio_hyper::Context;

/// What a URL template leaves unencoded in a value: the URL-unreserved characters.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A parsed template: literal text and placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Param(String),
    Query(String),
    Header(HeaderName),
    ClientId,
    Principal,
}

/// What a template may refer to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scope<'a> {
    /// The path pattern's parameter names.
    pub(crate) params: &'a [String],
    /// Whether streams are authenticated, so that `{principal}` can have a value.
    pub(crate) auth: bool,
}

impl Template {
    /// Parses `text`: literal text with placeholders `{param.NAME}` (a path parameter of the
    /// pattern), `{query.NAME}`, `{header.NAME}`, `{client_id}` and `{principal}`; `{{` and
    /// `}}` stand for braces.
    pub(crate) fn parse(text: &str, scope: Scope<'_>) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().is_some_and(|&(_, n)| n == '{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().is_some_and(|&(_, n)| n == '}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => {
                    return Err(format!(
                        "a `}}` at byte {at} closes nothing (write `}}}}` for a brace)"
                    ));
                }
                '{' => {
                    let rest = &text[at + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(format!("the `{{` at byte {at} is never closed"));
                    };
                    let name = &rest[..end];
                    for _ in 0..=name.chars().count() {
                        chars.next();
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(placeholder(name, scope)?);
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Self { parts })
    }

    /// The template filled in from `ctx`, values verbatim (for room ids). A value the request
    /// does not have is empty.
    pub(crate) fn render(&self, ctx: &Context) -> String {
        self.fill(ctx, |out, value| out.push_str(value))
    }

    /// The template filled in from `ctx`, each value percent-encoded (for URLs).
    pub(crate) fn render_url(&self, ctx: &Context) -> String {
        self.fill(ctx, |out, value| {
            let _ = write!(out, "{}", utf8_percent_encode(value, COMPONENT));
        })
    }

    /// The template with `x` for every value: what a URL template looks like, for checks.
    pub(crate) fn sample(&self) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                _ => out.push('x'),
            }
        }
        out
    }

    fn fill(&self, ctx: &Context, mut push: impl FnMut(&mut String, &str)) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Param(name) => push(&mut out, ctx.param(name).unwrap_or_default()),
                Part::Query(name) => push(&mut out, ctx.query(name).unwrap_or_default()),
                Part::Header(name) => push(
                    &mut out,
                    ctx.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default(),
                ),
                Part::ClientId => push(&mut out, ctx.client_id()),
                Part::Principal => {
                    push(&mut out, ctx.grant().principal_name().unwrap_or_default());
                }
            }
        }
        out
    }
}

fn placeholder(name: &str, scope: Scope<'_>) -> Result<Part, String> {
    let unknown = || {
        format!(
            "unknown placeholder `{{{name}}}`: use {{param.NAME}}, {{query.NAME}}, \
             {{header.NAME}}, {{client_id}} or {{principal}}"
        )
    };
    match name.split_once('.') {
        Some(("param", param)) => {
            if scope.params.iter().any(|p| p == param) {
                Ok(Part::Param(param.to_owned()))
            } else {
                Err(format!(
                    "`{{param.{param}}}`: the path pattern has no parameter `{param}` (it has: {})",
                    if scope.params.is_empty() {
                        "none".to_owned()
                    } else {
                        scope.params.join(", ")
                    }
                ))
            }
        }
        Some(("query", query)) if !query.is_empty() => Ok(Part::Query(query.to_owned())),
        Some(("header", header)) => HeaderName::from_bytes(header.as_bytes())
            .map(Part::Header)
            .map_err(|_| format!("`{{header.{header}}}`: `{header}` is not a header name")),
        None if name == "client_id" => Ok(Part::ClientId),
        None if name == "principal" => {
            if scope.auth {
                Ok(Part::Principal)
            } else {
                Err("`{principal}` needs [auth] (without it no stream has a principal)".to_owned())
            }
        }
        _ => Err(unknown()),
    }
}

/// The parameter names of a path pattern such as `/files/:guid/pull` (`:name` and `*name`
/// segments).
pub(crate) fn path_params(pattern: &str) -> Vec<String> {
    pattern
        .split('/')
        .filter_map(|segment| segment.strip_prefix([':', '*']))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(params: &[String]) -> Scope<'_> {
        Scope {
            params,
            auth: false,
        }
    }

    fn context(target: &str) -> Context {
        // A Context comes from the server: open a stream on a server that records one.
        let params = path_params("/files/:guid/pull");
        assert_eq!(params, ["guid"]);
        let server = sseio_hyper::Server::new("/files/:guid/pull").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        server
            .register_event_handler(
                "e",
                sseio_hyper::HandlerOptions::new(move |ctx: &Context| {
                    let _ = tx.send(ctx.clone());
                    "room"
                }),
            )
            .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let request = http::Request::get(target)
            .header("x-tenant", "acme")
            .body(())
            .unwrap();
        runtime.block_on(async {
            let _outcome = server.handle((&request).into()).await;
        });
        rx.recv().unwrap()
    }

    #[test]
    fn room_template_reads_param_query_header_and_client_id() {
        let params = path_params("/files/:guid/pull");
        let template = Template::parse(
            "{header.x-tenant}:{param.guid}/{query.room}@{client_id}",
            scope(&params),
        )
        .unwrap();
        let ctx = context("/files/42/pull?clientId=c1&events=e&room=a%20b");
        assert_eq!(template.render(&ctx), "acme:42/a b@c1");
    }

    #[test]
    fn url_template_percent_encodes_values() {
        let params = path_params("/files/:guid/pull");
        let template = Template::parse(
            "http://backend/rooms/{query.room}?c={client_id}",
            scope(&params),
        )
        .unwrap();
        let ctx = context("/files/42/pull?clientId=c%2F1&events=e&room=a%20b%26c");
        assert_eq!(
            template.render_url(&ctx),
            "http://backend/rooms/a%20b%26c?c=c%2F1"
        );
    }

    #[test]
    fn missing_values_are_empty_and_braces_escape() {
        let params = path_params("/files/:guid/pull");
        let template = Template::parse("{{{query.nope}}}", scope(&params)).unwrap();
        let ctx = context("/files/42/pull?clientId=c1&events=e");
        assert_eq!(template.render(&ctx), "{}");
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        let params = path_params("/files/:guid/pull");
        let error = |text: &str| Template::parse(text, scope(&params)).unwrap_err();
        assert!(error("{param.id}").contains("no parameter `id`"));
        assert!(error("{param.id}").contains("guid"));
        assert!(error("{guid}").contains("unknown placeholder"));
        assert!(error("{query.room").contains("never closed"));
        assert!(error("room}").contains("closes nothing"));
        assert!(error("{header.bad header}").contains("not a header name"));
        assert!(error("{principal}").contains("[auth]"));
        assert!(error("{query.}").contains("unknown placeholder"));
    }
}
