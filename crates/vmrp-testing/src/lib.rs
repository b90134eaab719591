//! vmrp-testing: in-memory fakes of ARM and the scheduler, and fixture builders, for vmrp's tests.
//! A dev-dependency of the handler crate (never a normal one: the deploy binary cannot contain
//! it); the ops package (`vmrp`) re-exports it as `vmrp::testing` for tests/.
//!
//! The fakes live in `fakes/`, written against `crate::azure`, `crate::policy`, ... so that
//! vmrp-core's own unit tests can compile the same file (see vmrp-core's `lib.rs`).

#[cfg(test)]
use vmrp_core::names;
use vmrp_core::{azure, messages, policy};

mod fakes;
pub use fakes::*;
