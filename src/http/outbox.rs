//! The dev outbox: a plain server-rendered page and its JSON twin.

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::openapi::ErrorBody;
use super::AppState;
use crate::transport::outbox::OutboxEmail;

/// The outbox, newest first (outbox transport only; open in dev mode).
#[utoipa::path(get, path = "/v1/outbox", tag = "admin",
    responses(
        (status = 200, description = "Emails kept by the outbox transport", body = Vec<OutboxEmail>),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "A send token", body = ErrorBody),
        (status = 404, description = "The outbox transport is not in use", body = ErrorBody),
        (status = "default", description = "Any other error", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_json(State(state): State<AppState>) -> Result<Json<Vec<OutboxEmail>>, ApiError> {
    let outbox = state
        .outbox
        .as_ref()
        .ok_or_else(|| ApiError::not_found("the outbox transport is not in use"))?;
    Ok(Json(outbox.list()))
}

/// The outbox as a web page (outbox transport only; open in dev mode, admin otherwise).
#[utoipa::path(get, path = "/outbox", tag = "admin",
    responses(
        (status = 200, description = "The list page", body = String, content_type = "text/html"),
        (status = "default", description = "Not in use, or not allowed", body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn page(State(state): State<AppState>) -> Result<Response, ApiError> {
    let outbox = state
        .outbox
        .as_ref()
        .ok_or_else(|| ApiError::not_found("the outbox transport is not in use"))?;
    let emails = outbox.list();
    let mut rows = String::new();
    for email in &emails {
        // What SES would have reported (the mailbox simulator), as `GET /v1/messages/{id}` does.
        let status = state
            .service
            .deliveries()
            .message(&email.message_id, crate::feedback::Reader::Admin)
            .await
            .map_or("sent", |record| record.status.as_str());
        rows.push_str(&format!(
            "<tr><td><a href=\"/outbox/{id}\">{subject}</a></td><td>{to}</td><td>{usage}</td><td><time>{at}</time></td><td class=\"status\">{status}</td></tr>\n",
            id = escape(&email.message_id),
            subject = escape(&email.subject),
            to = escape(&email.to),
            usage = escape(&email.usage_type),
            at = escape(&email.sent_at),
        ));
    }
    let body = if emails.is_empty() {
        "<p class=\"empty\">No emails yet. Send one with <code>POST /v1/messages</code>; it will appear here.</p>".to_owned()
    } else {
        format!(
            "<table><thead><tr><th>Subject</th><th>To</th><th>Usage type</th><th>Sent at (UTC)</th><th>Status</th></tr></thead><tbody>\n{rows}</tbody></table>"
        )
    };
    Ok(html_page(
        "Outbox",
        &format!(
            "<h1>Outbox</h1><p>The newest {} emails kept by the outbox transport, newest first. Nothing here was sent.</p>{body}",
            crate::transport::outbox::OUTBOX_CAPACITY
        ),
    ))
}

/// One email as rendered HTML (sandboxed iframe) and as text.
#[utoipa::path(get, path = "/outbox/{id}", tag = "admin",
    params(("id" = String, Path, description = "The message id")),
    responses(
        (status = 200, description = "The email page", body = String, content_type = "text/html"),
        (status = "default", description = "No such email, not in use, or not allowed", body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn email_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let outbox = state
        .outbox
        .as_ref()
        .ok_or_else(|| ApiError::not_found("the outbox transport is not in use"))?;
    let email = outbox
        .get(&id)
        .ok_or_else(|| ApiError::not_found("no email with that id in the outbox"))?;
    let html_part = match &email.html {
        // srcdoc is an attribute: escaping the HTML once makes it the iframe's document;
        // an empty sandbox runs no script and reaches nothing.
        Some(html) => format!(
            "<h2>HTML</h2><iframe title=\"HTML part\" sandbox=\"\" srcdoc=\"{}\"></iframe>",
            escape(html)
        ),
        None => "<h2>HTML</h2><p>This email has no HTML part (text/plain template).</p>".to_owned(),
    };
    let optional = |v: &Option<String>| v.as_deref().map(escape).unwrap_or_else(|| "—".to_owned());
    let body = format!(
        "<p><a href=\"/outbox\">← Outbox</a></p><h1>{subject}</h1>\
         <dl><dt>To</dt><dd>{to}</dd><dt>From</dt><dd>{from}</dd><dt>Reply-To</dt><dd>{reply_to}</dd>\
         <dt>Usage type</dt><dd>{usage}</dd><dt>Sent at (UTC)</dt><dd>{at}</dd><dt>Message id</dt><dd>{id}</dd></dl>\
         {html_part}<h2>Text</h2><pre class=\"text-part\">{text}</pre>",
        subject = escape(&email.subject),
        to = escape(&email.to),
        from = optional(&email.from),
        reply_to = optional(&email.reply_to),
        usage = escape(&email.usage_type),
        at = escape(&email.sent_at),
        id = escape(&email.message_id),
        text = escape(&email.text),
    );
    Ok(html_page(&email.subject, &body))
}

fn html_page(title: &str, body: &str) -> Response {
    let page = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} · ses-connector</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>\
         body{{font-family:system-ui,sans-serif;max-width:960px;margin:2rem auto;padding:0 1rem;color:#1f2328}}\
         table{{border-collapse:collapse;width:100%}}th,td{{text-align:left;padding:.4rem .6rem;border-bottom:1px solid #d0d7de}}\
         iframe{{width:100%;height:480px;border:1px solid #d0d7de;background:#fff}}\
         pre{{white-space:pre-wrap;background:#f6f8fa;padding:1rem;border:1px solid #d0d7de}}\
         dt{{font-weight:600}}dd{{margin:0 0 .5rem}}.empty{{color:#6e7781}}</style></head><body>{body}</body></html>",
        title = escape(title),
    );
    let mut response = Html(page).into_response();
    // The page itself runs no script; the iframe is sandboxed on top of this.
    response.headers_mut().insert(
        axum::http::header::CONTENT_SECURITY_POLICY,
        axum::http::HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src * data:; frame-src 'self'",
        ),
    );
    response
}

/// Escape text for HTML content and quoted attributes.
fn escape(text: &str) -> String {
    handlebars::html_escape(text)
}
