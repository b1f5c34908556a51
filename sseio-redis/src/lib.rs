#![doc = include_str!("../README.md")]

mod broker;
mod history;
mod link;
mod shards;
mod wire;

pub use broker::{
    DEFAULT_MAX_QUEUED, DEFAULT_PREFIX, DEFAULT_PRESENCE_TIMEOUT, DEFAULT_RECONNECT_MAX,
    DEFAULT_RECONNECT_MIN, DEFAULT_RESUBSCRIBE_BATCH, RedisBroker, RedisBrokerBuilder,
};
