//! vmrp-testing: in-memory fakes of ARM and the scheduler, and fixture builders, for vmrp's tests.
//! A dev-dependency of the handler crate (never a normal one: the deploy binary cannot contain
//! it); the ops package (`vmrp`) re-exports it as `vmrp::testing` for tests/.
//!
//! The fakes live in `fakes/`, written against `crate::azure`, `crate::policy`, ... so that
//! vmrp-core's own unit tests can compile the same file (see vmrp-core's `lib.rs`).

// No function over 120 lines outside tests (issue 17; threshold in clippy.toml). Off under
// cfg(test): what only a test build compiles (test modules, fakes) is test code, and a long
// table of cases reads better whole; the plain build still lints every non-test function.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

#[cfg(test)]
use vmrp_core::names;
use vmrp_core::{azure, messages, policy};

mod fakes;
pub use fakes::*;
