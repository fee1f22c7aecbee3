//! The Bulwark operator: the controllers `bulwark run` runs while it leads, the node agent,
//! the HTTP endpoints and metrics, and the cluster-less CLI. It composes the library crates and
//! adds only Kubernetes wiring; data work lives in `engine` and `backupstore`.

pub mod agent;
pub mod caches;
pub mod cli;
pub mod cluster;
pub mod controllers;
pub mod crds;
pub mod csi;
pub mod events;
pub mod finalizers;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod presence;
pub mod rbac;
pub mod readiness;
pub mod run;
pub mod scheduler;
pub mod shutdown;
pub mod status;
pub mod stores;
pub mod telemetry;
