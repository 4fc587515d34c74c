//! The HTTP API: router, middleware and one file per group of routes.

mod admin;
pub mod bodies;
pub mod connections;
mod deliveries;
pub mod error;
pub mod extract;
mod messages;
pub mod openapi;
mod ops;
pub(crate) mod outbox;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tracing::Instrument;

use crate::app::reload::ConfigLoader;
use crate::send::EmailService;
use crate::stores::idempotency::IdempotencyStore;
use crate::telemetry::names;
use crate::transport::outbox::Outbox;
use error::ApiError;
use extract::Auth;

/// Body limit for send requests.
pub const SEND_BODY_LIMIT: usize = 64 * 1024;
/// Body limit for routes that carry a whole config.
pub const CONFIG_BODY_LIMIT: usize = 1024 * 1024;

/// Headers a request may carry. hyper's own cap is higher
/// ([`connections::HYPER_MAX_HEADERS`]), so past this the caller gets the JSON 431.
pub const MAX_HEADERS: usize = 64;
/// Bytes of header names and values a request may carry; hyper's read buffer
/// ([`connections::HYPER_MAX_BUF_SIZE`]) is larger, for the same reason.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

const _: () = assert!(
    MAX_HEADERS < connections::HYPER_MAX_HEADERS
        && MAX_HEADER_BYTES < connections::HYPER_MAX_BUF_SIZE
);

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<EmailService>,
    pub auth: Auth,
    /// Present when the outbox is the transport.
    pub outbox: Option<Arc<Outbox>>,
    /// Dev mode: the outbox page needs no token.
    pub dev: bool,
    pub draining: Arc<AtomicBool>,
    pub loader: Arc<ConfigLoader>,
    pub idempotency: Arc<dyn IdempotencyStore<Stored>>,
}

/// A send's answer as kept for idempotent repeats: its JSON body, or its error.
#[derive(Debug, Clone)]
pub struct Stored(pub Result<axum::body::Bytes, ApiError>);

impl AppState {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Where `/metrics` is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsOn {
    /// The port callers reach (no health listener is configured).
    MainPort,
    /// Only the health listener: quota, bounce and complaint rates are not for callers.
    HealthListener,
}

/// The whole API; `request_timeout` bounds each request.
pub fn router(state: AppState, request_timeout: std::time::Duration, metrics: MetricsOn) -> Router {
    let send = Router::new()
        .route("/v1/messages", post(messages::send))
        .route("/v1/messages/{message_id}", get(deliveries::message))
        .layer(DefaultBodyLimit::max(SEND_BODY_LIMIT))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            extract::require_send,
        ));

    let mut admin = Router::new()
        .route("/v1/test-email", post(messages::test_email))
        .route("/v1/config/validate", post(admin::validate))
        .route("/v1/preview", post(admin::preview))
        .route("/v1/config", get(admin::config))
        .route("/v1/config/reload", post(admin::reload))
        .route(
            "/v1/suppressions/{address}",
            get(deliveries::suppression).delete(deliveries::lift),
        )
        .layer(DefaultBodyLimit::max(CONFIG_BODY_LIMIT));
    if state.outbox.is_some() {
        admin = admin.route("/v1/outbox", get(outbox::list_json));
    }
    let admin = admin.route_layer(middleware::from_fn_with_state(
        state.clone(),
        extract::require_admin,
    ));

    let mut pages = Router::new();
    if state.outbox.is_some() {
        pages = pages
            .route("/outbox", get(outbox::page))
            .route("/outbox/{id}", get(outbox::email_page));
        if !state.dev {
            pages = pages.route_layer(middleware::from_fn_with_state(
                state.clone(),
                extract::require_admin,
            ));
        }
    }

    let mut app = Router::new()
        .merge(send)
        .merge(admin)
        .merge(pages)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/openapi.json", get(ops::openapi));
    if metrics == MetricsOn::MainPort {
        app = app.route("/metrics", get(ops::metrics));
    }
    let app = app
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            request_timeout,
        ));
    let app = if state.dev {
        app.layer(middleware::from_fn(loopback_host_only))
    } else {
        app
    };
    app.layer(middleware::from_fn(request_context))
        .with_state(state)
}

/// Dev mode needs no token and listens on loopback; a web page on another site can
/// still reach it through DNS rebinding (its own name resolving to 127.0.0.1), so
/// requests addressed to any name but a loopback one are refused.
async fn loopback_host_only(req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(axum::http::header::HOST)
        .map(|h| h.to_str().unwrap_or("(not text)"));
    match host {
        Some(host) if !is_loopback_host(host) => ApiError::forbidden(format!(
            "dev mode answers only requests addressed to localhost, 127.0.0.1 or [::1]; this one was for \"{}\"",
            host.chars().take(100).collect::<String>()
        ))
        .into_response(),
        _ => next.run(req).await,
    }
}

/// `localhost`, `*.localhost`, a 127/8 address or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The `route` label of requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Every route template the routers serve: the `route` label's values, without a
/// string made per request.
const ROUTES: &[&str] = &[
    "/v1/messages",
    "/v1/messages/{message_id}",
    "/v1/test-email",
    "/v1/config/validate",
    "/v1/preview",
    "/v1/config",
    "/v1/config/reload",
    "/v1/suppressions/{address}",
    "/v1/outbox",
    "/outbox",
    "/outbox/{id}",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
];

/// The `route` label: the matched route's template, else `unmatched`.
fn route_label(matched: Option<&str>) -> &'static str {
    matched
        .and_then(|path| ROUTES.iter().find(|route| **route == path))
        .copied()
        .unwrap_or(UNMATCHED_ROUTE)
}

/// The `status` label, without formatting the usual ones.
fn status_label(status: u16) -> metrics::SharedString {
    let known = match status {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        413 => "413",
        415 => "415",
        422 => "422",
        429 => "429",
        431 => "431",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => return status.to_string().into(),
    };
    known.into()
}

/// The `method` label: a standard method's name, else `other`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// The routes an orchestrator and a metrics scraper need, and nothing else: served
/// on the health listener, whose connections do not count against the main cap.
pub fn health_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(request_context))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; the API lives under /v1 (see the README)")
}

async fn method_not_allowed() -> ApiError {
    ApiError::from_status(StatusCode::METHOD_NOT_ALLOWED)
}

/// A 431 for a request head over the service's limits, else `None`.
fn head_too_large(headers: &axum::http::HeaderMap) -> Option<ApiError> {
    let count = headers.len();
    if count > MAX_HEADERS {
        return Some(ApiError::header_fields_too_large(format!(
            "the request has {count} headers; at most {MAX_HEADERS} are accepted"
        )));
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    (bytes > MAX_HEADER_BYTES).then(|| {
        ApiError::header_fields_too_large(format!(
            "the request's headers take {bytes} bytes; at most {MAX_HEADER_BYTES} are accepted"
        ))
    })
}

/// Request id, one log line per request, and the rendering of every error.
async fn request_context(req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        // A v4 UUID from a fast thread-local generator: no system call per request.
        .unwrap_or_else(|| {
            uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes())
                .into_uuid()
                .to_string()
        });
    // Labels come from fixed sets: the router's own route templates and the
    // standard methods. Anything a caller invents (a path, a method thousands of
    // characters long) must not become a new metric series.
    let route = route_label(
        req.extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let method = method_label(req.method());
    let span = tracing::info_span!("request", request_id = %request_id);
    let started = Instant::now();
    let mut response = match head_too_large(req.headers()) {
        Some(refused) => refused.into_response(),
        None => next.run(req).instrument(span.clone()).await,
    };

    let error = response.extensions_mut().remove::<ApiError>();
    let limited = error.as_ref().and_then(|e| e.limit);
    let error = match error {
        Some(error) => Some(error),
        // A status made outside a handler (e.g. by a layer) still gets the error shape.
        None if response.status().is_client_error() || response.status().is_server_error() => {
            Some(ApiError::from_status(response.status()))
        }
        None => None,
    };
    if let Some(error) = error {
        let _entered = span.enter();
        if let Some(internal) = &error.internal {
            tracing::error!(code = error.code, cause = %internal, "request failed");
        }
        let mut rendered = (error.status, Json(error.body(&request_id))).into_response();
        for (name, value) in response.headers() {
            if name != axum::http::header::CONTENT_TYPE
                && name != axum::http::header::CONTENT_LENGTH
            {
                rendered.headers_mut().insert(name.clone(), value.clone());
            }
        }
        response = rendered;
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics::counter!(
        names::HTTP_REQUESTS,
        "route" => route,
        "method" => method,
        "status" => status_label(status)
    )
    .increment(1);
    metrics::histogram!(names::HTTP_DURATION, "route" => route).record(elapsed.as_secs_f64());
    if let Some(limit) = limited {
        metrics::counter!(names::RATE_LIMITED, "limit" => limit).increment(1);
    }
    let _entered = span.enter();
    tracing::info!(
        method,
        route,
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_route_has_its_own_label() {
        let doc: serde_json::Value = serde_json::from_str(openapi::DOCUMENT).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.len() >= 10);
        // The document may name a path's parameters otherwise than the router.
        let shape = |path: &str| {
            path.split('/')
                .map(|part| if part.starts_with('{') { "{}" } else { part })
                .collect::<Vec<_>>()
                .join("/")
        };
        for path in paths.keys() {
            let route = ROUTES.iter().find(|r| shape(r) == shape(path));
            let route = route.unwrap_or_else(|| panic!("{path} is missing from ROUTES"));
            assert_eq!(route_label(Some(route)), *route);
        }
        assert_eq!(route_label(Some("/v1/other")), UNMATCHED_ROUTE);
        assert_eq!(route_label(None), UNMATCHED_ROUTE);
        assert_eq!(&*status_label(418), "418");
        assert_eq!(&*status_label(429), "429");
    }

    #[test]
    fn a_head_at_the_limits_passes_and_one_past_them_is_refused() {
        use axum::http::HeaderMap;
        let with = |count: usize, value_len: usize| {
            let mut headers = HeaderMap::new();
            for i in 0..count {
                let name = HeaderName::try_from(format!("x-{i:03}")).unwrap();
                let value = HeaderValue::from_str(&"v".repeat(value_len)).unwrap();
                headers.insert(name, value);
            }
            headers
        };
        assert!(head_too_large(&with(MAX_HEADERS, 1)).is_none());
        let refused = head_too_large(&with(MAX_HEADERS + 1, 1)).unwrap();
        assert_eq!(refused.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        // One header of exactly the byte limit ("x-000" is 5 bytes), then one over.
        assert!(head_too_large(&with(1, MAX_HEADER_BYTES - 5)).is_none());
        let refused = head_too_large(&with(1, MAX_HEADER_BYTES - 4)).unwrap();
        assert_eq!(refused.code, "request_header_fields_too_large");
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:8080",
            "127.1.2.3",
            "[::1]:8080",
            "[::1]",
            "app.localhost:3000",
            "LOCALHOST.",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "[::2]:80",
            "10.0.0.1",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
