//! Request extractors and the bearer-token check.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use validator::Validate;

use super::error::{ApiError, Detail};
use super::AppState;
use crate::validation::{problems, type_name};

/// A JSON body, parsed into a value; every rejection is an [`ApiError`].
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::from_status(rejection.status())
            } else {
                ApiError::bad_request(
                    format!("could not read the request body: {rejection}"),
                    Vec::new(),
                )
            }
        })?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::bad_request(
                "the body is not valid JSON",
                vec![Detail::new("", e.to_string())],
            )
        })
    }
}

/// A JSON body parsed into its type `T` and checked by `T`'s `validator` rules:
/// every bad field at once, each with its path, in the one error shape. The JSON as
/// sent is kept too when the request carries an `Idempotency-Key` (its fingerprint);
/// otherwise it is taken apart into `T` without a copy.
pub struct ValidatedJson<T> {
    pub body: T,
    pub json: Option<Value>,
}

impl<S: Send + Sync, T: DeserializeOwned + Validate> FromRequest<S> for ValidatedJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let keyed = req.headers().contains_key(IDEMPOTENCY_KEY);
        let JsonBody(json) = JsonBody::from_request(req, state).await?;
        if !json.is_object() {
            return Err(ApiError::bad_request(
                "the body must be a JSON object",
                vec![Detail::new(
                    "",
                    format!("expected an object, got {}", type_name(&json)),
                )],
            ));
        }
        // The body's fields are `Typed`: a wrong type is a rule's failure below, so
        // this only fails on what no rule can name.
        let kept = keyed.then(|| json.clone());
        let body = T::deserialize(json).map_err(|e| {
            ApiError::bad_request(
                "the body does not have the expected shape",
                vec![Detail::new("", e.to_string())],
            )
        })?;
        body.validate().map_err(|errors| {
            ApiError::bad_request(
                "the request has invalid fields; see details",
                problems(&errors).into_iter().map(Detail::from).collect(),
            )
        })?;
        Ok(Self { body, json: kept })
    }
}

/// The header that makes a send idempotent.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Send,
    Admin,
}

/// Who called: which configured token matched (`None` in dev mode without tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub scope: Scope,
    /// Digest of the token, to scope per-caller state such as idempotency keys.
    pub token_id: Option<[u8; 32]>,
}

/// Configured tokens, kept as digests so comparison time does not depend on them.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    send: Vec<[u8; 32]>,
    admin: Vec<[u8; 32]>,
    open: bool,
}

impl Auth {
    /// `open`: no token needed (dev mode without tokens).
    pub fn new(send: &[SecretString], admin: &[SecretString], open: bool) -> Self {
        let digest =
            |t: &SecretString| -> [u8; 32] { Sha256::digest(t.expose_secret().as_bytes()).into() };
        Self {
            send: send.iter().map(digest).collect(),
            admin: admin.iter().map(digest).collect(),
            open: open && send.is_empty() && admin.is_empty(),
        }
    }

    fn check(&self, headers: &HeaderMap, needed: Scope) -> Result<Caller, ApiError> {
        if self.open {
            return Ok(Caller {
                scope: Scope::Admin,
                token_id: None,
            });
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "send `Authorization: Bearer <token>` with a configured token",
                )
            })?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Compare against every token, without stopping early.
        let matches = |set: &[[u8; 32]]| {
            set.iter()
                .fold(subtle::Choice::from(0), |found, t| found | t.ct_eq(&digest))
        };
        let is_admin: bool = matches(&self.admin).into();
        let is_send: bool = matches(&self.send).into();
        let scope = match (is_admin, is_send) {
            (true, _) => Scope::Admin,
            (false, true) => Scope::Send,
            (false, false) => return Err(ApiError::unauthorized("the bearer token is not valid")),
        };
        if needed == Scope::Admin && scope != Scope::Admin {
            return Err(ApiError::forbidden("this route needs an admin token"));
        }
        Ok(Caller {
            scope,
            token_id: Some(digest),
        })
    }
}

/// Middleware: the route needs a send (or admin) token.
pub async fn require_send(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match state.auth.check(req.headers(), Scope::Send) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// Middleware: the route needs an admin token.
pub async fn require_admin(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    match state.auth.check(req.headers(), Scope::Admin) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    fn auth() -> Auth {
        Auth::new(
            &[SecretString::from("send-token-0123456789")],
            &[SecretString::from("admin-token-0123456789")],
            false,
        )
    }

    #[test]
    fn tokens_grant_their_scope_only() {
        let auth = auth();
        let send = headers("Bearer send-token-0123456789");
        let admin = headers("Bearer admin-token-0123456789");
        assert_eq!(auth.check(&send, Scope::Send).unwrap().scope, Scope::Send);
        assert_eq!(auth.check(&send, Scope::Admin).unwrap_err().status, 403);
        assert_eq!(auth.check(&admin, Scope::Send).unwrap().scope, Scope::Admin);
        assert_eq!(
            auth.check(&admin, Scope::Admin).unwrap().scope,
            Scope::Admin
        );
    }

    #[test]
    fn missing_or_wrong_tokens_are_unauthorized() {
        let auth = auth();
        for value in [
            "Bearer wrong-token-0123456789",
            "Basic abc",
            "send-token-0123456789",
            "Bearer ",
        ] {
            assert_eq!(
                auth.check(&headers(value), Scope::Send).unwrap_err().status,
                401,
                "{value}"
            );
        }
        assert_eq!(
            auth.check(&HeaderMap::new(), Scope::Send)
                .unwrap_err()
                .status,
            401
        );
    }

    #[test]
    fn content_types_with_json_are_accepted() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
            is_json(&h)
        };
        assert!(with("application/json"));
        assert!(with("application/json; charset=utf-8"));
        assert!(with("Application/JSON"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/x-www-form-urlencoded"));
    }
}
