//! The delivery log: what became of each send, and who is suppressed. Its Redis
//! backend is here; the trait and the memory backend are still in
//! [`crate::feedback`] beside the notification parser.

mod redis;

pub use self::redis::RedisDeliveryLog;
