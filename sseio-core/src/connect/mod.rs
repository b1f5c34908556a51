//! A connect, as a pipeline of steps, each with its own input and output:
//!
//! 1. [`admit`]: the request is parsed, `authorize` decides, each handler picks its room;
//! 2. [`resume`]: where a reconnecting client resumes from, as far as the request and the
//!    broker tell before it joins;
//! 3. [`join`]: under the registry lock of its `clientId`, it joins its rooms, replays what it
//!    missed from this server's history, replaces the connection with the same `clientId`, and
//!    returns the [`Plan`] of what follows;
//! 4. [`follow_up`]: the `fetch`es and the broker's replay run.
//!
//! A replay larger than the connection's buffer goes out in parts ([`catch_up`]).

mod admit;
mod catch_up;
mod follow_up;
mod join;
mod resume;

pub(crate) use admit::{admit, parse};
pub(crate) use follow_up::follow_up;
pub(crate) use join::join;
pub(crate) use resume::resume;
