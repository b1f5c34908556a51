//! Who may open a stream: signed tokens (JWT) or the backend's answer to a webhook, each turned
//! into the library's `authorize` hook. Either may name the principal and restrict the rooms a
//! stream may join, which each event's room check then enforces.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, StatusCode, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Value, json};
use sseio_hyper::{Context, Grant, Refusal, ServerBuilder};

use crate::backend::{Backend, excerpt};
use crate::config::{AuthWebhookConfig, JwtAlgorithm, JwtConfig};
use crate::error::ConfigError;
use crate::load::Loaded;

/// The largest answer read from the auth webhook.
const WEBHOOK_ANSWER_LIMIT: usize = 64 * 1024;

/// The rooms a stream may join, from a token's rooms claim or the auth webhook's answer, kept
/// in its [`Grant`]. A list restricts every event; an object restricts the events it names
/// (`"*"` stands for every other event). An entry ending in `*` allows every room with that
/// prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AllowedRooms {
    every_event: Option<Vec<String>>,
    by_event: HashMap<String, Vec<String>>,
}

impl AllowedRooms {
    /// Reads the claim or answer `value`: a list of rooms, or an object of lists by event.
    pub(crate) fn from_value(value: &Value) -> Result<Self, String> {
        fn list(value: &Value, what: &str) -> Result<Vec<String>, String> {
            let Value::Array(items) = value else {
                return Err(format!("{what} is not a list of rooms"));
            };
            items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("{what} has an entry that is not a string"))
                })
                .collect()
        }
        match value {
            Value::Array(_) => Ok(Self {
                every_event: Some(list(value, "the rooms")?),
                by_event: HashMap::new(),
            }),
            Value::Object(map) => {
                let mut allowed = Self::default();
                for (event, rooms) in map {
                    let rooms = list(rooms, &format!("the rooms of `{event}`"))?;
                    if event == "*" {
                        allowed.every_event = Some(rooms);
                    } else {
                        allowed.by_event.insert(event.clone(), rooms);
                    }
                }
                Ok(allowed)
            }
            _ => Err("the rooms are neither a list nor an object of lists by event".to_owned()),
        }
    }

    /// Whether a stream may join `room` of `event`.
    pub(crate) fn permits(&self, event: &str, room: &str) -> bool {
        let Some(rooms) = self.by_event.get(event).or(self.every_event.as_ref()) else {
            return true;
        };
        rooms.iter().any(|allowed| match allowed.strip_suffix('*') {
            Some(prefix) => room.starts_with(prefix),
            None => allowed == room,
        })
    }
}

/// Checks, in an event's `get_room_id`, that the stream may join `room`.
pub(crate) fn check_room(ctx: &Context, event: &str, room: String) -> Result<String, Refusal> {
    match ctx.grant().get::<AllowedRooms>() {
        Some(allowed) if !allowed.permits(event, &room) => Err(Refusal::forbidden(format!(
            "room '{room}' is not among the rooms this stream may join"
        ))),
        _ => Ok(room),
    }
}

/// Installs `[auth]` on `builder`; whether streams are authenticated.
pub(crate) fn install(
    loaded: &Loaded,
    backend: &Backend,
    mut builder: ServerBuilder,
) -> Result<(ServerBuilder, bool), ConfigError> {
    let auth = &loaded.config.auth;
    match (&auth.jwt, &auth.webhook) {
        (Some(_), Some(_)) => Err(loaded.invalid(
            "auth",
            "configure one of [auth.jwt] and [auth.webhook], not both",
        )),
        (Some(jwt), None) => {
            let verifier = Arc::new(JwtVerifier::new(loaded, jwt)?);
            builder = builder.authorize(move |ctx: Context| {
                let verdict = verifier.authorize(&ctx);
                async move { verdict }
            });
            Ok((builder, true))
        }
        (None, Some(webhook)) => {
            crate::backend::check_url(&webhook.url)
                .map_err(|e| loaded.invalid("auth.webhook.url", e.to_string()))?;
            let forward = header_names(
                loaded,
                "auth.webhook.forward_headers",
                &webhook.forward_headers,
            )?;
            let webhook = Arc::new(Webhook {
                config: webhook.clone(),
                forward,
                backend: backend.clone(),
            });
            builder = builder.authorize(move |ctx: Context| {
                let webhook = webhook.clone();
                async move { webhook.authorize(&ctx).await }
            });
            Ok((builder, true))
        }
        (None, None) => Ok((builder, false)),
    }
}

/// Parses header names from the configuration at `key`.
pub(crate) fn header_names(
    loaded: &Loaded,
    key: &str,
    names: &[String],
) -> Result<Vec<HeaderName>, ConfigError> {
    names
        .iter()
        .map(|name| {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| loaded.invalid(key, format!("`{name}` is not a header name")))
        })
        .collect()
}

/// The headers of `from` named in `names`.
pub(crate) fn forwarded(from: &HeaderMap, names: &[HeaderName]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in names {
        for value in from.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

/// Verifies the tokens of `[auth.jwt]`.
struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    header: bool,
    cookie: Option<String>,
    principal_claim: String,
    rooms_claim: String,
}

impl JwtVerifier {
    fn new(loaded: &Loaded, jwt: &JwtConfig) -> Result<Self, ConfigError> {
        // The pure-Rust backend, named once for the process rather than inferred from features.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        let key = match jwt.algorithm {
            JwtAlgorithm::HS256 => {
                if jwt.public_key_file.is_some() || jwt.public_key.is_some() {
                    return Err(loaded.invalid(
                        "auth.jwt",
                        "HS256 verifies with `secret` or `secret_file`, not a public key",
                    ));
                }
                let secret = match (&jwt.secret, &jwt.secret_file) {
                    (Some(secret), None) => secret.clone(),
                    (None, Some(file)) => {
                        let path = loaded.path(file);
                        let secret = std::fs::read_to_string(&path).map_err(|e| {
                            loaded.invalid(
                                "auth.jwt.secret_file",
                                format!("cannot read {}: {e}", path.display()),
                            )
                        })?;
                        secret.trim_end_matches(['\r', '\n']).to_owned()
                    }
                    (Some(_), Some(_)) => {
                        return Err(loaded.invalid(
                            "auth.jwt",
                            "give one of `secret` and `secret_file`, not both",
                        ));
                    }
                    (None, None) => {
                        return Err(
                            loaded.invalid("auth.jwt", "HS256 needs `secret` or `secret_file`")
                        );
                    }
                };
                if secret.is_empty() {
                    return Err(loaded.invalid("auth.jwt.secret", "the secret is empty"));
                }
                DecodingKey::from_secret(secret.as_bytes())
                    .map_err(|e| loaded.invalid("auth.jwt.secret", e.to_string()))?
            }
            JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
                if jwt.secret.is_some() || jwt.secret_file.is_some() {
                    return Err(loaded.invalid(
                        "auth.jwt",
                        "RS256 and ES256 verify with a public key, not a secret",
                    ));
                }
                let (key, what, pem) = match (&jwt.public_key_file, &jwt.public_key) {
                    (Some(file), None) => {
                        let path = loaded.path(file);
                        let pem = std::fs::read(&path).map_err(|e| {
                            loaded.invalid(
                                "auth.jwt.public_key_file",
                                format!("cannot read {}: {e}", path.display()),
                            )
                        })?;
                        ("auth.jwt.public_key_file", path.display().to_string(), pem)
                    }
                    (None, Some(pem)) => (
                        "auth.jwt.public_key",
                        "the text".to_owned(),
                        pem.clone().into_bytes(),
                    ),
                    (Some(_), Some(_)) => {
                        return Err(loaded.invalid(
                            "auth.jwt",
                            "give one of `public_key_file` and `public_key`, not both",
                        ));
                    }
                    (None, None) => {
                        return Err(loaded.invalid(
                            "auth.jwt.public_key_file",
                            "RS256 and ES256 need the public key: its PEM file, or its PEM text \
                             as `public_key`",
                        ));
                    }
                };
                let decoded = match jwt.algorithm {
                    JwtAlgorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
                    _ => DecodingKey::from_ec_pem(&pem),
                };
                decoded.map_err(|e| {
                    let kind = if jwt.algorithm == JwtAlgorithm::RS256 {
                        "RSA"
                    } else {
                        "EC (P-256)"
                    };
                    loaded.invalid(key, format!("{what} is not a PEM {kind} public key: {e}"))
                })?
            }
        };
        let algorithm = match jwt.algorithm {
            JwtAlgorithm::HS256 => Algorithm::HS256,
            JwtAlgorithm::RS256 => Algorithm::RS256,
            JwtAlgorithm::ES256 => Algorithm::ES256,
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = jwt.leeway_seconds;
        if let Some(issuer) = &jwt.issuer {
            validation.set_issuer(&[issuer]);
        }
        match &jwt.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if !jwt.header && jwt.cookie.is_none() {
            return Err(loaded.invalid(
                "auth.jwt",
                "with `header = false`, name the `cookie` the token comes in",
            ));
        }
        Ok(Self {
            key,
            validation,
            header: jwt.header,
            cookie: jwt.cookie.clone(),
            principal_claim: jwt.principal_claim.clone(),
            rooms_claim: jwt.rooms_claim.clone(),
        })
    }

    fn authorize(&self, ctx: &Context) -> Result<Grant, Refusal> {
        let bearer = self.header.then(|| bearer(ctx.headers())).flatten();
        let token = bearer
            .or_else(|| self.cookie.as_deref().and_then(|name| ctx.cookie(name)))
            .ok_or_else(|| {
                Refusal::unauthorized(match &self.cookie {
                    Some(cookie) if self.header => {
                        format!(
                            "send a token as 'Authorization: Bearer <token>' or the cookie {cookie}"
                        )
                    }
                    Some(cookie) => format!("send a token in the cookie {cookie}"),
                    None => "send a token as 'Authorization: Bearer <token>'".to_owned(),
                })
            })?;
        let claims = jsonwebtoken::decode::<serde_json::Map<String, Value>>(
            token,
            &self.key,
            &self.validation,
        )
        .map_err(|e| Refusal::unauthorized(format!("the token was refused: {e}")))?
        .claims;
        let mut grant = Grant::new();
        if let Some(principal) = claims.get(&self.principal_claim) {
            match principal {
                Value::String(name) => grant = grant.principal(name.as_str()),
                Value::Number(n) => grant = grant.principal(n.to_string()),
                _ => {
                    return Err(Refusal::unauthorized(format!(
                        "the token's claim '{}' is not a string",
                        self.principal_claim
                    )));
                }
            }
        }
        if let Some(rooms) = claims.get(&self.rooms_claim) {
            let allowed = AllowedRooms::from_value(rooms).map_err(|e| {
                Refusal::unauthorized(format!(
                    "the token's claim '{}' is not usable: {e}",
                    self.rooms_claim
                ))
            })?;
            grant = grant.with(allowed);
        }
        Ok(grant)
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// Asks the backend of `[auth.webhook]`.
struct Webhook {
    config: AuthWebhookConfig,
    forward: Vec<HeaderName>,
    backend: Backend,
}

/// The auth webhook's answer to a grant.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WebhookGrant {
    principal: Option<String>,
    rooms: Option<Value>,
}

impl Webhook {
    async fn authorize(&self, ctx: &Context) -> Result<Grant, Refusal> {
        let headers: serde_json::Map<String, Value> = self
            .forward
            .iter()
            .filter_map(|name| {
                let values: Vec<&str> = ctx
                    .headers()
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                let separator = if name == header::COOKIE { "; " } else { ", " };
                (!values.is_empty()).then(|| {
                    (
                        name.as_str().to_owned(),
                        Value::from(values.join(separator)),
                    )
                })
            })
            .collect();
        let params: serde_json::Map<String, Value> = ctx
            .params()
            .map(|(k, v)| (k.to_owned(), Value::from(v)))
            .collect();
        let query: Vec<[&str; 2]> = ctx.query_pairs().map(|(k, v)| [k, v]).collect();
        let body = json!({
            "clientId": ctx.client_id(),
            "params": params,
            "query": query,
            "headers": headers,
        });
        let answer = self
            .backend
            .post_json(
                &self.config.url,
                HeaderMap::new(),
                body.to_string().into_bytes(),
                Duration::from_millis(self.config.timeout_ms),
                WEBHOOK_ANSWER_LIMIT,
            )
            .await;
        let reply = match answer {
            Ok(reply) => reply,
            Err(error) => {
                tracing::warn!(%error, "sseio-hub: the auth webhook failed; the stream is refused");
                return Err(Refusal::unauthorized(
                    "the hub could not check this request",
                ));
            }
        };
        let message = || {
            serde_json::from_slice::<Value>(&reply.body)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| excerpt(&reply.body, 200))
        };
        match reply.status {
            status if status.is_success() => {
                let grant: WebhookGrant = if reply.body.iter().all(u8::is_ascii_whitespace) {
                    WebhookGrant::default()
                } else {
                    serde_json::from_slice(&reply.body).map_err(|e| {
                        tracing::warn!(error = %e, "sseio-hub: the auth webhook's answer is not a grant");
                        Refusal::unauthorized("the hub could not check this request")
                    })?
                };
                let mut granted = Grant::new();
                if let Some(principal) = grant.principal {
                    granted = granted.principal(principal);
                }
                if let Some(rooms) = grant.rooms {
                    let allowed = AllowedRooms::from_value(&rooms).map_err(|e| {
                        tracing::warn!(error = %e, "sseio-hub: the auth webhook's rooms are not usable");
                        Refusal::unauthorized("the hub could not check this request")
                    })?;
                    granted = granted.with(allowed);
                }
                Ok(granted)
            }
            StatusCode::FORBIDDEN => Err(Refusal::forbidden(message())),
            StatusCode::UNAUTHORIZED => Err(Refusal::unauthorized(message())),
            status => {
                tracing::warn!(%status, body = %excerpt(&reply.body, 200), "sseio-hub: the auth webhook answered neither 2xx, 401 nor 403; the stream is refused");
                Err(Refusal::unauthorized(
                    "the hub could not check this request",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_restricts_every_event() {
        let allowed = AllowedRooms::from_value(&json!(["a", "team-*"])).unwrap();
        assert!(allowed.permits("x", "a"));
        assert!(allowed.permits("y", "team-7"));
        assert!(!allowed.permits("x", "b"));
    }

    #[test]
    fn an_object_restricts_the_events_it_names() {
        let allowed = AllowedRooms::from_value(&json!({"news": ["all"], "private": []})).unwrap();
        assert!(allowed.permits("news", "all"));
        assert!(!allowed.permits("news", "other"));
        assert!(!allowed.permits("private", "anything"));
        assert!(allowed.permits("unlisted", "anything"));
        let with_default = AllowedRooms::from_value(&json!({"*": ["x"], "news": ["all"]})).unwrap();
        assert!(!with_default.permits("unlisted", "y"));
        assert!(with_default.permits("unlisted", "x"));
    }

    #[test]
    fn rooms_that_are_not_lists_of_strings_are_refused() {
        assert!(AllowedRooms::from_value(&json!("a")).is_err());
        assert!(AllowedRooms::from_value(&json!([1])).is_err());
        assert!(AllowedRooms::from_value(&json!({"news": "all"})).is_err());
    }

    #[test]
    fn bearer_is_case_insensitive_and_not_empty() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }
}
