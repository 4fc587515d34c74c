//! What became of a send (`GET /v1/messages/{messageId}`), and the suppression of a
//! recipient (`GET`/`DELETE /v1/suppressions/{address}`, admin).

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Serialize;

use super::error::{ApiError, Detail};
use super::extract::{Caller, Scope};
use super::openapi::{ErrorBody, RequestErrors};
use super::AppState;
use crate::address::Recipient;
use crate::feedback::{MessageRecord, Reader, Suppression};

/// What SES reported about a message this service sent: delivered, bounced (with
/// bounce type, subtype and diagnostic code), complained, rejected or delayed. A send
/// token sees only the sends it made; an admin token sees every send.
#[utoipa::path(get, path = "/v1/messages/{messageId}", tag = "send",
    params(("messageId" = String, Path, description = "The message id a send answered with")),
    responses(
        (status = 200, description = "The send and its events", body = MessageRecord),
        (status = 404, description = "Not a message this service sent for this token (or older than 7 days)", body = ErrorBody),
        RequestErrors,
    ),
    security(("bearer" = [])))]
pub async fn message(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(message_id): Path<String>,
) -> Result<Json<MessageRecord>, ApiError> {
    let reader = match (&caller.scope, &caller.token_id) {
        (Scope::Send, Some(token)) => Reader::Token(token),
        // Admin tokens, and dev mode without tokens.
        _ => Reader::Admin,
    };
    // Someone else's send answers as an unknown one: its id says nothing.
    state
        .service
        .deliveries()
        .message(&message_id, reader)
        .await
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(
                "no send with this message id: it was not sent by this service, or more than 7 days ago",
            )
        })
}

/// Whether a recipient is suppressed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SuppressionStatus {
    /// A permanent bounce or a complaint is recorded for the address.
    pub suppressed: bool,
    /// A send to it now would be refused (suppressed, and `SES_CONNECTOR_SUPPRESSION`
    /// is `enforce`).
    pub refused: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppression: Option<Suppression>,
    /// After a `DELETE` with the SES suppression check on: what happened at SES.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ses: Option<String>,
}

fn recipient(address: &str) -> Result<Recipient, ApiError> {
    Recipient::parse(address).map_err(|e| {
        ApiError::bad_request(
            "the address is invalid",
            vec![Detail::new("address", format!("recipient {e}"))],
        )
    })
}

/// Whether sends to an address are refused, and why: by this service's own
/// suppressions, or (with `SES_CONNECTOR_SES_SUPPRESSION_CHECK=true`) by the SES
/// account's suppression list, exactly as a send is checked.
#[utoipa::path(get, path = "/v1/suppressions/{address}", tag = "admin",
    params(("address" = String, Path, description = "A recipient address")),
    responses(
        (status = 200, description = "Suppressed or not", body = SuppressionStatus),
        RequestErrors,
    ),
    security(("bearer" = [])))]
pub async fn suppression(
    State(state): State<AppState>,
    Path(address): Path<String>,
) -> Result<Json<SuppressionStatus>, ApiError> {
    let recipient = recipient(&address)?;
    let suppression = state.service.suppression_of(&recipient).await;
    Ok(Json(SuppressionStatus {
        suppressed: suppression.is_some(),
        refused: suppression.is_some()
            && state.service.suppression_policy() == crate::send::SuppressionPolicy::Enforce,
        suppression,
        ses: None,
    }))
}

/// Lift an address's suppression (after it was fixed): sends to it go out again. With
/// the SES suppression check on, it is also removed from the SES account's list.
#[utoipa::path(delete, path = "/v1/suppressions/{address}", tag = "admin",
    params(("address" = String, Path, description = "A recipient address")),
    responses(
        (status = 200, description = "Not suppressed any more", body = SuppressionStatus),
        RequestErrors,
    ),
    security(("bearer" = [])))]
pub async fn lift(
    State(state): State<AppState>,
    Path(address): Path<String>,
) -> Result<Json<SuppressionStatus>, ApiError> {
    let recipient = recipient(&address)?;
    let ses = state.service.lift_suppression(&recipient).await;
    tracing::info!(recipient = recipient.masked(), "suppression lifted");
    Ok(Json(SuppressionStatus {
        suppressed: false,
        refused: false,
        suppression: None,
        ses,
    }))
}
