#![doc = include_str!("../README.md")]

mod broker;
mod builder;
mod catch_up;
mod history;
mod inbound;
mod keeper;
mod link;
mod shards;
#[cfg(test)]
mod stub;
mod wire;

pub use broker::RedisBroker;
pub use builder::{
    DEFAULT_MAX_QUEUED, DEFAULT_PREFIX, DEFAULT_PRESENCE_TIMEOUT, DEFAULT_RECONNECT_MAX,
    DEFAULT_RECONNECT_MIN, DEFAULT_RESUBSCRIBE_BATCH, RedisBrokerBuilder,
};
