//! Where the service keeps what it must remember between requests, one folder per
//! store: the rolling-window limits, the idempotency records, the send pace and the
//! delivery log. Each store's trait is in its `mod.rs`, beside its memory backend
//! (one process) and its Redis backend (shared by replicas, with its Lua script);
//! `redis_link` is the connection, health and fallback they share. Which backend
//! serves is chosen once, at start-up.

pub mod deliveries;
pub mod idempotency;
pub mod limits;
pub mod pacing;
pub mod redis_link;
