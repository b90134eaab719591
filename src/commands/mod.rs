//! Terminal commands that read or steer a deployment: `status`, `plan`.

pub mod status;
