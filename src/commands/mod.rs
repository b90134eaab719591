//! Terminal commands that read or steer a deployment: `status`, `plan`.

pub mod plan;
pub mod status;
