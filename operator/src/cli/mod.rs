//! Subcommands that work without running a controller.

pub mod backup;
pub mod crd;
pub mod rbac;
